//! CORS (HTTPCORSFilter): answers preflight requests at the gateway and adds CORS headers to
//! actual responses when the `Origin` is allowed.
//!
//! Spec points: an allowed origin is echoed in `Access-Control-Allow-Origin` (or `*` when the
//! list allows any origin and credentials are off); with credentials the gateway never answers
//! `*` and echoes the requested method/headers instead; a `*` in an origin's host is greedy to
//! the left over labels; `Access-Control-Allow-Credentials` appears only when true; a preflight
//! from a disallowed origin gets 200 without CORS headers.

use http::header::{self, HeaderMap, HeaderValue};

/// A compiled CORS policy.
#[derive(Debug)]
pub(crate) struct CorsPolicy {
    origins: Vec<OriginPattern>,
    any_origin: bool,
    allow_credentials: bool,
    allow_methods: Option<HeaderValue>,
    any_method: bool,
    allow_headers: Option<HeaderValue>,
    any_header: bool,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
}

#[derive(Debug)]
struct OriginPattern {
    scheme: String,
    /// Host, possibly starting with `*`.
    host: String,
    port: Option<String>,
}

impl CorsPolicy {
    /// Compiles the model filter; the error names a bad origin or header.
    pub(crate) fn compile(model: &meridian_proto::model::route::Cors) -> Result<Self, String> {
        let mut origins = Vec::new();
        let mut any_origin = false;
        for origin in &model.allow_origins {
            if origin == "*" {
                any_origin = true;
                continue;
            }
            origins.push(
                OriginPattern::parse(origin)
                    .ok_or_else(|| format!("invalid CORS origin {origin:?}"))?,
            );
        }
        let join = |values: &[String], what: &str| -> Result<Option<HeaderValue>, String> {
            let listed: Vec<&str> = values
                .iter()
                .map(String::as_str)
                .filter(|v| *v != "*")
                .collect();
            if listed.is_empty() {
                return Ok(None);
            }
            HeaderValue::try_from(listed.join(", "))
                .map(Some)
                .map_err(|_| format!("invalid CORS {what} {values:?}"))
        };
        Ok(Self {
            origins,
            any_origin,
            allow_credentials: model.allow_credentials,
            allow_methods: join(&model.allow_methods, "allowMethods")?,
            any_method: model.allow_methods.iter().any(|m| m == "*"),
            allow_headers: join(&model.allow_headers, "allowHeaders")?,
            any_header: model.allow_headers.iter().any(|h| h == "*"),
            expose_headers: join(&model.expose_headers, "exposeHeaders")?,
            max_age: HeaderValue::from(model.max_age_seconds),
        })
    }

