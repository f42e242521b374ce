//! `/networks` split by scope: swarm networks (driver `overlay` on a
//! manager) are shoal's, local ones stay the engine's. Lists and inspects
//! merge both, hiding the bridges that realise swarm networks; attaching a
//! container to a swarm network (container create, network connect) is
//! rewritten to its realising bridge.

use std::net::Ipv4Addr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::filters::{label_matches, Filters};
use super::query::{read_body, Query};
use super::{json, split_version, ApiError, RpcCode};
use crate::body::Body;
use crate::cluster::{Cluster, Manager};
use crate::network::allocate::{self, CreateRequest};
use crate::network::{bridge_name, NetworkError, LABEL_NETWORK_ID};
use crate::proxy::Proxy;
use crate::store::Transaction;
use crate::types::{Kind, Object, SwarmNetwork, Timestamp};

const FILTERS: [&str; 7] = ["dangling", "driver", "id", "label", "name", "scope", "type"];

/// Everything under `/networks`.
pub async fn handle(
    cluster: &Cluster,
    proxy: &Proxy,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Ok(manager) = cluster.manager().await else {
        // Not in a swarm: the engine answers everything, overlay included.
        return Ok(proxy.forward(req).await?);
    };
    let path = split_version(req.uri().path()).1.to_string();
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let query = Query::parse(req.uri().query());
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["networks"]) => list(&manager, proxy, req, &query).await,
        (Method::POST, ["networks", "create"]) => create(&manager, proxy, req).await,
        (Method::GET, ["networks", id]) => inspect(&manager, proxy, req, id, &query).await,
        (Method::DELETE, ["networks", id]) => remove(&manager, proxy, req, id).await,
        (Method::POST, ["networks", id, action @ ("connect" | "disconnect")]) => {
            match swarm_target(&manager, id) {
                Some(network) => {
                    if *action == "connect" && network.network.attachable != Some(true) {
                        let name = network.network.name.clone().unwrap_or_default();
                        return Err(NetworkError::NotAttachable(name).into());
                    }
                    let (mut parts, body) = req.into_parts();
                    let bridge = bridge_name(allocate::id_of(&network.network));
                    let prefix = parts.uri.path().strip_suffix(&path).unwrap_or("");
                    let rewritten = format!("{prefix}/networks/{bridge}/{action}");
                    parts.uri = with_path(&parts.uri, &rewritten)?;
                    let bytes = read_body(body).await?;
                    Ok(proxy.forward_bytes(parts, bytes).await?)
                }
                None => Ok(proxy.forward(req).await?),
            }
        }
        _ => Ok(proxy.forward(req).await?),
    }
}

fn with_path(uri: &http::Uri, path: &str) -> Result<http::Uri, ApiError> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    pq.parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid request path {pq}")))
}

/// A swarm network named by a client where the engine would look locally:
/// exact ID, then name, then ID prefix. Names of local networks win.
fn swarm_target(manager: &Manager, reference: &str) -> Option<SwarmNetwork> {
    if reference.starts_with("shoal_") {
        return None;
    }
    allocate::find(&manager.store(), reference)
}

/// The engine's JSON for a swarm network.
pub fn render(n: &SwarmNetwork) -> Value {
    let net = &n.network;
    let mut ipam = serde_json::to_value(&net.ipam).unwrap_or(Value::Null);
    if let Some(obj) = ipam.as_object_mut() {
        obj.entry("Options").or_insert(Value::Null);
    }
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": "swarm",
        "Driver": net.driver.clone().unwrap_or_else(|| "overlay".into()),
        "EnableIPv6": net.enable_ipv6.unwrap_or(false),
        "IPAM": ipam,
        "Internal": net.internal.unwrap_or(false),
        "Attachable": net.attachable.unwrap_or(false),
        "Ingress": net.ingress.unwrap_or(false),
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": null,
        "Options": net.options,
        "Labels": net.labels,
    })
}

fn matches(n: &SwarmNetwork, filters: &Filters, in_use: bool) -> bool {
    let net = &n.network;
    let name = net.name.as_deref().unwrap_or("");
    let id = net.id.as_deref().unwrap_or("");
    let driver = net.driver.as_deref().unwrap_or("overlay");
    filters.any("driver", |f| f == driver)
        && filters.any("scope", |f| f == "swarm")
        && filters.any("name", |f| name.contains(f))
        && filters.any("id", |f| id.contains(f))
        && filters.any("type", |f| f == "custom")
        && filters.any("dangling", |f| match f {
            "true" | "1" => !in_use,
            _ => in_use,
        })
        && filters
            .values("label")
            .iter()
            .all(|f| label_matches(net.labels.as_ref(), f))
}

