//! The raft state machine: the in-memory store, plus the latest snapshot
//! persisted in sled.
//!
//! Applying does not write to disk: after a restart the store is rebuilt
//! from the snapshot and openraft re-applies the committed log tail.

use crate::raft::db::Db;
use crate::raft::disk::{decode_snapshot, encode_snapshot};
use crate::raft::{RaftError, TypeConfig};
use crate::store::{ApplyOutcome, Store};
use crate::types::Object;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const SNAP_META: &[u8] = b"meta";
const SNAP_DATA: &[u8] = b"data";

type Meta = SnapshotMeta<u64, BasicNode>;

pub struct StateMachine {
    store: Arc<Store>,
    /// SNAP_META (JSON) and SNAP_DATA (see `disk`), written together.
    snap: sled::Tree,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    /// Makes snapshot IDs unique even when two share a last log id.
    builds: Arc<AtomicU64>,
    /// Last, so `snap` is dropped before it (see `db`).
    db: Arc<Db>,
}

impl StateMachine {
    /// Open the snapshot tree and load the latest snapshot into `store`.
    pub fn open(db: Arc<Db>, store: Arc<Store>) -> Result<StateMachine, RaftError> {
        let snap = db.sled.open_tree("snapshot")?;
        let mut sm = StateMachine {
            store,
            db,
            snap,
            last_applied: None,
            membership: StoredMembership::default(),
            builds: Arc::new(AtomicU64::new(0)),
        };
        if let Some((meta, data)) = sm.read_snapshot()? {
            sm.load(&meta, &data)?;
        }
        Ok(sm)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn read_snapshot(&self) -> Result<Option<(Meta, Vec<u8>)>, RaftError> {
        let (Some(meta), Some(data)) = (self.snap.get(SNAP_META)?, self.snap.get(SNAP_DATA)?)
        else {
            return Ok(None);
        };
        Ok(Some((serde_json::from_slice(&meta)?, data.to_vec())))
    }

    /// Replace the store with a snapshot's contents.
    fn load(&mut self, meta: &Meta, data: &[u8]) -> Result<(), RaftError> {
        let (_, objects) = decode_snapshot(self.store.codec(), data)?;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        self.store.restore(index, objects);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    /// One verdict per transaction of the entry; none for blank and
    /// membership entries.
    fn apply_one(&mut self, entry: Entry<TypeConfig>) -> Vec<ApplyOutcome> {
        let index = entry.log_id.index;
        self.last_applied = Some(entry.log_id);
        self.store.skip(index);
        match entry.payload {
            EntryPayload::Normal(batch) => batch
                .0
                .iter()
                .map(|tx| self.store.apply(index, tx))
                .collect(),
            EntryPayload::Blank => Vec::new(),
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(entry.log_id), m);
                Vec::new()
            }
        }
    }
}

/// Persist a snapshot atomically and durably before anyone relies on it
/// (openraft purges the log up to it right after).
async fn save_snapshot(
    db: &Arc<Db>,
    snap: &sled::Tree,
    meta: &Meta,
    data: &[u8],
) -> Result<(), RaftError> {
    let mut batch = sled::Batch::default();
    batch.insert(SNAP_META, serde_json::to_vec(meta)?);
    batch.insert(SNAP_DATA, data);
    snap.apply_batch(batch)?;
    db.sync().await
}

/// Captures the store at one applied index; builds and saves its snapshot.
pub struct SnapshotBuilder {
    store: Arc<Store>,
    snap: sled::Tree,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    objects: Vec<Arc<Object>>,
    build: u64,
    /// Last, so `snap` is dropped before it (see `db`).
    db: Arc<Db>,
}

impl SnapshotBuilder {
    async fn build(&mut self) -> Result<Snapshot<TypeConfig>, RaftError> {
        let index = self.last_applied.map_or(0, |l| l.index);
        let objects = std::mem::take(&mut self.objects);
        let data = encode_snapshot(self.store.codec(), index, objects.iter().map(|o| &**o))?;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.build),
            None => format!("--{}", self.build),
        };
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        save_snapshot(&self.db, &self.snap, &meta, &data).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        self.build()
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<ApplyOutcome>>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        Ok(entries.into_iter().map(|e| self.apply_one(e)).collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Taken here, between applies, so the objects match last_applied.
        let (_, objects) = self.store.export();
        SnapshotBuilder {
            store: self.store.clone(),
            db: self.db.clone(),
            snap: self.snap.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            objects,
            build: self.builds.fetch_add(1, Ordering::Relaxed),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let sig = Some(meta.signature());
        self.load(meta, &data)
            .map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
        save_snapshot(&self.db, &self.snap, meta, &data)
            .await
            .map_err(|e| StorageIOError::write_snapshot(sig, &e).into())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let snap = self
            .read_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(snap.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
