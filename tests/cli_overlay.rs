//! Overlay networks across hosts: simulated hosts ([`common::hosts`]), one
//! swarm, one overlay network spread over their engines. Task addresses
//! come from the leader, VXLAN joins the hosts' bridges, and service names
//! and VIPs reach tasks wherever they run, from managers and workers.
//!
//! Needs root (skipped without it, unless SHOAL_REQUIRE_HOSTS=1 as in CI).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::hosts::{Host, Hosts};
use common::*;

/// How long cluster-wide changes may take to show.
const CONVERGE: Duration = Duration::from_secs(90);

fn cluster_addr(h: &Host) -> String {
    format!("{}:2377", h.ip)
}

fn join(h: &Host, manager: &Host, role: &str) {
    let token = manager.docker_ok(&["swarm", "join-token", "-q", role]);
    h.docker_ok(&[
        "swarm",
        "join",
        "--token",
        token.trim(),
        "--advertise-addr",
        &h.ip.to_string(),
        &cluster_addr(manager),
    ]);
}

fn wait_running(h: &Host, name: &str, want: usize) {
    let deadline = std::time::Instant::now() + CONVERGE;
    while std::time::Instant::now() < deadline {
        let out = h.docker(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]);
        if stdout(&out)
            .lines()
            .any(|l| l.starts_with(&format!("{name} {want}/{want}")))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let ps = h.docker(&["service", "ps", "--no-trunc", name]);
    panic!(
        "{name}: not {want} running:\n{}{}",
        stdout(&ps),
        stderr(&ps)
    );
}

/// Running task containers of `service` on `h`'s own engine.
fn containers_on(h: &Host, service: &str) -> Vec<String> {
    let out = h.engine_docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={service}"),
    ]);
    stdout(&out).lines().map(str::to_string).collect()
}

/// `wget` from container `c` on `h`'s engine; the body when it answered.
fn fetch(h: &Host, c: &str, url: &str) -> Option<String> {
    // No `-T`: busybox-static's wget here dies of SIGSEGV with it.
    let out = h.engine_docker(&["exec", c, "wget", "-q", "-O", "-", url]);
    out.status
        .success()
        .then(|| stdout(&out).trim().to_string())
}

/// The addresses `name` resolves to from container `c` (through the
/// engine's DNS, which forwards swarm names to shoal's).
fn resolve(h: &Host, c: &str, name: &str) -> BTreeSet<String> {
    let out = h.engine_docker(&["exec", c, "nslookup", name, "127.0.0.11"]);
    stdout(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("Address: "))
        .filter(|a| a.starts_with("10.0."))
        .map(|a| a.split_whitespace().next().unwrap_or(a).to_string())
        .collect()
}

