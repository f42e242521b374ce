//! `shoal-bench proxy`: the passthrough proxy against the engine it fronts
//! and against the proxies it could be replaced with.
//!
//! In one run, rotating which goes first: p50/p99 latency of `GET /_ping`,
//! `GET /version` and `GET /containers/json` on one keep-alive connection,
//! direct (the engine's socket), through shoal, through HAProxy configured
//! as docker-socket-proxy configures it (and the same with engine
//! connections kept alive), and through socat (an L4 splice). Then, direct
//! vs shoal only, throughput of a streamed `GET /images/{name}/get` of a
//! ≥ 512 MiB local image and shoal's RSS idle and over 3 × 10,000 requests.
//! Goals (issues 3 and 15): added p50 ≤ 50 µs and ≤ HAProxy's, aiming at
//! socat's; throughput ≥ 0.95× direct; RSS ≤ 20 MiB idle and flat.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hyper::StatusCode;

use super::client::{message, Conn};
use super::daemon::{self, Shoal, TempDir};
use super::image;
use super::relay::{self, Relay};
use super::stats::{grouped, median, percentile_us, table};

const MIB: f64 = 1024.0 * 1024.0;
const GOAL_ADDED_P50_US: f64 = 50.0;
const GOAL_THROUGHPUT_RATIO: f64 = 0.95;
const GOAL_RSS_MIB: f64 = 20.0;
/// "Flat": the last RSS sample is at most this much above the first.
const FLAT_TOLERANCE_MIB: f64 = 1.0;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const LATENCY_PATHS: [&str; 3] = ["/_ping", "/version", "/containers/json"];

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The shoal binary to start [default: `shoal` beside this binary,
    /// i.e. target/release/shoal; build it with `cargo build --release`].
    #[arg(long, value_name = "PATH")]
    shoal_bin: Option<PathBuf>,

    /// The engine's unix socket: measured directly, and what shoal fronts.
    #[arg(long, value_name = "PATH", default_value = "/var/run/docker.sock")]
    engine: PathBuf,

    /// Rounds, each measuring direct and through shoal (alternating which
    /// goes first); figures are medians over rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,

    /// Measured requests per request kind, per side, per round.
    #[arg(long, default_value_t = 2000)]
    requests: usize,

    /// Unmeasured requests of each kind on a connection before measuring.
    #[arg(long, default_value_t = 200)]
    warmup: usize,

    /// The image streamed by `GET /images/{name}/get`; made with
    /// `docker import` if absent and kept (remove: docker rmi shoal-bench-big).
    #[arg(
        long,
        value_name = "NAME:TAG",
        default_value = "shoal-bench-big:latest"
    )]
    image: String,

    /// Size of the random file in the image, when it has to be made.
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    image_mib: u64,

    /// Batches of `GET /_ping` through shoal with an RSS reading after each.
    #[arg(long, default_value_t = 3)]
    rss_batches: usize,

    /// Requests per RSS batch.
    #[arg(long, default_value_t = 10_000)]
    rss_batch_requests: usize,

    /// Measure the engine only (no shoal started); checks the harness.
    #[arg(long)]
    direct_only: bool,

    /// Leave out HAProxy and socat (by default both are started, from
    /// PATH, in front of the engine's socket: apt-get install haproxy socat).
    #[arg(long)]
    no_relays: bool,

    /// Latency only: no throughput transfers (and no large image) and no
    /// RSS batches.
    #[arg(long)]
    latency_only: bool,

    /// Also write every figure as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Direct,
    Shoal,
    Haproxy,
    HaproxyKeepAlive,
    Socat,
}

const SIDES: usize = 5;

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Direct => "direct",
            Side::Shoal => "shoal",
            Side::Haproxy => "haproxy",
            Side::HaproxyKeepAlive => "haproxy-ka",
            Side::Socat => "socat",
        }
    }
    fn index(self) -> usize {
        match self {
            Side::Direct => 0,
            Side::Shoal => 1,
            Side::Haproxy => 2,
            Side::HaproxyKeepAlive => 3,
            Side::Socat => 4,
        }
    }
    fn relay(self) -> Option<relay::Kind> {
        match self {
            Side::Haproxy => Some(relay::Kind::HaproxyServerClose),
            Side::HaproxyKeepAlive => Some(relay::Kind::HaproxyKeepAlive),
            Side::Socat => Some(relay::Kind::Socat),
            Side::Direct | Side::Shoal => None,
        }
    }
}

