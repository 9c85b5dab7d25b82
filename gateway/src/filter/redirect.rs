//! RequestRedirect: builds the `Location` from the request and the filter's fields.
//!
//! Spec rules (HTTPRequestRedirectFilter): scheme defaults to the request's; host to the
//! request's host (port dropped); port: the filter's, else the well-known port of a set
//! scheme, else the listener's port; `:80` for http and `:443` for https are omitted; the path
//! is unchanged unless a path modifier is set; the query is kept.

use meridian_proto::model::route::PathModifier;

use super::rewrite::modify_path;

/// A compiled RequestRedirect filter.
#[derive(Debug)]
pub(crate) struct Redirect {
    /// `http` or `https`.
    pub(crate) scheme: Option<String>,
    /// Replacement host.
    pub(crate) hostname: Option<String>,
    /// Path replacement.
    pub(crate) path: Option<PathModifier>,
    /// Replacement port.
    pub(crate) port: Option<u16>,
    /// 301, 302, 303, 307 or 308.
    pub(crate) status: http::StatusCode,
}

/// The request parts a redirect needs.
pub(crate) struct RedirectInput<'a> {
    /// `http` or `https` (how the request reached the gateway).
    pub(crate) scheme: &'a str,
    /// Normalised request host.
    pub(crate) host: &'a str,
    /// The listener port the request arrived on.
    pub(crate) listener_port: u16,
    /// Request path.
    pub(crate) path: &'a str,
    /// Request query.
    pub(crate) query: Option<&'a str>,
    /// The matched PathPrefix (for ReplacePrefixMatch).
    pub(crate) matched_prefix: Option<&'a str>,
}

impl Redirect {
    /// The `Location` header value.
    pub(crate) fn location(&self, input: &RedirectInput<'_>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(input.scheme);
        let host = self.hostname.as_deref().unwrap_or(input.host);
        let port = match (self.port, &self.scheme) {
            (Some(port), _) => Some(port),
            (None, Some(scheme)) => well_known_port(scheme),
            (None, None) => Some(input.listener_port),
        };
        let port = port.filter(|&p| Some(p) != well_known_port(scheme));
        let path = match &self.path {
            Some(modifier) => modify_path(modifier, input.path, input.matched_prefix),
            None => input.path.to_string(),
        };
        let mut location = format!("{scheme}://");
        if host.contains(':') {
            // An IPv6 literal.
            location.push('[');
            location.push_str(host);
            location.push(']');
        } else {
            location.push_str(host);
        }
        if let Some(port) = port {
            location.push(':');
            location.push_str(&port.to_string());
        }
        location.push_str(&path);
        if let Some(query) = input.query {
            location.push('?');
            location.push_str(query);
        }
        location
    }
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(
        scheme: Option<&str>,
        hostname: Option<&str>,
        port: Option<u16>,
        path: Option<PathModifier>,
    ) -> Redirect {
        Redirect {
            scheme: scheme.map(str::to_string),
            hostname: hostname.map(str::to_string),
            path,
            port,
            status: http::StatusCode::FOUND,
        }
    }

    /// (filter, request scheme, listener port, path, query, matched prefix, expected).
    type Case<'a> = (
        Redirect,
        &'a str,
        u16,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
    );

    #[test]
    fn location_table() {
        let prefix = |s: &str| Some(PathModifier::ReplacePrefixMatch(s.to_string()));
        let full = |s: &str| Some(PathModifier::ReplaceFullPath(s.to_string()));
        // (filter, request scheme, listener port, path, query, matched prefix, expected)
        let table: Vec<Case<'_>> = vec![
            (
                redirect(None, Some("example.org"), None, None),
                "http",
                80,
                "/hostname-redirect",
                None,
                None,
                "http://example.org/hostname-redirect",
            ),
            (
                redirect(None, None, None, None),
                "http",
                8080,
                "/x",
                None,
                None,
                "http://gw.example:8080/x",
            ),
            (
                redirect(Some("https"), None, None, None),
                "http",
                80,
                "/scheme",
                None,
                None,
                "https://gw.example/scheme",
            ),
            (
                redirect(Some("https"), None, Some(8443), None),
                "http",
                80,
                "/s",
                None,
                None,
                "https://gw.example:8443/s",
            ),
            (
                redirect(None, None, Some(8083), None),
                "http",
                80,
                "/port",
                None,
                None,
                "http://gw.example:8083/port",
            ),
            (
                redirect(None, None, Some(80), None),
                "http",
                8080,
                "/p",
                None,
                None,
                "http://gw.example/p",
            ),
            (
                redirect(Some("http"), None, None, None),
                "https",
                443,
                "/p",
                None,
                None,
                "http://gw.example/p",
            ),
            (
                redirect(None, None, None, None),
                "https",
                443,
                "/p",
                None,
                None,
                "https://gw.example/p",
            ),
            (
                redirect(None, None, None, prefix("/replacement-prefix")),
                "http",
                80,
                "/original-prefix/lemon",
                None,
                Some("/original-prefix"),
                "http://gw.example/replacement-prefix/lemon",
            ),
            (
                redirect(None, None, None, full("/full-path-replacement")),
                "http",
                80,
                "/full/path/original",
                Some("a=b"),
                Some("/full"),
                "http://gw.example/full-path-replacement?a=b",
            ),
        ];
        for (filter, scheme, listener_port, path, query, matched_prefix, want) in table {
            let input = RedirectInput {
                scheme,
                host: "gw.example",
                listener_port,
                path,
                query,
                matched_prefix,
            };
            assert_eq!(filter.location(&input), want, "{filter:?} {path}");
        }
    }
}
