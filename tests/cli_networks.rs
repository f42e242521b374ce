//! End-to-end: swarm networks, service discovery by name, published ports
//! and `docker stack deploy` on a one-node shoal swarm, through the
//! unmodified docker CLI, checked against the engine asked directly.
//!
//! Every test runs its own shoal and swarm, ends with `swarm leave --force`,
//! and leaves no container and no network on the engine. The swarms of
//! these tests share the engine's address space (10.0.N.0/24), so they run
//! one at a time.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

use common::*;

const CONVERGE: Duration = Duration::from_secs(60);

/// One swarm with networks on the engine at a time.
static ENGINE_NETWORKS: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ENGINE_NETWORKS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Engine networks that realise swarm networks (asked of the engine).
fn realising_networks() -> Vec<String> {
    ok(&engine_docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        "label=io.shoal.network.id",
    ]))
    .split_whitespace()
    .map(String::from)
    .collect()
}

fn wait_running(shoal: &Shoal, name: &str, want: usize) {
    wait_for(&format!("{name}: {want} running"), CONVERGE, || {
        let out = shoal.docker(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]);
        stdout(&out)
            .lines()
            .any(|l| l == format!("{name} {want}/{want}"))
            .then_some(())
    });
}

/// A running task container of `service` on node `node` (engine asked directly).
fn task_container(node: &str, service: &str) -> String {
    wait_for(&format!("a container of {service}"), CONVERGE, || {
        node_containers(
            node,
            &[
                "--filter",
                &format!("label=com.docker.swarm.service.name={service}"),
            ],
        )
        .into_iter()
        .next()
    })
}

/// `GET <path>` over plain HTTP/1.0 from the host; the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}

/// A service whose task only sleeps on `network`: the place requests are
/// made from (`docker exec` into its container).
#[track_caller]
fn create_client(shoal: &Shoal, name: &str, network: &str) {
    shoal.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        name,
        "--network",
        network,
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sleep",
        "3600",
    ]);
}

/// A service of busybox `httpd` serving `/etc` on port 80 on `network`,
/// with `extra` `service create` flags (replicas, ports, endpoint mode).
#[track_caller]
fn create_httpd(shoal: &Shoal, name: &str, network: &str, extra: &[&str]) {
    let mut args = vec![
        "service",
        "create",
        "--detach",
        "--name",
        name,
        "--network",
        network,
        "--stop-grace-period",
        "1s",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "httpd", "-f", "-p", "80", "-h", "/etc"]);
    shoal.docker_ok(&args);
}

fn leave_clean(node: &SwarmNode, shoal: &Shoal) {
    node.leave(shoal);
    wait_for(
        "no realising networks left",
        Duration::from_secs(20),
        || realising_networks().is_empty().then_some(()),
    );
}

