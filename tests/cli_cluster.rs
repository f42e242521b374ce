//! Many hosts, one swarm: simulated hosts ([`common::hosts`]), each with its
//! own engine and shoal, joined with tokens through the unmodified docker
//! CLI. What a user sees: `node ls` on every manager, services spread over
//! the engines, the engine's refusals, promote/demote/leave/rm, a restarted
//! manager rejoining from its data dir.
//!
//! Needs root (skipped without it, unless SHOAL_REQUIRE_HOSTS=1 as in CI).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Output};
use std::time::Duration;

use common::hosts::{Host, Hosts};
use common::*;

/// How long cluster-wide changes may take to show (joins, schedules,
/// role changes); every wait ends as soon as its condition holds.
const CONVERGE: Duration = Duration::from_secs(60);

const WORKER_REFUSAL: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";

fn cluster_addr(h: &Host) -> String {
    format!("{}:2377", h.ip)
}

fn node_id(h: &Host) -> String {
    h.docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"])
        .trim()
        .to_string()
}

fn init(h: &Host) {
    h.docker_ok(&["swarm", "init", "--advertise-addr", &h.ip.to_string()]);
}

fn token(manager: &Host, role: &str) -> String {
    manager
        .docker_ok(&["swarm", "join-token", "-q", role])
        .trim()
        .to_string()
}

fn join(h: &Host, token: &str, manager: &Host) -> Output {
    h.docker(&[
        "swarm",
        "join",
        "--token",
        token,
        "--advertise-addr",
        &h.ip.to_string(),
        &cluster_addr(manager),
    ])
}

fn join_ok(h: &Host, token: &str, manager: &Host) -> String {
    let out = join(h, token, manager);
    assert!(
        out.status.success(),
        "join of {}: {}{}",
        h.name,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// `node ls` as (hostname, status, manager status) rows, sorted.
fn node_rows(h: &Host) -> Option<Vec<(String, String, String)>> {
    let out = h.docker(&[
        "node",
        "ls",
        "--format",
        "{{.Hostname}}|{{.Status}}|{{.ManagerStatus}}",
    ]);
    if !out.status.success() {
        return None;
    }
    let mut rows: Vec<(String, String, String)> = stdout(&out)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split('|');
            Some((
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                parts.next()?.to_string(),
            ))
        })
        .collect();
    rows.sort();
    Some(rows)
}

/// Task containers of `service` running on each host's own engine.
fn running_per_host(hosts: &Hosts, service: &str) -> HashMap<String, usize> {
    hosts
        .iter()
        .map(|h| {
            let out = h.engine_docker(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.swarm.service.name={service}"),
            ]);
            (h.name.clone(), stdout(&out).lines().count())
        })
        .collect()
}

fn fails_with(h: &Host, args: &[&str], text: &str) {
    let out = h.docker(args);
    assert!(!out.status.success(), "{args:?} on {} succeeded", h.name);
    assert!(
        stderr(&out).contains(text),
        "{args:?} on {}: expected {text:?} in {}",
        h.name,
        stderr(&out)
    );
}

