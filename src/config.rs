//! Every flag and default in one struct: what a Docker user passes to
//! `dockerd`, spelled the way dockerd spells it.

use std::path::PathBuf;

use clap::Parser;

/// shoal: Docker swarm mode for any Docker host, without touching its engine.
///
/// shoal listens where Docker clients expect an engine. It answers the swarm
/// API (swarm, nodes, services, tasks, secrets, configs, overlay networks)
/// itself and forwards every other call, unchanged, to the local engine.
/// Point a client at it with `DOCKER_HOST=unix:///var/run/shoal.sock`.
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on, as dockerd's -H: unix:///path or tcp://host:port.
    /// Repeat to listen on several.
    #[arg(
        short = 'H',
        long = "host",
        value_name = "ADDR",
        default_value = "unix:///var/run/shoal.sock"
    )]
    pub hosts: Vec<String>,

    /// The local Docker engine that shoal fronts: unix:///path or tcp://host:port.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "unix:///var/run/docker.sock",
        env = "SHOAL_ENGINE"
    )]
    pub engine: String,

    /// Where shoal keeps its state (raft log, certificates).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/shoal")]
    pub data_dir: PathBuf,

    /// Log level: debug, info, warn, error (or a tracing filter).
    #[arg(short = 'l', long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,

    /// Threads that run shoal's work. shoal waits on sockets and the engine
    /// far more than it computes; one thread keeps a proxied request on one
    /// core (no cross-thread wake-ups), which measured +39 µs added p50 on
    /// /_ping against +59 µs with two.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub worker_threads: usize,

    /// Not a daemon flag: fuzz the owned endpoints' decoders and checks
    /// with this many inputs and exit (what `shoal-bench fuzz` runs).
    #[arg(long, hide = true, value_name = "N")]
    pub fuzz_inputs: Option<u64>,

    /// The fuzzer's seed.
    #[arg(long, hide = true, default_value_t = 1)]
    pub fuzz_seed: u64,

    /// The fuzzer's corpus (a folder per target).
    #[arg(long, hide = true, default_value = "fuzz/corpus")]
    pub fuzz_corpus: std::path::PathBuf,

    /// Serve TLS on tcp:// listeners (implied by --tlsverify).
    #[arg(long)]
    pub tls: bool,

    /// Serve TLS on tcp:// listeners and require a client certificate signed by --tlscacert.
    #[arg(long)]
    pub tlsverify: bool,

    /// CA that client certificates must be signed by.
    #[arg(long, value_name = "FILE", default_value = "~/.docker/ca.pem")]
    pub tlscacert: String,

    /// Certificate shoal presents to clients.
    #[arg(long, value_name = "FILE", default_value = "~/.docker/cert.pem")]
    pub tlscert: String,

    /// Key of --tlscert.
    #[arg(long, value_name = "FILE", default_value = "~/.docker/key.pem")]
    pub tlskey: String,

    /// CA that verifies the engine's certificate, for a tcp:// engine with TLS.
    #[arg(long, value_name = "FILE")]
    pub engine_tlscacert: Option<PathBuf>,

    /// Client certificate shoal presents to a TLS engine.
    #[arg(long, value_name = "FILE", requires = "engine_tlskey")]
    pub engine_tlscert: Option<PathBuf>,

    /// Key of --engine-tlscert.
    #[arg(long, value_name = "FILE", requires = "engine_tlscert")]
    pub engine_tlskey: Option<PathBuf>,

    /// Where the cluster port listens, whatever `swarm init`/`join`
    /// `--listen-addr` asks (their default is 0.0.0.0:2377). For several
    /// shoals on one host, e.g. tests: `127.0.0.1:0` picks a free port,
    /// which is then also the advertised port.
    #[arg(long, value_name = "ADDR", env = "SHOAL_CLUSTER_LISTEN_ADDR")]
    pub cluster_listen_addr: Option<String>,

    /// Seconds a client connection may take to send a request's headers
    /// (or stay idle between requests) before shoal closes it: slow-loris
    /// clients cannot hold connections forever. Tests shorten it.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30,
        env = "SHOAL_HEADER_READ_TIMEOUT",
        hide = true
    )]
    pub header_read_timeout: u64,

    /// Seconds a TLS client may take to complete its handshake.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10,
        env = "SHOAL_TLS_HANDSHAKE_TIMEOUT",
        hide = true
    )]
    pub tls_handshake_timeout: u64,
}

impl Config {
    /// How long client connections may stall before shoal drops them.
    pub fn client_timeouts(&self) -> crate::listen::ClientTimeouts {
        crate::listen::ClientTimeouts {
            header_read: std::time::Duration::from_secs(self.header_read_timeout.max(1)),
            tls_handshake: std::time::Duration::from_secs(self.tls_handshake_timeout.max(1)),
        }
    }

    /// Whether tcp:// listeners speak TLS.
    pub fn serves_tls(&self) -> bool {
        self.tls || self.tlsverify
    }

    /// Whether shoal talks TLS to the engine.
    pub fn engine_tls(&self) -> bool {
        self.engine_tlscacert.is_some() || self.engine_tlscert.is_some()
    }
}

/// Expands a leading `~/` the way dockerd does for its TLS defaults.
pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}
