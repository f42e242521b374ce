//! `shoal-bench services`: services and rolling updates (issues 5 and 6)
//! against the engine's own swarm mode and the engine floor, in one run.
//!
//! 1. Real swarm: the engine itself in swarm mode (`POST /swarm/init`), the
//!    scenarios, then always `POST /swarm/leave?force=true` — on errors and
//!    Ctrl-C too — and no swarm container left behind. Serialized with other
//!    users of the engine by `flock` on [`LOCK_PATH`] and by waiting while
//!    the engine's `Swarm.LocalNodeState` is not `inactive`.
//! 2. shoal: a shoal of its own (socket, data dir) in front of the same
//!    engine: `swarm init`, the same scenarios, `swarm leave --force`.
//! 3. Engine floor: the same containers created, started, replaced and
//!    removed straight through the Engine API, no orchestrator.
//!
//! "Running" means N tasks with `Status.State == "running"` and
//! `DesiredState == "running"` in `GET /tasks?filters={"service":…}` AND
//! N running containers of the service on the engine, asked directly, each
//! carrying the task's ID; polled every 50 ms.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::client::{blocking_call, encode_query, message, Api};
use super::daemon::{self, dockerd_pid, proc_status_kib, Shoal, TempDir};
use super::stats::table;

/// The lock every user of the engine's own swarm mode takes first.
pub const LOCK_PATH: &str = "/tmp/shoal-engine-swarm.lock";
const IMAGE_OLD: &str = "busybox:latest";
const IMAGE_NEW: &str = "busybox:v2";
const POLL: Duration = Duration::from_millis(50);
/// Samples of the 1-replica scenario on each side; their median counts.
const CREATE1_SAMPLES: usize = 5;
/// Samples of the 10-replica one (the last one goes on to be scaled).
const CREATE10_SAMPLES: usize = 3;
/// Polling in the first second, so a sub-second scenario (create 1) is
/// timed to 10 ms like the floor, which needs no polling; longer ones back
/// off to [`POLL`] not to load the engine they measure.
const POLL_FIRST_SECOND: Duration = Duration::from_millis(10);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long removing a service may take before its containers are
/// force-removed directly.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(90);
const BLOCKING_TIMEOUT: Duration = Duration::from_secs(60);
const FLOOR_WORKERS: usize = 8;
/// The service's StopGracePeriod, in seconds.
const STOP_GRACE_S: f64 = 1.0;
/// The engine's default UpdateConfig.Monitor, in seconds.
const MONITOR_S: f64 = 5.0;
const UPDATE_PARALLELISM: usize = 5;
const SERVICE_LABEL: &str = "com.docker.swarm.service.id";
const TASK_LABEL: &str = "com.docker.swarm.task.id";
pub(super) const NODE_LABEL: &str = "com.docker.swarm.node.id";
const FLOOR_LABEL: &str = "shoal-bench.floor";
/// BASELINES.md: dockerd's RSS with swarm active, idle.
const BASELINE_DOCKERD_MIB: f64 = 738.0;

#[derive(Debug, Args)]
pub struct ServicesArgs {
    /// The shoal binary to start [default: `shoal` beside this binary,
    /// i.e. target/release/shoal; build it with `cargo build --release`].
    #[arg(long, value_name = "PATH")]
    shoal_bin: Option<PathBuf>,

    /// The engine's unix socket: put in swarm mode for the real-swarm
    /// figures, fronted by shoal, and asked directly whether containers run.
    #[arg(long, value_name = "PATH", default_value = "/var/run/docker.sock")]
    engine: PathBuf,

    /// Skip the real swarm (the engine stays out of swarm mode); the goals
    /// then use BASELINES.md's medians where they apply.
    #[arg(long)]
    skip_real: bool,

    /// Skip shoal.
    #[arg(long)]
    skip_shoal: bool,

    /// Skip the engine floor.
    #[arg(long)]
    skip_floor: bool,

    /// The largest service (the 50 of "create 50", "scale 10 → 50", "scale
    /// 50 → 0" and the rolling update). Smaller makes a shorter run.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(10..=200))]
    replicas_max: u64,

    /// How long to wait for the engine's swarm lock and for another user's
    /// swarm to go away, in seconds.
    #[arg(long, default_value_t = 300)]
    lock_wait: u64,

    /// Give up on one scenario after this many seconds.
    #[arg(long, default_value_t = 240)]
    scenario_timeout: u64,
}

/// The scenarios, in the order the table prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Init,
    Create1,
    Create10,
    CreateMax,
    ScaleUp,
    ScaleDown,
    UpdateRunning,
    UpdateCompleted,
    Leave,
}

const SCENARIOS: [Scenario; 9] = [
    Scenario::Init,
    Scenario::Create1,
    Scenario::Create10,
    Scenario::CreateMax,
    Scenario::ScaleUp,
    Scenario::ScaleDown,
    Scenario::UpdateRunning,
    Scenario::UpdateCompleted,
    Scenario::Leave,
];

impl Scenario {
    fn index(self) -> usize {
        self as usize
    }

    fn label(self, max: u64) -> String {
        match self {
            Scenario::Init => "POST /swarm/init".into(),
            Scenario::Create1 => "create 1 replica → running (median/5)".into(),
            Scenario::Create10 => "create 10 replicas → all running (median/3)".into(),
            Scenario::CreateMax => format!("create, {max} replicas → all running"),
            Scenario::ScaleUp => format!("scale 10 → {max} → all running"),
            Scenario::ScaleDown => format!("scale {max} → 0 → no container runs"),
            Scenario::UpdateRunning => format!("rolling update of {max} → all new running"),
            Scenario::UpdateCompleted => "  … → UpdateStatus completed".into(),
            Scenario::Leave => "POST /swarm/leave?force=true".into(),
        }
    }

    /// BASELINES.md's real-swarm median, in seconds (the 50-replica rows
    /// only when the run's largest service is 50).
    fn baseline(self, max: u64) -> Option<f64> {
        let full = max == 50;
        match self {
            Scenario::Init => Some(0.52),
            Scenario::Leave => Some(0.56),
            Scenario::Create1 => Some(0.47),
            Scenario::Create10 => Some(1.32),
            Scenario::CreateMax => full.then_some(16.2),
            Scenario::ScaleUp => full.then_some(11.6),
            Scenario::ScaleDown => full.then_some(5.2),
            Scenario::UpdateRunning => full.then_some(31.1),
            Scenario::UpdateCompleted => full.then_some(36.1),
        }
    }
}

