//! Faults around shoal, seen through the docker CLI: an engine that accepts
//! only TLS, an engine killed and started again, a full disk under the data
//! dir. The engine cases run on a simulated host ([`common::hosts`]) with
//! its own dockerd.
//!
//! Needs root (skipped without it, unless SHOAL_REQUIRE_HOSTS=1 as in CI).

mod common;

use std::time::Duration;

use common::hosts::{Host, Hosts};
use common::*;

/// How long a service change may take to show on the engine.
const CONVERGE: Duration = Duration::from_secs(40);

fn init(h: &Host) {
    h.docker_ok(&["swarm", "init", "--advertise-addr", &h.ip.to_string()]);
}

/// IDs of the running containers of service `name` on the host's engine.
fn engine_containers(h: &Host, name: &str) -> Option<Vec<String>> {
    let filter = format!("label=com.docker.swarm.service.name={name}");
    let out = h.engine_docker(&["ps", "-q", "--filter", &filter]);
    out.status.success().then(|| {
        stdout(&out)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    })
}

/// Waits until exactly `n` containers of `name` run on the engine, and the
/// service says `n/n`.
#[track_caller]
fn wait_running(h: &Host, name: &str, n: usize) -> Vec<String> {
    wait_for(
        &format!("{n} running containers of {name} on {}", h.name),
        CONVERGE,
        || {
            let ids = engine_containers(h, name)?;
            let replicas = h.docker(&["service", "ls", "--filter", &format!("name={name}")]);
            let want = format!("{n}/{n}");
            (ids.len() == n && stdout(&replicas).contains(&want)).then_some(ids)
        },
    )
}

/// Every part that talks to the engine (proxy, agent, networks) reaches an
/// engine that accepts only TLS with client certificates: a service's whole
/// life runs on it.
#[test]
fn a_service_lives_its_whole_life_on_an_engine_behind_tls() {
    let Some(hosts) = Hosts::try_start(1) else {
        return;
    };
    let h = hosts.host(1);
    let certs = Certs::generate();
    h.put_engine_behind_tls(&certs.server, &certs.client);
    // The engine answers nobody without a certificate, and not on its socket.
    assert!(
        !h.engine_sock().exists(),
        "the engine still has a unix socket"
    );

    // Proxied: the engine's own answer, over TLS.
    let version = h.docker_ok(&["version", "--format", "{{.Server.Version}}"]);
    assert!(!version.trim().is_empty());
    init(h);
    h.docker_ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sleep",
        "3600",
    ]);
    let first = wait_running(h, "web", 1);
    // The task's container on that engine is on the service's network.
    let networks = h.engine_docker_ok(&[
        "inspect",
        "--format",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        &first[0],
    ]);
    assert!(!networks.trim().is_empty(), "task container has no network");

    h.docker_ok(&["service", "scale", "--detach", "web=3"]);
    wait_running(h, "web", 3);

    h.docker_ok(&[
        "service",
        "update",
        "--detach",
        "--env-add",
        "PHASE=two",
        "web",
    ]);
    wait_for("the update to replace every task", CONVERGE, || {
        let ids = engine_containers(h, "web")?;
        let updated = ids.iter().all(|id| {
            let env = h.engine_docker(&["inspect", "--format", "{{.Config.Env}}", id]);
            stdout(&env).contains("PHASE=two")
        });
        (ids.len() == 3 && updated).then_some(())
    });

    h.docker_ok(&["service", "rm", "web"]);
    wait_for("the service's containers to go", CONVERGE, || {
        let all = h.engine_docker(&[
            "ps",
            "-aq",
            "--filter",
            "label=com.docker.swarm.service.name=web",
        ]);
        (all.status.success() && stdout(&all).trim().is_empty()).then_some(())
    });
    let ls = h.docker_ok(&["service", "ls", "-q"]);
    assert!(ls.trim().is_empty(), "services left: {ls}");
}

