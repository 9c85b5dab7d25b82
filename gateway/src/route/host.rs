//! Host names: normalising the request's `Host`/`:authority`, matching wildcard patterns, and
//! an index that yields candidates from the most to the least specific pattern (exact, then
//! longer wildcards, then "any host").

use std::borrow::Cow;
use std::collections::HashMap;

/// Values indexed by host pattern: exact names, `*.suffix` wildcards and a catch-all.
#[derive(Debug)]
pub(crate) struct HostIndex<T> {
    exact: HashMap<Box<str>, T>,
    /// Keyed by the suffix after `*.` (`*.example.com` → `example.com`).
    wildcard: HashMap<Box<str>, T>,
    any: Option<T>,
}

// === impl HostIndex ===

impl<T> Default for HostIndex<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any: None,
        }
    }
}

impl<T> HostIndex<T> {
    /// The slot for `pattern` (`None` = any host), created with `make` when absent.
    pub(crate) fn entry_or_insert_with(
        &mut self,
        pattern: Option<&str>,
        make: impl FnOnce() -> T,
    ) -> &mut T {
        match pattern {
            None => self.any.get_or_insert_with(make),
            Some(p) => match p.strip_prefix("*.") {
                Some(suffix) => self.wildcard.entry(suffix.into()).or_insert_with(make),
                None => self.exact.entry(p.into()).or_insert_with(make),
            },
        }
    }

    /// The slot for exactly `pattern`, if present.
    pub(crate) fn get_pattern(&self, pattern: Option<&str>) -> Option<&T> {
        match pattern {
            None => self.any.as_ref(),
            Some(p) => match p.strip_prefix("*.") {
                Some(suffix) => self.wildcard.get(suffix),
                None => self.exact.get(p),
            },
        }
    }

    /// The most specific value whose pattern matches `host` (normalised, lower case).
    pub(crate) fn best(&self, host: &str) -> Option<&T> {
        self.candidates(host).next()
    }

    /// Values whose pattern matches `host`, most specific first: the exact name, then
    /// wildcards with the most labels right of `*`, then the catch-all. `*.example.com`
    /// matches `a.example.com` and `a.b.example.com`, never `example.com`.
    pub(crate) fn candidates<'a>(&'a self, host: &str) -> impl Iterator<Item = &'a T> {
        let exact = self.exact.get(host);
        // No suffix walk at all when no wildcard is stored (the common single-listener case).
        let rest = if self.wildcard.is_empty() { "" } else { host };
        let wildcards = WildcardSuffixes { rest }.filter_map(|suffix| self.wildcard.get(suffix));
        exact.into_iter().chain(wildcards).chain(self.any.iter())
    }

    /// Every stored value.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.exact
            .values_mut()
            .chain(self.wildcard.values_mut())
            .chain(self.any.iter_mut())
    }

    /// Transforms every value, keeping the patterns.
    pub(crate) fn map<U>(self, f: impl Fn(T) -> U) -> HostIndex<U> {
        HostIndex {
            exact: self.exact.into_iter().map(|(k, v)| (k, f(v))).collect(),
            wildcard: self.wildcard.into_iter().map(|(k, v)| (k, f(v))).collect(),
            any: self.any.map(f),
        }
    }

    /// True when nothing is stored.
    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.is_none()
    }
}

/// Iterates the proper suffixes of a host after each `.`: `a.b.c` → `b.c`, `c`.
struct WildcardSuffixes<'a> {
    rest: &'a str,
}

impl<'a> Iterator for WildcardSuffixes<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let dot = self.rest.find('.')?;
        self.rest = &self.rest[dot + 1..];
        if self.rest.is_empty() {
            None
        } else {
            Some(self.rest)
        }
    }
}

/// Whether `pattern` (an exact name or `*.suffix`) matches `host` (the rule
/// [`HostIndex::candidates`] implements by lookup).
#[cfg(test)]
pub(crate) fn pattern_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => pattern == host,
    }
}

