//! `shoal-bench network`: published ports (issue 9), in one run.
//!
//! 1. Through the published port vs. direct: one task of a `busybox httpd`
//!    service; N clients each send HTTP/1.0 GETs (a new connection per
//!    request, no keep-alive) for a fixed time, alternately straight to the
//!    container's own address and to `127.0.0.1:<published port>` (shoal's
//!    ingress proxy in front of the same container). Requests per second,
//!    p50 and p99 latency, and the ratios.
//! 2. A rolling update under load: the service scaled to 10 replicas, a
//!    steady GET load through the published port, then an image change
//!    rolled one task at a time (stop-first, no delay): the requests that
//!    failed (goal 0) and how long until every new task ran.
//!
//! The httpd quits at once on SIGTERM, as most servers do, so a request
//! still in flight when a task is stopped would fail.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::{encode_query, Api};
use super::daemon::{self, Shoal, TempDir};
use super::services::{swarm_init, Checker, ShoalSwarm};
use super::stats::{percentile_us, table};

const IMAGE_OLD: &str = "busybox:latest";
const IMAGE_NEW: &str = "busybox:v2";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The container port httpd listens on.
const TARGET_PORT: u16 = 80;
/// The task's StopGracePeriod.
const STOP_GRACE_NANOS: u64 = 2_000_000_000;
/// The load keeps going this long after the update, to catch late failures.
const AFTER_UPDATE: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// The shoal binary to start [default: `shoal` beside this binary,
    /// i.e. target/release/shoal; build it with `cargo build --release`].
    #[arg(long, value_name = "PATH")]
    shoal_bin: Option<PathBuf>,

    /// The engine's unix socket, fronted by shoal and asked directly for
    /// the container's address.
    #[arg(long, value_name = "PATH", default_value = "/var/run/docker.sock")]
    engine: PathBuf,

    /// Concurrent clients of the throughput comparison.
    #[arg(long, default_value_t = 8)]
    clients: usize,

    /// Seconds per measuring round (each round: direct, then published).
    #[arg(long, default_value_t = 3)]
    seconds: u64,

    /// Measuring rounds, alternating direct and published.
    #[arg(long, default_value_t = 3)]
    rounds: usize,

    /// Replicas of the rolling update.
    #[arg(long, default_value_t = 10)]
    replicas: u64,

    /// Steady load during the rolling update, requests per second in all.
    #[arg(long, default_value_t = 200)]
    rate: u64,

    /// Give up on one step after this many seconds.
    #[arg(long, default_value_t = 240)]
    timeout: u64,
}

/// One measured path's requests.
#[derive(Default)]
struct Sample {
    latencies: Vec<Duration>,
    failed: usize,
    /// The first few failures, for the report.
    reasons: Vec<String>,
    elapsed: Duration,
}