/// The engine killed under a running service: proxied calls get shoal's
/// 502 text while it is away; when it is back, the tasks run again (their
/// restart policy), exactly the replica count of containers (none
/// duplicated), and the service's name resolves in its network again.
#[test]
fn a_killed_engine_comes_back_and_the_service_recovers() {
    let Some(hosts) = Hosts::try_start(1) else {
        return;
    };
    let h = hosts.host(1);
    init(h);
    h.docker_ok(&["network", "create", "--driver", "overlay", "backnet"]);
    h.docker_ok(&[
        "service",
        "create",
        "--name",
        "back",
        "--replicas",
        "2",
        "--network",
        "backnet",
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sleep",
        "3600",
    ]);
    let before = wait_running(h, "back", 2);
    let resolves = |id: &str| {
        let out = h.engine_docker(&["exec", id, "nslookup", "back"]);
        out.status.success() && stdout(&out).contains("Address")
    };
    wait_for("`back` to resolve in a task", CONVERGE, || {
        resolves(&before[0]).then_some(())
    });

    h.kill_engine();
    // While it is away: the proxied call fails with shoal's 502 text, and
    // shoal's own endpoints still answer.
    let ps = h.docker(&["ps"]);
    assert!(!ps.status.success(), "docker ps worked without an engine");
    assert!(
        stderr(&ps).contains("cannot reach the Docker engine"),
        "unexpected error while the engine is away: {}",
        stderr(&ps)
    );
    h.docker_ok(&["service", "ls"]);

    h.start_engine_again();
    let after = wait_running(h, "back", 2);
    wait_for("`back` to resolve again", CONVERGE, || {
        resolves(&after[0]).then_some(())
    });
    // Still two, and no more (stopped ones included): nothing adopted
    // twice, nothing started beside.
    let all = h.engine_docker_ok(&[
        "ps",
        "-a",
        "--filter",
        "label=com.docker.swarm.service.name=back",
        "--format",
        "{{.ID}} {{.Label \"com.docker.swarm.task.id\"}} {{.CreatedAt}} {{.Status}}",
    ]);
    let tasks = h.docker_ok(&[
        "service",
        "ps",
        "back",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.DesiredState}} {{.CurrentState}} {{.Error}}",
    ]);
    let running = engine_containers(h, "back").unwrap_or_default();
    assert_eq!(running.len(), 2, "running containers of back: {running:?}");
    let mut task_ids: Vec<&str> = all
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let containers = task_ids.len();
    task_ids.sort_unstable();
    task_ids.dedup();
    assert_eq!(
        task_ids.len(),
        containers,
        "a task with two containers:\n{all}"
    );
    assert!(
        all.lines().count() <= 2 + before.len(),
        "containers of back:\n{all}\ntasks of back:\n{tasks}"
    );
    // The overlay's bridge is there again on the engine.
    let nets = h.engine_docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    let id = h.docker_ok(&["network", "inspect", "--format", "{{.Id}}", "backnet"]);
    let bridge = format!("shoal_{}", id.trim());
    assert!(
        nets.lines().any(|n| n == bridge),
        "no bridge {bridge} for backnet: {nets}"
    );
    h.docker_ok(&["service", "rm", "back"]);
    h.docker_ok(&["network", "rm", "backnet"]);
}

