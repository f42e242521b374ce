//! End-to-end: secrets, configs and autolock through the unmodified docker
//! CLI (and raw HTTP for exact texts): create/ls/inspect/rm, delivery of
//! files into task containers, refusal to remove what a service uses,
//! autolock across a restart, and that secret data never reaches the data
//! dir or the log in any readable form.
//!
//! Every test runs its own shoal and swarm and ends with `swarm leave
//! --force` and no container of its node left on the engine.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(60);
const LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"docker swarm unlock\" to unlock it.";

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The marker and its base64 forms at the three alignments, each without
/// the characters that depend on the bytes around it.
fn needles(marker: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![marker.to_vec()];
    for shift in 0..3 {
        let mut bytes = vec![b'x'; shift];
        bytes.extend_from_slice(marker);
        let enc = b64(&bytes);
        let start = (shift * 4).div_ceil(3);
        out.push(enc.as_bytes()[start..enc.len() - 4].to_vec());
    }
    out
}

fn contains_any(bytes: &[u8], needles: &[Vec<u8>]) -> bool {
    needles
        .iter()
        .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
}

/// Files under `dir` holding any needle.
fn files_with(dir: &Path, needles: &[Vec<u8>]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if contains_any(&bytes, needles) {
                    hits.push(path.display().to_string());
                }
            }
        }
    }
    hits
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn secrets_and_configs_through_the_cli() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();

    // From stdin and from a file.
    let id = shoal
        .docker_stdin(&["secret", "create", "s1", "-"], b"from stdin")
        .stdout;
    let id = String::from_utf8_lossy(&id).trim().to_string();
    assert_eq!(id.len(), 25, "secret ID {id:?}");
    let file = shoal.dir().join("s2.txt");
    std::fs::write(&file, b"from a file").unwrap();
    let file = file.to_string_lossy().into_owned();
    shoal.docker_ok(&["secret", "create", "--label", "k=v", "s2", &file]);

    let ls = shoal.docker_ok(&["secret", "ls", "--format", "{{.Name}}"]);
    assert_eq!(ls.split_whitespace().collect::<Vec<_>>(), ["s1", "s2"]);
    let ls = shoal.docker_ok(&["secret", "ls", "--filter", "label=k", "-q"]);
    assert_eq!(ls.lines().count(), 1);

    let inspect: Value =
        serde_json::from_str(&shoal.docker_ok(&["secret", "inspect", "s1"])).unwrap();
    assert_eq!(inspect[0]["ID"], id.as_str());
    assert_eq!(inspect[0]["Spec"]["Name"], "s1");
    assert!(
        inspect[0]["Spec"].get("Data").is_none(),
        "no data: {inspect}"
    );
    let raw = shoal.http("GET", &format!("/v1.41/secrets/{id}"));
    assert!(!raw.text().contains(&b64(b"from stdin")));

    // Duplicate name.
    assert_fails_with(
        &shoal,
        &["secret", "create", "s1", &file],
        "rpc error: code = AlreadyExists desc = secret s1 already exists",
    );

    // Configs: the same, but Data is shown.
    shoal.docker_stdin(&["config", "create", "c1", "-"], b"key=value\n");
    let ls = shoal.docker_ok(&["config", "ls", "--format", "{{.Name}}"]);
    assert_eq!(ls.trim(), "c1");
    let inspect: Value =
        serde_json::from_str(&shoal.docker_ok(&["config", "inspect", "c1"])).unwrap();
    assert_eq!(inspect[0]["Spec"]["Data"], b64(b"key=value\n"));

    shoal.docker_ok(&["secret", "rm", "s1", "s2"]);
    shoal.docker_ok(&["config", "rm", "c1"]);
    assert_eq!(shoal.docker_ok(&["secret", "ls", "-q"]).trim(), "");
    assert_eq!(shoal.docker_ok(&["config", "ls", "-q"]).trim(), "");
    assert_fails_with(&shoal, &["secret", "inspect", "s1"], "secret s1 not found");
    assert_fails_with(
        &shoal,
        &["secret", "rm", "nosuch"],
        "secret nosuch not found",
    );
    assert_fails_with(
        &shoal,
        &["config", "rm", "nosuch"],
        "config nosuch not found",
    );

    node.leave(&shoal);
}