#[test]
fn a_service_spread_over_three_hosts_answers_by_name_address_and_vip() {
    let Some(hosts) = Hosts::try_start(3) else {
        return;
    };
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    h1.docker_ok(&["swarm", "init", "--advertise-addr", &h1.ip.to_string()]);
    // A manager and a worker: both ways a node learns its peers.
    join(h2, h1, "manager");
    join(h3, h1, "worker");
    h1.docker_ok(&["network", "create", "-d", "overlay", "ov"]);

    // Six httpd tasks, two per host, each serving its own hostname.
    h1.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--network",
        "ov",
        "--replicas",
        "6",
        "--replicas-max-per-node",
        "2",
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /www && hostname > /www/index.html \
         && dd if=/dev/zero of=/www/big bs=1024 count=256 2>/dev/null \
         && exec httpd -f -p 80 -h /www",
    ]);
    // The client runs on host A (h1).
    h1.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "cli",
        "--network",
        "ov",
        "--constraint",
        &format!("node.hostname=={}", h1.hostname),
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sleep",
        "3600",
    ]);
    wait_running(h1, "web", 6);
    wait_running(h1, "cli", 1);
    for h in [h1, h2, h3] {
        assert_eq!(containers_on(h, "web").len(), 2, "web tasks on {}", h.name);
    }

    // Every task has its own address, chosen by the leader and shown as
    // the engine shows it.
    let ids = h1.docker_ok(&[
        "service",
        "ps",
        "web",
        "-q",
        "--filter",
        "desired-state=running",
    ]);
    let mut chosen = BTreeSet::new();
    for id in ids.lines() {
        let addr = h1.docker_ok(&[
            "inspect",
            "--format",
            "{{range .NetworksAttachments}}{{range .Addresses}}{{.}}{{end}}{{end}}",
            id,
        ]);
        let ip = addr.trim().split('/').next().unwrap_or("").to_string();
        assert!(ip.starts_with("10.0."), "task {id}: {addr}");
        chosen.insert(ip);
    }
    assert_eq!(chosen.len(), 6, "{chosen:?}");

    // From host A, tasks.web is all six, and each answers over VXLAN.
    let client = wait_for("the client container", CONVERGE, || {
        containers_on(h1, "cli").into_iter().next()
    });
    let resolved = wait_for("tasks.web resolves to 6 addresses", CONVERGE, || {
        let found = resolve(h1, &client, "tasks.web");
        (found.len() == 6).then_some(found)
    });
    assert_eq!(resolved, chosen);
    let mut pages = BTreeSet::new();
    for ip in &resolved {
        let body = wait_for(&format!("a page from {ip}"), CONVERGE, || {
            fetch(h1, &client, &format!("http://{ip}/"))
        });
        assert!(!body.is_empty(), "{ip}");
        pages.insert(body);
    }
    assert_eq!(pages.len(), 6, "six tasks, six hostnames: {pages:?}");
    // Full-size frames cross too: the MTU leaves room for VXLAN's header.
    let remote = resolved_on(h3, "web", &chosen);
    let out = h1.engine_docker(&[
        "exec",
        &client,
        "sh",
        "-c",
        &format!("wget -q -O - http://{remote}/big | wc -c"),
    ]);
    assert_eq!(stdout(&out).trim(), "262144", "{}", stderr(&out));

    // And through the VIP, balanced over tasks of every host.
    let vip = resolve(h1, &client, "web");
    assert_eq!(vip.len(), 1, "{vip:?}");
    assert!(!chosen.is_superset(&vip), "the VIP is no task's address");
    let mut through_vip = BTreeSet::new();
    for _ in 0..18 {
        let body = wait_for("a page through the VIP", CONVERGE, || {
            fetch(h1, &client, "http://web/")
        });
        through_vip.insert(body);
    }
    assert!(through_vip.is_subset(&pages), "{through_vip:?}");
    assert_eq!(
        through_vip.len(),
        6,
        "round robin over all six: {through_vip:?}"
    );

    // A worker has no store: its names and VIPs come in its assignments.
    let on_worker = containers_on(h3, "web")[0].clone();
    let resolved = wait_for("tasks.web from the worker", CONVERGE, || {
        let found = resolve(h3, &on_worker, "tasks.web");
        (found.len() == 6).then_some(found)
    });
    assert_eq!(resolved, chosen);
    let mut from_worker = BTreeSet::new();
    for _ in 0..12 {
        let body = wait_for("a page through the VIP from the worker", CONVERGE, || {
            fetch(h3, &on_worker, "http://web/")
        });
        from_worker.insert(body);
    }
    assert!(from_worker.is_subset(&pages), "{from_worker:?}");
    assert_eq!(from_worker.len(), 6, "{from_worker:?}");

    // VXLAN datagrams of the swarm's networks come only from its nodes.
    for h in [h1, h3] {
        let out = h
            .command("nft")
            .args(["list", "ruleset"])
            .output()
            .map(|o| stdout(&o))
            .unwrap_or_default();
        let others: Vec<String> = [h1, h2, h3]
            .iter()
            .filter(|o| o.name != h.name)
            .map(|o| o.ip.to_string())
            .collect();
        let rule = format!("ip saddr != {{ {} }} drop", others.join(", "));
        assert!(out.contains(&rule), "{} lacks {rule:?}:\n{out}", h.name);
    }

    // A VXLAN port removed by hand comes back, on a manager and a worker.
    let remote_of_h1 = resolved_on(h2, "web", &chosen);
    for h in [h1, h3] {
        let ports = vxlan_ports(h);
        assert_eq!(
            ports.len(),
            1,
            "one overlay, one VXLAN port on {}: {ports:?}",
            h.name
        );
        let out = h.command("ip").args(["link", "del", &ports[0]]).output();
        assert!(
            out.is_ok_and(|o| o.status.success()),
            "ip link del on {}",
            h.name
        );
        let c = containers_on(h, if h.name == h1.name { "cli" } else { "web" })[0].clone();
        wait_for(&format!("VXLAN repaired on {}", h.name), CONVERGE, || {
            fetch(h, &c, &format!("http://{remote_of_h1}/"))
        });
        assert_eq!(vxlan_ports(h), ports);
        // Sent from the address the other nodes' filters know the host by.
        let details = h
            .command("ip")
            .args(["-d", "link", "show", &ports[0]])
            .output()
            .map(|o| stdout(&o))
            .unwrap_or_default();
        assert!(details.contains(&format!("local {} ", h.ip)), "{details}");
    }

    h1.docker_ok(&["service", "rm", "web", "cli"]);
}

