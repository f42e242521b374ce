//! How objects are encoded when they go to disk (log entries, snapshots).
//!
//! The [`Codec`] seam exists so a later issue can encrypt Secret data at
//! rest: it sees every object's bytes with its kind, on the way in and out.

use crate::store::CodecError;
use crate::types::{Kind, Object};

pub trait Codec: Send + Sync + 'static {
    /// Wrap the plain encoding of an object of `kind` for disk.
    fn seal(&self, kind: Kind, plain: Vec<u8>) -> Result<Vec<u8>, CodecError>;
    /// Undo [`Codec::seal`].
    fn open(&self, kind: Kind, sealed: Vec<u8>) -> Result<Vec<u8>, CodecError>;
}

/// Stores objects as plain JSON.
#[derive(Debug, Default, Clone, Copy)]
pub struct Identity;

impl Codec for Identity {
    fn seal(&self, _kind: Kind, plain: Vec<u8>) -> Result<Vec<u8>, CodecError> {
        Ok(plain)
    }

    fn open(&self, _kind: Kind, sealed: Vec<u8>) -> Result<Vec<u8>, CodecError> {
        Ok(sealed)
    }
}

/// JSON (bollard's serde, so unknown fields are already gone), then sealed.
pub fn encode_object(codec: &dyn Codec, object: &Object) -> Result<Vec<u8>, CodecError> {
    codec.seal(object.kind(), serde_json::to_vec(object)?)
}

pub fn decode_object(codec: &dyn Codec, kind: Kind, bytes: Vec<u8>) -> Result<Object, CodecError> {
    let object: Object = serde_json::from_slice(&codec.open(kind, bytes)?)?;
    if object.kind() != kind {
        return Err(CodecError::Other(format!(
            "stored {} decoded as {}",
            kind,
            object.kind()
        )));
    }
    Ok(object)
}
