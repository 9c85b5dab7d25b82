//! Request matchers (path, method, headers, query parameters) and the precedence keys that
//! order matches the way the Gateway API ladder says.

use std::cmp::Reverse;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

/// A compiled path condition.
#[derive(Debug)]
pub(crate) enum PathMatcher {
    /// Byte-exact.
    Exact(Box<str>),
    /// Element-wise prefix; stored without a trailing `/` (`/` itself is stored as ``).
    Prefix(Box<str>),
    /// Anchored regular expression over the whole path.
    Regex(Regex),
}

/// A compiled value condition for headers and query parameters.
#[derive(Debug)]
pub(crate) enum ValueMatcher {
    /// Equal bytes.
    Exact(Box<str>),
    /// Anchored regular expression.
    Regex(Regex),
}

/// A compiled header condition.
#[derive(Debug)]
pub(crate) struct HeaderMatcher {
    /// Lower-case header name.
    pub(crate) name: HeaderName,
    /// The value condition.
    pub(crate) value: ValueMatcher,
}

/// A compiled query parameter condition.
#[derive(Debug)]
pub(crate) struct QueryMatcher {
    /// Case-sensitive parameter name.
    pub(crate) name: Box<str>,
    /// The value condition (against the percent-decoded value).
    pub(crate) value: ValueMatcher,
}

/// One HTTPRouteMatch: every set condition must hold.
#[derive(Debug)]
pub(crate) struct RequestMatcher {
    /// Path condition.
    pub(crate) path: PathMatcher,
    /// Method condition.
    pub(crate) method: Option<Method>,
    /// Header conditions.
    pub(crate) headers: Vec<HeaderMatcher>,
    /// Query conditions.
    pub(crate) query: Vec<QueryMatcher>,
}

/// The parts of a request matchers look at, with the query parsed on first use.
pub(crate) struct RequestView<'a> {
    /// URI path (raw, without query).
    pub(crate) path: &'a str,
    /// Raw query string.
    pub(crate) query: Option<&'a str>,
    /// Method.
    pub(crate) method: &'a Method,
    /// Headers.
    pub(crate) headers: &'a HeaderMap,
    parsed_query: Option<Vec<(String, String)>>,
}

/// Sort key for HTTP route matches: smaller sorts first (wins). Hostname specificity is
/// handled by bucketing before this key applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct HttpPrecedence {
    /// Exact (2) beats regex (1) beats prefix (0); then the longer value.
    pub(crate) path: Reverse<(u8, usize)>,
    /// Having a method match wins.
    pub(crate) method: Reverse<bool>,
    /// More header matches win.
    pub(crate) n_headers: Reverse<usize>,
    /// More query matches win.
    pub(crate) n_query: Reverse<usize>,
    /// Older routes win.
    pub(crate) created_unix_ms: i64,
    /// Then `namespace/name` alphabetically.
    pub(crate) route_key: std::sync::Arc<str>,
    /// Then rule order within a route.
    pub(crate) rule_index: usize,
    /// Then match order within a rule.
    pub(crate) match_index: usize,
}

// === impl PathMatcher ===

impl PathMatcher {
    /// Builds a prefix matcher, dropping trailing slashes (`/abc/` matches like `/abc`).
    pub(crate) fn prefix(prefix: &str) -> Self {
        Self::Prefix(prefix.trim_end_matches('/').into())
    }

    /// Whether `path` satisfies the condition.
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == &**exact,
            Self::Prefix(prefix) => prefix_matches(prefix, path),
            Self::Regex(regex) => regex.is_match(path),
        }
    }

    /// The precedence rank of this path condition.
    pub(crate) fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(exact) => (2, exact.len()),
            Self::Regex(regex) => (1, regex.as_str().len()),
            // `/` is stored as "" but counts as one character.
            Self::Prefix(prefix) => (0, prefix.len().max(1)),
        }
    }
}

/// Element-wise prefix match: `prefix` (no trailing `/`) matches `path` when `path` equals it
/// or continues with `/`.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

// === impl ValueMatcher ===

impl ValueMatcher {
    /// Whether `value` satisfies the condition.
    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(exact) => value == &**exact,
            Self::Regex(regex) => regex.is_match(value),
        }
    }

    /// Whether raw header bytes satisfy the condition (non-UTF-8 values never match a regex).
    fn matches_bytes(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(exact) => value == exact.as_bytes(),
            Self::Regex(regex) => std::str::from_utf8(value).is_ok_and(|v| regex.is_match(v)),
        }
    }
}

/// Compiles `pattern` anchored at both ends (Gateway API regexes match the whole value).
pub(crate) fn anchored_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

// === impl RequestMatcher ===

impl RequestMatcher {
    /// Whether the request satisfies every condition.
    pub(crate) fn matches(&self, request: &mut RequestView<'_>) -> bool {
        if let Some(method) = &self.method
            && method != request.method
        {
            return false;
        }
        if !self.path.matches(request.path) {
            return false;
        }
        for header in &self.headers {
            // A repeated request header is matched on its first value (implementation-specific
            // in the spec; RFC 9110 lets a proxy treat the first as representative).
            match request.headers.get(&header.name) {
                Some(value) if header.value.matches_bytes(value.as_bytes()) => {}
                _ => return false,
            }
        }
        if !self.query.is_empty() {
            let params = request.query_params();
            for condition in &self.query {
                // Repeated parameters: the first value counts (the spec's recommendation).
                match params.iter().find(|(name, _)| name == &*condition.name) {
                    Some((_, value)) if condition.value.matches(value) => {}
                    _ => return false,
                }
            }
        }
        true
    }
}

// === impl RequestView ===

impl<'a> RequestView<'a> {
    /// A view of a request's parts.
    pub(crate) fn new(uri: &'a http::Uri, method: &'a Method, headers: &'a HeaderMap) -> Self {
        Self {
            path: uri.path(),
            query: uri.query(),
            method,
            headers,
            parsed_query: None,
        }
    }

    /// Query parameters, percent-decoded (`+` is a space, as in HTML forms), in order.
    pub(crate) fn query_params(&mut self) -> &[(String, String)] {
        let query = self.query;
        self.parsed_query
            .get_or_insert_with(|| parse_query(query.unwrap_or("")))
    }
}

/// Splits and decodes a query string.
pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+`; invalid escapes are kept literally.
pub(crate) fn percent_decode(input: &str) -> String {
    if !input.bytes().any(|b| b == b'%' || b == b'+') {
        return input.to_string();
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
