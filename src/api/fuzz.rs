//! A fuzzer over what shoal's own endpoints do with a request before it
//! reaches raft: the body decoders (Go's syntax check and key folding),
//! the filters and query readers, and each write endpoint's checks against
//! an in-memory store (service validation, network resolution and the
//! endpoint's VIPs and ports, secret/config/node/swarm specs, network
//! allocation). Nothing is proposed: those checks are what stands between
//! a hostile body and the store.
//!
//! Inputs are mutations of a corpus of valid requests (`fuzz/corpus/<target>/`).
//! Each runs on a worker thread under `catch_unwind`, the caller waiting
//! with a deadline: a panic or an input that does not finish in time is
//! reported with the input. `shoal-bench fuzz` runs it as a long command
//! (through the hidden `shoal --fuzz-inputs`); a unit test replays the
//! corpus and a short run in CI.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{ConfigSpec, NodeSpec, SecretSpec, ServiceSpec, SwarmInitRequest, SwarmSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::decode;
use super::filters::Filters;
use super::query::Query;
use super::secrets::{self, Flavor};
use super::{networks, nodes, services, swarm, ApiError};
use crate::network::allocate::{self, CreateRequest};
use crate::store::Store;

/// What an input is fed to; the corpus has a folder per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    ServiceCreate,
    SecretCreate,
    ConfigCreate,
    NodeUpdate,
    SwarmInit,
    SwarmJoin,
    SwarmUpdate,
    SwarmUnlock,
    NetworkCreate,
    /// The `filters` query parameter of every list endpoint, and the query.
    Query,
}

pub const TARGETS: [(Target, &str); 10] = [
    (Target::ServiceCreate, "services"),
    (Target::SecretCreate, "secrets"),
    (Target::ConfigCreate, "configs"),
    (Target::NodeUpdate, "nodes"),
    (Target::SwarmInit, "swarm-init"),
    (Target::SwarmJoin, "swarm-join"),
    (Target::SwarmUpdate, "swarm-update"),
    (Target::SwarmUnlock, "swarm-unlock"),
    (Target::NetworkCreate, "networks"),
    (Target::Query, "query"),
];

/// The filters each list endpoint allows (the `query` target tries all).
const FILTER_SETS: [&[&str]; 4] = [
    &["id", "label", "mode", "name", "runtime"],
    &["id", "label", "membership", "name", "node.label", "role"],
    &["desired-state", "id", "label", "name", "node", "service"],
    &["id", "label", "name", "names"],
];

/// Feeds one input to its target. `Err` is a refusal (what hostile input
/// should get); only a panic or a hang is a finding.
pub fn run_one(store: &Store, target: Target, input: &[u8]) -> Result<(), ApiError> {
    match target {
        Target::ServiceCreate => service_create(store, input),
        Target::SecretCreate => {
            let spec = secrets::Spec::from_secret(decode::body::<SecretSpec>(input)?);
            secrets::validate(Flavor::Secret, &spec)
        }
        Target::ConfigCreate => {
            let spec = secrets::Spec::from_config(decode::body::<ConfigSpec>(input)?);
            secrets::validate(Flavor::Config, &spec)
        }
        Target::NodeUpdate => {
            let _: NodeSpec = nodes::node_spec(decode::value(input)?)?;
            Ok(())
        }
        Target::SwarmInit => {
            let value = decode::value(input)?;
            let _: SwarmInitRequest = decode::from_value(&value)?;
            let _: swarm::InitExtras = decode::from_value(&value)?;
            Ok(())
        }
        Target::SwarmJoin => decode::body::<swarm::JoinBody>(input)
            .map(drop)
            .map_err(Into::into),
        Target::SwarmUpdate => swarm::validate_update(&decode::body::<SwarmSpec>(input)?),
        Target::SwarmUnlock => decode::body::<swarm::UnlockBody>(input)
            .map(drop)
            .map_err(Into::into),
        Target::NetworkCreate => {
            let request: CreateRequest = decode::body(input)?;
            networks::validate_name(request.name.as_deref().unwrap_or(""))?;
            let mut rng = StdRng::seed_from_u64(1);
            allocate::new_network(store, &request, &mut rng)?;
            Ok(())
        }
        Target::Query => query(input),
    }
}

/// `POST /services/create` up to the proposal.
fn service_create(store: &Store, input: &[u8]) -> Result<(), ApiError> {
    let mut spec: ServiceSpec = decode::body(input)?;
    services::check_runtime(&spec)?;
    if spec.name.as_deref().unwrap_or("").is_empty() {
        spec.name = Some("fuzzed".to_string());
    }
    services::validate(store, &spec)?;
    services::normalise(&mut spec);
    allocate::resolve_service_networks(store, &mut spec)?;
    allocate::endpoint(store, None, &spec, None)?;
    Ok(())
}