#[test]
fn bad_secret_and_config_requests_get_the_engines_answers() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();

    let big = vec![b'a'; 500 * 1024];
    assert_error(
        &shoal.http_json("POST", "/v1.41/secrets/create", &json!({"Name": "big", "Data": b64(&big)})),
        400,
        "rpc error: code = InvalidArgument desc = secret data must be larger than 0 and less than 512000 bytes",
    );
    assert_error(
        &shoal.http_json("POST", "/v1.41/secrets/create", &json!({"Name": "empty", "Data": ""})),
        400,
        "rpc error: code = InvalidArgument desc = secret data must be larger than 0 and less than 512000 bytes",
    );
    let big = vec![b'a'; 1000 * 1024];
    assert_error(
        &shoal.http_json("POST", "/v1.41/configs/create", &json!({"Name": "big", "Data": b64(&big)})),
        400,
        "rpc error: code = InvalidArgument desc = config data must be larger than 0 and less than 1024000 bytes",
    );
    for name in ["-x", "a/b", &"n".repeat(65)] {
        assert_error(
            &shoal.http_json("POST", "/v1.41/secrets/create", &json!({"Name": name, "Data": "eA=="})),
            400,
            "rpc error: code = InvalidArgument desc = invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]",
        );
    }
    let resp = shoal.http_json(
        "POST",
        "/v1.41/secrets/create",
        &json!({"Name": "b", "Data": "a$=="}),
    );
    assert_error(&resp, 400, "illegal base64 data at input byte 1");
    let resp = shoal.http_json(
        "POST",
        "/v1.41/secrets/create",
        &json!({"Name": 5, "Data": "eA=="}),
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(resp.json()["message"].is_string());
    let resp = shoal.http_json(
        "POST",
        "/v1.41/secrets/create",
        &json!({"Name": "d", "Data": "eA==", "Driver": {"Name": "vault"}}),
    );
    assert!(resp.status >= 400, "{}", resp.text());
    assert_eq!(
        shoal.docker_ok(&["secret", "ls", "-q"]).trim(),
        "",
        "nothing was half-written"
    );
    assert_eq!(shoal.docker_ok(&["config", "ls", "-q"]).trim(), "");
    assert_error(
        &shoal.http("GET", "/v1.41/secrets/nosuchid"),
        404,
        "secret nosuchid not found",
    );
    assert_error(
        &shoal.http("DELETE", "/v1.41/configs/nosuchid"),
        404,
        "config nosuchid not found",
    );
    // Data may not change; the same data again is fine.
    let id = shoal
        .http_json(
            "POST",
            "/v1.41/secrets/create",
            &json!({"Name": "s", "Data": "eA=="}),
        )
        .json()["ID"]
        .as_str()
        .unwrap()
        .to_string();
    let version = shoal.http("GET", &format!("/v1.41/secrets/{id}")).json()["Version"]["Index"]
        .as_u64()
        .unwrap();
    assert_error(
        &shoal.http_json(
            "POST",
            &format!("/v1.41/secrets/{id}/update?version={version}"),
            &json!({"Name": "s", "Data": "eQ=="}),
        ),
        400,
        "rpc error: code = InvalidArgument desc = only updates to Labels are allowed",
    );
    let resp = shoal.http_json(
        "POST",
        &format!("/v1.41/secrets/{id}/update?version={version}"),
        &json!({"Name": "s", "Data": "eA==", "Labels": {"a": "b"}}),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());

    // A service referring to a missing secret: the CLI's own check.
    assert_fails_with(
        &shoal,
        &["service", "create", "--secret", "nosuch", "busybox", "true"],
        "secret not found: nosuch",
    );
    // The unlock endpoints when not locked.
    assert_error(
        &shoal.http_json(
            "POST",
            "/v1.41/swarm/unlock",
            &json!({"UnlockKey": "SWMKEY-1-x"}),
        ),
        409,
        "swarm is not locked",
    );
    assert_fails_with(&shoal, &["swarm", "unlock-key"], "no unlock key is set");

    node.leave(&shoal);
}

