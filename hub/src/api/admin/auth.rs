//! Bearer-token authentication of the admin API (an axum middleware).
//!
//! `/healthz`, `/ready` and `/metrics` stay open (probes, load balancers and Prometheus scrape
//! them). Every other
//! route needs `Authorization: Bearer <token>` when the node has tokens. A named token's name
//! becomes the audit actor: the middleware rewrites `X-Meridian-Actor` to `NAME`, or
//! `NAME:<header>` when the client sent one, so a client cannot write as someone else.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{ACTOR_HEADER, DEFAULT_ACTOR};
use crate::auth::AdminTokens;

/// Paths that never need a token.
const OPEN_PATHS: [&str; 3] = ["/healthz", "/ready", "/metrics"];

/// Checks the request's bearer token against `tokens`.
pub(super) async fn require_token(
    State(tokens): State<Arc<AdminTokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let token = match presented {
        None => {
            return unauthorized(
                "authentication required: send `Authorization: Bearer <token>` \
                 (meridian ctl --token or MERIDIAN_TOKEN)",
                "Bearer realm=\"meridian\"",
            );
        }
        Some(value) => match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return unauthorized(
                    "the Authorization header must be `Bearer <token>`",
                    "Bearer realm=\"meridian\", error=\"invalid_request\"",
                );
            }
        },
    };
    let Some(principal) = tokens.check(token) else {
        tracing::warn!(path = %request.uri().path(), "admin API request with an invalid token");
        return unauthorized(
            "invalid bearer token",
            "Bearer realm=\"meridian\", error=\"invalid_token\"",
        );
    };
    if let Some(name) = principal.name {
        let sent = request
            .headers()
            .get(ACTOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|a| !a.is_empty() && *a != DEFAULT_ACTOR);
        let actor = match sent {
            Some(sent) if sent != name => format!("{name}:{sent}"),
            _ => name,
        };
        match HeaderValue::from_str(&actor) {
            Ok(value) => {
                request.headers_mut().insert(ACTOR_HEADER, value);
            }
            Err(_) => {
                return ApiError::bad_request(
                    Some("X-Meridian-Actor".into()),
                    "must be printable characters".into(),
                )
                .into_response();
            }
        }
    }
    next.run(request).await
}

fn unauthorized(message: &str, challenge: &'static str) -> Response {
    let mut response = ApiError {
        status: StatusCode::UNAUTHORIZED,
        field: None,
        message: message.to_string(),
    }
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}
