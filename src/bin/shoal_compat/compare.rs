//! Comparing a replayed response with the recorded one.
//!
//! Shape (field names, JSON types, nesting) must be equal; values too, except
//! where a normaliser recognises a value that differs per run by nature. Each
//! normaliser checks that *both* values have the expected format before it
//! lets them differ:
//!
//! | recorded value | accepted when the replayed value is |
//! | --- | --- |
//! | object ID (25 × `[a-z0-9]`) | an object ID, the same one wherever the recording repeats it |
//! | 64-hex ID | a 64-hex ID, consistently mapped |
//! | `SWMTKN-1-…` / `SWMKEY-1-…` | a token of the same kind, consistently mapped |
//! | RFC 3339 timestamp (not the zero time) | an RFC 3339 timestamp |
//! | PEM block | a PEM block of the same type |
//! | `CertIssuerSubject`, `CertIssuerPublicKey` | base64 |
//! | `ip:port` / ip address | an address of that form |
//! | `Description.Hostname` (non-empty) | a non-empty name, consistently mapped (later requests naming the node use it) |
//! | `ContainerStatus.PID` number | a number |
//! | `Version.Index` number | a number, consistently mapped (later `version=` queries use it) |
//! | Go JSON type error (`json: cannot unmarshal…`) | the same prefix (Go's type names differ from bollard's) |
//!
//! Strings that embed captured IDs (error texts, log prefixes) are compared
//! after substituting the replay's IDs.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::Value;

/// What a replay learned so far: recorded value → replayed value.
#[derive(Debug, Default, Clone)]
pub struct Ctx {
    pub ids: HashMap<String, String>,
    pub versions: HashMap<u64, u64>,
}