#[test]
fn services_reach_each_other_by_name_and_through_a_published_port() {
    let _serial = serial();
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    let net = unique("net");
    let web = unique("web");
    let client = unique("cli");
    let port = free_port();

    // The ingress network exists after init.
    let ingress = shoal.docker_ok(&[
        "network",
        "inspect",
        "ingress",
        "--format",
        "{{.Ingress}} {{range .IPAM.Config}}{{.Subnet}}{{end}}",
    ]);
    assert_eq!(ingress.trim(), "true 10.0.0.0/24");

    let id = shoal.docker_ok(&["network", "create", "-d", "overlay", "--attachable", &net]);
    assert_eq!(id.trim().len(), 25, "{id}");
    let shown = shoal.docker_ok(&[
        "network",
        "ls",
        "--filter",
        "driver=overlay",
        "--format",
        "{{.Name}} {{.Scope}}",
    ]);
    assert!(shown.contains(&format!("{net} swarm")), "{shown}");
    let all = shoal.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        !all.contains("shoal_"),
        "realising bridges are hidden: {all}"
    );
    assert!(
        all.lines().any(|l| l == "bridge"),
        "local networks stay: {all}"
    );

    create_httpd(
        &shoal,
        &web,
        &net,
        &["--replicas", "3", "--publish", &format!("{port}:80")],
    );
    create_client(&shoal, &client, &net);
    wait_running(&shoal, &web, 3);
    wait_running(&shoal, &client, 1);

    let endpoint = shoal.docker_ok(&["service", "inspect", &web, "--format", "{{json .Endpoint}}"]);
    let endpoint: serde_json::Value = serde_json::from_str(&endpoint).unwrap();
    assert_eq!(endpoint["Ports"][0]["PublishedPort"], port);
    assert_eq!(
        endpoint["VirtualIPs"].as_array().map(Vec::len),
        Some(2),
        "{endpoint}"
    );

    // By name from another service's task, and every task by tasks.<name>.
    let c = task_container(&node.id, &client);
    let body = wait_for("http://<service>/ from a task", CONVERGE, || {
        let out = engine_docker(&[
            "exec",
            &c,
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{web}/hostname"),
        ]);
        out.status.success().then(|| stdout(&out))
    });
    assert!(!body.trim().is_empty());
    let tasks = ok(&engine_docker(&[
        "exec",
        &c,
        "nslookup",
        &format!("tasks.{web}"),
        "127.0.0.11",
    ]));
    let addresses = tasks
        .lines()
        .filter(|l| l.starts_with("Address: 10.0.1."))
        .count();
    assert_eq!(addresses, 3, "{tasks}");

    // The published port answers from the host, spread over the tasks.
    let mut hosts = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let body = wait_for("the published port", CONVERGE, || {
            http_get(port, "/hostname")
        });
        hosts.insert(body.trim().to_string());
    }
    assert_eq!(hosts.len(), 3, "{hosts:?}");

    // A plain container on the attachable overlay reaches the service.
    let out = shoal.docker_ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        IMAGE,
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{web}/hostname"),
    ]);
    assert!(!out.trim().is_empty());

    // In use: refused with the engine's text.
    let service_id = shoal.docker_ok(&["service", "inspect", &web, "--format", "{{.ID}}"]);
    assert_fails_with(
        &shoal,
        &["network", "rm", &net],
        &format!("network {} is in use by service", id.trim()),
    );

    // The port closes with its service.
    shoal.docker_ok(&["service", "rm", &web]);
    wait_for("the published port closes", CONVERGE, || {
        http_get(port, "/hostname").is_none().then_some(())
    });
    let _ = service_id;
    shoal.docker_ok(&["service", "rm", &client]);
    wait_for("network rm once unused", CONVERGE, || {
        shoal
            .docker(&["network", "rm", &net])
            .status
            .success()
            .then_some(())
    });
    leave_clean(&node, &shoal);
}

#[test]
fn bad_network_and_port_requests_get_the_engines_errors() {
    let _serial = serial();
    let shoal = Shoal::start();
    let before = shoal.docker(&["network", "create", "-d", "overlay", "early"]);
    assert!(
        stderr(&before).contains("This node is not a swarm manager."),
        "{}",
        stderr(&before)
    );
    let node = shoal.swarm_init();
    let a = unique("a");
    let b = unique("b");
    shoal.docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.0.7.0/24",
        &a,
    ]);
    assert_fails_with(
        &shoal,
        &["network", "create", "-d", "overlay", &a],
        &format!("network with name {a} already exists"),
    );
    assert_fails_with(
        &shoal,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.0.7.128/25",
            &b,
        ],
        "Pool overlaps with other one on this address space",
    );
    assert_fails_with(
        &shoal,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.0.0.300/24",
            &b,
        ],
        "invalid",
    );
    let port = free_port();
    let s1 = unique("s1");
    let s2 = unique("s2");
    shoal.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &s1,
        "-p",
        &format!("{port}:80"),
        IMAGE,
        "sleep",
        "3600",
    ]);
    let id = shoal.docker_ok(&["service", "inspect", &s1, "--format", "{{.ID}}"]);
    assert_fails_with(
        &shoal,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            &s2,
            "-p",
            &format!("{port}:80"),
            IMAGE,
            "sleep",
            "3600",
        ],
        &format!(
            "port '{port}' is already in use by service '{s1}' ({}) as an ingress port",
            id.trim()
        ),
    );
    // The same port added to another service later is refused alike.
    shoal.docker_ok(&[
        "service", "create", "--detach", "--name", &s2, IMAGE, "sleep", "3600",
    ]);
    assert_fails_with(
        &shoal,
        &[
            "service",
            "update",
            "--detach",
            "--publish-add",
            &format!("{port}:80"),
            &s2,
        ],
        &format!(
            "port '{port}' is already in use by service '{s1}' ({}) as an ingress port",
            id.trim()
        ),
    );
    shoal.docker_ok(&["service", "rm", &s2]);
    // Ports published later: the endpoint follows, dynamic from 30000 up.
    shoal.docker_ok(&["service", "update", "--detach", "--publish-add", "80", &s1]);
    let ports = shoal.docker_ok(&[
        "service",
        "inspect",
        &s1,
        "--format",
        "{{range .Endpoint.Ports}}{{.PublishedPort}} {{end}}",
    ]);
    assert!(
        ports
            .split_whitespace()
            .any(|p| p.parse::<u32>().is_ok_and(|p| p >= 30000)),
        "{ports}"
    );
    shoal.docker_ok(&["service", "rm", &s1]);
    shoal.docker_ok(&["network", "rm", &a]);
    leave_clean(&node, &shoal);
}

