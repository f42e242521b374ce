//! `shoal-bench load`: many clients at once on a shoal in swarm mode, for a
//! while, then a check that every acknowledged object is there.
//!
//! A shoal of its own (socket, data dir) in front of the engine, `swarm
//! init`, then `--clients` concurrent clients (each with its own keep-alive
//! connection) loop for `--seconds` over a mix of:
//! - `service create` (busybox `sleep 3600`, StopGracePeriod 1 s; 0
//!   replicas, or 1 for about one create in `--replica-every` while fewer
//!   than `--max-containers` such services live, to keep container churn
//!   modest), then `service inspect` of it;
//! - `service inspect` + `service update` (`?version=` from that inspect) of
//!   one of the client's own services: a label `shoal-bench.rev` counted up,
//!   and for 0-replica services the env `REV=<n>` too. Each client updates
//!   only its own services, so a version conflict is never the client's
//!   doing and counts as an error; the inspect must show the last
//!   acknowledged revision (read-your-writes);
//! - `service rm` of one of its own services (half the iterations, and
//!   always when it holds more than `--keep` of them);
//! - `secret create` (unique names);
//! - `GET /tasks`, `GET /services` (answered by shoal) and `GET
//!   /containers/json`, `GET /images/json`, `/_ping`, `/version` (proxied to
//!   the engine), in random order.
//!
//! An error is any answer outside 2xx, a transport error or a request
//! outlasting `--timeout`. Per kind: count, errors, p50/p99 of the
//! successful ones; overall ops/s. Then every acknowledged object is
//! checked: a created, not removed service exists with the last
//! acknowledged revision; a removed one is gone; each created secret exists
//! under its name. Then everything is removed, the swarm left, shoal stopped
//! and its node's containers removed from the engine (none should remain).
//!
//! Goals: 0 errors, 0 missing (and 0 wrong).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use hyper::{Method, StatusCode};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::client::{encode_query, json_or_text, message, Api};
use super::daemon::{self, proc_status_kib, Shoal, TempDir};
use super::proxy::load_average;
use super::services::{run_id, swarm_init, ShoalSwarm, NODE_LABEL};
use super::stats::{grouped, percentile_us, table};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const IMAGE: &str = "busybox:latest";
const RUN_LABEL: &str = "shoal-bench.load";
const REV_LABEL: &str = "shoal-bench.rev";
/// Error answers printed per kind of operation.
const ERRORS_SHOWN: usize = 3;
/// Concurrent requests of the clean-up.
const CLEANUP_WORKERS: usize = 8;

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The shoal binary to start [default: `shoal` beside this binary].
    #[arg(long, value_name = "PATH")]
    shoal_bin: Option<PathBuf>,

    /// The engine's unix socket, which shoal fronts.
    #[arg(long, value_name = "PATH", default_value = "/var/run/docker.sock")]
    engine: PathBuf,

    /// Concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 32)]
    clients: usize,

    /// How long the clients run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,

    /// Services a client keeps at most; beyond that it removes one.
    #[arg(long, default_value_t = 4)]
    keep: usize,

    /// About one service create in this many asks for 1 replica (the rest
    /// 0), while fewer than `--max-containers` such services live.
    #[arg(long, default_value_t = 8)]
    replica_every: u32,

    /// Services with 1 replica (so containers) alive at once, at most.
    #[arg(long, default_value_t = 8)]
    max_containers: usize,

    /// A request taking longer than this counts as an error.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,

    /// Seed of the clients' random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

// ---------------------------------------------------------------------------
// Operations and their tallies.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    ServiceCreate,
    ServiceInspect,
    ServiceUpdate,
    ServiceRm,
    SecretCreate,
    Tasks,
    Services,
    Containers,
    Images,
    Ping,
    Version,
}