impl Sample {
    fn absorb(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.failed += other.failed;
        for r in other.reasons {
            if self.reasons.len() < 5 {
                self.reasons.push(r);
            }
        }
        self.elapsed += other.elapsed;
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub async fn run(args: NetworkArgs) -> Result<()> {
    let bin = args
        .shoal_bin
        .clone()
        .unwrap_or_else(daemon::default_shoal_bin);
    daemon::check_shoal_bin(&bin)?;
    let mut probe = Api::new(&args.engine);
    for image in [IMAGE_OLD, IMAGE_NEW] {
        let (status, _) = probe
            .call(Method::GET, &format!("/v1.41/images/{image}/json"), None)
            .await?;
        if status != StatusCode::OK {
            bail!("image {image} is not on the engine ({status}); run scripts/make-test-images");
        }
    }
    let dir = TempDir::new("shoal-bench-network")?;
    let mut shoal = Shoal::start(&bin, dir.path(), &args.engine)?;
    shoal.wait_ready(READY_TIMEOUT).await?;
    let mut swarm = ShoalSwarm {
        shoal,
        engine: args.engine.clone(),
        node_id: None,
        left: false,
    };
    let mut api = Api::new(swarm.shoal.socket());
    let (node, _) = swarm_init(&mut api).await?;
    swarm.node_id = Some(node);
    let result = measure_all(&args, &mut api).await;
    if let Err(e) = swarm.leave() {
        eprintln!("  WARNING: leaving shoal's swarm: {e:#}");
    }
    drop(swarm);
    drop(dir);
    print!("{}", result?);
    Ok(())
}

/// Both parts on a fresh service; the printed report.
async fn measure_all(args: &NetworkArgs, api: &mut Api) -> Result<String> {
    let mut engine = Api::new(&args.engine);
    let mut check = Checker {
        api,
        engine: &mut engine,
        timeout: Duration::from_secs(args.timeout),
    };
    let port = free_port()?;
    let name = format!("bench-net-{}", std::process::id());
    eprintln!("== service {name}, published port {port}");
    let (id, _) = check.create_from(&service_body(&name, port, 1), 1).await?;
    let outcome = async {
        let direct_ip = task_address(&mut check, &args.engine, &id).await?;
        let published = SocketAddr::from(([127, 0, 0, 1], port));
        let direct = SocketAddr::new(direct_ip, TARGET_PORT);
        wait_answering(published).await?;
        let mut report = compare(args, direct, published).await;
        report.push('\n');
        report.push_str(&rolling_update(args, &mut check, &id, published).await?);
        Ok::<_, anyhow::Error>(report)
    }
    .await;
    if let Err(e) = check.remove(&id).await {
        eprintln!("  WARNING: removing {name}: {e:#}");
    }
    outcome
}

fn service_body(name: &str, port: u16, replicas: u64) -> Value {
    json!({
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": IMAGE_OLD,
                "Command": ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 80 -h /etc & wait"],
                "StopGracePeriod": STOP_GRACE_NANOS
            },
            "RestartPolicy": {"Condition": "any"}
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        "EndpointSpec": {"Ports": [{
            "Protocol": "tcp",
            "TargetPort": TARGET_PORT,
            "PublishedPort": port,
            "PublishMode": "ingress"
        }]}
    })
}

/// A port nobody listens on now.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The running task's container address, asked of the engine.
async fn task_address(check: &mut Checker<'_>, engine: &Path, service: &str) -> Result<IpAddr> {
    let path = format!(
        "/v1.41/tasks?filters={}",
        encode_query(
            &json!({ "service": { service: true }, "desired-state": {"running": true} })
                .to_string()
        )
    );
    let tasks = check
        .api
        .expect(StatusCode::OK, Method::GET, &path, None)
        .await?;
    let container = tasks
        .as_array()
        .and_then(|t| t.first())
        .and_then(|t| t["Status"]["ContainerStatus"]["ContainerID"].as_str())
        .context("the task has no container")?
        .to_string();
    let mut engine = Api::new(engine);
    let inspect = engine
        .expect(
            StatusCode::OK,
            Method::GET,
            &format!("/v1.41/containers/{container}/json"),
            None,
        )
        .await?;
    inspect["NetworkSettings"]["Networks"]
        .as_object()
        .into_iter()
        .flat_map(|n| n.values())
        .filter_map(|n| n["IPAddress"].as_str())
        .find_map(|ip| ip.parse().ok())
        .context("the container has no address")
}

async fn wait_answering(addr: SocketAddr) -> Result<()> {
    let start = Instant::now();
    loop {
        if get(addr).await.is_ok() {
            return Ok(());
        }
        if start.elapsed() > READY_TIMEOUT {
            bail!("{addr} does not answer after {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One `GET /hostname` over HTTP/1.0 on a new connection; `Ok` on a 200.
async fn get(addr: SocketAddr) -> Result<()> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.context("connect")?;
        stream
            .write_all(b"GET /hostname HTTP/1.0\r\nHost: bench\r\n\r\n")
            .await
            .context("write")?;
        let mut answer = Vec::with_capacity(512);
        stream.read_to_end(&mut answer).await.context("read")?;
        if !(answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200")) {
            bail!(
                "answer {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(40)])
            );
        }
        Ok(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .context("timed out")?
}

/// `clients` clients sending back to back until `until`, or until `stop`
/// when given, at most one request per `pace` each.
async fn load(
    addr: SocketAddr,
    clients: usize,
    until: Option<Instant>,
    stop: Arc<AtomicBool>,
    pace: Option<Duration>,
) -> Sample {
    let start = Instant::now();
    let shared = Arc::new(Mutex::new(Sample::default()));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (shared, stop) = (shared.clone(), stop.clone());
        set.spawn(async move {
            let mut mine = Sample::default();
            let mut ticker = pace.map(tokio::time::interval);
            loop {
                if stop.load(Ordering::Relaxed) || until.is_some_and(|u| Instant::now() >= u) {
                    break;
                }
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let begun = Instant::now();
                match get(addr).await {
                    Ok(()) => mine.latencies.push(begun.elapsed()),
                    Err(e) => {
                        mine.failed += 1;
                        if mine.reasons.len() < 5 {
                            mine.reasons.push(format!("{e:#}"));
                        }
                    }
                }
            }
            if let Ok(mut all) = shared.lock() {
                all.absorb(mine);
            }
        });
    }
    while set.join_next().await.is_some() {}
    let mut total = std::mem::take(&mut *shared.lock().unwrap_or_else(|e| e.into_inner()));
    total.elapsed = start.elapsed();
    total
}

/// Part 1: rounds alternating direct and published; the table.
async fn compare(args: &NetworkArgs, direct: SocketAddr, published: SocketAddr) -> String {
    let round = Duration::from_secs(args.seconds);
    let (mut via_direct, mut via_published) = (Sample::default(), Sample::default());
    let never = Arc::new(AtomicBool::new(false));
    let timed = |addr| {
        load(
            addr,
            args.clients,
            Some(Instant::now() + round),
            never.clone(),
            None,
        )
    };
    for r in 0..args.rounds {
        eprintln!("  round {}/{}", r + 1, args.rounds);
        via_direct.absorb(timed(direct).await);
        via_published.absorb(timed(published).await);
    }
    let rps = (via_direct.per_second(), via_published.per_second());
    let p50 = (
        percentile_us(&mut via_direct.latencies, 0.5),
        percentile_us(&mut via_published.latencies, 0.5),
    );
    let p99 = (
        percentile_us(&mut via_direct.latencies, 0.99),
        percentile_us(&mut via_published.latencies, 0.99),
    );
    let mut rows = vec![vec![
        format!(
            "HTTP/1.0 GET, {} clients, {}×{} s",
            args.clients, args.rounds, args.seconds
        ),
        "direct".to_string(),
        "published".to_string(),
        "published/direct".to_string(),
    ]];
    rows.push(vec![
        "requests/s".to_string(),
        format!("{:.0}", rps.0),
        format!("{:.0}", rps.1),
        format!("{:.2}", rps.1 / rps.0),
    ]);
    rows.push(vec![
        "p50 latency (µs)".to_string(),
        format!("{:.0}", p50.0),
        format!("{:.0}", p50.1),
        format!("{:.2}", p50.1 / p50.0),
    ]);
    rows.push(vec![
        "p99 latency (µs)".to_string(),
        format!("{:.0}", p99.0),
        format!("{:.0}", p99.1),
        format!("{:.2}", p99.1 / p99.0),
    ]);
    rows.push(vec![
        "failed requests".to_string(),
        via_direct.failed.to_string(),
        via_published.failed.to_string(),
        String::new(),
    ]);
    let mut out =
        format!("published port ({published}) vs. the container's own address ({direct})\n");
    out.push_str(&table(&rows));
    for r in via_direct.reasons.iter().chain(&via_published.reasons) {
        out.push_str(&format!("  failure: {r}\n"));
    }
    out
}

/// Part 2: scale up, steady load, image change rolled one at a time.
async fn rolling_update(
    args: &NetworkArgs,
    check: &mut Checker<'_>,
    id: &str,
    published: SocketAddr,
) -> Result<String> {
    let replicas = args.replicas;
    eprintln!("  scaling to {replicas}");
    check.scale(id, replicas).await?;
    let clients = 4usize;
    let pace = Duration::from_secs_f64(clients as f64 / args.rate.max(1) as f64);
    let stop = Arc::new(AtomicBool::new(false));
    let loading = tokio::spawn(load(published, clients, None, stop.clone(), Some(pace)));
    // A moment of load before the update starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("  rolling update of {replicas} tasks under load");
    let update = async {
        let start = check
            .update(id, |spec| {
                spec["TaskTemplate"]["ContainerSpec"]["Image"] = json!(IMAGE_NEW);
                spec["UpdateConfig"] = json!({"Parallelism": 1, "Delay": 0, "Order": "stop-first"});
            })
            .await?;
        check
            .wait_running(id, replicas, Some(IMAGE_NEW), start)
            .await?;
        Ok::<_, anyhow::Error>(start.elapsed())
    }
    .await;
    tokio::time::sleep(AFTER_UPDATE).await;
    stop.store(true, Ordering::Relaxed);
    let mut sample = loading.await.context("the load task")?;
    let took = update?;
    let mut rows = vec![vec![
        format!("rolling update, {replicas} replicas, parallelism 1, under load"),
        "figure".to_string(),
        "goal".to_string(),
    ]];
    rows.push(vec![
        "failed requests".to_string(),
        sample.failed.to_string(),
        "0".to_string(),
    ]);
    rows.push(vec![
        "answered requests".to_string(),
        sample.latencies.len().to_string(),
        String::new(),
    ]);
    rows.push(vec![
        "p99 latency during the update (µs)".to_string(),
        format!("{:.0}", percentile_us(&mut sample.latencies, 0.99)),
        String::new(),
    ]);
    rows.push(vec![
        "update until every new task runs (s)".to_string(),
        format!("{:.2}", took.as_secs_f64()),
        String::new(),
    ]);
    let verdict = if sample.failed == 0 { "met" } else { "MISSED" };
    let mut out = table(&rows);
    for r in &sample.reasons {
        out.push_str(&format!("  failure: {r}\n"));
    }
    out.push_str(&format!("  zero failed requests: {verdict}\n"));
    Ok(out)
}
