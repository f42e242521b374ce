//! Swarm events: committed store changes as the engine reports them on
//! `/events` (`Type` service/node/secret/config/network, `Action`
//! create/update/remove, `scope: swarm`), kept in a small ring so `since`
//! can replay them, and broadcast to open `/events` streams.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::store::{Action, Event, Store, WatchItem};
use crate::types::{Kind, Object};

/// The engine replays swarm events from a 256-event ring.
const RING: usize = 256;

/// One event, ready to be written as a line of `/events`.
#[derive(Debug, Clone)]
pub struct SwarmEvent {
    pub time_nano: i128,
    pub json: Value,
}

pub struct EventLog {
    ring: Mutex<VecDeque<SwarmEvent>>,
    live: broadcast::Sender<SwarmEvent>,
}

impl EventLog {
    pub fn new() -> Arc<Self> {
        let (live, _) = broadcast::channel(RING);
        Arc::new(EventLog {
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            live,
        })
    }

    /// Past events (oldest first) and a receiver for the ones after them,
    /// taken together so none falls between.
    pub fn subscribe(&self) -> (Vec<SwarmEvent>, broadcast::Receiver<SwarmEvent>) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        (ring.iter().cloned().collect(), self.live.subscribe())
    }

    fn push(&self, event: SwarmEvent) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(event.clone());
        let _ = self.live.send(event);
    }
}

/// Turns the store's change feed into events until `shutdown`.
pub async fn record(store: Arc<Store>, log: Arc<EventLog>, shutdown: CancellationToken) {
    let mut watcher = store.watch_from(store.index());
    loop {
        let item = tokio::select! {
            _ = shutdown.cancelled() => return,
            item = watcher.next() => item,
        };
        match item {
            Some(WatchItem::Event(event)) => {
                if let Some(swarm_event) = to_docker_event(&event) {
                    log.push(swarm_event);
                }
            }
            Some(WatchItem::Resync) | None => watcher = store.watch_from(store.index()),
        }
    }
}

fn to_docker_event(event: &Event) -> Option<SwarmEvent> {
    let kind = match event.kind {
        Kind::Service => "service",
        Kind::Node => "node",
        Kind::Secret => "secret",
        Kind::Config => "config",
        Kind::Network => "network",
        Kind::Task | Kind::Cluster => return None,
    };
    let action = match event.action {
        Action::Create => "create",
        Action::Update => "update",
        Action::Remove => "remove",
    };
    let mut attributes = HashMap::new();
    attributes.insert("name".to_string(), name_of(&event.object));
    if event.action == Action::Update {
        if let Some(before) = &event.before {
            changed_attributes(before, &event.object, &mut attributes);
        }
    }
    // create = CreatedAt; update and remove happen as they are committed.
    let time_nano = match event.action {
        Action::Create => event.object.created_at().and_then(parse_nanos),
        Action::Update | Action::Remove => None,
    }
    .unwrap_or_else(now_nanos);
    let mut attributes: Vec<(String, String)> = attributes.into_iter().collect();
    attributes.sort();
    let attributes: serde_json::Map<String, Value> = attributes
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Some(SwarmEvent {
        time_nano,
        json: json!({
            "Type": kind,
            "Action": action,
            "Actor": { "ID": event.id, "Attributes": attributes },
            "scope": "swarm",
            "time": (time_nano / 1_000_000_000) as i64,
            "timeNano": time_nano as i64,
        }),
    })
}

/// `name`: the spec name, or a node's hostname when it has none.
fn name_of(object: &Object) -> String {
    if let Object::Node(node) = object {
        if let Some(name) = node
            .spec
            .as_ref()
            .and_then(|s| s.name.clone())
            .filter(|n| !n.is_empty())
        {
            return name;
        }
    }
    object.name().unwrap_or("").to_string()
}

/// The engine's extra update attributes: what changed, old and new.
fn changed_attributes(before: &Object, after: &Object, out: &mut HashMap<String, String>) {
    let pairs: Vec<(&str, Option<String>, Option<String>)> = match (before, after) {
        (Object::Service(a), Object::Service(b)) => {
            let image = |s: &crate::types::SwarmService| {
                s.spec
                    .as_ref()?
                    .task_template
                    .as_ref()?
                    .container_spec
                    .as_ref()?
                    .image
                    .clone()
            };
            let replicas = |s: &crate::types::SwarmService| {
                s.spec
                    .as_ref()?
                    .mode
                    .as_ref()?
                    .replicated
                    .as_ref()?
                    .replicas
                    .map(|r| r.to_string())
            };
            let update_state = |s: &crate::types::SwarmService| {
                s.update_status.as_ref()?.state.map(|s| s.to_string())
            };
            vec![
                ("image", image(a), image(b)),
                ("replicas", replicas(a), replicas(b)),
                ("updatestate", update_state(a), update_state(b)),
            ]
        }
        (Object::Node(a), Object::Node(b)) => {
            let availability =
                |n: &bollard::models::Node| n.spec.as_ref()?.availability.map(|v| v.to_string());
            let role = |n: &bollard::models::Node| n.spec.as_ref()?.role.map(|v| v.to_string());
            let state = |n: &bollard::models::Node| n.status.as_ref()?.state.map(|v| v.to_string());
            vec![
                ("availability", availability(a), availability(b)),
                ("role", role(a), role(b)),
                ("state", state(a), state(b)),
            ]
        }
        _ => Vec::new(),
    };
    for (key, old, new) in pairs {
        if old != new {
            if let Some(new) = new {
                out.insert(format!("{key}.new"), new);
            }
            if let Some(old) = old {
                out.insert(format!("{key}.old"), old);
            }
        }
    }
}

fn parse_nanos(text: &str) -> Option<i128> {
    let parsed =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(parsed.unix_timestamp_nanos())
}

fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}
