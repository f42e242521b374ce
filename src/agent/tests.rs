//! Unit tests of the agent: the task → container mapping, and the loop
//! against the in-memory `FakeExecutor`; one test against the real engine.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{
    HealthConfig, Limit, Mount, MountType, Task, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecDnsConfig, TaskSpecContainerSpecPrivileges,
    TaskSpecContainerSpecPrivilegesCredentialSpec, TaskSpecContainerSpecSecrets, TaskSpecLogDriver,
    TaskSpecResources, TaskState, TaskStatus,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::fake::{FakeContainer, FakeExecutor};
use super::spec::{self, NodeInfo};
use super::*;
use crate::network::NodeNetwork;

const NODE: &str = "node0000000000000000000001";

fn node() -> NodeInfo {
    NodeInfo {
        id: NODE.to_string(),
        hostname: "host1".to_string(),
        os: "linux".to_string(),
        arch: "x86_64".to_string(),
    }
}

fn container_spec(image: &str) -> TaskSpecContainerSpec {
    TaskSpecContainerSpec {
        image: Some(image.to_string()),
        args: Some(vec!["sleep".to_string(), "1d".to_string()]),
        stop_grace_period: Some(1_000_000_000),
        ..Default::default()
    }
}

fn assignment(id: &str, slot: Option<i64>, cs: TaskSpecContainerSpec) -> Assignment {
    Assignment {
        task: Task {
            id: Some(id.to_string()),
            service_id: Some("svc000000000000000000000001".to_string()),
            slot,
            node_id: Some(NODE.to_string()),
            spec: Some(TaskSpec {
                container_spec: Some(cs),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: Some(TaskState::ASSIGNED),
                message: Some("scheduler assigned task to node".to_string()),
                ..Default::default()
            }),
            desired_state: Some(TaskState::RUNNING),
            ..Default::default()
        },
        service_name: "web".to_string(),
        ..Default::default()
    }
}

// ------------------------------------------------------------------ mapping

#[test]
fn names_and_labels_follow_swarm() {
    let mut cs = container_spec("busybox");
    cs.labels = Some(HashMap::from([
        ("com.docker.stack.namespace".to_string(), "st".to_string()),
        (spec::LABEL_NODE_ID.to_string(), "spoofed".to_string()),
    ]));
    let a = assignment("task1", Some(3), cs.clone());
    assert_eq!(spec::task_name(&a, NODE), "web.3.task1");
    let global = assignment("task2", None, cs);
    assert_eq!(spec::task_name(&global, NODE), format!("web.{NODE}.task2"));

    let labels = spec::container_labels(&a, NODE);
    assert_eq!(labels[spec::LABEL_NODE_ID], NODE);
    assert_eq!(
        labels[spec::LABEL_SERVICE_ID],
        "svc000000000000000000000001"
    );
    assert_eq!(labels[spec::LABEL_SERVICE_NAME], "web");
    assert_eq!(labels[spec::LABEL_TASK], "");
    assert_eq!(labels[spec::LABEL_TASK_ID], "task1");
    assert_eq!(labels[spec::LABEL_TASK_NAME], "web.3.task1");
    assert_eq!(labels["com.docker.stack.namespace"], "st");
}

#[test]
fn image_references() {
    assert_eq!(spec::normalize_image("busybox"), "busybox:latest");
    assert_eq!(spec::normalize_image("busybox:1.36"), "busybox:1.36");
    assert_eq!(
        spec::normalize_image("localhost:5000/x/busybox"),
        "localhost:5000/x/busybox:latest"
    );
    assert_eq!(
        spec::normalize_image("busybox@sha256:abc"),
        "busybox@sha256:abc"
    );
    assert!(spec::pinned("busybox:latest@sha256:abc"));
    assert!(!spec::pinned("busybox:latest"));
}

