//! The raft log, vote and committed/purged markers in sled.
//!
//! Appends are written to sled at once (so reads see them) and
//! acknowledged to openraft only after a flush (sled's `flush_async` plus
//! an fsync, see [`Db::sync`]) that started after the write has completed. One flusher task does the flushes: every
//! callback queued while a flush runs shares the next one, which is how
//! many concurrent proposals end up in one fsync.

use crate::raft::db::Db;
use crate::raft::disk::{decode_entry, encode_entry};
use crate::raft::{RaftError, TypeConfig};
use crate::store::Codec;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

type Flushed = LogFlushed<TypeConfig>;

#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// index (big-endian u64) → encoded entry
    log: sled::Tree,
    /// vote, committed, last_purged as JSON
    meta: sled::Tree,
    codec: Arc<dyn Codec>,
    flusher: mpsc::UnboundedSender<Flushed>,
    flushes: Arc<AtomicU64>,
    /// Last, so the trees above are dropped before it (see `db`).
    db: Arc<Db>,
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl LogStore {
    /// Open the log trees of `db` and start the flusher task (needs a tokio
    /// runtime). The task ends when the last clone of the store is dropped.
    pub fn open(db: Arc<Db>, codec: Arc<dyn Codec>) -> Result<LogStore, RaftError> {
        let log = db.sled.open_tree("log")?;
        let meta = db.sled.open_tree("log_meta")?;
        let flushes = Arc::new(AtomicU64::new(0));
        let (flusher, rx) = mpsc::unbounded_channel();
        tokio::spawn(flush_loop(db.clone(), rx, flushes.clone()));
        let inner = Inner {
            db,
            log,
            meta,
            codec,
            flusher,
            flushes,
        };
        Ok(LogStore {
            inner: Arc::new(inner),
        })
    }

    /// How many flushes acknowledged appends so far (tests check batching).
    pub fn flush_count(&self) -> u64 {
        self.inner.flushes.load(Ordering::Relaxed)
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, k: &[u8]) -> Result<Option<T>, RaftError> {
        match self.inner.meta.get(k)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    fn put_json<T: serde::Serialize>(&self, k: &[u8], v: &T) -> Result<(), RaftError> {
        self.inner.meta.insert(k, serde_json::to_vec(v)?)?;
        Ok(())
    }

    fn last_purged(&self) -> Result<Option<LogId<u64>>, RaftError> {
        self.get_json(LAST_PURGED)
    }

    fn last_entry_id(&self) -> Result<Option<LogId<u64>>, RaftError> {
        match self.inner.log.last()? {
            Some((_, v)) => Ok(Some(decode_entry(&*self.inner.codec, &v)?.log_id)),
            None => Ok(None),
        }
    }

    fn read_range(
        &self,
        start: u64,
        end: Option<u64>,
    ) -> Result<Vec<Entry<TypeConfig>>, RaftError> {
        let iter = match end {
            Some(end) => self.inner.log.range(key(start)..key(end)),
            None => self.inner.log.range(key(start)..),
        };
        iter.map(|kv| {
            let (_, v) = kv?;
            decode_entry(&*self.inner.codec, &v)
        })
        .collect()
    }

    /// Remove every entry in `range` of keys.
    fn remove_range(&self, range: impl RangeBounds<[u8; 8]>) -> Result<(), RaftError> {
        let mut batch = sled::Batch::default();
        for kv in self.inner.log.range(range) {
            batch.remove(kv?.0);
        }
        self.inner.log.apply_batch(batch)?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), RaftError> {
        self.inner.db.sync().await
    }
}

/// Flush once for every group of appends queued meanwhile, then acknowledge
/// them in order.
async fn flush_loop(
    db: Arc<Db>,
    mut rx: mpsc::UnboundedReceiver<Flushed>,
    flushes: Arc<AtomicU64>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, usize::MAX).await > 0 {
        let result = db.sync().await;
        flushes.fetch_add(1, Ordering::Relaxed);
        for cb in batch.drain(..) {
            let r = result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string()));
            cb.log_io_completed(r);
        }
    }
}

/// `[start, end)` of a range of indexes; `None` end = unbounded.
fn bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.checked_add(1),
        Bound::Excluded(e) => Some(*e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let (start, end) = bounds(&range);
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        self.read_range(start, end)
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let read = || -> Result<_, RaftError> {
            let last_purged = self.last_purged()?;
            // An empty log (all purged) ends where the purge ended.
            let last = self.last_entry_id()?.max(last_purged);
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        };
        read().map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        // A vote must survive a crash, or this node could vote twice in a term.
        let r = match self.put_json(VOTE, vote) {
            Ok(()) => self.flush().await,
            Err(e) => Err(e),
        };
        r.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.get_json(VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // Not flushed on its own: it rides on the next flush. Losing it only
        // means a restart re-applies less at once; the leader re-commits the
        // rest as soon as it is elected again.
        self.put_json(COMMITTED, &committed)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let c: Result<Option<Option<LogId<u64>>>, _> = self.get_json(COMMITTED);
        c.map(Option::flatten)
            .map_err(|e| StorageIOError::read(&e).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = encode_entry(&*self.inner.codec, &entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.insert(&key(entry.log_id.index), bytes);
        }
        self.inner
            .log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        if let Err(mpsc::error::SendError(cb)) = self.inner.flusher.send(callback) {
            // The flusher only stops with the runtime; flush here instead.
            let r = self
                .flush()
                .await
                .map_err(|e| std::io::Error::other(e.to_string()));
            cb.log_io_completed(r);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        // Conflicting entries must not come back after a crash.
        let r = match self.remove_range(key(log_id.index)..) {
            Ok(()) => self.flush().await,
            Err(e) => Err(e),
        };
        r.map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        // Marker first: if we crash before the removal, reads still start
        // after it and the leftover entries are removed by the next purge.
        let r = self
            .put_json(LAST_PURGED, &log_id)
            .and_then(|_| self.remove_range(..=key(log_id.index)));
        let r = match r {
            Ok(()) => self.flush().await,
            Err(e) => Err(e),
        };
        r.map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
