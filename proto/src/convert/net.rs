//! Addresses and ports on the wire: IPs and socket addresses travel as strings, ports as
//! `uint32`.

use std::net::{IpAddr, SocketAddr};

use super::{ConvertError, ConvertErrorKind};
use crate::model::ModelError;

/// The allowed port range, for error messages.
const PORT_RANGE: &str = "1..=65535";

/// Decodes a port that must be set: 1..=65535.
pub(super) fn port(value: u32) -> Result<u16, ConvertError> {
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ConvertError::new(ConvertErrorKind::OutOfRange {
            value: value.into(),
            allowed: PORT_RANGE,
        })),
    }
}

/// Decodes an `optional uint32` port: absent is `None`, present must be 1..=65535.
pub(super) fn optional_port(value: Option<u32>) -> Result<Option<u16>, ConvertError> {
    value.map(port).transpose()
}

/// Decodes an IP address (`127.0.1.1`, `::1`).
pub(super) fn ip(value: String) -> Result<IpAddr, ConvertError> {
    value
        .parse()
        .map_err(|e: std::net::AddrParseError| invalid("IP address", &value, e.to_string()))
}

/// Decodes a socket address (`127.0.1.1:8080`, `[::1]:53`); port 0 is rejected because
/// nothing can be reached on it.
pub(super) fn socket_addr(value: String) -> Result<SocketAddr, ConvertError> {
    let addr: SocketAddr = value
        .parse()
        .map_err(|e: std::net::AddrParseError| invalid("socket address", &value, e.to_string()))?;
    if addr.port() == 0 {
        return Err(invalid("socket address", &value, "port 0 is not allowed"));
    }
    Ok(addr)
}

/// Decodes a string where empty means `None` (for non-`optional` proto3 string fields).
pub(super) fn optional_socket_addr(value: String) -> Result<Option<SocketAddr>, ConvertError> {
    if value.is_empty() {
        return Ok(None);
    }
    socket_addr(value).map(Some)
}

fn invalid(what: &'static str, value: &str, why: impl Into<String>) -> ConvertError {
    ModelError::invalid(what, value, why).into()
}
