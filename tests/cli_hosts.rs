//! The multi-host harness ([`common::hosts`]) proves itself with what shoal
//! already does on one node: separate hostnames and engines, a network between
//! the hosts, a one-node swarm on one of them, a whole-host kill, and a
//! teardown that leaves nothing behind.
//!
//! Needs root (the tests skip without it, unless SHOAL_REQUIRE_HOSTS=1).

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::hosts::{Host, Hosts};
use common::*;

/// `docker run [--rm|-d] --network host busybox sh -c <script>` through
/// `h`'s shoal: a shell in the host's own network namespace.
fn host_shell(h: &Host, mode: &str, script: &str) -> std::process::Output {
    let args = [mode, "--network", "host", IMAGE, "sh", "-c", script];
    h.docker(&[&["run"], &args[..]].concat())
}

/// `ping` from inside `from` to every address in `to`; true if every one answers.
fn pings(from: &Host, to: &[String]) -> bool {
    let script = format!(
        "for ip in {}; do ping -c 1 -W 2 $ip >/dev/null || exit 1; done",
        to.join(" ")
    );
    host_shell(from, "--rm", &script).status.success()
}

#[test]
fn hosts_have_their_own_names_and_engines_and_reach_each_other() {
    let Some(hosts) = Hosts::try_start(3) else {
        return;
    };
    let mut engine_ids = HashSet::new();
    for h in hosts.iter() {
        let name = h.docker_ok(&["info", "--format", "{{.Name}}"]);
        assert_eq!(
            name.trim(),
            h.hostname,
            "docker info through {}'s shoal",
            h.name
        );
        let id = h.engine_docker_ok(&["info", "--format", "{{.ID}}"]);
        assert!(
            engine_ids.insert(id.trim().to_string()),
            "{} repeats an engine ID: {id}",
            h.name
        );
        let out = h.docker_ok(&["run", "--rm", IMAGE, "echo", "hi"]);
        assert_eq!(out.trim(), "hi", "docker run on {}", h.name);
    }
    let ips: Vec<String> = hosts.iter().map(|h| h.ip.to_string()).collect();
    for h in hosts.iter() {
        assert!(
            pings(h, &ips),
            "{} cannot ping every host in {ips:?}",
            h.name
        );
    }

    // Any TCP port, host to host and from the test process.
    let (h1, h3) = (hosts.host(1), hosts.host(3));
    ok(&host_shell(h3, "-d", "nc -ll -p 7000 -e echo hello"));
    let h3_port = SocketAddr::from((h3.ip, 7000));
    let greeting = wait_for("h3 to listen on port 7000", Duration::from_secs(30), || {
        let mut conn = TcpStream::connect_timeout(&h3_port, Duration::from_secs(2)).ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        Some(text)
    });
    assert_eq!(
        greeting.trim(),
        "hello",
        "from {h3_port} to the test process"
    );
    let out = ok(&host_shell(h1, "--rm", &format!("nc -w 2 {} 7000", h3.ip)));
    assert_eq!(out.trim(), "hello", "from {h3_port} to {}", h1.name);
}

#[test]
fn a_cut_host_is_unreachable_until_healed() {
    let Some(hosts) = Hosts::try_start(2) else {
        return;
    };
    let (h1, h2) = (hosts.host(1), hosts.host(2));
    let h2_ip = [h2.ip.to_string()];
    h2.cut();
    assert!(
        !pings(h1, &h2_ip),
        "{} still reaches a cut {}",
        h1.name,
        h2.name
    );
    h2.heal();
    wait_for(
        "the healed host to answer ping",
        Duration::from_secs(30),
        || pings(h1, &h2_ip).then_some(()),
    );
}

#[test]
fn shoal_restarts_on_its_data_dir() {
    let Some(hosts) = Hosts::try_start(1) else {
        return;
    };
    let h = hosts.host(1);
    h.docker_ok(&["swarm", "init", "--advertise-addr", &h.ip.to_string()]);
    let node = h.docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]);
    assert!(h.stop_shoal().success(), "shoal's exit after SIGTERM");
    h.start_shoal();
    assert_eq!(
        h.docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]),
        node
    );
    h.kill_shoal();
    assert!(!h.shoal_running());
    h.start_shoal();
    assert_eq!(
        h.docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]),
        node
    );
}

/// `docker service ls` shows `replicas` for the service named `name`.
fn service_replicas(h: &Host, name: &str) -> String {
    h.docker_ok(&[
        "service",
        "ls",
        "--filter",
        &format!("name={name}"),
        "--format",
        "{{.Replicas}}",
    ])
    .trim()
    .to_string()
}

#[test]
fn a_service_converges_on_one_host_and_a_killed_host_leaves_nothing_running() {
    let Some(hosts) = Hosts::try_start(2) else {
        return;
    };
    let (h1, h2) = (hosts.host(1), hosts.host(2));
    h1.docker_ok(&["swarm", "init", "--advertise-addr", &h1.ip.to_string()]);
    let create = format!(
        "service create --detach --name sleeper --replicas 2 --stop-grace-period 1s {IMAGE} sleep 1000"
    );
    h1.docker_ok(&create.split(' ').collect::<Vec<_>>());
    wait_for("service sleeper at 2/2", Duration::from_secs(60), || {
        (service_replicas(h1, "sleeper") == "2/2").then_some(())
    });
    let running = h1.engine_docker_ok(&["ps", "-q"]);
    assert_eq!(
        running.lines().count(),
        2,
        "containers on {}'s engine",
        h1.name
    );

    h1.kill();
    assert_eq!(
        h1.processes(),
        Vec::<u32>::new(),
        "processes of a killed host"
    );
    assert!(!h1.shoal_running());
    assert!(
        !h1.docker(&["info"]).status.success(),
        "a killed host still answers"
    );
    // The other host is untouched.
    h2.docker_ok(&["run", "--rm", IMAGE, "true"]);

    // And the killed one boots again on its own files.
    h1.start();
    assert_eq!(
        h1.docker_ok(&["info", "--format", "{{.Name}}"]).trim(),
        h1.hostname
    );
}

#[test]
fn teardown_leaves_nothing_behind() {
    let Some(first) = Hosts::try_start(2) else {
        return;
    };
    // Something of everything: containers (mounts, shims, cgroups) on both hosts.
    for h in first.iter() {
        h.docker_ok(&["run", "-d", IMAGE, "sleep", "1000"]);
    }
    let footprint = first.footprint();
    // The check sees each kind of thing a live instance holds, so an empty
    // list after drop means none is left, not that the check is blind.
    let live = footprint.leftovers();
    for kind in [
        "iptables -t filter",
        "iptables -t nat",
        "netns",
        "link",
        "cgroup",
        "process",
        "mount",
        "file",
    ] {
        assert!(
            live.iter().any(|l| l.starts_with(kind)),
            "no {kind} in the footprint of a live instance: {live:#?}"
        );
    }
    // A second instance runs meanwhile: teardown of the first must not touch it.
    let Some(second) = Hosts::try_start(1) else {
        return;
    };
    drop(first);
    assert_eq!(footprint.leftovers(), Vec::<String>::new());
    let h = second.host(1);
    assert_eq!(
        h.docker_ok(&["run", "--rm", IMAGE, "echo", "still"]).trim(),
        "still"
    );
}
