//! `compat-tests/scenarios.txt`: what the recorder runs.
//!
//! ```text
//! scenario NAME  free description
//! cli ARGS...               # the docker CLI (shell-like quoting)
//! cli ARGS... <<< STDIN     # with STDIN on its standard input
//! http METHOD PATH [BODY]   # one raw request; BODY is the rest of the line, verbatim
//! wait-running SERVICE N    # poll until N tasks of SERVICE run (not recorded)
//! wait-update SERVICE       # poll until SERVICE's update/rollback is over (not recorded)
//! sleep SECONDS             # (not recorded)
//! ```
//!
//! `{hostname}` anywhere in a step is the engine's hostname (the node's name).

use anyhow::{bail, Context};

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub enum Step {
    Cli {
        args: Vec<String>,
        stdin: Option<String>,
    },
    Http {
        method: String,
        path: String,
        body: Option<String>,
    },
    WaitRunning {
        service: String,
        count: usize,
    },
    WaitUpdate(String),
    Sleep(f64),
}

impl Step {
    /// How the step is named in fixtures, the ledger and the report.
    pub fn label(&self) -> String {
        match self {
            Step::Cli { args, stdin } => {
                let mut s = format!("docker {}", args.join(" "));
                if stdin.is_some() {
                    s.push_str(" <<< …");
                }
                s
            }
            Step::Http { method, path, body } => match body {
                Some(b) if b.chars().count() > 40 => {
                    format!(
                        "http {method} {path} {}…",
                        b.chars().take(40).collect::<String>()
                    )
                }
                Some(b) => format!("http {method} {path} {b}"),
                None => format!("http {method} {path}"),
            },
            Step::WaitRunning { service, count } => format!("wait-running {service} {count}"),
            Step::WaitUpdate(s) => format!("wait-update {s}"),
            Step::Sleep(s) => format!("sleep {s}"),
        }
    }
}

/// Parses a command line's arguments, honouring '…' and "…" quoting.
pub fn shell_split(s: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => bail!("unterminated ' in {s:?}"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.push(chars.next().unwrap_or('\\')),
                        Some(c) => cur.push(c),
                        None => bail!("unterminated \" in {s:?}"),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

pub fn parse(text: &str, hostname: &str) -> anyhow::Result<Vec<Scenario>> {
    let mut out: Vec<Scenario> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim().replace("{hostname}", hostname);
        let line = line.as_str();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let ctx = || format!("scenarios line {}: {raw}", n + 1);
        if word == "scenario" {
            let (name, desc) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            out.push(Scenario {
                name: name.to_string(),
                description: desc.trim().to_string(),
                steps: Vec::new(),
            });
            continue;
        }
        let Some(sc) = out.last_mut() else {
            bail!("{}: step before any `scenario`", ctx());
        };
        let step = match word {
            "cli" => {
                let (cmd, stdin) = match rest.split_once(" <<< ") {
                    Some((c, s)) => (c, Some(s.to_string())),
                    None => (rest, None),
                };
                Step::Cli {
                    args: shell_split(cmd).with_context(ctx)?,
                    stdin,
                }
            }
            "http" => {
                let mut parts = rest.splitn(3, ' ');
                let method = parts.next().unwrap_or_default().to_string();
                let path = parts.next().with_context(ctx)?.to_string();
                let body = parts.next().map(str::to_string);
                Step::Http { method, path, body }
            }
            "wait-running" => {
                let (s, n) = rest.split_once(' ').with_context(ctx)?;
                Step::WaitRunning {
                    service: s.to_string(),
                    count: n.trim().parse().with_context(ctx)?,
                }
            }
            "wait-update" => Step::WaitUpdate(rest.to_string()),
            "sleep" => Step::Sleep(rest.parse().with_context(ctx)?),
            _ => bail!("{}: unknown step {word:?}", ctx()),
        };
        sc.steps.push(step);
    }
    Ok(out)
}
