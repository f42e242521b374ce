//! `/swarm`: init, join, leave, inspect, update, and the unlock endpoints.

use std::sync::Arc;
use std::time::SystemTime;

use bollard::models::{
    JoinTokens, NodeSpecAvailabilityEnum, Swarm, SwarmInitRequest, SwarmSpec, SwarmSpecCaConfig,
    SwarmSpecDispatcher, SwarmSpecEncryptionConfig, SwarmSpecOrchestration, SwarmSpecRaft,
    SwarmSpecTaskDefaults,
};
use bytes::Bytes;
use http::Response;
use serde::Deserialize;

use super::decode;
use super::query::Query;
use super::{json, ApiError, RpcCode};
use crate::body::Body;
use crate::ca;
use crate::cluster::{self, Cluster, InitParams};
use crate::network::ipam::AddressPools;
use crate::proxy::Proxy;
use crate::store::Transaction;
use crate::types::{Object, Timestamp};

const DEFAULT_LISTEN_PORT: u16 = 2377;
const DEFAULT_DATA_PATH_PORT: u32 = 4789;
const DEFAULT_SUBNET_SIZE: u32 = 24;
const SECOND: i64 = 1_000_000_000;
/// swarmkit refuses node certificates shorter-lived than an hour.
const MIN_CERT_EXPIRY: i64 = 3600 * SECOND;

/// The fields of `POST /swarm/init` that bollard's `SwarmInitRequest`
/// lacks; both are read from the same body (a `flatten` would hide the
/// request's field names from the decoder, and with them Go's key folding).
#[derive(Debug, Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct InitExtras {
    auto_lock_managers: bool,
    availability: String,
}

pub async fn init(
    cluster: &Arc<Cluster>,
    proxy: &Proxy,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let value = decode::value(&body)?;
    let request: SwarmInitRequest = decode::from_value(&value)?;
    let extras: InitExtras = decode::from_value(&value)?;
    // `--force-new-cluster` on a manager: its own data becomes a new
    // one-manager cluster (after quorum is lost), as the engine does.
    if request.force_new_cluster == Some(true) && cluster.is_active().await {
        let node_id = cluster.force_new_cluster().await?;
        return Ok(json(http::StatusCode::OK, &node_id));
    }
    if cluster.is_active().await {
        return Err(cluster::ClusterError::AlreadyInSwarm.into());
    }
    let listen_addr = listen_addr(request.listen_addr.as_deref().unwrap_or(""))?;
    let advertise_addr = advertise_addr(
        request.advertise_addr.as_deref().unwrap_or(""),
        &listen_addr,
    )
    .await?;
    let mut spec = request.spec.unwrap_or_default();
    check_spec_name(&spec)?;
    // The CLI sends --autolock both at the top level and in the spec.
    let autolock = extras.auto_lock_managers || auto_lock(&spec);
    spec.encryption_config = Some(SwarmSpecEncryptionConfig {
        auto_lock_managers: Some(autolock),
    });
    let snapshot_interval = spec
        .raft
        .as_ref()
        .and_then(|r| r.snapshot_interval)
        .filter(|&n| n > 0);
    let mut description = cluster::describe_node(&proxy.get_json("/info").await?);
    if description.hostname.is_none() {
        description.hostname = Some("localhost".to_string());
    }
    let availability = match extras.availability.as_str() {
        "" | "active" => NodeSpecAvailabilityEnum::ACTIVE,
        "pause" => NodeSpecAvailabilityEnum::PAUSE,
        "drain" => NodeSpecAvailabilityEnum::DRAIN,
        other => {
            return Err(ApiError::BadRequest(format!(
                "invalid Availability: {other:?}"
            )))
        }
    };
    let default_addr_pool = request.default_addr_pool.filter(|pool| !pool.is_empty());
    let subnet_size = request
        .subnet_size
        .filter(|&s| s != 0)
        .unwrap_or(DEFAULT_SUBNET_SIZE);
    // Checked here so a bad pool fails the init, not every network later.
    AddressPools::new(
        default_addr_pool.as_deref().unwrap_or_default(),
        subnet_size,
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let params = InitParams {
        listen_addr,
        advertise_addr,
        spec: with_defaults(spec),
        default_addr_pool,
        subnet_size,
        data_path_port: request
            .data_path_port
            .filter(|&p| p != 0)
            .unwrap_or(DEFAULT_DATA_PATH_PORT),
        availability,
        description,
        autolock,
        snapshot_interval,
    };
    let node_id = cluster.init(params).await?;
    Ok(json(http::StatusCode::OK, &node_id))
}

/// `POST /swarm/join` body (the API's JoinRequest).
#[derive(Debug, Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct JoinBody {
    listen_addr: String,
    advertise_addr: String,
    remote_addrs: Vec<String>,
    join_token: String,
    availability: String,
}

