//! The fixture files under `api-fixtures/`: one JSON file per scenario, each
//! command with the exchanges it caused, bodies decoded for reading.

use std::fs;
use std::path::Path;

use anyhow::Context;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// At most this many body bytes are kept per message (streams are cut).
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fixture {
    pub scenario: String,
    pub description: String,
    /// Engine version and API version the recording was made against.
    pub engine: String,
    pub commands: Vec<Command>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Command {
    /// `docker node ls`, `http POST /v1.41/swarm/init`, `wait-running web 2`.
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub stdout: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub stderr: String,
    pub exchanges: Vec<Exchange>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exchange {
    pub request: Request,
    pub response: ResponseRec,
    /// Consecutive identical requests (a client polling) were collapsed into
    /// this one; the replay polls it until it matches or times out.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub repeated: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub query: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub body: Option<Body>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseRec {
    pub status: u16,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub body: Option<Body>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub truncated: bool,
}

/// A body, decoded as far as it goes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Body {
    /// One JSON document.
    Json(Value),
    /// Newline-separated JSON documents (events, progress streams).
    JsonLines(Vec<Value>),
    /// Docker's multiplexed stream (stdcopy): (stream, text) per frame.
    Frames(Vec<(u8, String)>),
    Text(String),
    Base64(String),
}

/// Request headers worth keeping.
pub const REQUEST_HEADERS: &[&str] = &["Content-Type", "X-Registry-Auth"];
/// Response headers worth keeping.
pub const RESPONSE_HEADERS: &[&str] = &["Content-Type", "Api-Version", "Ostype", "Swarm"];

pub fn keep_headers(all: &[(String, String)], wanted: &[&str]) -> Vec<(String, String)> {
    wanted
        .iter()
        .filter_map(|w| {
            all.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(w))
                .map(|(_, v)| (w.to_string(), v.clone()))
        })
        .collect()
}

impl Body {
    /// Decodes raw bytes; `None` for an empty body.
    pub fn decode(raw: &[u8], truncated: bool) -> Option<Body> {
        if raw.is_empty() {
            return None;
        }
        if let Some(frames) = parse_frames(raw, truncated) {
            return Some(Body::Frames(frames));
        }
        if let Ok(text) = std::str::from_utf8(raw) {
            if !truncated {
                if let Ok(v) = serde_json::from_str::<Value>(text) {
                    return Some(Body::Json(v));
                }
            }
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.len() > 1 {
                let parsed: Vec<Value> = lines
                    .iter()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
                if parsed.len() == lines.len()
                    || (truncated && parsed.len() + 1 == lines.len() && !parsed.is_empty())
                {
                    return Some(Body::JsonLines(parsed));
                }
            }
            return Some(Body::Text(text.to_string()));
        }
        Some(Body::Base64(
            base64::engine::general_purpose::STANDARD.encode(raw),
        ))
    }

    /// The bytes to send for a request body.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Body::Json(v) => serde_json::to_vec(v).unwrap(),
            Body::JsonLines(vs) => vs
                .iter()
                .map(|v| serde_json::to_string(v).unwrap() + "\n")
                .collect::<String>()
                .into_bytes(),
            Body::Frames(fs) => {
                let mut out = Vec::new();
                for (s, t) in fs {
                    out.push(*s);
                    out.extend_from_slice(&[0, 0, 0]);
                    out.extend_from_slice(&(t.len() as u32).to_be_bytes());
                    out.extend_from_slice(t.as_bytes());
                }
                out
            }
            Body::Text(t) => t.clone().into_bytes(),
            Body::Base64(b) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .unwrap_or_default(),
        }
    }
}

/// Parses stdcopy frames (header: stream byte, 3 zero bytes, u32 BE length).
fn parse_frames(mut raw: &[u8], truncated: bool) -> Option<Vec<(u8, String)>> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        if raw.len() < 8 || raw[0] > 2 || raw[1..4] != [0, 0, 0] {
            return None;
        }
        let len = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]) as usize;
        if raw.len() < 8 + len {
            if truncated && !out.is_empty() {
                break;
            }
            return None;
        }
        out.push((
            raw[0],
            String::from_utf8_lossy(&raw[8..8 + len]).into_owned(),
        ));
        raw = &raw[8 + len..];
    }
    (!out.is_empty()).then_some(out)
}

pub fn load(path: &Path) -> anyhow::Result<Fixture> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn load_all(dir: &Path) -> anyhow::Result<Vec<Fixture>> {
    let mut paths: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load(p)).collect()
}

pub fn save(dir: &Path, f: &Fixture) -> anyhow::Result<()> {
    fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.json", f.scenario));
    let mut text = serde_json::to_string_pretty(f)?;
    text.push('\n');
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}
