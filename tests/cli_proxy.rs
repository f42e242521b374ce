//! End to end: the unmodified docker CLI, with DOCKER_HOST at a shoal in front
//! of the real local engine, sees what it would see from the engine itself.
//!
//! Every test starts its own shoal (own socket, data dir, ports) and names what
//! it creates on the engine `shoaltest-<random>-…`; a [`Cleanup`] guard removes
//! those at the end, pass or fail. Images come from scripts/make-test-images.
//! `control_commands_fail_once_shoal_is_stopped` proves the tests go through
//! shoal and cannot pass by reaching the engine directly.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

/// What the engine itself reports, read directly (for comparisons only).
fn engine_json(path: &str) -> serde_json::Value {
    let resp = http_unix(&engine_sock(), "GET", path, None).expect("engine answers");
    assert_eq!(resp.status, 200, "engine {path}: {}", resp.text());
    resp.json()
}

/// Starts `busybox sleep 600` named `name` through shoal; returns its id.
/// (busybox sleep as PID 1 ignores SIGTERM: the guard removes it with rm -f.)
fn run_sleeper(shoal: &Shoal, name: &str) -> String {
    shoal
        .docker_ok(&["run", "-d", "--name", name, IMAGE, "sleep", "600"])
        .trim()
        .to_string()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Deterministic bytes covering every value (not valid UTF-8).
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Happy paths through the docker CLI
// ---------------------------------------------------------------------------

#[test]
fn version_shows_the_engine_server_and_its_api_version() {
    let shoal = Shoal::start();
    let engine = engine_json("/version");

    let out = shoal.docker_ok(&["version"]);
    assert!(out.contains("Server:"), "no server section in:\n{out}");
    assert!(out.contains("Client:"), "no client section in:\n{out}");

    let api = shoal.docker_ok(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(api.trim(), engine["ApiVersion"].as_str().unwrap());
    assert_eq!(api.trim(), "1.41", "this machine's engine speaks 1.41");
    let server = shoal.docker_ok(&["version", "--format", "{{.Server.Version}}"]);
    assert_eq!(server.trim(), engine["Version"].as_str().unwrap());
}

#[test]
fn info_shows_the_engine() {
    let shoal = Shoal::start();
    let engine = engine_json("/info");

    let out = shoal.docker_ok(&["info"]);
    assert!(out.contains("Server Version:"), "no server part in:\n{out}");
    let version = shoal.docker_ok(&["info", "--format", "{{.ServerVersion}}"]);
    assert_eq!(version.trim(), engine["ServerVersion"].as_str().unwrap());
    let name = shoal.docker_ok(&["info", "--format", "{{.Name}}"]);
    assert_eq!(name.trim(), engine["Name"].as_str().unwrap());
}

#[test]
fn run_rm_echo_prints_and_propagates_exit_codes() {
    let _cleanup = Cleanup::new();
    let shoal = Shoal::start();

    let out = shoal.docker_ok(&["run", "--rm", IMAGE, "echo", "hello"]);
    assert_eq!(out, "hello\n");

    let out = shoal.docker(&["run", "--rm", IMAGE, "sh", "-c", "echo oops >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("oops"));
}

#[test]
fn run_interactive_with_piped_stdin() {
    let _cleanup = Cleanup::new();
    let shoal = Shoal::start();

    let small = b"first line\nsecond line\n";
    let out = shoal.docker_stdin(&["run", "-i", "--rm", IMAGE, "cat"], small);
    assert_eq!(ok(&out).as_bytes(), small);

    // 1 MiB of binary through the hijacked connection and back; `cat` only
    // finishes when its stdin is closed, so this also needs the half-close.
    let big = pattern(1 << 20);
    let out = shoal.docker_stdin(&["run", "-i", "--rm", IMAGE, "cat"], &big);
    ok(&out);
    assert_eq!(out.stdout.len(), big.len(), "bytes echoed back");
    assert!(out.stdout == big, "echoed bytes differ from the input");

    // `wc -c` prints only after EOF on stdin.
    let out = shoal.docker_stdin(&["run", "-i", "--rm", IMAGE, "wc", "-c"], &big);
    assert_eq!(ok(&out).trim(), "1048576");
}

#[test]
fn exec_into_a_running_container() {
    let cleanup = Cleanup::new();
    let shoal = Shoal::start();
    let name = cleanup.name("exec");
    run_sleeper(&shoal, &name);

    assert_eq!(shoal.docker_ok(&["exec", &name, "echo", "hi"]), "hi\n");
    let out = shoal.docker(&["exec", &name, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));

    let out = shoal.docker_stdin(&["exec", "-i", &name, "cat"], b"hello exec\n");
    assert_eq!(ok(&out), "hello exec\n");
    let data = pattern(256 * 1024);
    let out = shoal.docker_stdin(&["exec", "-i", &name, "wc", "-c"], &data);
    assert_eq!(ok(&out).trim(), "262144");

    // What exec wrote is really in the container.
    let out = shoal.docker_stdin(
        &["exec", "-i", &name, "sh", "-c", "cat > /tmp/in"],
        b"kept\n",
    );
    ok(&out);
    assert_eq!(
        shoal.docker_ok(&["exec", &name, "cat", "/tmp/in"]),
        "kept\n"
    );
}

#[test]
fn logs_follow_streams_and_ends_with_the_container() {
    let cleanup = Cleanup::new();
    let shoal = Shoal::start();
    let name = cleanup.name("logs");
    shoal.docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        IMAGE,
        "sh",
        "-c",
        "echo line1; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo line2; echo line3",
    ]);

    let mut cmd = shoal.docker_cmd();
    cmd.args(["logs", "-f", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn docker logs -f");
    let (tx, rx) = mpsc::channel();
    let reader = BufReader::new(child.stdout.take().unwrap());
    thread::spawn(move || {
        for line in reader.lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("docker logs -f: no {what} within 30s"))
    };

    // line1 arrives while the container is still running: it is streamed.
    assert_eq!(next("line1"), "line1");
    assert!(child.try_wait().unwrap().is_none(), "logs -f ended early");
    shoal.docker_ok(&["exec", &name, "touch", "/tmp/go"]);
    assert_eq!(next("line2"), "line2");
    assert_eq!(next("line3"), "line3");

    // The container exits, so `docker logs -f` ends by itself, successfully.
    let status = wait_for("docker logs -f to end", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "docker logs -f: {status}, stderr: {err}");
    assert!(
        rx.recv_timeout(Duration::from_secs(5)).is_err(),
        "no more lines"
    );
}

#[test]
fn build_a_tiny_dockerfile() {
    let cleanup = Cleanup::new();
    let shoal = Shoal::start();
    let tag = cleanup.image("build");
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:latest\nRUN echo built > /built\n",
    )
    .unwrap();

    let out = shoal.docker(&["build", "-t", &tag, ctx.path().to_str().unwrap()]);
    ok(&out);
    assert!(
        stdout(&out).contains("Successfully tagged") || stderr(&out).contains("naming to"),
        "build output:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        shoal.docker_ok(&["run", "--rm", &tag, "cat", "/built"]),
        "built\n"
    );
    shoal.docker_ok(&["rmi", &tag]);
}

#[test]
fn cp_both_ways() {
    let cleanup = Cleanup::new();
    let shoal = Shoal::start();
    let name = cleanup.name("cp");
    run_sleeper(&shoal, &name);
    let local = tempfile::tempdir().unwrap();

    // Host to container.
    let src = local.path().join("in.txt");
    fs::write(&src, "to the container\n").unwrap();
    shoal.docker_ok(&["cp", src.to_str().unwrap(), &format!("{name}:/tmp/in.txt")]);
    assert_eq!(
        shoal.docker_ok(&["exec", &name, "cat", "/tmp/in.txt"]),
        "to the container\n"
    );
    let big = local.path().join("big.bin");
    fs::write(&big, pattern(3 << 20)).unwrap();
    shoal.docker_ok(&["cp", big.to_str().unwrap(), &format!("{name}:/tmp/big.bin")]);
    assert_eq!(
        shoal
            .docker_ok(&["exec", &name, "wc", "-c", "/tmp/big.bin"])
            .split_whitespace()
            .next(),
        Some("3145728")
    );

    // Container to host: a file and a directory.
    shoal.docker_ok(&[
        "exec",
        &name,
        "sh",
        "-c",
        "echo from the container > /tmp/out.txt",
    ]);
    let dst = local.path().join("out.txt");
    shoal.docker_ok(&["cp", &format!("{name}:/tmp/out.txt"), dst.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(&dst).unwrap(), "from the container\n");
    let etc = local.path().join("etc");
    shoal.docker_ok(&["cp", &format!("{name}:/etc"), etc.to_str().unwrap()]);
    assert!(fs::read_to_string(etc.join("passwd"))
        .unwrap()
        .starts_with("root:"));
    let back = local.path().join("big-back.bin");
    shoal.docker_ok(&[
        "cp",
        &format!("{name}:/tmp/big.bin"),
        back.to_str().unwrap(),
    ]);
    assert!(fs::read(&back).unwrap() == fs::read(&big).unwrap());
}

#[test]
fn events_since_until_show_a_container_lifecycle() {
    let cleanup = Cleanup::new();
    let shoal = Shoal::start();
    let name = cleanup.name("events");
    let since = unix_now() - 1;
    shoal.docker_ok(&["run", "--name", &name, IMAGE, "true"]);
    let until = unix_now() + 1;

    let out = shoal.docker_ok(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        &format!("container={name}"),
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    ]);
    let actions: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("container ") && l.ends_with(&name))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    let pos = |a: &str| {
        actions
            .iter()
            .position(|x| *x == a)
            .unwrap_or_else(|| panic!("no {a} event in:\n{out}"))
    };
    assert!(pos("create") < pos("start"), "{out}");
    assert!(pos("start") < pos("die"), "{out}");
}

#[test]
fn save_and_load_through_pipes() {
    let cleanup = Cleanup::new();
    let shoal = Shoal::start();
    let tag = cleanup.image("save");
    shoal.docker_ok(&["tag", IMAGE, &tag]);
    let id = shoal.docker_ok(&["image", "inspect", "--format", "{{.Id}}", &tag]);

    // `docker save TAG | docker load`, both through shoal, through an OS pipe.
    let mut save = shoal.docker_cmd();
    save.args(["save", &tag])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut save = save.spawn().expect("spawn docker save");
    let mut load = shoal.docker_cmd();
    load.arg("load");
    let pipe = save.stdout.take().unwrap();
    load.stdin(Stdio::from(pipe))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let load_out = wait_child(load.spawn().expect("spawn docker load"), "docker load");
    let save_status = wait_for("docker save to end", CMD_TIMEOUT, || {
        save.try_wait().unwrap()
    });
    assert!(save_status.success(), "docker save: {save_status}");
    assert!(
        stdout(&load_out).contains(&format!("Loaded image: {tag}")),
        "docker load: {}\n{}",
        stdout(&load_out),
        stderr(&load_out)
    );

    // And the long way: save to bytes, remove the image, load it back from stdin.
    let tar = shoal.docker(&["save", &tag]);
    ok(&tar);
    assert!(
        tar.stdout.len() > 1 << 20,
        "an image tar of {} bytes",
        tar.stdout.len()
    );
    shoal.docker_ok(&["rmi", &tag]);
    assert!(!engine_docker(&["image", "inspect", &tag]).status.success());
    let out = shoal.docker_stdin(&["load"], &tar.stdout);
    assert!(ok(&out).contains(&format!("Loaded image: {tag}")));
    assert_eq!(
        shoal.docker_ok(&["image", "inspect", "--format", "{{.Id}}", &tag]),
        id
    );
}

/// Waits (with the command deadline) for a spawned child with piped output.
fn wait_child(child: std::process::Child, what: &str) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CMD_TIMEOUT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{what} did not finish within {CMD_TIMEOUT:?}");
        }
    }
}

