//! End-to-end: swarm mode on one node through the unmodified docker CLI (and
//! raw HTTP for status codes and error texts): `swarm init/join-token/update/
//! leave`, `info`, `node ls/inspect/update/demote/rm`, swarm events, and state
//! that survives `kill -9`.
//!
//! Every test runs its own shoal, makes its own swarm with `swarm init`, and
//! ends with `swarm leave --force` (a [`SwarmNode`] guard also cleans up when a
//! test fails).

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

/// The engine's text for every swarm call on a node that is not a manager.
const NOT_A_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";
const ALREADY_IN_A_SWARM: &str = "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The engine's hostname, as `docker node ls` should show it.
fn engine_hostname() -> String {
    let resp = http_unix(&engine_sock(), "GET", "/info", None).unwrap();
    resp.json()["Name"].as_str().unwrap().to_string()
}

/// Whether `text` has a line that reads `want` once runs of blanks (spaces,
/// tabs) are collapsed to one space and the line is trimmed.
fn has_line(text: &str, want: &str) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == want)
}

#[track_caller]
fn assert_line(text: &str, want: &str) {
    assert!(has_line(text, want), "no line {want:?} in:\n{text}");
}

/// `GET /swarm` as JSON.
fn swarm_json(shoal: &Shoal) -> Value {
    let resp = shoal.http("GET", "/v1.41/swarm");
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()
}

