//! End-to-end: services and tasks on a one-node shoal swarm through the
//! unmodified docker CLI, checked against the engine asked directly: create
//! and converge, scale, `update --force`, global mode, restart policy,
//! constraints, logs, drain, `service rm`, and adoption after `kill -9`.
//!
//! Every test runs its own shoal and swarm and ends with `swarm leave --force`
//! and no container of its node left on the engine. Task containers run
//! `busybox sleep`, which ignores SIGTERM: hence `--stop-grace-period 1s`.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);

/// `docker service create --detach` with the fast stop and restart settings;
/// returns the service ID.
#[track_caller]
fn create(shoal: &Shoal, args: &[&str]) -> String {
    let mut all = vec![
        "service",
        "create",
        "--detach",
        "--stop-grace-period",
        "1s",
        "--restart-delay",
        "1s",
    ];
    all.extend_from_slice(args);
    let id = shoal.docker_ok(&all).trim().to_string();
    assert_eq!(id.len(), 25, "service ID {id:?}");
    id
}

/// The REPLICAS column of `docker service ls` for service `name`.
fn replicas(shoal: &Shoal, name: &str) -> Option<String> {
    shoal
        .docker_ok(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"])
        .lines()
        .find_map(|l| {
            let (n, r) = l.split_once(' ')?;
            (n == name).then(|| r.to_string())
        })
}

#[track_caller]
fn wait_replicas(shoal: &Shoal, name: &str, want: &str) {
    wait_for(&format!("service ls: {name} {want}"), CONVERGE, || {
        (replicas(shoal, name).as_deref() == Some(want)).then_some(())
    });
}

/// Running containers of service `service` on node `node`, asked of the engine
/// directly: (ID, name), sorted by name.
fn engine_tasks(node: &str, service: &str) -> Vec<(String, String)> {
    let out = ok(&engine_docker(&[
        "ps",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.swarm.node.id={node}"),
        "--filter",
        &format!("label=com.docker.swarm.service.name={service}"),
        "--format",
        "{{.ID}} {{.Names}}",
    ]));
    let mut v: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    v
}

#[track_caller]
fn wait_engine_tasks(shoal: &Shoal, node: &str, service: &str, n: usize) -> Vec<(String, String)> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let t = engine_tasks(node, service);
        if t.len() == n {
            return t;
        }
        if Instant::now() >= deadline {
            let ps = shoal.docker(&["service", "ps", "--no-trunc", service]);
            let all = engine_docker(&[
                "ps",
                "-a",
                "--filter",
                &format!("label=com.docker.swarm.node.id={node}"),
                "--format",
                "{{.Names}} {{.Status}}",
            ]);
            let logs = shoal.logs();
            let log: Vec<&str> = logs
                .lines()
                .filter(|l| !l.contains("hyper_util") && !l.contains("bollard::"))
                .collect();
            panic!(
                "timed out after {CONVERGE:?} waiting for {n} running containers of {service} \
                 on the engine; running: {t:?}\nservice ps:\n{}{}\nengine ps -a:\n{}\n\
                 shoal log (filtered):\n{}",
                stdout(&ps),
                stderr(&ps),
                stdout(&all),
                log[log.len().saturating_sub(40)..].join("\n")
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The slot in a task container name `service.slot.taskid`.
fn slot(name: &str) -> String {
    name.split('.').nth(1).unwrap().to_string()
}

/// `docker inspect` of a container on the engine, asked directly.
fn engine_inspect(id: &str) -> Value {
    let out = ok(&engine_docker(&["inspect", id]));
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

/// Asserts that `cond` holds on every poll for `dur` (for "does not happen").
#[track_caller]
fn holds_for(what: &str, dur: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + dur;
    while Instant::now() < end {
        assert!(cond(), "{what} stopped holding");
        thread::sleep(Duration::from_millis(200));
    }
}

/// `docker service ps --no-trunc <name>` rows as (name, desired, current-state
/// words, error), history rows included.
fn service_ps(shoal: &Shoal, name: &str) -> Vec<(String, String, String, String)> {
    shoal
        .docker_ok(&[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{.Name}}|{{.DesiredState}}|{{.CurrentState}}|{{.Error}}",
            name,
        ])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, '|').collect();
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].to_string(),
                // The CLI quotes the error column.
                f.get(3).unwrap_or(&"").trim_matches('"').to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------

#[test]
fn create_converges_with_progress_and_runs_swarm_containers() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();

    // Not detached: the CLI draws its progress and returns once converged.
    let out = shoal.docker(&[
        "service",
        "create",
        "--replicas",
        "3",
        "--name",
        "web",
        "--stop-grace-period",
        "1s",
        "--restart-delay",
        "1s",
        IMAGE,
        "sleep",
        "1d",
    ]);
    let text = ok(&out);
    let id = text.lines().next().unwrap().trim().to_string();
    assert_eq!(id.len(), 25, "{text}");
    assert!(
        text.contains("overall progress: 3 out of 3 tasks"),
        "{text}"
    );
    assert!(
        text.contains(&format!("verify: Service {id} converged")),
        "{text}"
    );

    assert_eq!(replicas(&shoal, "web").as_deref(), Some("3/3"));
    let ls = shoal.docker_ok(&["service", "ls"]);
    let row: Vec<&str> = ls.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, [&id[..12], "web", "replicated", "3/3", IMAGE], "{ls}");

    // The engine runs 3 containers with swarm's names and labels.
    let tasks = engine_tasks(&node.id, "web");
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    let mut slots = BTreeSet::new();
    for (cid, name) in &tasks {
        let c = engine_inspect(cid);
        let labels = &c["Config"]["Labels"];
        let task_id = labels["com.docker.swarm.task.id"].as_str().unwrap();
        let parts: Vec<&str> = name.splitn(3, '.').collect();
        assert_eq!(parts[0], "web", "{name}");
        assert_eq!(parts[2], task_id, "{name}");
        slots.insert(parts[1].to_string());
        assert_eq!(labels["com.docker.swarm.service.id"], id.as_str());
        assert_eq!(labels["com.docker.swarm.service.name"], "web");
        assert_eq!(labels["com.docker.swarm.task.name"], name.as_str());
        assert_eq!(labels["com.docker.swarm.node.id"], node.id.as_str());
        assert_eq!(c["Config"]["Cmd"], serde_json::json!(["sleep", "1d"]));
        assert_eq!(c["State"]["Running"], true);
    }
    assert_eq!(
        slots,
        ["1", "2", "3"].iter().map(|s| s.to_string()).collect()
    );

    // service ps: 3 running tasks, on this node.
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
    let ps = shoal.docker_ok(&[
        "service",
        "ps",
        "--format",
        "{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}}",
        "web",
    ]);
    let mut rows: Vec<&str> = ps.lines().collect();
    rows.sort();
    assert_eq!(rows.len(), 3, "{ps}");
    for (i, row) in rows.iter().enumerate() {
        assert!(
            row.starts_with(&format!("web.{} {hostname} Running Running ", i + 1)),
            "{ps}"
        );
    }

    let pretty = shoal.docker_ok(&["service", "inspect", "--pretty", "web"]);
    for want in [
        format!("ID: {id}"),
        "Name: web".into(),
        "Service Mode: Replicated".into(),
        "Replicas: 3".into(),
        format!("Image: {IMAGE}"),
        "Args: sleep 1d".into(),
    ] {
        assert!(
            pretty
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == want),
            "no {want:?} in:\n{pretty}"
        );
    }

    // service rm removes the containers.
    assert_eq!(shoal.docker_ok(&["service", "rm", "web"]).trim(), "web");
    assert_eq!(shoal.docker_ok(&["service", "ls", "-q"]), "");
    wait_for("the containers of web removed", CONVERGE, || {
        node_containers(&node.id, &["-a"]).is_empty().then_some(())
    });

    node.leave(&shoal);
}