#[test]
fn container_config_maps_the_spec() {
    let cs = TaskSpecContainerSpec {
        image: Some("busybox".to_string()),
        command: Some(vec!["/bin/sh".to_string(), "-c".to_string()]),
        args: Some(vec!["echo hi".to_string()]),
        env: Some(vec![
            "SVC={{.Service.Name}}".to_string(),
            "SLOT={{ .Task.Slot }}".to_string(),
            "NODE={{.Node.Hostname}}-{{.Node.ID}}".to_string(),
        ]),
        hostname: Some("{{.Service.Name}}-{{.Task.Slot}}".to_string()),
        user: Some("nobody".to_string()),
        groups: Some(vec!["wheel".to_string()]),
        dir: Some("/tmp".to_string()),
        tty: Some(true),
        open_stdin: Some(true),
        read_only: Some(true),
        init: Some(true),
        stop_signal: Some("SIGINT".to_string()),
        stop_grace_period: Some(2_500_000_000),
        health_check: Some(HealthConfig {
            test: Some(vec!["CMD".to_string(), "true".to_string()]),
            ..Default::default()
        }),
        hosts: Some(vec!["10.0.0.1 db db.local".to_string()]),
        dns_config: Some(TaskSpecContainerSpecDnsConfig {
            nameservers: Some(vec!["1.1.1.1".to_string()]),
            search: Some(vec!["example.org".to_string()]),
            options: Some(vec!["ndots:2".to_string()]),
        }),
        mounts: Some(vec![Mount {
            typ: Some(MountType::VOLUME),
            source: Some("data-{{.Task.Slot}}".to_string()),
            target: Some("/data".to_string()),
            ..Default::default()
        }]),
        capability_add: Some(vec!["NET_ADMIN".to_string()]),
        capability_drop: Some(vec!["MKNOD".to_string()]),
        sysctls: Some(HashMap::from([(
            "net.core.somaxconn".to_string(),
            "1024".to_string(),
        )])),
        ..Default::default()
    };
    let mut a = assignment("task1", Some(2), cs);
    if let Some(ts) = a.task.spec.as_mut() {
        ts.resources = Some(TaskSpecResources {
            limits: Some(Limit {
                nano_cpus: Some(500_000_000),
                memory_bytes: Some(64 << 20),
                pids: Some(100),
            }),
            ..Default::default()
        });
        ts.log_driver = Some(TaskSpecLogDriver {
            name: Some("json-file".to_string()),
            options: Some(HashMap::from([("max-size".to_string(), "1m".to_string())])),
        });
    }
    let (name, body) = spec::container_config(&a, &node()).expect("config");
    assert_eq!(name, "web.2.task1");
    assert_eq!(body.image.as_deref(), Some("busybox:latest"));
    assert_eq!(
        body.entrypoint,
        Some(vec!["/bin/sh".to_string(), "-c".to_string()])
    );
    assert_eq!(body.cmd, Some(vec!["echo hi".to_string()]));
    assert_eq!(
        body.env,
        Some(vec![
            "SVC=web".to_string(),
            "SLOT=2".to_string(),
            format!("NODE=host1-{NODE}"),
        ])
    );
    assert_eq!(body.hostname.as_deref(), Some("web-2"));
    assert_eq!(body.user.as_deref(), Some("nobody"));
    assert_eq!(body.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(body.tty, Some(true));
    assert_eq!(body.open_stdin, Some(true));
    assert_eq!(body.stop_signal.as_deref(), Some("SIGINT"));
    assert!(body.healthcheck.is_some());
    assert_eq!(spec::stop_timeout_secs(&a), 2);
    let hc = body.host_config.expect("host config");
    assert_eq!(
        hc.restart_policy.and_then(|r| r.name),
        Some(bollard::models::RestartPolicyNameEnum::NO)
    );
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.memory, Some(64 << 20));
    assert_eq!(hc.pids_limit, Some(100));
    assert_eq!(hc.group_add, Some(vec!["wheel".to_string()]));
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(hc.init, Some(true));
    assert_eq!(
        hc.extra_hosts,
        Some(vec![
            "db:10.0.0.1".to_string(),
            "db.local:10.0.0.1".to_string()
        ])
    );
    assert_eq!(hc.dns, Some(vec!["1.1.1.1".to_string()]));
    assert_eq!(hc.dns_search, Some(vec!["example.org".to_string()]));
    assert_eq!(hc.dns_options, Some(vec!["ndots:2".to_string()]));
    assert_eq!(hc.cap_add, Some(vec!["NET_ADMIN".to_string()]));
    assert_eq!(hc.cap_drop, Some(vec!["MKNOD".to_string()]));
    assert_eq!(hc.sysctls.map(|s| s.len()), Some(1));
    let mounts = hc.mounts.expect("mounts");
    assert_eq!(mounts[0].source.as_deref(), Some("data-2"));
    let log = hc.log_config.expect("log config");
    assert_eq!(log.typ.as_deref(), Some("json-file"));
    // Args alone are the arguments of the image's entrypoint.
    let b = assignment("t", Some(1), container_spec("busybox"));
    let (_, body) = spec::container_config(&b, &node()).expect("config");
    assert_eq!(body.entrypoint, None);
    assert_eq!(body.cmd, Some(vec!["sleep".to_string(), "1d".to_string()]));
}

