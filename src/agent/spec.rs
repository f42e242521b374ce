//! From a task to the engine's container: swarm's name, labels and the
//! `ContainerCreateBody` moby's cluster executor would build, plus the list
//! of ContainerSpec fields the agent does not honour yet.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, MountType, RestartPolicy,
    RestartPolicyNameEnum, TaskSpecContainerSpec, TaskSpecContainerSpecIsolationEnum,
    TaskSpecContainerSpecPrivilegesAppArmorModeEnum, TaskSpecContainerSpecPrivilegesCredentialSpec,
    TaskSpecContainerSpecPrivilegesSeLinuxContext, TaskSpecContainerSpecPrivilegesSeccompModeEnum,
};

use super::{template, AgentError, Assignment};

pub const LABEL_NODE_ID: &str = "com.docker.swarm.node.id";
pub const LABEL_SERVICE_ID: &str = "com.docker.swarm.service.id";
pub const LABEL_SERVICE_NAME: &str = "com.docker.swarm.service.name";
pub const LABEL_TASK: &str = "com.docker.swarm.task";
pub const LABEL_TASK_ID: &str = "com.docker.swarm.task.id";
pub const LABEL_TASK_NAME: &str = "com.docker.swarm.task.name";

/// Swarm's stop grace period when the spec gives none (10 s).
pub const DEFAULT_STOP_GRACE_NANOS: i64 = 10_000_000_000;

/// What the node knows about itself, for templates and global task names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub hostname: String,
    pub os: String,
    pub arch: String,
}

impl NodeInfo {
    /// This host: hostname from the kernel, platform as Docker names it.
    pub fn local(node_id: &str) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        NodeInfo {
            id: node_id.to_string(),
            hostname,
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        }
    }
}

/// The task's ID, `""` when unset.
pub fn task_id(a: &Assignment) -> &str {
    a.task.id.as_deref().unwrap_or("")
}

fn container_spec(a: &Assignment) -> Option<&TaskSpecContainerSpec> {
    a.task.spec.as_ref()?.container_spec.as_ref()
}

/// swarmkit's `naming.Task`: the task's own name when it has one, else
/// `<service>.<slot>.<taskid>`, with the node ID in place of the slot for
/// global tasks.
pub fn task_name(a: &Assignment, node_id: &str) -> String {
    if let Some(name) = a.task.name.as_deref().filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    let node = a
        .task
        .node_id
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(node_id);
    crate::manager::tasks::name_on(&a.service_name, &a.task, node)
}