#[test]
fn scale_up_to_5_and_down_to_2_removes_the_highest_slots() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    create(
        &shoal,
        &["--replicas", "1", "--name", "sc", IMAGE, "sleep", "1d"],
    );
    wait_replicas(&shoal, "sc", "1/1");

    let out = shoal.docker_ok(&["service", "scale", "--detach", "sc=5"]);
    assert!(out.contains("sc scaled to 5"), "{out}");
    wait_replicas(&shoal, "sc", "5/5");
    let five = wait_engine_tasks(&shoal, &node.id, "sc", 5);
    let slots: Vec<String> = five.iter().map(|t| slot(&t.1)).collect();
    assert_eq!(slots, ["1", "2", "3", "4", "5"]);

    let out = shoal.docker_ok(&["service", "scale", "--detach", "sc=2"]);
    assert!(out.contains("sc scaled to 2"), "{out}");
    wait_replicas(&shoal, "sc", "2/2");
    let two = wait_engine_tasks(&shoal, &node.id, "sc", 2);
    // The survivors are slots 1 and 2, the same containers as before.
    assert_eq!(two, five[..2].to_vec());
    assert_eq!(
        shoal
            .docker_ok(&[
                "service",
                "inspect",
                "--format",
                "{{.Spec.Mode.Replicated.Replicas}}",
                "sc"
            ])
            .trim(),
        "2"
    );

    node.leave(&shoal);
}

