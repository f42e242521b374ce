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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use base64::Engine as _;
    use bollard::models::{Secret, SecretSpec};

    use super::*;
    use crate::raft::{NodeOptions, RaftNode};
    use crate::store::{Proposer, Transaction};
    use crate::types::{Kind, Object, Timestamp};

    const MARKER: &[u8] = b"shoal-at-rest-marker-7f3a9c";

    /// The marker and its base64 forms at all three alignments (a prefix
    /// of 0, 1 or 2 bytes shifts where its base64 starts); each form
    /// trimmed of the characters that depend on neighbouring bytes.
    pub fn needles(marker: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![marker.to_vec()];
        for shift in 0..3 {
            let mut bytes = vec![b'x'; shift];
            bytes.extend_from_slice(marker);
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            // Skip the characters that mix in the prefix, and the tail.
            let start = (shift * 4).div_ceil(3);
            let end = b64.len() - 4;
            out.push(b64.as_bytes()[start..end].to_vec());
        }
        out
    }

    /// Files under `dir` containing any needle.
    pub fn files_with(dir: &Path, needles: &[Vec<u8>]) -> Vec<String> {
        let mut hits = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    if needles
                        .iter()
                        .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
                    {
                        hits.push(path.display().to_string());
                    }
                }
            }
        }
        hits
    }

    fn secret(i: usize) -> Object {
        let mut data = MARKER.to_vec();
        data.extend_from_slice(format!("-{i}").as_bytes());
        Object::Secret(Box::new(Secret {
            id: Some(format!("secret{i:020}")),
            spec: Some(SecretSpec {
                name: Some(format!("s{i}")),
                data: Some(base64::engine::general_purpose::STANDARD.encode(&data)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_secret_reaches_the_raft_log_or_snapshots_in_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::create(dir.path(), false).unwrap();
        let opts = || NodeOptions {
            snapshot_every: 20,
            codec: keys.codec().unwrap(),
            ..NodeOptions::default()
        };
        let node = RaftNode::open(dir.path(), 1, opts()).await.unwrap();
        for i in 0..30 {
            let tx = Transaction::new(Timestamp { secs: 1, nanos: 0 }).create(secret(i));
            node.propose(tx).await.unwrap().unwrap();
        }
        // snapshot_every 20: 30 writes build one on their own.
        node.raft()
            .wait(Some(std::time::Duration::from_secs(10)))
            .metrics(|m| m.snapshot.is_some(), "snapshot")
            .await
            .unwrap();
        // The store in memory has the plaintext; the disk does not.
        assert_eq!(node.store().list(Kind::Secret).len(), 30);
        let needles = needles(MARKER);
        assert_eq!(files_with(dir.path(), &needles), Vec::<String>::new());
        node.shutdown().await.unwrap();

        // Reopened from the snapshot and log: the secrets decrypt.
        let node = RaftNode::open(dir.path(), 1, opts()).await.unwrap();
        let store = node.store();
        let Some(Object::Secret(s)) = store
            .get(Kind::Secret, &format!("secret{:020}", 3))
            .as_deref()
            .cloned()
        else {
            panic!("secret 3 is back");
        };
        let data = base64::engine::general_purpose::STANDARD
            .decode(s.spec.unwrap().data.unwrap())
            .unwrap();
        assert!(data.starts_with(MARKER));
        assert_eq!(files_with(dir.path(), &needles), Vec::<String>::new());
        node.shutdown().await.unwrap();

        // Another data key cannot read them.
        let other = KeyStore::create(tempfile::tempdir().unwrap().path(), false).unwrap();
        let bad = NodeOptions {
            codec: other.codec().unwrap(),
            ready_timeout: std::time::Duration::from_secs(2),
            ..NodeOptions::default()
        };
        assert!(RaftNode::open(dir.path(), 1, bad).await.is_err());
    }

    #[test]
    fn needles_find_every_alignment() {
        let n = needles(MARKER);
        for shift in 0..3 {
            let mut bytes = vec![b'q'; shift];
            bytes.extend_from_slice(MARKER);
            bytes.extend_from_slice(b"tail");
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            assert!(n[1..].iter().any(|needle| b64
                .as_bytes()
                .windows(needle.len())
                .any(|w| w == needle.as_slice())));
        }
    }
}