const STACK: &str = r#"version: "3.8"
services:
  web:
    image: busybox:latest
    command: ["httpd", "-f", "-p", "80", "-h", "/run"]
    ports:
      - "PORT:80"
    networks: [front]
    secrets: [s1]
    configs: [c1]
    stop_grace_period: 1s
  client:
    image: busybox:latest
    command: ["sleep", "3600"]
    networks: [front]
    stop_grace_period: 1s
networks:
  front:
    driver: overlay
secrets:
  s1:
    file: ./s1.txt
configs:
  c1:
    file: ./c1.txt
"#;

/// `swarm init --default-addr-pool … --default-addr-pool-mask-length …`:
/// the ingress network takes the pool's first piece, new networks the next
/// ones, tasks get addresses in them, `docker info` reports the pool; a
/// pool the engine refuses fails the init with its words.
#[test]
fn the_default_address_pool_gives_networks_their_subnets() {
    let _serial = serial();
    let shoal = Shoal::start();
    let pool = ["--default-addr-pool", "10.123.0.0/16"];
    let mut bad = vec!["swarm", "init", "--advertise-addr", "127.0.0.1"];
    bad.extend_from_slice(&pool);
    bad.extend_from_slice(&["--default-addr-pool-mask-length", "8"]);
    assert_fails_with(
        &shoal,
        &bad,
        "invalid CIDR: \"10.123.0.0/16\". Subnet size is too small for pool: 8",
    );
    let state = shoal.docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    assert_eq!(state.trim(), "inactive", "a refused init left a swarm");

    let mut flags = vec!["--advertise-addr", "127.0.0.1"];
    flags.extend_from_slice(&pool);
    flags.extend_from_slice(&["--default-addr-pool-mask-length", "26"]);
    let node = shoal.swarm_init_with(&flags);
    let reported = shoal.docker_ok(&[
        "info",
        "--format",
        "{{json .Swarm.Cluster.DefaultAddrPool}} {{.Swarm.Cluster.SubnetSize}}",
    ]);
    assert_eq!(reported.trim(), r#"["10.123.0.0/16"] 26"#);
    let ipam = |name: &str| {
        shoal
            .docker_ok(&[
                "network",
                "inspect",
                "--format",
                "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
                name,
            ])
            .trim()
            .to_string()
    };
    assert_eq!(ipam("ingress"), "10.123.0.0/26 10.123.0.1");
    let net = unique("pooled");
    shoal.docker_ok(&["network", "create", "-d", "overlay", &net]);
    assert_eq!(ipam(&net), "10.123.0.64/26 10.123.0.65");

    let svc = unique("inpool");
    create_client(&shoal, &svc, &net);
    wait_running(&shoal, &svc, 1);
    let container = task_container(&node.id, &svc);
    let address = ok(&engine_docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &container,
    ]));
    let last: u8 = address
        .trim()
        .strip_prefix("10.123.0.")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("task address {address:?} is not in 10.123.0.64/26"));
    assert!((66..127).contains(&last), "task address {address:?}");
    shoal.docker_ok(&["service", "rm", &svc]);
    wait_for("the task container to go", CONVERGE, || {
        node_containers(&node.id, &["-a"]).is_empty().then_some(())
    });
    shoal.docker_ok(&["network", "rm", &net]);
    leave_clean(&node, &shoal);
}

