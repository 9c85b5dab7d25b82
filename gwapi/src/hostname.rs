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