#[test]
fn three_managers_and_two_workers_run_one_swarm() {
    let Some(hosts) = Hosts::try_start(5) else {
        return;
    };
    let (h1, h2, h3, h4, h5) = (
        hosts.host(1),
        hosts.host(2),
        hosts.host(3),
        hosts.host(4),
        hosts.host(5),
    );
    init(h1);
    let manager_token = token(h1, "manager");
    let worker_token = token(h1, "worker");
    assert!(join_ok(h2, &manager_token, h1).contains("This node joined a swarm as a manager."));
    // A manager joins through a follower too.
    assert!(join_ok(h3, &manager_token, h2).contains("This node joined a swarm as a manager."));
    assert!(join_ok(h4, &worker_token, h1).contains("This node joined a swarm as a worker."));
    assert!(join_ok(h5, &worker_token, h3).contains("This node joined a swarm as a worker."));

    // Every manager lists the same five nodes: one leader, two reachable.
    let expected: Vec<(String, String, String)> = {
        let mut rows: Vec<_> = [
            (h1, "Leader"),
            (h2, "Reachable"),
            (h3, "Reachable"),
            (h4, ""),
            (h5, ""),
        ]
        .iter()
        .map(|(h, m)| (h.hostname.clone(), "Ready".to_string(), m.to_string()))
        .collect();
        rows.sort();
        rows
    };
    for h in [h1, h2, h3] {
        let rows = wait_for(&format!("node ls on {}", h.name), CONVERGE, || {
            node_rows(h).filter(|rows| *rows == expected)
        });
        assert_eq!(rows, expected);
    }
    let inspect = h1.docker_ok(&[
        "node",
        "inspect",
        &node_id(h2),
        "--format",
        "{{.ManagerStatus.Addr}} {{.Description.Hostname}} {{.Description.Engine.EngineVersion}}",
    ]);
    assert!(
        inspect.starts_with(&format!("{} {} ", cluster_addr(h2), h2.hostname)),
        "{inspect}"
    );

    // A worker refuses manager calls, and says so in `docker info`.
    fails_with(h4, &["node", "ls"], WORKER_REFUSAL);
    fails_with(h4, &["service", "ls"], WORKER_REFUSAL);
    let info = h4.docker_ok(&[
        "info",
        "--format",
        "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
    ]);
    assert_eq!(info.trim(), "active false");

    // A 10-replica service created through a follower runs on the engines
    // of at least four hosts, and `service ps` names their nodes.
    h2.docker_ok(&[
        "service",
        "create",
        "--quiet",
        "--name",
        "web",
        "--replicas",
        "10",
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sh",
        "-c",
        "echo hello from $(hostname); exec sleep 1000",
    ]);
    let spread = wait_for("10 web tasks running", CONVERGE, || {
        let per_host = running_per_host(&hosts, "web");
        (per_host.values().sum::<usize>() == 10).then_some(per_host)
    });
    let used = spread.values().filter(|&&n| n > 0).count();
    assert!(used >= 4, "tasks on only {used} hosts: {spread:?}");
    let ps_nodes: BTreeSet<String> = h3
        .docker_ok(&["service", "ps", "web", "--format", "{{.Node}}"])
        .lines()
        .map(str::to_string)
        .collect();
    let hostnames: BTreeSet<String> = hosts.iter().map(|h| h.hostname.clone()).collect();
    assert!(ps_nodes.is_subset(&hostnames), "{ps_nodes:?}");
    assert!(ps_nodes.len() >= 4, "{ps_nodes:?}");

    // `service logs` gathers every task's lines, from every node's engine.
    let logs = wait_for("logs of all 10 tasks", CONVERGE, || {
        let out = h1.docker(&["service", "logs", "--raw", "web"]);
        let text = stdout(&out);
        (text.matches("hello from").count() == 10).then_some(text)
    });
    assert_eq!(logs.matches("hello from").count(), 10, "{logs}");

    // A secret reaches only the node that runs a task using it.
    let mut create = h1.docker_cmd();
    create.args(["secret", "create", "pass", "-"]);
    let out = run(create, Some(b"s3cr3t-shoal-value"), CMD_TIMEOUT);
    assert!(out.status.success(), "secret create: {}", stderr(&out));
    h1.docker_ok(&[
        "service",
        "create",
        "--quiet",
        "--name",
        "vault",
        "--secret",
        "pass",
        "--constraint",
        &format!("node.hostname=={}", h5.hostname),
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let container = wait_for("the vault task on h5", CONVERGE, || {
        let out = h5.engine_docker(&[
            "ps",
            "-q",
            "--filter",
            "label=com.docker.swarm.service.name=vault",
        ]);
        stdout(&out).lines().next().map(str::to_string)
    });
    let read = h5.engine_docker_ok(&["exec", &container, "cat", "/run/secrets/pass"]);
    assert_eq!(read, "s3cr3t-shoal-value");
    for h in [h1, h2, h3, h4] {
        let dir = std::path::Path::new("/run/shoal").join(node_id(h));
        let found = Command::new("grep")
            .args(["-r", "-l", "s3cr3t-shoal-value"])
            .arg(&dir)
            .output()
            .expect("grep");
        assert!(
            stdout(&found).trim().is_empty(),
            "{} holds the secret: {}",
            h.name,
            stdout(&found)
        );
    }

    h1.docker_ok(&["service", "rm", "web", "vault"]);
    wait_for("no task containers left", CONVERGE, || {
        let left: usize = running_per_host(&hosts, "web").values().sum::<usize>()
            + running_per_host(&hosts, "vault").values().sum::<usize>();
        (left == 0).then_some(())
    });
}

/// The cluster port, raw: curl with a node's own certificate, or none.
fn curl_cluster(target: &Host, path: &str, cert_of: Option<&Host>) -> Output {
    let ca = target.dir.join("data/swarm/ca.pem");
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "--http2",
        "-X",
        "POST",
        "-d",
        "{}",
    ])
    .arg("--cacert")
    .arg(&ca)
    .args([
        "--resolve",
        &format!("swarm-manager:2377:{}", target.ip),
        &format!("https://swarm-manager:2377{path}"),
    ]);
    if let Some(h) = cert_of {
        cmd.arg("--cert")
            .arg(h.dir.join("data/swarm/node.crt"))
            .arg("--key")
            .arg(h.dir.join("data/swarm/node.key"));
    }
    run(cmd, None, Duration::from_secs(20))
}

