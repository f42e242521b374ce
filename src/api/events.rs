//! `/events` on a manager: the engine's own event stream with the swarm's
//! events merged in, honouring `since`, `until` and `filters` for both.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::sync::{broadcast, mpsc};

use super::query::Query;
use super::ApiError;
use crate::body::{Body, BoxError};
use crate::cluster::Cluster;
use crate::events::SwarmEvent;
use crate::proxy::Proxy;

pub async fn events(
    cluster: &Cluster,
    proxy: &Proxy,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(manager) = cluster.try_manager().await else {
        return Ok(proxy.forward(req).await?);
    };
    let query = Query::parse(req.uri().query());
    let since = query.get("since").and_then(parse_unix_nanos);
    let until = query.get("until").and_then(parse_unix_nanos);
    let filters = parse_filters(query.get("filters"));
    // Subscribe before the engine answers, so no swarm event falls between.
    let (past, live) = manager.events().subscribe();
    let response = proxy.forward(req).await?;
    if !response.status().is_success() {
        return Ok(response);
    }
    let selector = Selector {
        since,
        until,
        filters,
    };
    let replay: Vec<SwarmEvent> = match since {
        Some(_) => past.into_iter().filter(|e| selector.accepts(e)).collect(),
        None => Vec::new(),
    };
    let (parts, engine) = response.into_parts();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(merge(engine, live, replay, selector, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, BoxError>(Frame::data(chunk)), rx))
    });
    Ok(Response::from_parts(
        parts,
        StreamBody::new(stream).boxed_unsync(),
    ))
}

/// Copies the engine's stream and adds swarm events until the engine ends
/// it (`until` reached, engine gone) or the client leaves.
async fn merge(
    mut engine: Body,
    mut live: broadcast::Receiver<SwarmEvent>,
    replay: Vec<SwarmEvent>,
    selector: Selector,
    tx: mpsc::Sender<Bytes>,
) {
    for event in replay {
        if tx.send(line(&event)).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            frame = engine.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if tx.send(data).await.is_err() {
                            return;
                        }
                    }
                }
                _ => return,
            },
            event = live.recv() => match event {
                Ok(event) if selector.accepts(&event) => {
                    if tx.send(line(&event)).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {}
            },
        }
    }
}

fn line(event: &SwarmEvent) -> Bytes {
    let mut bytes = serde_json::to_vec(&event.json).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

struct Selector {
    since: Option<i128>,
    until: Option<i128>,
    filters: BTreeMap<String, Vec<String>>,
}

impl Selector {
    fn accepts(&self, event: &SwarmEvent) -> bool {
        let in_range = self.since.is_none_or(|s| event.time_nano >= s)
            && self.until.is_none_or(|u| event.time_nano <= u);
        in_range
            && self
                .filters
                .iter()
                .all(|(key, values)| filter_matches(&event.json, key, values))
    }
}

/// The engine's event filters, as they apply to a swarm event.
fn filter_matches(event: &serde_json::Value, key: &str, values: &[String]) -> bool {
    let kind = event["Type"].as_str().unwrap_or("");
    let id = event["Actor"]["ID"].as_str().unwrap_or("");
    let attributes = &event["Actor"]["Attributes"];
    let name = attributes["name"].as_str().unwrap_or("");
    let any = |test: &dyn Fn(&str) -> bool| values.iter().any(|v| test(v));
    match key {
        "type" => any(&|v| v == kind),
        "event" => any(&|v| Some(v) == event["Action"].as_str()),
        "scope" => any(&|v| v == "swarm"),
        "service" | "node" | "secret" | "config" | "network" => {
            kind == key && any(&|v| v == id || v == name)
        }
        "label" => any(&|v| match v.split_once('=') {
            Some((k, val)) => attributes[k].as_str() == Some(val),
            None => attributes.get(v).is_some(),
        }),
        // container, image, volume, daemon, plugin: never a swarm event.
        _ => false,
    }
}

fn parse_filters(raw: Option<&str>) -> BTreeMap<String, Vec<String>> {
    let Some(value) = raw.and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok()) else {
        return BTreeMap::new();
    };
    let Some(object) = value.as_object() else {
        return BTreeMap::new();
    };
    object
        .iter()
        .map(|(key, values)| {
            let values = match values {
                serde_json::Value::Object(map) => map
                    .iter()
                    .filter(|(_, on)| on.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            (key.clone(), values)
        })
        .collect()
}

/// `since`/`until` as the CLI sends them: unix seconds, optionally with a
/// fractional part of nanoseconds (`1700000000.000000001`).
fn parse_unix_nanos(text: &str) -> Option<i128> {
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    let seconds: i128 = seconds.parse().ok()?;
    let mut nanos = 0i128;
    if !fraction.is_empty() {
        let digits: String = fraction.chars().take(9).collect();
        nanos = format!("{digits:0<9}").parse().ok()?;
    }
    Some(seconds * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_since_and_until() {
        assert_eq!(parse_unix_nanos("10"), Some(10_000_000_000));
        assert_eq!(parse_unix_nanos("10.5"), Some(10_500_000_000));
        assert_eq!(parse_unix_nanos("x"), None);
    }

    #[test]
    fn filters_apply_to_swarm_events() {
        let event = serde_json::json!({"Type":"node","Action":"update","Actor":{"ID":"abc","Attributes":{"name":"vm"}},"scope":"swarm"});
        assert!(filter_matches(&event, "type", &["node".into()]));
        assert!(!filter_matches(&event, "type", &["container".into()]));
        assert!(filter_matches(&event, "node", &["vm".into()]));
        assert!(!filter_matches(&event, "service", &["vm".into()]));
        assert!(!filter_matches(&event, "container", &["x".into()]));
        assert!(filter_matches(&event, "scope", &["swarm".into()]));
    }
}
