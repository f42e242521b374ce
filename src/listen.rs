//! Where clients reach shoal: unix sockets and TCP (optionally TLS) in
//! dockerd's `-H` syntax, one accept loop each, and graceful shutdown.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::Api;

/// dockerd's default ports when `tcp://host` has none.
const DEFAULT_PORT: u16 = 2375;
const DEFAULT_TLS_PORT: u16 = 2376;

/// How long a client connection may stall before it is closed, so that
/// clients that send nothing (or a byte now and then) cannot hold file
/// descriptors and memory forever.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// Until a request's headers are complete, counted from the end of the
    /// previous answer (hyper's header read timeout, which also bounds idle
    /// keep-alive connections).
    pub header_read: Duration,
    /// Until a TLS handshake is complete.
    pub tls_handshake: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Unix(PathBuf),
    Tcp(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("invalid listen address {0:?}: expected unix:///path or tcp://host[:port]")]
    Invalid(String),
    #[error("{0} is in use by a running process (is shoal or dockerd already listening there?)")]
    SocketInUse(PathBuf),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
}

impl ListenAddr {
    pub fn parse(text: &str, tls: bool) -> Result<Self, ListenError> {
        if let Some(path) = text.strip_prefix("unix://") {
            let path = if path.is_empty() {
                "/var/run/shoal.sock"
            } else {
                path
            };
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        let rest = text
            .strip_prefix("tcp://")
            .ok_or_else(|| ListenError::Invalid(text.to_string()))?
            .trim_end_matches('/');
        let port = if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
        let addr = match rest.rsplit_once(':') {
            Some((_, p)) if p.parse::<u16>().is_ok() && !rest.ends_with(']') => rest.to_string(),
            _ if rest.is_empty() => format!("0.0.0.0:{port}"),
            _ => format!("{rest}:{port}"),
        };
        Ok(ListenAddr::Tcp(addr))
    }
}

/// A bound socket, ready to accept.
pub enum Listener {
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    Tcp {
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
    },
}

impl Listener {
    pub async fn bind(addr: &ListenAddr, tls: Option<TlsAcceptor>) -> Result<Self, ListenError> {
        match addr {
            ListenAddr::Unix(path) => bind_unix(path).await,
            ListenAddr::Tcp(addr) => {
                let listener =
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ListenError::Bind {
                            addr: format!("tcp://{addr}"),
                            source,
                        })?;
                Ok(Listener::Tcp { listener, tls })
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Listener::Unix { path, .. } => format!("unix://{}", path.display()),
            Listener::Tcp { listener, tls } => {
                let addr = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                format!("tcp://{addr}{}", if tls.is_some() { " (TLS)" } else { "" })
            }
        }
    }

    /// Accepts connections until `shutdown` fires; each connection runs on
    /// `tasks` so shutdown can wait for it.
    pub async fn serve(
        self,
        api: Api,
        timeouts: ClientTimeouts,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.accept() => accepted,
            };
            match accepted {
                Ok(Accepted::Unix(stream)) => {
                    spawn_connection(stream, api.clone(), timeouts, &shutdown, &tasks)
                }
                Ok(Accepted::Tcp(stream)) => {
                    let _ = stream.set_nodelay(true);
                    spawn_connection(stream, api.clone(), timeouts, &shutdown, &tasks)
                }
                Ok(Accepted::Tls(stream, acceptor)) => {
                    let (api, token, inner_tasks) = (api.clone(), shutdown.clone(), tasks.clone());
                    tasks.spawn(async move {
                        let _ = stream.set_nodelay(true);
                        let handshake = acceptor.accept(stream);
                        // A client that stalls its handshake (or shoal
                        // shutting down) must not keep the socket forever.
                        let done = tokio::select! {
                            done = tokio::time::timeout(timeouts.tls_handshake, handshake) => done,
                            _ = token.cancelled() => return,
                        };
                        match done {
                            Ok(Ok(tls)) => {
                                spawn_connection(tls, api, timeouts, &token, &inner_tasks)
                            }
                            Ok(Err(error)) => tracing::info!(%error, "TLS handshake refused"),
                            Err(_) => tracing::info!(
                                timeout = ?timeouts.tls_handshake,
                                "TLS handshake timed out"
                            ),
                        }
                    });
                }
                Err(error) => {
                    // EMFILE and friends: log and keep serving the clients we have.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        if let Listener::Unix { path, .. } = &self {
            let _ = std::fs::remove_file(path);
        }
    }

    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Unix { listener, .. } => Ok(Accepted::Unix(listener.accept().await?.0)),
            Listener::Tcp { listener, tls } => {
                let (stream, _) = listener.accept().await?;
                Ok(match tls {
                    Some(acceptor) => Accepted::Tls(stream, acceptor.clone()),
                    None => Accepted::Tcp(stream),
                })
            }
        }
    }
}

enum Accepted {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
    Tls(tokio::net::TcpStream, TlsAcceptor),
}

/// Serves one client connection with HTTP/1.1 and upgrades, as dockerd does.
fn spawn_connection<S>(
    stream: S,
    api: Api,
    timeouts: ClientTimeouts,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        // Boxed: hyper keeps room for a request's future beside every
        // connection from its start, and answering any route is a large one.
        let service = service_fn(move |req| Box::pin(api.clone().handle(req)));
        let mut builder = http1::Builder::new();
        builder
            .preserve_header_case(true)
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.header_read);
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, "client connection ended with an error");
        }
    });
}

/// Binds a unix socket as dockerd does: a socket still answered by a live
/// process is refused, a stale one is replaced; mode 0660, group `docker`.
async fn bind_unix(path: &Path) -> Result<Listener, ListenError> {
    let bind_error = |source| ListenError::Bind {
        addr: format!("unix://{}", path.display()),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() && tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ListenError::SocketInUse(path.to_path_buf()));
        }
        if meta.is_dir() {
            return Err(bind_error(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "is a directory",
            )));
        }
        std::fs::remove_file(path).map_err(bind_error)?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(bind_error)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_error)?;
    if let Some(gid) = group_id("docker") {
        if let Err(error) = std::os::unix::fs::chown(path, None, Some(gid)) {
            tracing::warn!(%error, "cannot give the socket to group docker");
        }
    }
    Ok(Listener::Unix {
        listener,
        path: path.to_path_buf(),
    })
}

/// The gid of a group from /etc/group, without going through libc's NSS.
fn group_id(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dockerd_style_addresses() {
        assert_eq!(
            ListenAddr::parse("unix:///tmp/x.sock", false).ok(),
            Some(ListenAddr::Unix("/tmp/x.sock".into()))
        );
        assert_eq!(
            ListenAddr::parse("tcp://127.0.0.1:2375", false).ok(),
            Some(ListenAddr::Tcp("127.0.0.1:2375".into()))
        );
        assert_eq!(
            ListenAddr::parse("tcp://127.0.0.1", true).ok(),
            Some(ListenAddr::Tcp("127.0.0.1:2376".into()))
        );
        assert_eq!(
            ListenAddr::parse("tcp://", false).ok(),
            Some(ListenAddr::Tcp("0.0.0.0:2375".into()))
        );
        assert!(ListenAddr::parse("fd://", false).is_err());
    }
}