/// Privileges become security options as swarm's executor writes them.
#[test]
fn privileges_become_security_options() {
    let cs = TaskSpecContainerSpec {
        privileges: Some(TaskSpecContainerSpecPrivileges {
            credential_spec: Some(TaskSpecContainerSpecPrivilegesCredentialSpec {
                file: Some("spec.json".to_string()),
                ..Default::default()
            }),
            se_linux_context: Some(
                bollard::models::TaskSpecContainerSpecPrivilegesSeLinuxContext {
                    disable: Some(true),
                    user: Some("u".to_string()),
                    typ: Some("t".to_string()),
                    ..Default::default()
                },
            ),
            ..Default::default()
        }),
        ..container_spec("busybox")
    };
    let (_, body) = spec::container_config(&assignment("t", Some(1), cs), &node()).unwrap();
    let opts = body
        .host_config
        .and_then(|h| h.security_opt)
        .unwrap_or_default();
    assert_eq!(
        opts,
        [
            "credentialspec=file://spec.json",
            "label=disable",
            "label=user:u",
            "label=type:t"
        ]
    );
    // stack deploy's empty Privileges ({CredentialSpec: null, …}) adds nothing.
    let empty = TaskSpecContainerSpec {
        privileges: Some(TaskSpecContainerSpecPrivileges::default()),
        ..container_spec("busybox")
    };
    let (_, body) = spec::container_config(&assignment("t", Some(1), empty), &node()).unwrap();
    assert_eq!(body.host_config.and_then(|h| h.security_opt), None);
}

#[test]
fn bad_template_is_an_error() {
    let mut cs = container_spec("busybox");
    cs.env = Some(vec!["X={{.Nope}}".to_string()]);
    let a = assignment("t", Some(1), cs);
    let err = spec::container_config(&a, &node())
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("expanding env failed")));
}

#[test]
fn unsupported_fields_are_named() {
    assert!(unsupported_fields(&container_spec("busybox")).is_empty());
    let cs = TaskSpecContainerSpec {
        image: Some("busybox".to_string()),
        privileges: Some(TaskSpecContainerSpecPrivileges {
            credential_spec: Some(TaskSpecContainerSpecPrivilegesCredentialSpec::default()),
            no_new_privileges: Some(true),
            ..Default::default()
        }),
        secrets: Some(vec![TaskSpecContainerSpecSecrets::default()]),
        isolation: Some(bollard::models::TaskSpecContainerSpecIsolationEnum::HYPERV),
        mounts: Some(vec![Mount {
            typ: Some(MountType::NPIPE),
            ..Default::default()
        }]),
        env: Some(vec!["A={{index .Service.Labels \"x\"}}".to_string()]),
        ..Default::default()
    };
    assert_eq!(
        unsupported_fields(&cs),
        vec!["Isolation", "Mounts.Type=npipe", "Env"]
    );
    // What the api fills in on read-back is fine.
    let ok = TaskSpecContainerSpec {
        isolation: Some(bollard::models::TaskSpecContainerSpecIsolationEnum::DEFAULT),
        ..container_spec("busybox")
    };
    assert!(unsupported_fields(&ok).is_empty());
}

// ------------------------------------------------------------- the loop

struct Harness {
    fake: Arc<FakeExecutor>,
    tx: watch::Sender<Arc<Vec<Assignment>>>,
    reports: mpsc::Receiver<StatusReport>,
    seen: Vec<StatusReport>,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// Starts the agent with `initial` already sent (authoritative).
    fn start(fake: FakeExecutor, initial: Vec<Assignment>) -> Self {
        let fake = Arc::new(fake);
        let (tx, rx) = watch::channel(Arc::new(Vec::new()));
        tx.send_replace(Arc::new(initial));
        Self::start_with(fake, tx, rx)
    }