/// As the engine: a service without tasks has nothing to roll, so an
/// update leaves no `UpdateStatus` (and no background write bumps its
/// version under the client's next inspect → update).
#[test]
fn updating_a_service_without_tasks_leaves_no_update_status() {
    let shoal = Shoal::start();
    let _node = shoal.swarm_init();
    let name = unique("idle");
    shoal.docker_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        &name,
        "--replicas",
        "0",
        IMAGE,
        "sleep",
        "100",
    ]);
    for i in 0..5 {
        shoal.docker_ok(&[
            "service",
            "update",
            "-d",
            "--env-add",
            &format!("A={i}"),
            &name,
        ]);
        let status = shoal.docker_ok(&[
            "service",
            "inspect",
            "--format",
            "{{json .UpdateStatus}}",
            &name,
        ]);
        assert_eq!(status.trim(), "null", "after update {i}");
    }
    shoal.docker_ok(&["service", "rm", &name]);
}

#[test]
fn update_force_replaces_every_task() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    create(
        &shoal,
        &["--replicas", "2", "--name", "fu", IMAGE, "sleep", "1d"],
    );
    let before = wait_engine_tasks(&shoal, &node.id, "fu", 2);

    let out = shoal.docker_ok(&["service", "update", "--detach", "--force", "fu"]);
    assert_eq!(out.trim(), "fu");
    let after = wait_for("both tasks replaced", CONVERGE, || {
        let now = engine_tasks(&node.id, "fu");
        (now.len() == 2 && now.iter().all(|t| !before.contains(t))).then_some(now)
    });
    assert_eq!(
        after.iter().map(|t| slot(&t.1)).collect::<Vec<_>>(),
        ["1", "2"]
    );
    wait_replicas(&shoal, "fu", "2/2");
    // service ps shows the replaced tasks as history.
    let ps = service_ps(&shoal, "fu");
    let history: Vec<_> = ps.iter().filter(|r| r.1 == "Shutdown").collect();
    assert_eq!(history.len(), 2, "{ps:?}");
    assert!(
        history
            .iter()
            .all(|r| r.0.starts_with("fu.") && r.2.starts_with("Shutdown")),
        "{ps:?}"
    );
    // The old containers are gone from the engine (stopped and removed or not running).
    for (cid, _) in &before {
        let out = engine_docker(&["inspect", "--format", "{{.State.Running}}", cid]);
        assert!(
            !out.status.success() || stdout(&out).trim() == "false",
            "old task container {cid} still running"
        );
    }

    node.leave(&shoal);
}

#[test]
fn global_service_runs_one_task_on_the_node() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    create(
        &shoal,
        &["--mode", "global", "--name", "gl", IMAGE, "sleep", "1d"],
    );
    wait_replicas(&shoal, "gl", "1/1");
    let tasks = wait_engine_tasks(&shoal, &node.id, "gl", 1);
    // Global tasks are named service.nodeid.taskid.
    let parts: Vec<&str> = tasks[0].1.splitn(3, '.').collect();
    assert_eq!(parts[..2], ["gl", node.id.as_str()], "{}", tasks[0].1);
    let ls = shoal.docker_ok(&["service", "ls", "--format", "{{.Name}} {{.Mode}}"]);
    assert_eq!(ls.trim(), "gl global");

    node.leave(&shoal);
}

