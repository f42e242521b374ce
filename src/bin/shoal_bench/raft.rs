//! `shoal-bench raft`: the raft store and its durable storage (issue 4),
//! black-box through the API of a fresh shoal after `swarm init`.
//!
//! Every `POST /configs/create` (or `/secrets/create`) is one raft entry,
//! answered only once the entry is committed, flushed and applied, so:
//! - committed durable writes/s and p50/p99 commit latency, single (one
//!   client, sequential) and batched (many concurrent clients);
//! - shoal's RSS with 10,000 stored objects;
//! - restart time with a ≥ 100,000-entry log: SIGKILL, then the time from
//!   spawning shoal on the same data dir until `GET /v1.41/swarm` answers
//!   200; every acknowledged object must be there afterwards.
//!
//! Goals: ≥ 10,000 committed writes/s batched, restart < 1 s, RSS ≤ 50 MiB.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use hyper::{Method, StatusCode};
use serde_json::json;

use super::client::{message, Api};
use super::daemon::{self, Shoal, TempDir};
use super::stats::{grouped, percentile_us, table};

const GOAL_BATCHED_WRITES_S: f64 = 10_000.0;
const GOAL_RESTART_S: f64 = 1.0;
const GOAL_RSS_MIB: f64 = 50.0;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const RESTART_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Configs,
    Secrets,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Configs => "configs",
            Kind::Secrets => "secrets",
        }
    }
}

#[derive(Debug, Args)]
pub struct RaftArgs {
    /// The shoal binary to start [default: `shoal` beside this binary,
    /// i.e. target/release/shoal; build it with `cargo build --release`].
    #[arg(long, value_name = "PATH")]
    shoal_bin: Option<PathBuf>,

    /// The engine shoal fronts (untouched here but for shoal's start-up).
    #[arg(long, value_name = "PATH", default_value = "/var/run/docker.sock")]
    engine: PathBuf,

    /// Writes measured batched; a fifth of it (at least 200) single.
    #[arg(long, default_value_t = 10_000)]
    writes: u64,

    /// Concurrent clients of the batched measurement.
    #[arg(long, default_value_t = 64)]
    clients: usize,

    /// Objects stored when RSS is read.
    #[arg(long, default_value_t = 10_000)]
    objects: u64,

    /// Committed writes (transactions) in the log before the kill and
    /// restart, counting every write of the run; made up with create +
    /// delete pairs so the store stays at `--objects`. (With group commit,
    /// several writes may share one raft entry; the raft index is printed.)
    #[arg(long, default_value_t = 100_000)]
    log_writes: u64,

    /// Concurrent clients filling the log.
    #[arg(long, default_value_t = 256)]
    fill_clients: usize,

    /// Stop filling the log after this many seconds (the restart is then
    /// measured on a shorter log, and said so).
    #[arg(long, default_value_t = 180)]
    fill_budget: u64,

    /// What to write: configs or secrets (secrets are encrypted at rest).
    #[arg(long, value_enum, default_value_t = Kind::Configs)]
    kind: Kind,
}

/// One measured load: writes, wall time, latency samples, the IDs of the
/// objects it created and left.
pub struct Load {
    pub writes: u64,
    pub took: Duration,
    pub latencies: Vec<Duration>,
    pub ids: Vec<String>,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.writes as f64 / self.took.as_secs_f64()
    }
}

