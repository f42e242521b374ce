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

#[track_caller]
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

    shoal.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &web,
        "--replicas",
        "3",
        "--network",
        &net,
        "--publish",
        &format!("{port}:80"),
        "--stop-grace-period",
        "1s",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    shoal.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &client,
        "--network",
        &net,
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sleep",
        "3600",
    ]);
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
