//! Owned answers shaped as the engine's Go types write them for the
//! client's API version.
//!
//! shoal keeps bollard's models, which follow a newer API than the engine a
//! client may expect. Two differences reach clients:
//! - fields added to the API after 1.41 (`Privileges.NoNewPrivileges`,
//!   `HealthCheck.StartInterval`…) must not appear for a 1.41 client: the
//!   list per endpoint is derived from the two Engine API specs by
//!   `compat-tests/api-additions.py` into `shape/additions-1.41.json`;
//! - Go writes the struct fields that lack `omitempty` even when empty, so
//!   the engine answers `Privileges: {"CredentialSpec": null,
//!   "SELinuxContext": null}` where bollard's model writes nothing.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The newest API version the additions are listed against.
const LISTED_VERSION: &str = "1.41";

/// What a newer API added below one point of a response.
#[derive(Debug, Default, Deserialize)]
struct Added {
    #[serde(default)]
    drop: Vec<String>,
    #[serde(default)]
    fields: HashMap<String, Added>,
    items: Option<Box<Added>>,
    values: Option<Box<Added>>,
}

/// The additions per endpoint ("GET /services/{id}"), read once per `Api`.
#[derive(Debug, Default)]
pub struct Shapes {
    added: HashMap<String, Added>,
}

impl Shapes {
    pub fn new() -> Self {
        let added = serde_json::from_str(include_str!("shape/additions-1.41.json")).unwrap_or_else(
            |error| {
                // Checked by a unit test; never fatal to the daemon.
                tracing::error!(%error, "shape/additions-1.41.json is not valid");
                HashMap::new()
            },
        );
        Shapes { added }
    }

    /// Shapes the JSON answer to `method path` for a client of `version`.
    pub fn reshape(&self, method: &str, path: &str, version: &str, value: &mut Value) {
        if super::version_le(version, LISTED_VERSION) {
            let route = self
                .added
                .iter()
                .find(|(route, _)| matches_route(route, method, path));
            if let Some((_, added)) = route {
                drop_added(added, value);
            }
        }
        as_go_writes(value);
    }
}

/// "GET /services/{id}" against a method and a path without its version.
fn matches_route(route: &str, method: &str, path: &str) -> bool {
    let Some((route_method, template)) = route.split_once(' ') else {
        return false;
    };
    let template: Vec<&str> = template.trim_matches('/').split('/').collect();
    let path: Vec<&str> = path.trim_matches('/').split('/').collect();
    route_method == method
        && template.len() == path.len()
        && template
            .iter()
            .zip(&path)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
}

fn drop_added(added: &Added, value: &mut Value) {
    match value {
        Value::Array(items) => {
            if let Some(item) = &added.items {
                items.iter_mut().for_each(|v| drop_added(item, v));
            }
        }
        Value::Object(object) => {
            for name in &added.drop {
                object.shift_remove(name);
            }
            for (name, below) in &added.fields {
                if let Some(v) = object.get_mut(name) {
                    drop_added(below, v);
                }
            }
            if let Some(each) = &added.values {
                object.values_mut().for_each(|v| drop_added(each, v));
            }
        }
        _ => {}
    }
}

/// A Go zero value as encoding/json writes it.
#[derive(Clone, Copy)]
enum Zero {
    Null,
    False,
    Text,
}

impl Zero {
    fn value(self) -> Value {
        match self {
            Zero::Null => Value::Null,
            Zero::False => Value::Bool(false),
            Zero::Text => Value::String(String::new()),
        }
    }
}

/// Fields of the engine's Go structs without `omitempty`, found under these
/// two keys: Go writes them even when unset (recorded on engine 20.10:
/// `{"SELinuxContext": {"Disable": true}}` reads back with User, Role, Type
/// and Level "", a CredentialSpec with Config, File and Registry).
type Rule = (&'static str, &'static str, &'static [(&'static str, Zero)]);
const ALWAYS_WRITTEN: &[Rule] = &[
    (
        "ContainerSpec",
        "Privileges",
        &[
            ("CredentialSpec", Zero::Null),
            ("SELinuxContext", Zero::Null),
        ],
    ),
    (
        "Privileges",
        "SELinuxContext",
        &[
            ("Disable", Zero::False),
            ("User", Zero::Text),
            ("Role", Zero::Text),
            ("Type", Zero::Text),
            ("Level", Zero::Text),
        ],
    ),
    (
        "Privileges",
        "CredentialSpec",
        &[
            ("Config", Zero::Text),
            ("File", Zero::Text),
            ("Registry", Zero::Text),
        ],
    ),
];

