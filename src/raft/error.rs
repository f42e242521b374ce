//! Errors of the raft part.

use crate::store::CodecError;

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Bytes on disk that do not decode: a bug or a damaged disk.
    #[error("corrupt {what}: {why}")]
    Corrupt { what: &'static str, why: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("raft config: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("raft did not become ready: {0}")]
    NotReady(String),
}

impl RaftError {
    pub(crate) fn corrupt(what: &'static str, why: impl ToString) -> Self {
        RaftError::Corrupt {
            what,
            why: why.to_string(),
        }
    }
}