#[test]
fn a_stack_deploys_works_redeploys_unchanged_and_goes_away() {
    let _serial = serial();
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    let port = free_port();
    let stack = unique("st").replace('-', "");
    let dir = shoal.dir().join("stack");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("s1.txt"), "stack-secret\n").unwrap();
    std::fs::write(dir.join("c1.txt"), "greeting = hello\n").unwrap();
    let file = dir.join("app.yml");
    std::fs::write(&file, STACK.replace("PORT", &port.to_string())).unwrap();
    let file = file.to_string_lossy().to_string();

    let out = shoal.docker_ok(&["stack", "deploy", "-c", &file, &stack]);
    assert!(
        out.contains(&format!("Creating network {stack}_front")),
        "{out}"
    );
    assert!(
        out.contains(&format!("Creating service {stack}_web")),
        "{out}"
    );
    wait_running(&shoal, &format!("{stack}_web"), 1);
    wait_running(&shoal, &format!("{stack}_client"), 1);

    let ls = shoal.docker_ok(&["stack", "ls", "--format", "{{.Name}} {{.Services}}"]);
    assert!(ls.lines().any(|l| l == format!("{stack} 2")), "{ls}");
    let services = shoal.docker_ok(&["stack", "services", &stack, "--format", "{{.Name}}"]);
    assert_eq!(services.lines().count(), 2, "{services}");
    let ps = shoal.docker_ok(&[
        "stack",
        "ps",
        &stack,
        "--format",
        "{{.Name}} {{.CurrentState}}",
    ]);
    assert_eq!(
        ps.lines().filter(|l| l.contains("Running")).count(),
        2,
        "{ps}"
    );

    // The secret reaches the web task, which serves it on the published port;
    // the client reaches the web service by its stack-local name.
    let body = wait_for("the secret through the published port", CONVERGE, || {
        http_get(port, "/secrets/s1")
    });
    assert_eq!(body, "stack-secret\n");
    let c = task_container(&node.id, &format!("{stack}_client"));
    let by_name = wait_for("web by name", CONVERGE, || {
        let out = engine_docker(&["exec", &c, "wget", "-q", "-O", "-", "http://web/secrets/s1"]);
        out.status.success().then(|| stdout(&out))
    });
    assert_eq!(by_name, "stack-secret\n");

    // Redeploying the same file changes nothing.
    let versions = |s: &Shoal| {
        s.docker_ok(&["service", "ls", "--format", "{{.ID}}"])
            .lines()
            .map(|id| {
                s.docker_ok(&[
                    "service",
                    "inspect",
                    id,
                    "--format",
                    "{{.Version.Index}} {{len .Spec.TaskTemplate.ContainerSpec.Args}}",
                ])
            })
            .collect::<Vec<_>>()
    };
    let tasks_before = shoal.docker_ok(&["stack", "ps", &stack, "-q"]);
    let _ = versions(&shoal);
    shoal.docker_ok(&["stack", "deploy", "-c", &file, &stack]);
    std::thread::sleep(Duration::from_secs(2));
    let tasks_after = shoal.docker_ok(&["stack", "ps", &stack, "-q"]);
    assert_eq!(
        tasks_before, tasks_after,
        "an unchanged redeploy made new tasks"
    );

    let rm = shoal.docker_ok(&["stack", "rm", &stack]);
    assert!(
        rm.contains(&format!("Removing network {stack}_front")),
        "{rm}"
    );
    wait_for("stack gone", CONVERGE, || {
        let ls = shoal.docker_ok(&["stack", "ls", "--format", "{{.Name}}"]);
        let nets = shoal.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
        (!ls.contains(&stack) && !nets.contains(&stack)).then_some(())
    });
    wait_for("no task containers", CONVERGE, || {
        node_containers(&node.id, &["-a"]).is_empty().then_some(())
    });
    wait_for("no realising network", CONVERGE, || {
        realising_networks().is_empty().then_some(())
    });
    leave_clean(&node, &shoal);
}

/// `docker exec <container> <args>` on the engine.
fn exec(container: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["exec", container];
    all.extend_from_slice(args);
    engine_docker(&all)
}

