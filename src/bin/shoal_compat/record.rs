//! `shoal-compat record`: puts the real engine into swarm mode for each
//! scenario, runs the scenario's steps through the recording relay, and
//! always leaves the swarm and removes what the scenario created.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use super::fixture::{self, Fixture};
use super::http;
use super::relay::{join_target, Relay};
use super::scenario::{self, Scenario, Step};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Record only these scenarios (default: all).
    pub only: Vec<String>,
    /// The scenario file.
    #[arg(long, default_value = "compat-tests/scenarios.txt")]
    pub scenarios: PathBuf,
    /// Where fixtures are written.
    #[arg(long, default_value = "api-fixtures")]
    pub fixtures: PathBuf,
    /// The real engine's socket.
    #[arg(long, default_value = "/var/run/docker.sock")]
    pub engine: PathBuf,
}

/// The docker CLI aimed at `host`, with its own config dir and no inherited
/// Docker settings.
fn docker(host: &str, config: &Path) -> Command {
    let mut cmd = Command::new("docker");
    for var in [
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "DOCKER_TLS_VERIFY",
        "DOCKER_CERT_PATH",
        "DOCKER_API_VERSION",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("DOCKER_CONFIG", config).env("DOCKER_HOST", host);
    cmd
}

/// Runs a command with a deadline; returns (exit code, stdout, stderr).
fn run(mut cmd: Command, stdin: Option<&str>, timeout: Duration) -> (i32, String, String) {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (-1, String::new(), format!("cannot spawn: {e}")),
    };
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        let _ = w.write_all(input.as_bytes());
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(o) => o,
        Err(_) => {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            rx.recv().unwrap()
        }
    };
    match out {
        Ok(o) => (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Err(e) => (-1, String::new(), e.to_string()),
    }
}

fn engine_get(engine: &Path, target: &str) -> anyhow::Result<Value> {
    let r = http::request(
        engine,
        "GET",
        target,
        &[],
        None,
        16 << 20,
        Duration::from_secs(30),
    )?;
    if r.status != 200 {
        bail!(
            "GET {target}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(serde_json::from_slice(&r.body)?)
}

fn swarm_state(engine: &Path) -> anyhow::Result<(String, String)> {
    let info = engine_get(engine, "/info")?;
    let sw = &info["Swarm"];
    Ok((
        sw["LocalNodeState"].as_str().unwrap_or("").to_string(),
        sw["NodeID"].as_str().unwrap_or("").to_string(),
    ))
}

/// Leaves the swarm (force) and removes the containers it ran and the
/// bridge it made; never fails, only reports.
fn clean_engine(engine: &Path, config: &Path, node_ids: &[String], had_gwbridge: bool) {
    let host = format!("unix://{}", engine.display());
    if let Ok((state, _)) = swarm_state(engine) {
        if state != "inactive" {
            let (code, _, err) = run(
                {
                    let mut c = docker(&host, config);
                    c.args(["swarm", "leave", "--force"]);
                    c
                },
                None,
                Duration::from_secs(60),
            );
            if code != 0 {
                eprintln!("record: docker swarm leave --force failed: {err}");
            }
        }
    }
    for id in node_ids.iter().filter(|i| !i.is_empty()) {
        let mut c = docker(&host, config);
        c.args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.swarm.node.id={id}"),
        ]);
        let (_, out, _) = run(c, None, Duration::from_secs(30));
        let ids: Vec<&str> = out.split_whitespace().collect();
        if !ids.is_empty() {
            let mut c = docker(&host, config);
            c.args(["rm", "-f", "-v"]).args(&ids);
            run(c, None, Duration::from_secs(60));
        }
    }
    if !had_gwbridge {
        let mut c = docker(&host, config);
        c.args(["network", "rm", "docker_gwbridge"]);
        run(c, None, Duration::from_secs(30));
    }
}

fn has_gwbridge(engine: &Path) -> bool {
    engine_get(engine, "/networks/docker_gwbridge").is_ok()
}

