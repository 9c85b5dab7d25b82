//! The request target, checked and put in normal form before any routing: the one authority
//! the request is routed on (which then is also the `Host` the backend sees), and the
//! normalized path (which then is also the path the backend sees).
//!
//! Host rules:
//! - More than one `Host` field, a `Host` that is not a valid authority, or an HTTP/1.1
//!   request without `Host` is answered 400 (RFC 9112 §3.2).
//! - With a URI authority (HTTP/1 absolute-form, HTTP/2 `:authority`) the authority is the
//!   routing host and the upstream `Host` is generated from it, replacing the client's
//!   (RFC 9112 §3.2.2, RFC 9113 §8.3.1); on HTTP/2 a `host` field naming another host than
//!   `:authority` makes the request malformed (400).
//! - Otherwise the `Host` field is both the routing host and the upstream `Host`.
//!
//! A URLRewrite hostname filter later replaces the upstream `Host`; nothing else does.

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Uri, Version};

use crate::route::host::{is_valid_authority, normalize_host};
use crate::route::path::{PathError, normalize_path};

/// Why a request is answered 400 before routing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetError {
    /// RFC 9112 §3.2: exactly one `Host` field.
    #[error("more than one Host header")]
    DuplicateHost,
    /// RFC 9112 §3.2: HTTP/1.1 requests carry `Host`.
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    /// RFC 9110 §7.2: `Host` is `uri-host [ ":" port ]`.
    #[error("the Host header is not a valid authority")]
    InvalidHost,
    /// The URI authority holds userinfo (RFC 9110 §4.2.4) or is otherwise unusable.
    #[error("the request target's authority is not a valid host")]
    InvalidAuthority,
    /// RFC 9113 §8.3.1: `host` and `:authority` must name the same host.
    #[error("the Host header names another host than :authority")]
    ConflictingHost,
    /// The path cannot be normalized.
    #[error("{0}")]
    Path(#[from] PathError),
}

/// Where the request's routing host came from (the URI authority, or the `Host` header).
/// Holds shared handles on the bytes (a reference count), not copies.
#[derive(Debug)]
pub(crate) enum HostSource {
    /// HTTP/1 absolute-form or HTTP/2 `:authority`.
    Authority(Authority),
    /// The `Host` header (none: HTTP/1.0 or HTTP/2 without either).
    Header(Option<HeaderValue>),
}

// === impl TargetError ===

impl TargetError {
    /// The body of the 400 answer.
    pub(crate) fn answer_text(&self) -> &'static str {
        match self {
            Self::DuplicateHost => "bad request: more than one Host header\n",
            Self::MissingHost => "bad request: no Host header\n",
            Self::InvalidHost => "bad request: invalid Host header\n",
            Self::InvalidAuthority => "bad request: invalid authority in the request target\n",
            Self::ConflictingHost => "bad request: Host and :authority name different hosts\n",
            Self::Path(PathError::NotAbsolute) => "bad request: the path must start with '/'\n",
            Self::Path(PathError::InvalidEscape { .. }) => {
                "bad request: invalid percent-encoding in the path\n"
            }
        }
    }
}

// === impl HostSource ===

impl HostSource {
    /// The authority as text (`""` when there is none).
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Authority(authority) => authority.as_str(),
            Self::Header(value) => value.as_ref().and_then(|h| h.to_str().ok()).unwrap_or(""),
        }
    }
}

/// Checks the request's host fields and path, makes the `Host` header the routing authority
/// and the URI path the normalized path, and returns the routing authority.
///
/// Cost for the usual request (one `Host` header, a path with no `%`, `//` or dot segment):
/// one pass over the `Host` bytes and one over the path bytes; nothing is allocated or
/// rewritten. An HTTP/2 request allocates one `Host` value.
pub(crate) fn prepare<B>(request: &mut Request<B>) -> Result<HostSource, TargetError> {
    let source = routing_authority(request)?;
    normalize_target(request)?;
    Ok(source)
}

/// The host checks of [`prepare`].
fn routing_authority<B>(request: &mut Request<B>) -> Result<HostSource, TargetError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host_field = hosts.next();
    if hosts.next().is_some() {
        return Err(TargetError::DuplicateHost);
    }
    if let Some(value) = host_field
        && !is_valid_authority(value.as_bytes())
    {
        return Err(TargetError::InvalidHost);
    }
    let http11 = request.version() == Version::HTTP_11;
    let Some(authority) = request.uri().authority() else {
        if http11 && host_field.is_none() {
            return Err(TargetError::MissingHost);
        }
        return Ok(HostSource::Header(host_field.cloned()));
    };
    if !is_valid_authority(authority.as_str().as_bytes()) {
        return Err(TargetError::InvalidAuthority);
    }
    match host_field {
        None if http11 => return Err(TargetError::MissingHost),
        // Absolute-form HTTP/1: the Host field is ignored (RFC 9112 §3.2.2), so a different
        // one is replaced, not refused. HTTP/2 and later: a different host is malformed. The
        // port does not take part, as in routing.
        Some(value)
            if request.version() >= Version::HTTP_2
                && value.to_str().map(normalize_host).ok()
                    != Some(normalize_host(authority.as_str())) =>
        {
            return Err(TargetError::ConflictingHost);
        }
        Some(value) if value.as_bytes() == authority.as_str().as_bytes() => {
            return Ok(HostSource::Authority(authority.clone()));
        }
        _ => {}
    }
    let authority = authority.clone();
    // Validated above: an authority is a valid header value.
    let value =
        HeaderValue::from_str(authority.as_str()).map_err(|_| TargetError::InvalidAuthority)?;
    request.headers_mut().insert(header::HOST, value);
    Ok(HostSource::Authority(authority))
}