/// The addresses busybox `nslookup` printed for the name asked.
fn resolved(out: &std::process::Output) -> std::collections::BTreeSet<String> {
    stdout(out)
        .lines()
        .filter_map(|l| l.strip_prefix("Address: "))
        .map(|a| a.trim().to_string())
        .collect()
}

/// `nslookup <name>` in `container` through the engine's resolver, once it
/// gives `want` addresses.
fn lookup(container: &str, name: &str, want: usize) -> std::collections::BTreeSet<String> {
    wait_for(&format!("{name}: {want} addresses"), CONVERGE, || {
        let found = resolved(&exec(container, &["nslookup", name]));
        (found.len() == want).then_some(found)
    })
}

/// `GET http://<host>/hostname` from inside `container`.
fn fetch_hostname(container: &str, host: &str) -> Option<String> {
    let url = format!("http://{host}/hostname");
    let out = exec(container, &["wget", "-q", "-O", "-", &url]);
    out.status
        .success()
        .then(|| stdout(&out).trim().to_string())
}

fn host_tool(tool: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// This swarm's nft table is there (as `nft list tables` shows it).
fn has_vip_table(table: &str) -> bool {
    host_tool("nft", &["list", "tables"])
        .lines()
        .any(|l| l.trim() == format!("table ip {table}"))
}

/// `ip` shows `address/32` on some interface of the host.
fn has_host_address(address: &str) -> bool {
    host_tool("ip", &["-4", "-o", "addr", "show"]).contains(&format!(" {address}/32 "))
}

#[test]
fn vips_balance_and_shoals_dns_answers_names_until_leave_and_shutdown() {
    let _serial = serial();
    let mut shoal = Shoal::start();
    let node = shoal.swarm_init();
    let net = unique("net");
    let web = unique("web");
    let rr = unique("rr");
    let client = unique("cli");
    let net_id = shoal.docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "--subnet",
        "10.0.201.0/24",
        &net,
    ]);
    let net_id = net_id.trim();
    create_httpd(
        &shoal,
        &web,
        &net,
        &["--replicas", "3", "--endpoint-mode", "vip"],
    );
    create_httpd(
        &shoal,
        &rr,
        &net,
        &["--replicas", "2", "--endpoint-mode", "dnsrr"],
    );
    create_client(&shoal, &client, &net);
    wait_running(&shoal, &web, 3);
    wait_running(&shoal, &rr, 2);
    wait_running(&shoal, &client, 1);
    let endpoint = shoal.docker_ok(&["service", "inspect", &web, "--format", "{{json .Endpoint}}"]);
    let endpoint: serde_json::Value = serde_json::from_str(&endpoint).unwrap();
    let vip = endpoint["VirtualIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["NetworkID"] == net_id)
        .and_then(|v| v["Addr"].as_str())
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no VIP on {net}: {endpoint}"))
        .to_string();
    let c = task_container(&node.id, &client);

    // Task containers ask shoal's server on the network's gateway first.
    let dns = ok(&engine_docker(&[
        "inspect",
        &c,
        "--format",
        "{{json .HostConfig.Dns}}",
    ]));
    assert!(dns.starts_with("[\"10.0.201.1\""), "{dns}");

    // <service> is the VIP, tasks.<service> the three tasks.
    assert_eq!(lookup(&c, &web, 1), [vip.clone()].into());
    let tasks = lookup(&c, &format!("tasks.{web}"), 3);
    assert!(!tasks.contains(&vip), "{tasks:?}");

    // The VIP balances over the tasks; each task answers on its address.
    let mut through_vip = std::collections::BTreeSet::new();
    for _ in 0..30 {
        if through_vip.len() == 3 {
            break;
        }
        let host = wait_for("http://<service>/ through the VIP", CONVERGE, || {
            fetch_hostname(&c, &web)
        });
        through_vip.insert(host);
    }
    let direct: std::collections::BTreeSet<String> = tasks
        .iter()
        .map(|ip| fetch_hostname(&c, ip).unwrap_or_else(|| panic!("task {ip} does not answer")))
        .collect();
    assert_eq!(through_vip, direct);

    // A task reaches its own service's VIP, also when it lands on itself.
    let web_tasks = node_containers(
        &node.id,
        &[
            "--filter",
            &format!("label=com.docker.swarm.service.name={web}"),
        ],
    );
    let from_task = wait_for("every task through the VIP from a task", CONVERGE, || {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..9 {
            seen.insert(fetch_hostname(&web_tasks[0], &web)?);
        }
        (seen == direct).then_some(seen)
    });
    assert_eq!(from_task.len(), 3);

    // UDP through the VIP too (echo servers in the tasks' network namespaces).
    udp_through_vip(&c, &web_tasks, &vip);

    // A plain container on the attachable overlay asks shoal too.
    let plain = shoal.docker_ok(&["run", "--rm", "--network", &net, IMAGE, "nslookup", &web]);
    assert!(
        plain.lines().any(|l| l == format!("Address: {vip}")),
        "{plain}"
    );

    // A task by its name, `<service>.<slot>.<taskid>`.
    let task = shoal.docker_ok(&[
        "service",
        "ps",
        &web,
        "--no-trunc",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Name}}.{{.ID}}",
    ]);
    let task = task.lines().next().unwrap_or_default();
    let one = lookup(&c, task, 1);
    assert!(tasks.is_superset(&one), "{task}: {one:?} not in {tasks:?}");

    // dnsrr: the name is the tasks' addresses, no VIP.
    let rr_tasks = lookup(&c, &format!("tasks.{rr}"), 2);
    assert_eq!(lookup(&c, &rr, 2), rr_tasks);
    let rr_endpoint = shoal.docker_ok(&[
        "service",
        "inspect",
        &rr,
        "--format",
        "{{json .Endpoint.VirtualIPs}}",
    ]);
    assert_eq!(rr_endpoint.trim(), "null");

    // Other names are refused by shoal (the host's resolvers answer them).
    let refused = exec(&c, &["nslookup", "no-such-name.invalid", "10.0.201.1"]);
    assert!(
        format!("{}{}", stdout(&refused), stderr(&refused)).contains("REFUSED"),
        "{} {}",
        stdout(&refused),
        stderr(&refused)
    );

    // Scaled to one: tasks.<service> has one address, the VIP leads to it.
    shoal.docker_ok(&["service", "scale", "--detach", &format!("{web}=1")]);
    let left = lookup(&c, &format!("tasks.{web}"), 1);
    let left_ip = left.iter().next().cloned().unwrap_or_default();
    let left_host = fetch_hostname(&c, &left_ip).expect("the last task answers");
    for _ in 0..4 {
        assert_eq!(
            fetch_hostname(&c, &web).as_deref(),
            Some(left_host.as_str())
        );
    }

    // The VIP lives in this swarm's nft table and on the bridge until
    // shoal stops; a restart puts them back.
    let table = vip_table_of(&shoal);
    assert!(has_vip_table(&table), "{table} missing");
    assert!(has_host_address(&vip), "{vip} not on the bridge");
    shoal.stop();
    assert!(!has_vip_table(&table), "{table} left after shutdown");
    assert!(!has_host_address(&vip), "{vip} left after shutdown");
    shoal.restart();
    wait_for("the VIP table back after a restart", CONVERGE, || {
        (has_vip_table(&table) && has_host_address(&vip)).then_some(())
    });
    wait_for("the VIP answers after a restart", CONVERGE, || {
        fetch_hostname(&c, &web)
    });

    leave_clean(&node, &shoal);
    assert!(!has_vip_table(&table), "{table} left after leave");
    assert!(!has_host_address(&vip), "{vip} left after leave");
}

