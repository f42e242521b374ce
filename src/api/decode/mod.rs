//! The one reader of request bodies for shoal's own endpoints: JSON read as
//! the engine reads it with Go's `encoding/json`.
//!
//! Two steps. `syntax` checks the first value of the body as Go's
//! `json.Decoder` does and words its mistakes with Go's texts; `fold` then
//! reads that value into the target type with Go's rules: keys match the
//! type's fields case-insensitively (exact spelling first), unknown keys
//! are ignored, `null` leaves the zero value, type mismatches name the
//! field as Go does. The target type is the schema (its serde field names
//! are the API's spelling), so every endpoint and every nested type gets
//! the same rules without a list of fields to keep in step, and what is
//! stored and returned is in the API's own spelling.

mod enums;
mod fold;
mod names;
mod syntax;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a body could not be read; each text is the engine's.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// Nothing but whitespace: Go's `io.EOF`, which the engine rewords.
    #[error("got EOF while reading request body")]
    Empty,
    /// The body ended inside a value: Go's `io.ErrUnexpectedEOF`.
    #[error("unexpected EOF")]
    UnexpectedEof,
    /// `json.Unmarshal` of an input that ends too early.
    #[error("unexpected end of JSON input")]
    UnexpectedEnd,
    /// Objects or arrays nested deeper than `syntax::MAX_DEPTH`; Go's
    /// words for its own (higher) limit, with ours.
    #[error(
        "exceeded max depth: JSON nested deeper than {} levels",
        syntax::MAX_DEPTH
    )]
    TooDeep,
    /// Go's `SyntaxError` text.
    #[error("{0}")]
    Syntax(String),
    /// Go's `UnmarshalTypeError` text, or another refusal of a value.
    #[error("{0}")]
    Type(String),
    /// A value Go reads and the engine then refuses, with the engine's text.
    #[error("{0}")]
    Refused(String),
}

impl serde::de::Error for DecodeError {
    /// Refusals serde raises itself (a string no enum variant has); Go's
    /// prefix keeps clients that match on it working.
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        DecodeError::Type(format!("json: cannot unmarshal {msg}"))
    }
}

/// Reads a request body into `T` as the engine would.
pub fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    from_value(&value(bytes)?)
}

/// The first JSON value of a body, syntax checked as Go does; keys as sent.
pub fn value(bytes: &[u8]) -> Result<Value, DecodeError> {
    let end = syntax::first_value(bytes)?;
    let slice = bytes.get(..end).unwrap_or(bytes);
    // What Go's scanner accepts and serde_json does not: invalid UTF-8 in a
    // string, numbers beyond f64, nesting deeper than 128.
    serde_json::from_slice(slice).map_err(|e| DecodeError::Syntax(e.to_string()))
}

/// A whole input (not a body: a query parameter), as `json.Unmarshal`
/// reads it; keys as sent.
pub fn whole_value(bytes: &[u8]) -> Result<Value, DecodeError> {
    syntax::whole_value(bytes)?;
    serde_json::from_slice(bytes).map_err(|e| DecodeError::Syntax(e.to_string()))
}

/// Reads an already parsed body into `T` with Go's rules.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, DecodeError> {
    fold::from_value(value)
}

/// The values of an object that Go would decode into `field` (keys that
/// match it case-insensitively), for the few fields the engine reads
/// before decoding, such as a node's role.
pub fn values_of<'v>(object: &'v mut Value, field: &str) -> impl Iterator<Item = &'v mut Value> {
    let field = field.to_string();
    object
        .as_object_mut()
        .into_iter()
        .flat_map(|o| o.iter_mut())
        .filter(move |(key, _)| fold::fold_eq(&field, key))
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests;
