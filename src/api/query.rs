//! Reading what a request carries: query parameters, JSON bodies and the
//! `version` of an update, with the engine's texts when they are wrong.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::ApiError;

/// Bodies of swarm calls are specs and small files (secrets < 500 KB).
/// Each becomes one raft entry: the engine's swarmkit refuses messages
/// over 4 MiB (gRPC's limit), so shoal refuses bodies over it up front
/// rather than replicate and store an entry that size.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Query parameters, percent-decoded; the last value of a repeated key wins.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A boolean as the engine's `httputils.BoolValue`: absent, empty, "0",
    /// "no", "false", "none" are false; anything else is true.
    pub fn flag(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(v) => !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "" | "0" | "no" | "false" | "none"
            ),
        }
    }

    /// A boolean parsed as Go's `strconv.ParseBool`, absent = false; any
    /// other text is the engine's "invalid value for <key>: <text>".
    pub fn strict_bool(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(false),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(other) => Err(ApiError::BadRequest(format!(
                "invalid value for {key}: {other}"
            ))),
        }
    }

    /// The `version` an update must echo: "invalid <kind> version '<v>': ..."
    /// as the engine words it when it is not a uint64.
    pub fn version(&self, kind: &str) -> Result<u64, ApiError> {
        let raw = self.get("version").unwrap_or("");
        raw.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid {kind} version '{raw}': strconv.ParseUint: parsing \"{raw}\": invalid syntax"
            ))
        })
    }
}

/// Reads a request body whole (bounded). Every request to shoal's own
/// endpoints is read before it is answered, as Go's server does: answering
/// early (e.g. "not a swarm manager") and closing would make the client's
/// write of its body fail with a broken pipe instead of showing the error.
pub async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    Ok(Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(
            |e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                Some(_) => ApiError::TooLarge { limit: MAX_BODY },
                None => ApiError::BadRequest(format!("error reading request body: {e}")),
            },
        )?
        .to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_query_flags_and_versions() {
        let q = Query::parse(Some(
            "force=1&version=12&rotateWorkerToken=x&filters=%7B%7D",
        ));
        assert!(q.flag("force"));
        assert!(!q.flag("missing"));
        assert_eq!(q.version("node").unwrap(), 12);
        assert_eq!(q.get("filters"), Some("{}"));
        assert_eq!(
            q.strict_bool("rotateWorkerToken").unwrap_err().to_string(),
            "invalid value for rotateWorkerToken: x"
        );
        let missing = Query::parse(None).version("node").unwrap_err().to_string();
        assert_eq!(
            missing,
            "invalid node version '': strconv.ParseUint: parsing \"\": invalid syntax"
        );
    }
}
