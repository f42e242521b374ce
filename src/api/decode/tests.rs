//! The decoder over every request body shoal owns, driven by the Engine
//! API spec: a sample with every field the spec gives a body is decoded
//! with the API's spelling, all lower case and mixed case, and must give
//! the same value.

use bollard::models::{ConfigSpec, NodeSpec, SecretSpec, ServiceSpec, SwarmInitRequest, SwarmSpec};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::*;
use crate::network::allocate::CreateRequest;

const SPEC: &str = include_str!("../../../compat-tests/engine-api-v1.41.json");

#[derive(Clone, Copy)]
enum Style {
    Exact,
    Lower,
    Mixed,
}

impl Style {
    fn key(self, key: &str) -> String {
        match self {
            Style::Exact => key.to_string(),
            Style::Lower => key.to_lowercase(),
            // "nAmE": upper and lower case in turn, never the API's spelling
            // unless the key has no letters.
            Style::Mixed => key
                .chars()
                .enumerate()
                .map(|(i, c)| match i % 2 {
                    0 => c.to_ascii_lowercase(),
                    _ => c.to_ascii_uppercase(),
                })
                .collect(),
        }
    }
}

fn spec() -> Value {
    serde_json::from_str(SPEC).expect("the spec is JSON")
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.trim_start_matches("#/definitions/");
            resolve(spec, &spec["definitions"][name])
        }
        None => match schema.get("allOf").and_then(Value::as_array) {
            Some(all) => resolve(spec, &all[0]),
            None => schema,
        },
    }
}

/// A body with every property of `schema` set, struct keys in `style`;
/// map keys (additionalProperties) are data and keep their case.
fn sample(spec: &Value, schema: &Value, style: Style, depth: usize) -> Value {
    let schema = resolve(spec, schema);
    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        return choices.last().cloned().unwrap_or(Value::Null);
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        if depth > 8 {
            return json!({});
        }
        let object: Map<String, Value> = properties
            .iter()
            .map(|(k, s)| (style.key(k), sample(spec, s, style, depth + 1)))
            .collect();
        return Value::Object(object);
    }
    if let Some(values) = schema.get("additionalProperties") {
        if values.is_object() {
            return json!({ "Key-One": sample(spec, values, style, depth + 1) });
        }
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => json!([sample(spec, &schema["items"], style, depth + 1)]),
        Some("integer") => json!(1),
        Some("number") => json!(0.5),
        Some("boolean") => json!(true),
        Some("string") => json!("Text"),
        _ => json!({}),
    }
}

fn leaves(value: &Value) -> usize {
    match value {
        Value::Object(o) => o.values().map(leaves).sum(),
        Value::Array(a) => a.iter().map(leaves).sum(),
        _ => 1,
    }
}

/// Decodes the body of `schema` in every style into `T`; all must agree
/// and keep at least `min_leaves` values.
fn check_every_style<T: DeserializeOwned + Serialize>(schema: &Value, min_leaves: usize) {
    let spec = spec();
    let decoded: Vec<Value> = [Style::Exact, Style::Lower, Style::Mixed]
        .into_iter()
        .map(|style| {
            let body = sample(&spec, schema, style, 0);
            let typed: T = from_value(&body).unwrap_or_else(|e| panic!("{e}\n{body:#}"));
            serde_json::to_value(&typed).expect("encodes")
        })
        .collect();
    assert_eq!(decoded[0], decoded[1], "lower case differs");
    assert_eq!(decoded[0], decoded[2], "mixed case differs");
    assert!(
        leaves(&decoded[0]) >= min_leaves,
        "only {} values kept: {:#}",
        leaves(&decoded[0]),
        decoded[0]
    );
}

fn definition(name: &str) -> Value {
    json!({ "$ref": format!("#/definitions/{name}") })
}

