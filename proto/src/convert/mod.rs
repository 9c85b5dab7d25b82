//! Conversions between the domain model (`crate::model`) and its protobuf wire form (`crate::pb`).
//!
//! Conventions, the same for every type:
//!
//! - **Encoding never fails:** `impl From<&model::X> for pb::X`. It borrows because senders keep
//!   their snapshot (often behind an `Arc`) after sending it. Field-less enums are `Copy` and
//!   convert by value both ways (`From<model::E> for pb::E`, `From<pb::E> for model::E`).
//! - **Decoding validates:** `impl TryFrom<pb::X> for model::X` with [`ConvertError`]. It takes
//!   the message by value so decoded strings move into the model without copying. Every error
//!   names the field path of the bad value relative to the message being converted, for example
//!   `http_routes[2].rules[0].matches[1].path: missing required field`; callers that wrap a
//!   message in an envelope add their own prefix with [`ConvertError::in_field`].
//!
//! Wire rules (see `proto/meridian/v1/model.proto`): durations are milliseconds (encoding
//! truncates sub-millisecond parts), addresses are strings, and an empty string stands for
//! `None` in the non-`optional` string fields `GatewayProbe.address` and `Routing.pinned`.
//! Decoding checks what the model's types and documentation promise: names go through the
//! model constructors, addresses parse, ports are 1..=65535, enum integers are known, required
//! sub-messages are present, and spec-defined ranges hold (weights, status codes, fractions).

mod cluster;
mod dns;
mod gateway;
mod names;
mod net;
mod route;
mod shared;

pub use cluster::SharedStatusFields;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::model::ModelError;

/// A wire message that does not describe a valid model value.
///
/// Displays as `<field path>: <what is wrong>`, for example
/// `listeners[0].addresses[1]: invalid IP address "10.0.0.300": invalid IP address syntax`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConvertError {
    /// Path segments, innermost first: errors are built at the leaf and prefixed on the way
    /// up, so pushing is cheaper than inserting at the front.
    rev_path: Vec<Segment>,
    kind: ConvertErrorKind,
}

/// What is wrong with a wire value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertErrorKind {
    /// A string or value the model rejects (names, addresses, fractions, ...).
    #[error(transparent)]
    Invalid(#[from] ModelError),
    /// A sub-message or `oneof` the model requires was not set.
    #[error("missing required field")]
    Missing,
    /// An enum integer this build does not know (a newer peer, or corruption).
    #[error("unknown enum value {0}")]
    UnknownEnum(i32),
    /// A rule that ties several fields together does not hold.
    #[error("{0}")]
    Constraint(&'static str),
    /// A number outside the range the model allows.
    #[error("value {value} is out of range {allowed}")]
    OutOfRange {
        /// The value received.
        value: u64,
        /// The allowed values, for the message (`"1..=65535"`).
        allowed: &'static str,
    },
}

/// One step of a field path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Field(&'static str),
    Index(usize),
}

// === impl ConvertError ===

impl ConvertError {
    /// An error at the value being converted (the path is filled in by the callers above it).
    pub fn new(kind: impl Into<ConvertErrorKind>) -> Self {
        Self {
            rev_path: Vec::new(),
            kind: kind.into(),
        }
    }

    /// Prefixes the path with a field name: `port: ...` becomes `listener.port: ...`.
    /// Callers that convert a message nested in an envelope use this to name where it was.
    #[must_use]
    pub fn in_field(mut self, field: &'static str) -> Self {
        self.rev_path.push(Segment::Field(field));
        self
    }

    /// Prefixes the path with a list index: `port: ...` becomes `[3].port: ...`.
    #[must_use]
    pub fn at_index(mut self, index: usize) -> Self {
        self.rev_path.push(Segment::Index(index));
        self
    }

    /// The field path of the bad value (`rules[0].matches[1].path`); empty when the converted
    /// value itself is wrong.
    pub fn path(&self) -> String {
        let mut out = String::new();
        for segment in self.rev_path.iter().rev() {
            match segment {
                Segment::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Segment::Index(i) => {
                    use fmt::Write as _;
                    // Writing to a String cannot fail.
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        out
    }

    /// What is wrong with the value.
    pub fn kind(&self) -> &ConvertErrorKind {
        &self.kind
    }

    fn render(&self) -> String {
        let path = self.path();
        if path.is_empty() {
            self.kind.to_string()
        } else {
            format!("{path}: {}", self.kind)
        }
    }
}

impl From<ModelError> for ConvertError {
    fn from(err: ModelError) -> Self {
        Self::new(err)
    }
}

// === decoding helpers ===

/// Adds path context to a conversion result.
trait Context<T> {
    /// Prefixes an error's path with `field`.
    fn field(self, field: &'static str) -> Result<T, ConvertError>;
}

impl<T, E: Into<ConvertError>> Context<T> for Result<T, E> {
    fn field(self, field: &'static str) -> Result<T, ConvertError> {
        self.map_err(|e| e.into().in_field(field))
    }
}

/// A required sub-message or `oneof`: `None` is an error at `field`.
fn required<T>(value: Option<T>, field: &'static str) -> Result<T, ConvertError> {
    value.ok_or_else(|| ConvertError::new(ConvertErrorKind::Missing).in_field(field))
}

/// Decodes a required sub-message, naming `field` in any error.
fn message<P, M>(value: Option<P>, field: &'static str) -> Result<M, ConvertError>
where
    M: TryFrom<P, Error = ConvertError>,
{
    required(value, field)?.try_into().field(field)
}

/// Decodes an optional sub-message, naming `field` in any error.
fn optional<P, M>(value: Option<P>, field: &'static str) -> Result<Option<M>, ConvertError>
where
    M: TryFrom<P, Error = ConvertError>,
{
    value.map(M::try_from).transpose().field(field)
}

/// Decodes every element of a repeated field, naming `field[i]` in any error.
fn each<P, M>(items: Vec<P>, field: &'static str) -> Result<Vec<M>, ConvertError>
where
    M: TryFrom<P, Error = ConvertError>,
{
    each_with(items, field, M::try_from)
}

/// Decodes every element of a repeated field with `decode`, naming `field[i]` in any error.
fn each_with<P, M>(
    items: Vec<P>,
    field: &'static str,
    mut decode: impl FnMut(P) -> Result<M, ConvertError>,
) -> Result<Vec<M>, ConvertError> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| decode(item).map_err(|e| e.at_index(i).in_field(field)))
        .collect()
}

/// Decodes a prost enum integer, naming `field` when the value is unknown.
fn enumeration<E: TryFrom<i32>>(value: i32, field: &'static str) -> Result<E, ConvertError> {
    E::try_from(value)
        .map_err(|_| ConvertError::new(ConvertErrorKind::UnknownEnum(value)).in_field(field))
}

/// Encodes every element of a slice.
fn encode_all<'a, M: 'a, P: From<&'a M>>(items: &'a [M]) -> Vec<P> {
    items.iter().map(P::from).collect()
}
