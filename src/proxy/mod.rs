//! Passthrough to the engine. Bodies stream both ways without buffering;
//! upgraded (hijacked) connections for attach, exec and BuildKit are spliced
//! byte for byte with half-close. Only hop-by-hop headers are touched.

pub mod engine;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::body::{Body, BoxError};
use crate::engine::EngineSettings;
use engine::EngineConnector;

/// Why a call could not be passed to the engine.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot reach the Docker engine at {engine}: {reason}")]
    EngineUnreachable { engine: String, reason: String },
    #[error("invalid request URI {0:?}")]
    BadUri(String),
    #[error("the Docker engine answered {path} with {status}: {detail}")]
    EngineAnswer {
        path: String,
        status: StatusCode,
        detail: String,
    },
}

/// What shoal's own answers share with the engine's: the API version and
/// the headers the engine puts on every response.
#[derive(Debug, Clone)]
pub struct EngineIdentity {
    /// The highest API version the engine speaks, e.g. "1.41".
    pub api_version: String,
    /// `Api-Version`, `Docker-Experimental`, `Ostype`, `Server`.
    pub headers: HeaderMap,
}

/// Headers the engine sets on every response, which shoal's own repeat.
const IDENTITY_HEADERS: [&str; 4] = ["api-version", "docker-experimental", "ostype", "server"];

/// Forwards requests to the local engine over a pool of keep-alive connections.
#[derive(Clone)]
pub struct Proxy {
    client: Client<EngineConnector, Body>,
    /// The engine address as the user wrote it, for error messages.
    engine_label: Arc<str>,
    /// Fires at shutdown: open streams and spliced connections end.
    shutdown: CancellationToken,
    /// Spliced connections outlive their request; shutdown waits for them.
    tasks: TaskTracker,
    /// Learnt from the engine's first answer to `/_ping`, then kept.
    identity: Arc<tokio::sync::OnceCell<EngineIdentity>>,
}

impl Proxy {
    pub fn new(engine: &EngineSettings, shutdown: CancellationToken, tasks: TaskTracker) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .http1_preserve_header_case(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build(engine.connector());
        Self {
            client,
            engine_label: engine.label().into(),
            shutdown,
            tasks,
            identity: Arc::default(),
        }
    }

    /// The engine's identity if it has been learnt already (no engine call).
    pub fn known_identity(&self) -> Option<&EngineIdentity> {
        self.identity.get()
    }

    /// The engine's API version and common headers; asked once, retried
    /// while the engine is unreachable.
    pub async fn identity(&self) -> Result<&EngineIdentity, ProxyError> {
        self.identity
            .get_or_try_init(|| async {
                let response = self.get("/_ping").await?;
                let mut headers = HeaderMap::new();
                for name in IDENTITY_HEADERS {
                    if let Some(value) = response.headers().get(name) {
                        headers.insert(name, value.clone());
                    }
                }
                let api_version = headers
                    .get("api-version")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("1.24")
                    .to_string();
                Ok(EngineIdentity {
                    api_version,
                    headers,
                })
            })
            .await
    }

