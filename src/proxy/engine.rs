//! How shoal reaches the local engine: a connector for hyper-util's pooled
//! client over a unix socket, plain TCP or TCP with TLS.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Where the engine listens, parsed from `--engine`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineAddr {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

#[derive(Debug, thiserror::Error)]
pub enum EngineAddrError {
    #[error("invalid engine address {0:?}: expected unix:///path or tcp://host:port")]
    Invalid(String),
}

impl EngineAddr {
    pub fn parse(text: &str) -> Result<Self, EngineAddrError> {
        let invalid = || EngineAddrError::Invalid(text.to_string());
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(invalid());
            }
            return Ok(EngineAddr::Unix(PathBuf::from(path)));
        }
        let rest = text.strip_prefix("tcp://").ok_or_else(invalid)?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(invalid)?;
        let port = port.parse().map_err(|_| invalid())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid());
        }
        Ok(EngineAddr::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

/// A byte stream to the engine, whichever transport carries it.
pub enum EngineStream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Opens connections to the engine for the pooled client.
#[derive(Clone)]
pub struct EngineConnector {
    addr: EngineAddr,
    tls: Option<TlsConnector>,
}

impl EngineConnector {
    pub fn new(addr: EngineAddr, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self {
            addr,
            tls: tls.map(TlsConnector::from),
        }
    }

    async fn connect(self) -> io::Result<TokioIo<EngineStream>> {
        let stream = match &self.addr {
            EngineAddr::Unix(path) => EngineStream::Unix(UnixStream::connect(path).await?),
            EngineAddr::Tcp { host, port } => {
                let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                tcp.set_nodelay(true)?;
                match &self.tls {
                    None => EngineStream::Tcp(tcp),
                    Some(connector) => {
                        let name = ServerName::try_from(host.clone())
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                        EngineStream::Tls(Box::new(connector.connect(name, tcp).await?))
                    }
                }
            }
        };
        Ok(TokioIo::new(stream))
    }
}

impl tower_service::Service<Uri> for EngineConnector {
    type Response = TokioIo<EngineStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        // Every request goes to the one engine, whatever its URI says.
        Box::pin(self.clone().connect())
    }
}

impl Connection for EngineStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

macro_rules! each_stream {
    ($self:ident, $s:ident => $body:expr) => {
        match $self.get_mut() {
            EngineStream::Unix($s) => {
                let $s = Pin::new($s);
                $body
            }
            EngineStream::Tcp($s) => {
                let $s = Pin::new($s);
                $body
            }
            EngineStream::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $body
            }
        }
    };
}

impl AsyncRead for EngineStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each_stream!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for EngineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each_stream!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_stream!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_stream!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each_stream!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            EngineStream::Unix(s) => s.is_write_vectored(),
            EngineStream::Tcp(s) => s.is_write_vectored(),
            EngineStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_engine_addresses() {
        assert_eq!(
            EngineAddr::parse("unix:///var/run/docker.sock").ok(),
            Some(EngineAddr::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            EngineAddr::parse("tcp://127.0.0.1:2375").ok(),
            Some(EngineAddr::Tcp {
                host: "127.0.0.1".into(),
                port: 2375
            })
        );
        assert!(EngineAddr::parse("tcp://127.0.0.1").is_err());
        assert!(EngineAddr::parse("http://x:1").is_err());
        assert!(EngineAddr::parse("unix://").is_err());
    }
}
