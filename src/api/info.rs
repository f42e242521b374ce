//! The swarm parts of engine endpoints: `/info` gets this node's `Swarm`
//! object, `/_ping` the `Swarm` header where the engine's API has it.

use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::ApiError;
use crate::body::{self, Body};
use crate::cluster::{self, Cluster, Manager};
use crate::proxy::{Proxy, ProxyError};

pub async fn info(
    cluster: &Cluster,
    proxy: &Proxy,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let state = cluster.state().await;
    let response = proxy.forward(req).await?;
    if !response.status().is_success() {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    // The engine's own /info is trusted to be small (a few KiB).
    let bytes = body
        .collect()
        .await
        .map_err(|e| ProxyError::EngineUnreachable {
            engine: "the engine".to_string(),
            reason: e.to_string(),
        })?
        .to_bytes();
    let Ok(mut info) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(Response::from_parts(parts, body::full(bytes)));
    };
    // Inactive: the engine's own (inactive) Swarm section goes out byte for
    // byte. Should the engine itself be in swarm mode, that is not shoal's
    // swarm: shoal says inactive, as it does on every swarm endpoint.
    let engine_inactive = info["Swarm"]["LocalNodeState"].as_str() == Some("inactive");
    if matches!(state, cluster::LocalState::Inactive) && engine_inactive {
        return Ok(Response::from_parts(parts, body::full(bytes)));
    }
    info["Swarm"] = match &state {
        cluster::LocalState::Active(manager) => swarm_info(manager),
        cluster::LocalState::Locked(local) => locked_info(local),
        cluster::LocalState::Worker(worker) => worker_info(worker),
        cluster::LocalState::Inactive => json!({
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": false,
            "Error": "",
            "RemoteManagers": null,
        }),
    };
    let mut patched = serde_json::to_vec(&info).unwrap_or_else(|_| bytes.to_vec());
    patched.push(b'\n');
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(patched.len()));
    Ok(Response::from_parts(parts, body::full(patched)))
}

/// The `Swarm` object of an active manager, in the engine's field order.
fn swarm_info(manager: &Manager) -> Value {
    let store = manager.store();
    let nodes = super::nodes::all_nodes(&store);
    let managers = super::nodes::manager_count(&store);
    let cluster = cluster::the_cluster(&store).map(|mut swarm| {
        cluster::rotation::redact(&mut swarm);
        let mut value = serde_json::to_value(&swarm).unwrap_or(Value::Null);
        if let Some(object) = value.as_object_mut() {
            // /info never shows the join tokens.
            object.remove("JoinTokens");
            object.entry("DefaultAddrPool").or_insert(Value::Null);
        }
        value
    });
    json!({
        "NodeID": manager.node_id(),
        "NodeAddr": manager.local.advertise_ip(),
        "LocalNodeState": "active",
        "ControlAvailable": true,
        "Error": "",
        "RemoteManagers": remote_managers(&store),
        "Nodes": nodes.len(),
        "Managers": managers,
        "Cluster": cluster,
    })
}

/// Every manager's node ID and cluster address, sorted by ID as the engine.
fn remote_managers(store: &crate::store::Store) -> Value {
    let mut managers: Vec<(String, String)> = super::nodes::all_nodes(store)
        .into_iter()
        .filter_map(|node| {
            let addr = node.manager_status.as_ref()?.addr.clone()?;
            Some((node.id.clone().unwrap_or_default(), addr))
        })
        .collect();
    managers.sort();
    managers
        .into_iter()
        .map(|(id, addr)| json!({ "NodeID": id, "Addr": addr }))
        .collect()
}

/// A worker knows itself and the managers' addresses; no cluster state.
fn worker_info(worker: &cluster::Worker) -> Value {
    let managers: Vec<Value> = worker
        .managers()
        .into_iter()
        .map(|addr| json!({ "NodeID": "", "Addr": addr }))
        .collect();
    json!({
        "NodeID": worker.node_id(),
        "NodeAddr": worker.local.advertise_ip(),
        "LocalNodeState": "active",
        "ControlAvailable": false,
        "Error": "",
        "RemoteManagers": managers,
    })
}

/// A locked manager knows only itself until `swarm unlock`.
fn locked_info(local: &cluster::LocalNode) -> Value {
    json!({
        "NodeID": local.node_id,
        "NodeAddr": local.advertise_ip(),
        "LocalNodeState": "locked",
        "ControlAvailable": false,
        "Error": "",
        "RemoteManagers": null,
    })
}

/// The ping `Swarm` header exists from API 1.42 on; older engines' clients
/// never see it, exactly as against such an engine.
/// `/_ping` while the engine is away, from what shoal learnt of it: clients
/// negotiate their API version from `/_ping`, and shoal's own endpoints
/// (services, nodes, secrets) serve on without the engine. Calls passed to
/// the engine still get the engine-unreachable error. `None` when the
/// engine was never reached.
fn ping_without_engine(proxy: &Proxy, head: bool) -> Option<Response<Body>> {
    let identity = proxy.known_identity()?;
    let body = if head {
        body::empty()
    } else {
        body::full("OK")
    };
    let mut response = Response::new(body);
    for (name, value) in &identity.headers {
        response.headers_mut().insert(name, value.clone());
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Some(response)
}

pub async fn ping(
    cluster: &Cluster,
    proxy: &Proxy,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let head = req.method() == http::Method::HEAD;
    let mut response = match proxy.forward(req).await {
        Ok(response) => response,
        Err(unreachable @ ProxyError::EngineUnreachable { .. }) => {
            ping_without_engine(proxy, head).ok_or(unreachable)?
        }
        Err(e) => return Err(e.into()),
    };
    let speaks_swarm_header = proxy
        .identity()
        .await
        .map(|id| super::version_at_least(&id.api_version, (1, 42)))
        .unwrap_or(false);
    if speaks_swarm_header {
        let state = match cluster.state().await {
            cluster::LocalState::Active(_) => "active/manager",
            cluster::LocalState::Worker(_) => "active/worker",
            cluster::LocalState::Locked(_) => "locked",
            cluster::LocalState::Inactive => "inactive",
        };
        response
            .headers_mut()
            .insert("swarm", HeaderValue::from_static(state));
    }
    Ok(response)
}