async fn engine_json(
    proxy: &Proxy,
    parts: http::request::Parts,
) -> Result<Result<Value, Response<Body>>, ApiError> {
    let response = proxy.forward_bytes(parts, Bytes::new()).await?;
    if response.status() != StatusCode::OK {
        return Ok(Err(response));
    }
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::Internal(format!("reading the engine's answer: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map(Ok)
        .map_err(|e| ApiError::Internal(format!("the engine's answer is not JSON: {e}")))
}

fn is_realising(v: &Value) -> bool {
    v.get("Labels")
        .and_then(|l| l.get(LABEL_NETWORK_ID))
        .is_some()
}

async fn list(
    manager: &Manager,
    proxy: &Proxy,
    req: Request<Incoming>,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let (parts, _) = req.into_parts();
    let local = match engine_json(proxy, parts).await? {
        Ok(v) => v,
        Err(engine_error) => return Ok(engine_error),
    };
    let filters = Filters::parse(query.get("filters"), &FILTERS)?;
    let store = manager.store();
    let mut out: Vec<Value> = allocate::networks(&store)
        .iter()
        .filter(|n| {
            let in_use = allocate::check_unused(&store, allocate::id_of(&n.network)).is_err();
            matches(n, &filters, in_use)
        })
        .map(render)
        .collect();
    out.extend(
        local
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| !is_realising(v))
            .cloned(),
    );
    Ok(json(StatusCode::OK, &out))
}

async fn inspect(
    manager: &Manager,
    proxy: &Proxy,
    req: Request<Incoming>,
    reference: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let store = manager.store();
    let scope = query.get("scope").unwrap_or("");
    let swarm = allocate::networks(&store);
    if scope != "local" {
        if let Some(n) = swarm
            .iter()
            .find(|n| allocate::id_of(&n.network) == reference)
        {
            let out = with_local_view(manager, proxy, n).await;
            return Ok(json(StatusCode::OK, &verbose(manager, n, out, query)));
        }
    }
    if scope != "swarm" {
        let (parts, _) = req.into_parts();
        match engine_json(proxy, parts).await? {
            Ok(v) if !is_realising(&v) || scope == "local" => {
                return Ok(json(StatusCode::OK, &v));
            }
            Ok(_) => {}
            Err(engine_error) if scope == "local" => return Ok(engine_error),
            Err(_) => {}
        }
    }
    if scope == "local" {
        return Err(ApiError::NotFound(format!("network {reference} not found")));
    }
    let by_name: Vec<&SwarmNetwork> = swarm
        .iter()
        .filter(|n| n.network.name.as_deref() == Some(reference))
        .collect();
    let found = if by_name.is_empty() {
        swarm
            .iter()
            .filter(|n| allocate::id_of(&n.network).starts_with(reference))
            .collect()
    } else {
        by_name
    };
    match found.as_slice() {
        [one] => {
            let out = with_local_view(manager, proxy, one).await;
            Ok(json(StatusCode::OK, &verbose(manager, one, out, query)))
        }
        [] => Err(ApiError::NotFound(format!("network {reference} not found"))),
        many => Err(ApiError::BadRequest(format!(
            "network {reference} is ambiguous ({} matches found)",
            many.len()
        ))),
    }
}

/// A swarm network as inspected on a node where it has containers: the
/// engine then adds what its local instance knows — the attached
/// containers, `Labels` as an object, and the node among its peers.
/// Elsewhere (or when the engine does not answer) the store's view alone.
async fn with_local_view(manager: &Manager, proxy: &Proxy, n: &SwarmNetwork) -> Value {
    let mut out = render(n);
    let path = format!("/networks/{}", bridge_name(allocate::id_of(&n.network)));
    let Ok(parts) = Request::get(path).body(()).map(|r| r.into_parts().0) else {
        return out;
    };
    let Ok(Ok(local)) = engine_json(proxy, parts).await else {
        return out;
    };
    let containers = local.get("Containers").cloned().unwrap_or(Value::Null);
    if containers.as_object().is_none_or(|c| c.is_empty()) {
        return out;
    }
    if let Some(obj) = out.as_object_mut() {
        obj.insert("Containers".into(), containers);
        obj.entry("Labels").and_modify(|l| {
            if l.is_null() {
                *l = json!({});
            }
        });
        obj.insert(
            "Peers".into(),
            json!([{"Name": peer_name(manager.node_id()), "IP": manager.advertise_ip()}]),
        );
    }
    out
}

/// `?verbose=true` on a node where the network has containers: the
/// engine adds `Services`, each service with a VIP on it by name: its VIP,
/// ports, its load-balancer index on this node and the tasks whose
/// containers are attached here (recorded: ports-verbose/06).
fn verbose(manager: &Manager, n: &SwarmNetwork, mut out: Value, query: &Query) -> Value {
    let containers = match out.get("Containers").and_then(Value::as_object) {
        Some(c) if query.flag("verbose") && !c.is_empty() => c.clone(),
        _ => return out,
    };
    let store = manager.store();
    let id = allocate::id_of(&n.network);
    let mut services: Vec<_> = store
        .list(Kind::Service)
        .iter()
        .filter_map(crate::manager::orchestrator::as_service)
        .filter_map(|s| {
            let vip = s
                .endpoint
                .as_ref()?
                .virtual_ips
                .as_ref()?
                .iter()
                .find(|v| v.network_id.as_deref() == Some(id))?
                .addr
                .clone()?;
            Some((s, vip))
        })
        .collect();
    // The engine numbers a node's load balancers in the order services came.
    services.sort_by(|a, b| a.0.created_at.cmp(&b.0.created_at));
    let mut section = serde_json::Map::new();
    for (index, (service, vip)) in services.iter().enumerate() {
        let service_id = service.id.clone().unwrap_or_default();
        let tasks: Vec<Value> = store
            .tasks_by_service(&service_id)
            .iter()
            .filter_map(crate::manager::orchestrator::as_task)
            .filter_map(|t| {
                let attached = containers.get(&crate::manager::tasks::container_id(&t)?)?;
                let ip = attached.get("IPv4Address")?.as_str()?.split('/').next()?;
                Some(json!({
                    "Name": attached.get("Name"),
                    "EndpointID": attached.get("EndpointID"),
                    "EndpointIP": ip,
                    "Info": {"Host IP": manager.advertise_ip()},
                }))
            })
            .collect();
        let name = service
            .spec
            .as_ref()
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        section.insert(
            name,
            json!({
                "VIP": vip.split('/').next().unwrap_or(""),
                "Ports": [],
                "LocalLBIndex": 256 + index,
                "Tasks": tasks,
            }),
        );
    }
    if let Some(obj) = out.as_object_mut() {
        obj.insert("Services".into(), Value::Object(section));
    }
    out
}

/// The engine names a peer by a 12-hex ID of its network agent; shoal's
/// agent is the node, so its name derives from the node ID.
fn peer_name(node_id: &str) -> String {
    node_id
        .bytes()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn create(
    manager: &Manager,
    proxy: &Proxy,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(body).await?;
    let request: Option<CreateRequest> = super::decode::body(&bytes).ok();
    let Some(request) = request.filter(|r| r.driver.as_deref() == Some("overlay")) else {
        return Ok(proxy.forward_bytes(parts, bytes).await?);
    };
    validate_name(request.name.as_deref().unwrap_or(""))?;
    let store = manager.store();
    if request.ingress == Some(true) {
        if let Some(n) = allocate::networks(&store)
            .iter()
            .find(|n| allocate::is_ingress(&n.network))
        {
            return Err(
                NetworkError::IngressExists(allocate::id_of(&n.network).to_string()).into(),
            );
        }
    }
    let id = super::allocating::propose(manager, &[Kind::Network], |store| {
        let mut network = allocate::new_network(store, &request, &mut rand::thread_rng())?;
        // The creating manager realises it at once with the IPAM gateway;
        // the leader gives other nodes theirs (see `network::address`).
        if let Some((_, gateway)) = allocate::primary(&network.network) {
            network
                .node_gateways
                .insert(manager.node_id().to_string(), gateway);
        }
        let id = network.network.id.clone().unwrap_or_default();
        let tx = Transaction::new(Timestamp::from_system(std::time::SystemTime::now()))
            .create(Object::Network(Box::new(network)));
        Ok(super::allocating::Allocated {
            tx,
            allocates: true,
            value: id,
        })
    })
    .await?;
    Ok(json(StatusCode::CREATED, &json!({"Id": id, "Warning": ""})))
}

/// swarmkit's `validateAnnotations` for a swarm network's name, with its
/// texts; an empty name is left to the checks that follow, as before.
pub(super) fn validate_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Ok(());
    }
    if !super::services::valid_name(name) {
        return Err(ApiError::rpc(
            RpcCode::InvalidArgument,
            "name must be valid as a DNS name component",
        ));
    }
    if name.len() > 63 {
        return Err(ApiError::rpc(
            RpcCode::InvalidArgument,
            "name must be 63 characters or fewer",
        ));
    }
    Ok(())
}