    fn start_with(
        fake: Arc<FakeExecutor>,
        tx: watch::Sender<Arc<Vec<Assignment>>>,
        rx: watch::Receiver<Arc<Vec<Assignment>>>,
    ) -> Self {
        let (rtx, reports) = mpsc::channel(1024);
        let shutdown = CancellationToken::new();
        let exec: Arc<dyn Executor> = fake.clone();
        let handle = tokio::spawn(run(
            NODE.to_string(),
            exec,
            NodeNetwork::without_engine(),
            rx,
            rtx,
            shutdown.clone(),
        ));
        Harness {
            fake,
            tx,
            reports,
            seen: Vec::new(),
            shutdown,
            handle,
        }
    }

    /// Collects reports until `cond` holds (fails after 5 s).
    async fn wait_until(&mut self, what: &str, cond: impl Fn(&Harness) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !cond(self) {
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some(r)) => self.seen.push(r),
                Ok(None) => panic!("report channel closed waiting for {what}"),
                Err(_) => {
                    if cond(self) {
                        return;
                    }
                    panic!(
                        "timed out waiting for {what}; reports: {:#?}; calls {:?}",
                        self.states(),
                        self.fake.calls()
                    )
                }
            }
        }
    }

    /// Drains reports for a short while (to check nothing more comes).
    async fn settle(&mut self) {
        while let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(150), self.reports.recv()).await
        {
            self.seen.push(r);
        }
    }

    fn states(&self) -> Vec<(String, TaskState)> {
        self.seen
            .iter()
            .filter_map(|r| r.status.state.map(|s| (r.task_id.clone(), s)))
            .collect()
    }

    fn states_of(&self, task: &str) -> Vec<TaskState> {
        self.seen
            .iter()
            .filter(|r| r.task_id == task)
            .filter_map(|r| r.status.state)
            .collect()
    }

    fn last(&self, task: &str) -> Option<&TaskStatus> {
        self.seen
            .iter()
            .rev()
            .find(|r| r.task_id == task)
            .map(|r| &r.status)
    }

    fn has(&self, task: &str, state: TaskState) -> bool {
        self.states_of(task).contains(&state)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.handle).await;
    }
}

fn with_desired(mut a: Assignment, d: TaskState) -> Assignment {
    a.task.desired_state = Some(d);
    a
}

fn with_state(mut a: Assignment, s: TaskState) -> Assignment {
    if let Some(st) = a.task.status.as_mut() {
        st.state = Some(s);
    }
    a
}

#[tokio::test]
async fn tasks_progress_to_running() {
    let tasks: Vec<_> = (1..=3)
        .map(|i| assignment(&format!("t{i}"), Some(i), container_spec("busybox")))
        .collect();
    let mut h = Harness::start(FakeExecutor::with_images(&["busybox:latest"]), tasks);
    h.wait_until("3 running", |h| {
        (1..=3).all(|i| h.has(&format!("t{i}"), TaskState::RUNNING))
    })
    .await;
    for i in 1..=3 {
        let id = format!("t{i}");
        assert_eq!(
            h.states_of(&id),
            vec![
                TaskState::ACCEPTED,
                TaskState::PREPARING,
                TaskState::READY,
                TaskState::STARTING,
                TaskState::RUNNING
            ]
        );
        let last = h.last(&id).cloned().unwrap_or_default();
        assert_eq!(last.message.as_deref(), Some("started"));
        assert!(last.timestamp.as_deref().is_some_and(|t| t.ends_with('Z')));
        let cs = last.container_status.unwrap_or_default();
        assert_eq!(cs.pid, Some(4242));
        assert_eq!(cs.exit_code, Some(0));
        assert_eq!(cs.container_id.map(|c| c.len()), Some(64));
    }
    let mut names: Vec<_> = h.fake.containers().into_iter().map(|c| c.name).collect();
    names.sort();
    assert_eq!(names, vec!["web.1.t1", "web.2.t2", "web.3.t3"]);
    // The failed pull happened once for all three.
    assert_eq!(h.fake.pulls(), vec!["busybox:latest"]);
    h.stop().await;
}

