//! Secrets at rest: the data key (DEK) that seals Secret objects on their
//! way to disk, the key file that keeps it under `<data-dir>/swarm/`, and
//! autolock (the DEK wrapped by a key derived from the `SWMKEY-1-…` unlock
//! key, which shoal never writes down).
//!
//! The store in memory holds secrets in plaintext (the API and dispatcher
//! read them from there); everything raft writes — log entries and
//! snapshots — goes through [`SecretCodec`], which encrypts every Secret
//! object whole with an AEAD under the DEK.

mod codec;
mod keys;

pub use codec::SecretCodec;
pub use keys::{KeyFile, KeyStore, LockedKey};

/// Why keys could not be made, read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The engine's text (moby's `ParseHumanReadableKey`).
    #[error("invalid key string")]
    BadKeyFormat,
    /// The key parsed but does not open the data key.
    #[error("swarm could not be unlocked: invalid key provided")]
    WrongKey,
    #[error("cannot access the key file {path}: {source}")]
    Disk {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is unreadable: {reason}")]
    Corrupt {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}
