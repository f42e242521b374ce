//! The cluster port's server: TLS (client certificate optional), HTTP/2,
//! and a [`Handler`] told who the peer is.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{tls, Peer};
use crate::body::Body;

/// A peer that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on idle connections, so a dead peer is noticed.
const PING_EVERY: Duration = Duration::from_secs(2);
/// HTTP/2 flow-control windows (see where they are set).
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;
const PING_TIMEOUT: Duration = Duration::from_secs(4);

/// What answers the cluster port's requests. `peer` is `None` for a client
/// without a certificate (a node that is joining).
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        peer: Option<Peer>,
        request: Request<Incoming>,
    ) -> BoxFuture<'static, Response<Body>>;
}

/// Serves `listener` until `shutdown`; open connections are closed then too.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    config: Arc<tls::ServerSlot>,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "cluster port: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The configuration of the moment (certificates rotate).
        let Some(current) = config.current() else {
            continue;
        };
        let acceptor = TlsAcceptor::from(current);
        connections.spawn(connection(
            acceptor,
            stream,
            addr,
            handler.clone(),
            shutdown.clone(),
        ));
    }
    connections.close();
    connections.wait().await;
}

async fn connection<H: Handler>(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::info!(peer = %addr, %error, "cluster port: TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(peer = %addr, "cluster port: TLS handshake timed out");
            return;
        }
    };
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(tls::identity_of)
        .map(|(node_id, role)| Peer {
            node_id,
            role,
            addr,
        });
    tracing::debug!(peer = %addr, node = ?peer.as_ref().map(|p| &p.node_id), "cluster port: connected");
    let service = hyper::service::service_fn(move |request| {
        let handler = handler.clone();
        let peer = peer.clone();
        async move { Ok::<_, std::convert::Infallible>(handler.handle(peer, request).await) }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(PING_EVERY)
        .keep_alive_timeout(PING_TIMEOUT)
        // Raft entries of a few hundred transactions exceed HTTP/2's
        // default 64 KiB window: without larger windows every such
        // append waits a round trip for a window update.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(peer = %addr, %error, "cluster port: connection ended");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}
