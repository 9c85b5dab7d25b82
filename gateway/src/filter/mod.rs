//! Gateway API filters, compiled: header modifiers, redirects, URL rewrites, mirrors and CORS.
//!
//! Order of application (the spec lets implementations fix one and document it): CORS
//! preflight answers first; then a redirect answers; otherwise the request header modifier,
//! then the URL rewrite, then mirrors (so mirrors see the modified request), then the backend
//! and its backend-level filters; on the way back the backend-level response header modifier,
//! the rule-level one, and the CORS response headers.

pub(crate) mod cors;
pub(crate) mod header;
pub(crate) mod mirror;
pub(crate) mod redirect;
pub(crate) mod rewrite;

use self::cors::CorsPolicy;
use self::header::HeaderModifier;
use self::mirror::Mirror;
use self::redirect::Redirect;
use self::rewrite::Rewrite;

/// The filters of a rule or of one backendRef.
#[derive(Debug, Default)]
pub(crate) struct FilterSet {
    /// RequestHeaderModifier.
    pub(crate) request_headers: Option<HeaderModifier>,
    /// ResponseHeaderModifier.
    pub(crate) response_headers: Option<HeaderModifier>,
    /// RequestRedirect.
    pub(crate) redirect: Option<Redirect>,
    /// URLRewrite.
    pub(crate) rewrite: Option<Rewrite>,
    /// RequestMirror (repeatable).
    pub(crate) mirrors: Vec<Mirror>,
    /// CORS.
    pub(crate) cors: Option<CorsPolicy>,
}