    /// Whether `origin` is allowed.
    pub(crate) fn allows(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|p| p.matches(origin))
    }

    /// Whether the request is a CORS preflight (OPTIONS with Origin and
    /// Access-Control-Request-Method).
    pub(crate) fn is_preflight(method: &http::Method, headers: &HeaderMap) -> bool {
        method == http::Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Headers for a preflight answer (only `Vary: Origin` when the origin is not allowed).
    pub(crate) fn preflight_headers(&self, request: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        let Some(origin) = request.get(header::ORIGIN) else {
            self.vary(&mut out);
            return out;
        };
        if !origin.to_str().is_ok_and(|o| self.allows(o)) {
            self.vary(&mut out);
            return out;
        }
        self.origin_headers(origin, &mut out);
        if let Some(requested) = request.get(header::ACCESS_CONTROL_REQUEST_METHOD) {
            let methods = if self.any_method {
                if self.allow_credentials {
                    Some(requested.clone())
                } else {
                    Some(HeaderValue::from_static("*"))
                }
            } else {
                self.allow_methods.clone()
            };
            if let Some(methods) = methods {
                out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
            }
        }
        let headers = if self.any_header {
            match request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                Some(requested) if self.allow_credentials => Some(requested.clone()),
                Some(_) | None if self.allow_credentials => None,
                _ => Some(HeaderValue::from_static("*")),
            }
        } else {
            self.allow_headers.clone()
        };
        if let Some(headers) = headers {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, headers);
        }
        out.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        out
    }

    /// Adds CORS headers to an actual (non-preflight) response when the origin is allowed,
    /// and `Vary: Origin` whenever the answer depends on the origin.
    pub(crate) fn apply_to_response(&self, origin: Option<&HeaderValue>, response: &mut HeaderMap) {
        match origin {
            Some(origin) if origin.to_str().is_ok_and(|o| self.allows(o)) => {
                self.origin_headers(origin, response);
            }
            _ => self.vary(response),
        }
    }

    /// `Vary: Origin` unless every origin gets the same answer (`*` without credentials): a
    /// shared cache must not serve an answer made for one origin (or for none, or for a
    /// refused one) to another.
    fn vary(&self, out: &mut HeaderMap) {
        if !(self.any_origin && !self.allow_credentials && self.origins.is_empty()) {
            out.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }

    fn origin_headers(&self, origin: &HeaderValue, out: &mut HeaderMap) {
        let allow_origin = if self.any_origin
            && !self.allow_credentials
            && !self.origins.iter().any(|p| p.matches_value(origin))
        {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        };
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.allow_credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose_headers {
            out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        out.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

impl OriginPattern {
    fn parse(origin: &str) -> Option<Self> {
        let (scheme, rest) = origin.split_once("://")?;
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty() => {
                (host, Some(port.to_string()))
            }
            _ => (rest, None),
        };
        if host.is_empty() || scheme.is_empty() {
            return None;
        }
        Some(Self {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn matches_value(&self, origin: &HeaderValue) -> bool {
        origin.to_str().is_ok_and(|o| self.matches(o))
    }

    fn matches(&self, origin: &str) -> bool {
        let Some(candidate) = Self::parse(origin) else {
            return false;
        };
        if candidate.scheme != self.scheme || candidate.port != self.port {
            return false;
        }
        match self.host.strip_prefix('*') {
            // `*` is greedy to the left over labels: `*.bar.com` matches `a.b.bar.com`.
            Some(suffix) => candidate.host.len() > suffix.len() && candidate.host.ends_with(suffix),
            None => candidate.host == self.host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::model::route::Cors;

    fn policy(credentials: bool) -> CorsPolicy {
        CorsPolicy::compile(&Cors {
            allow_origins: vec!["https://www.foo.com".into(), "https://*.bar.com".into()],
            allow_credentials: credentials,
            allow_methods: vec!["GET".into(), "OPTIONS".into()],
            allow_headers: vec!["x-header-1".into(), "x-header-2".into()],
            expose_headers: vec!["x-header-3".into()],
            max_age_seconds: 3600,
        })
        .unwrap()
    }

    fn request(origin: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        headers.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("GET"),
        );
        headers.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("x-header-1"),
        );
        headers
    }

    #[test]
    fn preflight_from_allowed_origins() {
        let p = policy(true);
        for origin in [
            "https://www.foo.com",
            "https://www.bar.com",
            "https://a.b.bar.com",
        ] {
            let out = p.preflight_headers(&request(origin));
            assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], origin);
            assert_eq!(out[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, OPTIONS");
            assert_eq!(
                out[header::ACCESS_CONTROL_ALLOW_HEADERS],
                "x-header-1, x-header-2"
            );
            assert_eq!(out[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-header-3");
            assert_eq!(out[header::ACCESS_CONTROL_MAX_AGE], "3600");
            assert_eq!(out[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        }
    }

    #[test]
    fn disallowed_origins_get_no_cors_headers() {
        let p = policy(false);
        for origin in [
            "https://foobar.com",
            "http://www.foo.com",
            "https://bar.com",
            "https://www.foo.com:8443",
        ] {
            let out = p.preflight_headers(&request(origin));
            // No CORS grant, but the answer still varies by origin for caches.
            assert_eq!(out.len(), 1, "{origin}: {out:?}");
            assert_eq!(out[header::VARY], "Origin", "{origin}");
            let mut response = HeaderMap::new();
            p.apply_to_response(Some(&HeaderValue::from_static(origin)), &mut response);
            assert_eq!(response.len(), 1, "{origin}: {response:?}");
            assert_eq!(response[header::VARY], "Origin", "{origin}");
        }
        let out = p.preflight_headers(&request("https://www.foo.com"));
        assert!(!out.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }

    #[test]
    fn wildcards_with_and_without_credentials() {
        let wide = |credentials| {
            CorsPolicy::compile(&Cors {
                allow_origins: vec!["*".into()],
                allow_credentials: credentials,
                allow_methods: vec!["*".into()],
                allow_headers: vec!["*".into()],
                expose_headers: vec![],
                max_age_seconds: 5,
            })
            .unwrap()
        };
        let out = wide(false).preflight_headers(&request("https://x.org"));
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_METHODS], "*");
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_HEADERS], "*");
        let out = wide(true).preflight_headers(&request("https://x.org"));
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://x.org");
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_METHODS], "GET");
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_HEADERS], "x-header-1");
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    }
}