async fn remove(
    manager: &Manager,
    proxy: &Proxy,
    req: Request<Incoming>,
    reference: &str,
) -> Result<Response<Body>, ApiError> {
    let Some(network) = swarm_target(manager, reference) else {
        return Ok(proxy.forward(req).await?);
    };
    let store = manager.store();
    let id = allocate::id_of(&network.network).to_string();
    allocate::check_unused(&store, &id)?;
    let tx = Transaction::new(Timestamp::from_system(std::time::SystemTime::now())).delete(
        Kind::Network,
        id,
        None,
    );
    manager.proposer().propose(tx).await??;
    let mut response = Response::new(crate::body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// `POST /containers/create` naming a swarm network (`docker run --network
/// <attachable overlay>`): the container joins the network's bridge.
pub async fn container_create(
    cluster: &Cluster,
    proxy: &Proxy,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Ok(manager) = cluster.manager().await else {
        return Ok(proxy.forward(req).await?);
    };
    let (parts, body) = req.into_parts();
    let bytes = read_body(body).await?;
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(proxy.forward_bytes(parts, bytes).await?);
    };
    match rewrite_networks(&manager, &mut value)? {
        true => {
            let rewritten = serde_json::to_vec(&value)
                .map_err(|e| ApiError::Internal(format!("cannot encode the request: {e}")))?;
            Ok(proxy.forward_bytes(parts, Bytes::from(rewritten)).await?)
        }
        false => Ok(proxy.forward_bytes(parts, bytes).await?),
    }
}

/// Replaces swarm network names in `HostConfig.NetworkMode` and
/// `NetworkingConfig.EndpointsConfig` by their bridges, and puts shoal's
/// DNS servers on those networks first in `HostConfig.Dns` (the engine's
/// resolver forwards service names to them). True when changed.
fn rewrite_networks(manager: &Manager, value: &mut Value) -> Result<bool, ApiError> {
    const PREDEFINED: [&str; 4] = ["bridge", "host", "none", "default"];
    let mut gateways: Vec<Ipv4Addr> = Vec::new();
    let mut resolve = |name: &str| -> Result<Option<String>, ApiError> {
        if name.is_empty() || PREDEFINED.contains(&name) || name.starts_with("container:") {
            return Ok(None);
        }
        match swarm_target(manager, name) {
            Some(n) if n.network.attachable == Some(true) => {
                if let Some(gateway) = allocate::gateway_on(&n, manager.node_id()) {
                    gateways.push(gateway);
                }
                Ok(Some(bridge_name(allocate::id_of(&n.network))))
            }
            Some(_) => Err(NetworkError::NotAttachable(name.to_string()).into()),
            None => Ok(None),
        }
    };
    let mut changed = false;
    if let Some(mode) = value
        .pointer_mut("/HostConfig/NetworkMode")
        .filter(|m| m.is_string())
    {
        if let Some(bridge) = resolve(mode.as_str().unwrap_or(""))? {
            *mode = Value::String(bridge);
            changed = true;
        }
    }
    if let Some(endpoints) = value
        .pointer_mut("/NetworkingConfig/EndpointsConfig")
        .and_then(Value::as_object_mut)
    {
        let names: Vec<String> = endpoints.keys().cloned().collect();
        for name in names {
            if let Some(bridge) = resolve(&name)? {
                if let Some(settings) = endpoints.remove(&name) {
                    endpoints.insert(bridge, settings);
                    changed = true;
                }
            }
        }
    }
    if !gateways.is_empty() {
        add_dns(value, &gateways);
    }
    Ok(changed)
}

/// `HostConfig.Dns` = `gateways`, then what the client asked for (else
/// the host's resolvers).
fn add_dns(value: &mut Value, gateways: &[Ipv4Addr]) {
    let requested: Option<Vec<String>> = value
        .pointer("/HostConfig/Dns")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        });
    let servers = crate::network::dns::servers_for(gateways, requested);
    let Some(body) = value.as_object_mut() else {
        return;
    };
    let host = body.entry("HostConfig").or_insert_with(|| json!({}));
    if !host.is_object() {
        *host = json!({});
    }
    if let Some(host) = host.as_object_mut() {
        host.insert("Dns".to_string(), json!(servers));
    }
}