fn body_schema(path: &str) -> Value {
    let spec = spec();
    let parameters = spec["paths"][path]["post"]["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    parameters
        .into_iter()
        .find(|p| p["in"] == "body")
        .map(|p| p["schema"].clone())
        .unwrap_or_else(|| panic!("{path} has a body"))
}

#[test]
fn service_spec_in_any_case() {
    check_every_style::<ServiceSpec>(&body_schema("/services/create"), 100);
}

#[test]
fn swarm_specs_in_any_case() {
    check_every_style::<SwarmSpec>(&definition("SwarmSpec"), 15);
    check_every_style::<SwarmInitRequest>(&body_schema("/swarm/init"), 20);
}

#[test]
fn node_secret_config_and_network_specs_in_any_case() {
    check_every_style::<NodeSpec>(&definition("NodeSpec"), 4);
    check_every_style::<SecretSpec>(&body_schema("/secrets/create"), 5);
    check_every_style::<ConfigSpec>(&body_schema("/configs/create"), 4);
    check_every_style::<CreateRequest>(&body_schema("/networks/create"), 6);
}

/// What docker-py sends, and what the engine makes of it.
#[test]
fn reads_docker_py_spellings() {
    let spec: ServiceSpec = body(
        br#"{"Name": "web", "Mode": {"replicated": {"Replicas": 5}},
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox",
                "Healthcheck": {"test": ["CMD", "true"], "Interval": 1000000000},
                "Labels": {"lower.key": "v"}}},
            "RollbackConfig": {"order": "start-first"}}"#,
    )
    .expect("decodes");
    let value = serde_json::to_value(&spec).expect("encodes");
    assert_eq!(value["Mode"], json!({"Replicated": {"Replicas": 5}}));
    let container = &value["TaskTemplate"]["ContainerSpec"];
    assert_eq!(
        container["HealthCheck"],
        json!({"Test": ["CMD", "true"], "Interval": 1000000000})
    );
    assert_eq!(container["Labels"], json!({"lower.key": "v"}));
    assert_eq!(value["RollbackConfig"], json!({"Order": "start-first"}));

    let global: ServiceSpec = body(br#"{"mode": {"global": {}}}"#).expect("decodes");
    assert!(global.mode.and_then(|m| m.global).is_some());

    let config: ConfigSpec =
        body(br#"{"Name": "c", "Data": "", "Templating": {"name": "golang"}}"#).expect("decodes");
    assert_eq!(config.templating.map(|t| t.name).as_deref(), Some("golang"));

    // Go reads a missing field as its zero value; bollard requires Name.
    let bare: ConfigSpec = body(br#"{"Templating": {}}"#).expect("decodes");
    assert_eq!(bare.templating.map(|t| t.name).as_deref(), Some(""));
}

/// Go decodes keys in document order into the field they match, so the
/// last of two spellings wins (measured on the engine with secret create).
#[test]
fn last_spelling_of_a_field_wins_and_unknown_keys_are_ignored() {
    let first: SecretSpec = body(br#"{"name": "a", "Name": "b", "Bogus": 1}"#).expect("decodes");
    assert_eq!(first.name.as_deref(), Some("b"));
    let second: SecretSpec = body(br#"{"Name": "a", "name": "b"}"#).expect("decodes");
    assert_eq!(second.name.as_deref(), Some("b"));
}

#[test]
fn null_leaves_the_zero_value() {
    let spec: ServiceSpec = body(
        br#"{"Name": null, "Labels": null, "TaskTemplate": {"ContainerSpec":
            {"Image": "busybox", "Env": null, "Privileges": {"CredentialSpec": null}}}}"#,
    )
    .expect("decodes");
    assert_eq!(spec.name, None);
    let container = spec.task_template.and_then(|t| t.container_spec);
    assert_eq!(container.and_then(|c| c.image).as_deref(), Some("busybox"));
}

/// The texts the engine answered for the same bodies (engine 20.10).
#[test]
fn words_type_errors_as_the_engine_does() {
    let cases: [(&[u8], &str); 5] = [
        (
            br#"{"Mode":{"Replicated":{"Replicas":"x"}}}"#,
            "json: cannot unmarshal string into Go struct field ReplicatedService.Mode.Replicated.Replicas of type uint64",
        ),
        (
            br#"{"mode":"x"}"#,
            "json: cannot unmarshal string into Go struct field ServiceSpec.Mode of type swarm.ServiceMode",
        ),
        (b"[]", "json: cannot unmarshal array into Go value of type swarm.ServiceSpec"),
        (
            br#"{"Labels":[]}"#,
            "json: cannot unmarshal array into Go struct field ServiceSpec.Labels of type map[string]interface {}",
        ),
        (
            br#"{"UpdateConfig":{"Parallelism":1.5}}"#,
            "json: cannot unmarshal number 1.5 into Go struct field UpdateConfig.UpdateConfig.Parallelism of type uint64",
        ),
    ];
    for (input, want) in cases {
        let got = body::<ServiceSpec>(input)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        // Go names the target type of maps and slices exactly; shoal knows
        // only that it is one (clients match the prefix).
        let stem = want.split(" of type ").next().unwrap_or(want);
        assert!(got.starts_with(stem), "{got}\nwant {want}");
    }
}

#[test]
fn words_syntax_errors_and_empty_bodies_as_the_engine_does() {
    assert_eq!(
        body::<ServiceSpec>(b"{bad json").unwrap_err().to_string(),
        "invalid character 'b' looking for beginning of object key string"
    );
    assert_eq!(body::<ServiceSpec>(b"  ").unwrap_err(), DecodeError::Empty);
    // Like Go's Decoder, what follows the first value is not read.
    let spec: SecretSpec = body(br#"{"Name":"s"} trailing"#).expect("decodes");
    assert_eq!(spec.name.as_deref(), Some("s"));
}
