//! `?filters=` as the engine reads it: the Go client's map form
//! `{"name":{"web":true}}` and docker-py's list form `{"name":["web"]}`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::ApiError;

#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the filters as the engine's `filters.FromJSON` does and
    /// refuses keys outside `allowed` with the engine's "Invalid filter" text.
    /// Malformed JSON is a 500 with Go's text, as the engine answers on
    /// nodes, tasks, secrets and configs (measured; `services` says 400).
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let raw = raw.unwrap_or("");
        if raw.is_empty() {
            return Ok(Filters::default());
        }
        let value = super::decode::whole_value(raw.as_bytes())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let filters = map_form(&value).or_else(|first| legacy_form(&value).map_err(|_| first))?;
        if let Some(key) = filters.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::BadRequest(format!("Invalid filter '{key}'")));
        }
        Ok(Filters(filters))
    }

    pub fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// True when `key` is absent, or when any of its values satisfies `test`.
    pub fn any(&self, key: &str, test: impl Fn(&str) -> bool) -> bool {
        match self.0.get(key) {
            None => true,
            Some(values) => values.iter().any(|v| test(v)),
        }
    }
}

/// Go's text for a value of the wrong JSON type in a `map`/`bool` target.
fn mismatch(value: &Value, go_type: &str) -> ApiError {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    ApiError::Internal(format!(
        "json: cannot unmarshal {kind} into Go value of type {go_type}"
    ))
}

/// The Go client's form, `map[string]map[string]bool`: the values set to
/// true are the filter's values. `null` is an empty map, as in Go.
fn map_form(value: &Value) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let object = match value {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Object(o) => o,
        other => return Err(mismatch(other, "map[string]map[string]bool")),
    };
    let mut out = BTreeMap::new();
    for (key, inner) in object {
        let values = match inner {
            Value::Null => Vec::new(),
            Value::Object(set) => {
                let mut on = Vec::new();
                for (v, flag) in set {
                    match flag {
                        Value::Bool(true) => on.push(v.clone()),
                        Value::Bool(false) | Value::Null => {}
                        other => return Err(mismatch(other, "bool")),
                    }
                }
                on
            }
            other => return Err(mismatch(other, "map[string]bool")),
        };
        out.insert(key.clone(), values);
    }
    Ok(out)
}

/// The legacy form docker-py sends, `map[string][]string`; the engine
/// tries it when the map form fails, and reports the map form's error.
fn legacy_form(value: &Value) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let object = match value {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Object(o) => o,
        other => return Err(mismatch(other, "map[string][]string")),
    };
    let mut out = BTreeMap::new();
    for (key, inner) in object {
        let values = match inner {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Null => Ok(String::new()),
                    other => Err(mismatch(other, "string")),
                })
                .collect::<Result<_, _>>()?,
            other => return Err(mismatch(other, "[]string")),
        };
        out.insert(key.clone(), values);
    }
    Ok(out)
}

/// `label` filters: `key` matches presence, `key=value` an exact value.
pub fn label_matches(
    labels: Option<&std::collections::HashMap<String, String>>,
    filter: &str,
) -> bool {
    let Some(labels) = labels else { return false };
    match filter.split_once('=') {
        Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
        None => labels.contains_key(filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_both_encodings() {
        let go = Filters::parse(Some(r#"{"name":{"web":true}}"#), &["name"]).unwrap();
        let py = Filters::parse(Some(r#"{"name":["web"]}"#), &["name"]).unwrap();
        assert_eq!(go.values("name"), ["web"]);
        assert_eq!(py.values("name"), ["web"]);
        assert!(go.any("id", |_| false));
    }

    #[test]
    fn refuses_unknown_keys_with_the_engines_text() {
        let e = Filters::parse(Some(r#"{"foo":{"x":true}}"#), &["name"]).unwrap_err();
        assert_eq!(e.to_string(), "Invalid filter 'foo'");
    }

    /// The engine's answers to the same filters (engine 20.10, measured).
    #[test]
    fn words_bad_filters_as_the_engine_does() {
        let cases = [
            (
                "{bad",
                "invalid character 'b' looking for beginning of object key string",
            ),
            (
                r#"{"name":"x"}"#,
                "json: cannot unmarshal string into Go value of type map[string]bool",
            ),
            (
                "[]",
                "json: cannot unmarshal array into Go value of type map[string]map[string]bool",
            ),
            (
                r#"{"name":{"x":"y"}}"#,
                "json: cannot unmarshal string into Go value of type bool",
            ),
            (
                r#"{"name":[1]}"#,
                "json: cannot unmarshal array into Go value of type map[string]bool",
            ),
            (
                r#"{"name":["x"]} y"#,
                "invalid character 'y' after top-level value",
            ),
        ];
        for (raw, want) in cases {
            let got = Filters::parse(Some(raw), &["name"])
                .unwrap_err()
                .to_string();
            assert_eq!(got, want, "{raw}");
        }
    }

    #[test]
    fn matches_labels() {
        let labels: std::collections::HashMap<_, _> = [("a".to_string(), "1".to_string())].into();
        assert!(label_matches(Some(&labels), "a"));
        assert!(label_matches(Some(&labels), "a=1"));
        assert!(!label_matches(Some(&labels), "a=2"));
        assert!(!label_matches(None, "a"));
    }
}
