//! [`ApiError`]: every admin API failure as an HTTP status and a JSON body
//! `{"error": "...", "field": "..."}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::raft::RaftError;
use crate::store::{ProposeError, RejectKind, Rejection};

/// An admin API error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The offending field of the request, when one is to blame.
    pub field: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// The JSON body of an error.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// `<field>: <message>`, or the message alone.
    pub error: String,
    /// The offending field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

// === impl ApiError ===

impl ApiError {
    /// 400 for a bad request field.
    pub fn bad_request(field: Option<String>, message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            field,
            message,
        }
    }

    /// 404.
    pub fn not_found(message: String) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            field: None,
            message,
        }
    }

    /// 409 for a write that conflicts with what the hub already has.
    pub fn conflict(message: String) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            field: None,
            message,
        }
    }

    /// 500 for something that should not happen.
    pub fn internal(message: String) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            field: None,
            message,
        }
    }

    /// The full message, `<field>: <message>`.
    pub fn text(&self) -> String {
        match &self.field {
            Some(field) => format!("{field}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let status = match rejection.kind {
            RejectKind::NotFound => StatusCode::NOT_FOUND,
            RejectKind::Invalid => StatusCode::BAD_REQUEST,
            RejectKind::Conflict => StatusCode::CONFLICT,
        };
        Self {
            status,
            field: rejection.field,
            message: rejection.message,
        }
    }
}

impl From<RaftError> for ApiError {
    fn from(err: RaftError) -> Self {
        let status = match &err {
            RaftError::NoLeader
            | RaftError::Stopped
            | RaftError::Dropped(_)
            | RaftError::NotLeader { .. }
            | RaftError::Transport(_) => StatusCode::SERVICE_UNAVAILABLE,
            RaftError::Invalid(_) => StatusCode::BAD_REQUEST,
            RaftError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            RaftError::Membership(_) => StatusCode::CONFLICT,
            RaftError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            field: None,
            message: err.to_string(),
        }
    }
}

impl From<ProposeError> for ApiError {
    fn from(err: ProposeError) -> Self {
        match err {
            ProposeError::Raft(err) => err.into(),
            ProposeError::Outcome(err) => Self::internal(err.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.text(),
            field: self.field,
        };
        (self.status, Json(body)).into_response()
    }
}
