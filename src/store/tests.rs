use super::*;
use crate::types::Timestamp;
use bollard::models::{Node, NodeDescription, SecretSpec, Service, ServiceSpec, Task};

fn at(secs: i64) -> Timestamp {
    Timestamp { secs, nanos: 5 }
}

fn service(id: &str, name: &str) -> Object {
    Object::Service(
        Service {
            id: Some(id.into()),
            spec: Some(ServiceSpec {
                name: Some(name.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into(),
    )
}

fn task(id: &str, service: &str, node: Option<&str>) -> Object {
    Object::Task(Box::from(Task {
        id: Some(id.into()),
        service_id: Some(service.into()),
        node_id: node.map(Into::into),
        ..Default::default()
    }))
}

fn secret(id: &str, name: &str) -> Object {
    Object::Secret(Box::new(bollard::models::Secret {
        id: Some(id.into()),
        spec: Some(SecretSpec {
            name: Some(name.into()),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

#[test]
fn create_stamps_version_and_times() {
    let store = Store::new();
    let tx = Transaction::new(at(1_795_549_565)).create(service("s1", "web"));
    assert_eq!(store.apply(7, &tx), Ok(Committed { index: 7 }));
    let s = store.get(Kind::Service, "s1").unwrap();
    assert_eq!(s.version(), Some(7));
    let Object::Service(svc) = &*s else { panic!() };
    assert_eq!(
        svc.created_at.as_deref(),
        Some("2026-11-24T19:46:05.000000005Z")
    );
    assert_eq!(svc.updated_at, svc.created_at);
    assert_eq!(store.index(), 7);
}

#[test]
fn update_checks_version_and_keeps_created_at() {
    let store = Store::new();
    store
        .apply(3, &Transaction::new(at(10)).create(service("s1", "web")))
        .unwrap();
    let stale = Transaction::new(at(11)).update(service("s1", "web"), 2);
    let err = store.apply(4, &stale).unwrap_err();
    assert!(matches!(
        err,
        StoreError::OutOfSequence {
            expected: 2,
            actual: 3,
            ..
        }
    ));
    assert_eq!(err.to_string(), "update out of sequence");

    store
        .apply(
            5,
            &Transaction::new(at(12)).update(service("s1", "web2"), 3),
        )
        .unwrap();
    let s = store.get(Kind::Service, "s1").unwrap();
    assert_eq!(s.version(), Some(5));
    let Object::Service(svc) = &*s else { panic!() };
    assert_eq!(
        svc.created_at.as_deref(),
        Some("1970-01-01T00:00:10.000000005Z")
    );
    assert_eq!(
        svc.updated_at.as_deref(),
        Some("1970-01-01T00:00:12.000000005Z")
    );
    // The rename moved the name index.
    assert!(store.find(Kind::Service, "web").is_err());
    assert_eq!(store.find(Kind::Service, "web2").unwrap().id(), "s1");
}

#[test]
fn failed_transaction_changes_nothing() {
    let store = Store::new();
    store
        .apply(1, &Transaction::new(at(1)).create(service("s1", "web")))
        .unwrap();
    let mut w = store.watch_from(1);
    let tx = Transaction::new(at(2))
        .create(service("s2", "api"))
        .update(service("s1", "front"), 1)
        .delete(Kind::Service, "s1", None)
        .create(service("s3", "WEB2"))
        .create(service("s4", "web2")); // name conflict, case-insensitive
    let err = store.apply(2, &tx).unwrap_err();
    assert!(matches!(err, StoreError::NameConflict { .. }), "{err:?}");
    assert_eq!(store.list(Kind::Service).len(), 1);
    let s1 = store.get(Kind::Service, "s1").unwrap();
    assert_eq!(s1.name(), Some("web"));
    assert_eq!(s1.version(), Some(1));
    assert!(store.find(Kind::Service, "front").is_err());
    assert!(store.find(Kind::Service, "api").is_err());
    // A failed transaction is a committed no-op: the index moves, no events.
    assert_eq!(store.index(), 2);
    store
        .apply(3, &Transaction::new(at(3)).create(service("s5", "x")))
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let WatchItem::Event(e) = rt.block_on(w.next()).unwrap() else {
        panic!()
    };
    assert_eq!((e.index, e.id.as_str()), (3, "s5"));
}

#[test]
fn preconditions() {
    let store = Store::new();
    store
        .apply(1, &Transaction::new(at(1)).create(service("s1", "web")))
        .unwrap();
    let dup = store.apply(2, &Transaction::new(at(1)).create(service("s1", "other")));
    assert!(matches!(dup, Err(StoreError::AlreadyExists { .. })));
    let missing = store.apply(3, &Transaction::new(at(1)).update(service("nope", "x"), 1));
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));
    let del = store.apply(
        4,
        &Transaction::new(at(1)).delete(Kind::Service, "s1", Some(9)),
    );
    assert!(matches!(del, Err(StoreError::OutOfSequence { .. })));
    let no_id = store.apply(5, &Transaction::new(at(1)).create(service("", "x")));
    assert!(matches!(no_id, Err(StoreError::Invalid { .. })));
    store
        .apply(
            6,
            &Transaction::new(at(1)).delete(Kind::Service, "s1", Some(1)),
        )
        .unwrap();
    assert!(store.get(Kind::Service, "s1").is_none());
    // Names are per kind: a secret may share a service's name.
    store
        .apply(7, &Transaction::new(at(1)).create(service("s1", "web")))
        .unwrap();
    store
        .apply(8, &Transaction::new(at(1)).create(secret("x1", "web")))
        .unwrap();
}

#[test]
fn find_resolves_id_then_name_then_prefix() {
    let store = Store::new();
    let tx = Transaction::new(at(1))
        .create(service("abc111", "web"))
        .create(service("abc222", "abc111x"))
        .create(service("zzz", "Abc"));
    store.apply(1, &tx).unwrap();
    let find = |r: &str| store.find(Kind::Service, r).map(|o| o.id().to_string());
    assert_eq!(find("abc111").unwrap(), "abc111");
    assert_eq!(find("web").unwrap(), "abc111");
    // Lookups are case-sensitive though uniqueness is not.
    assert!(matches!(find("WEB"), Err(StoreError::NotFound { .. })));
    assert_eq!(find("Abc").unwrap(), "zzz");
    assert_eq!(find("abc2").unwrap(), "abc222");
    assert!(matches!(
        find("abc"),
        Err(StoreError::Ambiguous { count: 2, .. })
    ));
    assert!(matches!(find(""), Err(StoreError::NotFound { .. })));
    assert!(matches!(find("q"), Err(StoreError::NotFound { .. })));
}

#[test]
fn nodes_by_hostname_may_repeat() {
    let node = |id: &str| {
        Object::Node(Box::new(Node {
            id: Some(id.into()),
            description: Some(NodeDescription {
                hostname: Some("h".into()),
                ..Default::default()
            }),
            ..Default::default()
        }))
    };
    let store = Store::new();
    store
        .apply(1, &Transaction::new(at(1)).create(node("n1")))
        .unwrap();
    assert_eq!(store.find(Kind::Node, "h").unwrap().id(), "n1");
    store
        .apply(2, &Transaction::new(at(1)).create(node("n2")))
        .unwrap();
    assert!(matches!(
        store.find(Kind::Node, "h"),
        Err(StoreError::Ambiguous { count: 2, .. })
    ));
}

#[test]
fn task_indexes_follow_updates_and_deletes() {
    let store = Store::new();
    let tx = Transaction::new(at(1))
        .create(task("t1", "s1", None))
        .create(task("t2", "s1", Some("n1")))
        .create(task("t3", "s2", Some("n1")));
    store.apply(1, &tx).unwrap();
    let ids = |v: Vec<Arc<Object>>| v.iter().map(|o| o.id().to_string()).collect::<Vec<_>>();
    assert_eq!(ids(store.tasks_by_service("s1")), ["t1", "t2"]);
    assert_eq!(ids(store.tasks_by_node("n1")), ["t2", "t3"]);
    store
        .apply(
            2,
            &Transaction::new(at(2)).update(task("t1", "s1", Some("n2")), 1),
        )
        .unwrap();
    assert_eq!(ids(store.tasks_by_node("n2")), ["t1"]);
    store
        .apply(3, &Transaction::new(at(3)).delete(Kind::Task, "t2", None))
        .unwrap();
    assert_eq!(ids(store.tasks_by_service("s1")), ["t1"]);
    assert_eq!(ids(store.tasks_by_node("n1")), ["t3"]);
}

#[tokio::test]
async fn watch_streams_and_resumes() {
    let store = Store::new();
    let mut live = store.watch_from(0);
    store
        .apply(1, &Transaction::new(at(1)).create(service("s1", "a")))
        .unwrap();
    store
        .apply(2, &Transaction::new(at(2)).update(service("s1", "b"), 1))
        .unwrap();
    store
        .apply(
            3,
            &Transaction::new(at(3)).delete(Kind::Service, "s1", None),
        )
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let Some(WatchItem::Event(e)) = live.next().await else {
            panic!()
        };
        seen.push((e.index, e.action, e.object.name().map(String::from)));
    }
    assert_eq!(
        seen,
        [
            (1, Action::Create, Some("a".into())),
            (2, Action::Update, Some("b".into())),
            (3, Action::Remove, Some("b".into())),
        ]
    );
    // A late watcher resumes from history.
    let mut late = store.watch_from(1);
    let Some(WatchItem::Event(e)) = late.next().await else {
        panic!()
    };
    assert_eq!(e.index, 2);
    assert_eq!(e.before.as_ref().and_then(|b| b.name()), Some("a"));
}

#[tokio::test]
async fn lagging_watcher_catches_up_or_resyncs() {
    let store = Store::new();
    let mut slow = store.watch_from(0);
    // More than the live channel holds, less than the ring.
    for i in 1..=2000u64 {
        let id = format!("s{i}");
        store
            .apply(i, &Transaction::new(at(1)).create(service(&id, &id)))
            .unwrap();
    }
    for i in 1..=2000u64 {
        let Some(WatchItem::Event(e)) = slow.next().await else {
            panic!("at {i}")
        };
        assert_eq!(e.index, i);
    }
    // Far past the ring: the slow watcher must resync, apply never blocked.
    let mut slower = store.watch_from(2000);
    let n = 2000 + HISTORY as u64 + 10;
    for i in 2001..=n {
        let id = format!("s{i}");
        store
            .apply(i, &Transaction::new(at(1)).create(service(&id, &id)))
            .unwrap();
    }
    assert!(matches!(slower.next().await, Some(WatchItem::Resync)));
    assert!(slower.next().await.is_none());
    assert!(matches!(
        store.watch_from(5).next().await,
        Some(WatchItem::Resync)
    ));
    // Restoring a snapshot voids history.
    let mut w = store.watch_from(n);
    store.restore(n + 5, Vec::new());
    assert!(matches!(w.next().await, Some(WatchItem::Resync)));
    assert_eq!(store.index(), n + 5);
}

#[tokio::test]
async fn direct_proposer_applies_in_order() {
    let store = Store::new();
    let p = DirectProposer::new(store.clone());
    let a = p
        .propose(Transaction::new(at(1)).create(service("s1", "a")))
        .await
        .unwrap();
    let b = p
        .propose(Transaction::new(at(1)).create(service("s2", "a")))
        .await
        .unwrap();
    assert_eq!(a, Ok(Committed { index: 1 }));
    assert!(matches!(b, Err(StoreError::NameConflict { .. })));
    assert_eq!(store.index(), 2);
}

#[test]
fn codec_round_trip_drops_unknown_fields() {
    let json = r#"{"Service":{"ID":"s1","Spec":{"Name":"web","Bogus":1,"Labels":{}}}}"#;
    let o: Object = serde_json::from_str(json).unwrap();
    let bytes = encode_object(&Identity, &o).unwrap();
    let back = decode_object(&Identity, Kind::Service, bytes).unwrap();
    assert_eq!(back, o);
    let text = serde_json::to_string(&back).unwrap();
    assert!(
        !text.contains("Bogus") && text.contains("\"Labels\":{}"),
        "{text}"
    );
    let wrong = decode_object(&Identity, Kind::Task, encode_object(&Identity, &o).unwrap());
    assert!(wrong.is_err());
}

#[test]
fn an_unchanged_condition_refuses_a_write_read_from_an_older_store() {
    let store = Store::new();
    store
        .apply(1, &Transaction::new(at(1)).create(service("s1", "web")))
        .unwrap();
    // Two writers read the store at index 1 and each allocate from it.
    let first = Transaction::new(at(2))
        .create(service("s2", "a"))
        .unchanged_since(Kind::Service, 1);
    let second = Transaction::new(at(3))
        .create(service("s3", "b"))
        .unchanged_since(Kind::Service, 1);
    store.apply(2, &first).unwrap();
    let err = store.apply(3, &second).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Changed {
                kind: Kind::Service,
                since: 1,
                newest: 2
            }
        ),
        "{err:?}"
    );
    assert!(store.get(Kind::Service, "s3").is_none());
    // Other kinds are not the condition's business; read again, it passes.
    let again = Transaction::new(at(4))
        .create(service("s3", "b"))
        .unchanged_since(Kind::Secret, 1)
        .unchanged_since(Kind::Service, 3);
    store.apply(4, &again).unwrap();
    // The same verdict after a restore from a snapshot of the objects.
    let restored = Store::new();
    let (index, objects) = store.export();
    restored.restore(index, objects.iter().map(|o| (**o).clone()).collect());
    let late = Transaction::new(at(5))
        .create(service("s4", "c"))
        .unchanged_since(Kind::Service, 3);
    assert!(matches!(
        restored.apply(5, &late),
        Err(StoreError::Changed { newest: 4, .. })
    ));
}