/// `--template-driver golang`: each task gets the payload rendered with its
/// own service, slot, node and env, and the secrets it refers to.
#[test]
fn templated_configs_and_secrets_are_rendered_for_each_task() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    shoal.docker_stdin(&["secret", "create", "pw", "-"], b"hunter2");
    shoal.docker_stdin(
        &[
            "config",
            "create",
            "--template-driver",
            "golang",
            "tpl",
            "-",
        ],
        b"svc={{.Service.Name}} slot={{.Task.Slot}} host={{.Node.Hostname}} \
          mode={{env \"MODE\"}} pw={{secret \"pw\"}}",
    );
    let inspect = shoal.docker_ok(&[
        "config",
        "inspect",
        "tpl",
        "--format",
        "{{json .Spec.Templating}}",
    ]);
    assert_eq!(inspect.trim(), r#"{"Name":"golang"}"#);
    let hostname = shoal
        .docker_ok(&[
            "node",
            "inspect",
            "self",
            "--format",
            "{{.Description.Hostname}}",
        ])
        .trim()
        .to_string();
    shoal.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "tpl-web",
        "--replicas",
        "2",
        "--stop-grace-period",
        "1s",
        "--env",
        "MODE=prod",
        "--secret",
        "pw",
        "--config",
        "source=tpl,target=/etc/app.conf",
        "busybox",
        "sh",
        "-c",
        "cat /etc/app.conf; echo; sleep 1d",
    ]);
    let logs = wait_for("both tasks' rendered configs", CONVERGE, || {
        let text = stdout(&shoal.docker(&["service", "logs", "--raw", "tpl-web"]));
        (text.matches("svc=tpl-web").count() == 2).then_some(text)
    });
    for slot in ["1", "2"] {
        let want = format!("svc=tpl-web slot={slot} host={hostname} mode=prod pw=hunter2");
        assert!(
            logs.lines().any(|l| l.trim() == want),
            "no {want:?} in:\n{logs}"
        );
    }
    shoal.docker_ok(&["service", "rm", "tpl-web"]);
    node.leave(&shoal);
}