/// The path normalization of [`prepare`]: the URI keeps its scheme, authority and query; only
/// a path that changes is written back.
fn normalize_target<B>(request: &mut Request<B>) -> Result<(), TargetError> {
    let uri = request.uri();
    // `OPTIONS *` (asterisk-form, RFC 9112 §3.2.4) has no path to normalize.
    if uri.path() == "*" && request.method() == Method::OPTIONS {
        return Ok(());
    }
    let mut target = match normalize_path(uri.path())? {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(path) => path,
    };
    if let Some(query) = uri.query() {
        target.push('?');
        target.push_str(query);
    }
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    // The normal form only drops characters and decodes escapes into unreserved ones, so it
    // is a valid path whenever the original was.
    parts.path_and_query = Some(
        PathAndQuery::try_from(target).map_err(|_| TargetError::Path(PathError::NotAbsolute))?,
    );
    *request.uri_mut() = Uri::from_parts(parts).map_err(|_| TargetError::InvalidAuthority)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut request = Request::builder()
            .version(version)
            .uri(uri)
            .body(())
            .unwrap();
        for host in hosts {
            request
                .headers_mut()
                .append(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        request
    }

    /// `(routing host, upstream Host header, URI path and query)` or the error.
    type Want<'a> = Result<(&'a str, Option<&'a str>, &'a str), TargetError>;

    fn check(version: Version, uri: &str, hosts: &[&str], want: Want<'_>) {
        let mut request = request(version, uri, hosts);
        let got = prepare(&mut request).map(|source| source.as_str().to_string());
        let got = got.map(|host| {
            let header = request
                .headers()
                .get(header::HOST)
                .map(|v| v.to_str().unwrap().to_string());
            let target = request
                .uri()
                .path_and_query()
                .map_or(String::new(), |pq| pq.to_string());
            (host, header, target)
        });
        let want = want.map(|(host, header, target)| {
            (
                host.to_string(),
                header.map(str::to_string),
                target.to_string(),
            )
        });
        assert_eq!(got, want, "{version:?} {uri} {hosts:?}");
    }

    #[test]
    fn host_rules() {
        use TargetError::*;
        let h1 = Version::HTTP_11;
        let h2 = Version::HTTP_2;
        let cases: &[(Version, &str, &[&str], Want<'_>)] = &[
            (
                h1,
                "/",
                &["a.example.com"],
                Ok(("a.example.com", Some("a.example.com"), "/")),
            ),
            (h1, "/", &[], Err(MissingHost)),
            (Version::HTTP_10, "/", &[], Ok(("", None, "/"))),
            (
                h1,
                "/",
                &["a.example.com", "b.example.com"],
                Err(DuplicateHost),
            ),
            (
                h1,
                "/",
                &["a.example.com", "a.example.com"],
                Err(DuplicateHost),
            ),
            (
                h1,
                "/",
                &["x status=200 route=infra/admin"],
                Err(InvalidHost),
            ),
            (h1, "/", &["user@a.example.com"], Err(InvalidHost)),
            // Absolute-form: the authority wins and becomes Host.
            (
                h1,
                "https://a.example.com/x?q",
                &["b.example.com"],
                Ok(("a.example.com", Some("a.example.com"), "/x?q")),
            ),
            (
                h1,
                "http://a.example.com:8080/",
                &["a.example.com:8080"],
                Ok(("a.example.com:8080", Some("a.example.com:8080"), "/")),
            ),
            (h1, "http://a.example.com/", &[], Err(MissingHost)),
            (
                h1,
                "http://user@a.example.com/",
                &["a.example.com"],
                Err(InvalidAuthority),
            ),
            // HTTP/2: :authority, with or without an agreeing host field.
            (
                h2,
                "https://a.example.com/",
                &[],
                Ok(("a.example.com", Some("a.example.com"), "/")),
            ),
            (
                h2,
                "https://a.example.com/",
                &["A.example.com:443"],
                Ok(("a.example.com", Some("a.example.com"), "/")),
            ),
            (
                h2,
                "https://a.example.com/",
                &["b.example.com"],
                Err(ConflictingHost),
            ),
            (
                h2,
                "/",
                &["a.example.com"],
                Ok(("a.example.com", Some("a.example.com"), "/")),
            ),
            (h2, "/", &[], Ok(("", None, "/"))),
        ];
        for (version, uri, hosts, want) in cases {
            check(*version, uri, hosts, want.clone());
        }
    }

    #[test]
    fn paths_are_normalized_and_queries_kept() {
        let h1 = Version::HTTP_11;
        let host = Some("h");
        for (uri, want) in [
            (
                "/api/../internal/x?a=%2e%2e/../b",
                Ok(("h", host, "/internal/x?a=%2e%2e/../b")),
            ),
            ("/%61dmin", Ok(("h", host, "/admin"))),
            ("http://h//admin?x", Ok(("h", host, "/admin?x"))),
            (
                "/a%zz",
                Err(TargetError::Path(PathError::InvalidEscape { at: 2 })),
            ),
            ("/plain?q", Ok(("h", host, "/plain?q"))),
        ] {
            check(h1, uri, &["h"], want);
        }
        // OPTIONS * keeps its asterisk; any other method with it is refused.
        let mut options = request(h1, "*", &["h"]);
        *options.method_mut() = Method::OPTIONS;
        assert!(prepare(&mut options).is_ok());
        assert_eq!(options.uri().path(), "*");
        let mut get = request(h1, "*", &["h"]);
        assert_eq!(
            prepare(&mut get).map(|_| ()),
            Err(TargetError::Path(PathError::NotAbsolute))
        );
    }
}
