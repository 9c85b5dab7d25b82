//! Host name matching and listener/route hostname intersection (Gateway API §1.4).
//!
//! A wildcard `*.example.com` matches one or more labels in front of `example.com`
//! (`a.example.com`, `a.b.example.com`) and never `example.com` itself.

/// Whether `pattern` (exact or `*.` wildcard) matches the concrete host `host`.
pub fn hostname_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        None => pattern == host,
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
    }
}

/// The narrower of a listener hostname and a route hostname, when they intersect.
///
/// Two exact names intersect when equal. An exact name and a wildcard intersect when the
/// wildcard matches the name (the result is the name). Two wildcards intersect when one's
/// suffix lies within the other's (the result is the longer one).
fn intersect(a: &str, b: &str) -> Option<String> {
    match (a.strip_prefix("*."), b.strip_prefix("*.")) {
        (None, None) => (a == b).then(|| a.to_string()),
        (Some(_), None) => hostname_matches(a, b).then(|| b.to_string()),
        (None, Some(_)) => hostname_matches(b, a).then(|| a.to_string()),
        (Some(sa), Some(sb)) => {
            if sa == sb || hostname_matches(&format!("*.{sb}"), sa) {
                Some(a.to_string())
            } else if hostname_matches(&format!("*.{sa}"), sb) {
                Some(b.to_string())
            } else {
                None
            }
        }
    }
}

/// The effective hostnames of a route on a listener, or `None` when they do not intersect.
///
/// - no listener hostname: the route's hostnames (empty = any host);
/// - no route hostnames: the listener's hostname;
/// - both: each route hostname that intersects the listener's, narrowed (duplicates removed,
///   order kept); `None` when none does.
pub fn intersect_hostnames(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let Some(listener) = listener else {
        return Some(route.to_vec());
    };
    if route.is_empty() {
        return Some(vec![listener.to_string()]);
    }
    let mut out: Vec<String> = Vec::new();
    for hostname in route {
        if let Some(narrow) = intersect(listener, hostname)
            && !out.contains(&narrow)
        {
            out.push(narrow);
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gateway API §1.4: the effective hostnames are the narrower of listener and route.
    /// (listener hostname, route hostnames, effective hostnames or `None`).
    type Case<'a> = (Option<&'a str>, &'a [&'a str], Option<&'a [&'a str]>);

    #[test]
    fn intersection_table() {
        let cases: &[Case<'_>] = &[
            (None, &[], Some(&[])),
            (None, &["a.example.com"], Some(&["a.example.com"])),
            (Some("test.example.com"), &[], Some(&["test.example.com"])),
            (
                Some("test.example.com"),
                &["test.example.com"],
                Some(&["test.example.com"]),
            ),
            (
                Some("test.example.com"),
                &["*.example.com"],
                Some(&["test.example.com"]),
            ),
            (Some("test.example.com"), &["other.example.com"], None),
            (Some("test.example.com"), &["*.test.example.com"], None),
            (
                Some("*.example.com"),
                &["*.example.com"],
                Some(&["*.example.com"]),
            ),
            (
                Some("*.example.com"),
                &["test.example.com"],
                Some(&["test.example.com"]),
            ),
            (
                Some("*.example.com"),
                &["foo.test.example.com"],
                Some(&["foo.test.example.com"]),
            ),
            (
                Some("*.example.com"),
                &["*.foo.example.com"],
                Some(&["*.foo.example.com"]),
            ),
            (
                Some("*.foo.example.com"),
                &["*.example.com"],
                Some(&["*.foo.example.com"]),
            ),
            (Some("*.example.com"), &["example.com"], None),
            (Some("*.example.com"), &["*.net"], None),
            (Some("*.example.com"), &["badexample.com"], None),
            (
                Some("*.example.com"),
                &[
                    "a.example.com",
                    "example.net",
                    "*.example.com",
                    "a.example.com",
                ],
                Some(&["a.example.com", "*.example.com"]),
            ),
            (Some("very.specific.com"), &["*.wildcard.io"], None),
        ];
        for (listener, route, expected) in cases {
            let route: Vec<String> = route.iter().map(|s| s.to_string()).collect();
            let got = intersect_hostnames(*listener, &route);
            let expected = expected.map(|e| e.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, expected, "listener {listener:?} route {route:?}");
        }
    }

    #[test]
    fn wildcards_match_one_or_more_labels_never_the_bare_suffix() {
        let cases = [
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "aexample.com", false),
            ("foo.example.com", "foo.example.com", true),
            ("foo.example.com", "bar.example.com", false),
        ];
        for (pattern, host, expected) in cases {
            assert_eq!(
                hostname_matches(pattern, host),
                expected,
                "{pattern} vs {host}"
            );
        }
    }
}
