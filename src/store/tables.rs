//! The in-memory tables and their indexes. Pure data: no locking, no I/O.

use crate::store::tx::{Op, Transaction};
use crate::store::StoreError;
use crate::types::{Kind, Object};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

type Ids = BTreeSet<String>;

/// What one op did; the watch hub turns these into events.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub kind: Kind,
    pub id: String,
    pub before: Option<Arc<Object>>,
    pub after: Option<Arc<Object>>,
}

/// All objects at one raft index, with the indexes the API filters need.
/// Objects are behind `Arc` so readers copy pointers, not specs.
#[derive(Debug, Default, Clone)]
pub struct Tables {
    index: u64,
    /// Per kind, by ID; ordered so an ID prefix is a range scan.
    objects: [BTreeMap<String, Arc<Object>>; 7],
    /// Per kind, lower-cased name → IDs (one for kinds with unique names).
    names: [HashMap<String, Ids>; 7],
    tasks_by_service: HashMap<String, Ids>,
    tasks_by_node: HashMap<String, Ids>,
}

impl Tables {
    /// Raft index of the last entry applied.
    pub fn index(&self) -> u64 {
        self.index
    }

    pub(crate) fn advance(&mut self, index: u64) {
        self.index = self.index.max(index);
    }

    pub fn get(&self, kind: Kind, id: &str) -> Option<Arc<Object>> {
        self.objects[kind.slot()].get(id).cloned()
    }

    pub fn len(&self, kind: Kind) -> usize {
        self.objects[kind.slot()].len()
    }

    pub fn list(&self, kind: Kind) -> Vec<Arc<Object>> {
        self.objects[kind.slot()].values().cloned().collect()
    }

    pub fn iter(&self, kind: Kind) -> impl Iterator<Item = &Arc<Object>> {
        self.objects[kind.slot()].values()
    }

