//! Response bodies checked against the Engine API 1.41 schema
//! (`compat-tests/engine-api-v1.41.json`, made from the swagger YAML by
//! `compat-tests/spec-to-json.py`).
//!
//! What is checked: `type` (object, array, string, integer, number,
//! boolean), `$ref` into `definitions`, `allOf`, `items`, `properties` and a
//! schema-valued `additionalProperties`, `enum` on strings. Unknown fields are
//! allowed (the spec is not closed). `null` is allowed where the schema says
//! `x-nullable`; elsewhere it is a violation, which the caller excuses when
//! the real engine's recorded response has it too.

use std::fs;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

/// The spec's `paths` and `definitions`, loaded once per run.
pub struct Spec {
    root: Value,
}

/// One place where a body does not fit its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `body.Spec.Mode`, `body[2].Status.State`.
    pub path: String,
    /// `expected integer, got string "3"`.
    pub msg: String,
}

impl Violation {
    /// The same violation on any array element: how a shoal violation is
    /// matched against the engine's.
    pub fn key(&self) -> String {
        let mut out = String::new();
        let mut skip = false;
        for c in self.path.chars() {
            match c {
                '[' => skip = true,
                ']' => skip = false,
                c if !skip => out.push(c),
                _ => {}
            }
        }
        format!("{out}: {}", self.msg)
    }
}

impl Spec {
    pub fn load(path: &Path) -> anyhow::Result<Spec> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let root: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            root["paths"].is_object() && root["definitions"].is_object(),
            "{}: no paths or definitions",
            path.display()
        );
        Ok(Spec { root })
    }

    /// The response schema for `method path` (version prefix already
    /// stripped) answering `status`: the path template with the fewest
    /// `{param}` segments that matches and has the method; the status's
    /// entry, else `default`.
    pub fn response_schema(&self, method: &str, path: &str, status: u16) -> Option<&Value> {
        let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let method = method.to_ascii_lowercase();
        let mut best: Option<(usize, &Value)> = None;
        for (tmpl, item) in self.root["paths"].as_object()? {
            let tsegs: Vec<&str> = tmpl.split('/').collect();
            if tsegs.len() != segs.len() {
                continue;
            }
            let mut params = 0;
            let fits = tsegs.iter().zip(&segs).all(|(t, s)| {
                if t.starts_with('{') && t.ends_with('}') {
                    params += 1;
                    !s.is_empty()
                } else {
                    t == s
                }
            });
            let Some(op) = item.get(&method) else {
                continue;
            };
            if fits && best.is_none_or(|(p, _)| params < p) {
                best = Some((params, op));
            }
        }
        let responses = &best?.1["responses"];
        let resp = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))?;
        resp.get("schema")
    }

    /// Validates `v` (found at `path`) against `schema`, appending what does
    /// not fit.
    pub fn validate(&self, schema: &Value, v: &Value, path: &str, out: &mut Vec<Violation>) {
        let schema = self.resolve(schema);
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            for s in parts {
                self.validate(s, v, path, out);
            }
        }
        if v.is_null() {
            let nullable = schema
                .get("x-nullable")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !nullable && schema.get("type").is_some() {
                out.push(Violation {
                    path: path.into(),
                    msg: format!("expected {}, got null", type_name(schema)),
                });
            }
            return;
        }
        if let Some(ty) = schema.get("type").and_then(Value::as_str) {
            if !fits_type(ty, v) {
                out.push(Violation {
                    path: path.into(),
                    msg: format!("expected {ty}, got {}", describe(v)),
                });
                return;
            }
        }
        if let (Some(allowed), Value::String(s)) = (schema.get("enum").and_then(Value::as_array), v)
        {
            if !allowed.iter().any(|a| a.as_str() == Some(s)) {
                let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                out.push(Violation {
                    path: path.into(),
                    msg: format!("{s:?} is not one of [{}]", list.join(", ")),
                });
            }
        }
        match v {
            Value::Object(map) => {
                let props = schema.get("properties").and_then(Value::as_object);
                let extra = schema.get("additionalProperties").filter(|s| s.is_object());
                for (k, fv) in map {
                    let sub = format!("{path}.{k}");
                    match props.and_then(|p| p.get(k)) {
                        Some(s) => self.validate(s, fv, &sub, out),
                        None => {
                            if let Some(s) = extra {
                                self.validate(s, fv, &sub, out);
                            }
                        }
                    }
                }
            }
            Value::Array(list) => {
                if let Some(items) = schema.get("items") {
                    for (i, e) in list.iter().enumerate() {
                        self.validate(items, e, &format!("{path}[{i}]"), out);
                    }
                }
            }
            _ => {}
        }
    }

    /// Follows `$ref: #/definitions/Name` (chains too).
    fn resolve<'a>(&'a self, mut schema: &'a Value) -> &'a Value {
        for _ in 0..16 {
            let Some(r) = schema.get("$ref").and_then(Value::as_str) else {
                break;
            };
            let name = r.trim_start_matches("#/definitions/");
            match self.root["definitions"].get(name) {
                Some(s) => schema = s,
                None => break,
            }
        }
        schema
    }
}

fn fits_type(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => true,
    }
}

fn type_name(schema: &Value) -> &str {
    schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("a value")
}

fn describe(v: &Value) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    match v {
        Value::Array(_) | Value::Object(_) => kind.to_string(),
        other => {
            let s = other.to_string();
            let s: String = s.chars().take(40).collect();
            format!("{kind} {s}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> Spec {
        Spec {
            root: json!({
                "paths": {
                    "/services/{id}": {"get": {"responses": {"200": {"schema": {"$ref": "#/definitions/S"}}}}},
                    "/services/create": {"post": {"responses": {"201": {"schema": {"type": "object"}}}}},
                },
                "definitions": {
                    "S": {"type": "object", "properties": {
                        "N": {"type": "integer"},
                        "M": {"type": "string", "enum": ["a", "b"]},
                        "L": {"type": "array", "items": {"allOf": [{"$ref": "#/definitions/T"}]}},
                        "Z": {"type": "string", "x-nullable": true},
                    }},
                    "T": {"type": "object", "properties": {"B": {"type": "boolean"}}},
                },
            }),
        }
    }

    #[test]
    fn finds_templates_and_checks_types() {
        let s = spec();
        assert!(s.response_schema("GET", "/services/abc", 200).is_some());
        assert!(s.response_schema("POST", "/services/create", 201).is_some());
        assert!(s.response_schema("GET", "/services/abc", 404).is_none());
        let schema = s.response_schema("GET", "/services/abc", 200).unwrap();
        let mut out = Vec::new();
        let body = json!({"N": 3, "M": "a", "L": [{"B": true}], "Z": null, "X": 1});
        s.validate(schema, &body, "body", &mut out);
        assert!(out.is_empty(), "{out:?}");
        let body = json!({"N": "3", "M": "c", "L": [{"B": 1}], "Z": 2});
        s.validate(schema, &body, "body", &mut out);
        let paths: Vec<&str> = out.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(paths, ["body.N", "body.M", "body.L[0].B", "body.Z"]);
        assert_eq!(out[2].key(), "body.L.B: expected boolean, got integer 1");
    }
}
