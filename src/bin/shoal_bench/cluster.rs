//! `shoal-bench cluster`: many hosts, one swarm (issue 16). On the same
//! simulated hosts (`shoal::testkit::hosts`: namespaces, a dockerd and a
//! shoal each), first the engines' own swarm mode, then shoal's:
//! - time from `swarm join` to the node listed Ready (2 managers, 2 workers);
//! - a 50-replica service to all running (goal ≤ 0.5× real swarm);
//! then shoal only:
//! - committed durable writes/s with 3 managers (config creates on the
//!   leader, 64 clients; goal ≥ 5,000/s batched);
//! - RSS of a manager's and a worker's shoal.
//!
//! Needs root (the hosts are namespaces). Everything is removed at the end,
//! on errors too (the hosts' teardown).

use std::fmt::Write as _;
use std::process::Output;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use shoal::testkit::hosts::{self, Host, Hosts};

use super::daemon::proc_status_kib;
use super::raft::{load, Kind};
use super::stats::{grouped, median, percentile_us, table};

const GOAL_REPLICAS_RATIO: f64 = 0.5;
const GOAL_WRITES_S: f64 = 5_000.0;
const CONVERGE: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Hosts: the first inits, the next two join as managers, the rest as workers.
    #[arg(long, default_value_t = 5)]
    hosts: usize,

    /// Replicas of the measured service.
    #[arg(long, default_value_t = 50)]
    replicas: usize,

    /// Committed writes measured on the 3-manager shoal cluster.
    #[arg(long, default_value_t = 10_000)]
    writes: u64,

    /// Concurrent clients of the write measurement.
    #[arg(long, default_value_t = 64)]
    clients: usize,

    /// Measure shoal only (no engine swarm mode).
    #[arg(long)]
    skip_real: bool,
}

/// Which swarm a measurement drives: the engines' own, or shoal's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Engine,
    Shoal,
}

impl Side {
    fn docker(self, h: &Host, args: &[&str]) -> Output {
        match self {
            Side::Engine => h.engine_docker(args),
            Side::Shoal => h.docker(args),
        }
    }