    /// Objects whose name is exactly `name` (case-sensitive, as the engine's
    /// lookups are, though uniqueness is case-insensitive).
    pub fn by_name(&self, kind: Kind, name: &str) -> Vec<Arc<Object>> {
        let Some(ids) = self.names[kind.slot()].get(&name.to_lowercase()) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| self.get(kind, id))
            .filter(|o| o.name() == Some(name))
            .collect()
    }

    /// Objects whose ID starts with `prefix`.
    pub fn by_id_prefix(&self, kind: Kind, prefix: &str) -> Vec<Arc<Object>> {
        self.objects[kind.slot()]
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(id, _)| id.starts_with(prefix))
            .map(|(_, o)| o.clone())
            .collect()
    }

    pub fn tasks_by_service(&self, service_id: &str) -> Vec<Arc<Object>> {
        self.tasks_in(self.tasks_by_service.get(service_id))
    }

    pub fn tasks_by_node(&self, node_id: &str) -> Vec<Arc<Object>> {
        self.tasks_in(self.tasks_by_node.get(node_id))
    }

    fn tasks_in(&self, ids: Option<&Ids>) -> Vec<Arc<Object>> {
        ids.into_iter()
            .flatten()
            .filter_map(|id| self.get(Kind::Task, id))
            .collect()
    }

    /// Resolve a reference the way the engine does: exact ID, then exact
    /// name, then a unique ID prefix.
    pub fn find(&self, kind: Kind, reference: &str) -> Result<Arc<Object>, StoreError> {
        let not_found = || StoreError::NotFound {
            kind,
            id: reference.to_string(),
        };
        if reference.is_empty() {
            return Err(not_found());
        }
        if let Some(o) = self.get(kind, reference) {
            return Ok(o);
        }
        let ambiguous = |count| StoreError::Ambiguous {
            kind,
            reference: reference.to_string(),
            count,
        };
        let mut named = self.by_name(kind, reference);
        match named.len() {
            0 => {}
            1 => return Ok(named.remove(0)),
            n => return Err(ambiguous(n)),
        }
        let mut prefixed = self.by_id_prefix(kind, reference);
        match prefixed.len() {
            0 => Err(not_found()),
            1 => Ok(prefixed.remove(0)),
            n => Err(ambiguous(n)),
        }
    }

    /// Replace everything (snapshot install / restart).
    pub(crate) fn from_objects(index: u64, objects: Vec<Object>) -> Tables {
        let mut t = Tables {
            index,
            ..Tables::default()
        };
        for o in objects {
            t.put(Arc::new(o));
        }
        t
    }

    /// Apply `tx` as the entry at `index`: all ops or none. On error the
    /// tables are exactly as before (except `index`, which still advances:
    /// the entry is committed, as a no-op).
    pub(crate) fn apply(
        &mut self,
        index: u64,
        tx: &Transaction,
    ) -> Result<Vec<Change>, StoreError> {
        self.index = self.index.max(index);
        let at = tx.at.to_rfc3339();
        let mut changes: Vec<Change> = Vec::with_capacity(tx.ops.len());
        // Conditions first, on the store as the writer found it (the
        // transaction's own writes carry the newest index).
        for op in &tx.ops {
            if let Op::Unchanged { kind, since } = op {
                self.check_unchanged(*kind, *since)?;
            }
        }
        for op in &tx.ops {
            if matches!(op, Op::Unchanged { .. }) {
                continue;
            }
            match self.apply_op(index, &at, op) {
                Ok(change) => changes.push(change),
                Err(e) => {
                    self.undo(changes);
                    return Err(e);
                }
            }
        }
        Ok(changes)
    }

    /// Roll back applied changes, newest first.
    fn undo(&mut self, changes: Vec<Change>) {
        for c in changes.into_iter().rev() {
            self.remove(c.kind, &c.id);
            if let Some(before) = c.before {
                self.put(before);
            }
        }
    }

    fn apply_op(&mut self, index: u64, at: &str, op: &Op) -> Result<Change, StoreError> {
        match op {
            Op::Create(object) => self.create(index, at, object),
            Op::Update { object, expected } => self.update(index, at, object, *expected),
            Op::Delete { kind, id, expected } => self.delete(*kind, id, *expected),
            Op::Unchanged { kind, .. } => Err(StoreError::Invalid {
                kind: *kind,
                reason: "a precondition is not a change".into(),
            }),
        }
    }

    /// [`Op::Unchanged`]: read from the objects' own versions, so a node
    /// restored from a snapshot judges as one that applied the log.
    fn check_unchanged(&self, kind: Kind, since: u64) -> Result<(), StoreError> {
        let newest = self
            .iter(kind)
            .filter_map(|o| o.version())
            .max()
            .unwrap_or(0);
        if newest > since {
            return Err(StoreError::Changed {
                kind,
                since,
                newest,
            });
        }
        Ok(())
    }

    fn create(&mut self, index: u64, at: &str, object: &Object) -> Result<Change, StoreError> {
        let (kind, id) = (object.kind(), object.id().to_string());
        if id.is_empty() {
            return Err(StoreError::Invalid {
                kind,
                reason: "missing ID".into(),
            });
        }
        if self.get(kind, &id).is_some() {
            return Err(StoreError::AlreadyExists { kind, id });
        }
        self.check_name(object)?;
        let mut object = object.clone();
        object.stamp(index, at, None);
        let after = Arc::new(object);
        self.put(after.clone());
        Ok(Change {
            kind,
            id,
            before: None,
            after: Some(after),
        })
    }

    fn update(
        &mut self,
        index: u64,
        at: &str,
        object: &Object,
        expected: u64,
    ) -> Result<Change, StoreError> {
        let (kind, id) = (object.kind(), object.id().to_string());
        let before = self.current(kind, &id, Some(expected))?;
        self.check_name(object)?;
        let mut object = object.clone();
        object.stamp(index, at, before.created_at().map(str::to_string));
        let after = Arc::new(object);
        self.put(after.clone());
        Ok(Change {
            kind,
            id,
            before: Some(before),
            after: Some(after),
        })
    }

    fn delete(
        &mut self,
        kind: Kind,
        id: &str,
        expected: Option<u64>,
    ) -> Result<Change, StoreError> {
        let before = self.current(kind, id, expected)?;
        self.remove(kind, id);
        Ok(Change {
            kind,
            id: id.to_string(),
            before: Some(before),
            after: None,
        })
    }

    /// The stored object, checked against the writer's expected version.
    fn current(
        &self,
        kind: Kind,
        id: &str,
        expected: Option<u64>,
    ) -> Result<Arc<Object>, StoreError> {
        let Some(current) = self.get(kind, id) else {
            return Err(StoreError::NotFound {
                kind,
                id: id.to_string(),
            });
        };
        let actual = current.version().unwrap_or(0);
        match expected {
            Some(expected) if expected != actual => Err(StoreError::OutOfSequence {
                kind,
                id: id.to_string(),
                expected,
                actual,
            }),
            _ => Ok(current),
        }
    }

    /// Unique-name kinds: no other object may hold the name in any case.
    fn check_name(&self, object: &Object) -> Result<(), StoreError> {
        let kind = object.kind();
        let (true, Some(name)) = (kind.unique_names(), object.name()) else {
            return Ok(());
        };
        let taken = self.names[kind.slot()]
            .get(&name.to_lowercase())
            .is_some_and(|ids| ids.iter().any(|other| other != object.id()));
        if taken {
            return Err(StoreError::NameConflict {
                kind,
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// Insert or replace, keeping every index in step.
    fn put(&mut self, object: Arc<Object>) {
        let (kind, id) = (object.kind(), object.id().to_string());
        self.remove(kind, &id);
        if let Some(name) = object.name() {
            add(&mut self.names[kind.slot()], name.to_lowercase(), &id);
        }
        let (service, node) = object.task_refs();
        if let Some(s) = service.filter(|s| !s.is_empty()) {
            add(&mut self.tasks_by_service, s.to_string(), &id);
        }
        if let Some(n) = node.filter(|n| !n.is_empty()) {
            add(&mut self.tasks_by_node, n.to_string(), &id);
        }
        self.objects[kind.slot()].insert(id, object);
    }

    fn remove(&mut self, kind: Kind, id: &str) -> Option<Arc<Object>> {
        let old = self.objects[kind.slot()].remove(id)?;
        if let Some(name) = old.name() {
            drop_id(&mut self.names[kind.slot()], &name.to_lowercase(), id);
        }
        let (service, node) = old.task_refs();
        if let Some(s) = service {
            drop_id(&mut self.tasks_by_service, s, id);
        }
        if let Some(n) = node {
            drop_id(&mut self.tasks_by_node, n, id);
        }
        Some(old)
    }
}

fn add(index: &mut HashMap<String, Ids>, key: String, id: &str) {
    index.entry(key).or_default().insert(id.to_string());
}

fn drop_id(index: &mut HashMap<String, Ids>, key: &str, id: &str) {
    if let Some(ids) = index.get_mut(key) {
        ids.remove(id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}
