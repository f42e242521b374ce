//! `shoal-bench overlay`: the data plane across hosts, in one run on three
//! simulated hosts (`shoal::testkit::hosts`; needs root): h1 is the only
//! manager, h2 and h3 are workers. The clients are on h1.
//!
//! 1. Paths to one task, on h3 (a host the clients are not on), of a
//!    `busybox httpd` service on an overlay network, publishing a port in
//!    ingress mode. N clients each send HTTP/1.0 GETs, a new connection per
//!    request, for a fixed time, the paths taking turns in rounds (after
//!    an unmeasured second each; each round starts one path further on):
//!    - direct: the task's own overlay address, from inside a client
//!      task's container on h1 (the floor: bridge, VXLAN to h3, bridge);
//!    - the service VIP, from the same container (nftables DNAT on h1);
//!    - the published port of h1 and of h2, neither running a task, from
//!      h1's own namespace (shoal's ingress proxy there, relayed to h3's).
//!
//!    The clients are Rust, in this process: each path runs on a thread of
//!    its own that entered the network namespace (`setns`) of the client
//!    container or of h1, so its sockets are made there and its packets
//!    take exactly the path a program in that container or on that host
//!    would take. (`wget` in a loop inside the container would measure its
//!    fork and exec, not the network.) Requests/s, p50, p99, ratios to direct.
//! 2. A rolling update of a 10-replica service spread over the three hosts
//!    (parallelism 1, no delay, stop-first, stop grace 2 s, busybox:latest
//!    → busybox:v2) under a steady GET load on the published ports of all
//!    three nodes (from h1's namespace), and through the VIP from the client
//!    container: failed requests (goal 0 through the published ports),
//!    answered requests, time until the update completed. Each failure is
//!    lined up with the old tasks' stops (the manager's status timestamps)
//!    to tell on which host's stop it happened.
//! 3. The same service's tasks on h3 leaving the other nodes' backends once
//!    h3 is cut off (its link down): the time until `tasks.<service>`,
//!    resolved in the client container on h1, lists none of h3's task
//!    addresses, and until the published ports of h1 and h2 and the VIP each
//!    answer a run of consecutive requests (2 × replicas), every one within
//!    a second and from a task not on h3 (the httpd serves `/etc/hostname`,
//!    the container's short ID). A route to a task on the cut host shows
//!    as a request that hangs (ingress retries elsewhere only after its
//!    3 s connect timeout), so one such request breaks the run. The time
//!    is the start of the final run.
//!
//! Everything is removed at the end, on errors and on Ctrl-C too: the hosts
//! are torn down (processes, namespaces, links, iptables rules, cgroups,
//! files), and what is left, if anything, is listed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use shoal::testkit::hosts::{self, Host, Hosts};
use shoal::testkit::{engine_docker, shoal_bin, IMAGE, IMAGE_V2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::daemon::check_shoal_bin;
use super::stats::{grouped, percentile_us, table};

/// Published-port p50 within this factor of direct.
const GOAL_PUBLISHED_P50: f64 = 3.0;
const NETWORK: &str = "benchnet";
/// Part 1's service (one task, on h3), the client container's, part 2's.
const WEB: &str = "web";
const CLIENT: &str = "client";
const ROLL: &str = "roll";
const WEB_PORT: u16 = 8080;
const ROLL_PORT: u16 = 8081;
const TARGET_PORT: u16 = 80;
/// httpd serving /etc (so `/hostname` names the task); the shell exits on
/// SIGTERM at once, as most servers do.
const HTTPD: &str = "trap 'exit 0' TERM; httpd -f -p 80 -h /etc & wait";
const CONVERGE: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(100);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Part 3: a request slower than this went to a task that cannot answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The load keeps going this long after the update, to catch late failures.
const AFTER_UPDATE: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct OverlayArgs {
    /// Concurrent clients per path in part 1.
    #[arg(long, default_value_t = 8)]
    clients: usize,

    /// Seconds of load per path in part 1 (split over the rounds).
    #[arg(long, default_value_t = 10)]
    seconds: u64,

    /// Rounds in part 1; each round measures every path once, in turn.
    #[arg(long, default_value_t = 2)]
    rounds: usize,

    /// Replicas of the rolling update (spread over the three hosts).
    #[arg(long, default_value_t = 10)]
    replicas: usize,

    /// Steady load during the update: requests/s in all through the
    /// published ports (half as many through the VIP besides).
    #[arg(long, default_value_t = 200)]
    rate: u64,
}

// ---------------------------------------------------------------------------
// Ctrl-C: a flag every wait and client loop checks, so the run unwinds to
// the hosts' teardown instead of dying with them standing.
// ---------------------------------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Polls `probe` until it gives `Some`, for at most `timeout`.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        check_interrupt()?;
        if let Some(v) = probe()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------
// The docker CLI on the hosts
// ---------------------------------------------------------------------------

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker <args>` through `h`'s shoal, which must succeed.
fn docker_ok(h: &Host, args: &[&str]) -> Result<String> {
    let out = h.docker(args);
    if !out.status.success() {
        bail!(
            "{}: docker {}: {}",
            h.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text(&out))
}

/// `docker <args>` straight to `h`'s engine, which must succeed.
fn engine_ok(h: &Host, args: &[&str]) -> Result<String> {
    let out = h.engine_docker(args);
    if !out.status.success() {
        bail!(
            "{}: docker {} on its engine: {}",
            h.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text(&out))
}

/// Running containers of `service` on `h`'s engine (full IDs).
fn containers_on(h: &Host, service: &str) -> Vec<String> {
    let filter = format!("label=com.docker.swarm.service.name={service}");
    let out = h.engine_docker(&["ps", "-q", "--no-trunc", "--filter", &filter]);
    text(&out).lines().map(str::to_string).collect()
}

/// A container's address (its only network: the overlay's bridge).
fn container_ip(h: &Host, container: &str) -> Result<Ipv4Addr> {
    let out = engine_ok(
        h,
        &[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            container,
        ],
    )?;
    out.split_whitespace()
        .find_map(|ip| ip.parse().ok())
        .with_context(|| format!("{}: container {container} has no address", h.name))
}

/// The addresses `name` resolves to in container `c` on `h` (the engine's
/// DNS, which forwards swarm names to shoal's).
fn resolve(h: &Host, c: &str, name: &str) -> BTreeSet<Ipv4Addr> {
    let out = h.engine_docker(&["exec", c, "nslookup", name, "127.0.0.11"]);
    text(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("Address: "))
        .filter_map(|a| a.split_whitespace().next()?.parse().ok())
        .filter(|ip: &Ipv4Addr| ip.octets()[..2] == [10, 0])
        .collect()
}

/// The network namespace of container `c` on `h`.
fn container_netns(h: &Host, c: &str) -> Result<PathBuf> {
    let pid = engine_ok(h, &["inspect", "--format", "{{.State.Pid}}", c])?;
    let pid: u32 = pid
        .parse()
        .with_context(|| format!("pid of {c}: {pid:?}"))?;
    Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
}

fn wait_running(h: &Host, service: &str, want: usize) -> Result<()> {
    let line = format!("{service} {want}/{want}");
    wait_for(
        &format!("{want} tasks of {service} running"),
        CONVERGE,
        || {
            let out = h.docker(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]);
            Ok(text(&out).lines().any(|l| l == line).then_some(()))
        },
    )
}

// ---------------------------------------------------------------------------
// Clients in a network namespace
// ---------------------------------------------------------------------------

/// Runs `make()`'s future on a new thread that first enters the network
/// namespace bound at `ns` (every socket it makes is made there), on a
/// single-threaded runtime of its own.
fn spawn_in<T, F, Fut>(ns: PathBuf, make: F) -> thread::JoinHandle<Result<T>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    thread::spawn(move || {
        let file = File::open(&ns).with_context(|| format!("opening {}", ns.display()))?;
        // SAFETY: setns on an open namespace file; it changes only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("entering {}", ns.display()));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(runtime.block_on(make()))
    })
}

fn join<T>(handle: thread::JoinHandle<Result<T>>) -> Result<T> {
    handle
        .join()
        .map_err(|_| anyhow!("a client thread panicked"))?
}

fn run_in<T, F, Fut>(ns: &Path, make: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    join(spawn_in(ns.to_path_buf(), make))
}

/// One `GET /hostname` over HTTP/1.0 on a new connection; the body (the
/// answering task's hostname) on a 200.
async fn get(addr: SocketAddr, timeout: Duration) -> Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.context("connect")?;
        stream
            .write_all(b"GET /hostname HTTP/1.0\r\nHost: bench\r\n\r\n")
            .await
            .context("write")?;
        let mut answer = Vec::with_capacity(512);
        stream.read_to_end(&mut answer).await.context("read")?;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        if !(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")) {
            bail!("answer {:?}", head.chars().take(40).collect::<String>());
        }
        Ok(body.trim().to_string())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .context("timed out")?
}

/// The requests of one measured path.
#[derive(Default)]
struct Sample {
    latencies: Vec<Duration>,
    failed: usize,
    failed_at: BTreeMap<SocketAddr, usize>,
    /// When the first failures happened (wall clock, to line them up with
    /// task stops).
    failed_when: Vec<SystemTime>,
    /// The first few failures, for the report.
    reasons: Vec<String>,
    elapsed: Duration,
}

impl Sample {
    fn fail(&mut self, addr: SocketAddr, why: &anyhow::Error) {
        self.failed += 1;
        *self.failed_at.entry(addr).or_default() += 1;
        if self.failed_when.len() < 100 {
            self.failed_when.push(SystemTime::now());
        }
        if self.reasons.len() < 5 {
            self.reasons.push(format!("{addr}: {why:#}"));
        }
    }

    fn absorb(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.failed += other.failed;
        for (addr, n) in other.failed_at {
            *self.failed_at.entry(addr).or_default() += n;
        }
        self.failed_when.extend(other.failed_when);
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

/// How long a load runs.
#[derive(Clone)]
enum Until {
    Time(Instant),
    Flag(Arc<AtomicBool>),
}

impl Until {
    fn reached(&self) -> bool {
        interrupted()
            || match self {
                Until::Time(t) => Instant::now() >= *t,
                Until::Flag(f) => f.load(Ordering::SeqCst),
            }
    }
}

/// `clients` clients sending back to back (or one request per `pace` each)
/// until `until`, each going round `targets` from its own starting point.
async fn load(
    targets: Vec<SocketAddr>,
    clients: usize,
    until: Until,
    pace: Option<Duration>,
) -> Sample {
    let start = Instant::now();
    let targets = Arc::new(targets);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..clients {
        let (targets, until) = (targets.clone(), until.clone());
        set.spawn(async move {
            let mut mine = Sample::default();
            let mut ticker = pace.map(|p| {
                let mut t = tokio::time::interval(p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            let mut next = i;
            while !until.reached() {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let addr = targets[next % targets.len()];
                next += 1;
                let begun = Instant::now();
                match get(addr, REQUEST_TIMEOUT).await {
                    Ok(_) => mine.latencies.push(begun.elapsed()),
                    Err(e) => mine.fail(addr, &e),
                }
            }
            mine
        });
    }
    let mut total = Sample::default();
    while let Some(done) = set.join_next().await {
        if let Ok(sample) = done {
            total.absorb(sample);
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// Until `addr` answers a GET from namespace `ns`.
fn wait_answering(ns: &Path, addr: SocketAddr) -> Result<()> {
    let answered = run_in(ns, move || async move {
        let deadline = Instant::now() + CONVERGE;
        while !interrupted() && Instant::now() < deadline {
            if get(addr, Duration::from_secs(2)).await.is_ok() {
                return true;
            }
            tokio::time::sleep(POLL).await;
        }
        false
    })?;
    check_interrupt()?;
    if !answered {
        bail!(
            "{addr} does not answer from {} after {CONVERGE:?}",
            ns.display()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

pub async fn run(args: OverlayArgs) -> Result<()> {
    if let Some(why) = hosts::unavailable() {
        bail!("simulated hosts cannot run here: {why}");
    }
    if args.clients == 0 || args.rounds == 0 || args.replicas < 3 {
        bail!("--clients and --rounds must be at least 1, --replicas at least 3");
    }
    check_shoal_bin(&shoal_bin())?;
    let images = engine_docker(&["image", "inspect", IMAGE, IMAGE_V2]);
    if !images.status.success() {
        bail!("{IMAGE} and {IMAGE_V2} must be on the local engine; run scripts/make-test-images");
    }
    catch_signals();
    let began = Instant::now();
    // From here on, the hosts are torn down when `hosts` drops: at the end,
    // on an error, on a panic in the kit (unwinding) and after Ctrl-C.
    let hosts = Hosts::start(3);
    eprintln!("3 hosts ready in {:.1?}", began.elapsed());
    let footprint = hosts.footprint();
    let result = measure(&hosts, &args);
    if result.is_err() && !interrupted() {
        hosts.dump_logs();
    }
    drop(hosts);
    let left = footprint.leftovers();
    if !left.is_empty() {
        eprintln!("WARNING: left on the machine:\n  {}", left.join("\n  "));
    }
    let report = result?;
    println!("{report}");
    Ok(())
}

/// The client side of part 1 and 2: the client container on h1.
struct Client {
    container: String,
    netns: PathBuf,
}

fn measure(hosts: &Hosts, args: &OverlayArgs) -> Result<String> {
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    load_v2(hosts)?;
    form_swarm(hosts)?;
    docker_ok(h1, &["network", "create", "-d", "overlay", NETWORK])?;
    let on_h1 = format!("node.hostname=={}", h1.hostname);
    docker_ok(
        h1,
        &[
            "service",
            "create",
            "--detach",
            "--quiet",
            "--name",
            CLIENT,
            "--network",
            NETWORK,
            "--constraint",
            &on_h1,
            "--stop-grace-period",
            "1s",
            IMAGE,
            "sleep",
            "1000000",
        ],
    )?;
    wait_running(h1, CLIENT, 1)?;
    let container = wait_for("the client container on h1", CONVERGE, || {
        Ok(containers_on(h1, CLIENT).into_iter().next())
    })?;
    let client = Client {
        netns: container_netns(h1, &container)?,
        container,
    };
    let mut report = paths(hosts, args, &client)?;
    report.push('\n');
    let (roll_report, vip) = rolling_update(hosts, args, &client)?;
    report.push_str(&roll_report);
    report.push('\n');
    report.push_str(&cut_off(hosts, args, &client, vip)?);
    let _ = writeln!(
        report,
        "\n  hosts: h1 {} (manager, clients), h2 {} (worker), h3 {} (worker)",
        h1.ip, h2.ip, h3.ip
    );
    Ok(report)
}

/// busybox:v2 from the local engine into every host's engine (the kit
/// loads only busybox:latest).
fn load_v2(hosts: &Hosts) -> Result<()> {
    let h1 = hosts.host(1);
    let dir = h1.dir.parent().unwrap_or(&h1.dir);
    let tar = dir.join("v2.tar");
    let tar_s = tar.to_string_lossy().into_owned();
    let out = engine_docker(&["save", "-o", &tar_s, IMAGE_V2]);
    if !out.status.success() {
        bail!(
            "docker save {IMAGE_V2}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    thread::scope(|s| {
        let loads: Vec<_> = hosts
            .iter()
            .map(|h| s.spawn(|| engine_ok(h, &["load", "-q", "-i", &tar_s])))
            .collect();
        for l in loads {
            l.join().map_err(|_| anyhow!("docker load panicked"))??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let _ = std::fs::remove_file(&tar);
    Ok(())
}

/// h1 inits; h2 and h3 join as workers; all three Ready.
fn form_swarm(hosts: &Hosts) -> Result<()> {
    let h1 = hosts.host(1);
    let ip = h1.ip.to_string();
    eprintln!("swarm: h1 manager, h2 and h3 workers");
    docker_ok(h1, &["swarm", "init", "--advertise-addr", &ip])?;
    let token = docker_ok(h1, &["swarm", "join-token", "-q", "worker"])?;
    let remote = format!("{ip}:2377");
    for h in [hosts.host(2), hosts.host(3)] {
        let own = h.ip.to_string();
        docker_ok(
            h,
            &[
                "swarm",
                "join",
                "--token",
                &token,
                "--advertise-addr",
                &own,
                &remote,
            ],
        )?;
    }
    wait_for("three nodes Ready", CONVERGE, || {
        let out = h1.docker(&["node", "ls", "--format", "{{.Status}}"]);
        let states = text(&out);
        Ok((states.lines().count() == 3 && states.lines().all(|l| l == "Ready")).then_some(()))
    })
}

fn httpd_service(
    h: &Host,
    name: &str,
    port: u16,
    replicas: usize,
    extra: &[&str],
) -> Result<String> {
    let publish = format!("mode=ingress,published={port},target={TARGET_PORT}");
    let replicas = replicas.to_string();
    let mut cmd = vec![
        "service",
        "create",
        "--detach",
        "--quiet",
        "--name",
        name,
        "--network",
        NETWORK,
        "--publish",
        &publish,
        "--replicas",
        &replicas,
        "--stop-grace-period",
        "2s",
    ];
    cmd.extend_from_slice(extra);
    cmd.extend_from_slice(&[IMAGE, "sh", "-c", HTTPD]);
    docker_ok(h, &cmd)
}

/// The service VIP as the client container resolves it.
fn vip_of(h1: &Host, client: &Client, service: &str) -> Result<Ipv4Addr> {
    wait_for(&format!("{service}'s VIP"), CONVERGE, || {
        let found = resolve(h1, &client.container, service);
        Ok((found.len() == 1)
            .then(|| found.into_iter().next())
            .flatten())
    })
}

struct Path1 {
    label: String,
    ns: PathBuf,
    addr: SocketAddr,
    sample: Sample,
}

/// Part 1: direct, VIP and published ports to one task on h3.
fn paths(hosts: &Hosts, args: &OverlayArgs, client: &Client) -> Result<String> {
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    eprintln!("part 1: one httpd task on h3, clients on h1");
    let on_h3 = format!("node.hostname=={}", h3.hostname);
    httpd_service(h1, WEB, WEB_PORT, 1, &["--constraint", &on_h3])?;
    wait_running(h1, WEB, 1)?;
    let task = wait_for("the web task on h3", CONVERGE, || {
        Ok(containers_on(h3, WEB).into_iter().next())
    })?;
    let task_ip = container_ip(h3, &task)?;
    let vip = vip_of(h1, client, WEB)?;
    let h1_ns = h1.netns();
    let mut paths = vec![
        Path1 {
            label: format!("direct: task {task_ip} on h3, from a container on h1"),
            ns: client.netns.clone(),
            addr: SocketAddr::new(IpAddr::V4(task_ip), TARGET_PORT),
            sample: Sample::default(),
        },
        Path1 {
            label: format!("VIP {vip}, from the same container"),
            ns: client.netns.clone(),
            addr: SocketAddr::new(IpAddr::V4(vip), TARGET_PORT),
            sample: Sample::default(),
        },
        Path1 {
            label: "published port of h1 (no task), from h1".to_string(),
            ns: h1_ns.clone(),
            addr: SocketAddr::new(IpAddr::V4(h1.ip), WEB_PORT),
            sample: Sample::default(),
        },
        Path1 {
            label: "published port of h2 (no task), from h1".to_string(),
            ns: h1_ns,
            addr: SocketAddr::new(IpAddr::V4(h2.ip), WEB_PORT),
            sample: Sample::default(),
        },
    ];
    for p in &paths {
        wait_answering(&p.ns, p.addr)?;
    }
    let round = Duration::from_secs_f64(args.seconds as f64 / args.rounds as f64);
    let clients = args.clients;
    // A second of each path unmeasured first; then the rounds, each
    // starting one path further on, so no path always goes first.
    let n = paths.len();
    for r in 0..=args.rounds {
        let length = if r == 0 {
            eprintln!("  warming up");
            Duration::from_secs(1)
        } else {
            eprintln!("  round {r}/{}", args.rounds);
            round
        };
        for k in 0..n {
            let p = &mut paths[(k + r) % n];
            let addr = p.addr;
            let sample = run_in(&p.ns, move || async move {
                load(
                    vec![addr],
                    clients,
                    Until::Time(Instant::now() + length),
                    None,
                )
                .await
            })?;
            check_interrupt()?;
            if r > 0 {
                p.sample.absorb(sample);
            }
        }
    }
    docker_ok(h1, &["service", "rm", WEB])?;

    let direct = (
        paths[0].sample.per_second(),
        percentile_us(&mut paths[0].sample.latencies, 0.5),
    );
    let mut rows = vec![vec![
        format!(
            "HTTP/1.0 GET to one task, {} clients, {}×{:.1} s",
            clients,
            args.rounds,
            round.as_secs_f64()
        ),
        "requests/s".to_string(),
        "p50 µs".to_string(),
        "p99 µs".to_string(),
        "failed".to_string(),
        "rps/direct".to_string(),
        "p50/direct".to_string(),
    ]];
    let mut published_ratios = Vec::new();
    let mut reasons = Vec::new();
    for (i, p) in paths.iter_mut().enumerate() {
        let rps = p.sample.per_second();
        let p50 = percentile_us(&mut p.sample.latencies, 0.5);
        let p99 = percentile_us(&mut p.sample.latencies, 0.99);
        if i >= 2 {
            published_ratios.push(p50 / direct.1);
        }
        rows.push(vec![
            p.label.clone(),
            format!("{rps:.0}"),
            format!("{p50:.0}"),
            format!("{p99:.0}"),
            p.sample.failed.to_string(),
            format!("{:.2}", rps / direct.0),
            format!("{:.2}", p50 / direct.1),
        ]);
        reasons.extend(p.sample.reasons.iter().cloned());
    }
    let mut out = String::from("1. one task on another host: direct vs VIP vs published port\n");
    out.push_str(&table(&rows));
    for r in reasons.iter().take(5) {
        let _ = writeln!(out, "  failure: {r}");
    }
    let worst = published_ratios.iter().copied().fold(0.0, f64::max);
    let met = if worst <= GOAL_PUBLISHED_P50 {
        "met"
    } else {
        "MISSED"
    };
    let _ = writeln!(
        out,
        "  published-port p50 within {GOAL_PUBLISHED_P50}× direct (worst {worst:.2}×): {met}"
    );
    Ok(out)
}

/// Part 2; also hands part 3 the rolled service's VIP.
fn rolling_update(
    hosts: &Hosts,
    args: &OverlayArgs,
    client: &Client,
) -> Result<(String, Ipv4Addr)> {
    let h1 = hosts.host(1);
    let replicas = args.replicas;
    eprintln!("part 2: {replicas} replicas over 3 hosts, rolling update under load");
    httpd_service(
        h1,
        ROLL,
        ROLL_PORT,
        replicas,
        &["--update-parallelism", "1", "--update-delay", "0s"],
    )?;
    wait_running(h1, ROLL, replicas)?;
    let spread: Vec<usize> = hosts.iter().map(|h| containers_on(h, ROLL).len()).collect();
    eprintln!("  tasks per host: {spread:?}");
    if spread.contains(&0) {
        bail!("{ROLL}'s tasks are not on every host: {spread:?}");
    }
    let vip = vip_of(h1, client, ROLL)?;
    let published: Vec<SocketAddr> = hosts
        .iter()
        .map(|h| SocketAddr::new(IpAddr::V4(h.ip), ROLL_PORT))
        .collect();
    for addr in &published {
        wait_answering(&h1.netns(), *addr)?;
    }
    let vip_addr = SocketAddr::new(IpAddr::V4(vip), TARGET_PORT);
    wait_answering(&client.netns, vip_addr)?;

    let clients = 6usize;
    let pace = Duration::from_secs_f64(clients as f64 / args.rate.max(1) as f64);
    let stop = Arc::new(AtomicBool::new(false));
    let through_ports = {
        let (targets, until) = (published.clone(), Until::Flag(stop.clone()));
        spawn_in(h1.netns(), move || {
            load(targets, clients, until, Some(pace))
        })
    };
    let through_vip = {
        let until = Until::Flag(stop.clone());
        spawn_in(client.netns.clone(), move || {
            load(vec![vip_addr], clients / 2, until, Some(pace))
        })
    };
    thread::sleep(Duration::from_secs(1));
    eprintln!("  busybox:latest → busybox:v2");
    let started = Instant::now();
    let update = docker_ok(
        h1,
        &["service", "update", "--detach", "--image", IMAGE_V2, ROLL],
    )
    .and_then(|_| {
        wait_for("the update to complete", CONVERGE, || {
            let state = text(&h1.docker(&[
                "service",
                "inspect",
                "--format",
                "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
                ROLL,
            ]));
            let tasks = text(&h1.docker(&[
                "service",
                "ps",
                ROLL,
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Image}} {{.CurrentState}}",
            ]));
            let new_running = tasks
                .lines()
                .filter(|l| l.starts_with(&format!("{IMAGE_V2} Running")))
                .count();
            Ok((state == "completed"
                && new_running == replicas
                && tasks.lines().count() == replicas)
                .then(|| started.elapsed()))
        })
    });
    if update.is_ok() {
        thread::sleep(AFTER_UPDATE);
    }
    stop.store(true, Ordering::SeqCst);
    let mut ports = join(through_ports)?;
    let mut vip_sample = join(through_vip)?;
    let took = update?;
    check_interrupt()?;

    let mut rows = vec![vec![
        format!("rolling update, {replicas} replicas, parallelism 1, stop grace 2 s"),
        "published ports".to_string(),
        "VIP".to_string(),
        "goal".to_string(),
    ]];
    rows.push(vec![
        "failed requests".to_string(),
        ports.failed.to_string(),
        vip_sample.failed.to_string(),
        "0 (ports)".to_string(),
    ]);
    rows.push(vec![
        "total requests (per second)".to_string(),
        total(&ports),
        total(&vip_sample),
        String::new(),
    ]);
    rows.push(vec![
        "p99 latency during the update (µs)".to_string(),
        format!("{:.0}", percentile_us(&mut ports.latencies, 0.99)),
        format!("{:.0}", percentile_us(&mut vip_sample.latencies, 0.99)),
        String::new(),
    ]);
    rows.push(vec![
        "update → completed, all new tasks running (s)".to_string(),
        format!("{:.2}", took.as_secs_f64()),
        String::new(),
        String::new(),
    ]);
    let mut out = format!(
        "2. rolling update under load (tasks per host {spread:?}; {} req/s over the 3 nodes' published ports from h1, {} req/s through the VIP from the client container)\n",
        args.rate,
        args.rate / 2
    );
    out.push_str(&table(&rows));
    for (addr, n) in &ports.failed_at {
        let _ = writeln!(out, "  failed through {addr}: {n}");
    }
    for r in ports.reasons.iter().chain(&vip_sample.reasons) {
        let _ = writeln!(out, "  failure: {r}");
    }
    for (what, sample) in [("published ports", &ports), ("VIP", &vip_sample)] {
        if sample.failed_when.is_empty() {
            continue;
        }
        match stops_near(hosts, &sample.failed_when) {
            Ok(by_host) => {
                let _ = writeln!(
                    out,
                    "  {what}: failures by the host whose old task was stopped next (within 3 s): {by_host}"
                );
            }
            Err(e) => eprintln!("  WARNING: lining failures up with stops: {e:#}"),
        }
    }
    let met = if ports.failed == 0 { "met" } else { "MISSED" };
    let _ = writeln!(
        out,
        "  zero failed requests through the published ports: {met}"
    );
    Ok((out, vip))
}

/// For each failure, the host of the old task whose stop the manager
/// recorded first at or after it (within 3 s; the status lands after the
/// container exits, the failure between its SIGTERM and its exit), counted
/// per host: which hosts' stops the failures go with.
fn stops_near(hosts: &Hosts, failures: &[SystemTime]) -> Result<String> {
    let h1 = hosts.host(1);
    let ids = docker_ok(h1, &["service", "ps", ROLL, "-q", "--no-trunc"])?;
    let mut args = vec![
        "inspect",
        "--type",
        "task",
        "--format",
        "{{.NodeID}} {{.DesiredState}} {{.Spec.ContainerSpec.Image}} {{.Status.Timestamp.UnixNano}}",
    ];
    args.extend(ids.lines());
    let tasks = docker_ok(h1, &args)?;
    let nodes = docker_ok(h1, &["node", "ls", "--format", "{{.ID}} {{.Hostname}}"])?;
    let short = |node: &str| -> String {
        let hostname = nodes
            .lines()
            .find_map(|l| l.strip_prefix(node))
            .map(|rest| {
                rest.trim()
                    .trim_start_matches("* ")
                    .trim_end_matches(" *")
                    .to_string()
            })
            .unwrap_or_default();
        hosts
            .iter()
            .position(|h| h.hostname == hostname)
            .map_or_else(|| "?".to_string(), |i| format!("h{}", i + 1))
    };
    // (stop time in ns since the epoch, host) of every old task.
    let stops: Vec<(i128, String)> = tasks
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [node, desired, image, at] = f[..] else {
                return None;
            };
            (desired == "shutdown" && image.starts_with(IMAGE))
                .then(|| Some((at.parse().ok()?, short(node))))
                .flatten()
        })
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for failed in failures {
        let t = failed
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let host = stops
            .iter()
            .filter(|(at, _)| *at >= t && *at - t <= 3_000_000_000)
            .min_by_key(|(at, _)| *at)
            .map_or("none", |(_, h)| h.as_str());
        *counts.entry(host.to_string()).or_default() += 1;
    }
    Ok(counts
        .iter()
        .map(|(h, n)| format!("{h} ×{n}"))
        .collect::<Vec<_>>()
        .join(", "))
}

/// `4,302 (146/s)`: requests sent, and how many a second.
fn total(s: &Sample) -> String {
    let n = s.latencies.len() + s.failed;
    format!(
        "{} ({:.0}/s)",
        grouped(n as u64),
        n as f64 / s.elapsed.as_secs_f64().max(1e-9)
    )
}

/// Part 3: h3 cut off; how long until its tasks leave the names and the
/// other nodes' backends.
fn cut_off(hosts: &Hosts, args: &OverlayArgs, client: &Client, vip: Ipv4Addr) -> Result<String> {
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    let mut cut_names = BTreeSet::new();
    let mut cut_ips = BTreeSet::new();
    for c in containers_on(h3, ROLL) {
        cut_names.insert(c[..12.min(c.len())].to_string());
        cut_ips.insert(container_ip(h3, &c)?);
    }
    if cut_ips.is_empty() {
        bail!("no task of {ROLL} on h3 to cut off");
    }
    wait_for("tasks.roll listing h3's tasks", CONVERGE, || {
        let found = resolve(h1, &client.container, &format!("tasks.{ROLL}"));
        Ok(found.is_superset(&cut_ips).then_some(()))
    })?;
    eprintln!(
        "part 3: cutting h3 off ({} tasks: {:?})",
        cut_ips.len(),
        cut_ips
    );
    let streak = 2 * args.replicas;
    let cut_names = Arc::new(cut_names);
    let cut_at = Instant::now();
    h3.cut();
    let deadline = cut_at + CONVERGE;
    let ports = {
        let targets = vec![
            (
                "published port of h1".to_string(),
                SocketAddr::new(IpAddr::V4(h1.ip), ROLL_PORT),
            ),
            (
                "published port of h2".to_string(),
                SocketAddr::new(IpAddr::V4(h2.ip), ROLL_PORT),
            ),
        ];
        let cut = cut_names.clone();
        spawn_in(h1.netns(), move || {
            clean_runs(targets, cut, streak, cut_at, deadline)
        })
    };
    let through_vip = {
        let targets = vec![(
            format!("VIP {vip} from the client container"),
            SocketAddr::new(IpAddr::V4(vip), TARGET_PORT),
        )];
        let cut = cut_names.clone();
        spawn_in(client.netns.clone(), move || {
            clean_runs(targets, cut, streak, cut_at, deadline)
        })
    };
    let dns = wait_for("tasks.roll without h3's tasks", CONVERGE, || {
        let found = resolve(h1, &client.container, &format!("tasks.{ROLL}"));
        Ok((!found.is_empty() && found.is_disjoint(&cut_ips)).then(|| cut_at.elapsed()))
    });
    let mut results = join(ports)?;
    results.extend(join(through_vip)?);
    let dns = dns?;
    check_interrupt()?;

    let mut rows = vec![vec![
        "h3 cut off → its tasks gone from".to_string(),
        "seconds".to_string(),
    ]];
    rows.push(vec![
        "tasks.roll (DNS in the client container on h1)".to_string(),
        format!("{:.2}", dns.as_secs_f64()),
    ]);
    let mut all = dns;
    for (label, took) in &results {
        let took =
            took.with_context(|| format!("{label} still routes to h3 after {CONVERGE:?}"))?;
        all = all.max(took);
        rows.push(vec![label.clone(), format!("{:.2}", took.as_secs_f64())]);
    }
    rows.push(vec![
        "all of the above".to_string(),
        format!("{:.2}", all.as_secs_f64()),
    ]);
    let mut out = format!(
        "3. a cut-off host's tasks leave the other nodes ({} of {} tasks on h3; a port or VIP counts once {streak} consecutive requests are answered within {:?} by tasks not on h3)\n",
        cut_ips.len(),
        args.replicas,
        PROBE_TIMEOUT
    );
    out.push_str(&table(&rows));
    Ok(out)
}

/// For each target, a sequential prober: the time (since `cut_at`) at which
/// its last run of `streak` clean answers began (answered within
/// [`PROBE_TIMEOUT`] by a task not in `cut`); `None` when none came by
/// `deadline`.
async fn clean_runs(
    targets: Vec<(String, SocketAddr)>,
    cut: Arc<BTreeSet<String>>,
    streak: usize,
    cut_at: Instant,
    deadline: Instant,
) -> Vec<(String, Option<Duration>)> {
    let mut set = tokio::task::JoinSet::new();
    for (i, (label, addr)) in targets.into_iter().enumerate() {
        let cut = cut.clone();
        set.spawn(async move {
            let mut run = 0usize;
            let mut began = cut_at;
            while !interrupted() && Instant::now() < deadline {
                let sent = Instant::now();
                let clean = get(addr, PROBE_TIMEOUT)
                    .await
                    .is_ok_and(|host| !cut.contains(&host));
                if clean {
                    if run == 0 {
                        began = sent;
                    }
                    run += 1;
                    if run >= streak {
                        return (i, label, Some(began.saturating_duration_since(cut_at)));
                    }
                } else {
                    run = 0;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            (i, label, None)
        });
    }
    let mut found = Vec::new();
    while let Some(done) = set.join_next().await {
        if let Ok(r) = done {
            found.push(r);
        }
    }
    found.sort_by_key(|(i, _, _)| *i);
    found.into_iter().map(|(_, l, t)| (l, t)).collect()
}