#[test]
fn wrong_tokens_plain_tcp_and_worker_certificates_are_refused() {
    let Some(hosts) = Hosts::try_start(3) else {
        return;
    };
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    init(h1);
    let worker_token = token(h1, "worker");

    // A token with the right CA digest but a wrong secret.
    let (digest, _) = worker_token.rsplit_once('-').expect("token");
    let wrong_secret = format!("{digest}-{}", "0".repeat(25));
    let out = join(h2, &wrong_secret, h1);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("A valid join token is necessary to join this cluster"),
        "{}",
        stderr(&out)
    );
    // A token whose digest is not this swarm's CA.
    let (_, secret) = worker_token.rsplit_once('-').expect("token");
    let wrong_ca = format!("SWMTKN-1-{}-{secret}", "1".repeat(50));
    let out = join(h2, &wrong_ca, h1);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("remote CA does not match fingerprint"),
        "{}",
        stderr(&out)
    );
    // A malformed token never leaves the node.
    let out = join(h2, "SWMTKN-1-nope", h1);
    assert!(
        stderr(&out).contains("invalid join token"),
        "{}",
        stderr(&out)
    );
    // Nothing joined: h2 is still out of any swarm.
    let state = h2.docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    assert_eq!(state.trim(), "inactive");

    // A rotated token no longer admits anyone.
    h1.docker_ok(&["swarm", "join-token", "--rotate", "worker"]);
    let out = join(h2, &worker_token, h1);
    assert!(
        stderr(&out).contains("A valid join token is necessary to join this cluster"),
        "{}",
        stderr(&out)
    );
    join_ok(h3, &token(h1, "worker"), h1);

    // Plain TCP (no TLS) to the cluster port: nothing answers in HTTP.
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--http1.1"])
        .arg(format!("http://{}/ca", cluster_addr(h1)))
        .output()
        .expect("curl");
    assert!(
        !plain.status.success(),
        "plain HTTP answered: {}",
        stdout(&plain)
    );
    // Without a certificate only the join calls answer.
    let out = curl_cluster(h1, "/raft/propose", None);
    assert!(
        stdout(&out).contains("a node certificate of this swarm is required"),
        "{}",
        stdout(&out)
    );
    // (Asked again when a call fails on a loaded machine: curl says why.)
    wait_for("the root CA without a certificate", CONVERGE, || {
        let ca = curl_cluster(h1, "/ca", None);
        let shown = stdout(&ca).contains("BEGIN CERTIFICATE");
        if !shown {
            eprintln!("/ca: {}{}", stdout(&ca), stderr(&ca));
        }
        shown.then_some(())
    });
    // A worker's certificate opens no manager call.
    let out = curl_cluster(h1, "/raft/propose", Some(h3));
    assert!(
        stdout(&out).contains("is not a manager: this call is for managers only"),
        "{}",
        stdout(&out)
    );
    // And the manager keeps serving.
    let rows = node_rows(h1).expect("node ls");
    assert_eq!(rows.len(), 2, "{rows:?}");
}

