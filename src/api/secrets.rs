//! `/secrets` and `/configs`: the same API twice, with the engine's
//! differences (size limits, whether Data is shown, the `names` filter).

use std::time::SystemTime;

use base64::Engine as _;
use bollard::models::{Config, ConfigSpec, Secret, SecretSpec};
use bytes::Bytes;
use http::{Response, StatusCode};

use super::decode;
use super::filters::{label_matches, Filters};
use super::query::Query;
use super::{json, ApiError, RpcCode};
use crate::body::Body;
use crate::cluster::Manager;
use crate::manager::orchestrator::as_service;
use crate::store::Transaction;
use crate::types::{new_id, Kind, Object, Timestamp};

/// Which of the two APIs a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Secret,
    Config,
}

impl Flavor {
    fn kind(self) -> Kind {
        match self {
            Flavor::Secret => Kind::Secret,
            Flavor::Config => Kind::Config,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Flavor::Secret => "secret",
            Flavor::Config => "config",
        }
    }

    /// Data must be shorter than this (the engine's limits, exclusive).
    fn max_size(self) -> usize {
        match self {
            Flavor::Secret => 500 * 1024,
            Flavor::Config => 1000 * 1024,
        }
    }

    fn filters(self) -> &'static [&'static str] {
        match self {
            Flavor::Secret => &["id", "label", "name", "names"],
            Flavor::Config => &["id", "label", "name"],
        }
    }
}

/// The spec both share: name, labels, data (base64), driver, templating.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Spec {
    name: String,
    labels: std::collections::HashMap<String, String>,
    data: Option<String>,
    driver: Option<bollard::models::Driver>,
    templating: Option<bollard::models::Driver>,
}

impl Spec {
    pub(super) fn from_secret(spec: SecretSpec) -> Self {
        Spec {
            name: spec.name.unwrap_or_default(),
            labels: spec.labels.unwrap_or_default(),
            data: spec.data,
            driver: spec.driver,
            templating: spec.templating,
        }
    }

    pub(super) fn from_config(spec: ConfigSpec) -> Self {
        Spec {
            name: spec.name.unwrap_or_default(),
            labels: spec.labels.unwrap_or_default(),
            data: spec.data,
            driver: None,
            templating: spec.templating,
        }
    }

    fn into_object(self, flavor: Flavor, id: String) -> Object {
        match flavor {
            Flavor::Secret => Object::Secret(Box::new(Secret {
                id: Some(id),
                spec: Some(SecretSpec {
                    name: Some(self.name),
                    labels: Some(self.labels),
                    data: self.data,
                    driver: self.driver,
                    templating: self.templating,
                }),
                ..Secret::default()
            })),
            Flavor::Config => Object::Config(Box::new(Config {
                id: Some(id),
                spec: Some(ConfigSpec {
                    name: Some(self.name),
                    labels: Some(self.labels),
                    data: self.data,
                    templating: self.templating,
                }),
                ..Config::default()
            })),
        }
    }
}

fn spec_of(object: &Object) -> Option<Spec> {
    match object {
        Object::Secret(s) => s.spec.clone().map(Spec::from_secret),
        Object::Config(c) => c.spec.clone().map(Spec::from_config),
        _ => None,
    }
}

async fn read_spec(flavor: Flavor, body: Bytes) -> Result<Spec, ApiError> {
    Ok(match flavor {
        Flavor::Secret => Spec::from_secret(decode::body(&body)?),
        Flavor::Config => Spec::from_config(decode::body(&body)?),
    })
}

pub async fn create(
    manager: &Manager,
    flavor: Flavor,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let spec = read_spec(flavor, body).await?;
    validate(flavor, &spec)?;
    // A taken name (compared case-insensitively) is refused by the store
    // itself when the entry applies; error.rs words it as the engine does.
    let id = new_id(&mut rand::thread_rng());
    let tx = Transaction::new(now()).create(spec.into_object(flavor, id.clone()));
    manager.proposer().propose(tx).await??;
    Ok(json(StatusCode::CREATED, &serde_json::json!({ "ID": id })))
}

pub fn list(manager: &Manager, flavor: Flavor, query: &Query) -> Result<Response<Body>, ApiError> {
    let filters = Filters::parse(query.get("filters"), flavor.filters())?;
    let store = manager.store();
    let mut objects: Vec<serde_json::Value> = Vec::new();
    let mut all = store.list(flavor.kind());
    all.sort_by(|a, b| a.id().cmp(b.id()));
    for object in all {
        let Some(spec) = spec_of(&object) else {
            continue;
        };
        let id = object.id();
        let keep = filters.any("id", |f| id.starts_with(f))
            && filters.any("name", |f| spec.name.starts_with(f))
            && filters.any("names", |f| spec.name == f)
            && (!filters.contains("label")
                || filters
                    .values("label")
                    .iter()
                    .all(|f| label_matches(Some(&spec.labels), f)));
        if keep {
            objects.push(shown(flavor, &object));
        }
    }
    Ok(json(StatusCode::OK, &objects))
}

pub fn inspect(
    manager: &Manager,
    flavor: Flavor,
    reference: &str,
) -> Result<Response<Body>, ApiError> {
    let object = manager.store().find(flavor.kind(), reference)?;
    Ok(json(StatusCode::OK, &shown(flavor, &object)))
}