/// `docker node inspect <id>` as JSON.
fn node_json(shoal: &Shoal, id: &str) -> Value {
    let out = shoal.docker_ok(&["node", "inspect", id]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

// ---------------------------------------------------------------------------
// init, info, join tokens
// ---------------------------------------------------------------------------

#[test]
fn init_makes_a_one_node_swarm_and_a_second_init_is_refused() {
    let shoal = Shoal::start();
    // Before init: the engine's 503 text.
    assert_fails_with(&shoal, &["node", "ls"], NOT_A_MANAGER);

    let node = shoal.swarm_init();
    let out = &node.init_output;
    assert!(
        out.starts_with(&format!(
            "Swarm initialized: current node ({}) is now a manager.\n",
            node.id
        )),
        "{out}"
    );
    assert!(
        out.contains("To add a worker to this swarm, run the following command:"),
        "{out}"
    );
    let join = out
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("docker swarm join --token SWMTKN-1-")
        })
        .unwrap_or_else(|| panic!("no join command in:\n{out}"));
    let addr = shoal.cluster_addr();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert!(join.trim_end().ends_with(&format!(" {addr}")), "{join}");
    assert!(
        out.contains(
            "To add a manager to this swarm, run 'docker swarm join-token manager' and follow the instructions."
        ),
        "{out}"
    );

    assert_fails_with(
        &shoal,
        &["swarm", "init", "--advertise-addr", "127.0.0.1"],
        ALREADY_IN_A_SWARM,
    );
    // Refused, and nothing changed.
    assert_eq!(
        shoal
            .docker_ok(&["node", "ls", "-q"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        [node.id.as_str()]
    );

    node.leave(&shoal);
    assert_fails_with(&shoal, &["node", "ls"], NOT_A_MANAGER);
}

#[test]
fn info_shows_the_swarm_section_of_an_active_manager() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();

    let info = shoal.docker_ok(&["info"]);
    for line in [
        "Swarm: active".to_string(),
        format!("NodeID: {}", node.id),
        "Is Manager: true".into(),
        "Managers: 1".into(),
        "Nodes: 1".into(),
        "Task History Retention Limit: 5".into(),
        "Heartbeat Period: 5 seconds".into(),
        "Expiry Duration: 3 months".into(),
        "Autolock Managers: false".into(),
        "Node Address: 127.0.0.1".into(),
        shoal.cluster_addr(),
    ] {
        assert_line(&info, &line);
    }

    let swarm: Value =
        serde_json::from_str(&shoal.docker_ok(&["info", "--format", "{{json .Swarm}}"])).unwrap();
    assert_eq!(swarm["NodeID"], node.id.as_str());
    assert_eq!(swarm["NodeAddr"], "127.0.0.1");
    assert_eq!(swarm["LocalNodeState"], "active");
    assert_eq!(swarm["ControlAvailable"], true);
    assert_eq!(
        swarm["RemoteManagers"],
        json!([{ "NodeID": node.id, "Addr": shoal.cluster_addr() }])
    );
    // The cluster in /info is the one GET /swarm shows.
    let cluster = swarm_json(&shoal);
    assert_eq!(swarm["Cluster"]["ID"], cluster["ID"]);
    assert_eq!(swarm["Cluster"]["Version"], cluster["Version"]);
    assert_eq!(swarm["Cluster"]["Spec"], cluster["Spec"]);
    assert_eq!(swarm["Cluster"]["ID"].as_str().unwrap().len(), 25);

    node.leave(&shoal);
}

#[test]
fn join_tokens_show_and_rotate() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();

    let worker = shoal.docker_ok(&["swarm", "join-token", "worker"]);
    assert!(
        worker.starts_with("To add a worker to this swarm, run the following command:\n"),
        "{worker}"
    );
    let worker_q = shoal
        .docker_ok(&["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    assert!(worker_q.starts_with("SWMTKN-1-"), "{worker_q}");
    assert_line(
        &worker,
        &format!(
            "docker swarm join --token {worker_q} {}",
            shoal.cluster_addr()
        ),
    );
    // The token swarm init printed is the worker token.
    assert!(node.init_output.contains(&worker_q), "{}", node.init_output);

    let manager = shoal.docker_ok(&["swarm", "join-token", "manager"]);
    assert!(
        manager.starts_with("To add a manager to this swarm, run the following command:\n"),
        "{manager}"
    );
    let manager_q = shoal
        .docker_ok(&["swarm", "join-token", "-q", "manager"])
        .trim()
        .to_string();
    assert_line(
        &manager,
        &format!(
            "docker swarm join --token {manager_q} {}",
            shoal.cluster_addr()
        ),
    );
    assert_ne!(manager_q, worker_q);
    // SWMTKN-1-<CA digest>-<secret>: same CA, different secrets.
    let ca_part = |t: &str| t.rsplit_once('-').unwrap().0.to_string();
    assert_eq!(ca_part(&manager_q), ca_part(&worker_q));

    // Rotate the worker token: a new one, the manager token untouched.
    let out = shoal.docker_ok(&["swarm", "join-token", "--rotate", "worker"]);
    assert!(
        out.starts_with("Successfully rotated worker join token.\n"),
        "{out}"
    );
    let worker_q2 = shoal
        .docker_ok(&["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    assert_ne!(worker_q2, worker_q);
    assert_eq!(ca_part(&worker_q2), ca_part(&worker_q));
    assert!(out.contains(&worker_q2), "{out}");
    assert_eq!(
        shoal
            .docker_ok(&["swarm", "join-token", "-q", "manager"])
            .trim(),
        manager_q
    );

    // --rotate -q prints just the new token.
    let rotated = shoal.docker_ok(&["swarm", "join-token", "--rotate", "-q", "manager"]);
    let rotated = rotated.trim();
    assert!(rotated.starts_with("SWMTKN-1-"), "{rotated}");
    assert_ne!(rotated, manager_q);
    assert_eq!(
        shoal
            .docker_ok(&["swarm", "join-token", "-q", "manager"])
            .trim(),
        rotated
    );
    // GET /swarm carries the current tokens.
    let swarm = swarm_json(&shoal);
    assert_eq!(swarm["JoinTokens"]["Worker"], worker_q2.as_str());
    assert_eq!(swarm["JoinTokens"]["Manager"], rotated);

    node.leave(&shoal);
}

// ---------------------------------------------------------------------------
// swarm update
// ---------------------------------------------------------------------------

#[test]
fn swarm_update_changes_settings_and_refuses_a_short_cert_expiry() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    let before = swarm_json(&shoal)["Version"]["Index"].as_u64().unwrap();

    let out = shoal.docker_ok(&[
        "swarm",
        "update",
        "--task-history-limit",
        "7",
        "--dispatcher-heartbeat",
        "7s",
        "--cert-expiry",
        "48h",
    ]);
    assert_eq!(out, "Swarm updated.\n");
    let fmt = "{{.Swarm.Cluster.Spec.Orchestration.TaskHistoryRetentionLimit}} \
               {{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}} \
               {{.Swarm.Cluster.Spec.CAConfig.NodeCertExpiry}}";
    assert_eq!(
        shoal.docker_ok(&["info", "--format", fmt]).trim(),
        "7 7s 48h0m0s"
    );
    let info = shoal.docker_ok(&["info"]);
    assert_line(&info, "Task History Retention Limit: 7");
    assert_line(&info, "Heartbeat Period: 7 seconds");
    assert_line(&info, "Expiry Duration: 2 days");
    let after = swarm_json(&shoal)["Version"]["Index"].as_u64().unwrap();
    assert!(after > before, "version {before} -> {after}");

    // One flag changes one setting; the others stay.
    shoal.docker_ok(&["swarm", "update", "--task-history-limit", "3"]);
    assert_eq!(
        shoal.docker_ok(&["info", "--format", fmt]).trim(),
        "3 7s 48h0m0s"
    );

    // Under an hour: the engine's refusal, nothing changed.
    let index = swarm_json(&shoal)["Version"]["Index"].clone();
    assert_fails_with(
        &shoal,
        &["swarm", "update", "--cert-expiry", "30m"],
        "rpc error: code = InvalidArgument desc = minimum certificate expiry time is: 1h0m0s",
    );
    assert_eq!(swarm_json(&shoal)["Version"]["Index"], index);
    assert_eq!(
        shoal.docker_ok(&["info", "--format", fmt]).trim(),
        "3 7s 48h0m0s"
    );

    node.leave(&shoal);
}

// ---------------------------------------------------------------------------
// nodes
// ---------------------------------------------------------------------------

#[test]
fn node_ls_and_inspect_self_pretty() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    let hostname = engine_hostname();
    let engine_version = http_unix(&engine_sock(), "GET", "/version", None)
        .unwrap()
        .json()["Version"]
        .as_str()
        .unwrap()
        .to_string();

    let ls = shoal.docker_ok(&["node", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 2, "{ls}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>().join(" "),
        "ID HOSTNAME STATUS AVAILABILITY MANAGER STATUS ENGINE VERSION"
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [
            node.id.as_str(),
            "*",
            &hostname,
            "Ready",
            "Active",
            "Leader",
            &engine_version
        ],
        "{ls}"
    );
    assert_eq!(shoal.docker_ok(&["node", "ls", "-q"]).trim(), node.id);
    assert_eq!(
        shoal
            .docker_ok(&["node", "ls", "-q", "--filter", "role=manager"])
            .trim(),
        node.id
    );
    assert_eq!(
        shoal.docker_ok(&["node", "ls", "-q", "--filter", "role=worker"]),
        ""
    );
    assert_eq!(
        shoal
            .docker_ok(&["node", "ls", "-q", "--filter", &format!("name={hostname}")])
            .trim(),
        node.id
    );
    assert_fails_with(
        &shoal,
        &["node", "ls", "--filter", "foo=bar"],
        "Invalid filter 'foo'",
    );

    let pretty = shoal.docker_ok(&["node", "inspect", "self", "--pretty"]);
    for line in [
        format!("ID: {}", node.id),
        format!("Hostname: {hostname}"),
        "State: Ready".into(),
        "Availability: Active".into(),
        "Address: 127.0.0.1".into(),
        "Manager Status:".into(),
        format!("Address: {}", shoal.cluster_addr()),
        "Raft Status: Reachable".into(),
        "Leader: Yes".into(),
        "Operating System: linux".into(),
        format!("Engine Version: {engine_version}"),
    ] {
        assert_line(&pretty, &line);
    }
    assert!(pretty.contains("-----BEGIN CERTIFICATE-----"), "{pretty}");

    // JSON inspect by ID, by hostname and as self: the same node.
    let by_id = node_json(&shoal, &node.id);
    assert_eq!(by_id["ID"], node.id.as_str());
    assert_eq!(by_id["Spec"]["Role"], "manager");
    assert_eq!(by_id["Spec"]["Availability"], "active");
    assert_eq!(by_id["Status"]["State"], "ready");
    assert_eq!(by_id["ManagerStatus"]["Leader"], true);
    assert_eq!(by_id["Description"]["Hostname"], hostname.as_str());
    assert_eq!(node_json(&shoal, &hostname), by_id);
    assert_eq!(node_json(&shoal, "self"), by_id);

    node.leave(&shoal);
}

#[test]
fn node_update_labels_and_availability() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    let id = node.id.as_str();
    let version = |shoal: &Shoal| node_json(shoal, id)["Version"]["Index"].as_u64().unwrap();
    let v0 = version(&shoal);

    let out = shoal.docker_ok(&[
        "node",
        "update",
        "--label-add",
        "a=1",
        "--label-add",
        "b=2",
        id,
    ]);
    assert_eq!(out.trim(), id);
    assert_eq!(
        node_json(&shoal, id)["Spec"]["Labels"],
        json!({"a": "1", "b": "2"})
    );
    let v1 = version(&shoal);
    assert!(v1 > v0, "version {v0} -> {v1}");

    shoal.docker_ok(&["node", "update", "--label-rm", "a", id]);
    assert_eq!(node_json(&shoal, id)["Spec"]["Labels"], json!({"b": "2"}));
    let v2 = version(&shoal);
    assert!(v2 > v1, "version {v1} -> {v2}");
    let pretty = shoal.docker_ok(&["node", "inspect", "--pretty", id]);
    assert_line(&pretty, "- b=2");

    for (avail, shown) in [("pause", "Pause"), ("drain", "Drain"), ("active", "Active")] {
        shoal.docker_ok(&["node", "update", "--availability", avail, id]);
        assert_eq!(
            shoal
                .docker_ok(&["node", "ls", "--format", "{{.Availability}}"])
                .trim(),
            shown
        );
        assert_eq!(node_json(&shoal, id)["Spec"]["Availability"], avail);
    }
    // Labels survive other updates.
    assert_eq!(node_json(&shoal, id)["Spec"]["Labels"], json!({"b": "2"}));

    // Filters on the new label.
    assert_eq!(
        shoal
            .docker_ok(&["node", "ls", "-q", "--filter", "node.label=b=2"])
            .trim(),
        id
    );
    assert_eq!(
        shoal.docker_ok(&["node", "ls", "-q", "--filter", "node.label=a=1"]),
        ""
    );

    node.leave(&shoal);
}

#[test]
fn the_only_manager_cannot_be_demoted_or_removed() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    let id = node.id.as_str();
    let before = node_json(&shoal, id);

    assert_fails_with(
        &shoal,
        &["node", "demote", id],
        "rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm",
    );
    let manager_msg = format!(
        "rpc error: code = FailedPrecondition desc = node {id} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
    );
    assert_fails_with(&shoal, &["node", "rm", id], &manager_msg);
    assert_fails_with(&shoal, &["node", "rm", "--force", id], &manager_msg);

    // Still there, still a manager, not even touched.
    assert_eq!(node_json(&shoal, id), before);
    assert_eq!(
        shoal
            .docker_ok(&["node", "ls", "--format", "{{.ManagerStatus}}"])
            .trim(),
        "Leader"
    );

    node.leave(&shoal);
}

// ---------------------------------------------------------------------------
// leave
// ---------------------------------------------------------------------------

#[test]
fn swarm_leave_needs_force_then_every_swarm_call_is_refused() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();

    assert_fails_with(
        &shoal,
        &["swarm", "leave"],
        "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message.",
    );
    // Still a manager.
    assert_eq!(shoal.docker_ok(&["node", "ls", "-q"]).trim(), node.id);

    node.leave(&shoal);
    for args in [
        &["node", "ls"][..],
        &["swarm", "join-token", "worker"],
        &["swarm", "update", "--task-history-limit", "2"],
        &["service", "ls"],
    ] {
        assert_fails_with(&shoal, args, NOT_A_MANAGER);
    }
    for path in [
        "/v1.41/swarm",
        "/v1.41/nodes",
        "/v1.41/services",
        "/v1.41/tasks",
    ] {
        assert_error(&shoal.http("GET", path), 503, NOT_A_MANAGER);
    }
    assert_fails_with(
        &shoal,
        &["swarm", "leave"],
        "This node is not part of a swarm",
    );

    // A new swarm can be made, with a new node.
    let again = shoal.swarm_init();
    assert_ne!(again.id, node.id);
    assert_eq!(shoal.docker_ok(&["node", "ls", "-q"]).trim(), again.id);
    again.leave(&shoal);
}