#[test]
fn promote_demote_drain_labels_leave_rm_and_a_restarted_manager() {
    let Some(hosts) = Hosts::try_start(3) else {
        return;
    };
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    init(h1);
    join_ok(h2, &token(h1, "manager"), h1);
    join_ok(h3, &token(h1, "worker"), h1);
    let (id2, id3) = (node_id(h2), node_id(h3));

    // promote: the worker becomes a reachable manager and answers manager calls.
    h1.docker_ok(&["node", "promote", &id3]);
    wait_for("h3 promoted", CONVERGE, || {
        node_rows(h3).filter(|rows| {
            rows.iter()
                .any(|r| r.0 == h3.hostname && r.2 == "Reachable")
        })
    });
    // A restarted manager (kill -9) rejoins from its data dir: it sees a
    // service created while it was away.
    h3.kill_shoal();
    h1.docker_ok(&[
        "service",
        "create",
        "--quiet",
        "--name",
        "while-away",
        "--replicas",
        "0",
        IMAGE,
        "true",
    ]);
    h3.start_shoal();
    wait_for("h3 back with the new service", CONVERGE, || {
        let out = h3.docker(&["service", "ls", "--format", "{{.Name}}"]);
        stdout(&out).contains("while-away").then_some(())
    });

    // demote: a manager becomes a worker and refuses manager calls.
    h3.docker_ok(&["node", "demote", &id2]);
    wait_for("h2 demoted", CONVERGE, || {
        let out = h2.docker(&["node", "ls"]);
        stderr(&out).contains(WORKER_REFUSAL).then_some(())
    });
    let rows = wait_for("h2 listed as a worker", CONVERGE, || {
        node_rows(h1).filter(|rows| rows.iter().any(|r| r.0 == h2.hostname && r.2.is_empty()))
    });
    assert!(rows.iter().any(|r| r.2 == "Leader"), "{rows:?}");

    // labels + constraints: every task lands on the labelled node.
    h1.docker_ok(&["node", "update", "--label-add", "zone=blue", &id2]);
    h1.docker_ok(&[
        "service",
        "create",
        "--quiet",
        "--name",
        "blue",
        "--replicas",
        "3",
        "--constraint",
        "node.labels.zone==blue",
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sleep",
        "1000",
    ]);
    wait_for("3 blue tasks on h2", CONVERGE, || {
        let per_host = running_per_host(&hosts, "blue");
        (per_host.get(&h2.name) == Some(&3)).then_some(())
    });
    assert_eq!(running_per_host(&hosts, "blue").values().sum::<usize>(), 3);
    h1.docker_ok(&["service", "rm", "blue"]);

    // drain: a drained node's tasks move away.
    h1.docker_ok(&[
        "service",
        "create",
        "--quiet",
        "--name",
        "spread",
        "--replicas",
        "3",
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sleep",
        "1000",
    ]);
    wait_for("3 spread tasks", CONVERGE, || {
        (running_per_host(&hosts, "spread").values().sum::<usize>() == 3).then_some(())
    });
    h1.docker_ok(&["node", "update", "--availability", "drain", &id2]);
    wait_for("nothing left on drained h2", CONVERGE, || {
        let per_host = running_per_host(&hosts, "spread");
        (per_host.get(&h2.name) == Some(&0) && per_host.values().sum::<usize>() == 3).then_some(())
    });

    // leave: a worker leaves freely, shows down, then `node rm` works.
    h1.docker_ok(&["service", "rm", "spread", "while-away"]);
    h2.docker_ok(&["swarm", "leave"]);
    wait_for("h2 down", CONVERGE, || {
        node_rows(h1).filter(|rows| rows.iter().any(|r| r.0 == h2.hostname && r.1 == "Down"))
    });
    h1.docker_ok(&["node", "rm", &id2]);
    let rows = node_rows(h1).expect("node ls");
    assert!(rows.iter().all(|r| r.0 != h2.hostname), "{rows:?}");
    // A manager cannot be removed while it is one.
    fails_with(
        h1,
        &["node", "rm", "--force", &id3],
        "is a cluster manager and is a member of the raft cluster",
    );
}

