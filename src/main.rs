//! shoal: flags → Config → run. Nothing else lives here.

mod config;
mod raft;
mod store;
mod types;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let config = config::Config::parse();
    let _ = config;
    Ok(())
}