/// Per side, per request kind: each round's (p50, p99) in µs.
type LatencyRounds = [[Vec<(f64, f64)>; LATENCY_PATHS.len()]; SIDES];

struct Throughput {
    /// Per side: each round's MiB/s.
    mib_s: [Vec<f64>; 2],
    /// Per side: body bytes of each transfer.
    bytes: [Vec<u64>; 2],
}

struct Memory {
    idle_kib: u64,
    /// (requests so far, RSS KiB, seconds the batch took)
    batches: Vec<(u64, u64, f64)>,
    end_kib: u64,
    peak_kib: u64,
}

pub async fn run(args: ProxyArgs) -> Result<()> {
    if args.rounds == 0 || args.requests == 0 {
        bail!("--rounds and --requests must be at least 1");
    }
    if args.rounds < 5 || args.requests < 2000 {
        eprintln!("note: fewer than issue 3's minimum of 5 rounds × 2,000 requests; figures are indicative only");
    }

    let engine = args.engine.clone();
    let version = engine_version(&engine).await?;
    let image = if args.latency_only {
        None
    } else {
        Some(image::ensure(&engine, &args.image, args.image_mib).await?)
    };

    // Declared before `shoal` and the relays so that they are stopped
    // before their directory goes; both happen on every exit path, errors
    // included.
    let dir = TempDir::new("shoal-bench")?;
    let mut shoal = None;
    let mut shoal_bin = None;
    if !args.direct_only {
        let bin = args
            .shoal_bin
            .clone()
            .unwrap_or_else(daemon::default_shoal_bin);
        daemon::check_shoal_bin(&bin)?;
        let mut started = Shoal::start(&bin, dir.path(), &engine)?;
        let took = started.wait_ready(READY_TIMEOUT).await?;
        eprintln!(
            "shoal (pid {}) answers on {} after {:.0} ms",
            started.pid(),
            started.socket().display(),
            took.as_secs_f64() * 1e3
        );
        shoal = Some(started);
        shoal_bin = Some(bin);
    }
    let mut sides: Vec<(Side, PathBuf)> = vec![(Side::Direct, engine.clone())];
    if let Some(s) = &shoal {
        sides.push((Side::Shoal, s.socket().to_path_buf()));
    }
    let mut relays = Vec::new();
    if !args.no_relays {
        for side in [Side::Haproxy, Side::HaproxyKeepAlive, Side::Socat] {
            let Some(kind) = side.relay() else { continue };
            let relay = Relay::start(kind, dir.path(), &engine).await?;
            sides.push((side, relay.socket().to_path_buf()));
            relays.push(relay);
        }
    }

    // Memory first, while shoal has served nothing else.
    let memory = match (&shoal, args.latency_only) {
        (Some(s), false) => Some(measure_memory(s, &args).await?),
        _ => None,
    };

    let latency = measure_latency(&args, &sides).await?;
    drop(relays);
    let throughput = match &image {
        Some(_) => {
            let direct_and_shoal: Vec<(Side, PathBuf)> = sides
                .iter()
                .filter(|(side, _)| matches!(side, Side::Direct | Side::Shoal))
                .cloned()
                .collect();
            Some(measure_throughput(&args, &direct_and_shoal).await?)
        }
        None => None,
    };

    let memory = match (memory, &shoal) {
        (Some(mut m), Some(s)) => {
            m.end_kib = s.status_kib("VmRSS")?;
            m.peak_kib = s.status_kib("VmHWM")?;
            Some(m)
        }
        _ => None,
    };
    let stopped = match shoal.as_mut() {
        Some(s) => {
            let (status, by_sigterm) = s.stop()?;
            Some(format!(
                "{status}{}",
                if by_sigterm {
                    " after SIGTERM"
                } else {
                    ", KILLED: still running 10 s after SIGTERM"
                }
            ))
        }
        None => None,
    };

    let report = Report {
        args: &args,
        version,
        image,
        has_shoal: shoal_bin.is_some(),
        shoal_bin,
        sides: sides.iter().map(|(side, _)| *side).collect(),
        latency,
        throughput,
        memory,
        stopped,
    };
    print!("{}", report.render());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report.json()).context("encoding JSON")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}