#[test]
fn stats_no_stream() {
    let cleanup = Cleanup::new();
    let shoal = Shoal::start();
    let name = cleanup.name("stats");
    let id = run_sleeper(&shoal, &name);

    let out = shoal.docker_ok(&["stats", "--no-stream", &name]);
    assert!(out.starts_with("CONTAINER ID"), "{out}");
    assert!(out.contains(&id[..12]) && out.contains(&name), "{out}");
    let out = shoal.docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}}",
        &name,
    ]);
    assert!(out.starts_with(&format!("{name} ")), "{out}");
    assert!(out.contains("iB"), "a memory figure in {out}");
}

#[test]
fn ps_and_rm_force() {
    let cleanup = Cleanup::new();
    let shoal = Shoal::start();
    let name = cleanup.name("ps");
    let id = run_sleeper(&shoal, &name);

    let names = shoal.docker_ok(&["ps", "--format", "{{.Names}}"]);
    assert!(names.lines().any(|l| l == name), "{name} not in:\n{names}");
    let out = shoal.docker_ok(&[
        "ps",
        "--no-trunc",
        "--filter",
        &format!("name={name}"),
        "--format",
        "{{.ID}} {{.Status}}",
    ]);
    assert!(out.starts_with(&format!("{id} Up")), "{out}");
    let table = shoal.docker_ok(&["ps", "-a"]);
    assert!(table.starts_with("CONTAINER ID"), "{table}");

    assert_eq!(shoal.docker_ok(&["rm", "-f", &name]).trim(), name);
    assert_eq!(
        shoal.docker_ok(&["ps", "-aq", "--filter", &format!("name={name}")]),
        ""
    );
    assert!(
        !engine_docker(&["inspect", &id]).status.success(),
        "still on the engine"
    );

    // The engine's error for a missing container, as the engine words it.
    let out = shoal.docker(&["rm", &name]);
    assert!(!out.status.success(), "rm of a missing container");
    assert!(
        stderr(&out).contains("No such container"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn raw_responses_match_the_engine() {
    let shoal = Shoal::start();
    for (method, path) in [
        ("GET", "/_ping"),
        ("HEAD", "/_ping"),
        ("GET", "/v1.41/containers/shoaltest-missing/json"),
        ("GET", "/v1.41/images/shoaltest-missing:latest/json"),
        (
            "GET",
            "/v1.41/containers/json?all=1&filters=%7B%22name%22%3A%5B%22shoaltest-none%22%5D%7D",
        ),
        ("GET", "/v1.41/no/such/endpoint"),
    ] {
        let direct = http_unix(&engine_sock(), method, path, None).unwrap();
        let via = shoal.http(method, path);
        assert_eq!(via.status, direct.status, "{method} {path}");
        assert_eq!(via.body, direct.body, "{method} {path}: {}", via.text());
        assert_eq!(
            via.header("content-type"),
            direct.header("content-type"),
            "{method} {path}"
        );
    }
}

// ---------------------------------------------------------------------------
// Error cases and the daemon's life cycle
// ---------------------------------------------------------------------------

#[test]
fn engine_unreachable_gives_502_naming_the_engine() {
    let shoal = Shoal::builder().engine("unix:///nonexistent.sock").start();

    let out = shoal.docker(&["version"]);
    assert!(
        !out.status.success(),
        "docker version succeeded: {}",
        stdout(&out)
    );
    let out = shoal.docker(&["ps"]);
    assert!(
        !out.status.success(),
        "docker ps succeeded: {}",
        stdout(&out)
    );
    assert!(!stderr(&out).is_empty());

    for path in [
        "/containers/json",
        "/v1.41/containers/json",
        "/v1.41/images/json?all=1",
    ] {
        let resp = shoal.http("GET", path);
        assert_eq!(resp.status, 502, "{path}: {}", resp.text());
        let msg = resp.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(msg.contains("/nonexistent.sock"), "{path}: message {msg:?}");
    }

    // shoal keeps serving: every attempt gets an HTTP answer.
    let mut shoal = shoal;
    for _ in 0..5 {
        let resp = http_unix(&shoal.sock, "GET", "/_ping", None).expect("shoal answers _ping");
        assert!(resp.status >= 200, "{}", resp.status);
    }
    assert!(shoal.is_running(), "shoal exited");
}

#[test]
fn shoal_recovers_when_the_engine_comes_back() {
    let engine_dir = tempfile::tempdir().unwrap();
    let engine_path = engine_dir.path().join("engine.sock");
    let engine_addr = format!("unix://{}", engine_path.display());
    let shoal = Shoal::builder().engine(&engine_addr).start();

    let resp = shoal.http("GET", "/containers/json");
    assert_eq!(resp.status, 502, "{}", resp.text());
    let msg = resp.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains(engine_path.to_str().unwrap()),
        "message {msg:?}"
    );
    assert!(!shoal.docker(&["ps"]).status.success());

    // The engine appears at that address: shoal serves it, no restart needed.
    let _engine = EngineForwarder::start(&engine_path);
    wait_for("shoal to reach the engine", Duration::from_secs(30), || {
        (shoal.http("GET", "/containers/json").status == 200).then_some(())
    });
    let out = shoal.docker_ok(&["run", "--rm", IMAGE, "echo", "back"]);
    assert_eq!(out, "back\n");
}

#[test]
fn a_socket_served_by_a_live_shoal_is_refused() {
    let cleanup = Cleanup::new();
    let first = Shoal::start();
    let mut second = Shoal::builder().socket(&first.sock).spawn();

    let status = wait_for(
        "the second shoal to give up",
        Duration::from_secs(30),
        || second.try_wait(),
    );
    assert!(!status.success(), "second shoal on a live socket: {status}");
    let log = second.logs();
    assert!(
        log.contains(first.sock.to_str().unwrap()),
        "the error should name the socket; the second shoal said:\n{log}"
    );

    // The first one is untouched.
    assert!(first.sock.exists());
    let resp = first.http("GET", "/_ping");
    assert_eq!((resp.status, resp.text().as_str()), (200, "OK"));
    let out = first.docker_ok(&[
        "run",
        "--rm",
        "--name",
        &cleanup.name("first"),
        IMAGE,
        "echo",
        "still here",
    ]);
    assert_eq!(out, "still here\n");
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("shoal.sock");

    // Left behind by a shoal killed with SIGKILL.
    let mut killed = Shoal::builder().socket(&sock).start();
    killed.kill();
    assert!(sock.exists(), "SIGKILL leaves the socket file");
    let mut next = Shoal::builder().socket(&sock).start();
    let resp = next.http("GET", "/_ping");
    assert_eq!((resp.status, resp.text().as_str()), (200, "OK"));
    next.docker_ok(&["ps"]);
    next.kill();

    // A plain file where the socket should be.
    fs::remove_file(&sock).ok();
    fs::write(&sock, "not a socket").unwrap();
    let third = Shoal::builder().socket(&sock).start();
    let resp = third.http("GET", "/_ping");
    assert_eq!((resp.status, resp.text().as_str()), (200, "OK"));
    third.docker_ok(&["version"]);
}

#[test]
fn socket_mode_is_0660() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let shoal = Shoal::start();
    let meta = fs::metadata(&shoal.sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
}

#[test]
fn sigterm_exits_zero_and_removes_the_socket() {
    let mut shoal = Shoal::start();
    shoal.docker_ok(&["version"]);

    // An in-flight stream does not hold shutdown up.
    let mut events = open_get(&shoal.sock, "/events").unwrap();
    let mut buf = [0u8; 512];
    let n = events.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let status = shoal.stop_within(Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM; log:\n{}",
        shoal.logs()
    );
    assert!(!shoal.sock.exists(), "socket file left behind");
    // The stream was closed, not left hanging.
    let mut rest = Vec::new();
    let _ = events.read_to_end(&mut rest);
}

#[test]
fn control_commands_fail_once_shoal_is_stopped() {
    let _cleanup = Cleanup::new();
    let mut shoal = Shoal::start();
    assert_eq!(
        shoal.docker_ok(&["run", "--rm", IMAGE, "echo", "hello"]),
        "hello\n"
    );
    shoal.docker_ok(&["ps"]);
    shoal.stop();

    for args in [
        &["version"][..],
        &["info"],
        &["ps"],
        &["run", "--rm", IMAGE, "echo", "hello"],
        &["images"],
    ] {
        let out = shoal.docker(args);
        assert!(
            !out.status.success(),
            "docker {} succeeded without shoal: {}",
            args.join(" "),
            stdout(&out)
        );
        assert!(!stdout(&out).contains("hello"));
    }
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

#[test]
fn tlsverify_accepts_the_cli_with_a_client_cert_and_refuses_without() {
    let certs = Certs::generate();
    let shoal = Shoal::builder().tlsverify(certs.server.clone()).start();
    let addr = shoal.tcp.unwrap();
    let host = format!("tcp://{addr}");
    let c = &certs.client;
    let tls_docker = |args: &[&str]| {
        let mut cmd = shoal.docker_cmd_no_host();
        cmd.arg("--tlsverify")
            .arg("--tlscacert")
            .arg(&c.ca)
            .arg("--tlscert")
            .arg(&c.cert)
            .arg("--tlskey")
            .arg(&c.key)
            .arg("-H")
            .arg(&host)
            .args(args);
        run(cmd, None, CMD_TIMEOUT)
    };

    let out = tls_docker(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(
        ok(&out).trim(),
        engine_json("/version")["ApiVersion"].as_str().unwrap()
    );
    ok(&tls_docker(&["ps"]));

    let curl = |extra: &[&str], url: &str| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "--max-time", "20"]).args(extra).arg(url);
        run(cmd, None, CMD_TIMEOUT)
    };
    let ca = certs.ca.to_str().unwrap();
    let url = format!("https://127.0.0.1:{}/_ping", addr.port());

    // With the client certificate: OK.
    let out = curl(
        &[
            "--cacert",
            ca,
            "--cert",
            c.cert.to_str().unwrap(),
            "--key",
            c.key.to_str().unwrap(),
        ],
        &url,
    );
    assert_eq!(ok(&out), "OK");

    // Without one: refused.
    let out = curl(&["--cacert", ca], &url);
    assert!(
        !out.status.success(),
        "no client cert accepted: {}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("OK"));

    // With one from another CA: refused.
    let other = Certs::generate();
    let out = curl(
        &[
            "--cacert",
            ca,
            "--cert",
            other.client.cert.to_str().unwrap(),
            "--key",
            other.client.key.to_str().unwrap(),
        ],
        &url,
    );
    assert!(
        !out.status.success(),
        "foreign client cert accepted: {}",
        stdout(&out)
    );

    // Plain HTTP on the TLS port: no engine answer.
    let out = curl(&[], &format!("http://127.0.0.1:{}/_ping", addr.port()));
    assert!(
        !(out.status.success() && stdout(&out) == "OK"),
        "plain HTTP served"
    );

    // shoal is still fine after refusing those.
    assert_eq!(
        ok(&curl(
            &[
                "--cacert",
                ca,
                "--cert",
                c.cert.to_str().unwrap(),
                "--key",
                c.key.to_str().unwrap()
            ],
            &url,
        )),
        "OK"
    );
}

// ---------------------------------------------------------------------------
// Leaks
// ---------------------------------------------------------------------------

/// Reads from a freshly opened stream until the header and some body arrived.
fn read_a_little(stream: &mut std::os::unix::net::UnixStream) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("stream ended: {:?}", String::from_utf8_lossy(&got)),
            ));
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() > end + 4 {
                return Ok(got);
            }
        }
    }
}

