//! Cluster state: tables of swarm objects with the indexes the API needs,
//! changed only by applying committed transactions, published to watchers.
//!
//! Reading: [`Store::read`] (or the helpers `get`, `find`, `list`, ...) takes
//! a read lock for as long as the closure runs; objects are `Arc`s, so copy
//! out what you need and return. Writing: build a [`Transaction`] and hand it
//! to a [`Proposer`]. Watching: note `index()` with your read, then
//! [`Store::watch_from`] that index.

#![allow(dead_code, unused_imports)] // wired by the api in issue 4

mod codec;
mod error;
mod proposer;
mod tables;
mod tx;
mod watch;

pub use codec::{decode_object, encode_object, Codec, Identity};
pub use error::{CodecError, ProposeError, StoreError};
pub use proposer::{DirectProposer, Proposer};
pub use tables::Tables;
pub use tx::{ApplyOutcome, Committed, Op, Transaction};
pub use watch::{Action, Event, WatchItem, Watcher, HISTORY};

use crate::types::{Kind, Object};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use watch::Hub;

/// The cluster store. Shared as `Arc<Store>`.
pub struct Store {
    tables: RwLock<Tables>,
    hub: Arc<Hub>,
    codec: Arc<dyn Codec>,
}

impl Store {
    pub fn new() -> Arc<Store> {
        Store::with_codec(Arc::new(Identity))
    }

    pub fn with_codec(codec: Arc<dyn Codec>) -> Arc<Store> {
        Arc::new(Store {
            tables: RwLock::new(Tables::default()),
            hub: Hub::new(0),
            codec,
        })
    }

    /// The codec objects go through on their way to disk.
    pub fn codec(&self) -> &dyn Codec {
        &*self.codec
    }

    // Poisoning: `Tables::apply` restores its state before returning an
    // error and does not panic on input, so a poisoned lock still guards
    // consistent tables.
    fn reader(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    fn writer(&self) -> RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on a consistent view. Keep `f` short: it holds off writers.
    pub fn read<R>(&self, f: impl FnOnce(&Tables) -> R) -> R {
        f(&self.reader())
    }

    /// Raft index of the last applied entry.
    pub fn index(&self) -> u64 {
        self.reader().index()
    }

    pub fn get(&self, kind: Kind, id: &str) -> Option<Arc<Object>> {
        self.reader().get(kind, id)
    }

    /// Exact ID, then exact name, then unique ID prefix.
    pub fn find(&self, kind: Kind, reference: &str) -> Result<Arc<Object>, StoreError> {
        self.reader().find(kind, reference)
    }

    pub fn list(&self, kind: Kind) -> Vec<Arc<Object>> {
        self.reader().list(kind)
    }

    pub fn tasks_by_service(&self, service_id: &str) -> Vec<Arc<Object>> {
        self.reader().tasks_by_service(service_id)
    }

    pub fn tasks_by_node(&self, node_id: &str) -> Vec<Arc<Object>> {
        self.reader().tasks_by_node(node_id)
    }

    /// Changes committed after `index`. See [`WatchItem::Resync`].
    pub fn watch_from(&self, index: u64) -> Watcher {
        self.hub.watch_from(index)
    }

    /// Apply the committed entry at `index`. Only the raft state machine
    /// (or a [`DirectProposer`] in tests) calls this.
    pub fn apply(&self, index: u64, tx: &Transaction) -> ApplyOutcome {
        let mut tables = self.writer();
        let changes = tables.apply(index, tx)?;
        // Published under the write lock so events leave in apply order.
        self.hub.publish(index, changes);
        Ok(Committed { index })
    }

    /// Note a committed entry that carries no transaction (blank,
    /// membership), so `index()` keeps up with the log.
    pub fn skip(&self, index: u64) {
        let mut tables = self.writer();
        tables.advance(index);
    }

    /// Every object and the index they are at, for a snapshot.
    pub fn export(&self) -> (u64, Vec<Arc<Object>>) {
        let tables = self.reader();
        let objects = Kind::ALL
            .iter()
            .flat_map(|k| tables.iter(*k).cloned())
            .collect();
        (tables.index(), objects)
    }

    /// Replace all contents (snapshot install, restart). Watchers resync.
    pub fn restore(&self, index: u64, objects: Vec<Object>) {
        let fresh = Tables::from_objects(index, objects);
        let mut tables = self.writer();
        *tables = fresh;
        self.hub.reset(index);
    }
}

#[cfg(test)]
mod tests;