/// `(engine version, API version)`, which also proves the engine answers.
async fn engine_version(engine: &Path) -> Result<(String, String)> {
    let hint = || {
        format!(
            "no Docker engine answers at {} (is dockerd running, and may this user use its socket?)",
            engine.display()
        )
    };
    let mut conn = Conn::connect(engine).await.with_context(hint)?;
    let (status, value) = conn.get_json("/version").await.with_context(hint)?;
    if status != StatusCode::OK {
        bail!(
            "GET /version on {}: {status}: {}",
            engine.display(),
            message(&value)
        );
    }
    let field = |k: &str| value[k].as_str().unwrap_or("?").to_string();
    Ok((field("Version"), field("ApiVersion")))
}

/// The sides in the order round `round` measures them: rotated each round,
/// and reversed every other, so that no side always follows the same one.
fn order<T: Clone>(round: usize, sides: &[T]) -> Vec<T> {
    let mut order = sides.to_vec();
    if !order.is_empty() {
        order.rotate_left(round / 2 % sides.len());
    }
    if !round.is_multiple_of(2) {
        order.reverse();
    }
    order
}

async fn measure_memory(shoal: &Shoal, args: &ProxyArgs) -> Result<Memory> {
    let idle_kib = shoal.status_kib("VmRSS")?;
    let mut batches = Vec::with_capacity(args.rss_batches);
    let mut conn = Conn::connect(shoal.socket()).await?;
    let mut done = 0u64;
    for _ in 0..args.rss_batches {
        let start = Instant::now();
        for _ in 0..args.rss_batch_requests {
            conn.timed_get("/_ping")
                .await
                .context("GET /_ping through shoal (RSS batch)")?;
        }
        done += args.rss_batch_requests as u64;
        let rss = shoal.status_kib("VmRSS")?;
        eprintln!(
            "rss: {:.1} MiB after {} requests",
            rss as f64 / 1024.0,
            grouped(done)
        );
        batches.push((done, rss, start.elapsed().as_secs_f64()));
    }
    Ok(Memory {
        idle_kib,
        batches,
        end_kib: 0,
        peak_kib: 0,
    })
}

async fn measure_latency(args: &ProxyArgs, sides: &[(Side, PathBuf)]) -> Result<LatencyRounds> {
    let mut rounds: LatencyRounds = Default::default();
    for round in 0..args.rounds {
        for (side, socket) in order(round, sides) {
            let mut conn = Conn::connect(&socket).await?;
            for _ in 0..args.warmup {
                for path in LATENCY_PATHS {
                    conn.timed_get(path)
                        .await
                        .with_context(|| format!("warm-up GET {path} ({})", side.name()))?;
                }
            }
            let mut line = format!(
                "latency round {}/{} {:>10}:",
                round + 1,
                args.rounds,
                side.name()
            );
            for (kind, path) in LATENCY_PATHS.iter().enumerate() {
                let mut samples = Vec::with_capacity(args.requests);
                for _ in 0..args.requests {
                    let took = conn
                        .timed_get(path)
                        .await
                        .with_context(|| format!("GET {path} ({})", side.name()))?;
                    samples.push(took);
                }
                let p50 = percentile_us(&mut samples, 0.50);
                let p99 = percentile_us(&mut samples, 0.99);
                let _ = write!(line, "  {path} p50 {p50:.1} µs p99 {p99:.1} µs");
                rounds[side.index()][kind].push((p50, p99));
            }
            eprintln!("{line}");
        }
    }
    Ok(rounds)
}

async fn measure_throughput(args: &ProxyArgs, sides: &[(Side, PathBuf)]) -> Result<Throughput> {
    let path = format!("/images/{}/get", args.image);
    // One unmeasured transfer so that the first measured one does not pay
    // for a cold page cache.
    let mut conn = Conn::connect(&args.engine).await?;
    let (status, _) = conn.get_discard(&path).await?;
    if status != StatusCode::OK {
        bail!("warm-up GET {path}: {status}");
    }
    drop(conn);

    let mut result = Throughput {
        mib_s: Default::default(),
        bytes: Default::default(),
    };
    for round in 0..args.rounds {
        for (side, socket) in order(round, sides) {
            let mut conn = Conn::connect(&socket).await?;
            let start = Instant::now();
            let (status, bytes) = conn
                .get_discard(&path)
                .await
                .with_context(|| format!("GET {path} ({})", side.name()))?;
            let secs = start.elapsed().as_secs_f64();
            if status != StatusCode::OK {
                bail!("GET {path} ({}): {status}", side.name());
            }
            let rate = bytes as f64 / MIB / secs;
            eprintln!(
                "throughput round {}/{} {:>6}: {:.0} MiB in {:.2} s = {rate:.0} MiB/s",
                round + 1,
                args.rounds,
                side.name(),
                bytes as f64 / MIB,
                secs
            );
            result.mib_s[side.index()].push(rate);
            result.bytes[side.index()].push(bytes);
        }
    }
    Ok(result)
}