#[test]
fn a_thousand_aborted_log_streams_leave_no_engine_connections() {
    const STREAMS: usize = 1000;
    const THREADS: usize = 4;
    const BATCH: usize = 25; // streams a thread holds open at once

    let cleanup = Cleanup::new();
    let shoal = Shoal::start();
    let name = cleanup.name("ticker");
    let id = shoal
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            IMAGE,
            "sh",
            "-c",
            "while true; do echo tick; sleep 0.2; done",
        ])
        .trim()
        .to_string();
    let path = format!("/v1.41/containers/{id}/logs?follow=1&stdout=1");
    wait_for("the ticker to print", Duration::from_secs(30), || {
        let resp = shoal.http("GET", &format!("/containers/{id}/logs?stdout=1"));
        (resp.status == 200 && !resp.body.is_empty()).then_some(())
    });
    let baseline = shoal.socket_fd_count();

    // The accounting sees open streams (so the check below is not vacuous).
    let held: Vec<_> = (0..10)
        .map(|_| {
            let mut st = open_get(&shoal.sock, &path).unwrap();
            read_a_little(&mut st).unwrap();
            st
        })
        .collect();
    let fds = shoal.socket_fd_count();
    assert!(
        fds >= baseline + 10,
        "10 open streams: {fds} sockets, baseline {baseline}"
    );
    if let Some(n) = shoal.engine_connections() {
        assert!(
            n >= 10,
            "10 open streams but {n} engine connections counted"
        );
    }
    drop(held);

    let failures = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    let mut failures = Vec::new();
                    for _ in 0..STREAMS / THREADS / BATCH {
                        let mut open = Vec::with_capacity(BATCH);
                        for _ in 0..BATCH {
                            match open_get(&shoal.sock, &path).and_then(|mut st| {
                                let got = read_a_little(&mut st)?;
                                Ok((st, got))
                            }) {
                                Ok((st, got)) if got.starts_with(b"HTTP/1.1 200") => open.push(st),
                                Ok((_, got)) => {
                                    failures.push(String::from_utf8_lossy(&got).into_owned())
                                }
                                Err(e) => failures.push(e.to_string()),
                            }
                        }
                        drop(open); // abort them all mid-stream
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(
        failures.is_empty(),
        "{} of {STREAMS} streams failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );

    // Everything shoal opened for them goes away again.
    let bound = 16;
    let (fds, engine) = wait_for(
        "shoal's sockets to return near the baseline",
        Duration::from_secs(30),
        || {
            let fds = shoal.socket_fd_count();
            let engine = shoal.engine_connections();
            (fds <= baseline + bound && engine.is_none_or(|n| n <= bound)).then_some((fds, engine))
        },
    );
    eprintln!("leak check: {baseline} sockets before, {fds} after; {engine:?} engine connections");

    // And it still serves.
    let resp = shoal.http("GET", "/_ping");
    assert_eq!(resp.status, 200);
    shoal.docker_ok(&["ps"]);
}