#[tokio::test]
async fn a_pull_that_moves_the_tag_makes_the_container_again() {
    let fake = FakeExecutor::with_images(&["busybox:latest"]);
    fake.pulls_move("busybox:latest");
    let mut h = Harness::start(
        fake,
        vec![assignment("t1", Some(1), container_spec("busybox"))],
    );
    h.wait_until("running", |h| h.has("t1", TaskState::RUNNING))
        .await;
    // The container made while the pull ran is gone; the one made after it runs.
    let calls = h.fake.calls();
    let creates = calls.iter().filter(|c| c.starts_with("create ")).count();
    assert_eq!(creates, 2, "{calls:?}");
    assert_eq!(h.fake.containers().len(), 1, "{calls:?}");
    assert_eq!(h.fake.containers()[0].starts, 1, "{calls:?}");
    h.stop().await;
}

#[tokio::test]
async fn desired_ready_creates_but_does_not_start() {
    let a = with_desired(
        assignment("t1", Some(1), container_spec("busybox")),
        TaskState::READY,
    );
    let mut h = Harness::start(
        FakeExecutor::with_images(&["busybox:latest"]),
        vec![a.clone()],
    );
    h.wait_until("ready", |h| h.has("t1", TaskState::READY))
        .await;
    h.settle().await;
    assert!(!h.has("t1", TaskState::STARTING));
    assert_eq!(h.fake.containers()[0].starts, 0);
    // Promoted to running.
    h.tx.send_replace(Arc::new(vec![with_state(
        with_desired(a, TaskState::RUNNING),
        TaskState::READY,
    )]));
    h.wait_until("running", |h| h.has("t1", TaskState::RUNNING))
        .await;
    assert_eq!(h.fake.containers()[0].starts, 1);
    h.stop().await;
}

#[tokio::test]
async fn missing_image_is_rejected() {
    let a = assignment("t1", Some(1), container_spec("nosuchimage-shoal:1"));
    let mut h = Harness::start(FakeExecutor::default(), vec![a]);
    h.wait_until("rejected", |h| h.has("t1", TaskState::REJECTED))
        .await;
    let last = h.last("t1").cloned().unwrap_or_default();
    assert_eq!(
        last.err.as_deref(),
        Some("No such image: nosuchimage-shoal:1")
    );
    assert_eq!(last.message.as_deref(), Some("preparing"));
    h.stop().await;
}

#[tokio::test]
async fn exits_are_reported() {
    let tasks = vec![
        assignment("t1", Some(1), container_spec("busybox")),
        assignment("t2", Some(2), container_spec("busybox")),
    ];
    let mut h = Harness::start(FakeExecutor::with_images(&["busybox:latest"]), tasks);
    h.wait_until("running", |h| {
        h.has("t1", TaskState::RUNNING) && h.has("t2", TaskState::RUNNING)
    })
    .await;
    let id_of = |h: &Harness, name: &str| {
        h.fake
            .containers()
            .into_iter()
            .find(|c| c.name == name)
            .map(|c| c.id)
            .unwrap_or_default()
    };
    h.fake.exit(&id_of(&h, "web.1.t1"), 137);
    h.fake.exit(&id_of(&h, "web.2.t2"), 0);
    h.wait_until("exits", |h| {
        h.has("t1", TaskState::FAILED) && h.has("t2", TaskState::COMPLETE)
    })
    .await;
    let t1 = h.last("t1").cloned().unwrap_or_default();
    assert_eq!(t1.err.as_deref(), Some("task: non-zero exit (137)"));
    assert_eq!(t1.container_status.and_then(|c| c.exit_code), Some(137));
    let t2 = h.last("t2").cloned().unwrap_or_default();
    assert_eq!(t2.message.as_deref(), Some("finished"));
    // A terminal task stays put: no restart by the agent.
    h.settle().await;
    assert!(h.fake.containers().iter().all(|c| c.starts == 1));
    h.stop().await;
}