#[test]
fn a_killed_task_comes_back_unless_restart_condition_is_none() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    create(&shoal, &["--name", "back", IMAGE, "sleep", "1d"]);
    create(
        &shoal,
        &[
            "--name",
            "gone",
            "--restart-condition",
            "none",
            IMAGE,
            "sleep",
            "1d",
        ],
    );
    let back = wait_engine_tasks(&shoal, &node.id, "back", 1);
    let gone = wait_engine_tasks(&shoal, &node.id, "gone", 1);

    // Killed behind shoal's back, through the CLI.
    shoal.docker_ok(&["kill", &back[0].0, &gone[0].0]);

    let replaced = wait_for("a new task for back", CONVERGE, || {
        let now = engine_tasks(&node.id, "back");
        (now.len() == 1 && now[0] != back[0]).then_some(now)
    });
    assert_eq!(slot(&replaced[0].1), "1");
    wait_replicas(&shoal, "back", "1/1");
    let ps = service_ps(&shoal, "back");
    assert_eq!(ps.len(), 2, "{ps:?}");
    assert_eq!(ps[0].1, "Running", "{ps:?}");
    assert!(ps[0].2.starts_with("Running"), "{ps:?}");
    assert_eq!(ps[1].1, "Shutdown", "{ps:?}");
    assert!(ps[1].2.starts_with("Failed"), "{ps:?}");
    assert_eq!(ps[1].3, "task: non-zero exit (137)", "{ps:?}");

    // restart-condition none: failed, and stays so (same 1 s delay as back).
    wait_replicas(&shoal, "gone", "0/1");
    holds_for("gone staying down", Duration::from_secs(3), || {
        engine_tasks(&node.id, "gone").is_empty() && service_ps(&shoal, "gone").len() == 1
    });
    let ps = service_ps(&shoal, "gone");
    assert_eq!(ps[0].1, "Shutdown", "{ps:?}");
    assert!(ps[0].2.starts_with("Failed"), "{ps:?}");
    assert_eq!(ps[0].3, "task: non-zero exit (137)", "{ps:?}");

    node.leave(&shoal);
}

#[test]
fn a_constraint_stays_pending_until_the_label_is_added() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    let zone = unique("zone");
    create(
        &shoal,
        &[
            "--name",
            "pin",
            "--constraint",
            &format!("node.labels.zone=={zone}"),
            IMAGE,
            "sleep",
            "1d",
        ],
    );
    let ps = wait_for("the task to be pending", CONVERGE, || {
        let ps = service_ps(&shoal, "pin");
        (ps.len() == 1 && ps[0].2.starts_with("Pending")).then_some(ps)
    });
    assert_eq!(ps[0].1, "Running");
    assert_eq!(
        ps[0].3,
        "no suitable node (scheduling constraints not satisfied on 1 node)"
    );
    assert_eq!(replicas(&shoal, "pin").as_deref(), Some("0/1"));
    assert!(engine_tasks(&node.id, "pin").is_empty());

    shoal.docker_ok(&[
        "node",
        "update",
        "--label-add",
        &format!("zone={zone}"),
        &node.id,
    ]);
    wait_replicas(&shoal, "pin", "1/1");
    wait_engine_tasks(&shoal, &node.id, "pin", 1);

    node.leave(&shoal);
}