const OPS: [Op; 11] = [
    Op::ServiceCreate,
    Op::ServiceInspect,
    Op::ServiceUpdate,
    Op::ServiceRm,
    Op::SecretCreate,
    Op::Tasks,
    Op::Services,
    Op::Containers,
    Op::Images,
    Op::Ping,
    Op::Version,
];

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::ServiceCreate => "service create",
            Op::ServiceInspect => "service inspect",
            Op::ServiceUpdate => "service update",
            Op::ServiceRm => "service rm",
            Op::SecretCreate => "secret create",
            Op::Tasks => "GET /tasks",
            Op::Services => "GET /services",
            Op::Containers => "GET /containers/json (proxied)",
            Op::Images => "GET /images/json (proxied)",
            Op::Ping => "GET /_ping (proxied)",
            Op::Version => "GET /version (proxied)",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
    first_errors: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        for e in other.first_errors {
            if self.first_errors.len() < ERRORS_SHOWN {
                self.first_errors.push(e);
            }
        }
    }
}

/// What became of one request.
enum Outcome {
    /// A 2xx answer and its body.
    Done(Bytes),
    /// Any other answer: the server refused, so nothing changed.
    Refused,
    /// No answer (transport error or timeout): the change may or may not
    /// have been made.
    Lost,
}

// ---------------------------------------------------------------------------
// What the clients were told was done.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Live,
    /// `DELETE` answered 200.
    Removed,
    /// `DELETE` had no answer.
    RemoveLost,
}

struct ServiceRecord {
    id: String,
    name: String,
    replicas: u64,
    /// The revision of the last acknowledged update (0: the create).
    rev: u64,
    /// A later update that had no answer: it may have been applied.
    maybe_rev: Option<u64>,
    fate: Fate,
}

struct SecretRecord {
    id: String,
    name: String,
}

#[derive(Default)]
struct ClientResult {
    tallies: Vec<Tally>,
    services: Vec<ServiceRecord>,
    secrets: Vec<SecretRecord>,
}

/// What every client shares.
struct Ctx {
    socket: PathBuf,
    run: String,
    deadline: Instant,
    timeout: Duration,
    keep: usize,
    replica_every: u32,
    max_containers: usize,
    seed: u64,
    /// Live services with 1 replica.
    containers: AtomicUsize,
    ops: AtomicU64,
    errors: AtomicU64,
}

/// One client: its connection, its randomness, its tallies and records.
struct Client {
    ctx: Arc<Ctx>,
    index: usize,
    api: Api,
    rng: StdRng,
    result: ClientResult,
}

impl Client {
    fn new(ctx: Arc<Ctx>, index: usize) -> Self {
        let api = Api::new(&ctx.socket);
        let rng = StdRng::seed_from_u64(ctx.seed.wrapping_add(index as u64 * 0x9e37_79b9));
        Self {
            ctx,
            index,
            api,
            rng,
            result: ClientResult {
                tallies: OPS.iter().map(|_| Tally::default()).collect(),
                ..ClientResult::default()
            },
        }
    }

    fn over(&self) -> bool {
        Instant::now() >= self.ctx.deadline
    }

