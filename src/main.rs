//! shoal: flags → Config → run. Nothing else lives here.

mod agent;
mod api;
mod body;
mod ca;
mod cluster;
mod config;
mod daemon;
mod engine;
mod events;
mod fsutil;
mod listen;
mod manager;
mod netutil;
mod network;
mod proxy;
mod raft;
mod secrets;
mod store;
mod tls;
mod transport;
mod types;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let config = config::Config::parse();
    if let Some(inputs) = config.fuzz_inputs {
        return api::fuzz::command(inputs, config.fuzz_seed, &config.fuzz_corpus);
    }
    let filter = EnvFilter::try_new(log_filter(&config.log_level))
        .with_context(|| format!("invalid --log-level {:?}", config.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    raise_fd_limit();
    // One thread (the default): tokio's current-thread scheduler, which
    // skips the work-stealing machinery (queue tuning, cross-thread
    // wake-ups) that a one-worker multi-thread runtime still pays on every
    // request. Blocking work goes to the blocking pool either way.
    let mut builder = match config.worker_threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(daemon::run(config))?;
    Ok(())
}

/// Every client connection, engine connection and raft peer takes a file
/// descriptor; the usual soft limit of 1024 would refuse clients long before
/// memory or CPU run short. Raise the soft limit to the hard one, as dockerd
/// (through systemd's LimitNOFILE) runs.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur >= limit.rlim_max {
            return;
        }
        let wanted = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0
    };
    if !raised {
        eprintln!(
            "shoal: cannot raise the open file limit above {}",
            limit.rlim_cur
        );
    }
}

/// A bare level (`info`) applies to shoal; raft's and sled's chatter stays
/// at warnings unless a full filter asks for it.
fn log_filter(level: &str) -> String {
    if level.contains('=') || level.contains(',') {
        level.to_string()
    } else {
        format!("{level},openraft=warn,sled=warn")
    }
}
