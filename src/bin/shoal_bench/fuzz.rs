//! `shoal-bench fuzz`: mutated requests through the decoders and checks of
//! every endpoint shoal answers itself, in-process, counting panics and
//! hangs and the process's RSS at start and end. The harness lives in the
//! daemon (`api::fuzz`, whose modules are the binary's), so this runs
//! `shoal --fuzz-inputs N` and relays its figures.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Inputs to try (the corpus first, then mutations of it).
    #[arg(long, default_value_t = 1_000_000)]
    inputs: u64,
    /// Seed of the mutations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The corpus: a folder per target of valid requests.
    #[arg(long, default_value = "fuzz/corpus")]
    corpus: PathBuf,
}

pub async fn run(args: FuzzArgs) -> anyhow::Result<()> {
    let bin = shoal::testkit::shoal_bin();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(&bin)
            .arg("--fuzz-inputs")
            .arg(args.inputs.to_string())
            .arg("--fuzz-seed")
            .arg(args.seed.to_string())
            .arg("--fuzz-corpus")
            .arg(&args.corpus)
            .status()
            .with_context(|| format!("cannot run {}", bin.display()))
    })
    .await??;
    anyhow::ensure!(status.success(), "the fuzz run found problems ({status})");
    Ok(())
}