    /// One timed request; anything but a 2xx answer is counted as an error
    /// of `op` (and printed, the first few).
    async fn request(
        &mut self,
        op: Op,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Outcome {
        let start = Instant::now();
        let answer = tokio::time::timeout(
            self.ctx.timeout,
            self.api.call_bytes(method.clone(), path, body),
        )
        .await;
        let elapsed = start.elapsed();
        self.ctx.ops.fetch_add(1, Ordering::Relaxed);
        let (outcome, error) = match answer {
            Ok(Ok((status, bytes))) if status.is_success() => {
                self.result.tallies[op.index()].latencies.push(elapsed);
                return Outcome::Done(bytes);
            }
            Ok(Ok((status, bytes))) => (
                Outcome::Refused,
                format!("{status}: {}", message(&json_or_text(&bytes))),
            ),
            Ok(Err(e)) => (Outcome::Lost, format!("{e:#}")),
            Err(_) => {
                self.api.reset();
                (
                    Outcome::Lost,
                    format!("no answer within {:?}", self.ctx.timeout),
                )
            }
        };
        self.error(op, format!("{method} {path}: {error}"));
        outcome
    }

    fn error(&mut self, op: Op, text: String) {
        self.ctx.errors.fetch_add(1, Ordering::Relaxed);
        let tally = &mut self.result.tallies[op.index()];
        tally.errors += 1;
        if tally.first_errors.len() < ERRORS_SHOWN {
            tally
                .first_errors
                .push(format!("client {}: {text}", self.index));
        }
    }

    async fn run(mut self) -> ClientResult {
        let mut n = 0u64;
        while !self.over() {
            n += 1;
            self.create_service(n).await;
            if self.over() {
                break;
            }
            self.update_service().await;
            if self.over() {
                break;
            }
            let live = self.live();
            if live.len() > self.ctx.keep || (!live.is_empty() && self.rng.gen_bool(0.5)) {
                // Over the limit: the oldest; otherwise any.
                let pick = if live.len() > self.ctx.keep {
                    live[0]
                } else {
                    live[self.rng.gen_range(0..live.len())]
                };
                self.remove_service(pick).await;
            }
            let mut others = [
                Op::SecretCreate,
                Op::Tasks,
                Op::Services,
                Op::Containers,
                Op::Images,
                Op::Ping,
                Op::Version,
            ];
            others.shuffle(&mut self.rng);
            for op in others {
                if self.over() {
                    break;
                }
                match op {
                    Op::SecretCreate => self.create_secret(n).await,
                    Op::Tasks => self.list(op, "/v1.41/tasks").await,
                    Op::Services => self.list(op, "/v1.41/services").await,
                    Op::Containers => self.list(op, "/v1.41/containers/json").await,
                    Op::Images => self.list(op, "/v1.41/images/json").await,
                    Op::Ping => self.list(op, "/_ping").await,
                    Op::Version => self.list(op, "/v1.41/version").await,
                    _ => {}
                }
            }
        }
        self.result
    }

    /// Indices of this client's live services, oldest first.
    fn live(&self) -> Vec<usize> {
        (0..self.result.services.len())
            .filter(|&i| self.result.services[i].fate == Fate::Live)
            .collect()
    }

    async fn create_service(&mut self, n: u64) {
        let name = format!("load-{}-c{}-{n}", self.ctx.run, self.index);
        let want_replica = self.rng.gen_ratio(1, self.ctx.replica_every.max(1));
        // Reserve a container slot before asking, give it back if refused.
        let replicas = if want_replica
            && self.ctx.containers.fetch_add(1, Ordering::Relaxed) < self.ctx.max_containers
        {
            1
        } else {
            if want_replica {
                self.ctx.containers.fetch_sub(1, Ordering::Relaxed);
            }
            0
        };
        let body = json!({
            "Name": name,
            "Labels": {RUN_LABEL: self.ctx.run, REV_LABEL: "0"},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": IMAGE,
                    "Command": ["sleep", "3600"],
                    "Env": ["REV=0"],
                    "StopGracePeriod": 1_000_000_000u64
                },
                "RestartPolicy": {"Condition": "any"}
            },
            "Mode": {"Replicated": {"Replicas": replicas}}
        });
        let outcome = self
            .request(
                Op::ServiceCreate,
                Method::POST,
                "/v1.41/services/create",
                Some(&body),
            )
            .await;
        let Outcome::Done(bytes) = outcome else {
            if replicas == 1 {
                self.ctx.containers.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        };
        let created = json_or_text(&bytes);
        let Some(id) = created["ID"].as_str().map(str::to_string) else {
            self.error(
                Op::ServiceCreate,
                format!("services/create answered {created}, no ID"),
            );
            return;
        };
        self.result.services.push(ServiceRecord {
            id: id.clone(),
            name: name.clone(),
            replicas,
            rev: 0,
            maybe_rev: None,
            fate: Fate::Live,
        });
        if self.over() {
            return;
        }
        // Read it back.
        let path = format!("/v1.41/services/{id}");
        if let Outcome::Done(bytes) = self
            .request(Op::ServiceInspect, Method::GET, &path, None)
            .await
        {
            let service = json_or_text(&bytes);
            if service["Spec"]["Name"].as_str() != Some(name.as_str()) {
                self.error(
                    Op::ServiceInspect,
                    format!(
                        "GET {path} right after create: Spec.Name {}, not {name}",
                        service["Spec"]["Name"]
                    ),
                );
            }
        }
    }