/// Answers each UDP datagram on port 5353 with its first argument.
const UDP_ECHO: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
s.bind(('0.0.0.0',5353))
while True:
    d,a=s.recvfrom(100)
    s.sendto(sys.argv[1].encode(),a)";

/// Sends one datagram to `argv[1]`:5353 and prints the answer.
const UDP_ASK: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(b'x',(sys.argv[1],5353))
print(s.recvfrom(100)[0].decode())";

fn pid_of(container: &str) -> String {
    ok(&engine_docker(&[
        "inspect",
        "--format",
        "{{.State.Pid}}",
        container,
    ]))
    .trim()
    .to_string()
}

/// Datagrams from `client` to `vip` reach every one of `tasks`. Needs
/// python3 on the host (run in the containers' network namespaces: busybox
/// has no UDP server).
fn udp_through_vip(client: &str, tasks: &[String], vip: &str) {
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    // Required, not skipped: a check that quietly skips can never fail.
    // scripts/test needs python3 anyway (the docker-py venv).
    assert!(python, "python3 is needed to check UDP through the VIP");
    let mut servers: Vec<std::process::Child> = tasks
        .iter()
        .map(|t| {
            std::process::Command::new("nsenter")
                .args(["-t", &pid_of(t), "-n", "python3", "-c", UDP_ECHO, t])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("nsenter python3")
        })
        .collect();
    let client_pid = pid_of(client);
    let ask = || {
        let out = std::process::Command::new("nsenter")
            .args(["-t", &client_pid, "-n", "python3", "-c", UDP_ASK, vip])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| stdout(&out).trim().to_string())
    };
    let answered = wait_for(
        "UDP answers from every task through the VIP",
        CONVERGE,
        || {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..tasks.len() * 2 {
                seen.insert(ask()?);
            }
            (seen.len() == tasks.len()).then_some(seen)
        },
    );
    for server in &mut servers {
        let _ = server.kill();
        let _ = server.wait();
    }
    let expected: std::collections::BTreeSet<String> = tasks.iter().cloned().collect();
    assert_eq!(answered, expected);
}

