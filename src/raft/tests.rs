use super::db::Db;
use super::*;
use crate::store::{Identity, Op, Proposer, StoreError};
use crate::types::{Kind, Object, Timestamp};
use bollard::models::{Service, ServiceSpec};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use std::sync::Arc;
use std::time::Instant;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, (TempDir, super::db::Closed)> for Builder {
    async fn build(
        &self,
    ) -> Result<((TempDir, super::db::Closed), LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let (db, closed) = Db::open(&dir.path().join("raft")).await.unwrap();
        let log = LogStore::open(db.clone(), Arc::new(Identity)).unwrap();
        let sm = StateMachine::open(db, crate::store::Store::new()).unwrap();
        Ok(((dir, closed), log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

pub(crate) fn service(id: &str) -> Object {
    Object::Service(
        Service {
            id: Some(id.into()),
            spec: Some(ServiceSpec {
                name: Some(format!("svc-{id}")),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into(),
    )
}

pub(crate) fn create(id: &str) -> Transaction {
    Transaction::new(Timestamp { secs: 1, nanos: 0 }).create(service(id))
}

fn opts(snapshot_every: u64) -> NodeOptions {
    NodeOptions {
        snapshot_every,
        keep_after_snapshot: 10,
        ..NodeOptions::default()
    }
}

/// Every object with its version, for comparing stores.
fn contents(store: &crate::store::Store) -> Vec<(String, Option<u64>)> {
    let (_, objects) = store.export();
    objects
        .iter()
        .map(|o| (o.id().to_string(), o.version()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propose_reports_store_errors_without_poisoning() {
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::open(dir.path(), 1, opts(5000)).await.unwrap();
    let ok = node.propose(create("a")).await.unwrap().unwrap();
    assert_eq!(
        node.store().get(Kind::Service, "a").unwrap().version(),
        Some(ok.index)
    );
    let dup = node.propose(create("a")).await.unwrap();
    assert!(matches!(dup, Err(StoreError::AlreadyExists { .. })));
    let stale = Transaction::new(Timestamp::default()).update(service("a"), ok.index + 100);
    let stale = node.propose(stale).await.unwrap();
    assert!(matches!(stale, Err(StoreError::OutOfSequence { .. })));
    // The state machine carries on.
    let next = node.propose(create("b")).await.unwrap().unwrap();
    assert!(next.index > ok.index);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(RaftNode::open(dir.path(), 1, opts(5000)).await.unwrap());
    let before = node.flush_count();
    let n = 400;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move { node.propose(create(&format!("s{i}"))).await })
        })
        .collect();
    let mut indexes = Vec::new();
    for t in tasks {
        indexes.push(t.await.unwrap().unwrap().unwrap().index);
    }
    indexes.sort_unstable();
    indexes.dedup();
    let flushes = node.flush_count() - before;
    eprintln!(
        "{n} concurrent proposals, {} entries, {flushes} flushes",
        indexes.len()
    );
    assert!(
        flushes < n as u64 / 2,
        "{flushes} flushes for {n} proposals"
    );
    assert!(
        indexes.len() < n / 2,
        "{} entries for {n} proposals",
        indexes.len()
    );
    assert_eq!(node.store().list(Kind::Service).len(), n);
    Arc::into_inner(node).unwrap().shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_objects_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::open(dir.path(), 1, opts(50)).await.unwrap();
    for i in 0..300 {
        node.propose(create(&format!("s{i}")))
            .await
            .unwrap()
            .unwrap();
    }
    // Updates and a delete after the last snapshot, so replay matters.
    let s0 = node.store().get(Kind::Service, "s0").unwrap();
    let tx = Transaction {
        at: Timestamp { secs: 9, nanos: 0 },
        ops: vec![
            Op::Update {
                object: (*s0).clone(),
                expected: s0.version().unwrap(),
            },
            Op::Delete {
                kind: Kind::Service,
                id: "s1".into(),
                expected: None,
            },
            // A condition that holds: logged and replayed with the rest.
            Op::Unchanged {
                kind: Kind::Secret,
                since: 0,
            },
        ],
    };
    node.propose(tx).await.unwrap().unwrap();
    node.raft()
        .wait(Some(std::time::Duration::from_secs(10)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= 250),
            "snapshot built",
        )
        .await
        .unwrap();
    let before = contents(&node.store());
    let index = node.store().index();
    node.shutdown().await.unwrap();

    let node = RaftNode::open(dir.path(), 1, opts(50)).await.unwrap();
    assert_eq!(contents(&node.store()), before);
    assert!(node.store().index() >= index);
    let purged = node.raft().metrics().borrow().purged;
    assert!(purged.is_some(), "the log was purged");
    node.propose(create("after")).await.unwrap().unwrap();
    node.shutdown().await.unwrap();
}

/// 100,000 committed transactions (group-committed into a few thousand
/// entries); reopening must load a snapshot and replay only a short tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_of_a_long_log_is_fast() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(RaftNode::open(dir.path(), 1, opts(5000)).await.unwrap());
    let total: usize = std::env::var("LONG_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let workers = 64;
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let node = node.clone();
            tokio::spawn(async move {
                for i in (w..total).step_by(workers) {
                    node.propose(create(&format!("s{i}")))
                        .await
                        .unwrap()
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "wrote {total} transactions in {:?} with {} flushes",
        started.elapsed(),
        node.flush_count()
    );
    let before = contents(&node.store());
    Arc::into_inner(node).unwrap().shutdown().await.unwrap();

    let started = Instant::now();
    let node = RaftNode::open(dir.path(), 1, opts(5000)).await.unwrap();
    let took = started.elapsed();
    eprintln!("reopened after {total} transactions in {took:?}");
    assert_eq!(contents(&node.store()), before);
    // Most of a restart is decoding the snapshot's objects with serde, which
    // an unoptimised (debug) build does many times slower.
    let limit = if cfg!(debug_assertions) {
        10_000
    } else {
        1_000
    };
    assert!(took.as_millis() < limit, "restart took {took:?}");
    node.shutdown().await.unwrap();
}