    fn docker_ok(self, h: &Host, args: &[&str]) -> Result<String> {
        let out = self.docker(h, args);
        if !out.status.success() {
            bail!(
                "{self:?} on {}: docker {}: {}",
                h.name,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// One timed figure of a [`Figures`].
type Pick = fn(&Figures) -> Duration;

struct Figures {
    joins: Vec<Duration>,
    replicas: Duration,
    /// A worker host killed → its tasks running on the other engines.
    reschedule: Duration,
    /// The leader's host killed → a write accepted by a surviving manager.
    failover: Duration,
}

pub async fn run(args: ClusterArgs) -> Result<()> {
    if let Some(why) = hosts::unavailable() {
        bail!("simulated hosts cannot run here: {why}");
    }
    if args.hosts < 3 {
        bail!("--hosts must be at least 3 (three managers)");
    }
    let began = Instant::now();
    let hosts = Hosts::start(args.hosts);
    eprintln!("{} hosts ready in {:.1?}", args.hosts, began.elapsed());
    let real = if args.skip_real {
        None
    } else {
        let figures = measure(&hosts, Side::Engine, &args);
        leave_all(&hosts, Side::Engine);
        Some(figures?)
    };
    let ours = measure(&hosts, Side::Shoal, &args);
    let extra = match &ours {
        Ok(_) => shoal_only(&hosts, &args).await,
        Err(_) => Err(anyhow::anyhow!("skipped")),
    };
    if ours.is_err() || extra.is_err() {
        // What the shoals said is the first thing to read when a run fails.
        hosts.dump_logs();
    }
    leave_all(&hosts, Side::Shoal);
    let ours = ours?;
    let extra = extra?;
    println!("{}", report(&args, real.as_ref(), &ours, &extra));
    Ok(())
}

/// Init, joins (each timed to Ready), then the service to all running.
fn measure(hosts: &Hosts, side: Side, args: &ClusterArgs) -> Result<Figures> {
    eprintln!("{side:?}: forming a {}-host swarm", args.hosts);
    let first = hosts.host(1);
    let ip = first.ip.to_string();
    side.docker_ok(first, &["swarm", "init", "--advertise-addr", &ip])?;
    let manager_token = side.docker_ok(first, &["swarm", "join-token", "-q", "manager"])?;
    let worker_token = side.docker_ok(first, &["swarm", "join-token", "-q", "worker"])?;
    let remote = format!("{ip}:2377");
    let mut joins = Vec::new();
    for i in 2..=args.hosts {
        let h = hosts.host(i);
        let token = if i <= 3 {
            &manager_token
        } else {
            &worker_token
        };
        let started = Instant::now();
        let own_ip = h.ip.to_string();
        side.docker_ok(
            h,
            &[
                "swarm",
                "join",
                "--token",
                token,
                "--advertise-addr",
                &own_ip,
                &remote,
            ],
        )?;
        let id = side.docker_ok(h, &["info", "--format", "{{.Swarm.NodeID}}"])?;
        wait(&format!("{} ready", h.name), || {
            let state = side.docker(
                first,
                &["node", "inspect", &id, "--format", "{{.Status.State}}"],
            );
            String::from_utf8_lossy(&state.stdout).trim() == "ready"
        })?;
        joins.push(started.elapsed());
    }
    eprintln!("{side:?}: {} replicas", args.replicas);
    let replicas = args.replicas.to_string();
    let started = Instant::now();
    side.docker_ok(
        first,
        &[
            "service",
            "create",
            "--detach",
            "--quiet",
            "--name",
            "bench",
            "--replicas",
            &replicas,
            "--stop-grace-period",
            "1s",
            "busybox:latest",
            "sleep",
            "100000",
        ],
    )?;
    let wanted = format!("{replicas}/{replicas}");
    wait(&format!("{replicas} replicas running"), || {
        let out = side.docker(
            first,
            &[
                "service",
                "ls",
                "--filter",
                "name=bench",
                "--format",
                "{{.Replicas}}",
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim() == wanted
    })?;
    let replicas = started.elapsed();
    side.docker_ok(first, &["service", "rm", "bench"])?;
    wait("the service's containers gone", || {
        hosts.iter().all(|h| {
            let out = h.engine_docker(&[
                "ps",
                "-aq",
                "--filter",
                "label=com.docker.swarm.service.name=bench",
            ]);
            out.stdout.is_empty()
        })
    })?;
    let reschedule = reschedule(hosts, side, args)?;
    let failover = failover(hosts, side)?;
    Ok(Figures {
        joins,
        replicas,
        reschedule,
        failover,
    })
}

struct Extra {
    writes: f64,
    p50_ms: f64,
    p99_ms: f64,
    manager_rss_kib: u64,
    worker_rss_kib: u64,
}

/// Writes through the leader of three managers, and the shoals' RSS.
async fn shoal_only(hosts: &Hosts, args: &ClusterArgs) -> Result<Extra> {
    let leader = leader_of(hosts)?;
    eprintln!(
        "Shoal: {} writes, {} clients, 3 managers, on the leader ({})",
        args.writes, args.clients, leader.name
    );
    let counter = Arc::new(AtomicU64::new(0));
    let mut measured = load(
        &leader.shoal_sock(),
        Kind::Configs,
        &counter,
        args.writes,
        args.clients,
        false,
    )
    .await?;
    let rss = |h: &Host| -> Result<u64> {
        let pid = h.shoal_pid().context("shoal is not running")?;
        proc_status_kib(pid, "VmRSS")
    };
    Ok(Extra {
        writes: measured.rate(),
        p50_ms: percentile_us(&mut measured.latencies, 0.50) / 1000.0,
        p99_ms: percentile_us(&mut measured.latencies, 0.99) / 1000.0,
        manager_rss_kib: rss(hosts.host(1))?,
        worker_rss_kib: rss(hosts.host(args.hosts))?,
    })
}

/// The host whose manager leads now (after the failover it is not h1).
fn leader_of(hosts: &Hosts) -> Result<&Host> {
    let rows = Side::Shoal.docker_ok(
        hosts.host(2),
        &["node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"],
    )?;
    let name = rows
        .lines()
        .find_map(|l| l.strip_suffix(" Leader"))
        .context("no leader in node ls")?;
    hosts
        .iter()
        .find(|h| h.hostname == name)
        .context("the leader is not one of the hosts")
}

/// Every host leaves, workers first (errors ignored: this is cleanup).
fn leave_all(hosts: &Hosts, side: Side) {
    let all: Vec<&Host> = hosts.iter().collect();
    for h in all.iter().rev() {
        let _ = side.docker(h, &["swarm", "leave", "--force"]);
    }
}

fn wait(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + CONVERGE;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn report(args: &ClusterArgs, real: Option<&Figures>, ours: &Figures, extra: &Extra) -> String {
    let join_median = |f: &Figures| {
        median(
            &f.joins
                .iter()
                .map(Duration::as_secs_f64)
                .collect::<Vec<_>>(),
        )
    };
    let mut rows = vec![vec![
        "measure".to_string(),
        "real swarm".to_string(),
        "shoal".to_string(),
        "ratio".to_string(),
        "goal".to_string(),
    ]];
    let ratio = |a: f64, b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:.2}×", a / b));
    let real_join = real.map(join_median);
    rows.push(vec![
        "join → Ready (median)".into(),
        real_join.map_or("-".into(), |s| format!("{s:.2} s")),
        format!("{:.2} s", join_median(ours)),
        ratio(join_median(ours), real_join),
        "-".into(),
    ]);
    let real_replicas = real.map(|f| f.replicas.as_secs_f64());
    let goal_met = real_replicas
        .map(|r| ours.replicas.as_secs_f64() <= GOAL_REPLICAS_RATIO * r)
        .map_or("-".to_string(), |met| {
            if met {
                "met".into()
            } else {
                "MISSED".into()
            }
        });
    rows.push(vec![
        format!("{} replicas → running", args.replicas),
        real.map_or("-".into(), |f| secs(f.replicas)),
        secs(ours.replicas),
        ratio(ours.replicas.as_secs_f64(), real_replicas),
        format!("≤ {GOAL_REPLICAS_RATIO}×: {goal_met}"),
    ]);
    let timed: [(&str, Pick); 2] = [
        ("worker host killed → tasks elsewhere", |f| f.reschedule),
        ("leader host killed → write accepted", |f| f.failover),
    ];
    for (what, pick) in timed {
        let theirs = real.map(|f| pick(f).as_secs_f64());
        rows.push(vec![
            what.to_string(),
            real.map_or("-".into(), |f| secs(pick(f))),
            secs(pick(ours)),
            ratio(pick(ours).as_secs_f64(), theirs),
            "-".into(),
        ]);
    }
    let mut out = table(&rows);
    let writes_met = if extra.writes >= GOAL_WRITES_S {
        "met"
    } else {
        "MISSED"
    };
    let _ = writeln!(
        out,
        "\n  shoal, 3 managers: {} committed durable writes/s batched ({} clients; p50 {:.2} ms, p99 {:.2} ms) — goal ≥ {}: {writes_met}",
        grouped(extra.writes as u64),
        args.clients,
        extra.p50_ms,
        extra.p99_ms,
        grouped(GOAL_WRITES_S as u64),
    );
    let _ = writeln!(
        out,
        "  shoal RSS: manager {:.1} MiB, worker {:.1} MiB",
        extra.manager_rss_kib as f64 / 1024.0,
        extra.worker_rss_kib as f64 / 1024.0
    );
    out
}

/// Running containers of `service` on the engines of every host but `except`.
fn running_elsewhere(hosts: &Hosts, service: &str, except: Option<&Host>) -> usize {
    hosts
        .iter()
        .filter(|h| except.is_none_or(|e| e.name != h.name))
        .map(|h| {
            let filter = format!("label=com.docker.swarm.service.name={service}");
            let out = h.engine_docker(&["ps", "-q", "--filter", &filter]);
            String::from_utf8_lossy(&out.stdout).lines().count()
        })
        .sum()
}

/// The last worker's whole host dies; how long until all replicas run on
/// the other engines. The host is booted again afterwards.
fn reschedule(hosts: &Hosts, side: Side, args: &ClusterArgs) -> Result<Duration> {
    let first = hosts.host(1);
    let victim = hosts.host(args.hosts);
    let count = 2 * args.hosts;
    eprintln!("{side:?}: killing a worker host under {count} replicas");
    side.docker_ok(
        first,
        &[
            "service",
            "create",
            "--detach",
            "--quiet",
            "--name",
            "moved",
            "--replicas",
            &count.to_string(),
            "--stop-grace-period",
            "1s",
            "busybox:latest",
            "sleep",
            "100000",
        ],
    )?;
    wait("replicas on every host, the victim's too", || {
        running_elsewhere(hosts, "moved", None) == count
            && running_elsewhere(hosts, "moved", Some(victim)) < count
    })?;
    let started = Instant::now();
    victim.kill();
    wait("the killed host's tasks running elsewhere", || {
        running_elsewhere(hosts, "moved", Some(victim)) == count
    })?;
    let took = started.elapsed();
    victim.start();
    let id = node_id_of(hosts, side, victim)?;
    wait("the killed host ready again", || {
        let out = side.docker(
            first,
            &["node", "inspect", &id, "--format", "{{.Status.State}}"],
        );
        String::from_utf8_lossy(&out.stdout).trim() == "ready"
    })?;
    side.docker_ok(first, &["service", "rm", "moved"])?;
    Ok(took)
}

fn node_id_of(hosts: &Hosts, side: Side, host: &Host) -> Result<String> {
    let rows = side.docker_ok(
        hosts.host(1),
        &["node", "ls", "--format", "{{.ID}} {{.Hostname}}"],
    )?;
    rows.lines()
        .find_map(|l| {
            let (id, name) = l.split_once(' ')?;
            (name.trim_end_matches(" *") == host.hostname)
                .then(|| id.trim_end_matches(" *").to_string())
        })
        .with_context(|| format!("{} is not in node ls", host.name))
}

/// The leader's whole host dies; how long until another manager accepts a
/// write. The host is booted again afterwards and rejoins.
fn failover(hosts: &Hosts, side: Side) -> Result<Duration> {
    let leader = hosts.host(1);
    let survivor = hosts.host(2);
    eprintln!("{side:?}: killing the leader's host");
    let started = Instant::now();
    leader.kill();
    let mut n = 0;
    wait("a write accepted after the leader died", || {
        n += 1;
        let name = format!("failover-{n}");
        side.docker(survivor, &["config", "create", &name, "/etc/hostname"])
            .status
            .success()
    })?;
    let took = started.elapsed();
    leader.start();
    wait("the old leader back and every node ready", || {
        let out = side.docker(leader, &["node", "ls", "--format", "{{.Status}}"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        out.status.success() && !text.is_empty() && text.lines().all(|l| l == "Ready")
    })?;
    Ok(took)
}