/// A tmpfs mounted over a directory for one test; unmounted at drop (also
/// while a failed test unwinds).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let mut cmd = std::process::Command::new("mount");
        cmd.args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir);
        ok(&run(cmd, None, Duration::from_secs(10)));
        Tmpfs(dir.to_path_buf())
    }

    /// Writes zeros to `name` until the file system is full; returns its path.
    fn fill(&self, name: &str) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join(name);
        let mut file = std::fs::File::create(&path).expect("create the filler");
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // Byte by byte for the last partial chunk.
        while file.write_all(&[0]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A full disk under the data dir: writes are refused with the engine's
/// error shape and a message naming the cause, reads go on, nothing
/// acknowledged is lost, the dir is not corrupted (shoal restarts from
/// it), and writes work again once there is room.
#[test]
fn a_full_data_dir_refuses_writes_and_loses_nothing() {
    if unsafe { libc::geteuid() } != 0 {
        let required = std::env::var("SHOAL_REQUIRE_HOSTS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "SHOAL_REQUIRE_HOSTS=1 but not root (tmpfs mount)"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let mut shoal = Shoal::start();
    shoal.stop();
    let data = shoal.dir().join("data");
    let _ = std::fs::remove_dir_all(&data);
    let disk = Tmpfs::mount(&data, "24m");
    shoal.restart();
    let _swarm = shoal.swarm_init();
    let create = |name: &str| {
        shoal.docker(&[
            "service",
            "create",
            "--detach",
            "--name",
            name,
            "--replicas",
            "0",
            IMAGE,
            "true",
        ])
    };
    let secret = |name: &str| shoal.docker_stdin(&["secret", "create", name, "-"], b"s3cret");
    ok(&create("before"));
    ok(&secret("before-secret"));

    let filler = disk.fill("filler");
    // Writes may still land in room the store had claimed before; every one
    // acknowledged must survive. Some write soon meets the full disk.
    let mut accepted = vec!["before".to_string()];
    let refused = (0..200)
        .find_map(|i| {
            let name = format!("during{i}");
            let out = create(&name);
            if out.status.success() {
                accepted.push(name);
                return None;
            }
            Some(out)
        })
        .expect("200 service creates on a full disk all worked");
    assert!(
        stderr(&refused).to_lowercase().contains("no space"),
        "service create on a full disk: {}",
        stderr(&refused)
    );
    let refused = secret("during-secret");
    assert!(
        !refused.status.success(),
        "secret create on a full disk worked"
    );
    assert!(
        stderr(&refused).to_lowercase().contains("no space"),
        "secret create on a full disk: {}",
        stderr(&refused)
    );
    // The raw answer: a non-2xx status and the engine's {"message"} shape.
    let raw = shoal.http_json(
        "POST",
        "/v1.41/secrets/create",
        &serde_json::json!({"Name": "raw", "Data": "eA=="}),
    );
    assert!(raw.status >= 500, "status {} on a full disk", raw.status);
    assert!(raw.json()["message"].is_string(), "body: {}", raw.text());
    // Reads go on.
    let listed = |shoal: &Shoal, what: &str| {
        let ls = shoal.docker_ok(&[what, "ls", "--format", "{{.Name}}"]);
        let mut names: Vec<String> = ls.lines().map(str::to_string).collect();
        names.sort_unstable();
        names
    };
    accepted.sort_unstable();
    assert_eq!(listed(&shoal, "service"), accepted);

    std::fs::remove_file(&filler).expect("remove the filler");
    wait_for("writes to work again", CONVERGE, || {
        create("after").status.success().then_some(())
    });
    ok(&secret("after-secret"));

    shoal.restart();
    accepted.push("after".to_string());
    accepted.sort_unstable();
    assert_eq!(listed(&shoal, "service"), accepted);
    assert_eq!(listed(&shoal, "secret"), ["after-secret", "before-secret"]);
    drop(_swarm);
    shoal.stop();
}

/// A manager whose disk fills stays in the swarm: the leader and the other
/// manager go on committing, the full one refuses its own writes and the
/// leader's entries (rather than failing a log write, which stops raft for
/// good), keeps answering reads, and catches up by itself once there is
/// room again: no restart.
#[test]
fn a_manager_with_a_full_disk_catches_up_when_space_returns() {
    let Some(hosts) = Hosts::try_start(3) else {
        return;
    };
    let (h1, h2, h3) = (hosts.host(1), hosts.host(2), hosts.host(3));
    h3.stop_shoal();
    let data = h3.dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    let disk = Tmpfs::mount(&data, "24m");
    h3.start_shoal();
    init(h1);
    let manager_token = h1
        .docker_ok(&["swarm", "join-token", "-q", "manager"])
        .trim()
        .to_string();
    for h in [h2, h3] {
        h.docker_ok(&[
            "swarm",
            "join",
            "--token",
            &manager_token,
            "--advertise-addr",
            &h.ip.to_string(),
            &format!("{}:2377", h1.ip),
        ]);
    }
    let configs = |h: &Host| -> Option<Vec<String>> {
        let out = h.docker(&["config", "ls", "--format", "{{.Name}}"]);
        out.status.success().then(|| {
            let mut names: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
            names.sort_unstable();
            names
        })
    };
    h1.docker_ok(&["config", "create", "before", "/etc/hostname"]);
    wait_for("h3 has the first config", CONVERGE, || {
        (configs(h3)? == ["before"]).then_some(())
    });

    let filler = disk.fill("filler");
    // Writes through the leader, committed by h1 and h2; h3 cannot take
    // them (a log write on its full disk would fail).
    let mut expected = vec!["before".to_string()];
    for i in 0..10 {
        let name = format!("during-{i}");
        h1.docker_ok(&["config", "create", &name, "/etc/hostname"]);
        expected.push(name);
    }
    expected.sort_unstable();
    // h3 serves reads from what it has and refuses its own writes.
    assert!(configs(h3).is_some(), "h3 stopped answering reads");
    let refused = h3.docker(&["config", "create", "on-h3", "/etc/hostname"]);
    assert!(!refused.status.success(), "a write on the full h3 worked");
    assert!(
        stderr(&refused).to_lowercase().contains("no space"),
        "write on the full h3: {}",
        stderr(&refused)
    );
    assert!(h3.shoal_running(), "h3's shoal exited on a full disk");

    std::fs::remove_file(&filler).expect("remove the filler");
    wait_for("h3 caught up without a restart", CONVERGE, || {
        (configs(h3)? == expected).then_some(())
    });
    wait_for("writes through h3 again", CONVERGE, || {
        h3.docker(&["config", "create", "after", "/etc/hostname"])
            .status
            .success()
            .then_some(())
    });
    wait_for("h2 has h3's write", CONVERGE, || {
        configs(h2)?.contains(&"after".to_string()).then_some(())
    });
    assert!(h3.shoal_running(), "h3's shoal exited");
    drop(disk);
}