/// Polls the fake engine (which reports nothing) until `cond` holds.
async fn until_engine(h: &Harness, what: &str, cond: impl Fn(&[FakeContainer]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond(&h.fake.containers()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            h.fake.calls()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn shutdown_stops_and_keeps_containers_until_tasks_leave_the_history() {
    let tasks: Vec<_> = (1..=3)
        .map(|i| assignment(&format!("t{i}"), Some(i), container_spec("busybox")))
        .collect();
    let mut h = Harness::start(
        FakeExecutor::with_images(&["busybox:latest"]),
        tasks.clone(),
    );
    h.wait_until("running", |h| {
        (1..=3).all(|i| h.has(&format!("t{i}"), TaskState::RUNNING))
    })
    .await;
    // t1 desired shutdown, t2 desired remove, t3 vanishes.
    let ended = vec![
        with_desired(
            with_state(tasks[0].clone(), TaskState::RUNNING),
            TaskState::SHUTDOWN,
        ),
        with_desired(
            with_state(tasks[1].clone(), TaskState::RUNNING),
            TaskState::REMOVE,
        ),
    ];
    h.tx.send_replace(Arc::new(ended.clone()));
    h.wait_until("shutdown", |h| {
        h.has("t1", TaskState::SHUTDOWN) && h.has("t2", TaskState::SHUTDOWN)
    })
    .await;
    // Tasks still in the history keep their stopped containers (their logs
    // stay readable); the one that left it loses its container.
    until_engine(&h, "t3's container removed", |cs| {
        cs.len() == 2 && cs.iter().all(|c| c.state == RunState::Exited)
    })
    .await;
    let names: HashSet<String> = h.fake.containers().into_iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        HashSet::from(["web.1.t1".to_string(), "web.2.t2".to_string()])
    );
    assert!(h
        .fake
        .calls()
        .iter()
        .any(|c| c.starts_with("stop ") && c.ends_with(" 1")));
    let t1 = h.last("t1").cloned().unwrap_or_default();
    assert_eq!(t1.message.as_deref(), Some("shutdown"));
    assert_eq!(t1.container_status.and_then(|c| c.exit_code), Some(137));
    // A stop is not a failure, and a vanished task gets no report.
    h.settle().await;
    assert!(!h.has("t1", TaskState::FAILED));
    assert!(!h.has("t3", TaskState::SHUTDOWN) && !h.has("t3", TaskState::FAILED));
    // Kept containers are not stopped again while they wait.
    let stops = |h: &Harness| {
        h.fake
            .calls()
            .iter()
            .filter(|c| c.starts_with("stop "))
            .count()
    };
    assert_eq!(stops(&h), 3);
    // The tasks leave the history: their containers go.
    h.tx.send_replace(Arc::new(Vec::new()));
    until_engine(&h, "every container removed", |cs| cs.is_empty()).await;
    h.stop().await;
}

fn own_labels(task: &str, name: &str) -> HashMap<String, String> {
    HashMap::from([
        (spec::LABEL_NODE_ID.to_string(), NODE.to_string()),
        (spec::LABEL_TASK_ID.to_string(), task.to_string()),
        (spec::LABEL_TASK_NAME.to_string(), name.to_string()),
    ])
}

#[tokio::test]
async fn adoption_after_restart() {
    let fake = FakeExecutor::with_images(&["busybox:latest"]);
    let running = fake.insert("web.1.t1", own_labels("t1", "web.1.t1"), RunState::Running);
    let starting = fake.insert("web.2.t2", own_labels("t2", "web.2.t2"), RunState::Running);
    let orphan = fake.insert(
        "web.3.gone",
        own_labels("gone", "web.3.gone"),
        RunState::Running,
    );
    let other_node = fake.insert(
        "other.1.x",
        HashMap::from([
            (spec::LABEL_NODE_ID.to_string(), "someoneelse".to_string()),
            (spec::LABEL_TASK_ID.to_string(), "x".to_string()),
        ]),
        RunState::Running,
    );
    let tasks = vec![
        with_state(
            assignment("t1", Some(1), container_spec("busybox")),
            TaskState::RUNNING,
        ),
        with_state(
            assignment("t2", Some(2), container_spec("busybox")),
            TaskState::STARTING,
        ),
    ];
    let mut h = Harness::start(fake, tasks);
    h.wait_until("t2 running", |h| h.has("t2", TaskState::RUNNING))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.fake.containers().iter().any(|c| c.id == orphan)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.settle().await;
    let ids: Vec<_> = h.fake.containers().into_iter().map(|c| c.id).collect();
    assert!(ids.contains(&running) && ids.contains(&starting) && ids.contains(&other_node));
    assert!(!ids.contains(&orphan), "orphan not removed");
    // t1 was already running in the store: no report; nothing created or started.
    assert!(h.states_of("t1").is_empty(), "{:?}", h.states());
    assert_eq!(
        h.last("t2")
            .and_then(|s| s.container_status.clone())
            .and_then(|c| c.container_id),
        Some(starting.clone())
    );
    assert!(!h
        .fake
        .calls()
        .iter()
        .any(|c| c.starts_with("create") || c.starts_with("start")));
    h.stop().await;
}

#[tokio::test]
async fn empty_initial_set_is_not_trusted() {
    let fake = Arc::new(FakeExecutor::with_images(&["busybox:latest"]));
    let kept = fake.insert("web.1.t1", own_labels("t1", "web.1.t1"), RunState::Running);
    let (tx, rx) = watch::channel(Arc::new(Vec::new()));
    let mut h = Harness::start_with(fake, tx, rx);
    h.settle().await;
    assert!(h.fake.containers().iter().any(|c| c.id == kept));
    // The real (empty) set arrives: now the container is an orphan.
    h.tx.send_replace(Arc::new(Vec::new()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !h.fake.containers().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(h.fake.containers().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn health_check_gates_running() {
    let mut cs = container_spec("busybox");
    cs.health_check = Some(HealthConfig {
        test: Some(vec!["CMD".to_string(), "true".to_string()]),
        ..Default::default()
    });
    let mut h = Harness::start(
        FakeExecutor::with_images(&["busybox:latest"]),
        vec![assignment("t1", Some(1), cs)],
    );
    h.wait_until("starting", |h| h.has("t1", TaskState::STARTING))
        .await;
    h.settle().await;
    assert!(!h.has("t1", TaskState::RUNNING));
    let id = h.fake.containers()[0].id.clone();
    h.fake.set_health(&id, true);
    h.wait_until("running", |h| h.has("t1", TaskState::RUNNING))
        .await;
    h.stop().await;
}

#[tokio::test]
async fn resync_after_event_stream_breaks() {
    let mut h = Harness::start(
        FakeExecutor::with_images(&["busybox:latest"]),
        vec![assignment("t1", Some(1), container_spec("busybox"))],
    );
    h.wait_until("running", |h| h.has("t1", TaskState::RUNNING))
        .await;
    let id = h.fake.containers()[0].id.clone();
    // Engine restart: the stream breaks and the container died meanwhile.
    h.fake.set_state_silently(&id, RunState::Exited, Some(143));
    h.fake.break_events();
    h.wait_until("failed", |h| h.has("t1", TaskState::FAILED))
        .await;
    assert_eq!(
        h.last("t1").and_then(|s| s.err.clone()).as_deref(),
        Some("task: non-zero exit (143)")
    );
    h.stop().await;
}

#[tokio::test]
async fn remove_all_own_removes_only_ours() {
    let fake = FakeExecutor::default();
    fake.insert("a", own_labels("t1", "a"), RunState::Running);
    fake.insert("b", own_labels("t2", "b"), RunState::Exited);
    fake.insert(
        "c",
        HashMap::from([(spec::LABEL_NODE_ID.to_string(), "other".to_string())]),
        RunState::Running,
    );
    let n = remove_all_own(&fake, NODE).await.expect("remove");
    assert_eq!(n, 2);
    let left: Vec<_> = fake.containers().into_iter().map(|c| c.name).collect();
    assert_eq!(left, vec!["c"]);
}

// --------------------------------------------------------- real engine

/// `agent::run` against the local engine: 3 tasks running `sleep 1d`, then
/// desired shutdown removes them. Skips when there is no engine.
#[tokio::test]
async fn real_engine_runs_and_removes_tasks() {
    const SOCK: &str = "/var/run/docker.sock";
    if !std::path::Path::new(SOCK).exists() {
        eprintln!("skipping: no engine at {SOCK}");
        return;
    }
    let exec = match crate::engine::EngineSettings::new(&format!("unix://{SOCK}"), None) {
        Ok(engine) => Arc::new(DockerExecutor::new(engine)),
        Err(e) => {
            eprintln!("skipping: {e}");
            return;
        }
    };
    match exec.image_id("busybox:latest").await {
        Ok(Some(_)) => {}
        other => {
            eprintln!(
                "skipping: busybox:latest not available ({other:?}); run scripts/make-test-images"
            );
            return;
        }
    }
    let node_id = format!("agenttest{:016x}", rand::random::<u64>());
    let service = format!("agt{:08x}", rand::random::<u32>());
    let tasks: Vec<Assignment> = (1..=3)
        .map(|i| {
            let mut a = assignment(
                &format!("{service}task{i}"),
                Some(i),
                container_spec("busybox:latest"),
            );
            a.task.node_id = Some(node_id.clone());
            a.service_name = service.clone();
            a
        })
        .collect();
    let (tx, rx) = watch::channel(Arc::new(Vec::new()));
    tx.send_replace(Arc::new(tasks.clone()));
    let (rtx, mut rrx) = mpsc::channel(1024);
    let shutdown = CancellationToken::new();
    let dyn_exec: Arc<dyn Executor> = exec.clone();
    let handle = tokio::spawn(run(
        node_id.clone(),
        dyn_exec,
        NodeNetwork::without_engine(),
        rx,
        rtx,
        shutdown.clone(),
    ));

    let result = async {
        let mut seen: Vec<StatusReport> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let running = |seen: &Vec<StatusReport>| {
            seen.iter()
                .filter(|r| r.status.state == Some(TaskState::RUNNING))
                .count()
        };
        while running(&seen) < 3 {
            match tokio::time::timeout_at(deadline, rrx.recv()).await {
                Ok(Some(r)) => {
                    assert!(
                        !matches!(
                            r.status.state,
                            Some(TaskState::FAILED | TaskState::REJECTED)
                        ),
                        "{r:?}"
                    );
                    seen.push(r)
                }
                _ => return Err(format!("no 3 running reports: {seen:#?}")),
            }
        }
        let own = exec.list_own(&node_id).await.map_err(|e| e.to_string())?;
        if own.len() != 3 {
            return Err(format!("want 3 containers, got {own:?}"));
        }
        for (i, t) in tasks.iter().enumerate() {
            let name = format!("{service}.{}.{}", i + 1, spec::task_id(t));
            let c = own
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| format!("no container {name}: {own:?}"))?;
            if c.state != RunState::Running
                || c.labels.get(spec::LABEL_TASK_NAME) != Some(&name)
                || c.labels.get(spec::LABEL_SERVICE_NAME) != Some(&service)
                || c.labels.get(spec::LABEL_TASK).map(String::as_str) != Some("")
            {
                return Err(format!("bad container {c:?}"));
            }
        }
        // Desired shutdown: stopped (1 s grace) and kept while the tasks are
        // in the history; removed once they leave it.
        let down: Vec<_> = tasks
            .iter()
            .map(|t| {
                with_desired(
                    with_state(t.clone(), TaskState::RUNNING),
                    TaskState::SHUTDOWN,
                )
            })
            .collect();
        tx.send_replace(Arc::new(down));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            while let Ok(r) = rrx.try_recv() {
                seen.push(r);
            }
            let shut = seen
                .iter()
                .filter(|r| r.status.state == Some(TaskState::SHUTDOWN))
                .count();
            let left = exec.list_own(&node_id).await.map_err(|e| e.to_string())?;
            let stopped = left.len() == 3 && left.iter().all(|c| c.state == RunState::Exited);
            if shut == 3 && stopped {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("not stopped: {left:?}; {shut} shutdown reports"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tx.send_replace(Arc::new(Vec::new()));
        loop {
            let left = exec.list_own(&node_id).await.map_err(|e| e.to_string())?;
            if left.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("not removed: {left:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    .await;
    shutdown.cancel();
    let _ = handle.await;
    // Leak nothing, whatever happened.
    let _ = remove_all_own(exec.as_ref(), &node_id).await;
    if let Err(e) = result {
        panic!("{e}");
    }
}
