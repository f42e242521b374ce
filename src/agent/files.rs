//! Secret and config files of this node's tasks. They live on a tmpfs
//! that shoal mounts at `/run/shoal/<node-id>` (never on persistent disk),
//! one directory per task, and are bind-mounted read-only into the task's
//! container at their target. A task's directory goes when the task ends;
//! the tmpfs goes when the node leaves the swarm.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bollard::models::{Mount, MountType};

use super::spec::NodeInfo;
use super::{template, AgentError, Assignment};

/// Under `/run`, as the runtime state of a daemon belongs (it is not a
/// tmpfs on every host, hence shoal's own mount below it).
const RUNTIME_ROOT: &str = "/run/shoal";
/// `statfs` magic of tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;
/// Secrets < 500 KiB, configs < 1000 KiB: room for many tasks' worth.
const TMPFS_OPTIONS: &str = "mode=0700,size=256m";

/// Where the node's task files live.
pub fn node_root(node_id: &str) -> PathBuf {
    Path::new(RUNTIME_ROOT).join(node_id)
}

/// `swarm leave`: unmounts the node's tmpfs (lazily: a container being
/// removed may still hold a bind mount) and removes its directory.
pub async fn release_node_files(node_id: &str) {
    let node_id = node_id.to_string();
    // An unmount and a directory removal: off the async runtime's threads.
    let released = tokio::task::spawn_blocking(move || release_blocking(&node_id)).await;
    if let Err(error) = released {
        tracing::warn!(%error, "releasing the task files failed");
    }
}

fn release_blocking(node_id: &str) {
    if node_id.is_empty() || !safe_component(node_id) {
        return;
    }
    let root = node_root(node_id);
    if !root.exists() {
        return;
    }
    if let Ok(path) = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()) {
        // SAFETY: `path` is a valid NUL-terminated string for the call.
        unsafe {
            libc::umount2(path.as_ptr(), libc::MNT_DETACH);
        }
    }
    if let Err(error) = std::fs::remove_dir_all(&root) {
        tracing::warn!(path = %root.display(), %error, "cannot remove the task files directory");
    }
}

/// IDs become path components: only what swarm IDs are made of.
fn safe_component(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn is_tmpfs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct; `c` outlives the call.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == TMPFS_MAGIC
    }
}

/// One node's task files.
pub struct TaskFiles {
    root: PathBuf,
    /// Serialises the mount so two preparing tasks do not both mount.
    mounted: Mutex<bool>,
}

/// What one reference resolves to on the host and in the container.
struct Planned {
    target: String,
    data: Vec<u8>,
    uid: u32,
    gid: u32,
    mode: u32,
}

impl TaskFiles {
    pub fn new(node_id: &str) -> TaskFiles {
        TaskFiles {
            root: node_root(node_id),
            mounted: Mutex::new(false),
        }
    }

    #[cfg(test)]
    pub fn at(root: PathBuf) -> TaskFiles {
        TaskFiles {
            root,
            mounted: Mutex::new(true),
        }
    }

