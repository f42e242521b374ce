//! `?filters=` as the engine reads it: the Go client's map form
//! `{"name":{"web":true}}` and docker-py's list form `{"name":["web"]}`.

use std::collections::BTreeMap;

use super::ApiError;

#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the filters and refuses keys outside `allowed` with the
    /// engine's "Invalid filter" text.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let raw = raw.unwrap_or("").trim();
        if raw.is_empty() {
            return Ok(Filters::default());
        }
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::BadRequest(format!("invalid filter: {e}")))?;
        let object = value.as_object().ok_or_else(|| {
            ApiError::BadRequest("invalid filter: expected a JSON object".to_string())
        })?;
        let mut filters = BTreeMap::new();
        for (key, values) in object {
            if !allowed.contains(&key.as_str()) {
                return Err(ApiError::BadRequest(format!("Invalid filter '{key}'")));
            }
            filters.insert(key.clone(), filter_values(values)?);
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

fn filter_values(values: &serde_json::Value) -> Result<Vec<String>, ApiError> {
    match values {
        serde_json::Value::Object(map) => Ok(map
            .iter()
            .filter(|(_, on)| on.as_bool().unwrap_or(false))
            .map(|(k, _)| k.clone())
            .collect()),
        serde_json::Value::Array(items) => Ok(items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()),
        _ => Err(ApiError::BadRequest(
            "invalid filter: values must be a map or a list".to_string(),
        )),
    }
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

    #[test]
    fn matches_labels() {
        let labels: std::collections::HashMap<_, _> = [("a".to_string(), "1".to_string())].into();
        assert!(label_matches(Some(&labels), "a"));
        assert!(label_matches(Some(&labels), "a=1"));
        assert!(!label_matches(Some(&labels), "a=2"));
        assert!(!label_matches(None, "a"));
    }
}