#[test]
fn a_dead_worker_is_marked_down_its_tasks_move_and_it_comes_back_clean() {
    let Some(hosts) = Hosts::try_start(3) else {
        return;
    };
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    init(h1);
    join_ok(h2, &token(h1, "worker"), h1);
    join_ok(h3, &token(h1, "worker"), h1);
    h1.docker_ok(&[
        "service",
        "create",
        "--quiet",
        "--name",
        "web",
        "--replicas",
        "6",
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sleep",
        "1000",
    ]);
    wait_for("6 tasks over 3 hosts", CONVERGE, || {
        let per_host = running_per_host(&hosts, "web");
        (per_host.values().sum::<usize>() == 6 && per_host.get(&h3.name) > Some(&0)).then_some(())
    });

    // The whole host dies (shoal, engine, containers).
    h3.kill();
    wait_for("h3 down", CONVERGE, || {
        node_rows(h1).filter(|rows| rows.iter().any(|r| r.0 == h3.hostname && r.1 == "Down"))
    });
    // Its tasks run elsewhere: six on the two live engines.
    wait_for("6 tasks on h1 and h2", CONVERGE, || {
        let per_host = running_per_host(&hosts, "web");
        let live = per_host.get(&h1.name).copied().unwrap_or(0)
            + per_host.get(&h2.name).copied().unwrap_or(0);
        (live == 6).then_some(())
    });
    let replicas = h1.docker_ok(&[
        "service",
        "ls",
        "--filter",
        "name=web",
        "--format",
        "{{.Replicas}}",
    ]);
    assert_eq!(replicas.trim(), "6/6");

    // Back: ready again, and its old tasks' containers are stopped (kept,
    // exited, while their tasks are in the task history, as the engine
    // keeps them for `service logs`).
    h3.start();
    wait_for("h3 ready", CONVERGE, || {
        node_rows(h1).filter(|rows| rows.iter().any(|r| r.0 == h3.hostname && r.1 == "Ready"))
    });
    wait_for("no stale task container running on h3", CONVERGE, || {
        let out = h3.engine_docker(&[
            "ps",
            "-q",
            "--filter",
            "label=com.docker.swarm.service.name=web",
        ]);
        stdout(&out).trim().is_empty().then_some(())
    });
    assert_eq!(running_per_host(&hosts, "web").values().sum::<usize>(), 6);
    h1.docker_ok(&["service", "rm", "web"]);
}

