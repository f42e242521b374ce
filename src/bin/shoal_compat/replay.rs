//! `shoal-compat check` / `report`: replays every fixture against a fresh
//! shoal per scenario and compares; the ledger says what is expected.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;

use super::compare::{Cmp, Ctx, Diff};
use super::fixture::{self, Body, Exchange, Fixture};
use super::http;
use super::record::{wait_running, wait_settled, wait_update};
use super::relay::join_target;
use super::schema::{Spec, Violation};

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Replay only these scenarios (default: all).
    pub only: Vec<String>,
    /// The shoal binary (default: next to this one).
    #[arg(long)]
    pub shoal: Option<PathBuf>,
    /// The engine shoal fronts.
    #[arg(
        long,
        env = "SHOAL_TEST_ENGINE",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub engine: String,
    #[arg(long, default_value = "api-fixtures")]
    pub fixtures: PathBuf,
    #[arg(long, default_value = "compat-tests/ledger.txt")]
    pub ledger: PathBuf,
    #[arg(long, default_value = "compat-tests/allowances.json")]
    pub allowances: PathBuf,
    /// The Engine API 1.41 schema every owned response is checked against
    /// (made by `compat-tests/spec-to-json.py`).
    #[arg(long, default_value = "compat-tests/engine-api-v1.41.json")]
    pub schema: PathBuf,
    /// Print every difference, not only unexpected ones.
    #[arg(long, short)]
    pub verbose: bool,
    /// Rewrite the ledger from this run (keeps reasons of known-fails that
    /// still fail; new failures get their first difference as the reason).
    #[arg(long)]
    pub write_ledger: bool,
}

/// One allowance: a field where shoal deliberately differs.
#[derive(Debug, Clone, Deserialize)]
pub struct Allowance {
    /// A scenario name, or `*`.
    #[serde(default = "star")]
    pub scenario: String,
    /// Request path fragment the exchange must contain (e.g. `/_ping`), or empty.
    #[serde(default)]
    pub request: String,
    /// Field path (`body.Spec.Foo`, `header.Swarm`); array indices are ignored.
    pub field: String,
    pub reason: String,
}

fn star() -> String {
    "*".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Allowed,
    Fail,
}

#[derive(Debug)]
pub struct CmdResult {
    pub key: String,
    pub scenario: String,
    pub command: String,
    pub outcome: Outcome,
    pub diffs: Vec<String>,
    pub allowed: Vec<String>,
    pub checked: usize,
}

/// The paths shoal answers itself (versions stripped); everything else is
/// proxied to the engine and not compared.
fn owned(path: &str) -> bool {
    let p = strip_version(path);
    [
        "/swarm",
        "/nodes",
        "/services",
        "/tasks",
        "/secrets",
        "/configs",
        "/networks",
        "/info",
        "/_ping",
        "/events",
    ]
    .iter()
    .any(|o| p == *o || p.starts_with(&format!("{o}/")))
}

fn strip_version(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some(i) = rest.find('/') {
            if rest[..i].chars().all(|c| c.is_ascii_digit() || c == '.') {
                return &rest[i..];
            }
        }
    }
    path
}

struct ShoalProc {
    child: Child,
    sock: PathBuf,
    _dir: super::TempDir,
    engine_sock: PathBuf,
    node_ids: Vec<String>,
}