    /// GETs `path` from the engine for shoal's own use and parses the JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ProxyError> {
        let response = self.get(path).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable_by(&e))?
            .to_bytes();
        if !status.is_success() {
            return Err(ProxyError::EngineAnswer {
                path: path.to_string(),
                status,
                detail: String::from_utf8_lossy(&bytes).trim().to_string(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ProxyError::EngineAnswer {
            path: path.to_string(),
            status,
            detail: format!("invalid JSON: {e}"),
        })
    }

    /// A GET of shoal's own to the engine; the body streams.
    pub async fn get(&self, path: &str) -> Result<Response<Incoming>, ProxyError> {
        let request = Request::get(format!("http://docker{path}"))
            .header(header::HOST, "docker")
            .body(crate::body::empty())
            .map_err(|_| ProxyError::BadUri(path.to_string()))?;
        self.client
            .request(request)
            .await
            .map_err(|e| self.unreachable(&e))
    }

    /// Sends `req` to the engine unchanged and returns its answer unchanged,
    /// splicing the two connections when the engine upgrades.
    pub async fn forward(&self, mut req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
        let wants_upgrade = is_upgrade(req.headers());
        let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));

        let (mut parts, incoming) = req.into_parts();
        parts.uri = engine_uri(&parts.uri)?;
        strip_hop_by_hop(&mut parts.headers, wants_upgrade);
        let upstream = Request::from_parts(parts, incoming.boxed_unsync_errors());

        let mut response = self
            .client
            .request(upstream)
            .await
            .map_err(|e| self.unreachable(&e))?;

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let engine_upgrade = hyper::upgrade::on(&mut response);
                self.splice(client_upgrade, engine_upgrade);
            }
            let (parts, _) = response.into_parts();
            return Ok(Response::from_parts(parts, crate::body::empty()));
        }

        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        let body = if parts.headers.contains_key(header::CONTENT_LENGTH) {
            incoming.map_err(BoxError::from).boxed_unsync()
        } else {
            // An open-ended stream (logs -f, events, stats) ends at shutdown.
            UntilShutdown::new(incoming, self.shutdown.clone()).boxed_unsync()
        };
        Ok(Response::from_parts(parts, body))
    }

    /// Sends a request whose body shoal has already read (and may have
    /// rewritten) to the engine; the answer comes back as `forward`'s does.
    pub async fn forward_bytes(
        &self,
        mut parts: http::request::Parts,
        body: Bytes,
    ) -> Result<Response<Body>, ProxyError> {
        parts.uri = engine_uri(&parts.uri)?;
        strip_hop_by_hop(&mut parts.headers, false);
        if !body.is_empty() || parts.headers.contains_key(header::CONTENT_LENGTH) {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let upstream = Request::from_parts(parts, crate::body::full(body));
        let response = self
            .client
            .request(upstream)
            .await
            .map_err(|e| self.unreachable(&e))?;
        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        Ok(Response::from_parts(
            parts,
            incoming.map_err(BoxError::from).boxed_unsync(),
        ))
    }

    /// Copies bytes both ways between the client's and the engine's upgraded
    /// connections until both sides have closed (or shoal shuts down).
    fn splice(&self, client: hyper::upgrade::OnUpgrade, engine: hyper::upgrade::OnUpgrade) {
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let (client, engine) = match tokio::try_join!(client, engine) {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::debug!(%error, "upgrade did not complete");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut engine = TokioIo::new(engine);
            tokio::select! {
                result = tokio::io::copy_bidirectional(&mut client, &mut engine) => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "spliced connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
        });
    }

    fn unreachable(&self, error: &hyper_util::client::legacy::Error) -> ProxyError {
        self.unreachable_by(error)
    }

    fn unreachable_by(&self, error: &(dyn std::error::Error + 'static)) -> ProxyError {
        ProxyError::EngineUnreachable {
            engine: self.engine_label.to_string(),
            reason: root_cause(error),
        }
    }
}

/// The innermost error message: "connection refused", not "client error (Connect)".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Whether the client asks for a hijacked connection (`Connection: Upgrade`).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The pooled client wants an absolute URI; the path and query stay as sent.
fn engine_uri(uri: &Uri) -> Result<Uri, ProxyError> {
    let path_and_query = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    Uri::builder()
        .scheme("http")
        .authority("docker")
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| ProxyError::BadUri(uri.to_string()))
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1). hyper
/// frames each hop itself. For an upgrade the Connection/Upgrade pair is the
/// message, so it stays.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter(|t| !(keep_upgrade && t.eq_ignore_ascii_case("upgrade")))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
    ] {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

pin_project_lite::pin_project! {
    /// A streamed body that ends cleanly when shoal shuts down.
    struct UntilShutdown {
        #[pin]
        inner: Incoming,
        #[pin]
        shutdown: WaitForCancellationFutureOwned,
    }
}

impl UntilShutdown {
    fn new(inner: Incoming, token: CancellationToken) -> Self {
        Self {
            inner,
            shutdown: token.cancelled_owned(),
        }
    }
}

impl HttpBody for UntilShutdown {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if this.shutdown.poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        this.inner.poll_frame(cx).map_err(BoxError::from)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Gives `Incoming` the boxed error type of the client's body.
trait BoxUnsyncErrors {
    fn boxed_unsync_errors(self) -> Body;
}

impl BoxUnsyncErrors for Incoming {
    fn boxed_unsync_errors(self) -> Body {
        self.map_err(BoxError::from).boxed_unsync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn recognises_upgrade_requests() {
        assert!(is_upgrade(&headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "tcp")
        ])));
        assert!(is_upgrade(&headers(&[
            ("connection", "keep-alive, upgrade"),
            ("upgrade", "h2c")
        ])));
        assert!(!is_upgrade(&headers(&[("upgrade", "tcp")])));
        assert!(!is_upgrade(&headers(&[("connection", "upgrade")])));
    }

    #[test]
    fn strips_only_hop_by_hop_headers() {
        let mut map = headers(&[
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-type", "application/json"),
            ("x-registry-auth", "abc"),
        ]);
        strip_hop_by_hop(&mut map, false);
        let names: Vec<_> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "x-registry-auth"]);
    }

    #[test]
    fn keeps_the_upgrade_pair_for_hijacks() {
        let mut map = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "tcp"),
            ("content-type", "text/plain"),
        ]);
        strip_hop_by_hop(&mut map, true);
        assert_eq!(map.get("upgrade").unwrap(), "tcp");
        assert_eq!(map.get("connection").unwrap(), "Upgrade");
    }

    #[test]
    fn engine_uri_keeps_path_and_query() {
        let uri: Uri = "/v1.41/containers/json?all=1&filters=%7B%7D"
            .parse()
            .unwrap();
        assert_eq!(
            engine_uri(&uri).unwrap().to_string(),
            "http://docker/v1.41/containers/json?all=1&filters=%7B%7D"
        );
    }
}