    /// The tmpfs, mounted on first use. Refuses to go on when the
    /// directory is not a tmpfs: secrets must never touch a disk.
    fn ensure_tmpfs(&self) -> Result<(), AgentError> {
        let mut mounted = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        if *mounted {
            return Ok(());
        }
        let err = |what: String| AgentError::Files(what);
        std::fs::create_dir_all(&self.root)
            .map_err(|e| err(format!("cannot create {}: {e}", self.root.display())))?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(format!("cannot restrict {}: {e}", self.root.display())))?;
        if !is_tmpfs(&self.root) {
            let target = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes())
                .map_err(|e| err(e.to_string()))?;
            let options = std::ffi::CString::new(TMPFS_OPTIONS).map_err(|e| err(e.to_string()))?;
            // SAFETY: every pointer is a valid NUL-terminated string that
            // outlives the call.
            let rc = unsafe {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    target.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    options.as_ptr().cast(),
                )
            };
            if rc != 0 {
                return Err(err(format!(
                    "secrets need a tmpfs and {} could not be mounted as one: {}",
                    self.root.display(),
                    std::io::Error::last_os_error()
                )));
            }
        }
        if !is_tmpfs(&self.root) {
            return Err(err(format!("{} is not a tmpfs", self.root.display())));
        }
        *mounted = true;
        Ok(())
    }

    fn task_dir(&self, task_id: &str) -> Option<PathBuf> {
        safe_component(task_id).then(|| self.root.join(task_id))
    }

    /// Writes the task's secret and config files and returns the read-only
    /// bind mounts that put them at their targets. Nothing to do (and no
    /// tmpfs) for a task without references.
    pub fn prepare(&self, a: &Assignment, node: &NodeInfo) -> Result<Vec<Mount>, AgentError> {
        let planned = plan(a, node)?;
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let task_id = a.task.id.as_deref().unwrap_or("");
        let dir = self
            .task_dir(task_id)
            .ok_or_else(|| AgentError::Files(format!("invalid task ID {task_id:?}")))?;
        self.ensure_tmpfs()?;
        let err = |e: std::io::Error| AgentError::Files(format!("task files: {e}"));
        // Rewritten from scratch: a retry after a crash sees no stale file.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(err)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        let mut mounts = Vec::with_capacity(planned.len());
        for (i, p) in planned.iter().enumerate() {
            let path = dir.join(i.to_string());
            write_file(&path, p).map_err(err)?;
            mounts.push(Mount {
                target: Some(p.target.clone()),
                source: Some(path.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            });
        }
        Ok(mounts)
    }

    /// [`prepare`](Self::prepare) on a blocking thread: it may mount the
    /// tmpfs, write files and remove a directory, none of which belongs on
    /// the async runtime's threads.
    pub async fn prepare_blocking(
        self: Arc<Self>,
        a: Arc<Assignment>,
        node: Arc<NodeInfo>,
    ) -> Result<Vec<Mount>, AgentError> {
        tokio::task::spawn_blocking(move || self.prepare(&a, &node))
            .await
            .map_err(|e| AgentError::Files(format!("task files: {e}")))?
    }

    /// [`sweep`](Self::sweep) on a blocking thread (directory removals).
    pub async fn sweep_blocking(self: Arc<Self>, keep: HashSet<String>) {
        let swept = tokio::task::spawn_blocking(move || {
            let keep: HashSet<&str> = keep.iter().map(String::as_str).collect();
            self.sweep(&keep);
        })
        .await;
        if let Err(error) = swept {
            tracing::warn!(%error, "sweeping task files failed");
        }
    }

    /// Removes the files of every task not in `keep`.
    pub fn sweep(&self, keep: &HashSet<&str>) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if keep.contains(name) {
                continue;
            }
            if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(task = name, %error, "cannot remove a task's secret files");
            }
        }
    }
}

fn write_file(path: &Path, p: &Planned) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&p.data)?;
    std::os::unix::fs::fchown(&file, Some(p.uid), Some(p.gid))?;
    file.set_permissions(std::fs::Permissions::from_mode(p.mode & 0o7777))?;
    Ok(())
}

/// Each reference's target, owner, mode and payload (rendered when it is a
/// template); an unknown payload, owner or target fails the task (as the
/// engine's agent does).
fn plan(a: &Assignment, node: &NodeInfo) -> Result<Vec<Planned>, AgentError> {
    let Some(spec) = a.task.spec.as_ref().and_then(|s| s.container_spec.as_ref()) else {
        return Ok(Vec::new());
    };
    let render = Render {
        a,
        ctx: template::Context::new(a, node),
    };
    let mut out = Vec::new();
    for s in spec.secrets.iter().flatten() {
        let id = s.secret_id.as_deref().unwrap_or("");
        let name = s.secret_name.as_deref().unwrap_or(id);
        let file = s.file.clone().unwrap_or_default();
        let reference = FileRef {
            kind: "secret",
            id,
            source: name,
            name: file.name.as_deref().unwrap_or(name),
            uid: file.uid.as_deref(),
            gid: file.gid.as_deref(),
            mode: file.mode,
        };
        out.push(reference.plan(&a.secrets, "/run/secrets/", &render)?);
    }
    for c in spec.configs.iter().flatten() {
        let id = c.config_id.as_deref().unwrap_or("");
        let name = c.config_name.as_deref().unwrap_or(id);
        // Runtime configs (credential specs) are not files.
        let Some(file) = c.file.clone() else { continue };
        let reference = FileRef {
            kind: "config",
            id,
            source: name,
            name: file.name.as_deref().unwrap_or(name),
            uid: file.uid.as_deref(),
            gid: file.gid.as_deref(),
            mode: file.mode,
        };
        out.push(reference.plan(&a.configs, "/", &render)?);
    }
    Ok(out)
}