fn query(input: &[u8]) -> Result<(), ApiError> {
    let text = String::from_utf8_lossy(input);
    let query = Query::parse(Some(&text));
    let _ = query.version("service");
    let _ = query.strict_bool("force");
    let _ = query.flag("force");
    for allowed in FILTER_SETS {
        let _ = Filters::parse(Some(&text), allowed);
        let _ = Filters::parse(query.get("filters"), allowed);
    }
    Ok(())
}

/// The corpus: every file under `dir/<target>/`, by target.
pub fn load_corpus(dir: &Path) -> std::io::Result<Vec<(Target, Vec<u8>)>> {
    let mut corpus = Vec::new();
    for (target, name) in TARGETS {
        let folder = dir.join(name);
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            corpus.push((target, std::fs::read(&path)?));
        }
    }
    Ok(corpus)
}

/// Tokens that break parsers: numbers beyond every integer type, nesting,
/// Go's case folding, odd strings.
const TOKENS: &[&str] = &[
    "-1",
    "0",
    "-0",
    "1e400",
    "-1e400",
    "18446744073709551616",
    "9223372036854775808",
    "-9223372036854775809",
    "4294967296",
    "65536",
    "1.5",
    "null",
    "true",
    "\"\"",
    "{}",
    "[]",
    "[[[[[[[[",
    "{\"a\":{\"a\":{\"a\":",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"ſ\"",
    "\"K\"",
    ",",
    ":",
    "\"",
    "\\",
    "\u{0}",
    "\"Replicas\":",
    "\"Name\":",
    "\"Labels\":",
    "\"Mode\":",
    "\"PublishedPort\":",
    "\"MemoryBytes\":",
    "\"Data\":",
    "%7B",
    "&filters=",
];

