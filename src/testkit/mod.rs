//! The test kit (the `shoal` library's only module): what the end-to-end
//! tests, the benchmark and the compat tool share.
//!
//! Harness for end-to-end tests: a real `shoal` process in front of the real
//! local engine, driven by the unmodified `docker` CLI and by raw HTTP.
//!
//! - [`Shoal::start`] / [`Shoal::builder`]: one shoal per test, with its own
//!   temp dir (`<tmp>/shoal.sock`, `<tmp>/data`, `<tmp>/shoal.log`), free TCP
//!   ports, optional TLS; ready once its socket answers `GET /_ping`.
//! - [`Shoal::docker`] / [`Shoal::docker_stdin`]: the docker CLI with
//!   `DOCKER_HOST` at that shoal, with a deadline.
//! - [`http_unix`]: a tiny HTTP/1.1 client over a unix socket, for status and
//!   body assertions.
//! - [`Cleanup`]: unique `shoaltest-<random>` names; at drop it removes, directly
//!   on the engine, every container and image carrying them.
//! - [`hosts::Hosts`]: several simulated hosts (namespaces, their own dockerd
//!   and shoal each) for cluster tests; needs root.
//!
//! Needs the images from `scripts/make-test-images` (`scripts/test` makes them).

pub mod hosts;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

/// The engine shoal fronts in tests (override with `SHOAL_TEST_ENGINE`).
pub fn engine_addr() -> String {
    std::env::var("SHOAL_TEST_ENGINE").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// The engine's unix socket path.
pub fn engine_sock() -> PathBuf {
    let addr = engine_addr();
    PathBuf::from(
        addr.strip_prefix("unix://")
            .expect("SHOAL_TEST_ENGINE must be a unix:// address"),
    )
}

/// How long shoal may take to answer its first `/_ping`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline for one docker CLI command.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);
/// Poll interval while waiting on a condition.
pub const POLL: Duration = Duration::from_millis(20);

/// The test images (see scripts/make-test-images).
pub const IMAGE: &str = "busybox:latest";
pub const IMAGE_V2: &str = "busybox:v2";

/// A string unique to this process and call: `<prefix>-<hex>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed =
        nanos ^ (u64::from(std::process::id()) << 40) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{prefix}-{:010x}", mixed & 0xff_ffff_ffff)
}