/// The VXLAN devices in `h`'s namespace.
fn vxlan_ports(h: &Host) -> Vec<String> {
    let out = h
        .command("ip")
        .args(["-br", "link", "show", "type", "vxlan"])
        .output()
        .map(|o| stdout(&o))
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The address of one of `service`'s tasks running on `h` (from `chosen`,
/// the addresses the leader gave the service's tasks).
fn resolved_on(h: &Host, service: &str, chosen: &BTreeSet<String>) -> String {
    let c = containers_on(h, service)[0].clone();
    let out = h.engine_docker_ok(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &c,
    ]);
    let ip = out.trim().to_string();
    assert!(chosen.contains(&ip), "{ip} not among {chosen:?}");
    ip
}

/// Sends `request` to `addr` from the test process (outside every host,
/// so its address is none of the swarm's nodes) and reads until the other
/// side closes; None when nothing answered.
fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(request).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    (!answer.is_empty()).then_some(answer)
}

/// The body of an HTTP/1.0 GET of `/` at `addr`.
fn http_get(addr: std::net::SocketAddr) -> Option<String> {
    let answer = exchange(addr, b"GET / HTTP/1.0\r\n\r\n")?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.split_whitespace()
        .nth(1)
        .is_some_and(|status| status == "200")
        .then(|| body.trim().to_string())
}

#[test]
fn a_published_port_answers_on_every_node_and_can_pass_the_clients_address() {
    let Some(hosts) = Hosts::try_start(3) else {
        return;
    };
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    h1.docker_ok(&["swarm", "init", "--advertise-addr", &h1.ip.to_string()]);
    join(h2, h1, "worker");
    join(h3, h1, "worker");

    // Two tasks on h2 only, on no swarm network: reached through h2's
    // engine alone.
    h1.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--publish",
        "8080:80",
        "--replicas",
        "2",
        "--constraint",
        &format!("node.hostname=={}", h2.hostname),
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    wait_running(h1, "web", 2);
    let on_h2: BTreeSet<String> = containers_on(h2, "web")
        .iter()
        .map(|c| c[..12].to_string())
        .collect();
    assert_eq!(on_h2.len(), 2);

    // Every node answers: the manager and a worker without a task of the
    // service relay to h2; h2 answers itself. Both tasks take turns.
    for h in [h1, h3, h2] {
        let addr = std::net::SocketAddr::from((h.ip, 8080));
        let mut seen = BTreeSet::new();
        for _ in 0..6 {
            let page = wait_for(&format!("a page through {}", h.name), CONVERGE, || {
                http_get(addr)
            });
            seen.insert(page);
        }
        assert_eq!(seen, on_h2, "through {}", h.name);
    }

    // With the label, a task gets the client's address first (PROXY v2):
    // it dumps the header's 28 bytes back in hex.
    h1.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "pp",
        "--publish",
        "9000:9000",
        "--label",
        "io.shoal.ingress.proxy-protocol=v2",
        "--constraint",
        &format!("node.hostname=={}", h2.hostname),
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sh",
        "-c",
        "printf '#!/bin/sh\\nhead -c 28 | od -An -tx1 | tr -d \" \\\\n\"\\n' > /dump \
         && chmod +x /dump && exec nc -ll -p 9000 -e /dump",
    ]);
    wait_running(h1, "pp", 1);
    let hex = |ip: std::net::Ipv4Addr| -> String {
        ip.octets().iter().map(|o| format!("{o:02x}")).collect()
    };
    let header = wait_for("a PROXY header through h3", CONVERGE, || {
        exchange(std::net::SocketAddr::from((h3.ip, 9000)), b"hello\n")
            .map(|a| String::from_utf8_lossy(&a).trim().to_string())
            .filter(|a| a.len() >= 56)
    });
    // Signature, v2 PROXY, TCP over IPv4, 12 bytes of addresses.
    assert!(
        header.starts_with("0d0a0d0a000d0a515549540a2111000c"),
        "{header}"
    );
    // The client (this process, from the hosts' gateway) and the address
    // it reached (h3's).
    let addresses = &header[32..48];
    assert_eq!(
        addresses,
        format!("{}{}", hex(hosts.gateway()), hex(h3.ip)),
        "{header}"
    );
    assert_eq!(&header[52..56], "2328", "destination port 9000: {header}");

    h1.docker_ok(&["service", "rm", "web", "pp"]);
}

