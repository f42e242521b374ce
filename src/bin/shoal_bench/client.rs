use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
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