/// Fields whose Go name (the JSON key the engine writes, having no json
/// tag) differs from the API spec's, by the struct holding them: moby's
/// ContainerSpec has `Healthcheck`, the spec and bollard say `HealthCheck`
/// (recorded on engine 20.10; docker-py sends `Healthcheck` too).
const GO_NAMES: &[(&str, &str, &str)] = &[("ContainerSpec", "HealthCheck", "Healthcheck")];

/// The answer as Go's encoding/json writes the engine's structs.
fn as_go_writes(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(as_go_writes),
        Value::Object(object) => {
            for (parent, field, always) in ALWAYS_WRITTEN {
                let inner = object
                    .get_mut(*parent)
                    .and_then(|p| p.get_mut(*field))
                    .and_then(Value::as_object_mut);
                if let Some(inner) = inner {
                    write_zeros(inner, always);
                }
            }
            for (parent, api, go) in GO_NAMES {
                let inner = object.get_mut(*parent).and_then(Value::as_object_mut);
                if let Some(inner) = inner {
                    rename(inner, api, go);
                }
            }
            object.values_mut().for_each(as_go_writes);
        }
        _ => {}
    }
}

/// Renames a key, keeping its position.
fn rename(object: &mut Map<String, Value>, from: &str, to: &str) {
    if !object.contains_key(from) {
        return;
    }
    *object = std::mem::take(object)
        .into_iter()
        .map(|(k, v)| match k == from {
            true => (to.to_string(), v),
            false => (k, v),
        })
        .collect();
}

fn write_zeros(object: &mut Map<String, Value>, fields: &[(&str, Zero)]) {
    for (field, zero) in fields {
        object.entry(*field).or_insert_with(|| zero.value());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_additions_file_is_valid_and_lists_privileges() {
        let shapes = Shapes::new();
        let service = &shapes.added["GET /services/{id}"];
        let privileges = &service.fields["Spec"].fields["TaskTemplate"].fields["ContainerSpec"]
            .fields["Privileges"];
        assert!(privileges.drop.contains(&"NoNewPrivileges".to_string()));
    }

    fn service() -> Value {
        json!({"ID": "x", "PreviousSpec": {"Name": "kept"}, "Spec": {"Name": "web",
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox",
                "Privileges": {"NoNewPrivileges": false},
                "HealthCheck": {"Test": ["CMD", "true"], "StartInterval": 5}}}}})
    }

    #[test]
    fn a_141_client_sees_no_later_field_and_gos_empty_fields() {
        let shapes = Shapes::new();
        let mut list = json!([service()]);
        shapes.reshape("GET", "/services", "1.41", &mut list);
        let container = &list[0]["Spec"]["TaskTemplate"]["ContainerSpec"];
        assert_eq!(
            container["Privileges"],
            json!({"CredentialSpec": null, "SELinuxContext": null})
        );
        assert_eq!(container["Healthcheck"], json!({"Test": ["CMD", "true"]}));
        assert!(container.get("HealthCheck").is_none());
        assert_eq!(list[0]["PreviousSpec"], json!({"Name": "kept"}));

        let mut one = service();
        shapes.reshape("GET", "/services/web", "1.24", &mut one);
        assert_eq!(
            one["Spec"]["TaskTemplate"]["ContainerSpec"],
            container.clone()
        );
    }

    #[test]
    fn a_newer_client_keeps_the_later_fields() {
        let mut one = service();
        Shapes::new().reshape("GET", "/services/web", "1.47", &mut one);
        let privileges = &one["Spec"]["TaskTemplate"]["ContainerSpec"]["Privileges"];
        assert_eq!(privileges["NoNewPrivileges"], json!(false));
    }
}
