//! Answers the gateway generates itself: errors (plain text or gRPC status), redirects and
//! CORS preflights.

use http::{HeaderValue, Response, StatusCode, header};

use super::body::ProxyBody;

/// gRPC status codes the gateway emits.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GrpcCode {
    /// 4: the deadline passed.
    DeadlineExceeded = 4,
    /// 8: a resource limit (the request body is too large to buffer).
    ResourceExhausted = 8,
    /// 12: no route for the method.
    Unimplemented = 12,
    /// 13: the request itself is broken (its body could not be read); not retryable, unlike
    /// `Unavailable`.
    Internal = 13,
    /// 14: no backend available (also for invalid backends, per the GRPCRoute spec).
    Unavailable = 14,
}

/// A plain-text error answer.
pub(crate) fn error(status: StatusCode, message: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// 405 for CONNECT, with the methods the gateway does forward.
pub(crate) fn connect_refused() -> Response<ProxyBody> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n");
    response.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"),
    );
    response
}

/// A trailers-only gRPC error (HTTP 200 with `grpc-status` in the headers).
pub(crate) fn grpc_error(code: GrpcCode, message: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code as u16));
    // Plain-text messages end with a newline, which a header value cannot carry.
    if let Ok(value) = HeaderValue::from_str(message.trim_end()) {
        headers.insert("grpc-message", value);
    }
    response
}

/// The answer for an error status, shaped for gRPC when the request was gRPC.
pub(crate) fn failure(
    grpc: bool,
    status: StatusCode,
    message: &'static str,
) -> Response<ProxyBody> {
    if !grpc {
        return error(status, message);
    }
    let code = match status {
        StatusCode::NOT_FOUND => GrpcCode::Unimplemented,
        StatusCode::GATEWAY_TIMEOUT => GrpcCode::DeadlineExceeded,
        // gRPC's HTTP-to-status mapping: 400 is INTERNAL.
        StatusCode::BAD_REQUEST => GrpcCode::Internal,
        StatusCode::PAYLOAD_TOO_LARGE => GrpcCode::ResourceExhausted,
        _ => GrpcCode::Unavailable,
    };
    grpc_error(code, message)
}

/// A redirect to `location`.
pub(crate) fn redirect(status: StatusCode, location: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
