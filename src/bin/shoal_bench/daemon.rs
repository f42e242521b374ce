use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use hyper::StatusCode;

use super::client::Conn;

/// A private directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}-{nanos:08x}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The shoal under test: a child process on its own socket and data dir.
/// Dropping it stops it (SIGTERM, then SIGKILL if it lingers), so an error
/// anywhere in a benchmark never leaves a shoal behind.
pub struct Shoal {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

/// How long a stopped shoal may take to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Shoal {
    /// Starts `bin -H unix://<dir>/shoal.sock --data-dir <dir>/data
    /// --engine unix://<engine> --log-level warn`; its output goes to
    /// `<dir>/shoal.log`.
    pub fn start(bin: &Path, dir: &Path, engine: &Path) -> Result<Self> {
        let socket = dir.join("shoal.sock");
        let data = dir.join("data");
        let log = dir.join("shoal.log");
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        let child = Command::new(bin)
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-dir")
            .arg(&data)
            .arg("--engine")
            .arg(format!("unix://{}", engine.display()))
            .arg("--log-level")
            .arg("warn")
            // Several shoals may run at once: a free loopback port each.
            .env("SHOAL_CLUSTER_LISTEN_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            child,
            socket,
            log,
            exited: None,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `GET /_ping` on shoal's socket until it answers 200, shoal
    /// exits, or `timeout` passes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let mut last_error = String::from("no answer yet");
        loop {
            if let Some(status) = self.child.try_wait().context("checking on shoal")? {
                self.exited = Some(status);
                bail!(
                    "shoal exited during start-up ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            if self.socket.exists() {
                match ping(&self.socket).await {
                    Ok(StatusCode::OK) => return Ok(start.elapsed()),
                    Ok(status) => last_error = format!("GET /_ping answered {status}"),
                    Err(e) => last_error = format!("{e:#}"),
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "shoal did not answer GET /_ping on {} within {timeout:?} (last: {last_error}); its log:\n{}",
                    self.socket.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A field of /proc/<pid>/status in KiB, e.g. `VmRSS` or `VmHWM`.
    pub fn status_kib(&self, field: &str) -> Result<u64> {
        proc_status_kib(self.pid(), field)
    }

    /// Stops shoal: SIGTERM, then SIGKILL after `STOP_GRACE`. Returns how it
    /// exited and whether SIGTERM sufficed.
    pub fn stop(&mut self) -> Result<(ExitStatus, bool)> {
        if let Some(status) = self.exited {
            return Ok((status, true));
        }
        if let Some(status) = self.child.try_wait().context("checking on shoal")? {
            self.exited = Some(status);
            return Ok((status, true));
        }
        let pid = libc::pid_t::try_from(self.pid()).context("pid out of range")?;
        // SAFETY: kill(2) on our own child's pid; it has not been reaped
        // (try_wait above returned None), so the pid is still ours.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < STOP_GRACE {
            if let Some(status) = self.child.try_wait().context("waiting for shoal")? {
                self.exited = Some(status);
                return Ok((status, true));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child.kill().context("killing shoal")?;
        let status = self.child.wait().context("reaping shoal")?;
        self.exited = Some(status);
        Ok((status, false))
    }

    /// SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        if let Some(status) = self.child.try_wait().context("checking on shoal")? {
            self.exited = Some(status);
            return Ok(status);
        }
        self.child.kill().context("killing shoal")?;
        let status = self.child.wait().context("reaping shoal")?;
        self.exited = Some(status);
        Ok(status)
    }

    /// Whether shoal has exited (and how), without waiting.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().context("checking on shoal")?;
        }
        Ok(self.exited)
    }

    /// The last lines of shoal's log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(30)..];
        if tail.is_empty() {
            "  (empty)".to_string()
        } else {
            tail.iter().map(|l| format!("  {l}\n")).collect()
        }
    }
}

impl Drop for Shoal {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A field of /proc/<pid>/status in KiB, e.g. `VmRSS` or `VmHWM`.
pub fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse().ok()
        })
        .with_context(|| format!("no {field} in {path}"))
}

/// The pid of the Docker daemon: /var/run/docker.pid, else the first process
/// named `dockerd` in /proc.
pub fn dockerd_pid() -> Option<u32> {
    if let Ok(text) = fs::read_to_string("/var/run/docker.pid") {
        if let Ok(pid) = text.trim().parse::<u32>() {
            if Path::new(&format!("/proc/{pid}")).exists() {
                return Some(pid);
            }
        }
    }
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let comm = fs::read_to_string(entry.path().join("comm")).ok()?;
        (comm.trim() == "dockerd").then_some(pid)
    })
}

/// One `GET /_ping` on a fresh connection.
pub async fn ping(socket: &Path) -> Result<StatusCode> {
    let mut conn = Conn::connect(socket).await?;
    let (status, _) = conn.get_discard("/_ping").await?;
    Ok(status)
}

/// Where the shoal binary is by default: beside this one (target/release/shoal
/// when run with `cargo run --release`).
pub fn default_shoal_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("shoal")))
        .unwrap_or_else(|| PathBuf::from("target/release/shoal"))
}

/// Checks the binary exists; warns when a source file under `src/` is newer
/// than it (a benchmark of stale code).
pub fn check_shoal_bin(bin: &Path) -> Result<()> {
    let built = match fs::metadata(bin) {
        Ok(meta) => meta.modified().ok(),
        Err(e) => bail!(
            "no shoal binary at {} ({e}); build it first: cargo build --release --bin shoal",
            bin.display()
        ),
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    if let (Some(built), Some(newest)) = (built, newest_mtime(&src)) {
        if newest > built {
            eprintln!(
                "warning: {} is older than the sources in {}; rebuild with: cargo build --release --bin shoal",
                bin.display(),
                src.display()
            );
        }
    }
    Ok(())
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        // The benchmark's own sources are not part of shoal.
        if path.file_name().is_some_and(|n| n == "bin") {
            continue;
        }
        let time = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok())
        };
        newest = newest.max(time);
    }
    newest
}