/// HTTP/1.0 GETs (one connection each) against a published port from a
/// few threads, until dropped: counts answers and failures, with reasons.
/// Each request is sent in two parts [`REQUEST_PAUSE`] apart, so that
/// requests are in flight whenever a task is stopped.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failures: std::sync::Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failures = std::sync::Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, answered, failures) = (stop.clone(), answered.clone(), failures.clone());
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match slow_get(port, "/hostname") {
                            Ok(_) => {
                                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(reason) => {
                                if let Ok(mut f) = failures.lock() {
                                    f.push(reason);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            answered,
            failures,
            threads,
        }
    }

    fn answered(&self) -> usize {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn failures(&self) -> Vec<String> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Lets at least `more` further requests be answered.
    #[track_caller]
    fn wait_answered(&self, more: usize) {
        let want = self.answered() + more;
        wait_for("answered requests", CONVERGE, || {
            (self.answered() >= want).then_some(())
        });
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

const REQUEST_PAUSE: Duration = Duration::from_millis(150);

/// `GET <path>` over HTTP/1.0, the request's last line sent after
/// [`REQUEST_PAUSE`]: the body of a 200 answer, else why not.
fn slow_get(port: u16, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\n").map_err(|e| format!("write: {e}"))?;
    std::thread::sleep(REQUEST_PAUSE);
    write!(s, "Host: x\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    match out.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") =>
        {
            Ok(body.to_string())
        }
        _ => Err(format!("answer: {out:?}")),
    }
}

/// The running containers of `service` (engine asked directly).
fn service_containers(node: &str, service: &str) -> std::collections::BTreeSet<String> {
    node_containers(
        node,
        &[
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
        ],
    )
    .into_iter()
    .collect()
}

#[test]
fn a_rolling_update_and_a_scale_down_under_load_drop_no_request() {
    let _serial = serial();
    let shoal = Shoal::start();
    let node = shoal.swarm_init();
    let web = unique("web");
    let port = free_port();
    shoal.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &web,
        "--replicas",
        "4",
        "--publish",
        &format!("{port}:80"),
        "--update-parallelism",
        "1",
        "--stop-grace-period",
        "2s",
        IMAGE,
        "sh",
        "-c",
        // Like most servers, it quits at once on SIGTERM, with whatever
        // requests it is serving (httpd as PID 1 would ignore SIGTERM).
        "trap 'exit 0' TERM; httpd -f -p 80 -h /etc & wait",
    ]);
    wait_running(&shoal, &web, 4);
    let before = wait_for("4 task containers", CONVERGE, || {
        let c = service_containers(&node.id, &web);
        (c.len() == 4).then_some(c)
    });
    let load = Load::start(port, 4);
    load.wait_answered(20);

    // Every task rolls, one at a time, while the requests go on.
    shoal.docker_ok(&["service", "update", "--detach", "--image", IMAGE_V2, &web]);
    wait_for("every task replaced", CONVERGE, || {
        let now = service_containers(&node.id, &web);
        let images = shoal.docker_ok(&[
            "service",
            "ps",
            &web,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Image}} {{.CurrentState}}",
        ]);
        let all_new = images.lines().count() == 4
            && images
                .lines()
                .all(|l| l.starts_with(IMAGE_V2) && l.contains("Running"));
        (now.len() == 4 && now.is_disjoint(&before) && all_new).then_some(())
    });
    load.wait_answered(20);
    assert_eq!(
        load.failures(),
        Vec::<String>::new(),
        "requests failed during the rolling update"
    );

    // Scaling down under load drops nothing either.
    shoal.docker_ok(&["service", "scale", "--detach", &format!("{web}=1")]);
    wait_for("one task left", CONVERGE, || {
        (service_containers(&node.id, &web).len() == 1).then_some(())
    });
    wait_running(&shoal, &web, 1);
    load.wait_answered(20);
    let failures = load.failures();
    let answered = load.answered();
    drop(load);
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "requests failed during the scale down"
    );
    assert!(answered >= 60, "{answered} answered");

    shoal.docker_ok(&["service", "rm", &web]);
    leave_clean(&node, &shoal);
}