struct Report<'a> {
    args: &'a ProxyArgs,
    version: (String, String),
    image: Option<image::ImageInfo>,
    has_shoal: bool,
    shoal_bin: Option<PathBuf>,
    /// The sides measured for latency, direct first.
    sides: Vec<Side>,
    latency: LatencyRounds,
    throughput: Option<Throughput>,
    memory: Option<Memory>,
    stopped: Option<String>,
}

/// Medians over rounds of one side's per-round (p50, p99).
fn medians(rounds: &[(f64, f64)]) -> (f64, f64) {
    let p50: Vec<f64> = rounds.iter().map(|r| r.0).collect();
    let p99: Vec<f64> = rounds.iter().map(|r| r.1).collect();
    (median(&p50), median(&p99))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT MET"
    }
}

impl Report<'_> {
    /// One side's (p50, p99) medians for a request kind.
    fn latency_of(&self, side: Side, kind: usize) -> (f64, f64) {
        medians(&self.latency[side.index()][kind])
    }

    /// A side's added p50 and p99 over direct for a request kind.
    fn added(&self, side: Side, kind: usize) -> (f64, f64) {
        let (d50, d99) = self.latency_of(Side::Direct, kind);
        let (s50, s99) = self.latency_of(side, kind);
        (s50 - d50, s99 - d99)
    }

    fn measured(&self, side: Side) -> bool {
        self.sides.contains(&side)
    }

    fn throughput_medians(t: &Throughput) -> (f64, f64) {
        (median(&t.mib_s[0]), median(&t.mib_s[1]))
    }

    /// Every transfer, either side, returned the same number of bytes.
    fn same_bytes(t: &Throughput) -> bool {
        let all: Vec<u64> = t.bytes.iter().flatten().copied().collect();
        all.windows(2).all(|w| w[0] == w[1])
    }

    fn rss_flat(&self, m: &Memory) -> bool {
        match (m.batches.first(), m.batches.last()) {
            (Some(first), Some(last)) => mib(last.1) <= mib(first.1) + FLAT_TOLERANCE_MIB,
            _ => true,
        }
    }

    fn render(&self) -> String {
        let a = self.args;
        let mut out = String::new();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "shoal-bench proxy: engine {} (API {}) at {}{}; load average {}",
            self.version.0,
            self.version.1,
            a.engine.display(),
            match &self.shoal_bin {
                Some(bin) => format!(", shoal {}", bin.display()),
                None => ", direct only (no shoal)".to_string(),
            },
            load_average()
        );
        let _ = writeln!(out);
        self.render_latency(&mut out);
        if let (Some(t), Some(image)) = (&self.throughput, &self.image) {
            self.render_throughput(&mut out, t, image);
        }
        if let Some(m) = &self.memory {
            self.render_memory(&mut out, m);
        }
        self.render_goals(&mut out);
        out
    }

    fn render_latency(&self, out: &mut String) {
        let a = self.args;
        let _ = writeln!(
            out,
            "latency (µs): median over {} rounds of each round's percentile; {} sequential requests \
             of each kind per side per round on one keep-alive connection, after {} warm-up",
            a.rounds,
            grouped(a.requests as u64),
            grouped(a.warmup as u64)
        );
        let _ = writeln!(
            out,
            "  haproxy: docker-socket-proxy's config (http-server-close: an engine connection per request); \
             haproxy-ka: the same, engine connections reused; socat: L4 splice"
        );
        let mut rows = vec![[
            "request", "via", "p50", "added", "×direct", "p99", "added", "×direct",
        ]
        .map(String::from)
        .to_vec()];
        for (kind, path) in LATENCY_PATHS.iter().enumerate() {
            let (d50, d99) = self.latency_of(Side::Direct, kind);
            for &side in &self.sides {
                let (s50, s99) = self.latency_of(side, kind);
                let (add50, add99) = self.added(side, kind);
                let direct = side == Side::Direct;
                let cell = |v: String| if direct { String::new() } else { v };
                rows.push(vec![
                    if direct {
                        format!("GET {path}")
                    } else {
                        String::new()
                    },
                    side.name().to_string(),
                    format!("{s50:.1}"),
                    cell(format!("{add50:+.1}")),
                    cell(format!("{:.2}", s50 / d50)),
                    format!("{s99:.1}"),
                    cell(format!("{add99:+.1}")),
                    cell(format!("{:.2}", s99 / d99)),
                ]);
            }
        }
        out.push_str(&table(&rows));
        if self.has_shoal && self.sides.len() > 2 {
            let _ = writeln!(out, "  shoal's added p50 as a ratio of each relay's:");
            for (kind, path) in LATENCY_PATHS.iter().enumerate() {
                let (shoal, _) = self.added(Side::Shoal, kind);
                let ratios: Vec<String> = self
                    .sides
                    .iter()
                    .filter(|s| s.relay().is_some())
                    .map(|&s| format!("{} {:.2}×", s.name(), shoal / self.added(s, kind).0))
                    .collect();
                let _ = writeln!(out, "    GET {path:<17} {}", ratios.join(", "));
            }
        }
        let _ = writeln!(out);
    }

    fn render_throughput(&self, out: &mut String, t: &Throughput, image: &image::ImageInfo) {
        let shoal = self.has_shoal;
        let bytes = t.bytes[0].first().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "throughput: GET /images/{}/get streamed and discarded ({:.0} MiB per transfer; image {} of {:.0} MiB), \
             median over {} rounds",
            self.args.image,
            bytes as f64 / MIB,
            image.id.trim_start_matches("sha256:").get(..12).unwrap_or("?"),
            image.size as f64 / MIB,
            self.args.rounds
        );
        let (dt, st) = Self::throughput_medians(t);
        let mut rows = vec![if shoal {
            ["", "direct", "shoal", "ratio"].map(String::from).to_vec()
        } else {
            ["", "direct"].map(String::from).to_vec()
        }];
        let mut row = vec!["MiB/s".to_string(), format!("{dt:.0}")];
        if shoal {
            row.extend([format!("{st:.0}"), format!("{:.3}×", st / dt)]);
        }
        rows.push(row);
        out.push_str(&table(&rows));
        if shoal && !Self::same_bytes(t) {
            let _ = writeln!(
                out,
                "  WARNING: transfers differed in length: direct {:?}, shoal {:?}",
                t.bytes[0], t.bytes[1]
            );
        }
        let _ = writeln!(out);
    }

    fn render_memory(&self, out: &mut String, m: &Memory) {
        let _ = writeln!(out, "shoal RSS (VmRSS from /proc/<pid>/status)");
        let mut rows = vec![["", "MiB", "requests/s"].map(String::from).to_vec()];
        rows.push(vec![
            "idle after start".into(),
            format!("{:.1}", mib(m.idle_kib)),
            String::new(),
        ]);
        for (done, kib, secs) in &m.batches {
            rows.push(vec![
                format!("after {} GET /_ping", grouped(*done)),
                format!("{:.1}", mib(*kib)),
                format!("{:.0}", self.args.rss_batch_requests as f64 / secs),
            ]);
        }
        rows.push(vec![
            "at the end of the run".into(),
            format!("{:.1}", mib(m.end_kib)),
            String::new(),
        ]);
        rows.push(vec![
            "peak over the run (VmHWM)".into(),
            format!("{:.1}", mib(m.peak_kib)),
            String::new(),
        ]);
        out.push_str(&table(&rows));
        if let Some(stopped) = &self.stopped {
            let _ = writeln!(out, "  shoal stopped: {stopped}");
        }
        let _ = writeln!(out);
    }

    fn render_goals(&self, out: &mut String) {
        let _ = writeln!(out, "goals");
        if !self.has_shoal {
            let _ = writeln!(out, "  not judged: --direct-only measures the engine alone");
            return;
        }
        let added: Vec<(&str, f64)> = LATENCY_PATHS
            .iter()
            .enumerate()
            .map(|(kind, path)| (*path, self.added(Side::Shoal, kind).0))
            .collect();
        let listed = |values: &[(&str, f64)]| {
            values
                .iter()
                .map(|(p, v)| format!("{p} {v:+.1} µs"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "  {:<34} {} ({})",
            format!("added p50 ≤ {GOAL_ADDED_P50_US:.0} µs:"),
            verdict(added.iter().all(|(_, v)| *v <= GOAL_ADDED_P50_US)),
            listed(&added)
        );
        for (side, label) in [
            (
                Side::Haproxy,
                "added p50 ≤ HAProxy's (docker-socket-proxy):",
            ),
            (
                Side::HaproxyKeepAlive,
                "added p50 ≤ HAProxy's (keep-alive):",
            ),
            (Side::Socat, "added p50 ≤ socat's (aim):"),
        ] {
            if !self.measured(side) {
                continue;
            }
            let theirs: Vec<(&str, f64)> = LATENCY_PATHS
                .iter()
                .enumerate()
                .map(|(kind, path)| (*path, self.added(side, kind).0))
                .collect();
            let met = added.iter().zip(&theirs).all(|(ours, t)| ours.1 <= t.1);
            let _ = writeln!(
                out,
                "  {label:<34} {} ({}: {})",
                verdict(met),
                side.name(),
                listed(&theirs)
            );
        }
        if let Some(t) = &self.throughput {
            let (dt, st) = Self::throughput_medians(t);
            let ratio = st / dt;
            let same = Self::same_bytes(t);
            let _ = writeln!(
                out,
                "  {:<34} {} ({ratio:.3}×{})",
                format!("throughput ≥ {GOAL_THROUGHPUT_RATIO:.2}× direct:"),
                verdict(ratio >= GOAL_THROUGHPUT_RATIO && same),
                if same {
                    ""
                } else {
                    "; bodies differed in length"
                }
            );
        }
        if let Some(m) = &self.memory {
            let highest = m
                .batches
                .iter()
                .map(|b| b.1)
                .chain([m.idle_kib])
                .max()
                .unwrap_or(0);
            let flat = self.rss_flat(m);
            let met = mib(highest) <= GOAL_RSS_MIB && flat;
            let first = m.batches.first().map(|b| mib(b.1)).unwrap_or(f64::NAN);
            let last = m.batches.last().map(|b| mib(b.1)).unwrap_or(f64::NAN);
            let total = m.batches.last().map(|b| b.0).unwrap_or(0);
            let _ = writeln!(
                out,
                "  {:<34} {} (idle {:.1} MiB; {first:.1} → {last:.1} MiB over {} requests, {})",
                format!("RSS ≤ {GOAL_RSS_MIB:.0} MiB idle and flat:"),
                verdict(met),
                mib(m.idle_kib),
                grouped(total),
                if flat {
                    format!("flat within {FLAT_TOLERANCE_MIB:.0} MiB")
                } else {
                    format!("GREW by more than {FLAT_TOLERANCE_MIB:.0} MiB")
                }
            );
        }
    }

    fn json(&self) -> serde_json::Value {
        let latency: Vec<serde_json::Value> = LATENCY_PATHS
            .iter()
            .enumerate()
            .map(|(kind, path)| {
                let sides: serde_json::Map<String, serde_json::Value> = self
                    .sides
                    .iter()
                    .map(|&side| {
                        let (p50, p99) = self.latency_of(side, kind);
                        let (add50, add99) = self.added(side, kind);
                        (
                            side.name().to_string(),
                            serde_json::json!({
                                "p50_us": p50, "p99_us": p99,
                                "added_p50_us": add50, "added_p99_us": add99,
                                "rounds": self.latency[side.index()][kind],
                            }),
                        )
                    })
                    .collect();
                serde_json::json!({"request": format!("GET {path}"), "via": sides})
            })
            .collect();
        let throughput = self.throughput.as_ref().map(|t| {
            let (dt, st) = Self::throughput_medians(t);
            serde_json::json!({
                "image": self.args.image,
                "direct_mib_s": dt,
                "shoal_mib_s": if self.has_shoal { serde_json::json!(st) } else { serde_json::Value::Null },
                "rounds": {"direct": t.mib_s[0], "shoal": t.mib_s[1]},
                "bytes": {"direct": t.bytes[0], "shoal": t.bytes[1]},
            })
        });
        serde_json::json!({
            "engine": {"version": self.version.0, "api_version": self.version.1},
            "load_average": load_average(),
            "rounds": self.args.rounds,
            "requests": self.args.requests,
            "latency": latency,
            "throughput": throughput,
            "rss": self.memory.as_ref().map(|m| serde_json::json!({
                "idle_kib": m.idle_kib,
                "batches": m.batches.iter().map(|b| serde_json::json!({"requests": b.0, "rss_kib": b.1})).collect::<Vec<_>>(),
                "end_kib": m.end_kib,
                "peak_kib": m.peak_kib,
            })),
        })
    }
}

/// The 1, 5 and 15 minute load averages, as `uptime` prints them: the
/// figures mean little on a busy machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "?".to_string())
}
