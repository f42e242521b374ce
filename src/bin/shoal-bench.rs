//! `shoal-bench`: benchmark commands for shoal (a command, never a timed test).
//!
//! Each subcommand measures one part of shoal against what it stands in for,
//! in the same run, and prints ratios and a verdict per goal:
//!
//! ```text
//! cargo build --release --bin shoal
//! cargo run --release --bin shoal-bench -- proxy [--rounds 5] [--requests 2000]
//! cargo run --release --bin shoal-bench -- proxy --latency-only           # vs HAProxy, socat
//! cargo run --release --bin shoal-bench -- idle [--connections 10000]
//! cargo run --release --bin shoal-bench -- services [--skip-real] [--replicas-max 50]
//! cargo run --release --bin shoal-bench -- raft [--writes 10000] [--log-writes 100000]
//! cargo run --release --bin shoal-bench -- network [--clients 8] [--replicas 10]
//! cargo run --release --bin shoal-bench -- cluster [--hosts 5] [--skip-real]   # root
//! cargo run --release --bin shoal-bench -- overlay [--clients 8] [--seconds 10]  # root
//! cargo run --release --bin shoal-bench -- fuzz [--inputs 1000000] [--seed 1]
//! cargo run --release --bin shoal-bench -- load [--clients 32] [--seconds 60]
//! ```

#[path = "shoal_bench/mod.rs"]
mod bench;

use clap::{Parser, Subcommand};

/// Benchmarks shoal against the Docker engine it fronts.
#[derive(Debug, Parser)]
#[command(name = "shoal-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The passthrough proxy: keep-alive latency, streamed `docker save`
    /// throughput and shoal's memory, direct to the engine vs through shoal.
    Proxy(bench::proxy::ProxyArgs),
    /// Idle clients: shoal's RSS with 10,000 idle connections, `GET /_ping`
    /// latency beside them, and when shoal cuts them.
    Idle(bench::idle::IdleArgs),
    /// Services and rolling updates: the engine's own swarm mode, shoal and
    /// the engine floor in one run (create 1/10/50, scale, rolling update),
    /// goals max(0.5× real swarm, 1.2× floor); RSS vs dockerd.
    Services(bench::services::ServicesArgs),
    /// The raft store through shoal's API: committed durable writes/s single
    /// and batched, commit latency, RSS at 10,000 objects, restart time
    /// with a 100,000-entry log.
    Raft(bench::raft::RaftArgs),
    /// Published ports: requests/s and p50/p99 latency through the ingress
    /// proxy vs. the container's own address; failed requests during a
    /// rolling update of 10 replicas under load (goal 0).
    Network(bench::network::NetworkArgs),
    /// Many hosts (simulated, needs root): real swarm vs shoal, join →
    /// Ready, 50 replicas → running; committed writes/s with 3 managers;
    /// RSS of a manager and a worker.
    Cluster(bench::cluster::ClusterArgs),
    /// The data plane across 3 simulated hosts (needs root): a task's
    /// overlay address vs its VIP vs published ports of nodes without a
    /// task; a rolling update of 10 replicas under load (goal 0 failed);
    /// how fast a cut-off host's tasks leave DNS, VIPs and ports.
    Overlay(bench::overlay::OverlayArgs),
    /// Bad input: mutated requests through the decoders and checks of
    /// every endpoint shoal answers itself; panics, hangs, RSS.
    Fuzz(bench::fuzz::FuzzArgs),
    /// Mixed load: concurrent clients creating, inspecting, updating and
    /// removing services, creating secrets, listing tasks and services and
    /// making proxied calls; throughput, p50/p99 and errors per kind (goal
    /// 0), then every acknowledged object checked; RSS.
    Load(bench::load::LoadArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One thread for the client side: every request is sequential, and a
    // single-threaded runtime keeps cross-thread wake-ups out of the figures
    // (on a 2-CPU host the engine and shoal need the other core).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let work = async {
            match cli.command {
                Command::Proxy(args) => bench::proxy::run(args).await,
                Command::Idle(args) => bench::idle::run(args).await,
                Command::Services(args) => bench::services::run(args).await,
                Command::Raft(args) => bench::raft::run(args).await,
                Command::Network(args) => bench::network::run(args).await,
                Command::Cluster(args) => bench::cluster::run(args).await,
                Command::Overlay(args) => bench::overlay::run(args).await,
                Command::Fuzz(args) => bench::fuzz::run(args).await,
                Command::Load(args) => bench::load::run(args).await,
            }
        };
        // On Ctrl-C the work future is dropped, which stops the shoal it
        // started and removes its temporary directory.
        tokio::select! {
            result = work => result,
            signal = tokio::signal::ctrl_c() => {
                signal?;
                anyhow::bail!("interrupted")
            }
        }
    })
}