/// Spawns `docker <args>` against `shoal` and hands its stdout lines over a channel.
fn spawn_lines(shoal: &Shoal, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut cmd = shoal.docker_cmd();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn docker");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn service_logs_and_follow() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
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
    create(
        &shoal,
        &[
            "--name",
            "talk",
            IMAGE,
            "sh",
            "-c",
            "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done",
        ],
    );
    let tasks = wait_engine_tasks(&shoal, &node.id, "talk", 1);
    let task_id = tasks[0].1.split('.').nth(2).unwrap().to_string();

    let logs = wait_for("three log lines", CONVERGE, || {
        let out = shoal.docker_ok(&["service", "logs", "talk"]);
        (out.lines().count() >= 3).then_some(out)
    });
    let prefix = format!("talk.1.{}@{hostname}", &task_id[..12]);
    let first = logs.lines().next().unwrap();
    let (who, what) = first.split_once('|').unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(who.trim(), prefix, "{logs}");
    assert_eq!(what.trim(), "line 0", "{logs}");
    let raw = shoal.docker_ok(&["service", "logs", "--raw", "talk"]);
    assert_eq!(raw.lines().next(), Some("line 0"), "{raw}");

    // -f: new lines keep coming.
    let (mut child, rx) = spawn_lines(&shoal, &["service", "logs", "-f", "--tail", "1", "talk"]);
    let mut seen = Vec::new();
    let mut wait_line = |what: &str, pred: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("no {what} from service logs -f; got {seen:?}"),
            }
        }
    };
    let last_n = logs
        .lines()
        .last()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    wait_line("a line newer than the snapshot", &|l: &str| {
        l.starts_with(&prefix)
            && l.rsplit(' ')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n > last_n + 2)
    });
    let _ = child.kill();
    let _ = child.wait();

    node.leave(&shoal);
}

/// Docker keeps an ended task's container while the task is in the task
/// history, so `service logs` shows what a crashed task printed; a
/// container removed by hand is skipped, not an error.
#[test]
fn service_logs_show_ended_tasks_until_they_leave_the_history() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    create(
        &shoal,
        &[
            "--name",
            "crash",
            "--restart-condition",
            "on-failure",
            "--restart-max-attempts",
            "1",
            IMAGE,
            "sh",
            "-c",
            "echo boom from $HOSTNAME; exit 3",
        ],
    );
    wait_for("two failed tasks", CONVERGE, || {
        let ps = service_ps(&shoal, "crash");
        (ps.len() == 2 && ps.iter().all(|r| r.2.starts_with("Failed"))).then_some(())
    });
    let both = wait_for("the logs of both failed tasks", CONVERGE, || {
        let out = shoal.docker(&["service", "logs", "crash"]);
        let text = stdout(&out);
        (out.status.success() && text.matches("boom from").count() == 2).then_some(text)
    });
    assert_eq!(both.lines().count(), 2, "{both}");
    // Stopped, not removed: two exited containers on the engine.
    let kept = node_containers(&node.id, &["-a", "--filter", "status=exited"]);
    assert_eq!(kept.len(), 2, "{kept:?}");

    // One container removed behind shoal's back: the other task's logs still come.
    ok(&engine_docker(&["rm", &kept[0]]));
    let one = shoal.docker(&["service", "logs", "crash"]);
    assert!(one.status.success(), "{}", stderr(&one));
    assert_eq!(
        stdout(&one).matches("boom from").count(),
        1,
        "{}",
        stdout(&one)
    );

    // The tasks leave the history with the service: the containers go.
    shoal.docker_ok(&["service", "rm", "crash"]);
    wait_for("the containers of crash removed", CONVERGE, || {
        node_containers(&node.id, &["-a"]).is_empty().then_some(())
    });
    node.leave(&shoal);
}

#[test]
fn drain_stops_the_tasks_and_active_brings_them_back() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    create(
        &shoal,
        &["--replicas", "2", "--name", "dr", IMAGE, "sleep", "1d"],
    );
    wait_engine_tasks(&shoal, &node.id, "dr", 2);
    wait_replicas(&shoal, "dr", "2/2");

    shoal.docker_ok(&["node", "update", "--availability", "drain", &node.id]);
    wait_engine_tasks(&shoal, &node.id, "dr", 0);
    wait_replicas(&shoal, "dr", "0/2");
    let pending = wait_for("2 pending tasks", CONVERGE, || {
        let ps: Vec<_> = service_ps(&shoal, "dr")
            .into_iter()
            .filter(|r| r.1 == "Running")
            .collect();
        (ps.len() == 2 && ps.iter().all(|r| r.2.starts_with("Pending"))).then_some(ps)
    });
    for row in &pending {
        assert_eq!(
            row.3, "no suitable node (1 node not available for new tasks)",
            "{pending:?}"
        );
    }

    shoal.docker_ok(&["node", "update", "--availability", "active", &node.id]);
    wait_engine_tasks(&shoal, &node.id, "dr", 2);
    wait_replicas(&shoal, "dr", "2/2");

    node.leave(&shoal);
}