/// One secret or config reference of a task, whatever its kind.
struct FileRef<'a> {
    kind: &'static str,
    id: &'a str,
    /// The secret's or config's own name, for errors.
    source: &'a str,
    /// The target as given (absolute, or relative to the kind's base).
    name: &'a str,
    uid: Option<&'a str>,
    gid: Option<&'a str>,
    mode: Option<u32>,
}

impl FileRef<'_> {
    fn plan(
        &self,
        payloads: &[super::Payload],
        base: &str,
        render: &Render<'_>,
    ) -> Result<Planned, AgentError> {
        let payload = payloads
            .iter()
            .find(|p| p.id == self.id)
            .ok_or_else(|| AgentError::Files(format!("{} {} not found", self.kind, self.source)))?;
        let data = match payload.templated {
            true => render.payload(self.kind, self.source, &payload.data),
            false => payload.data.clone(),
        };
        Ok(Planned {
            target: target(self.name, base)?,
            data,
            uid: owner(self.uid, "uid")?,
            gid: owner(self.gid, "gid")?,
            mode: self.mode.unwrap_or(0o444),
        })
    }
}

/// Renders templated secrets and configs for one task.
struct Render<'a> {
    a: &'a Assignment,
    ctx: template::Context,
}

impl Render<'_> {
    /// As swarm's agent: a template that cannot be rendered is logged and
    /// delivered as it is (never its data: it may be a secret).
    fn payload(&self, kind: &str, name: &str, data: &[u8]) -> Vec<u8> {
        let Ok(text) = std::str::from_utf8(data) else {
            return data.to_vec();
        };
        match template::expand(text, &self.ctx, Some(self)) {
            Ok(rendered) => rendered.into_bytes(),
            Err(error) => {
                tracing::warn!(%error, kind, name, "failed to expand a templated payload");
                data.to_vec()
            }
        }
    }

    fn container(&self) -> Option<&bollard::models::TaskSpecContainerSpec> {
        self.a.task.spec.as_ref()?.container_spec.as_ref()
    }

    /// The payload a reference with this target (file name) resolves to.
    fn by_target<'p>(
        payloads: &'p [super::Payload],
        ids: impl Iterator<Item = (Option<&'p str>, Option<&'p str>)>,
        target: &str,
    ) -> Option<String> {
        let (id, _) = ids.into_iter().find(|(_, name)| *name == Some(target))?;
        let payload = payloads.iter().find(|p| Some(p.id.as_str()) == id)?;
        Some(String::from_utf8_lossy(&payload.data).into_owned())
    }
}

impl template::Functions for Render<'_> {
    /// The task's own environment as given in its spec; "" when unset.
    fn env(&self, name: &str) -> String {
        self.container()
            .and_then(|c| c.env.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|e| e.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    }

    fn secret(&self, target: &str) -> Result<String, AgentError> {
        let refs = self.container().and_then(|c| c.secrets.as_ref());
        let ids = refs.into_iter().flatten().map(|s| {
            (
                s.secret_id.as_deref(),
                s.file.as_ref().and_then(|f| f.name.as_deref()),
            )
        });
        Self::by_target(&self.a.secrets, ids, target)
            .ok_or_else(|| AgentError::Template(format!("secret target {target} not found")))
    }

    fn config(&self, target: &str) -> Result<String, AgentError> {
        let refs = self.container().and_then(|c| c.configs.as_ref());
        let ids = refs.into_iter().flatten().map(|c| {
            (
                c.config_id.as_deref(),
                c.file.as_ref().and_then(|f| f.name.as_deref()),
            )
        });
        Self::by_target(&self.a.configs, ids, target)
            .ok_or_else(|| AgentError::Template(format!("config target {target} not found")))
    }
}

/// Absolute targets as given, others under `base`.
fn target(name: &str, base: &str) -> Result<String, AgentError> {
    if name.is_empty() {
        return Err(AgentError::Files("empty secret or config target".into()));
    }
    if name.split('/').any(|c| c == "..") {
        return Err(AgentError::Files(format!("invalid target {name:?}")));
    }
    Ok(if name.starts_with('/') {
        name.to_string()
    } else {
        format!("{base}{name}")
    })
}