pub fn record(args: &RecordArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.scenarios)
        .with_context(|| format!("reading {}", args.scenarios.display()))?;
    let hostname = engine_get(&args.engine, "/info")?["Name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let scenarios: Vec<Scenario> = scenario::parse(&text, &hostname)?
        .into_iter()
        .filter(|s| args.only.is_empty() || args.only.contains(&s.name))
        .collect();
    if scenarios.is_empty() {
        bail!("no scenario selected");
    }
    let version = engine_get(&args.engine, "/version")?;
    let engine_desc = format!(
        "Docker Engine {} (API {})",
        version["Version"].as_str().unwrap_or("?"),
        version["ApiVersion"].as_str().unwrap_or("?")
    );
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let tmp = super::TempDir::new("shoal-compat-")?;
    let config = tmp.path().join("docker-config");
    std::fs::create_dir_all(&config)?;
    for sc in &scenarios {
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        let (state, _) = swarm_state(&args.engine)?;
        if state != "inactive" {
            bail!(
                "the engine is in swarm mode already ({state}); \
                 `docker swarm leave --force` it first if that swarm is a leftover"
            );
        }
        let had_gwbridge = has_gwbridge(&args.engine);
        eprintln!("record: {} ({} steps)", sc.name, sc.steps.len());
        let started = Instant::now();
        let mut node_ids = Vec::new();
        let result = record_one(
            sc,
            &args.engine,
            tmp.path(),
            &config,
            &engine_desc,
            &mut node_ids,
        );
        // Always: leave the swarm and remove what the scenario made.
        if let Ok((_, id)) = swarm_state(&args.engine) {
            node_ids.push(id);
        }
        clean_engine(&args.engine, &config, &node_ids, had_gwbridge);
        let fx = result?;
        fixture::save(&args.fixtures, &fx)?;
        eprintln!(
            "record: {} done in {:.1}s, {} exchanges",
            sc.name,
            started.elapsed().as_secs_f64(),
            fx.commands.iter().map(|c| c.exchanges.len()).sum::<usize>()
        );
    }
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted (the engine was cleaned up)");
    }
    Ok(())
}

fn record_one(
    sc: &Scenario,
    engine: &Path,
    tmp: &Path,
    config: &Path,
    engine_desc: &str,
    node_ids: &mut Vec<String>,
) -> anyhow::Result<Fixture> {
    let sock = tmp.join(format!("{}.sock", sc.name));
    let _ = std::fs::remove_file(&sock);
    let relay = Relay::start(&sock, engine)?;
    let host = format!("unix://{}", sock.display());
    let mut commands = Vec::new();
    for (i, step) in sc.steps.iter().enumerate() {
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        relay.log.current.store(i, Ordering::SeqCst);
        let mut cmd = fixture::Command {
            command: step.label(),
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            exchanges: Vec::new(),
        };
        match step {
            Step::Cli { args, stdin } => {
                let mut c = docker(&host, config);
                c.args(args);
                let (code, out, err) = run(c, stdin.as_deref(), Duration::from_secs(120));
                cmd.exit_code = Some(code);
                cmd.stdout = out;
                cmd.stderr = err;
            }
            Step::Http { method, path, body } => {
                let (p, q) = super::relay::split_target(path);
                let path = &join_target(&p, &q);
                let mut headers = Vec::new();
                if body.is_some() {
                    headers.push(("Content-Type".to_string(), "application/json".to_string()));
                }
                http::request(
                    &sock,
                    method,
                    path,
                    &headers,
                    body.as_deref().map(str::as_bytes),
                    fixture::BODY_LIMIT,
                    Duration::from_secs(30),
                )
                .with_context(|| format!("{method} {path}"))?;
            }
            Step::WaitRunning { service, count } => {
                wait_running(engine, service, *count, Duration::from_secs(60))?;
            }
            Step::WaitUpdate(service) => {
                wait_update(engine, service, Duration::from_secs(90))?;
            }
            Step::Sleep(s) => std::thread::sleep(Duration::from_secs_f64(*s)),
        }
        // Requests of this step may still be in the log's future; a short
        // settle keeps them with their step.
        std::thread::sleep(Duration::from_millis(50));
        if let Ok((_, id)) = swarm_state(engine) {
            if !id.is_empty() && !node_ids.contains(&id) {
                node_ids.push(id);
            }
        }
        commands.push(cmd);
    }
    relay.stop();
    let mut entries = std::mem::take(&mut *relay.log.entries.lock().unwrap());
    entries.sort_by_key(|(seq, _, _)| *seq);
    for (_, ci, ex) in entries {
        if let Some(c) = commands.get_mut(ci) {
            c.exchanges.push(ex);
        }
    }
    for c in &mut commands {
        c.exchanges = collapse(std::mem::take(&mut c.exchanges));
    }
    Ok(Fixture {
        scenario: sc.name.clone(),
        description: sc.description.clone(),
        engine: engine_desc.to_string(),
        commands,
    })
}