impl ShoalProc {
    fn start(bin: &Path, engine: &str) -> anyhow::Result<ShoalProc> {
        let dir = super::TempDir::new("shoal-compat-")?;
        let sock = dir.path().join("shoal.sock");
        let log = fs::File::create(dir.path().join("shoal.log"))?;
        let child = Command::new(bin)
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .arg("--engine")
            .arg(engine)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("RUST_LOG")
            // Several shoals may run at once: a free loopback port each.
            .env("SHOAL_CLUSTER_LISTEN_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let engine_sock = PathBuf::from(engine.strip_prefix("unix://").unwrap_or(engine));
        let mut me = ShoalProc {
            child,
            sock,
            _dir: dir,
            engine_sock,
            node_ids: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = me.child.try_wait() {
                bail!("shoal exited with {st} at start: {}", me.log_tail());
            }
            if http::request(
                &me.sock,
                "GET",
                "/_ping",
                &[],
                None,
                1024,
                Duration::from_secs(2),
            )
            .is_ok()
            {
                return Ok(me);
            }
            if Instant::now() > deadline {
                bail!("shoal not ready in 30s: {}", me.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self._dir.path().join("shoal.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Remembers this shoal's node ID (its task containers carry it).
    fn note_node(&mut self) {
        if let Ok(r) = http::request(
            &self.sock,
            "GET",
            "/info",
            &[],
            None,
            1 << 20,
            Duration::from_secs(10),
        ) {
            if let Ok(v) = serde_json::from_slice::<Value>(&r.body) {
                if let Some(id) = v["Swarm"]["NodeID"].as_str() {
                    if !id.is_empty() && !self.node_ids.iter().any(|n| n == id) {
                        self.node_ids.push(id.to_string());
                    }
                }
            }
        }
    }
}

impl Drop for ShoalProc {
    fn drop(&mut self) {
        self.note_node();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Remove the containers this shoal's agent ran on the engine.
        for id in &self.node_ids {
            let filters = format!(r#"{{"label":["com.docker.swarm.node.id={id}"]}}"#);
            let target = join_target(
                "/containers/json",
                &[("all".into(), "1".into()), ("filters".into(), filters)],
            );
            let Ok(r) = http::request(
                &self.engine_sock,
                "GET",
                &target,
                &[],
                None,
                16 << 20,
                Duration::from_secs(30),
            ) else {
                continue;
            };
            let Ok(Value::Array(list)) = serde_json::from_slice::<Value>(&r.body) else {
                continue;
            };
            for c in list {
                if let Some(cid) = c["Id"].as_str() {
                    let _ = http::request(
                        &self.engine_sock,
                        "DELETE",
                        &format!("/containers/{cid}?force=1&v=1"),
                        &[],
                        None,
                        1024,
                        Duration::from_secs(30),
                    );
                }
            }
        }
    }
}

fn load_allowances(path: &Path) -> anyhow::Result<Vec<Allowance>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let list: Vec<Allowance> = serde_json::from_str(&fs::read_to_string(path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    for a in &list {
        if a.field == "status" || a.field.starts_with("status.") {
            bail!(
                "allowance {:?}: a status code can never be allowed",
                a.field
            );
        }
        if a.reason.trim().is_empty() {
            bail!("allowance {:?} has no reason", a.field);
        }
    }
    Ok(list)
}

fn strip_indices(p: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for c in p.chars() {
        match c {
            '[' => skip = true,
            ']' => skip = false,
            c if !skip => out.push(c),
            _ => {}
        }
    }
    out
}

fn allowed_by<'a>(
    list: &'a [Allowance],
    scenario: &str,
    request: &str,
    d: &Diff,
) -> Option<&'a Allowance> {
    if d.path == "status" {
        return None;
    }
    let p = strip_indices(&d.path);
    list.iter().find(|a| {
        (a.scenario == "*" || a.scenario == scenario)
            && (a.request.is_empty() || request.contains(&a.request))
            && (p == a.field || p.starts_with(&format!("{}.", a.field)))
    })
}

/// Sends one recorded request (IDs and versions substituted) and compares.
fn replay_exchange(sock: &Path, ctx: &Ctx, ex: &Exchange) -> (Cmp, String, Option<Replayed>) {
    let path = ctx.substitute(&ex.request.path);
    let query: Vec<(String, String)> = ex
        .request
        .query
        .iter()
        .map(|(k, v)| {
            let v = if k == "version" {
                v.parse::<u64>()
                    .ok()
                    .and_then(|n| ctx.versions.get(&n))
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| v.clone())
            } else {
                ctx.substitute(v)
            };
            (k.clone(), v)
        })
        .collect();
    let target = join_target(&path, &query);
    let body = ex.request.body.as_ref().map(|b| match b {
        Body::Json(v) => ctx
            .substitute(&serde_json::to_string(v).unwrap())
            .into_bytes(),
        Body::Text(t) => ctx.substitute(t).into_bytes(),
        other => other.encode(),
    });
    let label = format!("{} {}", ex.request.method, target);
    let mut cmp = Cmp::default();
    let resp = match http::request(
        sock,
        &ex.request.method,
        &target,
        &ex.request.headers,
        body.as_deref(),
        fixture::BODY_LIMIT,
        Duration::from_secs(30),
    ) {
        Ok(r) => r,
        Err(e) => {
            cmp.diff("status", format!("no response: {e}"));
            return (cmp, label, None);
        }
    };
    let rec = &ex.response;
    if resp.status != rec.status {
        cmp.diff(
            "status",
            format!("recorded {}, replayed {}", rec.status, resp.status),
        );
    }
    let rec_ct = rec
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if let Some((_, rct)) = rec_ct {
        let media = |s: &str| {
            s.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        };
        match resp.header("content-type") {
            Some(act) if media(act) == media(rct) => {}
            other => cmp.diff(
                "header.Content-Type",
                format!("recorded {rct:?}, replayed {other:?}"),
            ),
        }
    }
    let truncated = rec.truncated || resp.body.len() >= fixture::BODY_LIMIT;
    let act_body = Body::decode(&resp.body, truncated);
    let info = strip_version(&ex.request.path) == "/info";
    match (&rec.body, &act_body) {
        (None, None) => {}
        (Some(Body::Json(r)), Some(Body::Json(a))) if info => {
            // Only the Swarm part of /info is shoal's; the rest is the engine's.
            cmp.value(ctx, "body.Swarm", &r["Swarm"], &a["Swarm"]);
        }
        (Some(Body::Json(r)), Some(Body::Json(a))) => cmp.value(ctx, "body", r, a),
        (Some(Body::JsonLines(r)), Some(Body::JsonLines(a))) => cmp.value(
            ctx,
            "body",
            &Value::from(r.clone()),
            &Value::from(a.clone()),
        ),
        (Some(Body::Frames(r)), Some(Body::Frames(a))) => {
            if r.len() != a.len() {
                cmp.diff(
                    "body",
                    format!("recorded {} frames, replayed {}", r.len(), a.len()),
                );
            }
            for (i, ((rs, rt), (as_, at))) in r.iter().zip(a).enumerate() {
                if rs != as_ {
                    cmp.diff(
                        &format!("body[{i}].stream"),
                        format!("recorded {rs}, replayed {as_}"),
                    );
                }
                cmp.text(ctx, &format!("body[{i}]"), rt, at);
            }
        }
        (Some(Body::Text(r)), Some(Body::Text(a))) => cmp.text(ctx, "body", r, a),
        (r, a) => {
            let kind = |b: &Option<Body>| match b {
                None => "empty".to_string(),
                Some(Body::Json(v)) => format!("JSON {}", crate_short(v)),
                Some(Body::JsonLines(_)) => "JSON lines".into(),
                Some(Body::Frames(_)) => "a multiplexed stream".into(),
                Some(Body::Text(t)) => {
                    format!("text {:?}", t.chars().take(100).collect::<String>())
                }
                Some(Body::Base64(_)) => "binary".into(),
            };
            cmp.diff(
                "body",
                format!("recorded {}, replayed {}", kind(r), kind(a)),
            );
        }
    }
    let replayed = Replayed {
        status: resp.status,
        body: act_body,
    };
    (cmp, label, Some(replayed))
}

/// What shoal answered to a replayed request.
struct Replayed {
    status: u16,
    body: Option<Body>,
}

/// Schema violations of one JSON response body (`/info`: only its Swarm
/// part, the rest is the engine's). Bodies that are not one JSON document,
/// and responses the spec gives no schema for, are not checked.
fn schema_violations(
    spec: &Spec,
    method: &str,
    path: &str,
    status: u16,
    body: Option<&Body>,
) -> Vec<Violation> {
    let p = strip_version(path);
    let (Some(Body::Json(v)), Some(schema)) = (body, spec.response_schema(method, p, status))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    spec.validate(schema, v, "body", &mut out);
    if p == "/info" {
        out.retain(|x| x.path == "body.Swarm" || x.path.starts_with("body.Swarm."));
    }
    out
}

/// Shoal's schema violations that the real engine's recorded response does
/// not have too (matched by field path, array indices ignored, and message).
fn shoal_only_violations(spec: &Spec, ex: &Exchange, got: &Replayed) -> Vec<Violation> {
    let method = &ex.request.method;
    let path = &ex.request.path;
    let rec = &ex.response;
    let engine: Vec<String> = schema_violations(spec, method, path, rec.status, rec.body.as_ref())
        .iter()
        .map(Violation::key)
        .collect();
    schema_violations(spec, method, path, got.status, got.body.as_ref())
        .into_iter()
        .filter(|v| !engine.contains(&v.key()))
        .collect()
}

fn crate_short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 100 {
        format!("{}…", s.chars().take(100).collect::<String>())
    } else {
        s
    }
}

/// How long a GET is retried while it differs: a state reached over time
/// (task states, counts, update status) may still be on its way. Only when
/// every difference is of that kind.
fn poll_budget(ex: &Exchange, diffs: &[Diff]) -> Duration {
    let p = strip_version(&ex.request.path);
    let over_time = |d: &Diff| {
        let shape = d.msg.starts_with("missing") || d.msg.starts_with("unexpected field");
        d.path.contains("UpdateStatus")
            || d.path.contains("ServiceStatus")
            || d.msg.contains("elements")
            || (!shape
                && ["State", "Message", "Err", "Timestamp", "RunningTasks"]
                    .iter()
                    .any(|k| d.path.ends_with(k)))
    };
    if ex.request.method != "GET" || diffs.iter().any(|d| d.path == "status" || !over_time(d)) {
        Duration::ZERO
    } else if ex.repeated > 0 {
        Duration::from_secs(20)
    } else if p.starts_with("/tasks") || p.starts_with("/services") || p.starts_with("/nodes") {
        Duration::from_secs(5)
    } else {
        Duration::ZERO
    }
}

pub fn replay_fixture(
    fx: &Fixture,
    bin: &Path,
    engine: &str,
    allowances: &[Allowance],
    spec: &Spec,
) -> anyhow::Result<Vec<CmdResult>> {
    let mut shoal = ShoalProc::start(bin, engine)?;
    // How long a wait step may take: a limit only, met in seconds on a
    // quiet machine; generous because CI machines are sometimes busy.
    const WAIT_LIMIT: Duration = Duration::from_secs(90);
    let mut ctx = Ctx::default();
    let mut results = Vec::new();
    for (i, cmd) in fx.commands.iter().enumerate() {
        let mut diffs = Vec::new();
        let mut allowed = Vec::new();
        let mut checked = 0;
        if let Some(rest) = cmd.command.strip_prefix("wait-running ") {
            let (svc, n) = rest.split_once(' ').unwrap_or((rest, "1"));
            if let Err(e) = wait_running(&shoal.sock, svc, n.parse().unwrap_or(1), WAIT_LIMIT) {
                diffs.push(format!("wait: {e:#}"));
            }
            checked = 1;
        } else if let Some(svc) = cmd.command.strip_prefix("wait-update ") {
            if let Err(e) = wait_update(&shoal.sock, svc, WAIT_LIMIT) {
                diffs.push(format!("wait: {e:#}"));
            }
            checked = 1;
        } else if let Some(s) = cmd.command.strip_prefix("sleep ") {
            std::thread::sleep(Duration::from_secs_f64(s.parse().unwrap_or(0.0)));
            if let Err(e) = wait_settled(&shoal.sock, WAIT_LIMIT) {
                diffs.push(format!("wait: {e:#}"));
            }
        }
        for (k, ex) in cmd.exchanges.iter().enumerate() {
            if !owned(&ex.request.path) {
                continue;
            }
            checked += 1;
            let start = Instant::now();
            let (cmp, label, got) = loop {
                let (cmp, label, got) = replay_exchange(&shoal.sock, &ctx, ex);
                let budget = poll_budget(ex, &cmp.diffs);
                if cmp.diffs.is_empty() || start.elapsed() >= budget {
                    break (cmp, label, got);
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            for d in cmp.commit(&mut ctx) {
                let line = format!("#{k} {label}: {}: {}", d.path, d.msg);
                match allowed_by(allowances, &fx.scenario, &label, &d) {
                    Some(a) => allowed.push(format!("{line} (allowed: {})", a.reason)),
                    None => diffs.push(line),
                }
            }
            // Schema violations are failures; allowances never cover them.
            if let Some(got) = &got {
                for v in shoal_only_violations(spec, ex, got) {
                    diffs.push(format!("#{k} {label}: schema {}: {}", v.path, v.msg));
                }
            }
        }
        if cmd.command.contains("swarm") {
            shoal.note_node();
        }
        let outcome = if !diffs.is_empty() {
            Outcome::Fail
        } else if !allowed.is_empty() {
            Outcome::Allowed
        } else {
            Outcome::Pass
        };
        results.push(CmdResult {
            key: format!("{}/{:02}", fx.scenario, i + 1),
            scenario: fx.scenario.clone(),
            command: cmd.command.clone(),
            outcome,
            diffs,
            allowed,
            checked,
        });
    }
    Ok(results)
}

/// The ledger: `key | pass|known-fail | reason | command`.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub expect_pass: bool,
    pub reason: String,
}

pub fn load_ledger(path: &Path) -> anyhow::Result<BTreeMap<String, LedgerEntry>> {
    let mut out = BTreeMap::new();
    if !path.exists() {
        return Ok(out);
    }
    for (n, line) in fs::read_to_string(path)?.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.splitn(4, " | ").map(str::trim).collect();
        if parts.len() < 2 {
            bail!(
                "{} line {}: expected `key | pass|known-fail | reason | command`",
                path.display(),
                n + 1
            );
        }
        let expect_pass = match parts[1] {
            "pass" => true,
            "known-fail" => false,
            other => bail!(
                "{} line {}: unknown result {other:?}",
                path.display(),
                n + 1
            ),
        };
        let reason = parts.get(2).copied().unwrap_or("").to_string();
        if !expect_pass && reason.is_empty() {
            bail!(
                "{} line {}: a known-fail needs a reason",
                path.display(),
                n + 1
            );
        }
        out.insert(
            parts[0].to_string(),
            LedgerEntry {
                expect_pass,
                reason,
            },
        );
    }
    Ok(out)
}

fn write_ledger(
    path: &Path,
    results: &[CmdResult],
    old: &BTreeMap<String, LedgerEntry>,
) -> anyhow::Result<()> {
    let mut text = String::from(
        "# The compat ledger: every recorded command, expected to pass or known to fail.\n\
         # `cargo test --test compat` fails when a result differs from this file in either\n\
         # direction. Regenerate with `cargo run --bin shoal-compat -- check --write-ledger`\n\
         # (reasons of known-fails are kept; edit new ones by hand).\n\
         # key | pass|known-fail | reason | command\n",
    );
    for r in results {
        if r.outcome == Outcome::Fail {
            let reason = old
                .get(&r.key)
                .filter(|e| !e.expect_pass)
                .map(|e| e.reason.clone())
                .unwrap_or_else(|| {
                    r.diffs
                        .first()
                        .map(|d| d.chars().take(160).collect::<String>())
                        .unwrap_or_default()
                        .replace(" | ", " / ")
                        .replace(['\n', '\r'], " ")
                });
            text.push_str(&format!(
                "{} | known-fail | {} | {}\n",
                r.key, reason, r.command
            ));
        } else {
            text.push_str(&format!("{} | pass | | {}\n", r.key, r.command));
        }
    }
    fs::write(path, text)?;
    Ok(())
}

fn default_shoal() -> PathBuf {
    let me = std::env::current_exe().unwrap_or_default();
    me.with_file_name("shoal")
}

pub fn run_all(args: &ReplayArgs) -> anyhow::Result<Vec<CmdResult>> {
    let bin = args.shoal.clone().unwrap_or_else(default_shoal);
    let allowances = load_allowances(&args.allowances)?;
    let spec = Spec::load(&args.schema)?;
    let fixtures: Vec<Fixture> = fixture::load_all(&args.fixtures)?
        .into_iter()
        .filter(|f| args.only.is_empty() || args.only.contains(&f.scenario))
        .collect();
    let mut all = Vec::new();
    for fx in &fixtures {
        let t = Instant::now();
        let res = replay_fixture(fx, &bin, &args.engine, &allowances, &spec)?;
        let fails = res.iter().filter(|r| r.outcome == Outcome::Fail).count();
        eprintln!(
            "compat: {:<24} {:>3} commands, {:>3} failing, {:.1}s",
            fx.scenario,
            res.len(),
            fails,
            t.elapsed().as_secs_f64()
        );
        all.extend(res);
    }
    Ok(all)
}

/// `check`: replays and compares with the ledger; Err when they disagree.
pub fn check(args: &ReplayArgs) -> anyhow::Result<()> {
    let results = run_all(args)?;
    let ledger = load_ledger(&args.ledger)?;
    if args.write_ledger {
        if !args.only.is_empty() {
            bail!("--write-ledger needs a full run (no scenario names)");
        }
        write_ledger(&args.ledger, &results, &ledger)?;
        eprintln!("compat: wrote {}", args.ledger.display());
        return Ok(());
    }
    let mut problems = Vec::new();
    for r in &results {
        let passed = r.outcome != Outcome::Fail;
        match ledger.get(&r.key) {
            None => problems.push(format!("{} ({}): not in the ledger", r.key, r.command)),
            Some(e) if e.expect_pass && !passed => problems.push(format!(
                "REGRESSION {} ({}): the ledger says pass, it fails:\n    {}",
                r.key,
                r.command,
                r.diffs.join("\n    ")
            )),
            Some(e) if !e.expect_pass && passed => problems.push(format!(
                "FIXED {} ({}): passes now; mark it pass in the ledger (was known-fail: {})",
                r.key, r.command, e.reason
            )),
            _ => {}
        }
        if args.verbose && (!r.diffs.is_empty() || !r.allowed.is_empty()) {
            eprintln!("{} {}:", r.key, r.command);
            for d in r.diffs.iter().chain(&r.allowed) {
                eprintln!("    {d}");
            }
        }
    }
    if args.only.is_empty() {
        for k in ledger.keys() {
            if !results.iter().any(|r| &r.key == k) {
                problems.push(format!("{k}: in the ledger but no such recorded command"));
            }
        }
    }
    let pass = results
        .iter()
        .filter(|r| r.outcome != Outcome::Fail)
        .count();
    let allowed = results
        .iter()
        .filter(|r| r.outcome == Outcome::Allowed)
        .count();
    let known = results.len() - pass;
    eprintln!(
        "compat: {} commands: {pass} pass ({allowed} with allowances), {known} fail; {} differ from the ledger",
        results.len(),
        problems.len()
    );
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        bail!(
            "{} results differ from {}",
            problems.len(),
            args.ledger.display()
        );
    }
    Ok(())
}

/// `report`: the table scenario × command, then `N passed, N failed`.
pub fn report(args: &ReplayArgs) -> anyhow::Result<()> {
    let results = run_all(args)?;
    let ledger = load_ledger(&args.ledger)?;
    let w = results
        .iter()
        .map(|r| r.command.chars().count())
        .max()
        .unwrap_or(10)
        .min(70);
    println!(
        "{:<26} {:<3} {:<w$} {:>4} {:<8} ledger",
        "scenario", "#", "command", "reqs", "result"
    );
    for r in &results {
        let num = r.key.rsplit('/').next().unwrap_or("");
        let cmd: String = r.command.chars().take(w).collect();
        let res = match r.outcome {
            Outcome::Pass => "pass",
            Outcome::Allowed => "allowed",
            Outcome::Fail => "FAIL",
        };
        let led = match ledger.get(&r.key) {
            Some(e) if e.expect_pass => "pass".to_string(),
            Some(e) => format!("known-fail: {}", e.reason),
            None => "(missing)".into(),
        };
        println!(
            "{:<26} {:<3} {:<w$} {:>4} {:<8} {}",
            r.scenario, num, cmd, r.checked, res, led
        );
        if args.verbose {
            for d in r.diffs.iter().chain(&r.allowed) {
                println!("        {d}");
            }
        }
    }
    let passed = results
        .iter()
        .filter(|r| r.outcome != Outcome::Fail)
        .count();
    let allowed = results
        .iter()
        .filter(|r| r.outcome == Outcome::Allowed)
        .count();
    let allowances: usize = results.iter().map(|r| r.allowed.len()).sum();
    println!("({allowed} passed only with allowances, {allowances} allowed differences)");
    println!("{passed} passed, {} failed", results.len() - passed);
    Ok(())
}
