//! The cluster port's client: one HTTP/2 connection per peer address,
//! reused by every call and stream to it, re-opened when it breaks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::TransportError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pings on every connection so a dead peer fails calls and streams in
/// seconds instead of at the kernel's TCP timeout.
const PING_EVERY: Duration = Duration::from_secs(1);
/// HTTP/2 flow-control windows (see where they are set).
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Most a JSON answer may be (raft entries and snapshots come in chunks).
const MAX_ANSWER: usize = 256 << 20;

type Sender = SendRequest<Full<Bytes>>;

/// Connections to peers, keyed by address and the name their certificate
/// must carry (`swarm-manager`, or a node ID).
pub struct Peers {
    /// Replaced when the node's certificate is renewed.
    connector: std::sync::RwLock<TlsConnector>,
    connections: Mutex<HashMap<(String, String), Sender>>,
    /// Ends every connection's driver when the pool goes away.
    closed: CancellationToken,
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl Peers {
    pub fn new(config: rustls::ClientConfig) -> Peers {
        Peers {
            connector: std::sync::RwLock::new(TlsConnector::from(Arc::new(config))),
            connections: Mutex::default(),
            closed: CancellationToken::new(),
        }
    }

    /// Sends `body` as JSON to `path` and decodes the JSON answer. An
    /// error status becomes [`TransportError::Refused`] with the answer's
    /// `message`.
    pub async fn call<Q: Serialize, R: DeserializeOwned>(
        &self,
        addr: &str,
        name: &str,
        path: &str,
        body: &Q,
        timeout: Duration,
    ) -> Result<R, TransportError> {
        let work = async {
            let response = self.open(addr, name, path, body).await?;
            let bytes = read_all(addr, response.into_body()).await?;
            serde_json::from_slice(&bytes).map_err(|e| TransportError::BadAnswer {
                addr: addr.to_string(),
                reason: e.to_string(),
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| TransportError::Timeout {
                addr: addr.to_string(),
                secs: timeout.as_secs(),
            })?
    }

    /// Sends `body` as JSON to `path`; returns the answer with its body
    /// still to be read (a stream), or the refusal.
    pub async fn open<Q: Serialize>(
        &self,
        addr: &str,
        name: &str,
        path: &str,
        body: &Q,
    ) -> Result<Response<Incoming>, TransportError> {
        let bytes = serde_json::to_vec(body).map_err(|e| TransportError::BadAnswer {
            addr: addr.to_string(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("https://{addr}{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| TransportError::BadAnswer {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        let mut sender = self.sender(addr, name).await?;
        let response = sender.send_request(request).await.map_err(|e| {
            self.forget(addr, name);
            TransportError::Unreachable {
                addr: addr.to_string(),
                reason: e.to_string(),
            }
        })?;
        if response.status() == StatusCode::OK {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let bytes = read_all(addr, response.into_body()).await?;
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(TransportError::Refused { status, message })
    }

    /// New connections present the certificate of `config` (a renewal);
    /// open ones are closed so none keeps the old one.
    pub fn renew(&self, config: rustls::ClientConfig) {
        if let Ok(mut connector) = self.connector.write() {
            *connector = TlsConnector::from(Arc::new(config));
        }
        if let Ok(mut connections) = self.connections.lock() {
            connections.clear();
        }
    }

    fn forget(&self, addr: &str, name: &str) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.remove(&(addr.to_string(), name.to_string()));
        }
    }

    async fn sender(&self, addr: &str, name: &str) -> Result<Sender, TransportError> {
        let key = (addr.to_string(), name.to_string());
        let cached = self
            .connections
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned());
        if let Some(mut sender) = cached {
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let sender = self.connect(addr, name).await?;
        if let Ok(mut connections) = self.connections.lock() {
            connections.insert(key, sender.clone());
        }
        Ok(sender)
    }

    async fn connect(&self, addr: &str, name: &str) -> Result<Sender, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable {
            addr: addr.to_string(),
            reason,
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| TransportError::Timeout {
                addr: addr.to_string(),
                secs: CONNECT_TIMEOUT.as_secs(),
            })?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| TransportError::Tls(format!("bad server name {name:?}: {e}")))?;
        let connector = self
            .connector
            .read()
            .map(|c| c.clone())
            .map_err(|_| TransportError::Tls("connector lock poisoned".to_string()))?;
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server_name, tcp))
            .await
            .map_err(|_| TransportError::Timeout {
                addr: addr.to_string(),
                secs: CONNECT_TIMEOUT.as_secs(),
            })?
            .map_err(|e| TransportError::Tls(format!("{addr}: {e}")))?;
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(PING_EVERY)
            .keep_alive_timeout(PING_TIMEOUT)
            .keep_alive_while_idle(true)
            // Raft entries of a few hundred transactions exceed HTTP/2's
            // default 64 KiB window: without larger windows every such
            // append waits a round trip for a window update.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        let (sender, connection) = builder
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let closed = self.closed.clone();
        let peer = addr.to_string();
        tokio::spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "cluster connection ended");
                    }
                }
                _ = closed.cancelled() => {}
            }
        });
        Ok(sender)
    }
}

async fn read_all(addr: &str, body: Incoming) -> Result<Bytes, TransportError> {
    let limited = http_body_util::Limited::new(body, MAX_ANSWER);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| TransportError::Unreachable {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
}

/// Reads newline-delimited JSON messages from a stream's body, one at a time.
pub struct Lines {
    body: Incoming,
    buffer: Vec<u8>,
}

impl Lines {
    pub fn new(body: Incoming) -> Lines {
        Lines {
            body,
            buffer: Vec::new(),
        }
    }

    /// The next message; `None` when the stream ended or broke.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Option<Result<T, String>> {
        loop {
            if let Some(at) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=at).collect();
                return Some(serde_json::from_slice(&line).map_err(|e| e.to_string()));
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                if self.buffer.len() + data.len() > MAX_ANSWER {
                    return Some(Err("message too large".into()));
                }
                self.buffer.extend_from_slice(&data);
            }
        }
    }
}