/// One side's figures: seconds per scenario, memory readings in KiB.
#[derive(Debug, Default)]
struct Side {
    max: u64,
    secs: [Option<f64>; 9],
    errors: Vec<String>,
    /// The orchestrator's RSS (shoal only): idle after init, with the
    /// largest service running.
    rss_idle_kib: Option<u64>,
    rss_max_kib: Option<u64>,
    /// dockerd's RSS at the same two moments.
    dockerd_idle_kib: Option<u64>,
    dockerd_max_kib: Option<u64>,
}

impl Side {
    fn new(max: u64) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    fn set(&mut self, scenario: Scenario, took: Duration) {
        let secs = took.as_secs_f64();
        eprintln!("  {:<40} {secs:>8.2} s", scenario.label(self.max));
        self.secs[scenario.index()] = Some(secs);
    }

    fn get(&self, scenario: Scenario) -> Option<f64> {
        self.secs[scenario.index()]
    }

    fn fail(&mut self, what: &str, error: anyhow::Error) {
        let text = format!("{what}: {error:#}");
        eprintln!("  FAILED {text}");
        self.errors.push(text);
    }
}

/// The floor's figures in seconds.
#[derive(Debug, Default)]
struct Floor {
    create1: Option<f64>,
    create10: Option<f64>,
    create_max: Option<f64>,
    /// create + start of `max - 10` more.
    scale_up: Option<f64>,
    /// stop of `max` with the 1 s grace period (see [`stop_all`]).
    stop_max: Option<f64>,
    /// replace `max` (stop with 1 s grace, remove, create, start) with
    /// `UPDATE_PARALLELISM` workers.
    replace_max: Option<f64>,
    errors: Vec<String>,
}

impl Floor {
    fn for_scenario(&self, scenario: Scenario) -> Option<f64> {
        match scenario {
            Scenario::Create1 => self.create1,
            Scenario::Create10 => self.create10,
            Scenario::CreateMax => self.create_max,
            Scenario::ScaleUp => self.scale_up,
            // The stop includes the 1 s StopGracePeriod (`sleep` ignores
            // SIGTERM); "completed" the default 5 s UpdateConfig.Monitor,
            // the waits the spec itself imposes on any orchestrator.
            Scenario::ScaleDown => self.stop_max,
            Scenario::UpdateRunning => self.replace_max,
            Scenario::UpdateCompleted => self.replace_max.map(|s| s + MONITOR_S),
            Scenario::Init | Scenario::Leave => None,
        }
    }
}

pub async fn run(args: ServicesArgs) -> Result<()> {
    let engine = args.engine.clone();
    let (version, api) = engine_version(&engine).await?;
    let mut probe = Api::new(&engine);
    for image in [IMAGE_OLD, IMAGE_NEW] {
        let (status, _) = probe
            .call(Method::GET, &format!("/v1.41/images/{image}/json"), None)
            .await?;
        if status != StatusCode::OK {
            bail!(
                "image {image} is not on the engine ({status}); the rolling update needs both {IMAGE_OLD} and {IMAGE_NEW} locally (e.g. docker tag {IMAGE_OLD} {IMAGE_NEW})"
            );
        }
    }
    let bin = if args.skip_shoal {
        None
    } else {
        let bin = args
            .shoal_bin
            .clone()
            .unwrap_or_else(daemon::default_shoal_bin);
        daemon::check_shoal_bin(&bin)?;
        Some(bin)
    };
    let max = args.replicas_max;
    let timeout = Duration::from_secs(args.scenario_timeout);
    let run_id = run_id();

    let real = if args.skip_real {
        None
    } else {
        eprintln!("== real swarm (the engine's own swarm mode)");
        Some(real_side(&args, &engine, max, timeout, &run_id).await)
    };
    let shoal = match &bin {
        Some(bin) => {
            eprintln!("== shoal");
            Some(shoal_side(bin, &engine, max, timeout, &run_id).await)
        }
        None => None,
    };
    let floor = if args.skip_floor {
        None
    } else {
        eprintln!("== engine floor ({FLOOR_WORKERS} workers)");
        Some(floor_side(&engine, max, &run_id).await)
    };

    let report = Report {
        max,
        version,
        api,
        real,
        shoal,
        floor,
    };
    print!("{}", report.render());
    Ok(())
}

async fn engine_version(engine: &Path) -> Result<(String, String)> {
    let mut api = Api::new(engine);
    let value = api
        .expect(StatusCode::OK, Method::GET, "/version", None)
        .await
        .with_context(|| {
            format!(
                "no Docker engine answers at {} (is dockerd running, and may this user use its socket?)",
                engine.display()
            )
        })?;
    let field = |k: &str| value[k].as_str().unwrap_or("?").to_string();
    Ok((field("Version"), field("ApiVersion")))
}

pub(super) fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:06x}", std::process::id(), nanos & 0xff_ffff)
}

fn dockerd_rss() -> Option<u64> {
    dockerd_pid().and_then(|pid| proc_status_kib(pid, "VmRSS").ok())
}

// ---------------------------------------------------------------------------
// The real swarm, and the guard that always takes the engine out of it.

/// The engine in swarm mode for this run. Holds the flock; dropping it —
/// on success, error, panic or Ctrl-C (the work future is dropped) — makes
/// the engine leave the swarm, removes every container of the swarm's node
/// and what the swarm created (docker_gwbridge when it was not there before).
struct RealSwarm {
    engine: PathBuf,
    _lock: File,
    /// Set before `POST /swarm/init` is sent: from then on, leave.
    active: bool,
    node_id: Option<String>,
    gwbridge_existed: bool,
}