#[test]
fn killing_the_leader_elects_another_and_loses_no_acknowledged_write() {
    let Some(hosts) = Hosts::try_start(3) else {
        return;
    };
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    init(h1);
    join_ok(h2, &token(h1, "manager"), h1);
    join_ok(h3, &token(h1, "manager"), h1);
    for i in 0..5 {
        h1.docker_ok(&["config", "create", &format!("before-{i}"), "/etc/hostname"]);
    }
    h1.kill_shoal();
    // A surviving manager accepts writes again (no fixed delay: as soon as
    // a new leader is elected).
    wait_for("a write accepted on h2", CONVERGE, || {
        h2.docker(&["config", "create", "after", "/etc/hostname"])
            .status
            .success()
            .then_some(())
    });
    let rows = wait_for("h2 or h3 leads, h1 down", CONVERGE, || {
        node_rows(h3).filter(|rows| {
            rows.iter().any(|r| r.2 == "Leader" && r.0 != h1.hostname)
                && rows.iter().any(|r| r.0 == h1.hostname && r.1 == "Down")
        })
    });
    assert_eq!(rows.len(), 3, "{rows:?}");
    // The old leader comes back as a follower and has every write.
    h1.start_shoal();
    let names = wait_for("h1 caught up", CONVERGE, || {
        let out = h1.docker(&["config", "ls", "--format", "{{.Name}}"]);
        let names: BTreeSet<String> = stdout(&out).lines().map(str::to_string).collect();
        (names.len() == 6).then_some(names)
    });
    for i in 0..5 {
        assert!(names.contains(&format!("before-{i}")), "{names:?}");
    }
    wait_for("h1 ready again", CONVERGE, || {
        node_rows(h2).filter(|rows| rows.iter().all(|r| r.1 == "Ready"))
    });
}

#[test]
fn a_cut_off_worker_loses_its_tasks_and_gets_them_back_when_healed() {
    let Some(hosts) = Hosts::try_start(2) else {
        return;
    };
    let (h1, h2) = (hosts.host(1), hosts.host(2));
    init(h1);
    join_ok(h2, &token(h1, "worker"), h1);
    h1.docker_ok(&[
        "service",
        "create",
        "--quiet",
        "--name",
        "web",
        "--replicas",
        "4",
        "--constraint",
        "node.role==worker",
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sleep",
        "1000",
    ]);
    wait_for("4 tasks on the worker", CONVERGE, || {
        (running_per_host(&hosts, "web").get(&h2.name) == Some(&4)).then_some(())
    });
    // The worker's link goes down: it is marked down; with no other worker
    // its tasks wait for a suitable node.
    h2.cut();
    wait_for("h2 down", CONVERGE, || {
        node_rows(h1).filter(|rows| rows.iter().any(|r| r.0 == h2.hostname && r.1 == "Down"))
    });
    wait_for("web 0/4", CONVERGE, || {
        let out = h1.docker(&[
            "service",
            "ls",
            "--filter",
            "name=web",
            "--format",
            "{{.Replicas}}",
        ]);
        (stdout(&out).trim() == "0/4").then_some(())
    });
    // Healed: its old tasks' containers stop and 4 new tasks run there.
    h2.heal();
    wait_for("4 tasks running again on h2", CONVERGE, || {
        let out = h1.docker(&[
            "service",
            "ls",
            "--filter",
            "name=web",
            "--format",
            "{{.Replicas}}",
        ]);
        let all_ready = node_rows(h1).is_some_and(|rows| rows.iter().all(|r| r.1 == "Ready"));
        (stdout(&out).trim() == "4/4" && all_ready).then_some(())
    });
    wait_for("only 4 web containers running on h2", CONVERGE, || {
        (running_per_host(&hosts, "web").get(&h2.name) == Some(&4)).then_some(())
    });
    h1.docker_ok(&["service", "rm", "web"]);
}

#[test]
fn a_manager_cut_off_from_the_majority_refuses_writes_and_catches_up() {
    let Some(hosts) = Hosts::try_start(3) else {
        return;
    };
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    init(h1);
    join_ok(h2, &token(h1, "manager"), h1);
    join_ok(h3, &token(h1, "manager"), h1);
    // Reads from its store; writes refused with the engine's text; the
    // majority carries on.
    h3.cut();
    let refused = wait_for("h3 refuses writes", CONVERGE, || {
        let out = h3.docker(&["config", "create", "cut-off", "/etc/hostname"]);
        (!out.status.success()).then(|| stderr(&out))
    });
    assert!(
        refused.contains("The swarm does not have a leader"),
        "{refused}"
    );
    assert!(
        h3.docker(&["service", "ls"]).status.success(),
        "reads on h3"
    );
    wait_for("the majority takes writes", CONVERGE, || {
        h1.docker(&["config", "create", "majority", "/etc/hostname"])
            .status
            .success()
            .then_some(())
    });
    h3.heal();
    wait_for("h3 has the majority's write", CONVERGE, || {
        let out = h3.docker(&["config", "ls", "--format", "{{.Name}}"]);
        stdout(&out).contains("majority").then_some(())
    });
}