pub async fn run(args: RaftArgs) -> Result<()> {
    if args.writes == 0 || args.clients == 0 {
        bail!("--writes and --clients must be at least 1");
    }
    let bin = args
        .shoal_bin
        .clone()
        .unwrap_or_else(daemon::default_shoal_bin);
    daemon::check_shoal_bin(&bin)?;
    let dir = TempDir::new("shoal-bench-raft")?;
    let mut shoal = Shoal::start(&bin, dir.path(), &args.engine)?;
    shoal.wait_ready(READY_TIMEOUT).await?;
    let socket = shoal.socket().to_path_buf();
    let mut api = Api::new(&socket);
    let init = json!({"ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "127.0.0.1"});
    api.expect(
        StatusCode::OK,
        Method::POST,
        "/v1.41/swarm/init",
        Some(&init),
    )
    .await
    .context("swarm init on shoal")?;
    let rss_after_init = shoal.status_kib("VmRSS")?;
    let kind = args.kind;
    let counter = Arc::new(AtomicU64::new(0));

    let single_writes = (args.writes / 5).max(200);
    eprintln!("single: {single_writes} sequential writes");
    let single = load(&socket, kind, &counter, single_writes, 1, false).await?;
    eprintln!("  {:.0} writes/s", single.rate());
    eprintln!("batched: {} writes, {} clients", args.writes, args.clients);
    let cpu_before = (cpu_secs(shoal.pid()), cpu_secs(std::process::id()));
    let batched = load(&socket, kind, &counter, args.writes, args.clients, false).await?;
    let batched_cpu = match (
        cpu_before,
        (cpu_secs(shoal.pid()), cpu_secs(std::process::id())),
    ) {
        ((Some(s0), Some(c0)), (Some(s1), Some(c1))) => Some((s1 - s0, c1 - c0)),
        _ => None,
    };
    eprintln!("  {:.0} writes/s", batched.rate());

    let mut writes = single.writes + batched.writes;
    let mut ids: Vec<String> = single.ids.iter().chain(&batched.ids).cloned().collect();
    let stored_target = usize::try_from(args.objects).context("--objects")?;
    if ids.len() < stored_target {
        let more = (stored_target - ids.len()) as u64;
        eprintln!("storing {more} more objects");
        let topped = load(&socket, kind, &counter, more, args.clients, false).await?;
        writes += topped.writes;
        ids.extend(topped.ids);
    } else if ids.len() > stored_target {
        let excess = ids.split_off(stored_target);
        eprintln!("removing {} objects to leave {stored_target}", excess.len());
        writes += delete_all(&socket, kind, excess, args.clients).await?;
    }
    let stored = ids.len() as u64;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_objects = shoal.status_kib("VmRSS")?;
    let listed = count_objects(&mut api, kind).await?;
    if listed != stored {
        bail!(
            "{stored} objects acknowledged but GET /{} lists {listed}",
            kind.path()
        );
    }

    let mut filler = 0u64;
    let fill_start = Instant::now();
    let budget = Duration::from_secs(args.fill_budget);
    let pairs_counter = Arc::new(AtomicU64::new(0));
    // In chunks, so the budget is checked now and then.
    while writes + filler < args.log_writes && fill_start.elapsed() < budget {
        let pairs = (args.log_writes - writes - filler).div_ceil(2).min(10_000);
        let fill = load(
            &socket,
            kind,
            &pairs_counter,
            pairs,
            args.fill_clients,
            true,
        )
        .await?;
        filler += fill.writes * 2;
        eprintln!(
            "log: {} writes so far ({:.0} writes/s filling)",
            writes + filler,
            filler as f64 / fill_start.elapsed().as_secs_f64()
        );
    }
    writes += filler;
    let index = log_index(&mut api, kind).await?;
    let fill_rate = if filler > 0 {
        Some(filler as f64 / fill_start.elapsed().as_secs_f64())
    } else {
        None
    };
    let rss_before_kill = shoal.status_kib("VmRSS")?;
    let peak_before_kill = shoal.status_kib("VmHWM")?;
    drop(api);

    eprintln!("SIGKILL after {writes} writes, raft index {index}; restarting on the same data dir");
    shoal.kill()?;
    let spawned = Instant::now();
    let mut restarted = Shoal::start(&bin, dir.path(), &args.engine)?;
    let restart = wait_swarm(&mut restarted, spawned).await?;
    eprintln!(
        "  GET /v1.41/swarm 200 after {:.0} ms",
        restart.as_secs_f64() * 1e3
    );
    let mut api = Api::new(restarted.socket());
    let after = count_objects(&mut api, kind).await?;
    let index_after = log_index(&mut api, kind).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_restarted = restarted.status_kib("VmRSS")?;
    let disk = dir_size(&dir.path().join("data"));
    drop(api);
    restarted.stop()?;

    let report = Report {
        args: &args,
        rss_after_init,
        single,
        batched,
        batched_cpu,
        stored,
        rss_objects,
        index,
        writes,
        filler,
        fill_rate,
        rss_before_kill,
        peak_before_kill,
        restart,
        after,
        index_after,
        rss_restarted,
        disk,
    };
    print!("{}", report.render());
    Ok(())
}

fn create_body(name: &str) -> serde_json::Value {
    // "shoal" in base64: small data, as the goal is about commits.
    json!({"Name": name, "Data": "c2hvYWw=", "Labels": {"bench": "raft"}})
}

/// `total` writes by `clients` concurrent clients, each on its own
/// keep-alive connection; with `pairs`, each write is a create followed by
/// a delete of the same object (two raft entries, one latency sample each).
pub async fn load(
    socket: &Path,
    kind: Kind,
    counter: &Arc<AtomicU64>,
    total: u64,
    clients: usize,
    pairs: bool,
) -> Result<Load> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..clients.min(usize::try_from(total).unwrap_or(usize::MAX)) {
        let (socket, counter, next) = (socket.to_path_buf(), counter.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let mut api = Api::new(&socket);
            let mut latencies = Vec::new();
            let mut ids = Vec::new();
            let create = format!("/v1.41/{}/create", kind.path());
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let name = if pairs {
                    format!("bench-fill-{n}")
                } else {
                    format!("bench-{n}")
                };
                let body = create_body(&name);
                let sent = Instant::now();
                let created = api
                    .expect(StatusCode::CREATED, Method::POST, &create, Some(&body))
                    .await?;
                latencies.push(sent.elapsed());
                let id = created["ID"]
                    .as_str()
                    .with_context(|| format!("create answered {created}"))?;
                if !pairs {
                    ids.push(id.to_string());
                } else {
                    let path = format!("/v1.41/{}/{id}", kind.path());
                    let sent = Instant::now();
                    let (status, body) = api.call(Method::DELETE, &path, None).await?;
                    if !status.is_success() {
                        bail!("DELETE {path}: {status}: {}", message(&body));
                    }
                    latencies.push(sent.elapsed());
                }
            }
            anyhow::Ok((latencies, ids))
        }));
    }
    let mut latencies = Vec::new();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.context("client task")??);
    }
    let mut ids = Vec::new();
    for (samples, created) in results {
        latencies.extend(samples);
        ids.extend(created);
    }
    Ok(Load {
        writes: total,
        took: start.elapsed(),
        latencies,
        ids,
    })
}