#[test]
fn kill_9_of_shoal_adopts_the_same_containers() {
    let mut shoal = Shoal::start();
    let node = shoal.swarm_init();
    create(
        &shoal,
        &["--replicas", "3", "--name", "keep", IMAGE, "sleep", "1d"],
    );
    let before = wait_engine_tasks(&shoal, &node.id, "keep", 3);
    wait_replicas(&shoal, "keep", "3/3");
    let started: Vec<String> = before
        .iter()
        .map(|(id, _)| engine_inspect(id)["State"]["StartedAt"].to_string())
        .collect();

    shoal.restart(); // SIGKILL, then the same data dir

    wait_replicas(&shoal, "keep", "3/3");
    // The same containers, never restarted, nothing duplicated, for a while.
    holds_for("the same 3 containers", Duration::from_secs(3), || {
        engine_tasks(&node.id, "keep") == before && node_containers(&node.id, &["-a"]).len() == 3
    });
    for ((id, _), started) in before.iter().zip(&started) {
        let c = engine_inspect(id);
        assert_eq!(&c["State"]["StartedAt"].to_string(), started, "{id}");
        assert_eq!(c["RestartCount"], 0, "{id}");
    }
    let ps = service_ps(&shoal, "keep");
    assert_eq!(ps.len(), 3, "{ps:?}");
    assert!(ps
        .iter()
        .all(|r| r.1 == "Running" && r.2.starts_with("Running")));

    // And the agent still works after the restart.
    shoal.docker_ok(&["service", "scale", "--detach", "keep=4"]);
    let four = wait_engine_tasks(&shoal, &node.id, "keep", 4);
    assert!(before.iter().all(|t| four.contains(t)), "{four:?}");

    node.leave(&shoal);
}

#[test]
fn service_events_appear_on_the_event_stream() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    let since = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1)
    .to_string();
    let id = create(
        &shoal,
        &["--replicas", "0", "--name", "ev", IMAGE, "sleep", "1d"],
    );
    shoal.docker_ok(&["service", "update", "--detach", "--label-add", "a=b", "ev"]);
    shoal.docker_ok(&["service", "rm", "ev"]);
    let until = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1)
    .to_string();
    let out = shoal.docker_ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "type=service",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}} {{.Scope}}",
    ]);
    let ours: Vec<&str> = out.lines().filter(|l| l.contains(&id)).collect();
    assert_eq!(
        ours,
        [
            format!("service create {id} ev swarm"),
            format!("service update {id} ev swarm"),
            format!("service remove {id} ev swarm"),
        ],
        "{out}"
    );

    node.leave(&shoal);
}

#[test]
fn bad_service_requests_get_the_engines_answers() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    let resp = shoal.http("GET", "/v1.41/services/nope");
    assert_eq!(resp.status, 404, "{}", resp.text());
    assert_eq!(resp.json()["message"], "service nope not found");
    let resp = shoal.http("DELETE", "/v1.41/services/nope");
    assert_eq!(resp.status, 404, "{}", resp.text());
    assert_eq!(resp.json()["message"], "service nope not found");
    let resp = shoal.http("GET", "/v1.41/tasks/nope");
    assert_eq!(resp.status, 404, "{}", resp.text());
    assert_eq!(resp.json()["message"], "task nope not found");
    let resp = shoal.http(
        "GET",
        "/v1.41/services?filters=%7B%22foo%22%3A%5B%22bar%22%5D%7D",
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.json()["message"], "Invalid filter 'foo'");

    let out = shoal.docker(&["service", "inspect", "nope"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no such service: nope"),
        "{}",
        stderr(&out)
    );
    let out = shoal.docker(&["service", "rm", "nope"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("service nope not found"),
        "{}",
        stderr(&out)
    );

    node.leave(&shoal);
}

#[test]
fn service_logs_follow_picks_up_new_tasks() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    create(
        &shoal,
        &[
            "--name",
            "chat",
            IMAGE,
            "sh",
            "-c",
            "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done",
        ],
    );
    wait_engine_tasks(&shoal, &node.id, "chat", 1);
    let (mut child, rx) = spawn_lines(&shoal, &["service", "logs", "-f", "--tail", "1", "chat"]);
    let mut seen = Vec::new();
    let mut wait_line = |what: &str, pred: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no {what} from service logs -f within 30 s; got {} lines, the last: {:?}",
                    seen.len(),
                    seen.last()
                ),
            }
        }
    };
    wait_line("a line of slot 1", &|l: &str| l.starts_with("chat.1."));
    // A task that starts while the CLI follows joins the stream (as in swarm).
    shoal.docker_ok(&["service", "scale", "--detach", "chat=2"]);
    wait_engine_tasks(&shoal, &node.id, "chat", 2);
    wait_line("a line of slot 2", &|l: &str| {
        l.starts_with("chat.2.") && l.contains("| line ")
    });
    let _ = child.kill();
    let _ = child.wait();

    node.leave(&shoal);
}