/// Pages fetched `n` times from container `c` on `h` at `url`; every try
/// must answer.
fn pages_from(h: &Host, c: &str, url: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            wait_for(&format!("{url} from {}", h.name), CONVERGE, || {
                fetch(h, c, url)
            })
        })
        .collect()
}

/// The hostnames (short container IDs) of `service`'s tasks on `hosts`.
fn hostnames(hosts: &[&Host], service: &str) -> BTreeSet<String> {
    hosts
        .iter()
        .flat_map(|h| containers_on(h, service))
        .map(|c| c[..12].to_string())
        .collect()
}

/// Networks and services created at once through two managers (the
/// follower forwards to the leader, which allocates in one place): every
/// network gets its own subnet, every service its own published port and
/// its own VIPs.
fn concurrent_creates_never_share_a_subnet_port_or_vip(h1: &Host, h2: &Host) {
    const N: usize = 8;
    let via = |i: usize| if i.is_multiple_of(2) { h1 } else { h2 };
    std::thread::scope(|s| {
        for i in 0..N {
            s.spawn(move || {
                via(i).docker_ok(&["network", "create", "-d", "overlay", &format!("cc{i}")]);
            });
        }
    });
    let nets: Vec<String> = (0..N).map(|i| format!("cc{i}")).collect();
    let mut args = vec![
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
    ];
    args.extend(nets.iter().map(String::as_str));
    let subnets = h1.docker_ok(&args);
    let distinct: BTreeSet<&str> = subnets.lines().collect();
    assert_eq!(distinct.len(), N, "subnets shared:\n{subnets}");

    std::thread::scope(|s| {
        for i in 0..N {
            s.spawn(move || {
                via(i).docker_ok(&[
                    "service",
                    "create",
                    "--detach",
                    "--replicas",
                    "0",
                    "--name",
                    &format!("ccs{i}"),
                    "--network",
                    "cc0",
                    "-p",
                    "80",
                    IMAGE,
                    "sleep",
                    "3600",
                ]);
            });
        }
    });
    let services: Vec<String> = (0..N).map(|i| format!("ccs{i}")).collect();
    let mut args = vec![
        "service",
        "inspect",
        "--format",
        "{{range .Endpoint.Ports}}{{.PublishedPort}}{{end}} {{range .Endpoint.VirtualIPs}}{{.Addr}},{{end}}",
    ];
    args.extend(services.iter().map(String::as_str));
    let endpoints = h2.docker_ok(&args);
    let ports: BTreeSet<&str> = endpoints
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ports.len(), N, "published ports shared:\n{endpoints}");
    let vips: Vec<&str> = endpoints
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .flat_map(|v| v.split(',').filter(|a| !a.is_empty()))
        .collect();
    let distinct: BTreeSet<&str> = vips.iter().copied().collect();
    // Each service has a VIP on cc0 and one on ingress.
    assert_eq!(vips.len(), 2 * N, "VIPs missing:\n{endpoints}");
    assert_eq!(distinct.len(), vips.len(), "VIPs shared:\n{endpoints}");

    let mut rm = vec!["service", "rm"];
    rm.extend(services.iter().map(String::as_str));
    h1.docker_ok(&rm);
    let mut rm = vec!["network", "rm"];
    rm.extend(nets.iter().map(String::as_str));
    h1.docker_ok(&rm);
}