/// Joins the swarm of the manager at the first remote address, as a
/// worker or a manager as the token says.
pub async fn join(
    cluster: &Arc<Cluster>,
    proxy: &Proxy,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let body: JoinBody = decode::body(&body)?;
    if cluster.is_active().await {
        return Err(cluster::ClusterError::AlreadyInSwarm.into());
    }
    let remote = match body.remote_addrs.first() {
        Some(remote) => remote_addr(remote)?,
        None => {
            return Err(ApiError::BadRequest(
                "at least 1 RemoteAddr is required to join".to_string(),
            ))
        }
    };
    let listen = listen_addr(if body.listen_addr.is_empty() {
        "0.0.0.0:2377"
    } else {
        &body.listen_addr
    })?;
    let advertise = match body.advertise_addr.as_str() {
        "" => String::new(),
        given => advertise_addr(given, &listen).await?,
    };
    match body.availability.as_str() {
        "" | "active" | "pause" | "drain" => {}
        other => {
            return Err(ApiError::BadRequest(format!(
                "invalid Availability: {other:?}"
            )))
        }
    }
    let mut description = cluster::describe_node(&proxy.get_json("/info").await?);
    if description.hostname.is_none() {
        description.hostname = Some("localhost".to_string());
    }
    cluster
        .join(cluster::JoinParams {
            remote,
            token: body.join_token,
            listen_addr: listen,
            advertise_addr: advertise,
            availability: body.availability,
            description,
        })
        .await?;
    Ok(super::empty_ok())
}

/// A remote manager's address, `host:port` (port 2377 when not given).
fn remote_addr(given: &str) -> Result<String, ApiError> {
    let (host, port) = split_host_port(given.trim(), DEFAULT_LISTEN_PORT)
        .map_err(|e| ApiError::BadRequest(format!("invalid remoteAddr {given:?}: {e}")))?;
    if host.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "invalid remoteAddr {given:?}: missing address"
        )));
    }
    Ok(join_host_port(&host, port))
}

pub async fn leave(cluster: &Cluster, query: &Query) -> Result<Response<Body>, ApiError> {
    cluster.leave(query.flag("force")).await?;
    Ok(super::empty_ok())
}

pub async fn inspect(cluster: &Cluster) -> Result<Response<Body>, ApiError> {
    let manager = cluster.manager().await?;
    let mut swarm =
        cluster::the_cluster(&manager.store()).ok_or(cluster::ClusterError::NotManager)?;
    cluster::rotation::redact(&mut swarm);
    // The engine shows `DefaultAddrPool: null` for the default pool; bollard's
    // model would drop the field.
    let mut value = serde_json::to_value(&swarm).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(object) = value.as_object_mut() {
        object
            .entry("DefaultAddrPool")
            .or_insert(serde_json::Value::Null);
    }
    Ok(json(http::StatusCode::OK, &value))
}

