use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// One HTTP/1.1 keep-alive connection to a Docker API unix socket.
/// Requests on it are sequential.
pub struct Conn<B = Empty<Bytes>> {
    sender: SendRequest<B>,
    driver: JoinHandle<()>,
    socket: PathBuf,
}

impl<B> Drop for Conn<B> {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl<B> Conn<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    pub async fn connect(socket: &Path) -> Result<Self> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake on {}", socket.display()))?;
        // The connection's own error, if any, also fails the pending request,
        // which is where it is reported.
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            driver,
            socket: socket.to_path_buf(),
        })
    }

    /// Sends `method path` with `body`; returns the response with its body unread.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: B,
    ) -> Result<Response<Incoming>> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, HeaderValue::from_static("docker"));
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let request = builder.body(body).context("building request")?;
        self.sender
            .ready()
            .await
            .with_context(|| format!("connection to {} closed", self.socket.display()))?;
        self.sender
            .send_request(request)
            .await
            .with_context(|| format!("{method} {path} on {}", self.socket.display()))
    }
}

impl Conn<Empty<Bytes>> {
    /// `GET path`, body read and discarded. Returns the status and the number
    /// of body bytes.
    pub async fn get_discard(&mut self, path: &str) -> Result<(StatusCode, u64)> {
        let response = self.send(Method::GET, path, &[], Empty::new()).await?;
        let status = response.status();
        let bytes = drain(response.into_body())
            .await
            .with_context(|| format!("reading the body of GET {path}"))?;
        Ok((status, bytes))
    }

    /// `GET path` expecting 200; the time from sending to the end of the body.
    pub async fn timed_get(&mut self, path: &str) -> Result<Duration> {
        let start = Instant::now();
        let (status, _) = self.get_discard(path).await?;
        let elapsed = start.elapsed();
        if status != StatusCode::OK {
            bail!("GET {path} on {}: {status}", self.socket.display());
        }
        Ok(elapsed)
    }

    /// `GET path` expecting 200 and a JSON body.
    pub async fn get_json(&mut self, path: &str) -> Result<(StatusCode, serde_json::Value)> {
        let response = self.send(Method::GET, path, &[], Empty::new()).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the body of GET {path}"))?
            .to_bytes();
        let value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        });
        Ok((status, value))
    }
}

/// Reads a body to its end, counting and discarding the bytes.
pub async fn drain(mut body: Incoming) -> Result<u64> {
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| anyhow!(e))?;
        if let Some(data) = frame.data_ref() {
            total += data.len() as u64;
        }
    }
    Ok(total)
}

/// The engine's error text from a JSON `{"message": ...}` body, or the body itself.
pub fn message(value: &serde_json::Value) -> String {
    match value.get("message").and_then(|m| m.as_str()) {
        Some(m) => m.to_string(),
        None => value.to_string(),
    }
}

/// A JSON client for one Docker API socket that (re)connects as needed: a
/// keep-alive connection the server dropped is replaced and the request sent
/// once more on a fresh one.
pub struct Api {
    socket: PathBuf,
    conn: Option<Conn<Full<Bytes>>>,
}

impl Api {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
            conn: None,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Drops the connection (say after a request timed out mid-way); the
    /// next request opens a new one.
    pub fn reset(&mut self) {
        self.conn = None;
    }

    /// `method path` with an optional JSON body; the status and the body as
    /// JSON (or as a JSON string when it is not JSON; `null` when empty).
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, serde_json::Value)> {
        let (status, body) = self.call_bytes(method, path, body).await?;
        Ok((status, json_or_text(&body)))
    }

    /// Like [`Api::call`], with the body left as bytes (for callers that
    /// only need a list's size, not its contents).
    pub async fn call_bytes(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, Bytes)> {
        let bytes = match body {
            Some(value) => Bytes::from(serde_json::to_vec(value).context("encoding JSON")?),
            None => Bytes::new(),
        };
        let headers: Vec<(&'static str, String)> = if body.is_some() {
            vec![("content-type", "application/json".to_string())]
        } else {
            Vec::new()
        };
        let mut last_error = None;
        for _attempt in 0..2 {
            let conn = match self.conn.as_mut() {
                Some(conn) => conn,
                None => self.conn.insert(Conn::connect(&self.socket).await?),
            };
            let sent = conn
                .send(method.clone(), path, &headers, Full::new(bytes.clone()))
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(e) => {
                    // A dropped keep-alive connection: retry on a new one.
                    self.conn = None;
                    last_error = Some(e);
                    continue;
                }
            };
            let status = response.status();
            let body = match response.into_body().collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => {
                    self.conn = None;
                    return Err(anyhow!(e))
                        .with_context(|| format!("reading the body of {method} {path}"));
                }
            };
            return Ok((status, body));
        }
        Err(last_error.unwrap_or_else(|| anyhow!("{method} {path}: no attempt made")))
    }

    /// Like [`Api::call`], but anything other than `want` is an error
    /// carrying the server's message.
    pub async fn expect(
        &mut self,
        want: StatusCode,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        self.expect_one_of(&[want], method, path, body).await
    }

    /// Like [`Api::expect`], for requests with more than one fine answer
    /// (say 204, or 404 for what is gone already).
    pub async fn expect_one_of(
        &mut self,
        wanted: &[StatusCode],
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let (status, value) = self.call(method.clone(), path, body).await?;
        if !wanted.contains(&status) {
            bail!(
                "{method} {path} on {}: {status}: {}",
                self.socket.display(),
                message(&value)
            );
        }
        Ok(value)
    }
}

/// A body as JSON; as a JSON string when it is not JSON; `null` when empty.
pub fn json_or_text(body: &[u8]) -> serde_json::Value {
    if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
        })
    }
}

/// One blocking request on a fresh connection (HTTP/1.0, so the server
/// closes the connection after the response and never chunks it). For clean-up
/// paths that must also run from `Drop`, where nothing can be awaited.
pub fn blocking_call(
    socket: &Path,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, serde_json::Value)> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream
        .set_read_timeout(Some(timeout))
        .context("setting a read timeout")?;
    stream
        .set_write_timeout(Some(timeout))
        .context("setting a write timeout")?;
    let request = format!("{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Length: 0\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("sending {method} {path} to {}", socket.display()))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to {method} {path}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("{method} {path}: no HTTP header in the answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("{method} {path}: bad status line in {head:?}"))?;
    let body = &raw[split + 4..];
    let value = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
        })
    };
    Ok((status, value))
}

/// `{"key": {"value": true}}` or `{"key": ["value"]}` style filters, URL-encoded
/// for a query string.
pub fn encode_query(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