// ---------------------------------------------------------------------------
// Bad input over raw HTTP
// ---------------------------------------------------------------------------

/// Without --advertise-addr shoal advertises the address the engine would
/// pick: the host's one network device's; bridges (docker0, the engine's
/// and shoal's own `br-…`, other tests' bridges) and veths never count.
#[test]
fn swarm_init_without_an_address_advertises_the_devices_address() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init_with(&[]);
    let addr = shoal
        .docker_ok(&["info", "--format", "{{.Swarm.NodeAddr}}"])
        .trim()
        .to_string();
    let ip: std::net::IpAddr = addr.parse().unwrap_or_else(|_| panic!("NodeAddr {addr:?}"));
    assert!(!ip.is_loopback(), "{addr}");
    let bridges = Command::new("ip")
        .args(["-json", "addr", "show", "type", "bridge"])
        .output()
        .expect("ip");
    let bridges: serde_json::Value = serde_json::from_slice(&bridges.stdout).unwrap_or_default();
    let on_bridge = bridges
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .any(|a| a["local"] == addr.as_str());
    assert!(!on_bridge, "{addr} is a bridge's address");
    node.leave(&shoal);
}

#[test]
fn bad_requests_get_the_engines_codes_and_texts() {
    let shoal = Shoal::start();

    // Before init.
    for (method, path) in [
        ("GET", "/v1.41/swarm"),
        ("GET", "/v1.41/nodes"),
        ("GET", "/v1.41/nodes/x"),
        ("GET", "/v1.41/services"),
        ("GET", "/v1.41/tasks"),
        ("GET", "/swarm/unlockkey"),
    ] {
        assert_error(&shoal.http(method, path), 503, NOT_A_MANAGER);
    }
    assert_error(
        &shoal.http("GET", "/v1.99/swarm"),
        400,
        "client version 1.99 is too new. Maximum supported API version is 1.41",
    );

    let node = shoal.swarm_init();
    let swarm = swarm_json(&shoal);
    let index = swarm["Version"]["Index"].as_u64().unwrap();
    let spec = swarm["Spec"].clone();

    // Stale version.
    assert_error(
        &shoal.http_json(
            "POST",
            &format!("/v1.41/swarm/update?version={}", index - 1),
            &spec,
        ),
        500,
        "rpc error: code = Unknown desc = update out of sequence",
    );
    // Missing or unparsable version.
    assert_error(
        &shoal.http_json("POST", "/v1.41/swarm/update", &spec),
        400,
        "invalid swarm version '': strconv.ParseUint: parsing \"\": invalid syntax",
    );
    assert_error(
        &shoal.http_json("POST", "/v1.41/swarm/update?version=abc", &spec),
        400,
        "invalid swarm version 'abc': strconv.ParseUint: parsing \"abc\": invalid syntax",
    );
    // Malformed, truncated and mistyped JSON.
    let raw = |body: &[u8]| {
        http_unix(
            &shoal.sock,
            "POST",
            &format!("/v1.41/swarm/update?version={index}"),
            Some(body),
        )
        .unwrap()
    };
    assert_error(
        &raw(b"{bad"),
        400,
        "invalid character 'b' looking for beginning of object key string",
    );
    assert_error(&raw(br#"{"Name":"#), 400, "unexpected EOF");
    let resp = raw(br#"{"Orchestration":{"TaskHistoryRetentionLimit":"x"}}"#);
    assert_eq!(resp.status, 400, "{}", resp.text());
    let msg = resp.json()["message"].as_str().unwrap().to_string();
    assert!(msg.starts_with("json: cannot unmarshal"), "{msg}");

    // (An ID prefix is a valid reference: "no-such-node" can never be one,
    // where a one-letter name would match a node ID starting with it.)
    // Unknown IDs, bad filters.
    assert_error(
        &shoal.http("GET", "/v1.41/nodes/no-such-node"),
        404,
        "node no-such-node not found",
    );
    assert_error(
        &shoal.http("DELETE", "/v1.41/nodes/no-such-node"),
        404,
        "node no-such-node not found",
    );
    assert_error(
        &shoal.http_json(
            "POST",
            "/v1.41/nodes/no-such-node/update?version=1",
            &json!({}),
        ),
        404,
        "node no-such-node not found",
    );
    assert_error(
        &shoal.http(
            "GET",
            "/v1.41/nodes?filters=%7B%22foo%22%3A%5B%22bar%22%5D%7D",
        ),
        400,
        "Invalid filter 'foo'",
    );
    assert_fails_with(
        &shoal,
        &["node", "inspect", "no-such-node"],
        "Error response from daemon: node no-such-node not found",
    );
    assert_fails_with(
        &shoal,
        &["node", "update", "--label-add", "a=b", "no-such-node"],
        "node no-such-node not found",
    );
    // A node update with a stale version.
    let nj = node_json(&shoal, &node.id);
    let nver = nj["Version"]["Index"].as_u64().unwrap();
    shoal.docker_ok(&["node", "update", "--label-add", "k=v", &node.id]);
    assert_error(
        &shoal.http_json(
            "POST",
            &format!("/v1.41/nodes/{}/update?version={nver}", node.id),
            &nj["Spec"],
        ),
        500,
        "rpc error: code = Unknown desc = update out of sequence",
    );
    assert_eq!(
        node_json(&shoal, &node.id)["Spec"]["Labels"],
        json!({"k": "v"})
    );

    // Init and join while in a swarm.
    assert_error(
        &shoal.http_json(
            "POST",
            "/v1.41/swarm/init",
            &json!({"ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "127.0.0.1"}),
        ),
        503,
        ALREADY_IN_A_SWARM,
    );

    // Nothing half-written: the swarm is as it was, and shoal still serves.
    let now = swarm_json(&shoal);
    assert_eq!(now["Version"]["Index"].as_u64().unwrap(), index);
    assert_eq!(now["Spec"], spec);
    let ping = shoal.http("GET", "/_ping");
    assert_eq!((ping.status, ping.text().as_str()), (200, "OK"));
    shoal.docker_ok(&["node", "ls"]);

    node.leave(&shoal);
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

#[test]
fn node_events_appear_on_the_event_stream() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    let since = unix_now().saturating_sub(1).to_string();

    shoal.docker_ok(&["node", "update", "--label-add", "ev=1", &node.id]);
    shoal.docker_ok(&["node", "update", "--availability", "pause", &node.id]);
    shoal.docker_ok(&["node", "update", "--availability", "active", &node.id]);

    let until = (unix_now() + 1).to_string();
    let out = shoal.docker_ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "type=node",
        "--format",
        "{{json .}}",
    ]);
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["Actor"]["ID"] == node.id.as_str())
        .collect();
    let updates: Vec<&Value> = events.iter().filter(|e| e["Action"] == "update").collect();
    assert!(updates.len() >= 3, "node events: {out}");
    for e in &events {
        assert_eq!(e["Type"], "node", "{e}");
        assert_eq!(e["scope"], "swarm", "{e}");
    }
    assert!(
        updates.iter().any(|e| {
            e["Actor"]["Attributes"]["availability.old"] == "active"
                && e["Actor"]["Attributes"]["availability.new"] == "pause"
        }),
        "no availability active -> pause update in {out}"
    );

    // type=container keeps swarm node events out.
    let out = shoal.docker_ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "type=container",
        "--format",
        "{{.Type}}",
    ]);
    assert!(out.lines().all(|l| l == "container"), "{out}");

    node.leave(&shoal);
}