/// Labels of the task container: ContainerSpec.Labels, then the task's own
/// labels, then swarm's system labels (which win).
pub fn container_labels(a: &Assignment, node_id: &str) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    if let Some(l) = container_spec(a).and_then(|c| c.labels.as_ref()) {
        labels.extend(l.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if let Some(l) = a.task.labels.as_ref() {
        labels.extend(l.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let system = [
        (LABEL_NODE_ID, node_id.to_string()),
        (
            LABEL_SERVICE_ID,
            a.task.service_id.clone().unwrap_or_default(),
        ),
        (LABEL_SERVICE_NAME, a.service_name.clone()),
        (LABEL_TASK, String::new()),
        (LABEL_TASK_ID, task_id(a).to_string()),
        (LABEL_TASK_NAME, task_name(a, node_id)),
    ];
    for (k, v) in system {
        labels.insert(k.to_string(), v);
    }
    labels
}

/// The image reference the container is created from: a bare name gets
/// `:latest` (moby's `reference.TagNameOnly`); digests and tags are kept.
pub fn normalize_image(image: &str) -> String {
    if image.contains('@') {
        return image.to_string();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// A reference pinned by digest (`name@sha256:…`) or an image ID: when it is
/// present locally, swarm does not pull it.
pub fn pinned(image: &str) -> bool {
    image.contains('@')
        || image.starts_with("sha256:")
        || (image.len() == 64 && image.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The stop timeout in whole seconds for `POST /containers/{id}/stop`
/// (Go truncates: 1.5 s → 1 s).
pub fn stop_timeout_secs(a: &Assignment) -> i64 {
    whole_seconds(stop_grace(a))
}

/// A grace period as the stop endpoint's whole seconds (truncated, as Go).
pub fn whole_seconds(grace: std::time::Duration) -> i64 {
    i64::try_from(grace.as_secs()).unwrap_or(i64::MAX)
}

/// The engine's grace period when a task has none (and for containers
/// the agent stops without their assignment, e.g. adopted ones).
pub const DEFAULT_STOP_GRACE: std::time::Duration =
    std::time::Duration::from_nanos(DEFAULT_STOP_GRACE_NANOS.unsigned_abs());

/// The task's stop grace period, to the nanosecond.
pub fn stop_grace(a: &Assignment) -> std::time::Duration {
    std::time::Duration::from_nanos(stop_grace_nanos(a).unsigned_abs())
}

fn stop_grace_nanos(a: &Assignment) -> i64 {
    container_spec(a)
        .and_then(|c| c.stop_grace_period)
        .filter(|n| *n >= 0)
        .unwrap_or(DEFAULT_STOP_GRACE_NANOS)
}

// ----------------------------------------------------------- create config

/// The container moby's swarm executor creates for this task.
pub fn container_config(
    a: &Assignment,
    node: &NodeInfo,
) -> Result<(String, ContainerCreateBody), AgentError> {
    let name = task_name(a, &node.id);
    let ctx = template::Context::new(a, node);
    let expand = |s: &str, ctx: &template::Context| template::expand(s, ctx, None);
    let default_spec = TaskSpecContainerSpec::default();
    let spec = container_spec(a).unwrap_or(&default_spec);
    let task_spec = a.task.spec.as_ref();

    let env = match &spec.env {
        Some(env) => Some(
            env.iter()
                .map(|e| expand(e, &ctx))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| AgentError::Template(format!("expanding env failed: {e}")))?,
        ),
        None => None,
    };
    let hostname = match spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        Some(h) => Some(
            expand(h, &ctx)
                .map_err(|e| AgentError::Template(format!("expanding hostname failed: {e}")))?,
        ),
        None => None,
    };
    let mounts = match &spec.mounts {
        Some(ms) => {
            let mut out = Vec::with_capacity(ms.len());
            for m in ms {
                let mut m = m.clone();
                let err = |e| AgentError::Template(format!("expanding mounts failed: {e}"));
                if let Some(s) = &m.source {
                    m.source = Some(expand(s, &ctx).map_err(err)?);
                }
                if let Some(t) = &m.target {
                    m.target = Some(expand(t, &ctx).map_err(err)?);
                }
                if let Some(labels) = m.volume_options.as_mut().and_then(|v| v.labels.as_mut()) {
                    for v in labels.values_mut() {
                        *v = expand(v, &ctx).map_err(err)?;
                    }
                }
                out.push(m);
            }
            Some(out)
        }
        None => None,
    };

    // Command replaces the entrypoint and Args become its arguments; Args
    // alone are the arguments of the image's entrypoint.
    let (entrypoint, cmd) = match (&spec.command, &spec.args) {
        (Some(c), args) if !c.is_empty() => {
            (Some(c.clone()), args.clone().filter(|a| !a.is_empty()))
        }
        (_, Some(args)) if !args.is_empty() => (None, Some(args.clone())),
        _ => (None, None),
    };

    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let config_image = spec.image.as_deref().map(normalize_image);

    // Resources: limits only (reservations are the scheduler's business).
    let resources = task_spec.and_then(|t| t.resources.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    let memory = limits.and_then(|l| l.memory_bytes).filter(|m| *m > 0);
    let swap = resources.and_then(|r| r.swap_bytes);

    let mut security_opt = Vec::new();
    if let Some(p) = &spec.privileges {
        security_opt.extend(credential_spec_opts(p.credential_spec.as_ref()));
        security_opt.extend(selinux_opts(p.se_linux_context.as_ref()));
        if p.no_new_privileges == Some(true) {
            security_opt.push("no-new-privileges=true".to_string());
        }
        if let Some(s) = &p.seccomp {
            match s.mode {
                Some(TaskSpecContainerSpecPrivilegesSeccompModeEnum::UNCONFINED) => {
                    security_opt.push("seccomp=unconfined".to_string())
                }
                Some(TaskSpecContainerSpecPrivilegesSeccompModeEnum::CUSTOM) => {
                    security_opt.push(format!("seccomp={}", s.profile.clone().unwrap_or_default()))
                }
                _ => {}
            }
        }
        if let Some(aa) = &p.app_armor {
            if aa.mode == Some(TaskSpecContainerSpecPrivilegesAppArmorModeEnum::DISABLED) {
                security_opt.push("apparmor=unconfined".to_string());
            }
        }
    }

    // Hosts entries are `IP name [aliases…]`; the engine wants `name:IP`.
    let extra_hosts: Vec<String> = spec
        .hosts
        .iter()
        .flatten()
        .flat_map(|entry| {
            let parts: Vec<&str> = entry.split_whitespace().collect();
            match parts.split_first() {
                Some((ip, names)) => names.iter().map(|n| format!("{n}:{ip}")).collect(),
                None => Vec::new(),
            }
        })
        .collect();

    let log_config = task_spec.and_then(|t| t.log_driver.as_ref()).and_then(|d| {
        d.name
            .as_ref()
            .filter(|n| !n.is_empty())
            .map(|n| HostConfigLogConfig {
                typ: Some(n.clone()),
                config: d.options.clone(),
            })
    });

    let dns = spec.dns_config.as_ref();
    let host_config = HostConfig {
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        nano_cpus: limits.and_then(|l| l.nano_cpus).filter(|n| *n > 0),
        memory,
        memory_swap: swap
            .filter(|_| memory.is_some())
            .map(|s| s + memory.unwrap_or(0)),
        memory_swappiness: resources.and_then(|r| r.memory_swappiness),
        pids_limit: limits.and_then(|l| l.pids).filter(|p| *p > 0),
        ulimits: spec.ulimits.clone().filter(|u| !u.is_empty()),
        group_add: spec.groups.clone().filter(|g| !g.is_empty()),
        mounts,
        readonly_rootfs: spec.read_only.filter(|r| *r),
        init: spec.init,
        sysctls: spec.sysctls.clone().filter(|s| !s.is_empty()),
        cap_add: spec.capability_add.clone().filter(|c| !c.is_empty()),
        cap_drop: spec.capability_drop.clone().filter(|c| !c.is_empty()),
        oom_score_adj: spec.oom_score_adj.filter(|o| *o != 0),
        dns: dns.and_then(|d| d.nameservers.clone()),
        dns_search: dns.and_then(|d| d.search.clone()),
        dns_options: dns.and_then(|d| d.options.clone()),
        extra_hosts: (!extra_hosts.is_empty()).then_some(extra_hosts),
        security_opt: (!security_opt.is_empty()).then_some(security_opt),
        log_config,
        ..Default::default()
    };

    let body = ContainerCreateBody {
        hostname,
        user: nonempty(&spec.user),
        tty: spec.tty.filter(|t| *t),
        open_stdin: spec.open_stdin.filter(|o| *o),
        env,
        cmd,
        entrypoint,
        healthcheck: spec.health_check.clone(),
        image: config_image,
        working_dir: nonempty(&spec.dir),
        labels: Some(container_labels(a, &node.id)),
        stop_signal: nonempty(&spec.stop_signal),
        host_config: Some(host_config),
        ..Default::default()
    };
    let mut body = body;
    apply_networks(a, &mut body);
    Ok((name, body))
}

// ------------------------------------------------------------ privileges

/// A credential spec becomes the engine's `credentialspec=` security
/// option, as swarm's executor passes it: the engine decides what it
/// supports (a Linux engine refuses it, and the task fails with its text).
fn credential_spec_opts(
    spec: Option<&TaskSpecContainerSpecPrivilegesCredentialSpec>,
) -> Option<String> {
    let spec = spec?;
    let nonempty = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    if let Some(file) = nonempty(&spec.file) {
        return Some(format!("credentialspec=file://{file}"));
    }
    if let Some(registry) = nonempty(&spec.registry) {
        return Some(format!("credentialspec=registry://{registry}"));
    }
    nonempty(&spec.config).map(|config| format!("credentialspec=config://{config}"))
}

/// An SELinux context becomes the engine's `label=` security options.
fn selinux_opts(context: Option<&TaskSpecContainerSpecPrivilegesSeLinuxContext>) -> Vec<String> {
    let Some(context) = context else {
        return Vec::new();
    };
    let mut opts = Vec::new();
    if context.disable == Some(true) {
        opts.push("label=disable".to_string());
    }
    let parts = [
        ("user", &context.user),
        ("role", &context.role),
        ("level", &context.level),
        ("type", &context.typ),
    ];
    for (name, value) in parts {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            opts.push(format!("label={name}:{value}"));
        }
    }
    opts
}

// ------------------------------------------------- networks and ports
// (owned by `crate::network`; kept to this one call)

/// The task's swarm networks (their realising bridges, with shoal's DNS
/// servers) and its host-mode published ports.
fn apply_networks(a: &Assignment, body: &mut ContainerCreateBody) {
    crate::network::task::apply_to_container(&a.networking, &a.task, body);
}

// --------------------------------------------------------- unsupported

/// ContainerSpec fields present in `spec` that the agent does not act on
/// yet, by their Engine API names, so `service create` can refuse them.
pub fn unsupported_fields(spec: &TaskSpecContainerSpec) -> Vec<String> {
    let mut out = Vec::new();
    match spec.isolation {
        None
        | Some(TaskSpecContainerSpecIsolationEnum::DEFAULT)
        | Some(TaskSpecContainerSpecIsolationEnum::EMPTY) => {}
        Some(_) => out.push("Isolation".to_string()),
    }
    for m in spec.mounts.iter().flatten() {
        match m.typ {
            None | Some(MountType::BIND) | Some(MountType::VOLUME) | Some(MountType::TMPFS) => {}
            Some(other) => {
                let name = format!("Mounts.Type={other}");
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        if m.image_options.is_some() && !out.iter().any(|f| f == "Mounts.ImageOptions") {
            out.push("Mounts.ImageOptions".to_string());
        }
    }
    // Templates the agent cannot expand (service labels need the service).
    if spec.env.iter().flatten().any(|v| uses_unknown_template(v)) {
        out.push("Env".to_string());
    }
    if spec.hostname.as_deref().is_some_and(uses_unknown_template) {
        out.push("Hostname".to_string());
    }
    out
}

/// Templates other than the plain `{{.X.Y}}` fields the agent expands
/// (e.g. `{{index .Service.Labels "k"}}`, `{{.Service.Labels.k}}`).
fn uses_unknown_template(s: &str) -> bool {
    const KNOWN: [&str; 10] = [
        ".Service.ID",
        ".Service.Name",
        ".Node.ID",
        ".Node.Hostname",
        ".Node.Platform.OS",
        ".Node.Platform.Architecture",
        ".Task.ID",
        ".Task.Name",
        ".Task.Slot",
        "",
    ];
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return true;
        };
        let action = after[..end].trim_matches(|c: char| c.is_whitespace() || c == '-');
        if !KNOWN.contains(&action.trim()) {
            return true;
        }
        rest = &after[end + 2..];
    }
    false
}