pub async fn update(
    cluster: &Cluster,
    query: &Query,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let version = query.version("swarm")?;
    let rotate_worker = query.strict_bool("rotateWorkerToken")?;
    let rotate_manager = query.strict_bool("rotateManagerToken")?;
    let rotate_unlock = query.strict_bool("rotateManagerUnlockKey")?;
    let spec: SwarmSpec = decode::body(&body)?;
    check_spec_name(&spec)?;
    validate_update(&spec)?;
    let manager = cluster.manager().await?;
    let current =
        cluster::the_cluster(&manager.store()).ok_or(cluster::ClusterError::NotManager)?;
    // `swarm ca --rotate` (or a CA of the user's own): a new root, new
    // tokens with its digest, and the rotation under way.
    let new_root = cluster::rotation::requested(&current, &spec)?;
    let root = match &new_root {
        Some(root) => root.clone(),
        None => manager.root_ca().map_or_else(|| cluster.root_ca(), Ok)?,
    };
    let tokens = current.join_tokens.clone().unwrap_or_default();
    let rotating = new_root.is_some();
    let join_tokens = JoinTokens {
        worker: rotated(tokens.worker, rotate_worker || rotating, &root)?,
        manager: rotated(tokens.manager, rotate_manager || rotating, &root)?,
    };
    let mut spec = with_defaults(spec);
    cluster::rotation::keep_root(&mut spec, &root);
    let mut updated = Swarm {
        spec: Some(spec),
        join_tokens: Some(join_tokens),
        ..current
    };
    if rotating {
        updated.tls_info = Some(cluster::rotation::tls_info(&root)?);
        updated.root_rotation_in_progress = Some(true);
        tracing::info!("root CA rotation started");
    }
    let tx = Transaction::new(Timestamp::from_system(SystemTime::now()))
        .update(Object::Cluster(Box::new(updated)), version);
    manager.proposer().propose(tx).await??;
    // The committed spec decides; the key file follows it (a crash in
    // between is repaired when the manager starts again).
    manager.sync_autolock()?;
    if rotate_unlock {
        manager
            .keys()
            .rotate()
            .map_err(cluster::ClusterError::from)?;
    }
    Ok(super::empty_ok())
}

/// The unlock key while autolock is on, `""` when it is off.
pub async fn unlock_key(cluster: &Cluster) -> Result<Response<Body>, ApiError> {
    let manager = cluster.manager().await?;
    let key = manager.keys().unlock_key().unwrap_or_default();
    Ok(json(
        http::StatusCode::OK,
        &serde_json::json!({ "UnlockKey": key }),
    ))
}

#[derive(Debug, Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct UnlockBody {
    unlock_key: String,
}

/// `swarm unlock`: 409 unless locked, 400 for a malformed key, 401 for the
/// wrong one; the key never reaches a log.
pub async fn unlock(cluster: &Arc<Cluster>, body: Bytes) -> Result<Response<Body>, ApiError> {
    let body: UnlockBody = decode::body(&body)?;
    match cluster.unlock(&body.unlock_key).await {
        Ok(()) => Ok(super::empty_ok()),
        Err(cluster::ClusterError::NotLocked) => {
            Err(ApiError::Conflict("swarm is not locked".to_string()))
        }
        Err(error) => Err(error.into()),
    }
}

fn rotated(
    token: Option<String>,
    rotate: bool,
    root: &ca::RootCa,
) -> Result<Option<String>, ApiError> {
    if rotate || token.is_none() {
        return Ok(Some(
            ca::new_join_token(root).map_err(cluster::ClusterError::from)?,
        ));
    }
    Ok(token)
}

fn auto_lock(spec: &SwarmSpec) -> bool {
    spec.encryption_config
        .as_ref()
        .and_then(|e| e.auto_lock_managers)
        .unwrap_or(false)
}

fn check_spec_name(spec: &SwarmSpec) -> Result<(), ApiError> {
    match spec.name.as_deref() {
        None | Some("") | Some("default") => Ok(()),
        Some(_) => Err(ApiError::BadRequest(
            "swarm spec must be named \"default\"".to_string(),
        )),
    }
}