// ---------------------------------------------------------------------------
// Durability
// ---------------------------------------------------------------------------

#[test]
fn kill_9_and_restart_keep_every_object_and_version() {
    let mut shoal = Shoal::start();
    let node = shoal.swarm_init();
    let id = node.id.clone();

    shoal.docker_ok(&["node", "update", "--label-add", "keep=me", &id]);
    shoal.docker_ok(&["node", "update", "--availability", "pause", &id]);
    shoal.docker_ok(&["swarm", "update", "--task-history-limit", "9"]);
    shoal.docker_ok(&["swarm", "join-token", "--rotate", "-q", "worker"]);
    let node_before = node_json(&shoal, &id);
    let swarm_before = swarm_json(&shoal);
    let worker_token = shoal.docker_ok(&["swarm", "join-token", "-q", "worker"]);

    shoal.restart(); // SIGKILL, then the same data dir

    let node_after = node_json(&shoal, &id);
    for key in ["ID", "Version", "CreatedAt", "UpdatedAt", "Spec"] {
        assert_eq!(node_after[key], node_before[key], "node {key}");
    }
    assert_eq!(node_after["Spec"]["Labels"], json!({"keep": "me"}));
    assert_eq!(node_after["Spec"]["Availability"], "pause");
    let swarm_after = swarm_json(&shoal);
    assert_eq!(swarm_after, swarm_before);
    assert_eq!(
        shoal.docker_ok(&["swarm", "join-token", "-q", "worker"]),
        worker_token
    );
    assert_eq!(
        shoal
            .docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"])
            .trim(),
        id
    );
    assert_eq!(shoal.docker_ok(&["node", "ls", "-q"]).trim(), id);

    // And it goes on from there: versions keep growing.
    shoal.docker_ok(&["node", "update", "--label-rm", "keep", &id]);
    let next = node_json(&shoal, &id);
    assert!(
        next["Version"]["Index"].as_u64() > node_before["Version"]["Index"].as_u64(),
        "{} -> {}",
        node_before["Version"],
        next["Version"]
    );
    assert_eq!(next["Spec"]["Labels"], json!({}));

    node.leave(&shoal);
}

#[test]
fn swarm_leave_force_returns_promptly() {
    // The engine answers a forced leave of a one-node swarm in about a second.
    for round in 0..12 {
        let shoal = Shoal::start();
        let node = shoal.swarm_init();
        let mut cmd = shoal.docker_cmd();
        cmd.args(["swarm", "leave", "--force"]);
        let out = run_within(cmd, Duration::from_secs(15)).unwrap_or_else(|| {
            panic!(
                "round {round}: `docker swarm leave --force` did not return within 15 s; \
                 shoal log:\n{}",
                tail(&shoal.logs(), 20)
            )
        });
        assert_eq!(ok(&out).trim(), "Node left the swarm.");
        assert_fails_with(&shoal, &["node", "ls"], NOT_A_MANAGER);
        drop(node);
    }
}