/// Consecutive identical requests (polling) become the last of them, with a
/// count.
fn collapse(list: Vec<fixture::Exchange>) -> Vec<fixture::Exchange> {
    let mut out: Vec<fixture::Exchange> = Vec::new();
    for ex in list {
        if let Some(last) = out.last_mut() {
            let same = last.request.method == ex.request.method
                && last.request.path == ex.request.path
                && last.request.query == ex.request.query
                && last.request.body == ex.request.body
                && ex.request.method == "GET";
            if same {
                let n = last.repeated + 1;
                *last = ex;
                last.repeated = n;
                continue;
            }
        }
        out.push(ex);
    }
    out
}

/// Polls `sock` until `count` tasks of `service` are running.
pub fn wait_running(
    sock: &Path,
    service: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let filters =
        format!(r#"{{"service":{{"{service}":true}},"desired-state":{{"running":true}}}}"#);
    let target = join_target("/tasks", &[("filters".into(), filters)]);
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Ok(r) = http::request(
            sock,
            "GET",
            &target,
            &[],
            None,
            16 << 20,
            Duration::from_secs(10),
        ) {
            if r.status == 200 {
                if let Ok(Value::Array(tasks)) = serde_json::from_slice::<Value>(&r.body) {
                    let running = tasks
                        .iter()
                        .filter(|t| t["Status"]["State"] == "running")
                        .count();
                    if running >= count {
                        return Ok(());
                    }
                    last = format!("{running} of {count} running");
                }
            } else if r.status == 404 {
                bail!("{service}: {}", String::from_utf8_lossy(&r.body).trim());
            } else {
                last = format!("{} {}", r.status, String::from_utf8_lossy(&r.body).trim());
            }
        }
        if Instant::now() >= deadline {
            bail!("{service}: not {count} tasks running within {timeout:?} ({last})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `sock` until no task is on its way anywhere: each is pending (it
/// waits for a resource and will not move by itself), has reached its
/// desired state, or has ended. A recording's `sleep` meant "let the swarm
/// settle"; on a busy machine a fixed sleep is not enough for that.
pub fn wait_settled(sock: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match http::request(
            sock,
            "GET",
            "/tasks",
            &[],
            None,
            16 << 20,
            Duration::from_secs(10),
        ) {
            // Not in a swarm (or not a manager): nothing to settle.
            Ok(r) if r.status != 200 => return Ok(()),
            Ok(r) => {
                let tasks: Vec<Value> = serde_json::from_slice(&r.body).unwrap_or_default();
                let moving = tasks.iter().filter(|t| !task_settled(t)).count();
                if moving == 0 {
                    return Ok(());
                }
                format!("{moving} tasks still moving")
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("the swarm did not settle within {timeout:?} ({last})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn task_settled(task: &Value) -> bool {
    const ENDED: [&str; 6] = [
        "complete", "shutdown", "failed", "rejected", "orphaned", "remove",
    ];
    let state = task["Status"]["State"].as_str().unwrap_or("");
    let desired = task["DesiredState"].as_str().unwrap_or("");
    state == "pending" || state == desired || ENDED.contains(&state)
}

/// Polls `sock` until `service` has no update or rollback in progress.
pub fn wait_update(sock: &Path, service: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Ok(r) = http::request(
            sock,
            "GET",
            &format!("/services/{service}"),
            &[],
            None,
            16 << 20,
            Duration::from_secs(10),
        ) {
            if r.status == 200 {
                if let Ok(v) = serde_json::from_slice::<Value>(&r.body) {
                    let state = v["UpdateStatus"]["State"].as_str().unwrap_or("");
                    if !matches!(state, "updating" | "rollback_started") {
                        return Ok(());
                    }
                    last = state.to_string();
                }
            } else {
                last = format!("{} {}", r.status, String::from_utf8_lossy(&r.body).trim());
            }
        }
        if Instant::now() >= deadline {
            bail!("{service}: update not over within {timeout:?} ({last})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