/// The host part of a `Host` header or URI authority: port dropped (the Gateway API says the
/// port MUST be ignored), brackets kept off IPv6 literals, one trailing dot dropped, lower case.
pub(crate) fn normalize_host(authority: &str) -> Cow<'_, str> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match authority.rfind(':') {
            Some(colon) if authority[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => {
                &authority[..colon]
            }
            _ => authority,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Whether `value` is a valid authority without userinfo, `uri-host [ ":" port ]` (RFC 3986
/// §3.2), the form a `Host` header must have (RFC 9110 §7.2): a reg-name (unreserved,
/// sub-delims, `%XX`) or an IP literal in brackets, then an optional port of digits. Spaces,
/// control characters, `@`, a second `:` or a stray `%` make it invalid. Empty is valid (RFC
/// 9112 §3.2: a target without an authority is sent with an empty `Host`).
pub(crate) fn is_valid_authority(value: &[u8]) -> bool {
    let (host_ok, rest) = if let Some(literal) = value.strip_prefix(b"[") {
        let Some(close) = literal.iter().position(|&b| b == b']') else {
            return false;
        };
        let address = &literal[..close];
        // IPv6 (and dotted IPv4 in its last part); IPvFuture and zone identifiers are not
        // names any listener could carry.
        let ok = !address.is_empty()
            && address
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        (ok, &literal[close + 1..])
    } else {
        let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        (is_reg_name(&value[..end]), &value[end..])
    };
    let port_ok = match rest {
        [] => true,
        [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    host_ok && port_ok
}

/// RFC 3986 `reg-name`: unreserved, sub-delims and complete `%XX` escapes.
fn is_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        let byte = name[i];
        if byte == b'%' {
            let escape_ok = name.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && name.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !escape_ok {
                return false;
            }
            i += 3;
            continue;
        }
        let allowed = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        if !allowed {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_drops_port_case_and_trailing_dot() {
        for (input, want) in [
            ("example.com", "example.com"),
            ("Example.COM:8080", "example.com"),
            ("very.specific.com:1234", "very.specific.com"),
            ("example.com.", "example.com"),
            ("[::1]:80", "::1"),
            ("127.0.0.1:80", "127.0.0.1"),
        ] {
            assert_eq!(normalize_host(input), want, "{input}");
        }
    }

    #[test]
    fn wildcards_need_at_least_one_label() {
        for (pattern, host, want) in [
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "aexample.com", false),
            ("example.com", "example.com", true),
            ("example.com", "a.example.com", false),
        ] {
            assert_eq!(pattern_matches(pattern, host), want, "{pattern} vs {host}");
        }
    }

    #[test]
    fn candidates_come_most_specific_first() {
        let mut index = HostIndex::default();
        for pattern in [
            None,
            Some("*.example.com"),
            Some("*.foo.example.com"),
            Some("abc.foo.example.com"),
        ] {
            *index.entry_or_insert_with(pattern, || "") = pattern.unwrap_or("");
        }
        let got: Vec<_> = index.candidates("abc.foo.example.com").copied().collect();
        assert_eq!(
            got,
            [
                "abc.foo.example.com",
                "*.foo.example.com",
                "*.example.com",
                ""
            ]
        );
        let got: Vec<_> = index.candidates("x.example.com").copied().collect();
        assert_eq!(got, ["*.example.com", ""]);
        let got: Vec<_> = index.candidates("example.com").copied().collect();
        assert_eq!(got, [""]);
    }

    #[test]
    fn authorities_are_validated() {
        for (value, want) in [
            ("example.com", true),
            ("Example.COM:8080", true),
            ("a.example.com:", true),
            ("", true),
            ("127.0.0.1:80", true),
            ("[::1]", true),
            ("[::1]:8443", true),
            ("[2001:db8::ffff:1.2.3.4]:1", true),
            ("xn--bcher-kva.example", true),
            ("%41.example", true),
            ("x status=200 route=infra/admin", false),
            ("a.example.com\tb", false),
            ("a.example.com\r\nx: y", false),
            ("user@a.example.com", false),
            ("a.example.com:80:90", false),
            ("a.example.com:8o", false),
            ("a\"b", false),
            ("a/b", false),
            ("%4", false),
            ("[::1", false),
            ("[]", false),
            ("[::1]x", false),
            ("[fe80::1%25eth0]", false),
        ] {
            assert_eq!(is_valid_authority(value.as_bytes()), want, "{value:?}");
        }
    }
}