fn owner(raw: Option<&str>, what: &str) -> Result<u32, AgentError> {
    match raw.unwrap_or("") {
        "" => Ok(0),
        s => s
            .parse()
            .map_err(|_| AgentError::Files(format!("invalid {what} {s:?}: must be a number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::Payload;
    use bollard::models::{
        Task, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecConfigs,
        TaskSpecContainerSpecFile, TaskSpecContainerSpecFile1, TaskSpecContainerSpecSecrets,
    };
    use std::os::unix::fs::MetadataExt;

    fn assignment() -> Assignment {
        Assignment {
            task: Task {
                id: Some("task1".into()),
                spec: Some(TaskSpec {
                    container_spec: Some(TaskSpecContainerSpec {
                        secrets: Some(vec![TaskSpecContainerSpecSecrets {
                            file: Some(TaskSpecContainerSpecFile {
                                name: Some("t".into()),
                                uid: Some("1000".into()),
                                gid: Some("0".into()),
                                mode: Some(0o400),
                            }),
                            secret_id: Some("sid".into()),
                            secret_name: Some("s".into()),
                        }]),
                        configs: Some(vec![TaskSpecContainerSpecConfigs {
                            file: Some(TaskSpecContainerSpecFile1 {
                                name: Some("/etc/c.conf".into()),
                                uid: Some("0".into()),
                                gid: Some("0".into()),
                                mode: Some(0o444),
                            }),
                            config_id: Some("cid".into()),
                            config_name: Some("c".into()),
                            runtime: None,
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            service_name: "web".into(),
            secrets: vec![Payload {
                id: "sid".into(),
                data: b"top secret".to_vec(),
                templated: false,
            }],
            configs: vec![Payload {
                id: "cid".into(),
                data: b"conf".to_vec(),
                templated: false,
            }],
            networking: Default::default(),
        }
    }

    fn node() -> NodeInfo {
        NodeInfo {
            id: "node1".into(),
            hostname: "host1".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
        }
    }

    /// Templated payloads are rendered for the task: its fields, its env,
    /// the secrets and configs it refers to by target; others are not.
    #[test]
    fn templated_payloads_are_rendered_per_task() {
        let mut a = assignment();
        a.task.slot = Some(3);
        if let Some(c) = a.task.spec.as_mut().and_then(|s| s.container_spec.as_mut()) {
            c.env = Some(vec!["MODE=prod".into()]);
        }
        a.configs[0].data =
            b"{{.Service.Name}}.{{.Task.Slot}}@{{.Node.Hostname}} {{env \"MODE\"}} {{secret \"t\"}}"
                .to_vec();
        a.configs[0].templated = true;
        a.secrets[0].data = b"{{.Service.Name}}".to_vec();
        let dir = tempfile::tempdir().unwrap();
        let files = TaskFiles::at(dir.path().to_path_buf());
        let mounts = files.prepare(&a, &node()).unwrap();
        let read = |i: usize| std::fs::read_to_string(mounts[i].source.clone().unwrap()).unwrap();
        assert_eq!(read(1), "web.3@host1 prod {{.Service.Name}}");
        // Not templated: delivered as created.
        assert_eq!(read(0), "{{.Service.Name}}");
        // A template that cannot be rendered is delivered as it is.
        a.configs[0].data = b"{{secret \"nope\"}}".to_vec();
        let mounts = files.prepare(&a, &node()).unwrap();
        let read = std::fs::read_to_string(mounts[1].source.clone().unwrap()).unwrap();
        assert_eq!(read, "{{secret \"nope\"}}");
    }

    #[test]
    fn writes_files_with_owner_and_mode_and_sweeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let files = TaskFiles::at(dir.path().to_path_buf());
        let mounts = files.prepare(&assignment(), &node()).unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].target.as_deref(), Some("/run/secrets/t"));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].target.as_deref(), Some("/etc/c.conf"));
        let src = PathBuf::from(mounts[0].source.clone().unwrap());
        assert_eq!(std::fs::read(&src).unwrap(), b"top secret");
        let meta = std::fs::metadata(&src).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o400);
        assert_eq!(meta.uid(), 1000);
        files.sweep(&HashSet::from(["task1"]));
        assert!(src.exists());
        files.sweep(&HashSet::new());
        assert!(!src.exists());
    }

    #[test]
    fn a_missing_payload_fails_the_task() {
        let mut a = assignment();
        a.secrets.clear();
        let dir = tempfile::tempdir().unwrap();
        let files = TaskFiles::at(dir.path().to_path_buf());
        assert_eq!(
            files.prepare(&a, &node()).unwrap_err().to_string(),
            "secret s not found"
        );
    }
}