    /// Inspect, then update, one of this client's live services.
    async fn update_service(&mut self) {
        let live = self.live();
        if live.is_empty() {
            return;
        }
        let i = live[self.rng.gen_range(0..live.len())];
        let (id, rev, maybe_rev, replicas) = {
            let s = &self.result.services[i];
            (s.id.clone(), s.rev, s.maybe_rev, s.replicas)
        };
        let path = format!("/v1.41/services/{id}");
        let Outcome::Done(bytes) = self
            .request(Op::ServiceInspect, Method::GET, &path, None)
            .await
        else {
            return;
        };
        let service = json_or_text(&bytes);
        // Read-your-writes: the last acknowledged revision (or a lost one).
        let seen = service["Spec"]["Labels"][REV_LABEL]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok());
        let seen = match seen {
            Some(v) if v == rev || Some(v) == maybe_rev => v,
            other => {
                self.error(
                    Op::ServiceInspect,
                    format!("GET {path}: {REV_LABEL} is {other:?}, the last acknowledged update set {rev}"),
                );
                return;
            }
        };
        let Some(version) = service["Version"]["Index"].as_u64() else {
            self.error(
                Op::ServiceInspect,
                format!("GET {path}: no Version.Index in {service}"),
            );
            return;
        };
        if self.over() {
            return;
        }
        let next = seen.max(rev) + 1;
        let mut spec = service["Spec"].clone();
        spec["Labels"][REV_LABEL] = json!(next.to_string());
        if replicas == 0 {
            spec["TaskTemplate"]["ContainerSpec"]["Env"] = json!([format!("REV={next}")]);
        }
        let update = format!("/v1.41/services/{id}/update?version={version}");
        let outcome = self
            .request(Op::ServiceUpdate, Method::POST, &update, Some(&spec))
            .await;
        let record = &mut self.result.services[i];
        match outcome {
            Outcome::Done(_) => {
                record.rev = next;
                record.maybe_rev = None;
            }
            Outcome::Refused => {}
            Outcome::Lost => record.maybe_rev = Some(next),
        }
    }

    async fn remove_service(&mut self, i: usize) {
        let path = format!("/v1.41/services/{}", self.result.services[i].id);
        let outcome = self
            .request(Op::ServiceRm, Method::DELETE, &path, None)
            .await;
        let record = &mut self.result.services[i];
        record.fate = match outcome {
            Outcome::Done(_) => Fate::Removed,
            Outcome::Refused => Fate::Live,
            Outcome::Lost => Fate::RemoveLost,
        };
        if record.fate != Fate::Live && record.replicas == 1 {
            self.ctx.containers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn create_secret(&mut self, n: u64) {
        let name = format!("load-{}-c{}-s{n}", self.ctx.run, self.index);
        let body = json!({
            "Name": name,
            // "shoal-load" in base64.
            "Data": "c2hvYWwtbG9hZA==",
            "Labels": {RUN_LABEL: self.ctx.run}
        });
        if let Outcome::Done(bytes) = self
            .request(
                Op::SecretCreate,
                Method::POST,
                "/v1.41/secrets/create",
                Some(&body),
            )
            .await
        {
            let created = json_or_text(&bytes);
            match created["ID"].as_str() {
                Some(id) => self.result.secrets.push(SecretRecord {
                    id: id.to_string(),
                    name,
                }),
                None => self.error(
                    Op::SecretCreate,
                    format!("secrets/create answered {created}, no ID"),
                ),
            }
        }
    }

    /// A read; only the status matters (the body is read, not parsed).
    async fn list(&mut self, op: Op, path: &str) {
        self.request(op, Method::GET, path, None).await;
    }
}

// ---------------------------------------------------------------------------
// The check at the end.

#[derive(Default)]
struct Check {
    acknowledged: u64,
    missing: u64,
    wrong: u64,
    /// Services whose fate is unknown (a lost create/update/rm): not counted.
    uncertain: u64,
    /// Objects of this run that no client was told about (a lost create).
    unacknowledged: u64,
    details: Vec<String>,
}

impl Check {
    fn note(&mut self, text: String) {
        if self.details.len() < 10 {
            self.details.push(text);
        }
    }
}

async fn check(api: &mut Api, run: &str, results: &[ClientResult]) -> Result<Check> {
    let mut out = Check::default();
    // Unfiltered lists, filtered here: the check does not rely on filters.
    let services = api
        .expect(StatusCode::OK, Method::GET, "/v1.41/services", None)
        .await?;
    let services: HashMap<&str, &Value> = services
        .as_array()
        .context("GET /services: not a list")?
        .iter()
        .filter(|s| s["Spec"]["Labels"][RUN_LABEL].as_str() == Some(run))
        .filter_map(|s| Some((s["ID"].as_str()?, s)))
        .collect();
    let secrets = api
        .expect(StatusCode::OK, Method::GET, "/v1.41/secrets", None)
        .await?;
    let secrets: HashMap<&str, &Value> = secrets
        .as_array()
        .context("GET /secrets: not a list")?
        .iter()
        .filter(|s| s["Spec"]["Labels"][RUN_LABEL].as_str() == Some(run))
        .filter_map(|s| Some((s["ID"].as_str()?, s)))
        .collect();

    let mut known_services = 0usize;
    for record in results.iter().flat_map(|r| &r.services) {
        let found = services.get(record.id.as_str());
        if found.is_some() {
            known_services += 1;
        }
        match record.fate {
            Fate::RemoveLost => out.uncertain += 1,
            Fate::Removed => {
                out.acknowledged += 1;
                if found.is_some() {
                    out.wrong += 1;
                    out.note(format!(
                        "service {} ({}) was removed (200) but is still listed",
                        record.name, record.id
                    ));
                }
            }
            Fate::Live => {
                out.acknowledged += 1;
                let Some(service) = found else {
                    out.missing += 1;
                    out.note(format!(
                        "service {} ({}) was created (201) and never removed, but is not listed",
                        record.name, record.id
                    ));
                    continue;
                };
                let spec = &service["Spec"];
                let label = spec["Labels"][REV_LABEL].as_str().unwrap_or("");
                let accepted = |v: u64| v == record.rev || Some(v) == record.maybe_rev;
                let label_ok = label.parse::<u64>().is_ok_and(accepted);
                let env_ok = record.replicas != 0
                    || spec["TaskTemplate"]["ContainerSpec"]["Env"][0]
                        .as_str()
                        .and_then(|e| e.strip_prefix("REV="))
                        .and_then(|v| v.parse::<u64>().ok())
                        .is_some_and(accepted);
                let name_ok = spec["Name"].as_str() == Some(record.name.as_str());
                if !(label_ok && env_ok && name_ok) {
                    out.wrong += 1;
                    out.note(format!(
                        "service {} ({}): name {}, {REV_LABEL} {label:?}, env {}; the last acknowledged update set {}",
                        record.name,
                        record.id,
                        spec["Name"],
                        spec["TaskTemplate"]["ContainerSpec"]["Env"],
                        record.rev
                    ));
                }
            }
        }
    }
    out.unacknowledged += services.len().saturating_sub(known_services) as u64;

    let mut known_secrets = 0usize;
    for record in results.iter().flat_map(|r| &r.secrets) {
        out.acknowledged += 1;
        match secrets.get(record.id.as_str()) {
            None => {
                out.missing += 1;
                out.note(format!(
                    "secret {} ({}) was created (201) but is not listed",
                    record.name, record.id
                ));
            }
            Some(secret) => {
                known_secrets += 1;
                if secret["Spec"]["Name"].as_str() != Some(record.name.as_str()) {
                    out.wrong += 1;
                    out.note(format!(
                        "secret {} is listed as {}, created as {}",
                        record.id, secret["Spec"]["Name"], record.name
                    ));
                }
            }
        }
    }
    out.unacknowledged += secrets.len().saturating_sub(known_secrets) as u64;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Clean-up.

/// Deletes every service and secret labelled with this run, `CLEANUP_WORKERS`
/// at a time; returns how many deletes failed (with the first messages).
async fn remove_all(socket: &std::path::Path, run: &str) -> Result<(usize, Vec<String>)> {
    let mut api = Api::new(socket);
    let filters = encode_query(&json!({ "label": [format!("{RUN_LABEL}={run}")] }).to_string());
    let mut paths = Vec::new();
    for kind in ["services", "secrets"] {
        let list = api
            .expect(
                StatusCode::OK,
                Method::GET,
                &format!("/v1.41/{kind}?filters={filters}"),
                None,
            )
            .await?;
        for object in list.as_array().map(Vec::as_slice).unwrap_or_default() {
            if let Some(id) = object["ID"].as_str() {
                paths.push(format!("/v1.41/{kind}/{id}"));
            }
        }
    }
    let paths = Arc::new(std::sync::Mutex::new(paths));
    let mut handles = Vec::new();
    for _ in 0..CLEANUP_WORKERS {
        let (paths, socket) = (paths.clone(), socket.to_path_buf());
        handles.push(tokio::spawn(async move {
            let mut api = Api::new(&socket);
            let mut failed = Vec::new();
            // (The guard is dropped inside `map`, not held across the await.)
            while let Some(path) = paths.lock().map(|mut p| p.pop()).unwrap_or(None) {
                if let Err(e) = api
                    .expect_one_of(
                        &[
                            StatusCode::OK,
                            StatusCode::NO_CONTENT,
                            StatusCode::NOT_FOUND,
                        ],
                        Method::DELETE,
                        &path,
                        None,
                    )
                    .await
                {
                    failed.push(format!("{e:#}"));
                }
            }
            failed
        }));
    }
    let mut failed = Vec::new();
    for handle in handles {
        failed.extend(handle.await.context("a clean-up worker panicked")?);
    }
    let n = failed.len();
    failed.truncate(ERRORS_SHOWN);
    Ok((n, failed))
}

/// Containers on the engine carrying `label`, asked directly.
async fn engine_containers(engine: &std::path::Path, label: &str) -> Result<usize> {
    let mut api = Api::new(engine);
    let filters = encode_query(&json!({ "label": [label] }).to_string());
    let list = api
        .expect(
            StatusCode::OK,
            Method::GET,
            &format!("/v1.41/containers/json?all=1&filters={filters}"),
            None,
        )
        .await?;
    Ok(list.as_array().map_or(0, Vec::len))
}

// ---------------------------------------------------------------------------

pub async fn run(args: LoadArgs) -> Result<()> {
    if args.clients == 0 || args.seconds == 0 {
        bail!("--clients and --seconds must be at least 1");
    }
    let bin = args
        .shoal_bin
        .clone()
        .unwrap_or_else(daemon::default_shoal_bin);
    daemon::check_shoal_bin(&bin)?;
    let run = run_id();
    let dir = TempDir::new("shoal-bench-load")?;
    let mut shoal = Shoal::start(&bin, dir.path(), &args.engine)?;
    shoal.wait_ready(READY_TIMEOUT).await?;
    let pid = shoal.pid();
    let mut swarm = ShoalSwarm {
        shoal,
        engine: args.engine.clone(),
        node_id: None,
        left: false,
    };
    let socket = swarm.shoal.socket().to_path_buf();
    let mut api = Api::new(&socket);
    let (node, _) = swarm_init(&mut api)
        .await
        .context("POST /swarm/init on shoal")?;
    swarm.node_id = Some(node.clone());
    // Let the new swarm settle (leader, ingress) before the load.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = proc_status_kib(pid, "VmRSS")?;

    eprintln!(
        "shoal-bench load: {} clients for {} s on {} (run {run}); load average {}",
        args.clients,
        args.seconds,
        socket.display(),
        load_average()
    );
    let start = Instant::now();
    let ctx = Arc::new(Ctx {
        socket: socket.clone(),
        run: run.clone(),
        deadline: start + Duration::from_secs(args.seconds),
        timeout: Duration::from_secs(args.timeout),
        keep: args.keep,
        replica_every: args.replica_every,
        max_containers: args.max_containers,
        seed: args.seed,
        containers: AtomicUsize::new(0),
        ops: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let handles: Vec<_> = (0..args.clients)
        .map(|i| tokio::spawn(Client::new(ctx.clone(), i).run()))
        .collect();
    // Progress every 10 s.
    let progress = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "  {:>4.0} s: {} ops, {} errors, shoal RSS {}",
                    start.elapsed().as_secs_f64(),
                    grouped(ctx.ops.load(Ordering::Relaxed)),
                    ctx.errors.load(Ordering::Relaxed),
                    proc_status_kib(pid, "VmRSS").map_or_else(
                        |_| "?".to_string(),
                        |k| format!("{:.1} MiB", k as f64 / 1024.0)
                    )
                );
            }
        })
    };
    let mut results = Vec::with_capacity(args.clients);
    for handle in handles {
        results.push(handle.await.context("a client panicked")?);
    }
    let took = start.elapsed();
    progress.abort();
    let rss_after = proc_status_kib(pid, "VmRSS")?;
    let rss_peak = proc_status_kib(pid, "VmHWM")?;

    let checked = check(&mut api, &run, &results).await;
    let rss_checked = proc_status_kib(pid, "VmRSS").ok();

    // Clean-up: every object of the run, then the containers, then leave.
    let cleanup_start = Instant::now();
    let removed = remove_all(&socket, &run).await;
    let left_running = swarm.wait_no_containers(Duration::from_secs(60)).await;
    let rss_cleaned = proc_status_kib(pid, "VmRSS").ok();
    let leave = swarm.leave();
    let exited = swarm.shoal.exited().ok().flatten();
    let cleanup = cleanup_start.elapsed();
    drop(swarm); // stops shoal, force-removes what its node left on the engine
    let node_label = format!("{NODE_LABEL}={node}");
    let remaining = engine_containers(&args.engine, &node_label).await;
    drop(dir);

    // -----------------------------------------------------------------------
    // Report.
    let mut total = Tally::default();
    let mut per_op: Vec<Tally> = OPS.iter().map(|_| Tally::default()).collect();
    for result in &mut results {
        for (i, tally) in std::mem::take(&mut result.tallies).into_iter().enumerate() {
            per_op[i].merge(tally);
        }
    }
    let ms = |us: f64| format!("{:.1}", us / 1000.0);
    let mut rows = vec![[
        "operation",
        "ok",
        "errors",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "max ms",
    ]
    .map(String::from)
    .to_vec()];
    for (op, tally) in OPS.iter().zip(per_op.iter_mut()) {
        let ok = tally.latencies.len() as u64;
        rows.push(vec![
            op.label().to_string(),
            grouped(ok),
            grouped(tally.errors),
            format!("{:.1}", (ok + tally.errors) as f64 / took.as_secs_f64()),
            ms(percentile_us(&mut tally.latencies, 0.50)),
            ms(percentile_us(&mut tally.latencies, 0.99)),
            ms(percentile_us(&mut tally.latencies, 1.0)),
        ]);
        total.latencies.extend(tally.latencies.iter().copied());
        total.errors += tally.errors;
    }
    let all_ops = total.latencies.len() as u64 + total.errors;
    rows.push(vec![
        "all".to_string(),
        grouped(total.latencies.len() as u64),
        grouped(total.errors),
        format!("{:.1}", all_ops as f64 / took.as_secs_f64()),
        ms(percentile_us(&mut total.latencies, 0.50)),
        ms(percentile_us(&mut total.latencies, 0.99)),
        ms(percentile_us(&mut total.latencies, 1.0)),
    ]);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nshoal-bench load: {} clients, {:.1} s, {} operations ({:.1}/s); load average {}\n",
        args.clients,
        took.as_secs_f64(),
        grouped(all_ops),
        all_ops as f64 / took.as_secs_f64(),
        load_average()
    );
    out.push_str(&table(&rows));
    if total.errors > 0 {
        let _ = writeln!(out, "\nfirst errors per kind");
        for (op, tally) in OPS.iter().zip(&per_op) {
            for e in &tally.first_errors {
                let _ = writeln!(out, "  {}: {e}", op.label());
            }
        }
    }

    let _ = writeln!(out);
    let mut goal_missing = None;
    match &checked {
        Ok(c) => {
            let _ = writeln!(
                out,
                "acknowledged objects: {}, missing: {}, wrong: {}",
                grouped(c.acknowledged),
                c.missing,
                c.wrong
            );
            let services: usize = results.iter().map(|r| r.services.len()).sum();
            let live = results
                .iter()
                .flat_map(|r| &r.services)
                .filter(|s| s.fate == Fate::Live)
                .count();
            let replicated = results
                .iter()
                .flat_map(|r| &r.services)
                .filter(|s| s.replicas == 1)
                .count();
            let secrets: usize = results.iter().map(|r| r.secrets.len()).sum();
            let _ = writeln!(
                out,
                "  services created {} ({} with 1 replica; {} left live, {} removed), secrets created {}",
                grouped(services as u64),
                grouped(replicated as u64),
                grouped(live as u64),
                grouped((services - live) as u64),
                grouped(secrets as u64)
            );
            if c.uncertain > 0 || c.unacknowledged > 0 {
                let _ = writeln!(
                    out,
                    "  not counted: {} services with a lost remove, {} objects of the run no client was told about",
                    c.uncertain, c.unacknowledged
                );
            }
            for d in &c.details {
                let _ = writeln!(out, "  {d}");
            }
            goal_missing = Some(c.missing + c.wrong);
        }
        Err(e) => {
            let _ = writeln!(out, "acknowledged objects: check FAILED: {e:#}");
        }
    }

    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    let mib_opt = |kib: Option<u64>| kib.map_or_else(|| "?".to_string(), mib);
    let mut rows = vec![["shoal RSS", "MiB"].map(String::from).to_vec()];
    rows.push(vec![
        "after swarm init, before the load".into(),
        mib(rss_before),
    ]);
    rows.push(vec!["after the load".into(), mib(rss_after)]);
    rows.push(vec!["after the check".into(), mib_opt(rss_checked)]);
    rows.push(vec![
        "after removing everything".into(),
        mib_opt(rss_cleaned),
    ]);
    rows.push(vec!["peak (VmHWM)".into(), mib(rss_peak)]);
    let _ = writeln!(out);
    out.push_str(&table(&rows));

    let _ = writeln!(out, "\nclean-up ({:.1} s)", cleanup.as_secs_f64());
    match &removed {
        Ok((0, _)) => {
            let _ = writeln!(out, "  every service and secret of the run removed");
        }
        Ok((n, first)) => {
            let _ = writeln!(out, "  {n} deletes failed: {}", first.join("; "));
        }
        Err(e) => {
            let _ = writeln!(out, "  removing the run's objects FAILED: {e:#}");
        }
    }
    match &left_running {
        Ok(0) => {}
        Ok(n) => {
            let _ = writeln!(
                out,
                "  {n} container(s) of shoal's node still there 60 s after the services were removed"
            );
        }
        Err(e) => {
            let _ = writeln!(out, "  checking containers FAILED: {e:#}");
        }
    }
    if let Err(e) = &leave {
        let _ = writeln!(out, "  swarm leave --force FAILED: {e:#}");
    }
    if let Some(status) = exited {
        let _ = writeln!(out, "  shoal EXITED during the run: {status}");
    }
    match &remaining {
        Ok(n) => {
            let _ = writeln!(
                out,
                "  containers of shoal's node left on the engine at the end: {n}"
            );
        }
        Err(e) => {
            let _ = writeln!(out, "  checking the engine FAILED: {e:#}");
        }
    }

    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let _ = writeln!(out, "\ngoals");
    let mut rows = vec![["goal", "measured", "verdict"].map(String::from).to_vec()];
    rows.push(vec![
        "errors: 0".into(),
        grouped(total.errors),
        verdict(total.errors == 0).into(),
    ]);
    rows.push(vec![
        "acknowledged objects missing or wrong: 0".into(),
        goal_missing.map_or_else(|| "?".to_string(), grouped),
        verdict(goal_missing == Some(0)).into(),
    ]);
    out.push_str(&table(&rows));
    print!("{out}");
    Ok(())
}