#[test]
fn a_stack_spreads_over_the_hosts_and_a_cut_off_hosts_tasks_leave_names_vips_and_ports() {
    let Some(hosts) = Hosts::try_start(3) else {
        return;
    };
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    h1.docker_ok(&["swarm", "init", "--advertise-addr", &h1.ip.to_string()]);
    join(h2, h1, "manager");
    join(h3, h1, "worker");
    concurrent_creates_never_share_a_subnet_port_or_vip(h1, h2);

    // A compose file with two services on an overlay, one publishing a
    // port, a secret and a config, deployed from the second manager.
    let dir = h2.dir.join("stack");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token.txt"), "s3cret-token\n").unwrap();
    std::fs::write(dir.join("greeting.txt"), "hello from a config\n").unwrap();
    let compose = format!(
        r#"version: "3.8"
services:
  web:
    image: {IMAGE}
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && cat /run/secrets/token > /www/token && exec httpd -f -p 80 -h /www"]
    networks: [back]
    ports: ["8082:80"]
    secrets: [token]
    stop_grace_period: 1s
    deploy:
      replicas: 3
      placement:
        max_replicas_per_node: 1
  cli:
    image: {IMAGE}
    command: ["sleep", "3600"]
    networks: [back]
    configs:
      - source: greeting
        target: /greeting
    stop_grace_period: 1s
    deploy:
      placement:
        constraints: ["node.hostname=={h1}"]
networks:
  back:
    driver: overlay
secrets:
  token:
    file: ./token.txt
configs:
  greeting:
    file: ./greeting.txt
"#,
        h1 = h1.hostname
    );
    std::fs::write(dir.join("stack.yml"), compose).unwrap();
    let out = h2
        .docker_cmd()
        .current_dir(&dir)
        .args(["stack", "deploy", "-c", "stack.yml", "st"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    wait_running(h2, "st_web", 3);
    wait_running(h2, "st_cli", 1);
    let stacks = h1.docker_ok(&["stack", "ls", "--format", "{{.Name}} {{.Services}}"]);
    assert_eq!(stacks.trim(), "st 2", "{stacks}");
    let services = h1.docker_ok(&["stack", "services", "st", "--format", "{{.Name}}"]);
    assert_eq!(
        services.lines().collect::<BTreeSet<_>>(),
        BTreeSet::from(["st_cli", "st_web"])
    );
    for h in [h1, h2, h3] {
        assert_eq!(containers_on(h, "st_web").len(), 1, "st_web on {}", h.name);
    }

    // By name across hosts, with the secret and the config delivered.
    let client = wait_for("the client container", CONVERGE, || {
        containers_on(h1, "st_cli").into_iter().next()
    });
    let greeting = h1.engine_docker_ok(&["exec", &client, "cat", "/greeting"]);
    assert_eq!(greeting.trim(), "hello from a config");
    let all = hostnames(&[h1, h2, h3], "st_web");
    assert_eq!(pages_from(h1, &client, "http://web/", 9), all);
    let token = wait_for("the token through the VIP", CONVERGE, || {
        fetch(h1, &client, "http://web/token")
    });
    assert_eq!(token, "s3cret-token");
    // The published port, on the worker.
    let published = std::net::SocketAddr::from((h3.ip, 8082));
    let seen: BTreeSet<String> = (0..9)
        .map(|_| {
            wait_for("a page on the worker's port", CONVERGE, || {
                http_get(published)
            })
        })
        .collect();
    assert_eq!(seen, all);

    // h3 is cut off: once it is down, its task leaves the names, the VIP
    // and every node's published port.
    let cut_at = std::time::Instant::now();
    h3.cut();
    let left = hostnames(&[h1, h2], "st_web");
    let resolved = wait_for("tasks.web without h3's task", CONVERGE, || {
        let found = resolve(h1, &client, "tasks.web");
        (found.len() == 2).then_some(found)
    });
    eprintln!(
        "h3's task left tasks.web {:.1} s after the cut",
        cut_at.elapsed().as_secs_f64()
    );
    assert_eq!(resolved.len(), 2, "{resolved:?}");
    assert_eq!(pages_from(h1, &client, "http://web/", 8), left);
    let on_manager = std::net::SocketAddr::from((h2.ip, 8082));
    let seen: BTreeSet<String> = (0..8)
        .map(|_| wait_for("a page on h2's port", CONVERGE, || http_get(on_manager)))
        .collect();
    assert_eq!(seen, left);
    h3.heal();

    let out = h2.docker(&["stack", "rm", "st"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