pub(super) fn validate_update(spec: &SwarmSpec) -> Result<(), ApiError> {
    let expiry = spec
        .ca_config
        .as_ref()
        .and_then(|c| c.node_cert_expiry)
        .unwrap_or(0);
    if expiry != 0 && expiry < MIN_CERT_EXPIRY {
        return Err(ApiError::rpc(
            RpcCode::InvalidArgument,
            "minimum certificate expiry time is: 1h0m0s",
        ));
    }
    let heartbeat = spec
        .dispatcher
        .as_ref()
        .and_then(|d| d.heartbeat_period)
        .unwrap_or(0);
    if heartbeat < 0 {
        return Err(ApiError::rpc(
            RpcCode::InvalidArgument,
            "heartbeat time period cannot be a negative duration",
        ));
    }
    Ok(())
}

/// The spec with swarmkit's defaults in every zero or absent field. `swarm
/// init` merges the request onto the defaults (the CLI sends zeros for every
/// flag it was not given) and `swarm update` replaces the spec with zeros
/// falling back to the defaults: both come to this one function, and
/// `GET /swarm` always shows a complete spec as the engine does.
fn with_defaults(spec: SwarmSpec) -> SwarmSpec {
    let auto_lock_managers = auto_lock(&spec);
    let nonzero = |v: Option<i64>, default: i64| Some(v.filter(|&v| v > 0).unwrap_or(default));
    let nonzero_u = |v: Option<u64>, default: u64| Some(v.filter(|&v| v > 0).unwrap_or(default));
    let raft = spec.raft.unwrap_or_default();
    let orchestration = spec.orchestration.unwrap_or_default();
    let ca_config = spec.ca_config.unwrap_or_default();
    SwarmSpec {
        name: Some("default".to_string()),
        labels: Some(spec.labels.unwrap_or_default()),
        orchestration: Some(SwarmSpecOrchestration {
            task_history_retention_limit: Some(
                orchestration
                    .task_history_retention_limit
                    .filter(|&l| l != 0)
                    .unwrap_or(5),
            ),
        }),
        raft: Some(SwarmSpecRaft {
            snapshot_interval: nonzero_u(raft.snapshot_interval, 10_000),
            keep_old_snapshots: Some(raft.keep_old_snapshots.unwrap_or(0)),
            log_entries_for_slow_followers: nonzero_u(raft.log_entries_for_slow_followers, 500),
            election_tick: nonzero(raft.election_tick, 10),
            heartbeat_tick: nonzero(raft.heartbeat_tick, 1),
        }),
        dispatcher: Some(SwarmSpecDispatcher {
            heartbeat_period: nonzero(spec.dispatcher.and_then(|d| d.heartbeat_period), 5 * SECOND),
        }),
        ca_config: Some(SwarmSpecCaConfig {
            node_cert_expiry: nonzero(ca_config.node_cert_expiry, 90 * 24 * 3600 * SECOND),
            external_cas: ca_config.external_cas.filter(|cas| !cas.is_empty()),
            force_rotate: ca_config.force_rotate.filter(|&r| r != 0),
            // A signing CA of the user's own is not supported; it is never echoed.
            signing_ca_cert: None,
            signing_ca_key: None,
        }),
        task_defaults: Some(
            spec.task_defaults
                .unwrap_or(SwarmSpecTaskDefaults { log_driver: None }),
        ),
        encryption_config: Some(SwarmSpecEncryptionConfig {
            auto_lock_managers: Some(auto_lock_managers),
        }),
    }
}

