//! The proxies shoal's passthrough is compared with, each in front of the
//! same engine socket: HAProxy configured as docker-socket-proxy configures
//! it (mode http, the engine's unix socket as the one server), and socat as
//! a plain L4 splice (a forked copy loop per connection).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper::StatusCode;

use super::daemon;

/// Which relay, and how HAProxy treats the engine connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// docker-socket-proxy's haproxy.cfg: `option http-server-close`, so a
    /// new engine connection per request (its ACLs and logging left out).
    HaproxyServerClose,
    /// The same with engine connections kept alive and reused.
    HaproxyKeepAlive,
    /// `socat UNIX-LISTEN:…,fork UNIX-CONNECT:<engine>`.
    Socat,
}

impl Kind {
    pub fn program(self) -> &'static str {
        match self {
            Kind::HaproxyServerClose | Kind::HaproxyKeepAlive => "haproxy",
            Kind::Socat => "socat",
        }
    }
}

/// A relay process listening on its own unix socket; stopped on drop
/// (with the children socat forked, which share its process group).
pub struct Relay {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

const READY_TIMEOUT: Duration = Duration::from_secs(10);

impl Relay {
    /// Starts `kind` in `dir` in front of `engine` and waits until it
    /// answers `GET /_ping`.
    pub async fn start(kind: Kind, dir: &Path, engine: &Path) -> Result<Self> {
        let name = match kind {
            Kind::HaproxyServerClose => "haproxy",
            Kind::HaproxyKeepAlive => "haproxy-ka",
            Kind::Socat => "socat",
        };
        let socket = dir.join(format!("{name}.sock"));
        let log = dir.join(format!("{name}.log"));
        let mut command = match kind {
            Kind::Socat => {
                let mut c = Command::new("socat");
                c.arg(format!("UNIX-LISTEN:{},fork", socket.display()))
                    .arg(format!("UNIX-CONNECT:{}", engine.display()));
                c
            }
            Kind::HaproxyServerClose | Kind::HaproxyKeepAlive => {
                let config = dir.join(format!("{name}.cfg"));
                fs::write(&config, haproxy_config(kind, &socket, engine))
                    .with_context(|| format!("writing {}", config.display()))?;
                let mut c = Command::new("haproxy");
                // -db: foreground, no daemon; -f: the config.
                c.arg("-db").arg("-f").arg(&config);
                c
            }
        };
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group, so that stopping it also stops socat's
            // forked children.
            .process_group(0)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (install it: apt-get install {})",
                    kind.program(),
                    kind.program()
                )
            })?;
        let mut relay = Self { child, socket, log };
        relay.wait_ready().await?;
        Ok(relay)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut last = String::from("no answer yet");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}): {}",
                    self.socket.display(),
                    self.log()
                );
            }
            if self.socket.exists() {
                match daemon::ping(&self.socket).await {
                    Ok(StatusCode::OK) => return Ok(()),
                    Ok(status) => last = format!("GET /_ping answered {status}"),
                    Err(e) => last = format!("{e:#}"),
                }
            }
            if start.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} did not answer within {READY_TIMEOUT:?} ({last}): {}",
                    self.socket.display(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group this relay leads (its
            // pid, set by process_group(0)); the leader is not reaped yet,
            // so the id is still ours.
            unsafe {
                libc::kill(-pid, libc::SIGTERM);
            }
        }
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.socket);
    }
}

/// docker-socket-proxy's haproxy.cfg (defaults and timeouts as it ships
/// them), listening on a unix socket instead of :2375.
fn haproxy_config(kind: Kind, socket: &Path, engine: &Path) -> String {
    let reuse = match kind {
        Kind::HaproxyKeepAlive => "    option http-keep-alive\n    http-reuse always\n",
        _ => "    option http-server-close\n",
    };
    format!(
        "global
    maxconn 4000

defaults
    mode http
{reuse}    option redispatch
    retries 3
    timeout http-request 10s
    timeout queue 1m
    timeout connect 10s
    timeout client 10m
    timeout server 10m
    timeout http-keep-alive 10s
    timeout check 10s
    maxconn 3000

backend dockerbackend
    server dockersocket {engine}

frontend dockerfrontend
    bind unix@{socket} mode 600
    default_backend dockerbackend
",
        engine = engine.display(),
        socket = socket.display()
    )
}