/// A free TCP port on 127.0.0.1 (bind to port 0, read it back, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Polls `cond` every [`POLL`] until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// A `docker` command with no inherited Docker settings: no DOCKER_HOST,
/// context, TLS or API-version variables, and its own config dir.
pub fn docker_command(config_dir: &Path) -> Command {
    let mut cmd = Command::new("docker");
    for var in [
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "DOCKER_TLS",
        "DOCKER_TLS_VERIFY",
        "DOCKER_CERT_PATH",
        "DOCKER_API_VERSION",
        "DOCKER_BUILDKIT",
        "DOCKER_DEFAULT_PLATFORM",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("DOCKER_CONFIG", config_dir);
    cmd
}

/// Runs `cmd` to completion with `input` on its stdin (closed after it),
/// capturing stdout and stderr; kills it and panics after `timeout`.
pub fn run(mut cmd: Command, input: Option<&[u8]>, timeout: Duration) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let desc = describe(&cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
    let pid = child.id();
    let writer = input.map(|data| {
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        // Dropping stdin at the end closes it: the child sees EOF.
        thread::spawn(move || stdin.write_all(&data))
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap_or_else(|e| panic!("waiting for {desc}: {e}")),
        Err(_) => {
            // The child is not reaped yet (the waiter still waits), so the pid is its own.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "{desc} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    if let Some(w) = writer {
        // A child that exits without reading all its input makes this an EPIPE; fine.
        let _ = w.join();
    }
    out
}

fn describe(cmd: &Command) -> String {
    let args: Vec<_> = cmd.get_args().map(OsStr::to_string_lossy).collect();
    format!(
        "`{} {}`",
        cmd.get_program().to_string_lossy(),
        args.join(" ")
    )
}

/// stdout as a String.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as a String.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Panics with the command's output unless it exited 0; returns its stdout.
#[track_caller]
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// The docker CLI talking to the engine directly, for set-up and clean-up only
/// (never for what a test asserts about shoal).
pub fn engine_docker(args: &[&str]) -> Output {
    let cfg = std::env::temp_dir().join("shoal-test-docker-config");
    let _ = fs::create_dir_all(&cfg);
    let mut cmd = docker_command(&cfg);
    cmd.arg("-H").arg(engine_addr()).args(args);
    run(cmd, None, CMD_TIMEOUT)
}

// ---------------------------------------------------------------------------
// Shoal
// ---------------------------------------------------------------------------

/// Server and client TLS files for [`ShoalBuilder::tlsverify`].
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to start a shoal; see [`Shoal::builder`].
#[derive(Clone, Debug, Default)]
pub struct ShoalBuilder {
    engine: Option<String>,
    socket: Option<PathBuf>,
    tcp: bool,
    tls: Option<TlsFiles>,
    args: Vec<String>,
}

impl ShoalBuilder {
    /// The engine address (default: [`engine_addr`]).
    pub fn engine(mut self, addr: &str) -> Self {
        self.engine = Some(addr.into());
        self
    }

    /// Listen on this unix socket instead of `<tmp>/shoal.sock`.
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// Also listen on `tcp://127.0.0.1:<free port>`.
    pub fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }

    /// Serve the TCP listener with TLS and require client certificates signed
    /// by `server.ca` (implies [`tcp`](Self::tcp)).
    pub fn tlsverify(mut self, server: TlsFiles) -> Self {
        self.tcp = true;
        self.tls = Some(server);
        self
    }

    /// One more command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Spawns shoal and waits until it answers `GET /_ping` on its socket
    /// (and accepts connections on its TCP port).
    pub fn start(self) -> Shoal {
        let mut shoal = self.spawn();
        shoal.wait_ready();
        shoal
    }

    /// Spawns shoal without waiting for it.
    pub fn spawn(self) -> Shoal {
        let dir = tempfile::Builder::new()
            .prefix("shoaltest-")
            .tempdir()
            .expect("temp dir");
        let sock = self
            .socket
            .clone()
            .unwrap_or_else(|| dir.path().join("shoal.sock"));
        let data = dir.path().join("data");
        let log = dir.path().join("shoal.log");
        let docker_config = dir.path().join("docker-config");
        fs::create_dir_all(&docker_config).unwrap();
        let tcp = self
            .tcp
            .then(|| SocketAddr::from(([127, 0, 0, 1], free_port())));

        let mut cmd = Command::new(shoal_bin());
        cmd.arg("-H").arg(format!("unix://{}", sock.display()));
        if let Some(addr) = tcp {
            cmd.arg("-H").arg(format!("tcp://{addr}"));
        }
        cmd.arg("--engine")
            .arg(self.engine.clone().unwrap_or_else(engine_addr))
            .arg("--data-dir")
            .arg(&data)
            .arg("--log-level")
            .arg("debug");
        if let Some(tls) = &self.tls {
            cmd.arg("--tlsverify")
                .arg("--tlscacert")
                .arg(&tls.ca)
                .arg("--tlscert")
                .arg(&tls.cert)
                .arg("--tlskey")
                .arg(&tls.key);
        }
        cmd.args(&self.args);
        cmd.env_remove("SHOAL_ENGINE").env_remove("RUST_LOG");
        // Tests run many shoals side by side: each cluster port on a free
        // loopback port instead of 0.0.0.0:2377.
        cmd.env("SHOAL_CLUSTER_LISTEN_ADDR", TEST_CLUSTER_LISTEN);
        let logfile = File::create(&log).expect("create shoal.log");
        cmd.stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile);
        let desc = describe(&cmd);
        let args = cmd.get_args().map(OsStr::to_os_string).collect();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
        Shoal {
            args,
            pid: child.id(),
            child: Some(child),
            exit: None,
            dir,
            sock,
            tcp,
            log,
            docker_config,
            desc,
        }
    }
}

/// Where test shoals' cluster ports listen: loopback, a free port each.
pub const TEST_CLUSTER_LISTEN: &str = "127.0.0.1:0";

/// The path of the shoal binary under test.
pub fn shoal_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SHOAL_BIN") {
        return PathBuf::from(bin);
    }
    // Beside the running binary: tests run from target/<profile>/deps,
    // the bench and compat binaries from target/<profile>, and cargo
    // builds `shoal` there before it runs either.
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("shoal")
}