/// One mutation of `input` (and maybe another corpus entry spliced in).
pub fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let rounds = 1 + rng.gen_range(0..4);
    for _ in 0..rounds {
        let at = if out.is_empty() {
            0
        } else {
            rng.gen_range(0..=out.len())
        };
        match rng.gen_range(0..9) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 => out.insert(at, rng.gen()),
            2 if !out.is_empty() => {
                let end = (at + rng.gen_range(1..16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 | 4 => {
                let token = TOKENS[rng.gen_range(0..TOKENS.len())].as_bytes();
                out.splice(at..at, token.iter().copied());
            }
            5 => {
                // Replace a number with an extreme one.
                if let Some(start) = out.iter().position(|b| b.is_ascii_digit()) {
                    let end = out[start..]
                        .iter()
                        .position(|b| !b.is_ascii_digit())
                        .map_or(out.len(), |n| start + n);
                    let token = TOKENS[rng.gen_range(0..11)].as_bytes();
                    out.splice(start..end, token.iter().copied());
                }
            }
            6 if !other.is_empty() => {
                let from = rng.gen_range(0..other.len());
                let end = (from + rng.gen_range(1..64)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            7 if out.len() < 1 << 16 => {
                // Repeat a chunk: long strings, many keys, deep nesting.
                let start = at.saturating_sub(rng.gen_range(1..32));
                let chunk = out[start..at].to_vec();
                let times = rng.gen_range(2..200);
                for _ in 0..times {
                    out.splice(at..at, chunk.iter().copied());
                }
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub tried: u64,
    pub refused: u64,
    pub panics: Vec<(Target, Vec<u8>)>,
    pub hang: Option<(Target, Vec<u8>)>,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub elapsed: Duration,
}

/// Resident memory of this process, in KiB (0 where /proc is missing).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Replays the corpus, then `mutations` mutated inputs from `seed`, each
/// with `timeout`. Stops at the first hang (its thread cannot be stopped).
pub fn run(corpus: &[(Target, Vec<u8>)], mutations: u64, seed: u64, timeout: Duration) -> Report {
    let started = Instant::now();
    let mut report = Report {
        rss_start_kib: rss_kib(),
        ..Report::default()
    };
    let (to_worker, inputs) = mpsc::channel::<(Target, Vec<u8>)>();
    let (to_caller, results) = mpsc::channel::<(Target, Vec<u8>, Result<bool, ()>)>();
    let store = Store::new();
    let worker = std::thread::spawn(move || work(&store, inputs, to_caller));
    let mut rng = StdRng::seed_from_u64(seed);
    let total = corpus.len() as u64 + mutations;
    for n in 0..total {
        let (target, input) = match corpus.get(n as usize) {
            Some(entry) => entry.clone(),
            None if corpus.is_empty() => break,
            None => {
                let (target, base) = &corpus[rng.gen_range(0..corpus.len())];
                let (_, other) = &corpus[rng.gen_range(0..corpus.len())];
                (*target, mutate(&mut rng, base, other))
            }
        };
        if to_worker.send((target, input.clone())).is_err() {
            break;
        }
        match results.recv_timeout(timeout) {
            Ok((target, input, outcome)) => {
                report.tried += 1;
                match outcome {
                    Ok(true) => {}
                    Ok(false) => report.refused += 1,
                    Err(()) => report.panics.push((target, input)),
                }
            }
            Err(_) => {
                report.hang = Some((target, input));
                break;
            }
        }
    }
    drop(to_worker);
    if report.hang.is_none() {
        let _ = worker.join();
    }
    report.rss_end_kib = rss_kib();
    report.elapsed = started.elapsed();
    report
}

fn work(
    store: &Arc<Store>,
    inputs: mpsc::Receiver<(Target, Vec<u8>)>,
    results: mpsc::Sender<(Target, Vec<u8>, Result<bool, ()>)>,
) {
    for (target, input) in inputs {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_one(store, target, &input).is_ok()
        }))
        .map_err(drop);
        if results.send((target, input, outcome)).is_err() {
            return;
        }
    }
}

/// `shoal --fuzz-inputs N`: the command `shoal-bench fuzz` runs. Prints the
/// figures; crashing inputs go to `<corpus>/../crashes/`. Fails on any.
pub fn command(inputs: u64, seed: u64, corpus_dir: &Path) -> anyhow::Result<()> {
    let corpus = load_corpus(corpus_dir)?;
    anyhow::ensure!(
        !corpus.is_empty(),
        "no corpus under {}",
        corpus_dir.display()
    );
    let mutations = inputs.saturating_sub(corpus.len() as u64);
    let report = run(&corpus, mutations, seed, Duration::from_secs(5));
    let rate = report.tried as f64 / report.elapsed.as_secs_f64().max(1e-9);
    println!("corpus entries      {}", corpus.len());
    println!("inputs tried        {}", report.tried);
    println!("refused (4xx-like)  {}", report.refused);
    println!("panics              {}", report.panics.len());
    println!("hangs (>5 s)        {}", u8::from(report.hang.is_some()));
    println!(
        "elapsed             {:.1} s ({rate:.0} inputs/s)",
        report.elapsed.as_secs_f64()
    );
    println!(
        "RSS start → end     {} KiB → {} KiB",
        report.rss_start_kib, report.rss_end_kib
    );
    let crashes = corpus_dir.join("../crashes");
    let found: Vec<_> = report.panics.iter().chain(report.hang.iter()).collect();
    for (i, (target, input)) in found.iter().enumerate() {
        std::fs::create_dir_all(&crashes)?;
        let name = TARGETS
            .iter()
            .find(|(t, _)| t == target)
            .map_or("?", |(_, n)| n);
        let path = crashes.join(format!("{name}-{seed}-{i}.bin"));
        std::fs::write(&path, input)?;
        println!("finding             {}", path.display());
    }
    anyhow::ensure!(found.is_empty(), "{} findings", found.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
    }

    /// CI's replay: every corpus entry (valid requests and every input
    /// that once crashed) and a short mutation run, without a panic or hang.
    #[test]
    fn the_corpus_and_a_short_run_neither_panic_nor_hang() {
        let corpus = load_corpus(&corpus_dir()).expect("corpus");
        assert!(
            corpus.len() >= TARGETS.len(),
            "corpus too small: {}",
            corpus.len()
        );
        let report = run(&corpus, 20_000, 7, Duration::from_secs(5));
        assert!(report.panics.is_empty(), "panics: {:?}", report.panics);
        assert!(report.hang.is_none(), "hang: {:?}", report.hang);
        assert_eq!(report.tried, corpus.len() as u64 + 20_000);
    }

    #[test]
    fn the_valid_requests_of_the_corpus_are_accepted() {
        let store = Store::new();
        for (target, name) in TARGETS {
            let folder = corpus_dir().join(name);
            for entry in std::fs::read_dir(&folder).expect("corpus folder").flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                // crash-*: inputs that once crashed shoal, refused now.
                if !file.starts_with("valid-") {
                    continue;
                }
                let input = std::fs::read(entry.path()).expect("corpus file");
                if let Err(error) = run_one(&store, target, &input) {
                    panic!("{name}/{file}: {error}");
                }
            }
        }
    }

    #[test]
    fn a_deeply_nested_body_is_refused_not_a_crash() {
        let store = Store::new();
        let deep = "[".repeat(1_000_000);
        let error = run_one(&store, Target::ServiceCreate, deep.as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "exceeded max depth: JSON nested deeper than 128 levels"
        );
    }
}
