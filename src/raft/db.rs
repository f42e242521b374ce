//! The sled database, shared by the log store and the state machine, with
//! a signal for when the last user has let go of it.
//!
//! sled locks its directory until every handle (including its trees) is
//! dropped, and openraft drops the storage in its own tasks after
//! shutdown. Reopening the same directory in one process (tests, a later
//! `swarm leave`/`init`) waits on [`Closed`] instead of guessing. Holders of
//! an `Arc<Db>` declare it after their trees, so the trees go first.
//!
//! Even then sled's own I/O threads can hold its file for a moment after
//! the last handle is gone, so [`Db::open`] waits (briefly) for the lock.

use crate::raft::RaftError;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// sled's page cache; its default (1 GiB) is far more than the store needs.
pub const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// How long `open` waits for another holder of the directory to let go.
/// Long enough for sled's threads to finish; short enough that a second
/// shoal on the same data dir fails promptly with sled's "could not acquire
/// lock" error.
const LOCK_WAIT: Duration = Duration::from_secs(2);

pub struct Db {
    pub sled: sled::Db,
    /// sled's data file, opened again only to fsync it (see `sync`).
    file: std::fs::File,
    // Dropped with the last `Arc<Db>`, which wakes `Closed`.
    _alive: oneshot::Sender<()>,
}

/// Resolves once every `Arc<Db>` (and so every sled tree held beside it)
/// has been dropped.
pub struct Closed(oneshot::Receiver<()>);

impl Closed {
    pub async fn wait(self) {
        // Err(RecvError) is the expected outcome: the sender was dropped.
        let _ = self.0.await;
    }
}

impl Db {
    pub async fn open(dir: &Path) -> Result<(Arc<Db>, Closed), RaftError> {
        wait_for_lock(&dir.join("db"), LOCK_WAIT).await;
        let sled = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()?;
        let file = std::fs::File::open(dir.join("db"))?;
        let (tx, rx) = oneshot::channel();
        let db = Db {
            sled,
            file,
            _alive: tx,
        };
        Ok((Arc::new(db), Closed(rx)))
    }

    /// Make everything written so far durable, including against power loss.
    ///
    /// sled 0.34's `flush_async` on Linux ends with `sync_file_range`, which
    /// neither flushes the drive's write cache nor the file's metadata; sled
    /// itself fsyncs only from its background thread (every 500 ms). So after
    /// sled's flush we fsync its data file ourselves (fsync acts on the
    /// inode, so our own descriptor does it).
    pub async fn sync(self: &Arc<Self>) -> Result<(), RaftError> {
        self.sled.flush_async().await?;
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.file.sync_all())
            .await
            .map_err(|e| RaftError::Io(std::io::Error::other(e)))??;
        Ok(())
    }
}

/// Wait until nobody holds sled's lock on `file` (the same `flock` sled
/// takes), or until `limit`; sled's own open then reports any holder left.
async fn wait_for_lock(file: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let Ok(probe) = std::fs::File::open(file) else {
            return; // a fresh directory: nothing to wait for
        };
        // The probe's lock is released when it is dropped, before sled's open.
        if !matches!(probe.try_lock(), Err(std::fs::TryLockError::WouldBlock)) {
            return;
        }
        drop(probe);
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