/// Deletes `ids` with `clients` concurrent clients; the number of writes.
async fn delete_all(socket: &Path, kind: Kind, ids: Vec<String>, clients: usize) -> Result<u64> {
    let count = ids.len() as u64;
    let queue = Arc::new(std::sync::Mutex::new(ids));
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (socket, queue) = (socket.to_path_buf(), queue.clone());
        handles.push(tokio::spawn(async move {
            let mut api = Api::new(&socket);
            loop {
                let next = queue
                    .lock()
                    .map_err(|_| anyhow::anyhow!("queue poisoned"))?
                    .pop();
                let Some(id) = next else { break };
                let path = format!("/v1.41/{}/{id}", kind.path());
                let (status, body) = api.call(Method::DELETE, &path, None).await?;
                if !status.is_success() {
                    bail!("DELETE {path}: {status}: {}", message(&body));
                }
            }
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await.context("client task")??;
    }
    Ok(count)
}

async fn count_objects(api: &mut Api, kind: Kind) -> Result<u64> {
    let list = api
        .expect(
            StatusCode::OK,
            Method::GET,
            &format!("/v1.41/{}", kind.path()),
            None,
        )
        .await?;
    Ok(list.as_array().map_or(0, Vec::len) as u64)
}

/// The store's raft index: `Version.Index` of a fresh object (which is the
/// index of the entry that created it), then that object removed.
async fn log_index(api: &mut Api, kind: Kind) -> Result<u64> {
    let name = format!("bench-index-probe-{}", std::process::id());
    let created = api
        .expect(
            StatusCode::CREATED,
            Method::POST,
            &format!("/v1.41/{}/create", kind.path()),
            Some(&create_body(&name)),
        )
        .await?;
    let id = created["ID"]
        .as_str()
        .with_context(|| format!("create answered {created}"))?
        .to_string();
    let path = format!("/v1.41/{}/{id}", kind.path());
    let object = api.expect(StatusCode::OK, Method::GET, &path, None).await?;
    let index = object["Version"]["Index"]
        .as_u64()
        .with_context(|| format!("no Version.Index in {object}"))?;
    let (status, body) = api.call(Method::DELETE, &path, None).await?;
    if !status.is_success() {
        bail!("DELETE {path}: {status}: {}", message(&body));
    }
    Ok(index)
}

/// Polls `GET /v1.41/swarm` every millisecond until 200; the time since
/// `spawned`.
async fn wait_swarm(shoal: &mut Shoal, spawned: Instant) -> Result<Duration> {
    let socket = shoal.socket().to_path_buf();
    let mut last: String;
    loop {
        if let Some(status) = shoal.exited()? {
            bail!(
                "shoal exited on restart ({status}); its log:\n{}",
                shoal.log_tail()
            );
        }
        let mut api = Api::new(&socket);
        match api.call(Method::GET, "/v1.41/swarm", None).await {
            Ok((StatusCode::OK, _)) => return Ok(spawned.elapsed()),
            Ok((status, body)) => last = format!("{status}: {}", message(&body)),
            Err(e) => last = format!("{e:#}"),
        }
        if spawned.elapsed() > RESTART_TIMEOUT {
            bail!(
                "GET /v1.41/swarm not 200 within {RESTART_TIMEOUT:?} of the restart (last: {last}); log:\n{}",
                shoal.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// User + system CPU seconds of a process (/proc/<pid>/stat, 100 Hz ticks).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, the 12th and 13th after it.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some((utime + stime) / hz)
}

fn dir_size(path: &Path) -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path).ok()?.flatten() {
        let meta = entry.metadata().ok()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Some(total)
}

struct Report<'a> {
    args: &'a RaftArgs,
    rss_after_init: u64,
    single: Load,
    batched: Load,
    /// CPU seconds (shoal, this client) spent during the batched load.
    batched_cpu: Option<(f64, f64)>,
    stored: u64,
    rss_objects: u64,
    index: u64,
    /// Every committed write of the run before the kill.
    writes: u64,
    filler: u64,
    fill_rate: Option<f64>,
    rss_before_kill: u64,
    peak_before_kill: u64,
    restart: Duration,
    after: u64,
    index_after: u64,
    rss_restarted: u64,
    disk: Option<u64>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

impl Report<'_> {
    fn render(mut self) -> String {
        let mut out = String::new();
        let kind = self.args.kind.path();
        let _ = writeln!(
            out,
            "\nshoal-bench raft: POST /{kind}/create through a fresh shoal after swarm init \
             (answered only after commit + flush + apply)\n"
        );
        let mut rows = vec![vec![
            "load".to_string(),
            "writes".into(),
            "time".into(),
            "writes/s".into(),
            "p50".into(),
            "p99".into(),
        ]];
        let clients = self.args.clients;
        for (name, load) in [
            (
                "single (1 client, sequential)".to_string(),
                &mut self.single,
            ),
            (format!("batched ({clients} clients)"), &mut self.batched),
        ] {
            let p50 = percentile_us(&mut load.latencies, 0.5);
            let p99 = percentile_us(&mut load.latencies, 0.99);
            rows.push(vec![
                name,
                grouped(load.writes),
                format!("{:.2} s", load.took.as_secs_f64()),
                grouped(load.rate().round() as u64),
                format!("{:.2} ms", p50 / 1e3),
                format!("{:.2} ms", p99 / 1e3),
            ]);
        }
        out.push_str(&table(&rows));
        if let Some((shoal, client)) = self.batched_cpu {
            let wall = self.batched.took.as_secs_f64();
            let _ = writeln!(
                out,
                "  CPU during the batched load: shoal {shoal:.2} s ({:.0}% of one core), this client {client:.2} s ({:.0}%)",
                100.0 * shoal / wall,
                100.0 * client / wall
            );
        }
        if let Some(rate) = self.fill_rate {
            let _ = writeln!(
                out,
                "  log filler: {} writes (create + delete pairs, {} clients) at {} writes/s",
                grouped(self.filler),
                self.args.fill_clients,
                grouped(rate.round() as u64)
            );
        }

        let _ = writeln!(out);
        let mut rows = vec![vec!["figure".to_string(), "value".into()]];
        rows.push(vec![
            "RSS after swarm init".into(),
            format!("{:.1} MiB", mib(self.rss_after_init)),
        ]);
        rows.push(vec![
            format!("RSS with {} {kind} stored", grouped(self.stored)),
            format!("{:.1} MiB", mib(self.rss_objects)),
        ]);
        rows.push(vec![
            format!(
                "RSS / peak (VmHWM) after {} writes (raft index {})",
                grouped(self.writes),
                grouped(self.index)
            ),
            format!(
                "{:.1} / {:.1} MiB",
                mib(self.rss_before_kill),
                mib(self.peak_before_kill)
            ),
        ]);
        rows.push(vec![
            "restart after SIGKILL: spawn → GET /v1.41/swarm 200".into(),
            format!("{:.0} ms", self.restart.as_secs_f64() * 1e3),
        ]);
        rows.push(vec![
            format!(
                "{kind} after restart (acknowledged: {})",
                grouped(self.stored)
            ),
            grouped(self.after),
        ]);
        rows.push(vec![
            "raft index after restart (a probe write)".into(),
            grouped(self.index_after),
        ]);
        rows.push(vec![
            "RSS after restart".into(),
            format!("{:.1} MiB", mib(self.rss_restarted)),
        ]);
        if let Some(bytes) = self.disk {
            rows.push(vec![
                "data dir on disk".into(),
                format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0),
            ]);
        }
        out.push_str(&table(&rows));

        let batched = self.batched.rate();
        let restart = self.restart.as_secs_f64();
        let rss = mib(self.rss_objects);
        let durable = self.after == self.stored;
        let _ = writeln!(out, "\ngoals");
        let rows = vec![
            vec!["goal".to_string(), "measured".into(), "verdict".into()],
            vec![
                format!(
                    "≥ {} committed writes/s batched",
                    grouped(GOAL_BATCHED_WRITES_S as u64)
                ),
                grouped(batched.round() as u64),
                verdict(batched >= GOAL_BATCHED_WRITES_S).into(),
            ],
            vec![
                format!(
                    "restart < {GOAL_RESTART_S:.0} s after {} writes",
                    grouped(self.writes)
                ),
                format!("{:.0} ms", restart * 1e3),
                if self.writes < self.args.log_writes {
                    format!(
                        "{} (log short of {}: --fill-budget ran out)",
                        verdict(restart < GOAL_RESTART_S),
                        grouped(self.args.log_writes)
                    )
                } else {
                    verdict(restart < GOAL_RESTART_S).into()
                },
            ],
            vec![
                format!(
                    "RSS ≤ {GOAL_RSS_MIB:.0} MiB at {} objects",
                    grouped(self.stored)
                ),
                format!("{rss:.1} MiB"),
                verdict(rss <= GOAL_RSS_MIB).into(),
            ],
            vec![
                "every acknowledged object survives SIGKILL".into(),
                format!("{}/{}", grouped(self.after), grouped(self.stored)),
                verdict(durable).into(),
            ],
        ];
        out.push_str(&table(&rows));
        out
    }
}