/// The nft table of the swarm `shoal` runs.
fn vip_table_of(shoal: &Shoal) -> String {
    let cluster = shoal.docker_ok(&["info", "--format", "{{.Swarm.Cluster.ID}}"]);
    format!("shoal_{}", &cluster.trim()[..12])
}

/// A shoal killed with SIGKILL leaves its VIP table and bridges behind;
/// another shoal on the host cleans them up, while a live swarm's bridge,
/// even with no container left on it, is never touched.
#[test]
fn a_killed_swarms_leftovers_go_and_a_live_swarms_stay() {
    let _serial = serial();
    // The live swarm: an attachable network realised by a task, then empty.
    let live = Shoal::start();
    let live_node = live.swarm_init();
    let live_net = unique("livenet");
    let live_svc = unique("livesvc");
    // Subnets of their own: the swarms share the engine's address space.
    live.docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "--subnet",
        "10.231.1.0/24",
        &live_net,
    ]);
    create_client(&live, &live_svc, &live_net);
    wait_running(&live, &live_svc, 1);
    let live_bridges = realising_networks();
    assert_eq!(live_bridges.len(), 1, "{live_bridges:?}");
    live.docker_ok(&["service", "rm", &live_svc]);
    wait_for("the live swarm's task gone", CONVERGE, || {
        node_containers(&live_node.id, &["-a"])
            .is_empty()
            .then_some(())
    });

    // The swarm that dies: a service with a VIP on its own network.
    let mut doomed = Shoal::start();
    let doomed_node = doomed.swarm_init();
    let net = unique("net");
    let svc = unique("svc");
    doomed.docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.231.2.0/24",
        &net,
    ]);
    create_client(&doomed, &svc, &net);
    wait_running(&doomed, &svc, 1);
    let table = vip_table_of(&doomed);
    wait_for("the doomed swarm's VIP table", CONVERGE, || {
        has_vip_table(&table).then_some(())
    });
    let with_doomed = realising_networks();
    assert_eq!(with_doomed.len(), 2, "{with_doomed:?}");
    doomed.kill();
    // What a killed shoal leaves running, removed by hand (as an operator
    // would, or as the engine's restart would have stopped it).
    for container in node_containers(&doomed_node.id, &["-a"]) {
        ok(&engine_docker(&["rm", "-f", &container]));
    }
    drop(doomed_node);
    assert!(has_vip_table(&table), "the table outlived its shoal");

    // Another shoal's data plane removes both leftovers.
    let cleaner = Shoal::start();
    let cleaner_node = cleaner.swarm_init();
    wait_for(
        "the dead swarm's table and bridge removed",
        CONVERGE,
        || (!has_vip_table(&table) && realising_networks() == live_bridges).then_some(()),
    );
    // The same pass kept the live swarm's empty bridge (the very same
    // network: one made again would have another ID), and it still works.
    create_client(&live, &live_svc, &live_net);
    wait_running(&live, &live_svc, 1);

    cleaner_node.leave(&cleaner);
    leave_clean(&live_node, &live);
}