/// A running shoal process; killed at drop.
pub struct Shoal {
    child: Option<Child>,
    exit: Option<ExitStatus>,
    pub pid: u32,
    dir: TempDir,
    /// Its unix socket.
    pub sock: PathBuf,
    /// Its TCP listener, if any.
    pub tcp: Option<SocketAddr>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    docker_config: PathBuf,
    desc: String,
    /// The command-line arguments it was started with (for [`Shoal::restart`]).
    args: Vec<std::ffi::OsString>,
}

impl Shoal {
    /// A shoal in front of the local engine on `<tmp>/shoal.sock`, ready.
    pub fn start() -> Shoal {
        Shoal::builder().start()
    }

    pub fn builder() -> ShoalBuilder {
        ShoalBuilder::default()
    }

    /// This shoal's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `unix://<sock>`, for DOCKER_HOST.
    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// Everything shoal has logged so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the socket answers `GET /_ping` with any HTTP response (an
    /// engine-less shoal answers 502) and the TCP port, if any, accepts.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "{} exited with {status} before it was ready; its log:\n{}",
                    self.desc,
                    self.logs()
                );
            }
            let unix_ok =
                http_unix_timeout(&self.sock, "GET", "/_ping", None, Duration::from_secs(2))
                    .is_ok();
            let tcp_ok = self.tcp.is_none_or(|addr| {
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            });
            if unix_ok && tcp_ok {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} not ready (GET /_ping on {}) within {START_TIMEOUT:?}; its log:\n{}",
                    self.desc,
                    self.sock.display(),
                    self.logs()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// The exit status, if shoal has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(child) = self.child.as_mut() {
                self.exit = child.try_wait().expect("try_wait");
            }
        }
        self.exit
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Sends `sig` to shoal.
    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid as i32, sig) };
    }

    /// SIGTERM, then waits (up to `timeout`) for shoal to exit; returns its status.
    pub fn stop_within(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        self.signal(libc::SIGTERM);
        let what = format!("{} to exit after SIGTERM", self.desc);
        let status = wait_for(&what, timeout, || self.try_wait());
        self.child = None;
        status
    }

    /// SIGTERM and wait (up to 20 s) for exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_within(Duration::from_secs(20))
    }

    /// SIGKILL and reap (leaves the socket file behind).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.exit = child.wait().ok();
        }
    }

    /// A docker command aimed at this shoal (DOCKER_HOST=unix://<sock>).
    pub fn docker_cmd(&self) -> Command {
        let mut cmd = docker_command(&self.docker_config);
        cmd.env("DOCKER_HOST", self.host());
        cmd
    }

    /// A docker command with nothing aimed anywhere: the caller passes `-H`.
    pub fn docker_cmd_no_host(&self) -> Command {
        docker_command(&self.docker_config)
    }

    /// Runs `docker <args>` against this shoal.
    pub fn docker(&self, args: &[&str]) -> Output {
        let mut cmd = self.docker_cmd();
        cmd.args(args);
        run(cmd, None, CMD_TIMEOUT)
    }

    /// Runs `docker <args>` against this shoal with `input` on stdin.
    pub fn docker_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut cmd = self.docker_cmd();
        cmd.args(args);
        run(cmd, Some(input), CMD_TIMEOUT)
    }

    /// `docker <args>` must succeed; returns its stdout.
    #[track_caller]
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {} failed ({}):\nstdout: {}\nstderr: {}\nshoal log tail:\n{}",
            args.join(" "),
            out.status,
            stdout(&out),
            stderr(&out),
            tail(&self.logs(), 40)
        );
        stdout(&out)
    }

    /// A raw HTTP request over the unix socket (`Connection: close`).
    pub fn http(&self, method: &str, path: &str) -> HttpResponse {
        http_unix(&self.sock, method, path, None)
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.sock.display()))
    }

    /// A raw HTTP request with a JSON body.
    pub fn http_json(&self, method: &str, path: &str, body: &serde_json::Value) -> HttpResponse {
        let body = serde_json::to_vec(body).unwrap();
        http_unix(&self.sock, method, path, Some(&body))
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.sock.display()))
    }

    /// All open file descriptors of the shoal process.
    pub fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Open socket descriptors of the shoal process.
    pub fn socket_fd_count(&self) -> usize {
        let Ok(dir) = fs::read_dir(format!("/proc/{}/fd", self.pid)) else {
            return 0;
        };
        dir.filter_map(|e| e.ok())
            .filter_map(|e| fs::read_link(e.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    }

    /// Connections from shoal to the engine's unix socket, counted with
    /// `ss -xp` (shoal's sockets whose peer is bound to the engine socket).
    /// `None` when `ss` is unavailable.
    pub fn engine_connections(&self) -> Option<usize> {
        unix_connections_to(self.pid, &engine_sock())
    }
}

impl Drop for Shoal {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- shoal log ({}), last lines ---\n{}",
                self.log.display(),
                tail(&self.logs(), 60)
            );
        }
        self.kill();
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Counts unix-stream connections of process `pid` whose peer is bound to `path`.
pub fn unix_connections_to(pid: u32, path: &Path) -> Option<usize> {
    let out = Command::new("ss").args(["-xpnH"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let want = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let same_path =
        |p: &str| Path::new(p) == path || fs::canonicalize(p).map(|c| c == want).unwrap_or(false);
    // Columns: netid state recv-q send-q local-addr local-inode peer-addr peer-inode [process]
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 8 && f[0] == "u_str")
        .collect();
    let server_inodes: std::collections::HashSet<&str> = rows
        .iter()
        .filter(|f| same_path(f[4]))
        .map(|f| f[5])
        .collect();
    let tag = format!("pid={pid},");
    Some(
        rows.iter()
            .filter(|f| f[8..].iter().any(|p| p.contains(&tag)))
            .filter(|f| server_inodes.contains(f[7]))
            .count(),
    )
}

// ---------------------------------------------------------------------------
// Raw HTTP over a unix socket
// ---------------------------------------------------------------------------

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names as sent (compare case-insensitively).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// One request over the unix socket at `sock` with `Connection: close`; reads
/// the whole response (30 s read timeout).
pub fn http_unix(
    sock: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> io::Result<HttpResponse> {
    http_unix_timeout(sock, method, path, body, Duration::from_secs(30))
}

pub fn http_unix_timeout(
    sock: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let mut stream = UnixStream::connect(sock)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n");
    if let Some(body) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    if let Some(body) = body {
        stream.write_all(body)?;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
}

/// Opens a connection and sends `GET <path>` (keep-alive, no body); the caller
/// reads the streamed response from the returned stream, or drops it to abort.
pub fn open_get(sock: &Path, path: &str) -> io::Result<UnixStream> {
    let mut stream = UnixStream::connect(sock)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n").as_bytes())?;
    Ok(stream)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Parses a complete response (status line, headers, body).
pub fn parse_response(raw: &[u8], head: bool) -> io::Result<HttpResponse> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| {
        invalid(format!(
            "no complete HTTP header in {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        ))
    })?;
    let head_text = std::str::from_utf8(&raw[..end]).map_err(|_| invalid("header not UTF-8"))?;
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("bad status line {status_line:?}")));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    if head || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(resp);
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    resp.body = if chunked {
        dechunk(rest)?
    } else if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        if rest.len() < len {
            return Err(invalid(format!(
                "body cut short: {} of {len} bytes",
                rest.len()
            )));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(resp)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a chunked body (ignoring extensions and trailers).
pub fn dechunk(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = find(rest, b"\r\n").ok_or_else(|| invalid("chunk size line cut short"))?;
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| invalid("bad chunk size"))?;
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(invalid("chunk cut short"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------
// Clean-up of what a test creates on the engine
// ---------------------------------------------------------------------------

/// Unique names for one test's engine objects, and their removal at drop.
///
/// Name containers with [`name`](Self::name) and tag images with
/// [`image`](Self::image): every name starts with `shoaltest-<random>-`, and at
/// drop (pass or fail) the guard force-removes, directly on the engine, all
/// containers whose name and all images whose reference start with it, plus
/// anything registered with [`container`](Self::container).
pub struct Cleanup {
    prefix: String,
    extra_containers: std::sync::Mutex<Vec<String>>,
}

impl Default for Cleanup {
    fn default() -> Self {
        Self::new()
    }
}

impl Cleanup {
    pub fn new() -> Cleanup {
        Cleanup {
            prefix: unique("shoaltest"),
            extra_containers: Default::default(),
        }
    }

    /// `shoaltest-<random>`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A container name: `shoaltest-<random>-<what>`.
    pub fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    /// An image reference: `shoaltest-<random>-<what>:latest`.
    pub fn image(&self, what: &str) -> String {
        format!("{}-{what}:latest", self.prefix)
    }

    /// Also remove this container (by id or name) at drop.
    pub fn container(&self, id: &str) {
        self.extra_containers.lock().unwrap().push(id.to_string());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Runs while a failed test unwinds too: never panic here (that would abort).
        let cfg = std::env::temp_dir().join("shoal-test-docker-config");
        let _ = fs::create_dir_all(&cfg);
        let engine = |args: &[&str]| -> String {
            let mut cmd = docker_command(&cfg);
            cmd.arg("-H")
                .arg(engine_addr())
                .args(args)
                .stdin(Stdio::null());
            cmd.output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let filter = format!("name={}", self.prefix);
        let mut ids: Vec<String> = engine(&["ps", "-aq", "--filter", &filter])
            .split_whitespace()
            .map(String::from)
            .collect();
        if let Ok(mut extra) = self.extra_containers.lock() {
            ids.extend(extra.drain(..));
        }
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            engine(&args);
        }
        let filter = format!("reference={}-*", self.prefix);
        let refs: Vec<String> = engine(&[
            "images",
            "--filter",
            &filter,
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
        .split_whitespace()
        .map(String::from)
        .collect();
        if !refs.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(refs.iter().map(String::as_str));
            engine(&args);
        }
    }
}

// ---------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------

/// A throwaway CA with a server certificate (SAN 127.0.0.1, localhost) and a
/// client certificate, made with the `openssl` CLI.
pub struct Certs {
    dir: TempDir,
    pub ca: PathBuf,
    pub server: TlsFiles,
    pub client: TlsFiles,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("shoaltest-tls-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let ossl = |args: &[&str]| {
            let mut cmd = Command::new("openssl");
            cmd.args(args).current_dir(d);
            ok(&run(cmd, None, Duration::from_secs(60)));
        };
        let ext = |name: &str, body: &str| fs::write(d.join(name), body).unwrap();
        ext(
            "server.ext",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        );
        ext(
            "client.ext",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=clientAuth\n",
        );
        let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
        let genkey = |out: &str| {
            let mut args = vec!["genpkey"];
            args.extend(ec);
            args.extend(["-out", out]);
            ossl(&args);
        };
        genkey("ca-key.pem");
        ossl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca-key.pem",
            "-sha256",
            "-days",
            "2",
            "-subj",
            "/CN=shoal test CA",
            "-out",
            "ca.pem",
        ]);
        for (who, cn) in [("server", "localhost"), ("client", "shoal test client")] {
            genkey(&format!("{who}-key.pem"));
            ossl(&[
                "req",
                "-new",
                "-key",
                &format!("{who}-key.pem"),
                "-subj",
                &format!("/CN={cn}"),
                "-out",
                &format!("{who}.csr"),
            ]);
            ossl(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-sha256",
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
                "-out",
                &format!("{who}-cert.pem"),
            ]);
        }
        let ca = d.join("ca.pem");
        Certs {
            server: TlsFiles {
                ca: ca.clone(),
                cert: d.join("server-cert.pem"),
                key: d.join("server-key.pem"),
            },
            client: TlsFiles {
                ca: ca.clone(),
                cert: d.join("client-cert.pem"),
                key: d.join("client-key.pem"),
            },
            ca,
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

// ---------------------------------------------------------------------------
// A stand-in engine address
// ---------------------------------------------------------------------------

/// Forwards every connection made to a unix socket at `path` to the real
/// engine, byte for byte: an engine address a test can make appear (start)
/// after shoal is already running. The accept thread lives until the test
/// process ends; the socket file goes with the caller's temp dir.
pub struct EngineForwarder {
    pub path: PathBuf,
}

impl EngineForwarder {
    pub fn start(path: &Path) -> EngineForwarder {
        let listener = std::os::unix::net::UnixListener::bind(path).expect("bind forwarder");
        let engine = engine_sock();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(upstream) = UnixStream::connect(&engine) else {
                    continue;
                };
                let pipe = |mut from: UnixStream, mut to: UnixStream| {
                    thread::spawn(move || {
                        let _ = io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pipe(upstream, client);
            }
        });
        EngineForwarder {
            path: path.to_path_buf(),
        }
    }

    /// `unix://<path>`.
    pub fn addr(&self) -> String {
        format!("unix://{}", self.path.display())
    }
}

// ---------------------------------------------------------------------------
// Restarts and swarm mode
// ---------------------------------------------------------------------------

impl Shoal {
    /// SIGKILL (if still running), then start shoal again with the same
    /// arguments (same socket, data dir and ports; the log is appended to)
    /// and wait until it is ready.
    pub fn restart(&mut self) {
        self.kill();
        let log = fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("open shoal.log");
        let mut cmd = Command::new(shoal_bin());
        cmd.args(&self.args)
            .env_remove("SHOAL_ENGINE")
            .env_remove("RUST_LOG")
            .env("SHOAL_CLUSTER_LISTEN_ADDR", TEST_CLUSTER_LISTEN)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot restart {}: {e}", self.desc));
        self.pid = child.id();
        self.child = Some(child);
        self.exit = None;
        self.wait_ready();
    }

    /// `docker swarm init --advertise-addr 127.0.0.1` (must succeed); the
    /// returned guard knows the node ID and cleans up after the test.
    #[track_caller]
    /// The cluster address this manager advertises (its port is chosen at
    /// `swarm init`, see [`TEST_CLUSTER_LISTEN`]).
    pub fn cluster_addr(&self) -> String {
        self.docker_ok(&[
            "node",
            "inspect",
            "self",
            "--format",
            "{{.ManagerStatus.Addr}}",
        ])
        .trim()
        .to_string()
    }

    pub fn swarm_init(&self) -> SwarmNode {
        self.swarm_init_with(&["--advertise-addr", "127.0.0.1"])
    }

    /// `docker swarm init` with these flags.
    pub fn swarm_init_with(&self, flags: &[&str]) -> SwarmNode {
        let mut args = vec!["swarm", "init"];
        args.extend_from_slice(flags);
        let out = self.docker_ok(&args);
        let id = self
            .docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"])
            .trim()
            .to_string();
        assert_eq!(id.len(), 25, "node ID {id:?}; swarm init said:\n{out}");
        SwarmNode {
            id,
            sock: self.sock.clone(),
            init_output: out,
        }
    }
}

/// Container IDs on the engine (asked directly) labelled with swarm node
/// `node_id`, plus `extra` `docker ps` arguments (e.g. `-a`, `--filter …`).
pub fn node_containers(node_id: &str, extra: &[&str]) -> Vec<String> {
    let label = format!("label=com.docker.swarm.node.id={node_id}");
    let mut args = vec!["ps", "-q", "--no-trunc", "--filter", &label];
    args.extend_from_slice(extra);
    ok(&engine_docker(&args))
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The swarm node a test made with [`Shoal::swarm_init`]. At drop (pass or
/// fail) it asks shoal to leave with force, then force-removes, directly on
/// the engine, every container still labelled with its node ID. Declare it
/// after its [`Shoal`] so it drops first.
pub struct SwarmNode {
    /// The node ID.
    pub id: String,
    sock: PathBuf,
    /// What `swarm init` printed.
    pub init_output: String,
}

impl SwarmNode {
    /// `docker swarm leave --force` must say "Node left the swarm." within
    /// [`LEAVE_TIMEOUT`] (the engine takes about a second); then the engine,
    /// asked directly, must soon hold no container of this node.
    #[track_caller]
    pub fn leave(&self, shoal: &Shoal) {
        let mut cmd = shoal.docker_cmd();
        cmd.args(["swarm", "leave", "--force"]);
        let Some(out) = run_within(cmd, LEAVE_TIMEOUT) else {
            panic!(
                "`docker swarm leave --force` did not return within {LEAVE_TIMEOUT:?}; shoal log:\n{}",
                tail(&shoal.logs(), 30)
            );
        };
        assert_eq!(ok(&out).trim(), "Node left the swarm.");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = node_containers(&self.id, &["-a"]);
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "containers of node {} left on the engine after swarm leave --force: {left:?}",
                    self.id
                );
            }
            thread::sleep(POLL * 5);
        }
    }
}

/// How long [`SwarmNode::leave`] waits for `docker swarm leave --force`.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Like [`run`] without stdin, but gives up (kills the command and returns
/// `None`) after `timeout` instead of panicking.
pub fn run_within(mut cmd: Command, timeout: Duration) -> Option<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let desc = describe(&cmd);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => Some(out.unwrap_or_else(|e| panic!("waiting for {desc}: {e}"))),
        Err(_) => {
            // Not reaped yet (the waiter still waits), so the pid is its own.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = rx.recv();
            None
        }
    }
}

impl Drop for SwarmNode {
    fn drop(&mut self) {
        // Never panic here: this runs while a failed test unwinds.
        let _ = http_unix_timeout(
            &self.sock,
            "POST",
            "/swarm/leave?force=1",
            Some(b""),
            Duration::from_secs(20),
        );
        let cfg = std::env::temp_dir().join("shoal-test-docker-config");
        let _ = fs::create_dir_all(&cfg);
        let label = format!("label=com.docker.swarm.node.id={}", self.id);
        let ids = docker_command(&cfg)
            .arg("-H")
            .arg(engine_addr())
            .args(["ps", "-aq", "--filter", &label])
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = docker_command(&cfg)
                .arg("-H")
                .arg(engine_addr())
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .stdin(Stdio::null())
                .output();
        }
    }
}

/// `docker <args>` must fail with `msg` in its stderr.
#[track_caller]
pub fn assert_fails_with(shoal: &Shoal, args: &[&str], msg: &str) {
    let out = shoal.docker(args);
    assert!(
        !out.status.success(),
        "docker {} succeeded:\n{}",
        args.join(" "),
        stdout(&out)
    );
    assert!(
        stderr(&out).contains(msg),
        "docker {}: stderr {:?} lacks {msg:?}",
        args.join(" "),
        stderr(&out)
    );
}

/// The engine's error shape: `{"message": msg}` with `status`.
#[track_caller]
pub fn assert_error(resp: &HttpResponse, status: u16, msg: &str) {
    assert_eq!(resp.status, status, "body: {}", resp.text());
    assert_eq!(resp.json(), serde_json::json!({ "message": msg }));
}