/// Only Labels may change; the same Data again is accepted (`stack deploy`
/// sends it on every deploy).
pub async fn update(
    manager: &Manager,
    flavor: Flavor,
    reference: &str,
    query: &Query,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let version = query
        .get("version")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| ApiError::BadRequest(format!("invalid {} version", flavor.word())))?;
    let requested = read_spec(flavor, body).await?;
    let store = manager.store();
    let object = store.find(flavor.kind(), reference)?;
    let current = spec_of(&object).unwrap_or_default();
    let data_changed = requested
        .data
        .as_ref()
        .is_some_and(|d| !d.is_empty() && Some(d) != current.data.as_ref());
    if requested.name != current.name || data_changed {
        return Err(ApiError::rpc(
            RpcCode::InvalidArgument,
            "only updates to Labels are allowed",
        ));
    }
    let updated_spec = Spec {
        labels: requested.labels,
        ..current
    };
    let mut updated = updated_spec.into_object(flavor, object.id().to_string());
    keep_meta(&mut updated, &object);
    let tx = Transaction::new(now()).update(updated, version);
    manager.proposer().propose(tx).await??;
    Ok(super::empty_ok())
}

/// Refused while any service spec refers to it, naming those services.
pub async fn remove(
    manager: &Manager,
    flavor: Flavor,
    reference: &str,
) -> Result<Response<Body>, ApiError> {
    let store = manager.store();
    let object = store.find(flavor.kind(), reference)?;
    let id = object.id().to_string();
    let name = spec_of(&object).map(|s| s.name).unwrap_or_default();
    let mut users: Vec<String> = store
        .list(Kind::Service)
        .iter()
        .filter_map(as_service)
        .filter(|s| service_uses(s, flavor, &id))
        .filter_map(|s| s.spec.as_ref().and_then(|spec| spec.name.clone()))
        .collect();
    users.sort();
    if !users.is_empty() {
        let plural = if users.len() == 1 {
            "service"
        } else {
            "services"
        };
        return Err(ApiError::rpc(
            RpcCode::InvalidArgument,
            format!(
                "{} '{name}' is in use by the following {plural}: {}",
                flavor.word(),
                users.join(", ")
            ),
        ));
    }
    let tx = Transaction::new(now()).delete(flavor.kind(), id, None);
    manager.proposer().propose(tx).await??;
    let mut response = super::empty_ok();
    *response.status_mut() = StatusCode::NO_CONTENT;
    response.headers_mut().remove(http::header::CONTENT_LENGTH);
    Ok(response)
}

fn service_uses(service: &crate::types::SwarmService, flavor: Flavor, id: &str) -> bool {
    let container = service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.container_spec.as_ref());
    let Some(container) = container else {
        return false;
    };
    match flavor {
        Flavor::Secret => container
            .secrets
            .iter()
            .flatten()
            .any(|s| s.secret_id.as_deref() == Some(id)),
        Flavor::Config => container
            .configs
            .iter()
            .flatten()
            .any(|c| c.config_id.as_deref() == Some(id)),
    }
}

/// The object as the engine shows it: a secret never with its Data.
fn shown(flavor: Flavor, object: &Object) -> serde_json::Value {
    let mut value = match object {
        Object::Secret(s) => serde_json::to_value(s),
        Object::Config(c) => serde_json::to_value(c),
        _ => Ok(serde_json::Value::Null),
    }
    .unwrap_or(serde_json::Value::Null);
    if flavor == Flavor::Secret {
        if let Some(spec) = value.get_mut("Spec").and_then(|s| s.as_object_mut()) {
            spec.remove("Data");
        }
    }
    value
}

fn keep_meta(updated: &mut Object, current: &Object) {
    match (updated, current) {
        (Object::Secret(u), Object::Secret(c)) => {
            u.version = c.version.clone();
            u.created_at = c.created_at.clone();
        }
        (Object::Config(u), Object::Config(c)) => {
            u.version = c.version.clone();
            u.created_at = c.created_at.clone();
        }
        _ => {}
    }
}

/// The engine's rules: name, size, base64, no driver (shoal stores the data itself).
pub(super) fn validate(flavor: Flavor, spec: &Spec) -> Result<(), ApiError> {
    if !valid_name(&spec.name) {
        return Err(ApiError::rpc(
            RpcCode::InvalidArgument,
            "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]",
        ));
    }
    if spec.driver.as_ref().is_some_and(|d| !d.name.is_empty()) {
        return Err(ApiError::NotSupported(
            "secret drivers (shoal keeps secret data itself, encrypted)",
        ));
    }
    // Templating ("golang") is stored as given and rendered per task by the
    // agent at delivery, as swarm does.
    let data = decode(spec.data.as_deref().unwrap_or(""))?;
    if data.is_empty() || data.len() >= flavor.max_size() {
        return Err(ApiError::rpc(
            RpcCode::InvalidArgument,
            format!(
                "{} data must be larger than 0 and less than {} bytes",
                flavor.word(),
                flavor.max_size()
            ),
        ));
    }
    Ok(())
}

/// Go's encoding/json reads `[]byte` as standard base64 and says where it stopped.
pub fn decode(data: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| {
            let offset = match e {
                base64::DecodeError::InvalidByte(offset, _) => offset,
                base64::DecodeError::InvalidLength(len) => len,
                base64::DecodeError::InvalidLastSymbol(offset, _) => offset,
                base64::DecodeError::InvalidPadding => data.len(),
            };
            ApiError::BadRequest(format!("illegal base64 data at input byte {offset}"))
        })
}

/// `^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$`, at most 64 characters.
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn now() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_engines_rule() {
        assert!(valid_name("db_password.v2"));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"a".repeat(65)));
    }

    #[test]
    fn base64_errors_say_where() {
        assert_eq!(decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(
            decode("a$==").unwrap_err().to_string(),
            "illegal base64 data at input byte 1"
        );
    }
}