/// Busy loops on every core while they live.
struct BusyCores(Vec<std::process::Child>);

impl BusyCores {
    fn start() -> BusyCores {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        BusyCores(
            (0..cores)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("spawn a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn busy_hosts_are_never_marked_down() {
    let Some(hosts) = Hosts::try_start(3) else {
        return;
    };
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    init(h1);
    join_ok(h2, &token(h1, "manager"), h1);
    join_ok(h3, &token(h1, "worker"), h1);
    wait_for("all ready", CONVERGE, || {
        node_rows(h1).filter(|rows| rows.len() == 3 && rows.iter().all(|r| r.1 == "Ready"))
    });
    let busy = BusyCores::start();
    // Watch for several times the down-marking grace with every core
    // saturated: no node may change state.
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_secs(15) {
        let rows = node_rows(h1).expect("node ls");
        assert!(
            rows.iter().all(|r| r.1 == "Ready"),
            "a busy node changed state: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(busy);
}

#[test]
fn lost_quorum_is_recovered_with_force_new_cluster() {
    let Some(hosts) = Hosts::try_start(3) else {
        return;
    };
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    init(h1);
    join_ok(h2, &token(h1, "manager"), h1);
    join_ok(h3, &token(h1, "manager"), h1);
    h1.docker_ok(&["config", "create", "kept", "/etc/hostname"]);
    h2.kill_shoal();
    h3.kill_shoal();
    // Two of three managers gone: no quorum, writes refused.
    let refused = wait_for("h1 refuses writes", CONVERGE, || {
        let out = h1.docker(&["config", "create", "no-quorum", "/etc/hostname"]);
        (!out.status.success()).then(|| stderr(&out))
    });
    assert!(
        refused.contains("The swarm does not have a leader"),
        "{refused}"
    );

    let out = h1.docker_ok(&[
        "swarm",
        "init",
        "--force-new-cluster",
        "--advertise-addr",
        &h1.ip.to_string(),
    ]);
    assert!(out.contains("is now a manager"), "{out}");
    h1.docker_ok(&["config", "create", "after", "/etc/hostname"]);
    let names = h1.docker_ok(&["config", "ls", "--format", "{{.Name}}"]);
    assert!(names.contains("kept") && names.contains("after"), "{names}");
    let rows = wait_for("h2 and h3 unreachable", CONVERGE, || {
        node_rows(h1).filter(|rows| {
            rows.iter()
                .filter(|r| r.0 != h1.hostname)
                .all(|r| r.1 == "Down" && r.2 == "Unreachable")
        })
    });
    assert!(
        rows.iter().any(|r| r.0 == h1.hostname && r.2 == "Leader"),
        "{rows:?}"
    );

    // A former manager rejoins: leave, then join with a token.
    h2.start_shoal();
    h2.docker_ok(&["swarm", "leave", "--force"]);
    join_ok(h2, &token(h1, "manager"), h1);
    wait_for("h2 reachable again", CONVERGE, || {
        node_rows(h1).filter(|rows| {
            rows.iter()
                .any(|r| r.0 == h2.hostname && r.1 == "Ready" && r.2 == "Reachable")
        })
    });
}

/// The manager that leads now, as `from` sees it.
fn leader_of<'a>(hosts: &'a Hosts, from: &Host) -> Option<&'a Host> {
    let rows = node_rows(from)?;
    let name = rows.into_iter().find(|r| r.2 == "Leader")?.0;
    hosts.iter().find(|h| h.hostname == name)
}

#[test]
fn leader_kills_in_a_loop_under_writes_lose_no_acknowledged_write() {
    let Some(hosts) = Hosts::try_start(3) else {
        return;
    };
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    init(h1);
    join_ok(h2, &token(h1, "manager"), h1);
    join_ok(h3, &token(h1, "manager"), h1);
    let managers = [h1, h2, h3];
    let stop = std::sync::atomic::AtomicBool::new(false);
    let acknowledged = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        // A steady writer: each write goes to the next manager; a name is
        // recorded only once a manager acknowledged it.
        scope.spawn(|| {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("w{n}");
                let h = managers[n % 3];
                if h.shoal_running() {
                    let out = h.docker(&["config", "create", &name, "/etc/hostname"]);
                    if out.status.success() {
                        acknowledged.lock().unwrap().push(name);
                    }
                }
                n += 1;
            }
        });
        for round in 0..3 {
            let survivor = managers
                .iter()
                .find(|h| h.shoal_running())
                .copied()
                .unwrap();
            let leader = wait_for("a leader", CONVERGE, || leader_of(&hosts, survivor));
            let before = acknowledged.lock().unwrap().len();
            leader.kill_shoal();
            // Writes are acknowledged again after the kill (a new leader).
            wait_for(&format!("writes after kill {round}"), CONVERGE, || {
                (acknowledged.lock().unwrap().len() > before + 3).then_some(())
            });
            leader.start_shoal();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(acknowledged.len() > 10, "{acknowledged:?}");
    for h in managers {
        let names = wait_for(&format!("{} has every write", h.name), CONVERGE, || {
            let out = h.docker(&["config", "ls", "--format", "{{.Name}}"]);
            let names: BTreeSet<String> = stdout(&out).lines().map(str::to_string).collect();
            acknowledged
                .iter()
                .all(|a| names.contains(a))
                .then_some(names)
        });
        assert!(acknowledged.iter().all(|a| names.contains(a)));
    }
}

#[test]
fn swarm_ca_rotate_gives_every_node_a_certificate_from_the_new_root() {
    let Some(hosts) = Hosts::try_start(3) else {
        return;
    };
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    init(h1);
    join_ok(h2, &token(h1, "manager"), h1);
    join_ok(h3, &token(h1, "worker"), h1);
    let old_root = h1.docker_ok(&["swarm", "ca"]);
    assert!(old_root.contains("BEGIN CERTIFICATE"), "{old_root}");
    let old_token = token(h1, "worker");

    // The CLI waits until every node has a certificate from the new root,
    // then prints it.
    let rotated = h2.docker_ok(&["swarm", "ca", "--rotate"]);
    let new_root = h1.docker_ok(&["swarm", "ca"]);
    assert_ne!(new_root, old_root);
    assert!(rotated.contains(new_root.trim()), "{rotated}");
    let issuer = |h: &Host| {
        h1.docker_ok(&[
            "node",
            "inspect",
            &node_id(h),
            "--format",
            "{{.Description.TLSInfo.CertIssuerPublicKey}}",
        ])
    };
    let cluster_issuer = h1.docker_ok(&[
        "info",
        "--format",
        "{{.Swarm.Cluster.TLSInfo.CertIssuerPublicKey}}",
    ]);
    for h in [h1, h2, h3] {
        assert_eq!(issuer(h), cluster_issuer, "{}", h.name);
    }
    // The tokens carry the new root's digest; the old one admits no one.
    let new_token = token(h1, "worker");
    assert_ne!(new_token, old_token);

    // Every node still works with its new certificate: a service spreads
    // over all three engines through the worker's session.
    h1.docker_ok(&[
        "service",
        "create",
        "--quiet",
        "--name",
        "after-rotation",
        "--replicas",
        "3",
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sleep",
        "1000",
    ]);
    wait_for("a task on every host", CONVERGE, || {
        let per_host = running_per_host(&hosts, "after-rotation");
        per_host.values().all(|&n| n == 1).then_some(())
    });
    h1.docker_ok(&["service", "rm", "after-rotation"]);
}
