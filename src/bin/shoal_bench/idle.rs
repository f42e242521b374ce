//! `shoal-bench idle`: shoal's RSS with many idle client connections, and
//! the latency of `GET /_ping` for another client meanwhile, against the
//! same client with no idle connections beside it; then how long shoal
//! takes to cut the idle ones (its header read timeout) and its RSS after.

use std::fmt::Write as _;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::client::Conn;
use super::daemon::{self, Shoal, TempDir};
use super::proxy::load_average;
use super::stats::{grouped, percentile_us, table};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct IdleArgs {
    /// The shoal binary to start [default: `shoal` beside this binary].
    #[arg(long, value_name = "PATH")]
    shoal_bin: Option<PathBuf>,

    /// The engine's unix socket, which shoal fronts.
    #[arg(long, value_name = "PATH", default_value = "/var/run/docker.sock")]
    engine: PathBuf,

    /// Idle client connections held open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,

    /// Measured `GET /_ping` requests, before and while the idle
    /// connections are open.
    #[arg(long, default_value_t = 2000)]
    requests: usize,

    /// How long to wait for shoal to cut the idle connections (its header
    /// read timeout is 30 s); 0 skips that part.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    wait_cut: u64,
}

struct Sample {
    p50: f64,
    p99: f64,
}

pub async fn run(args: IdleArgs) -> Result<()> {
    raise_fd_limit(args.connections as u64 + 256)?;
    let bin = args
        .shoal_bin
        .clone()
        .unwrap_or_else(daemon::default_shoal_bin);
    daemon::check_shoal_bin(&bin)?;
    let dir = TempDir::new("shoal-bench-idle")?;
    let mut shoal = Shoal::start(&bin, dir.path(), &args.engine)?;
    shoal.wait_ready(READY_TIMEOUT).await?;

    let rss_start = shoal.status_kib("VmRSS")?;
    let alone = ping_latency(&shoal, &args).await?;
    let rss_before = shoal.status_kib("VmRSS")?;
    let sockets_before = socket_fds(shoal.pid());

    let opened_at = Instant::now();
    let mut idle = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let stream =
            UnixStream::connect(shoal.socket()).with_context(|| format!("idle connection {i}"))?;
        idle.push(stream);
    }
    let opening = opened_at.elapsed();
    // Wait until shoal has accepted them all.
    // At least the listener and every idle connection: sockets counted
    // before (the measuring client's, pooled engine connections) may have
    // closed meanwhile.
    let wanted = args.connections + 1;
    let accepted_by = Instant::now() + Duration::from_secs(20);
    while socket_fds(shoal.pid()) < wanted {
        if Instant::now() > accepted_by {
            bail!(
                "shoal holds {} sockets, expected at least {}",
                socket_fds(shoal.pid()),
                wanted
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let accepted = opened_at.elapsed();
    let rss_idle = shoal.status_kib("VmRSS")?;
    let beside = ping_latency(&shoal, &args).await?;
    let rss_after_pings = shoal.status_kib("VmRSS")?;
    let measured_within = opened_at.elapsed();

    let mut cut = None;
    if args.wait_cut > 0 {
        let deadline = opened_at + Duration::from_secs(args.wait_cut);
        while Instant::now() < deadline {
            if socket_fds(shoal.pid()) <= sockets_before + 5 {
                cut = Some(opened_at.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let rss_end = shoal.status_kib("VmRSS")?;
    let peak = shoal.status_kib("VmHWM")?;
    drop(idle);
    let still_answers = daemon::ping(shoal.socket()).await.is_ok();
    shoal.stop()?;

    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nshoal-bench idle: {} idle client connections on shoal's unix socket; load average {}\n",
        grouped(args.connections as u64),
        load_average()
    );
    let _ = writeln!(
        out,
        "opened in {:.0} ms, all accepted by shoal after {:.0} ms; measured within {:.1} s of opening",
        opening.as_secs_f64() * 1e3,
        accepted.as_secs_f64() * 1e3,
        measured_within.as_secs_f64()
    );
    let mut rows = vec![["GET /_ping (µs)", "p50", "p99"].map(String::from).to_vec()];
    for (label, s) in [("alone", &alone), ("beside the idle connections", &beside)] {
        rows.push(vec![
            label.to_string(),
            format!("{:.1}", s.p50),
            format!("{:.1}", s.p99),
        ]);
    }
    rows.push(vec![
        "ratio".to_string(),
        format!("{:.2}×", beside.p50 / alone.p50),
        format!("{:.2}×", beside.p99 / alone.p99),
    ]);
    out.push_str(&table(&rows));
    let per_conn = (rss_idle.saturating_sub(rss_before)) as f64 * 1024.0 / args.connections as f64;
    let mut rows = vec![["shoal RSS", "MiB"].map(String::from).to_vec()];
    for (label, kib) in [
        ("after start", rss_start),
        ("before the idle connections", rss_before),
        ("with the idle connections", rss_idle),
        ("after the pings beside them", rss_after_pings),
        ("at the end", rss_end),
        ("peak (VmHWM)", peak),
    ] {
        rows.push(vec![label.to_string(), mib(kib)]);
    }
    out.push_str(&table(&rows));
    let _ = writeln!(
        out,
        "  {per_conn:.0} bytes per idle connection\n  idle connections cut by shoal: {}\n  shoal answers afterwards: {still_answers}",
        match cut {
            Some(t) => format!("after {:.1} s", t.as_secs_f64()),
            None if args.wait_cut == 0 => "not waited for".to_string(),
            None => format!("NOT within {} s", args.wait_cut),
        }
    );
    print!("{out}");
    Ok(())
}

/// `--requests` sequential pings on one keep-alive connection, after 200
/// unmeasured.
async fn ping_latency(shoal: &Shoal, args: &IdleArgs) -> Result<Sample> {
    let mut conn = Conn::connect(shoal.socket()).await?;
    for _ in 0..200 {
        conn.timed_get("/_ping").await?;
    }
    let mut samples = Vec::with_capacity(args.requests);
    for _ in 0..args.requests {
        samples.push(conn.timed_get("/_ping").await?);
    }
    Ok(Sample {
        p50: percentile_us(&mut samples, 0.50),
        p99: percentile_us(&mut samples, 0.99),
    })
}

/// Open socket descriptors of a process.
fn socket_fds(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// This process holds one descriptor per idle connection.
fn raise_fd_limit(wanted: u64) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit failed");
        }
        if limit.rlim_cur >= wanted {
            return Ok(());
        }
        if limit.rlim_max < wanted {
            bail!(
                "the open file limit is {} (hard); {wanted} needed: ulimit -Hn, or fewer --connections",
                limit.rlim_max
            );
        }
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            bail!("cannot raise the open file limit to {wanted}");
        }
    }
    Ok(())
}