/// `ListenAddr` as `host[:port]`, port 2377 by default.
fn listen_addr(raw: &str) -> Result<String, ApiError> {
    let raw = if raw.is_empty() { "0.0.0.0:2377" } else { raw };
    let invalid = |why: &str| ApiError::BadRequest(format!("invalid ListenAddr {raw:?}: {why}"));
    let (host, port) = split_host_port(raw, DEFAULT_LISTEN_PORT).map_err(|e| invalid(&e))?;
    if host.parse::<std::net::IpAddr>().is_err() && host != "localhost" {
        return Err(invalid(
            "only IP addresses are supported by shoal, not interface names",
        ));
    }
    Ok(join_host_port(&host, port))
}

/// `AdvertiseAddr`: given, or the listen address when it is specific. The
/// port defaults to the listen port.
async fn advertise_addr(raw: &str, listen: &str) -> Result<String, ApiError> {
    let (listen_host, listen_port) =
        split_host_port(listen, DEFAULT_LISTEN_PORT).map_err(ApiError::BadRequest)?;
    if raw.is_empty() {
        let unspecified = listen_host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_unspecified())
            .unwrap_or(false);
        if unspecified {
            return system_addr(listen_port).await;
        }
        return Ok(join_host_port(&listen_host, listen_port));
    }
    let (host, port) = split_host_port(raw, listen_port)
        .map_err(|e| ApiError::BadRequest(format!("invalid AdvertiseAddr {raw:?}: {e}")))?;
    if host.parse::<std::net::IpAddr>().is_err() {
        return Err(ApiError::BadRequest(format!(
            "invalid AdvertiseAddr {raw:?}: only IP addresses are supported by shoal, not interface names"
        )));
    }
    Ok(join_host_port(&host, port))
}

/// The system's address, as the engine picks it when none is given.
async fn system_addr(port: u16) -> Result<String, ApiError> {
    let devices = crate::netutil::devices().await.map_err(|e| {
        ApiError::Internal(format!("cannot list the system's addresses (ip addr): {e}"))
    })?;
    let ip = choose_system_addr(&devices).map_err(ApiError::BadRequest)?;
    Ok(join_host_port(&ip.to_string(), port))
}

/// The engine's choice (daemon/cluster resolveSystemAddr on Linux): the
/// one device with a global address (its IPv4 before its IPv6); more than
/// one address of a family on a device, or addresses on two devices, is
/// ambiguous, worded as the engine words it.
fn choose_system_addr(devices: &[crate::netutil::Device]) -> Result<std::net::IpAddr, String> {
    let mut chosen: Option<(&str, std::net::IpAddr)> = None;
    for device in devices {
        let name = device.name.as_str();
        let v4 = single(name, &device.v4)?.map(std::net::IpAddr::V4);
        let v6 = single(name, &device.v6)?.map(std::net::IpAddr::V6);
        let Some(ip) = v4.or(v6) else {
            continue;
        };
        if let Some((first, first_ip)) = chosen {
            return Err(format!(
                "could not choose an IP address to advertise since this system has multiple addresses on different interfaces ({first_ip} on {first} and {ip} on {name})"
            ));
        }
        chosen = Some((name, ip));
    }
    chosen
        .map(|(_, ip)| ip)
        .ok_or_else(|| "could not find the system's IP address".to_string())
}

/// A device's only address of one family, if any.
fn single<T: Copy + std::fmt::Display>(device: &str, addrs: &[T]) -> Result<Option<T>, String> {
    match addrs {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        [a, b, ..] => Err(format!(
            "could not choose an IP address to advertise since this system has multiple addresses on interface {device} ({a} and {b})"
        )),
    }
}