impl Ctx {
    /// Replaces every captured recorded ID/token in `s` by its replay value.
    pub fn substitute(&self, s: &str) -> String {
        if self.ids.is_empty() || !s.bytes().any(|b| b.is_ascii_alphanumeric()) {
            return s.to_string();
        }
        let mut out = s.to_string();
        // Longest first, so a token is replaced before an ID inside it.
        let mut keys: Vec<&String> = self.ids.keys().collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
        for k in keys {
            if out.contains(k.as_str()) {
                out = out.replace(k.as_str(), &self.ids[k]);
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct Diff {
    /// `status`, `header.Content-Type`, `body.Spec.Name`, `body[0].ID`, …
    pub path: String,
    pub msg: String,
}

/// One comparison: differences and captures (applied by the caller with
/// [`Cmp::commit`] once the response is accepted as the answer).
#[derive(Debug, Default)]
pub struct Cmp {
    pub diffs: Vec<Diff>,
    ids: Vec<(String, String)>,
    versions: Vec<(u64, u64)>,
}

/// A recorded 25-character ID. Requiring a digit keeps a long lowercase word
/// in a recording from being taken for an ID.
pub fn is_id25(s: &str) -> bool {
    has_id25_shape(s) && s.bytes().any(|b| b.is_ascii_digit())
}

/// A replayed 25-character ID: base-36 IDs are random, and about one in
/// 3,000 has no digit at all, so the replayed side must not require one.
pub fn has_id25_shape(s: &str) -> bool {
    s.len() == 25
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

pub fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_token(s: &str) -> Option<&'static str> {
    if s.starts_with("SWMTKN-1-") && s.split('-').count() == 4 {
        Some("SWMTKN-1")
    } else if s.starts_with("SWMKEY-1-") && s.len() > 20 {
        Some("SWMKEY-1")
    } else {
        None
    }
}

pub fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (s.ends_with('Z') || s[19..].contains('+') || s[19..].contains('-'))
}

fn is_zero_time(s: &str) -> bool {
    s.starts_with("0001-01-01T00:00:00")
}

fn pem_type(s: &str) -> Option<&str> {
    let rest = s.strip_prefix("-----BEGIN ")?;
    let end = rest.find("-----")?;
    s.contains("-----END ").then(|| &rest[..end])
}

fn is_addr(s: &str) -> bool {
    s.parse::<std::net::SocketAddr>().is_ok() || s.parse::<std::net::IpAddr>().is_ok()
}

fn is_base64(s: &str) -> bool {
    !s.is_empty() && base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}

/// Prefixes of Go's encoding/json errors compared by prefix only: shoal
/// words syntax errors exactly as Go does, but cannot always name Go's
/// target type (bollard's models say `i64` where Go says `uint64`).
const GO_JSON_PREFIXES: &[&str] = &["json: cannot unmarshal", "json: unknown field"];

/// Replaces IDs, 64-hex IDs and timestamps inside free text by placeholders.
pub fn normalise_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if has_id25_shape(word) {
            out.push_str("<id>");
        } else if is_hex64(word) {
            out.push_str("<hex>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s
    }
}

impl Cmp {
    pub fn commit(self, ctx: &mut Ctx) -> Vec<Diff> {
        for (r, a) in self.ids {
            ctx.ids.entry(r).or_insert(a);
        }
        for (r, a) in self.versions {
            ctx.versions.entry(r).or_insert(a);
        }
        self.diffs
    }

    pub fn diff(&mut self, path: &str, msg: impl Into<String>) {
        self.diffs.push(Diff {
            path: path.to_string(),
            msg: msg.into(),
        });
    }

    fn lookup_id<'a>(&'a self, ctx: &'a Ctx, rec: &str) -> Option<&'a str> {
        self.ids
            .iter()
            .find(|(r, _)| r == rec)
            .map(|(_, a)| a.as_str())
            .or_else(|| ctx.ids.get(rec).map(String::as_str))
    }

    fn capture_id(&mut self, ctx: &Ctx, path: &str, rec: &str, act: &str, kind: &str) {
        match self.lookup_id(ctx, rec) {
            Some(known) if known != act => {
                let known = known.to_string();
                self.diff(
                    path,
                    format!("{kind} {act:?} where the recording's {rec:?} was replayed as {known:?} before"),
                )
            }
            Some(_) => {}
            None => self.ids.push((rec.to_string(), act.to_string())),
        }
    }

    /// Compares two JSON values at `path`.
    pub fn value(&mut self, ctx: &Ctx, path: &str, rec: &Value, act: &Value) {
        match (rec, act) {
            (Value::Object(r), Value::Object(a)) => {
                for (k, rv) in r {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    match a.get(k) {
                        Some(av) => self.value(ctx, &p, rv, av),
                        None => self.diff(&p, format!("missing (recorded {})", short(rv))),
                    }
                }
                for (k, av) in a {
                    if !r.contains_key(k) {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        self.diff(&p, format!("unexpected field (replayed {})", short(av)));
                    }
                }
            }
            (Value::Array(r), Value::Array(a)) => self.array(ctx, path, r, a),
            (Value::String(r), Value::String(a)) => self.string(ctx, path, r, a),
            (Value::Number(r), Value::Number(a)) => {
                if path.ends_with("Version.Index") {
                    if let (Some(r), Some(a)) = (r.as_u64(), a.as_u64()) {
                        let known = self
                            .versions
                            .iter()
                            .find(|(x, _)| *x == r)
                            .map(|(_, y)| *y)
                            .or_else(|| ctx.versions.get(&r).copied());
                        if known.is_none() {
                            self.versions.push((r, a));
                        }
                        return;
                    }
                }
                if path.ends_with("ContainerStatus.PID") && a.is_u64() {
                    // A process ID: differs per run by nature.
                    return;
                }
                if path.ends_with("Resources.MemoryBytes") && a.as_u64().is_some_and(|n| n > 0) {
                    // The host's MemTotal: differs per machine and even
                    // per boot of the same machine, by a few pages.
                    return;
                }
                // One JSON number type: 0 and 0.0 are the same value.
                if r != a && r.as_f64() != a.as_f64() {
                    self.diff(path, format!("recorded {r}, replayed {a}"));
                }
            }
            (r, a) if type_name(r) != type_name(a) => self.diff(
                path,
                format!(
                    "type: recorded {} {}, replayed {} {}",
                    type_name(r),
                    short(r),
                    type_name(a),
                    short(a)
                ),
            ),
            (r, a) => {
                if r != a {
                    self.diff(
                        path,
                        format!("recorded {}, replayed {}", short(r), short(a)),
                    );
                }
            }
        }
    }

    fn array(&mut self, ctx: &Ctx, path: &str, r: &[Value], a: &[Value]) {
        if r.len() != a.len() {
            self.diff(
                path,
                format!("recorded {} elements, replayed {}", r.len(), a.len()),
            );
        }
        // Order is not part of the contract for lists of objects: match each
        // recorded element with the first unused replayed one that equals it,
        // then pair the rest in order.
        let mut used = vec![false; a.len()];
        let mut unmatched = Vec::new();
        for (i, rv) in r.iter().enumerate() {
            let mut found = None;
            for (j, av) in a.iter().enumerate() {
                if used[j] {
                    continue;
                }
                let mut trial = Cmp {
                    ids: self.ids.clone(),
                    versions: self.versions.clone(),
                    diffs: Vec::new(),
                };
                trial.value(ctx, &format!("{path}[{i}]"), rv, av);
                if trial.diffs.is_empty() {
                    found = Some((j, trial));
                    break;
                }
            }
            match found {
                Some((j, trial)) => {
                    used[j] = true;
                    self.ids = trial.ids;
                    self.versions = trial.versions;
                }
                None => unmatched.push(i),
            }
        }
        // The rest: each with the unused replayed element it differs least from.
        for i in unmatched {
            let best = (0..a.len()).filter(|j| !used[*j]).min_by_key(|j| {
                let mut trial = Cmp {
                    ids: self.ids.clone(),
                    versions: self.versions.clone(),
                    diffs: Vec::new(),
                };
                trial.value(ctx, &format!("{path}[{i}]"), &r[i], &a[*j]);
                trial.diffs.len()
            });
            if let Some(j) = best {
                used[j] = true;
                self.value(ctx, &format!("{path}[{i}]"), &r[i], &a[j]);
            }
        }
    }

    fn string(&mut self, ctx: &Ctx, path: &str, r: &str, a: &str) {
        if r == a && !is_id25(r) && !is_hex64(r) {
            return;
        }
        let key = path.rsplit(['.', ']']).next().unwrap_or("");
        if key == "Hostname" && !r.is_empty() && !a.is_empty() {
            // The engine's host name: differs per machine, names the node.
            self.capture_id(ctx, path, r, a, "hostname");
        } else if is_id25(r) {
            if has_id25_shape(a) {
                self.capture_id(ctx, path, r, a, "ID");
            } else {
                self.diff(path, format!("recorded an ID, replayed {a:?}"));
            }
        } else if is_hex64(r) {
            if is_hex64(a) {
                self.capture_id(ctx, path, r, a, "64-hex ID");
            } else {
                self.diff(path, format!("recorded a 64-hex ID, replayed {a:?}"));
            }
        } else if let Some(kind) = is_token(r) {
            if is_token(a) == Some(kind) {
                self.capture_id(ctx, path, r, a, kind);
            } else {
                self.diff(path, format!("recorded a {kind} token, replayed {a:?}"));
            }
        } else if is_timestamp(r) && !is_zero_time(r) {
            if !is_timestamp(a) {
                self.diff(path, format!("recorded a timestamp, replayed {a:?}"));
            }
        } else if let Some(t) = pem_type(r) {
            if pem_type(a) != Some(t) {
                self.diff(
                    path,
                    format!("recorded a PEM {t}, replayed {}", short(&Value::from(a))),
                );
            }
        } else if matches!(key, "CertIssuerSubject" | "CertIssuerPublicKey") && is_base64(r) {
            if !is_base64(a) {
                self.diff(path, format!("recorded base64, replayed {a:?}"));
            }
        } else if is_addr(r) {
            if !is_addr(a) || r.contains(':') != a.contains(':') {
                self.diff(path, format!("recorded address {r:?}, replayed {a:?}"));
            }
        } else if let Some(p) = GO_JSON_PREFIXES.iter().find(|p| r.starts_with(*p)) {
            if !a.starts_with(p) {
                self.diff(
                    path,
                    format!("recorded a JSON decoding error {r:?}, replayed {a:?}"),
                );
            }
        } else {
            let r2 = self.substitute(ctx, r);
            if r2 != a && normalise_text(&r2) != normalise_text(a) {
                self.diff(path, format!("recorded {r:?}, replayed {a:?}"));
            }
        }
    }

    fn substitute(&self, ctx: &Ctx, s: &str) -> String {
        let mut tmp = ctx.clone();
        for (r, a) in &self.ids {
            tmp.ids.entry(r.clone()).or_insert(a.clone());
        }
        tmp.substitute(s)
    }

    /// Compares free text (non-JSON bodies, log lines).
    pub fn text(&mut self, ctx: &Ctx, path: &str, r: &str, a: &str) {
        let r2 = self.substitute(ctx, r);
        if r2 == a || normalise_text(&r2) == normalise_text(a) {
            // Same text up to IDs: the IDs correspond in order (log
            // prefixes name the task, service and node).
            let ids = |s: &str| -> Vec<String> {
                s.split(|c: char| !c.is_ascii_alphanumeric())
                    .filter(|w| has_id25_shape(w) || is_hex64(w))
                    .map(str::to_string)
                    .collect()
            };
            for (ri, ai) in ids(r).into_iter().zip(ids(a)) {
                if self.lookup_id(ctx, &ri).is_none() {
                    self.ids.push((ri, ai));
                }
            }
        } else {
            self.diff(
                path,
                format!(
                    "recorded {}, replayed {}",
                    short(&Value::from(r)),
                    short(&Value::from(a))
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_id_without_digits_is_still_an_id() {
        let recorded = "k3v9qz0x1m2n4b5c6d7e8f9g0";
        let replayed = "aaupytqgnqpmqkcdnqazqygdr";
        assert!(is_id25(recorded));
        assert!(!is_id25(replayed));
        assert!(has_id25_shape(replayed));
        assert_eq!(
            normalise_text(&format!("service {replayed} created")),
            "service <id> created"
        );
    }
}