/// The exit code a replaced task's container left, once it has shut down.
fn shutdown_exit_code(shoal: &Shoal, service: &str) -> i64 {
    wait_for(&format!("{service}'s old task shut down"), CONVERGE, || {
        let ids = shoal.docker_ok(&[
            "service",
            "ps",
            "-q",
            "--filter",
            "desired-state=shutdown",
            service,
        ]);
        let task = ids.split_whitespace().next()?.to_string();
        let out = shoal.docker_ok(&[
            "inspect",
            "--format",
            "{{.Status.State}} {{.Status.ContainerStatus.ExitCode}}",
            &task,
        ]);
        let (state, code) = out.trim().split_once(' ')?;
        (state == "shutdown").then(|| code.parse().ok())?
    })
}

/// A task is stopped with its service's stop signal; one that ignores it
/// is killed when the grace period is over.
#[test]
fn tasks_stop_with_their_stop_signal_then_sigkill_after_the_grace_period() {
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    shoal.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "usr1",
        "--stop-signal",
        "SIGUSR1",
        "--stop-grace-period",
        "60s",
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 3' USR1; while :; do sleep 0.1; done",
    ]);
    create(&shoal, &["--name", "stubborn", IMAGE, "sleep", "1d"]);
    wait_replicas(&shoal, "usr1", "1/1");
    wait_replicas(&shoal, "stubborn", "1/1");

    // Replaced tasks stay in the history, with their exit codes.
    for service in ["usr1", "stubborn"] {
        shoal.docker_ok(&["service", "update", "--detach", "--force", service]);
    }
    // The trap's exit code: SIGUSR1 arrived (SIGTERM would give 143, the
    // SIGKILL after 60 s 137).
    assert_eq!(shutdown_exit_code(&shoal, "usr1"), 3);
    // `sleep` ignores SIGTERM: killed after its 1 s.
    assert_eq!(shutdown_exit_code(&shoal, "stubborn"), 137);
    wait_replicas(&shoal, "usr1", "1/1");
    wait_replicas(&shoal, "stubborn", "1/1");

    node.leave(&shoal);
}

/// Every container of node `node` on the engine, stopped ones too:
/// (container ID, task ID, service name, running).
fn node_task_containers(node: &str) -> Vec<(String, String, String, bool)> {
    let out = ok(&engine_docker(&[
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.swarm.node.id={node}"),
        "--format",
        "{{.ID}}|{{.Label \"com.docker.swarm.task.id\"}}|{{.Label \"com.docker.swarm.service.name\"}}|{{.State}}",
    ]));
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f.len() == 4).then(|| {
                (
                    f[0].to_string(),
                    f[1].to_string(),
                    f[2].to_string(),
                    f[3] == "running",
                )
            })
        })
        .collect()
}

/// What the swarm says after a round: (service name → replicas wanted),
/// and every task it knows, with whether it should run.
fn swarm_view(shoal: &Shoal) -> Option<(HashMap<String, u64>, HashMap<String, bool>)> {
    let services = shoal.http("GET", "/v1.41/services");
    let tasks = shoal.http("GET", "/v1.41/tasks");
    if services.status != 200 || tasks.status != 200 {
        return None;
    }
    let wanted = services
        .json()
        .as_array()?
        .iter()
        .map(|s| {
            let name = s["Spec"]["Name"].as_str().unwrap_or_default().to_string();
            let n = s["Spec"]["Mode"]["Replicated"]["Replicas"]
                .as_u64()
                .unwrap_or(0);
            (name, n)
        })
        .collect();
    let tasks = tasks
        .json()
        .as_array()?
        .iter()
        .map(|t| {
            let id = t["ID"].as_str().unwrap_or_default().to_string();
            (id, t["DesiredState"] == "running")
        })
        .collect();
    Some((wanted, tasks))
}

