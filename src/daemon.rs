//! Wires the parts together for one run of the daemon: listeners in front,
//! the proxy behind, and a shutdown that closes everything it opened.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::DockerExecutor;
use crate::api::Api;
use crate::cluster::{Cluster, ClusterError, ClusterOptions};
use crate::config::{expand_home, Config};
use crate::engine::EngineSettings;
use crate::listen::{ListenAddr, ListenError, Listener};
use crate::network::NodeNetwork;
use crate::proxy::engine::EngineAddrError;
use crate::proxy::Proxy;
use crate::tls::{self, TlsError};

/// How long in-flight requests get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Engine(#[from] EngineAddrError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

pub async fn run(config: Config) -> Result<(), StartError> {
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();

    // The one way every part reaches the engine (TLS or not).
    let engine = EngineSettings::new(&config.engine, engine_tls(&config)?)?;
    let proxy = Proxy::new(&engine, shutdown.clone(), tasks.clone());
    let executor = Arc::new(DockerExecutor::new(engine.clone()));
    let options = ClusterOptions {
        listen_override: config.cluster_listen_addr.clone(),
        proxy: Some(proxy.clone()),
        network: NodeNetwork::new(engine),
    };
    let cluster = Cluster::open(&config.data_dir, executor, options).await?;
    let api = Api::new(proxy, cluster.clone());

    let listeners = bind_all(&config).await?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;

    let serving = TaskTracker::new();
    for listener in listeners {
        tracing::info!(address = %listener.describe(), engine = %config.engine, "shoal listening");
        serving.spawn(listener.serve(
            api.clone(),
            config.client_timeouts(),
            shutdown.clone(),
            tasks.clone(),
        ));
    }
    serving.close();
    tasks.spawn(return_free_memory(shutdown.clone()));

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
    // Listeners stop accepting and remove their sockets first.
    serving.wait().await;
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish in time; closing them");
    }
    cluster.shutdown().await;
    Ok(())
}

/// Binds every `-H` address before serving any, so a bad one fails the start.
async fn bind_all(config: &Config) -> Result<Vec<Listener>, StartError> {
    let acceptor = client_tls(config)?;
    let mut listeners = Vec::new();
    for host in &config.hosts {
        let addr = ListenAddr::parse(host, config.serves_tls())?;
        let tls = matches!(addr, ListenAddr::Tcp(_))
            .then(|| acceptor.clone())
            .flatten();
        listeners.push(Listener::bind(&addr, tls).await?);
    }
    Ok(listeners)
}

/// The TLS acceptor for tcp:// listeners, when `--tls` or `--tlsverify` is set.
fn client_tls(config: &Config) -> Result<Option<TlsAcceptor>, StartError> {
    if !config.serves_tls() {
        return Ok(None);
    }
    let ca = config.tlsverify.then(|| expand_home(&config.tlscacert));
    let server = tls::server_config(
        &expand_home(&config.tlscert),
        &expand_home(&config.tlskey),
        ca.as_deref(),
    )?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

fn engine_tls(config: &Config) -> Result<Option<Arc<rustls::ClientConfig>>, StartError> {
    if !config.engine_tls() {
        return Ok(None);
    }
    let cert_and_key = config
        .engine_tlscert
        .as_deref()
        .zip(config.engine_tlskey.as_deref());
    let client = tls::engine_client_config(config.engine_tlscacert.as_deref(), cert_and_key)?;
    Ok(Some(Arc::new(client)))
}

/// How often freed heap goes back to the system.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// glibc keeps what a burst freed (a raft snapshot built, 10,000 client
/// connections closed, a large listing answered) in its arenas: shoal's RSS
/// would stay at its peak. Every [`TRIM_EVERY`], on a blocking thread (a
/// trim walks the heap), the free pages go back. Ends at `shutdown`.
async fn return_free_memory(shutdown: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TRIM_EVERY) => {}
        }
        #[cfg(target_env = "gnu")]
        {
            // SAFETY: malloc_trim only releases free memory of the heap.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    }
}
