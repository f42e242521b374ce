//! `shoal-compat`: the compatibility suite. Records Docker API traffic of the
//! real engine in swarm mode into `api-fixtures/`, replays it against a fresh
//! shoal and compares, with `compat-tests/ledger.txt` saying what is expected.
//!
//! ```text
//! cargo run --bin shoal-compat -- record [SCENARIO…]    # real engine, swarm mode for a moment
//! cargo run --bin shoal-compat -- check [-v]            # replay, compare with the ledger
//! cargo run --bin shoal-compat -- report [-v]           # table scenario × command
//! ```

#[path = "shoal_compat/mod.rs"]
mod compat;

use clap::{Parser, Subcommand};

/// The compatibility suite: record from Docker, replay against shoal.
#[derive(Debug, Parser)]
#[command(name = "shoal-compat", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Record the scenarios from the real engine (puts it into swarm mode
    /// for each scenario, always leaves and cleans up).
    Record(compat::record::RecordArgs),
    /// Replay the fixtures against a fresh shoal; fail when a result differs
    /// from the ledger.
    Check(compat::replay::ReplayArgs),
    /// Replay and print the table scenario × command and `N passed, N failed`.
    Report(compat::replay::ReplayArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Record(a) => compat::record::record(&a),
        Cmd::Check(a) => compat::replay::check(&a),
        Cmd::Report(a) => compat::replay::report(&a),
    }
}