impl RealSwarm {
    /// Takes the lock and waits until the engine is out of swarm mode.
    async fn acquire(engine: &Path, wait: Duration) -> Result<Self> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_PATH)
            .with_context(|| format!("opening {LOCK_PATH}"))?;
        let start = Instant::now();
        let mut said = false;
        loop {
            // SAFETY: flock(2) on a descriptor this function owns.
            let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(error).with_context(|| format!("flock {LOCK_PATH}"));
            }
            if start.elapsed() > wait {
                bail!("{LOCK_PATH} still locked by someone else after {wait:?}");
            }
            if !said {
                eprintln!("  waiting for {LOCK_PATH} (another run uses the engine's swarm mode)");
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut api = Api::new(engine);
        let mut said = false;
        loop {
            let info = api
                .expect(StatusCode::OK, Method::GET, "/v1.41/info", None)
                .await?;
            let state = info["Swarm"]["LocalNodeState"].as_str().unwrap_or("");
            if state == "inactive" {
                break;
            }
            if start.elapsed() > wait {
                bail!("the engine's swarm is still {state:?} after {wait:?}: someone else is using it; not touching it");
            }
            if !said {
                eprintln!("  the engine's swarm is {state:?}: someone else is using it; waiting up to {wait:?}");
                said = true;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let (status, _) = api
            .call(Method::GET, "/v1.41/networks/docker_gwbridge", None)
            .await?;
        Ok(Self {
            engine: engine.to_path_buf(),
            _lock: lock,
            active: false,
            node_id: None,
            gwbridge_existed: status == StatusCode::OK,
        })
    }

    /// Leaves the swarm (timed) and cleans up. Idempotent.
    fn leave(&mut self) -> Result<Duration> {
        if !self.active {
            return Ok(Duration::ZERO);
        }
        if self.node_id.is_none() {
            // Interrupted during init: learn the node ID to clean up after.
            if let Ok((200, info)) =
                blocking_call(&self.engine, "GET", "/v1.41/info", BLOCKING_TIMEOUT)
            {
                self.node_id = info["Swarm"]["NodeID"]
                    .as_str()
                    .filter(|id| !id.is_empty())
                    .map(str::to_string);
            }
        }
        let start = Instant::now();
        let (status, body) = blocking_call(
            &self.engine,
            "POST",
            "/v1.41/swarm/leave?force=true",
            BLOCKING_TIMEOUT,
        )?;
        let took = start.elapsed();
        // 503: not in a swarm (init failed or never happened) — nothing to leave.
        if status != 200 && status != 503 {
            bail!(
                "POST /swarm/leave?force=true on the engine: {status}: {}",
                message(&body)
            );
        }
        self.active = false;
        if let Some(node) = &self.node_id {
            remove_labelled(&self.engine, &format!("{NODE_LABEL}={node}"))?;
        }
        if !self.gwbridge_existed {
            let _ = blocking_call(
                &self.engine,
                "DELETE",
                "/v1.41/networks/docker_gwbridge",
                BLOCKING_TIMEOUT,
            );
        }
        let (_, info) = blocking_call(&self.engine, "GET", "/v1.41/info", BLOCKING_TIMEOUT)?;
        let state = info["Swarm"]["LocalNodeState"].as_str().unwrap_or("?");
        if state != "inactive" {
            bail!("after leaving, the engine's swarm is {state:?}, not inactive");
        }
        Ok(took)
    }
}

impl Drop for RealSwarm {
    fn drop(&mut self) {
        if self.active {
            eprintln!("  leaving the engine's swarm (clean-up)");
            if let Err(e) = self.leave() {
                eprintln!(
                    "  WARNING: could not take the engine out of swarm mode: {e:#}; run: docker swarm leave --force"
                );
            }
        }
    }
}

/// Force-removes every container (running or not) carrying `label`,
/// blocking; retries until none is left (30 s at most).
fn remove_labelled(engine: &Path, label: &str) -> Result<usize> {
    let filters = encode_query(&json!({ "label": [label] }).to_string());
    let path = format!("/v1.41/containers/json?all=1&filters={filters}");
    let start = Instant::now();
    let mut removed = 0;
    loop {
        let (status, list) = blocking_call(engine, "GET", &path, BLOCKING_TIMEOUT)?;
        if status != 200 {
            bail!("GET /containers/json: {status}: {}", message(&list));
        }
        let ids: Vec<String> = list
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["Id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if ids.is_empty() {
            return Ok(removed);
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("{} containers labelled {label} are still there", ids.len());
        }
        for id in ids {
            let path = format!("/v1.41/containers/{id}?force=1&v=1");
            if let Ok((204 | 404, _)) = blocking_call(engine, "DELETE", &path, BLOCKING_TIMEOUT) {
                removed += 1;
            }
        }
    }
}

async fn real_side(
    args: &ServicesArgs,
    engine: &Path,
    max: u64,
    timeout: Duration,
    run_id: &str,
) -> Side {
    let mut side = Side::new(max);
    let mut swarm = match RealSwarm::acquire(engine, Duration::from_secs(args.lock_wait)).await {
        Ok(swarm) => swarm,
        Err(e) => {
            side.fail("real swarm not available", e);
            return side;
        }
    };
    let mut api = Api::new(engine);
    swarm.active = true;
    match swarm_init(&mut api).await {
        Ok((node, took)) => {
            swarm.node_id = Some(node);
            side.set(Scenario::Init, took);
            // Let the new swarm settle (its first leader election, the
            // ingress network) before the first service.
            tokio::time::sleep(Duration::from_secs(1)).await;
            side.dockerd_idle_kib = dockerd_rss();
            scenarios(
                &mut side,
                &mut api,
                engine,
                None,
                max,
                timeout,
                &format!("real-{run_id}"),
            )
            .await;
        }
        Err(e) => side.fail("POST /swarm/init on the engine", e),
    }
    match swarm.leave() {
        Ok(took) => side.set(Scenario::Leave, took),
        Err(e) => side.fail("leaving the engine's swarm", e),
    }
    side
}

pub(super) async fn swarm_init(api: &mut Api) -> Result<(String, Duration)> {
    let body = json!({"ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "127.0.0.1"});
    let start = Instant::now();
    let node = api
        .expect(
            StatusCode::OK,
            Method::POST,
            "/v1.41/swarm/init",
            Some(&body),
        )
        .await?;
    let took = start.elapsed();
    let node = node
        .as_str()
        .with_context(|| format!("POST /swarm/init answered {node}, not a node ID"))?
        .to_string();
    Ok((node, took))
}

// ---------------------------------------------------------------------------
// shoal

/// A shoal in swarm mode for this run; dropping it leaves the swarm, stops
/// shoal and removes any container its node left behind.
pub(super) struct ShoalSwarm {
    pub(super) shoal: Shoal,
    pub(super) engine: PathBuf,
    pub(super) node_id: Option<String>,
    pub(super) left: bool,
}

impl ShoalSwarm {
    pub(super) fn leave(&mut self) -> Result<Duration> {
        let start = Instant::now();
        let (status, body) = blocking_call(
            self.shoal.socket(),
            "POST",
            "/v1.41/swarm/leave?force=true",
            BLOCKING_TIMEOUT,
        )?;
        let took = start.elapsed();
        self.left = true;
        if status != 200 {
            bail!(
                "POST /swarm/leave?force=true on shoal: {status}: {}",
                message(&body)
            );
        }
        Ok(took)
    }

    /// Containers of shoal's node still on the engine some time after leave.
    pub(super) async fn wait_no_containers(&self, within: Duration) -> Result<usize> {
        let Some(node) = &self.node_id else {
            return Ok(0);
        };
        let mut api = Api::new(&self.engine);
        let filters =
            encode_query(&json!({ "label": [format!("{NODE_LABEL}={node}")] }).to_string());
        let path = format!("/v1.41/containers/json?all=1&filters={filters}");
        let start = Instant::now();
        loop {
            let list = api.expect(StatusCode::OK, Method::GET, &path, None).await?;
            let n = list.as_array().map_or(0, Vec::len);
            if n == 0 || start.elapsed() > within {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for ShoalSwarm {
    fn drop(&mut self) {
        if !self.left {
            let _ = self.leave();
        }
        let _ = self.shoal.stop();
        if let Some(node) = &self.node_id {
            match remove_labelled(&self.engine, &format!("{NODE_LABEL}={node}")) {
                Ok(0) => {}
                Ok(n) => eprintln!("  removed {n} container(s) shoal's node left behind"),
                Err(e) => {
                    eprintln!("  WARNING: containers of shoal's node {node} may remain: {e:#}")
                }
            }
        }
    }
}

async fn shoal_side(bin: &Path, engine: &Path, max: u64, timeout: Duration, run_id: &str) -> Side {
    let mut side = Side::new(max);
    let dir = match TempDir::new("shoal-bench-services") {
        Ok(dir) => dir,
        Err(e) => {
            side.fail("temporary directory", e);
            return side;
        }
    };
    let mut shoal = match Shoal::start(bin, dir.path(), engine) {
        Ok(shoal) => shoal,
        Err(e) => {
            side.fail("starting shoal", e);
            return side;
        }
    };
    if let Err(e) = shoal.wait_ready(READY_TIMEOUT).await {
        side.fail("shoal start-up", e);
        return side;
    }
    let pid = shoal.pid();
    let mut swarm = ShoalSwarm {
        shoal,
        engine: engine.to_path_buf(),
        node_id: None,
        left: false,
    };
    let mut api = Api::new(swarm.shoal.socket());
    match swarm_init(&mut api).await {
        Ok((node, took)) => {
            swarm.node_id = Some(node);
            side.set(Scenario::Init, took);
            tokio::time::sleep(Duration::from_secs(1)).await;
            side.rss_idle_kib = proc_status_kib(pid, "VmRSS").ok();
            side.dockerd_idle_kib = dockerd_rss();
            scenarios(
                &mut side,
                &mut api,
                engine,
                Some(pid),
                max,
                timeout,
                &format!("shoal-{run_id}"),
            )
            .await;
        }
        Err(e) => side.fail("POST /swarm/init on shoal", e),
    }
    match swarm.leave() {
        Ok(took) => side.set(Scenario::Leave, took),
        Err(e) => side.fail("leaving shoal's swarm", e),
    }
    match swarm.wait_no_containers(Duration::from_secs(30)).await {
        Ok(0) => {}
        Ok(n) => side.errors.push(format!(
            "{n} container(s) of shoal's node still on the engine 30 s after swarm leave (removed by the benchmark)"
        )),
        Err(e) => side.fail("checking containers after leave", e),
    }
    if let Ok(Some(status)) = swarm.shoal.exited() {
        side.errors
            .push(format!("shoal exited during the run: {status}"));
    }
    drop(swarm);
    drop(dir);
    side
}

// ---------------------------------------------------------------------------
// The scenarios, on either side.

fn service_body(name: &str, replicas: u64) -> Value {
    json!({
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": IMAGE_OLD,
                "Command": ["sleep", "3600"],
                "StopGracePeriod": 1_000_000_000u64
            },
            "RestartPolicy": {"Condition": "any"}
        },
        "Mode": {"Replicated": {"Replicas": replicas}}
    })
}

/// The middle sample (the upper one of an even count).
fn median(samples: &mut [Duration]) -> Option<Duration> {
    samples.sort();
    samples.get(samples.len() / 2).copied()
}

/// Runs every scenario on `api` (the engine in swarm mode, or shoal),
/// checking containers on `engine`; `pid` is shoal's, for its RSS.
async fn scenarios(
    side: &mut Side,
    api: &mut Api,
    engine: &Path,
    pid: Option<u32>,
    max: u64,
    timeout: Duration,
    prefix: &str,
) {
    let mut engine_api = Api::new(engine);
    let mut check = Checker {
        api,
        engine: &mut engine_api,
        timeout,
    };

    // create 1, the median of a few: one sub-second sample is mostly noise
    let mut samples = Vec::new();
    for n in 0..CREATE1_SAMPLES {
        let name = format!("{prefix}-one-{n}");
        match check.create(&name, 1).await {
            Ok((id, took)) => {
                samples.push(took);
                if let Err(e) = check.remove(&id).await {
                    side.fail("removing the 1-replica service", e);
                    return;
                }
            }
            Err(e) => {
                side.fail("create, 1 replica", e);
                if let Err(e) = check.remove_by_name(&name).await {
                    side.fail("removing the 1-replica service", e);
                    return;
                }
                break;
            }
        }
    }
    if let Some(took) = median(&mut samples) {
        side.set(Scenario::Create1, took);
    }

    // create 10 (the median of a few), scale 10 → max, scale max → 0
    let mut samples = Vec::new();
    let mut last = None;
    for n in 0..CREATE10_SAMPLES {
        let name = format!("{prefix}-scale-{n}");
        match check.create(&name, 10).await {
            Ok((id, took)) => {
                samples.push(took);
                if n + 1 == CREATE10_SAMPLES {
                    last = Some((name, Ok(id)));
                } else if let Err(e) = check.remove(&id).await {
                    side.fail("removing a 10-replica service", e);
                    return;
                }
            }
            Err(e) => {
                last = Some((name, Err(e)));
                break;
            }
        }
    }
    if let Some(took) = median(&mut samples) {
        side.set(Scenario::Create10, took);
    }
    let Some((name, created)) = last else {
        return;
    };
    match created {
        Ok(id) => {
            match check.scale(&id, max).await {
                Ok(took) => side.set(Scenario::ScaleUp, took),
                Err(e) => side.fail("scale up", e),
            }
            match check.scale(&id, 0).await {
                Ok(took) => side.set(Scenario::ScaleDown, took),
                Err(e) => side.fail("scale down", e),
            }
        }
        Err(e) => side.fail("create, 10 replicas", e),
    }
    if let Err(e) = check.remove_by_name(&name).await {
        side.fail("removing the scaled service", e);
        return;
    }

    // create max, rolling update
    let name = format!("{prefix}-update");
    match check.create(&name, max).await {
        Ok((id, took)) => {
            side.set(Scenario::CreateMax, took);
            side.rss_max_kib = pid.and_then(|pid| proc_status_kib(pid, "VmRSS").ok());
            side.dockerd_max_kib = dockerd_rss();
            match check.rolling_update(&id, max).await {
                Ok((running, completed)) => {
                    side.set(Scenario::UpdateRunning, running);
                    match completed {
                        Ok(took) => side.set(Scenario::UpdateCompleted, took),
                        Err(e) => side.fail("rolling update → completed", e),
                    }
                }
                Err(e) => side.fail("rolling update", e),
            }
        }
        Err(e) => side.fail(&format!("create, {max} replicas"), e),
    }
    if let Err(e) = check.remove_by_name(&name).await {
        side.fail("removing the updated service", e);
    }
}

/// Tasks (from the API under test) and containers (from the engine directly)
/// of one service.
pub(super) struct Checker<'a> {
    pub(super) api: &'a mut Api,
    pub(super) engine: &'a mut Api,
    pub(super) timeout: Duration,
}

impl Checker<'_> {
    async fn create(&mut self, name: &str, replicas: u64) -> Result<(String, Duration)> {
        self.create_from(&service_body(name, replicas), replicas)
            .await
    }

    /// Creates the service `body` describes and waits for its `replicas`.
    pub(super) async fn create_from(
        &mut self,
        body: &Value,
        replicas: u64,
    ) -> Result<(String, Duration)> {
        let start = Instant::now();
        let created = self
            .api
            .expect(
                StatusCode::CREATED,
                Method::POST,
                "/v1.41/services/create",
                Some(body),
            )
            .await?;
        let id = created["ID"]
            .as_str()
            .with_context(|| format!("services/create answered {created}"))?
            .to_string();
        self.wait_running(&id, replicas, None, start).await?;
        Ok((id, start.elapsed()))
    }

    pub(super) async fn inspect(&mut self, id: &str) -> Result<Value> {
        self.api
            .expect(
                StatusCode::OK,
                Method::GET,
                &format!("/v1.41/services/{id}"),
                None,
            )
            .await
    }

    pub(super) async fn update(
        &mut self,
        id: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Result<Instant> {
        let service = self.inspect(id).await?;
        let version = service["Version"]["Index"]
            .as_u64()
            .with_context(|| format!("service {id} has no Version.Index"))?;
        let mut spec = service["Spec"].clone();
        edit(&mut spec);
        let start = Instant::now();
        self.api
            .expect(
                StatusCode::OK,
                Method::POST,
                &format!("/v1.41/services/{id}/update?version={version}"),
                Some(&spec),
            )
            .await?;
        Ok(start)
    }

    pub(super) async fn scale(&mut self, id: &str, replicas: u64) -> Result<Duration> {
        let start = self
            .update(id, |spec| {
                spec["Mode"] = json!({"Replicated": {"Replicas": replicas}});
            })
            .await?;
        self.wait_running(id, replicas, None, start).await?;
        Ok(start.elapsed())
    }

    /// Image change with parallelism 5, delay 0, stop-first: time until all
    /// new tasks run, and (separately reported) until UpdateStatus completed.
    async fn rolling_update(
        &mut self,
        id: &str,
        replicas: u64,
    ) -> Result<(Duration, Result<Duration>)> {
        let start = self
            .update(id, |spec| {
                spec["TaskTemplate"]["ContainerSpec"]["Image"] = json!(IMAGE_NEW);
                spec["UpdateConfig"] = json!({
                    "Parallelism": UPDATE_PARALLELISM,
                    "Delay": 0,
                    "Order": "stop-first"
                });
            })
            .await?;
        self.wait_running(id, replicas, Some(IMAGE_NEW), start)
            .await?;
        let running = start.elapsed();
        let completed = async {
            loop {
                let service = self.inspect(id).await?;
                let state = service["UpdateStatus"]["State"].as_str().unwrap_or("");
                if state == "completed" {
                    return Ok(start.elapsed());
                }
                if state.starts_with("rollback") || state == "paused" {
                    bail!(
                        "UpdateStatus {state}: {}",
                        service["UpdateStatus"]["Message"].as_str().unwrap_or("")
                    );
                }
                if start.elapsed() > self.timeout {
                    bail!("UpdateStatus still {state:?} after {:?}", self.timeout);
                }
                tokio::time::sleep(POLL).await;
            }
        }
        .await;
        Ok((running, completed))
    }

    /// Polls (every 10 ms in the first second, then 50 ms) until `want` tasks of the service run (with an
    /// image starting with `image`, if given) and the engine runs exactly
    /// their containers; for `want == 0`, until no container of the service
    /// runs on the engine.
    pub(super) async fn wait_running(
        &mut self,
        id: &str,
        want: u64,
        image: Option<&str>,
        start: Instant,
    ) -> Result<()> {
        let tasks_path = format!(
            "/v1.41/tasks?filters={}",
            encode_query(&json!({ "service": { id: true } }).to_string())
        );
        let containers_path = format!(
            "/v1.41/containers/json?filters={}",
            encode_query(&json!({ "label": [format!("{SERVICE_LABEL}={id}")] }).to_string())
        );
        let want = usize::try_from(want).context("replicas")?;
        let mut last: String;
        let mut first = true;
        loop {
            if !first {
                let step = if start.elapsed() < Duration::from_secs(1) {
                    POLL_FIRST_SECOND
                } else {
                    POLL
                };
                tokio::time::sleep(step).await;
            }
            first = false;
            let containers = self
                .engine
                .expect(StatusCode::OK, Method::GET, &containers_path, None)
                .await?;
            let containers: Vec<&Value> = containers
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            let running_containers: HashSet<&str> = containers
                .iter()
                .filter(|c| c["State"].as_str().is_none_or(|s| s == "running"))
                .filter_map(|c| c["Labels"][TASK_LABEL].as_str())
                .collect();
            if want == 0 {
                if running_containers.is_empty() {
                    return Ok(());
                }
                last = format!("{} containers still run", running_containers.len());
            } else if running_containers.len() == want {
                let tasks = self
                    .api
                    .expect(StatusCode::OK, Method::GET, &tasks_path, None)
                    .await?;
                let running: Vec<&str> = tasks
                    .as_array()
                    .map(|a| a.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .filter(|t| {
                        t["Status"]["State"] == "running"
                            && t["DesiredState"] == "running"
                            && image.is_none_or(|image| {
                                t["Spec"]["ContainerSpec"]["Image"]
                                    .as_str()
                                    .is_some_and(|i| i.starts_with(image))
                            })
                    })
                    .filter_map(|t| t["ID"].as_str())
                    .collect();
                let matched = running
                    .iter()
                    .filter(|id| running_containers.contains(*id))
                    .count();
                if running.len() == want && matched == want {
                    return Ok(());
                }
                last = format!(
                    "{} tasks running, {matched} of them with a running container; {} containers run",
                    running.len(),
                    running_containers.len()
                );
            } else {
                last = format!("{} containers run, want {want}", running_containers.len());
            }
            if start.elapsed() > self.timeout {
                bail!("not converged after {:?}: {last}", self.timeout);
            }
        }
    }

    /// Deletes the service (if it exists) and waits until none of its
    /// containers is left on the engine; force-removes stragglers after
    /// `REMOVE_TIMEOUT`.
    pub(super) async fn remove(&mut self, id: &str) -> Result<()> {
        self.api
            .expect_one_of(
                &[StatusCode::OK, StatusCode::NOT_FOUND],
                Method::DELETE,
                &format!("/v1.41/services/{id}"),
                None,
            )
            .await?;
        let path = format!(
            "/v1.41/containers/json?all=1&filters={}",
            encode_query(&json!({ "label": [format!("{SERVICE_LABEL}={id}")] }).to_string())
        );
        let start = Instant::now();
        loop {
            let list = self
                .engine
                .expect(StatusCode::OK, Method::GET, &path, None)
                .await?;
            if list.as_array().is_none_or(Vec::is_empty) {
                return Ok(());
            }
            if start.elapsed() > REMOVE_TIMEOUT {
                let engine = self.engine.socket().to_path_buf();
                let n = remove_labelled(&engine, &format!("{SERVICE_LABEL}={id}"))?;
                eprintln!("  note: {n} container(s) of removed service {id} still there after {REMOVE_TIMEOUT:?}; force-removed");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn remove_by_name(&mut self, name: &str) -> Result<()> {
        let (status, service) = self
            .api
            .call(Method::GET, &format!("/v1.41/services/{name}"), None)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let id = service["ID"]
            .as_str()
            .ok_or_else(|| anyhow!("GET /services/{name}: {status}: {}", message(&service)))?
            .to_string();
        self.remove(&id).await
    }
}

// ---------------------------------------------------------------------------
// The engine floor.

/// Removes the floor's containers on every exit path.
struct FloorGuard {
    engine: PathBuf,
    label: String,
}

impl Drop for FloorGuard {
    fn drop(&mut self) {
        if let Err(e) = remove_labelled(&self.engine, &self.label) {
            eprintln!(
                "  WARNING: floor containers labelled {} may remain: {e:#}",
                self.label
            );
        }
    }
}

async fn floor_side(engine: &Path, max: u64, run_id: &str) -> Floor {
    let mut floor = Floor::default();
    let guard = FloorGuard {
        engine: engine.to_path_buf(),
        label: format!("{FLOOR_LABEL}={run_id}"),
    };
    if let Err(e) = floor_steps(&mut floor, engine, max, run_id).await {
        let text = format!("{e:#}");
        eprintln!("  FAILED {text}");
        floor.errors.push(text);
    }
    drop(guard);
    floor
}

async fn floor_steps(floor: &mut Floor, engine: &Path, max: u64, run_id: &str) -> Result<()> {
    let counter = Arc::new(AtomicUsize::new(0));
    let max = usize::try_from(max).context("replicas")?;
    let say = |what: &str, took: Duration| {
        eprintln!("  {what:<40} {:>8.2} s", took.as_secs_f64());
        Some(took.as_secs_f64())
    };

    let mut samples = Vec::new();
    for _ in 0..CREATE1_SAMPLES {
        let (ids, took) =
            create_start(engine, run_id, &counter, 1, IMAGE_OLD, FLOOR_WORKERS).await?;
        samples.push(took);
        force_remove(engine, ids, FLOOR_WORKERS).await?;
    }
    if let Some(took) = median(&mut samples) {
        floor.create1 = say("create + start 1 (median)", took);
    }

    let mut samples = Vec::new();
    let mut ids = Vec::new();
    for n in 0..CREATE10_SAMPLES {
        let (created, took) =
            create_start(engine, run_id, &counter, 10, IMAGE_OLD, FLOOR_WORKERS).await?;
        samples.push(took);
        if n + 1 == CREATE10_SAMPLES {
            ids = created;
        } else {
            force_remove(engine, created, FLOOR_WORKERS).await?;
        }
    }
    if let Some(took) = median(&mut samples) {
        floor.create10 = say("create + start 10 (median)", took);
    }
    let (more, took) =
        create_start(engine, run_id, &counter, max - 10, IMAGE_OLD, FLOOR_WORKERS).await?;
    floor.scale_up = say(&format!("create + start {} more", max - 10), took);
    ids.extend(more);
    let took = stop_all(engine, &ids, FLOOR_WORKERS).await?;
    floor.stop_max = say(&format!("stop {max} (1 s grace)"), took);
    force_remove(engine, ids, FLOOR_WORKERS).await?;

    let (ids, took) = create_start(engine, run_id, &counter, max, IMAGE_OLD, FLOOR_WORKERS).await?;
    floor.create_max = say(&format!("create + start {max}"), took);
    let (ids, took) = replace(engine, run_id, &counter, ids, UPDATE_PARALLELISM).await?;
    floor.replace_max = say(
        &format!("replace {max} ({UPDATE_PARALLELISM} workers, stop 1 s)"),
        took,
    );
    force_remove(engine, ids, FLOOR_WORKERS).await?;
    Ok(())
}

/// Creates and starts one container; its ID.
async fn create_one(api: &mut Api, run_id: &str, n: usize, image: &str) -> Result<String> {
    let body = json!({
        "Image": image,
        "Cmd": ["sleep", "3600"],
        "StopTimeout": 1,
        "Labels": { FLOOR_LABEL: run_id }
    });
    let created = api
        .expect(
            StatusCode::CREATED,
            Method::POST,
            &format!("/v1.41/containers/create?name=shoal-bench-floor-{run_id}-{n}"),
            Some(&body),
        )
        .await?;
    let id = created["Id"]
        .as_str()
        .with_context(|| format!("containers/create answered {created}"))?
        .to_string();
    api.expect(
        StatusCode::NO_CONTENT,
        Method::POST,
        &format!("/v1.41/containers/{id}/start"),
        None,
    )
    .await?;
    Ok(id)
}

/// Creates and starts `count` containers with `workers` concurrent workers.
async fn create_start(
    engine: &Path,
    run_id: &str,
    counter: &Arc<AtomicUsize>,
    count: usize,
    image: &str,
    workers: usize,
) -> Result<(Vec<String>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..workers.min(count) {
        let (engine, run_id, counter, next, image) = (
            engine.to_path_buf(),
            run_id.to_string(),
            counter.clone(),
            next.clone(),
            image.to_string(),
        );
        handles.push(tokio::spawn(async move {
            let mut api = Api::new(&engine);
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                ids.push(create_one(&mut api, &run_id, n, &image).await?);
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    for handle in handles {
        ids.extend(handle.await.context("floor worker")??);
    }
    Ok((ids, start.elapsed()))
}

/// Runs `op` on every ID in `ids` with `workers` concurrent workers, each
/// on its own engine connection (handed to `op` and back); the results, in
/// no particular order.
async fn on_each<T, F, Fut>(
    engine: &Path,
    ids: Vec<String>,
    workers: usize,
    op: F,
) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(Api, String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(Api, T)>> + Send,
{
    let queue = Arc::new(std::sync::Mutex::new(ids));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (engine, queue, op) = (engine.to_path_buf(), queue.clone(), op.clone());
        handles.push(tokio::spawn(async move {
            let mut api = Api::new(&engine);
            let mut out = Vec::new();
            loop {
                let next = queue.lock().map_err(|_| anyhow!("queue poisoned"))?.pop();
                let Some(id) = next else { break };
                let (back, result) = op(api, id).await?;
                api = back;
                out.push(result);
            }
            anyhow::Ok(out)
        }));
    }
    let mut out = Vec::new();
    for handle in handles {
        out.extend(handle.await.context("floor worker")??);
    }
    Ok(out)
}

/// Force-removes `ids` with `workers` concurrent workers.
async fn force_remove(engine: &Path, ids: Vec<String>, workers: usize) -> Result<Duration> {
    let start = Instant::now();
    on_each(engine, ids, workers, |mut api, id| async move {
        api.expect_one_of(
            &[StatusCode::NO_CONTENT, StatusCode::NOT_FOUND],
            Method::DELETE,
            &format!("/v1.41/containers/{id}?force=1"),
            None,
        )
        .await?;
        Ok((api, ()))
    })
    .await?;
    Ok(start.elapsed())
}

/// Stops `ids` as fast as the engine allows, with the service's grace
/// period: SIGTERM to all at once, the grace period, then SIGKILL and a
/// wait for the exit with `workers` at a time. (On this 2-core machine
/// that beats 50 concurrent `POST /stop?t=1` — 4.3 s against 4.2–5.2 s —
/// since the engine tears exited containers down faster a few at a time.)
async fn stop_all(engine: &Path, ids: &[String], workers: usize) -> Result<Duration> {
    let start = Instant::now();
    on_each(engine, ids.to_vec(), ids.len(), |mut api, id| async move {
        kill(&mut api, &id, "TERM").await?;
        Ok((api, ()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs_f64(STOP_GRACE_S)).await;
    on_each(engine, ids.to_vec(), workers, |mut api, id| async move {
        kill(&mut api, &id, "KILL").await?;
        api.expect(
            StatusCode::OK,
            Method::POST,
            &format!("/v1.41/containers/{id}/wait?condition=not-running"),
            None,
        )
        .await?;
        Ok((api, ()))
    })
    .await?;
    Ok(start.elapsed())
}

/// Sends `signal` to container `id`; one that no longer runs is fine.
async fn kill(api: &mut Api, id: &str, signal: &str) -> Result<()> {
    api.expect_one_of(
        &[StatusCode::NO_CONTENT, StatusCode::CONFLICT],
        Method::POST,
        &format!("/v1.41/containers/{id}/kill?signal={signal}"),
        None,
    )
    .await?;
    Ok(())
}

/// What a stop-first rolling update does, straight on the engine: for each
/// container, stop (1 s grace, which `sleep` ignores), remove, create and
/// start its replacement with the new image; `workers` at a time.
async fn replace(
    engine: &Path,
    run_id: &str,
    counter: &Arc<AtomicUsize>,
    ids: Vec<String>,
    workers: usize,
) -> Result<(Vec<String>, Duration)> {
    let start = Instant::now();
    let (run_id, counter) = (run_id.to_string(), counter.clone());
    let new_ids = on_each(engine, ids, workers, move |mut api, id| {
        let (run_id, counter) = (run_id.clone(), counter.clone());
        async move {
            api.expect_one_of(
                &[StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED],
                Method::POST,
                &format!("/v1.41/containers/{id}/stop?t=1"),
                None,
            )
            .await?;
            api.expect(
                StatusCode::NO_CONTENT,
                Method::DELETE,
                &format!("/v1.41/containers/{id}"),
                None,
            )
            .await?;
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let new_id = create_one(&mut api, &run_id, n, IMAGE_NEW).await?;
            Ok((api, new_id))
        }
    })
    .await?;
    Ok((new_ids, start.elapsed()))
}

// ---------------------------------------------------------------------------
// The report.

struct Report {
    max: u64,
    version: String,
    api: String,
    real: Option<Side>,
    shoal: Option<Side>,
    floor: Option<Floor>,
}

fn secs(value: Option<f64>) -> String {
    match value {
        Some(s) => format!("{s:.2} s"),
        None => "—".into(),
    }
}

fn mib(kib: Option<u64>) -> String {
    match kib {
        Some(k) => format!("{:.1} MiB", k as f64 / 1024.0),
        None => "—".into(),
    }
}

impl Report {
    /// The real-swarm figure for the goal: measured in this run, or
    /// BASELINES.md's median (marked) when the real swarm was skipped.
    fn reference(&self, scenario: Scenario) -> (Option<f64>, bool) {
        match &self.real {
            Some(real) => (real.get(scenario), false),
            None => (scenario.baseline(self.max), true),
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let max = self.max;
        let _ = writeln!(
            out,
            "\nshoal-bench services: engine {} (API {}), largest service {max} replicas; \
             seconds from the request until converged (tasks AND engine containers), polled every 50 ms\n",
            self.version, self.api
        );
        let mut rows = vec![vec![
            "scenario".to_string(),
            "real swarm".into(),
            "shoal".into(),
            "floor".into(),
            "shoal/real".into(),
            "goal".into(),
            "met?".into(),
        ]];
        let mut met_all = true;
        let mut any_baseline = false;
        for scenario in SCENARIOS {
            let (real, from_baseline) = self.reference(scenario);
            any_baseline |= from_baseline && real.is_some();
            let shoal = self.shoal.as_ref().and_then(|s| s.get(scenario));
            let floor = self.floor.as_ref().and_then(|f| f.for_scenario(scenario));
            let goal = match (real, floor) {
                (Some(r), Some(f)) => Some((0.5 * r).max(1.2 * f)),
                (Some(r), None) => Some(0.5 * r),
                (None, Some(f)) => Some(1.2 * f),
                (None, None) => None,
            };
            let informational = scenario == Scenario::Leave;
            let met = match (shoal, goal) {
                (Some(s), Some(g)) if !informational => {
                    met_all &= s <= g;
                    if s <= g {
                        "yes"
                    } else {
                        "NO"
                    }
                }
                (None, Some(_)) if !informational && self.shoal.is_some() => {
                    met_all = false;
                    "NO (failed)"
                }
                _ => "",
            };
            let real_cell = match (real, from_baseline) {
                (Some(r), true) => format!("{r:.2} s*"),
                (r, _) => secs(r),
            };
            let ratio = match (shoal, real) {
                (Some(s), Some(r)) if r > 0.0 => format!("{:.2}×", s / r),
                _ => "—".into(),
            };
            rows.push(vec![
                scenario.label(max),
                real_cell,
                secs(shoal),
                secs(floor),
                ratio,
                if informational {
                    "—".into()
                } else {
                    secs(goal)
                },
                met.into(),
            ]);
        }
        out.push_str(&table(&rows));
        let _ = writeln!(
            out,
            "\n  goal = max(0.5 × real swarm, 1.2 × floor). floor, straight on the engine: create + start with \
             {FLOOR_WORKERS} workers (scale up: the {} extra ones); scale → 0: SIGTERM to all, the {STOP_GRACE_S:.0} s \
             StopGracePeriod, then SIGKILL and wait with {FLOOR_WORKERS} workers; update: {UPDATE_PARALLELISM} workers each \
             stopping (1 s grace), removing, creating and starting a replacement, + the default \
             {MONITOR_S:.0} s Monitor for \"completed\".",
            max - 10
        );
        if any_baseline {
            let _ = writeln!(
                out,
                "  * real swarm skipped: BASELINES.md's median on this kind of machine."
            );
        }

        let _ = writeln!(out, "\nmemory (VmRSS)");
        let mut rows = vec![vec![
            "process".to_string(),
            "idle, after init".into(),
            format!("{max} tasks running"),
        ]];
        if let Some(shoal) = &self.shoal {
            rows.push(vec![
                "shoal".into(),
                mib(shoal.rss_idle_kib),
                mib(shoal.rss_max_kib),
            ]);
            rows.push(vec![
                "dockerd, shoal run (engine not in swarm mode)".into(),
                mib(shoal.dockerd_idle_kib),
                mib(shoal.dockerd_max_kib),
            ]);
        }
        if let Some(real) = &self.real {
            rows.push(vec![
                "dockerd, real swarm active".into(),
                mib(real.dockerd_idle_kib),
                mib(real.dockerd_max_kib),
            ]);
        }
        rows.push(vec![
            "dockerd, real swarm (BASELINES.md)".into(),
            format!("{BASELINE_DOCKERD_MIB:.1} MiB"),
            "741.0 MiB".into(),
        ]);
        out.push_str(&table(&rows));
        let _ = writeln!(
            out,
            "  dockerd's RSS moves with everything else the engine serves; compare within one run."
        );

        let mut problems = Vec::new();
        for (name, errors) in [
            ("real swarm", self.real.as_ref().map(|s| &s.errors)),
            ("shoal", self.shoal.as_ref().map(|s| &s.errors)),
            ("floor", self.floor.as_ref().map(|f| &f.errors)),
        ] {
            for e in errors.into_iter().flatten() {
                problems.push(format!("  {name}: {e}"));
            }
        }
        if !problems.is_empty() {
            let _ = writeln!(out, "\nproblems");
            for p in problems {
                let _ = writeln!(out, "{p}");
            }
        }
        if self.shoal.is_some() {
            let _ = writeln!(
                out,
                "\nverdict: {}",
                if met_all {
                    "every goal met"
                } else {
                    "some goals NOT met"
                }
            );
        }
        out
    }
}