/// Polls `cond` until it gives a value or `timeout` passes (then `None`,
/// so the caller can show what it saw).
fn wait_for_or_none<T>(timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// shoal SIGKILLed at random moments while `service create`, `update
/// --force` and `rm` are under way, then started again: once it has
/// converged, each service runs exactly its replicas, no task ever has two
/// containers, and no container is left that the swarm does not know of
/// (or that runs for a task that should not).
#[test]
fn kill_9_at_random_moments_of_create_update_and_rm_leaves_no_duplicate_or_orphan() {
    let mut shoal = Shoal::start();
    let node = shoal.swarm_init();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    eprintln!("kill moments seed {seed}");
    let mut rng = seed;
    let mut next = move |below: u64| {
        // xorshift64: enough to spread the kill moments, and reproducible
        // from the printed seed.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below
    };
    // Skip the first outputs of a small seed.
    for _ in 0..16 {
        next(2);
    }
    // Every kind of change, beside other services and on its own; a
    // change killed before it was acknowledged may not have happened, and
    // a later one on that service then fails, as it would for a user.
    let schedule = [
        ("create", "k0"),
        ("create", "k1"),
        ("update", "k0"),
        ("rm", "k1"),
        ("create", "k2"),
        ("update", "k2"),
        ("update", "k0"),
        ("rm", "k0"),
        ("create", "k3"),
        ("update", "k3"),
        ("rm", "k2"),
        ("rm", "k3"),
    ];
    let mut services: Vec<String> = Vec::new();
    for (round, (change, name)) in schedule.into_iter().enumerate() {
        let args: Vec<&str> = match change {
            "create" => vec![
                "service",
                "create",
                "--detach",
                "--stop-grace-period",
                "1s",
                "--update-parallelism",
                "0",
                "--replicas",
                "4",
                "--name",
                name,
                IMAGE,
                "sleep",
                "1d",
            ],
            "update" => vec!["service", "update", "--detach", "--force", name],
            _ => vec!["service", "rm", name],
        };
        let mut cli = shoal
            .docker_cmd()
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn docker");
        let moment = next(600);
        thread::sleep(Duration::from_millis(moment));
        shoal.restart();
        let _ = cli.wait();
        eprintln!("round {round}: {args:?}, killed after {moment} ms");

        let converged = wait_for_or_none(CONVERGE, || {
            let (wanted, tasks) = swarm_view(&shoal)?;
            let containers = node_task_containers(&node.id);
            let running =
                |service: &str| containers.iter().filter(|c| c.3 && c.2 == service).count() as u64;
            let all_run = wanted.iter().all(|(s, n)| running(s) == *n);
            let none_strays = containers
                .iter()
                .all(|c| tasks.get(&c.1).is_some_and(|run| *run || !c.3));
            (all_run && none_strays).then_some(wanted)
        });
        let containers = node_task_containers(&node.id);
        let Some(wanted) = converged else {
            panic!(
                "round {round} ({args:?}, killed after {moment} ms, seed {seed}) did not \
                 converge: swarm {:?}\ncontainers {containers:?}",
                swarm_view(&shoal)
            );
        };
        let mut per_task: HashMap<&str, usize> = HashMap::new();
        for c in &containers {
            *per_task.entry(c.1.as_str()).or_default() += 1;
        }
        assert!(
            per_task.values().all(|n| *n == 1),
            "round {round} (seed {seed}): a task with two containers: {containers:?}"
        );
        // What the CLI was told may have been lost with the kill; the swarm
        // decides what exists, and the test follows it.
        services = wanted.keys().cloned().collect();
        services.sort();
    }
    for s in &services {
        shoal.docker_ok(&["service", "rm", s]);
    }
    wait_for("every task container removed", CONVERGE, || {
        node_task_containers(&node.id).is_empty().then_some(())
    });
    node.leave(&shoal);
}