#[test]
fn a_task_gets_its_secret_and_config_as_files() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    shoal.docker_stdin(&["secret", "create", "s", "-"], b"s3cr3t-value\n");
    shoal.docker_stdin(&["config", "create", "c", "-"], b"conf-value\n");

    let out = shoal.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--stop-grace-period",
        "1s",
        "--secret",
        "source=s,target=t,mode=0400,uid=1000",
        "--config",
        "source=c,target=/etc/c.conf",
        "busybox",
        "sh",
        "-c",
        "cat /run/secrets/t /etc/c.conf; stat -c %a:%u /run/secrets/t; echo probe > /run/secrets/t || echo read-only; sleep 1d",
    ]);
    assert_eq!(out.trim().len(), 25, "{out}");
    let logs = wait_for("the task's output in service logs", CONVERGE, || {
        let out = shoal.docker(&["service", "logs", "--raw", "web"]);
        let text = stdout(&out);
        text.contains("read-only").then_some(text)
    });
    assert!(logs.contains("s3cr3t-value"), "{logs}");
    assert!(logs.contains("conf-value"), "{logs}");
    assert!(logs.contains("400:1000"), "{logs}");

    // On the host: one read-only bind mount from shoal's tmpfs per file.
    let containers = node_containers(&node.id, &[]);
    assert_eq!(containers.len(), 1);
    let mounts: Value = serde_json::from_str(&ok(&engine_docker(&[
        "inspect",
        "--format",
        "{{json .HostConfig.Mounts}}",
        &containers[0],
    ])))
    .unwrap();
    let sources: Vec<String> = mounts
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["ReadOnly"], true, "{m}");
            m["Source"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(sources.len(), 2, "{mounts}");
    let root = format!("/run/shoal/{}/", node.id);
    for s in &sources {
        assert!(s.starts_with(&root), "{s}");
    }
    let fs = std::process::Command::new("stat")
        .args(["-f", "-c", "%T", &root])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&fs.stdout).trim(), "tmpfs");

    // In use: not removable, and still there.
    assert_fails_with(
        &shoal,
        &["secret", "rm", "s"],
        "secret 's' is in use by the following service: web",
    );
    assert_fails_with(
        &shoal,
        &["config", "rm", "c"],
        "config 'c' is in use by the following service: web",
    );
    shoal.docker_ok(&["secret", "inspect", "s"]);

    // --secret-rm rolls the task; the old task's files go with it.
    shoal.docker_ok(&[
        "service",
        "update",
        "--detach",
        "--secret-rm",
        "s",
        "--config-rm",
        "c",
        "web",
    ]);
    wait_for("the old task's files removed", CONVERGE, || {
        sources.iter().all(|s| !Path::new(s).exists()).then_some(())
    });
    shoal.docker_ok(&["secret", "rm", "s"]);
    shoal.docker_ok(&["config", "rm", "c"]);
    shoal.docker_ok(&["service", "rm", "web"]);
    node.leave(&shoal);
    assert!(
        !Path::new(&root).exists(),
        "the node's tmpfs goes with swarm leave"
    );
}

#[test]
fn autolock_keeps_a_restarted_swarm_locked_until_unlock() {
    let mut shoal = Shoal::start();
    let out = shoal.docker_ok(&[
        "swarm",
        "init",
        "--advertise-addr",
        "127.0.0.1",
        "--autolock",
    ]);
    let node_id = shoal
        .docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"])
        .trim()
        .to_string();
    let key = shoal
        .docker_ok(&["swarm", "unlock-key", "-q"])
        .trim()
        .to_string();
    assert!(key.starts_with("SWMKEY-1-"), "{key}");
    assert!(out.contains(&key), "swarm init prints the key:\n{out}");
    shoal.docker_stdin(&["secret", "create", "s", "-"], b"kept across the lock");
    let swarm: Value = shoal.http("GET", "/v1.41/swarm").json();
    assert_eq!(swarm["Spec"]["EncryptionConfig"]["AutoLockManagers"], true);

    shoal.restart();
    assert_fails_with(&shoal, &["node", "ls"], LOCKED);
    assert_fails_with(&shoal, &["secret", "ls"], LOCKED);
    assert_error(&shoal.http("GET", "/v1.41/swarm"), 503, LOCKED);
    assert_error(&shoal.http("GET", "/v1.41/swarm/unlockkey"), 503, LOCKED);
    assert_eq!(
        shoal
            .docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
            .trim(),
        "locked"
    );
    // Wrong and malformed keys.
    assert_error(
        &shoal.http_json(
            "POST",
            "/v1.41/swarm/unlock",
            &json!({"UnlockKey": format!("SWMKEY-1-{}", "A".repeat(43))}),
        ),
        401,
        "swarm could not be unlocked: invalid key provided",
    );
    assert_error(
        &shoal.http_json(
            "POST",
            "/v1.41/swarm/unlock",
            &json!({"UnlockKey": "nonsense"}),
        ),
        400,
        "invalid key string",
    );
    assert_fails_with(
        &shoal,
        &["swarm", "leave"],
        "Swarm is encrypted and locked. Please unlock it first or use `--force` to ignore this message.",
    );

    let out = shoal.docker_stdin(&["swarm", "unlock"], format!("{key}\n").as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    shoal.docker_ok(&["node", "ls"]);
    shoal.docker_ok(&["secret", "inspect", "s"]);
    assert_eq!(shoal.docker_ok(&["swarm", "unlock-key", "-q"]).trim(), key);
    assert_error(
        &shoal.http_json("POST", "/v1.41/swarm/unlock", &json!({"UnlockKey": key})),
        409,
        "swarm is not locked",
    );

    // Rotation: the old key stops working.
    let rotated = shoal
        .docker_ok(&["swarm", "unlock-key", "--rotate", "-q"])
        .trim()
        .to_string();
    assert!(
        rotated.starts_with("SWMKEY-1-") && rotated != key,
        "{rotated}"
    );
    shoal.restart();
    assert_error(
        &shoal.http_json("POST", "/v1.41/swarm/unlock", &json!({"UnlockKey": key})),
        401,
        "swarm could not be unlocked: invalid key provided",
    );
    let out = shoal.docker_stdin(&["swarm", "unlock"], format!("{rotated}\n").as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));

    // Off again: a restart comes up unlocked.
    shoal.docker_ok(&["swarm", "update", "--autolock=false"]);
    assert_fails_with(&shoal, &["swarm", "unlock-key"], "no unlock key is set");
    shoal.restart();
    shoal.docker_ok(&["node", "ls"]);
    shoal.docker_ok(&["secret", "inspect", "s"]);

    // And on with update: the CLI prints the new key.
    let out = shoal.docker_ok(&["swarm", "update", "--autolock=true"]);
    let key = shoal
        .docker_ok(&["swarm", "unlock-key", "-q"])
        .trim()
        .to_string();
    assert!(out.contains(&key), "{out}");
    shoal.restart();
    assert_fails_with(&shoal, &["node", "ls"], LOCKED);
    // A locked node may leave with --force.
    let node = SwarmNodeId(node_id);
    let out = shoal.docker_ok(&["swarm", "leave", "--force"]);
    assert_eq!(out.trim(), "Node left the swarm.");
    assert!(!shoal.dir().join("data/swarm").exists());
    node.assert_no_containers();
}