fn split_host_port(raw: &str, default_port: u16) -> Result<(String, u16), String> {
    if let Some(rest) = raw.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("missing ']' in address")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("invalid port {p:?}"))?,
            None if after.is_empty() => default_port,
            None => return Err("unexpected text after address".to_string()),
        };
        return Ok((host.to_string(), port));
    }
    match raw.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
            Ok((host.to_string(), port))
        }
        _ => Ok((raw.to_string(), default_port)),
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listen_and_advertise_addresses() {
        assert_eq!(listen_addr("").unwrap(), "0.0.0.0:2377");
        assert_eq!(listen_addr("127.0.0.1").unwrap(), "127.0.0.1:2377");
        assert!(listen_addr("eth0:x").is_err());
        assert_eq!(
            advertise_addr("127.0.0.1", "0.0.0.0:2377").await.unwrap(),
            "127.0.0.1:2377"
        );
        assert_eq!(
            advertise_addr("10.0.0.2:4000", "0.0.0.0:2377")
                .await
                .unwrap(),
            "10.0.0.2:4000"
        );
        assert_eq!(
            advertise_addr("", "10.1.1.1:2377").await.unwrap(),
            "10.1.1.1:2377"
        );
    }

    fn device(name: &str, v4: &[&str], v6: &[&str]) -> crate::netutil::Device {
        crate::netutil::Device {
            name: name.to_string(),
            v4: v4.iter().map(|a| a.parse().unwrap()).collect(),
            v6: v6.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    /// The engine's choice and texts (daemon/cluster/listen_addr*.go).
    #[test]
    fn chooses_the_system_address_as_the_engine_does() {
        let one = [
            device("lo", &[], &[]),
            device("eth0", &["192.0.2.2"], &["fd00::2"]),
        ];
        assert_eq!(choose_system_addr(&one).unwrap().to_string(), "192.0.2.2");
        let v6_only = [device("eth0", &[], &["fd00::2"])];
        assert_eq!(choose_system_addr(&v6_only).unwrap().to_string(), "fd00::2");
        let two = [
            device("eth0", &["192.0.2.2"], &[]),
            device("eth1", &[], &["fd00::9"]),
        ];
        assert_eq!(
            choose_system_addr(&two).unwrap_err(),
            "could not choose an IP address to advertise since this system has multiple \
             addresses on different interfaces (192.0.2.2 on eth0 and fd00::9 on eth1)"
        );
        let same = [device("eth0", &["192.0.2.2", "192.0.2.3"], &[])];
        assert_eq!(
            choose_system_addr(&same).unwrap_err(),
            "could not choose an IP address to advertise since this system has multiple \
             addresses on interface eth0 (192.0.2.2 and 192.0.2.3)"
        );
        assert_eq!(
            choose_system_addr(&[]).unwrap_err(),
            "could not find the system's IP address"
        );
    }

    #[test]
    fn defaults_fill_zero_fields() {
        let cli: SwarmSpec = serde_json::from_str(
            r#"{"Labels":null,"Orchestration":{},"Raft":{"ElectionTick":0,"HeartbeatTick":0},"Dispatcher":{},"CAConfig":{},"TaskDefaults":{},"EncryptionConfig":{"AutoLockManagers":false}}"#,
        )
        .unwrap();
        let spec = with_defaults(cli);
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["Name"], "default");
        assert_eq!(json["Orchestration"]["TaskHistoryRetentionLimit"], 5);
        assert_eq!(json["Raft"]["ElectionTick"], 10);
        assert_eq!(json["Raft"]["SnapshotInterval"], 10000);
        assert_eq!(json["Dispatcher"]["HeartbeatPeriod"], 5_000_000_000i64);
        assert_eq!(json["CAConfig"]["NodeCertExpiry"], 7_776_000_000_000_000i64);
        assert_eq!(json["Labels"], serde_json::json!({}));
    }

    #[test]
    fn refuses_short_certificates_and_other_names() {
        let mut spec = SwarmSpec {
            ca_config: Some(SwarmSpecCaConfig {
                node_cert_expiry: Some(60 * SECOND),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            validate_update(&spec).unwrap_err().to_string(),
            "rpc error: code = InvalidArgument desc = minimum certificate expiry time is: 1h0m0s"
        );
        spec.name = Some("other".into());
        assert!(check_spec_name(&spec).is_err());
    }
}