/// Checks a node's containers are gone (the guard of a swarm whose init
/// this test did by hand).
struct SwarmNodeId(String);

impl SwarmNodeId {
    fn assert_no_containers(&self) {
        assert_eq!(node_containers(&self.0, &["-a"]), Vec::<String>::new());
    }
}

#[test]
fn secret_data_never_reaches_the_data_dir_or_the_log() {
    let mut shoal = Shoal::start();
    // A snapshot every 10 raft entries, so the test sees several.
    shoal.docker_ok(&[
        "swarm",
        "init",
        "--advertise-addr",
        "127.0.0.1",
        "--snapshot-interval",
        "10",
    ]);
    let node_id = shoal
        .docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"])
        .trim()
        .to_string();
    let marker = b"MARKER-shoal-at-rest-9d1e5b7c";
    let needles = needles(marker);
    let data = shoal.dir().join("data");
    for i in 0..25 {
        let mut value = marker.to_vec();
        value.extend_from_slice(format!("-{i}").as_bytes());
        let out = shoal.docker_stdin(&["secret", "create", &format!("s{i}"), "-"], &value);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // The key file is private.
    let key_file = data.join("swarm/dek.json");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(count_files(&data) > 0);
    assert_eq!(files_with(&data, &needles), Vec::<String>::new());

    shoal.restart();
    assert_eq!(
        shoal.docker_ok(&["secret", "ls", "-q"]).lines().count(),
        25,
        "every secret is back after the restart"
    );
    for i in 25..40 {
        let mut value = marker.to_vec();
        value.extend_from_slice(format!("-{i}").as_bytes());
        shoal.docker_stdin(&["secret", "create", &format!("s{i}"), "-"], &value);
    }
    assert_eq!(files_with(&data, &needles), Vec::<String>::new());
    let logs = shoal.logs();
    assert!(
        !contains_any(logs.as_bytes(), &needles),
        "the log shows secret data"
    );

    let node = SwarmNodeId(node_id);
    shoal.docker_ok(&["swarm", "leave", "--force"]);
    node.assert_no_containers();
}
