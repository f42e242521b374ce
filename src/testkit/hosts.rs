//! Simulated hosts for cluster tests: N "machines" on this one, each with its
//! own network and UTS namespace, its own `dockerd` and its own `shoal`.
//!
//! ```text
//!  root namespace                       host h<i> (netns + UTS ns + cgroup /<name>)
//!  bridge <id>br 10.231.K.1/24 ──veth <id>v<i> ── eth0 10.231.K.(10+i)/24, lo
//!                                                 dockerd  <dir>/docker.sock
//!                                                 shoal    <dir>/shoal.sock
//! ```
//!
//! - [`Hosts::try_start`] starts N hosts in parallel and returns `None` (with a
//!   note on stderr) where it cannot run: not root, or a tool such as `dockerd`
//!   missing. `SHOAL_REQUIRE_HOSTS=1` (CI) turns that skip into a failure.
//! - [`Hosts::host`] (1-based, like the names) gives a [`Host`]: the docker CLI
//!   through its shoal ([`Host::docker`]) or straight to its engine
//!   ([`Host::engine_docker`]); stop, kill and restart its shoal; kill the whole
//!   host ([`Host::kill`]) and bring it back ([`Host::start`]); cut its link.
//! - Drop tears everything down (processes, mounts, namespaces, links,
//!   iptables rules, cgroups, files), also while a failed test unwinds; then it
//!   first prints every shoal's log tail. An instance whose test process died
//!   (SIGKILL, timeout) is torn down by the next [`Hosts::try_start`] on the
//!   machine.
//!
//! Everything is named after one [`unique`] id, and the /24 comes from a claim
//! file, so several instances can run at once in one or many test processes.
//! Hosts talk to each other on any port over the bridge; the test process
//! reaches them too (the bridge has the .1 address), and they reach, NATed,
//! what the machine reaches (its DNS server, so failed pulls fail fast).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::{
    docker_command, engine_docker, http_unix_timeout, run, run_within, shoal_bin, stderr, stdout,
    tail, unique, wait_for, TlsFiles, CMD_TIMEOUT, IMAGE, POLL, START_TIMEOUT,
};

/// How long a fresh `dockerd` may take to answer `/_ping`.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shoal and dockerd get after SIGTERM at teardown before the whole
/// host is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How long the processes of a killed cgroup may take to disappear.
const KILL_TIMEOUT: Duration = Duration::from_secs(20);
/// The /16 the hosts' /24s come from; shoal's overlays use 10.0.N.0/24 and
/// Docker's default pools 172.17+/192.168, so nothing here collides with them.
const SUBNET_PREFIX: [u8; 2] = [10, 231];
/// Storage drivers to try, in order: overlay2 is fastest; the others are for
/// file systems where overlay2 cannot work (e.g. overlayfs under the data root).
const STORAGE_DRIVERS: [&str; 3] = ["overlay2", "fuse-overlayfs", "vfs"];
/// Where a host's engine listens once behind TLS (inside its namespace; the
/// test certificates name 127.0.0.1).
const ENGINE_TLS_ADDR: &str = "tcp://127.0.0.1:2376";

// ---------------------------------------------------------------------------
// The plan: every name of one instance, derived from its id
// ---------------------------------------------------------------------------

/// Where all instances keep their files and subnet claims.
fn base_dir() -> PathBuf {
    std::env::temp_dir().join("shoal-hosts")
}

/// The names and addresses of one instance. Everything teardown needs is
/// derived from these few fields, so an instance whose process died can be
/// torn down from its claim file alone.
#[derive(Clone, Debug)]
struct Plan {
    /// `sh` + the subnet and 6 random digits in hex: short enough for
    /// interface names (≤ 15 bytes).
    id: String,
    /// The third octet of the instance's /24.
    subnet: u8,
    /// How many hosts.
    n: usize,
}

impl Plan {
    fn dir(&self) -> PathBuf {
        base_dir().join(&self.id)
    }

    fn claim(&self) -> PathBuf {
        claim_path(self.subnet)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.id)
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], self.subnet, 1)
    }

    /// The instance's /24.
    fn cidr(&self) -> String {
        let [a, b] = SUBNET_PREFIX;
        format!("{a}.{b}.{}.0/24", self.subnet)
    }

    /// The netns, hostname, cgroup and containerd namespace of host `i` (1-based).
    fn host_name(&self, i: usize) -> String {
        format!("{}-h{i}", self.id)
    }

    fn host_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(
            SUBNET_PREFIX[0],
            SUBNET_PREFIX[1],
            self.subnet,
            10 + i as u8,
        )
    }

    /// The root-namespace end of host `i`'s veth pair.
    fn veth(&self, i: usize) -> String {
        format!("{}v{i}", self.id)
    }

    fn host_dir(&self, i: usize) -> PathBuf {
        self.dir().join(format!("h{i}"))
    }

    /// The iptables rules (`-t TABLE CHAIN match...`, to follow `-I` or
    /// `-D`) that hold while the bridge exists. The root namespace filters
    /// bridged frames (br_netfilter) and the engine sets FORWARD's policy to
    /// DROP: the first rule lets the hosts talk to each other and out. The
    /// others let them reach what the machine reaches, NATed like Docker's
    /// own bridges: above all its DNS server, whose "no such host" makes a
    /// pull fail at once, as on the main engine (unanswered, every pull and
    /// `service create` waits 5 s for the engine's lookup to give up).
    fn iptables_rules(&self) -> [Vec<String>; 3] {
        let (br, net) = (self.bridge(), self.cidr());
        [
            format!("-t filter FORWARD -i {br} -j ACCEPT"),
            format!(
                "-t filter FORWARD -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
            ),
            format!("-t nat POSTROUTING -s {net} ! -o {br} -j MASQUERADE"),
        ]
        .map(|rule| rule.split_whitespace().map(String::from).collect())
    }
}

fn claim_path(subnet: u8) -> PathBuf {
    base_dir().join(format!("net-{subnet}"))
}

/// Who owns a claim: pid and start time (so a recycled pid is not mistaken
/// for the owner).
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the command name, which may itself hold spaces.
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Claims a free /24 by creating `net-<k>` exclusively; the file names the
/// instance and its owner process. The id carries `k`, so no two live
/// instances can share a name, whatever [`unique`] returns.
fn claim_subnet(n: usize) -> Plan {
    fs::create_dir_all(base_dir()).expect("create the hosts base dir");
    let me = std::process::id();
    let start = process_start_time(me).unwrap_or(0);
    for subnet in 1..=254u8 {
        let Ok(mut f) = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(claim_path(subnet))
        else {
            continue;
        };
        let random = unique("sh");
        let id = format!("sh{subnet:02x}{}", &random[random.len() - 6..]);
        writeln!(f, "{id} {me} {start} {n}").expect("write subnet claim");
        return Plan { id, subnet, n };
    }
    panic!(
        "no free /24 left in {}.{}.0.0/16 (claims in {})",
        SUBNET_PREFIX[0],
        SUBNET_PREFIX[1],
        base_dir().display()
    );
}

/// The plan in a claim file whose owner process is gone, if so.
fn stale_plan(subnet: u8) -> Option<Plan> {
    let text = fs::read_to_string(claim_path(subnet)).ok()?;
    let mut fields = text.split_whitespace();
    let id = fields.next()?.to_string();
    let pid: u32 = fields.next()?.parse().ok()?;
    let start: u64 = fields.next()?.parse().ok()?;
    let n: usize = fields.next()?.parse().ok()?;
    if process_start_time(pid) == Some(start) {
        return None;
    }
    Some(Plan { id, subnet, n })
}

/// Tears down instances left by test processes that died without dropping them.
fn reap_stale() {
    let Ok(entries) = fs::read_dir(base_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(subnet) = name.strip_prefix("net-").and_then(|k| k.parse().ok()) else {
            continue;
        };
        if let Some(plan) = stale_plan(subnet) {
            eprintln!(
                "hosts: tearing down {} left by a dead test process",
                plan.id
            );
            teardown(&plan, &[]);
        }
    }
}

// ---------------------------------------------------------------------------
// Small system helpers (never panic: teardown uses them while unwinding)
// ---------------------------------------------------------------------------

/// Runs a system tool; `Err` carries its stderr (or why it could not run).
fn sys(program: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    match run_within(cmd, Duration::from_secs(30)) {
        Some(out) if out.status.success() => Ok(stdout(&out)),
        Some(out) => Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            stderr(&out).trim()
        )),
        None => Err(format!("`{program} {}` timed out", args.join(" "))),
    }
}

/// [`sys`] for set-up steps, which must succeed.
#[track_caller]
fn must(program: &str, args: &[&str]) -> String {
    sys(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `cond` until it holds or `timeout` passes; says which.
fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Mount points (from /proc/self/mountinfo) for which `keep` holds.
fn mounts_where(keep: impl Fn(&str) -> bool) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| keep(p))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let code = rest
            .get(pos + 1..pos + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[pos + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_under(path: &str, dir: &Path) -> bool {
    Path::new(path).starts_with(dir)
}

/// Detaches every mount at or under `dir`, deepest first, until none is left
/// (a killed dockerd leaves its data-root bind mount, overlays and the
/// containers' netns files behind).
fn unmount_under(dir: &Path) {
    for _ in 0..10 {
        let mut points = mounts_where(|p| is_under(p, dir));
        if points.is_empty() {
            return;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            if let Ok(c) = std::ffi::CString::new(p) {
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Cgroups: one per host, holding all its processes
// ---------------------------------------------------------------------------

/// The cgroup of one host: shoal, dockerd and containerd (and so the shims)
/// join `<name>/init` before they exec; dockerd's `--cgroup-parent /<name>`
/// puts the containers beside it. Killing a host is killing this subtree.
///
/// On cgroup v1 the pids hierarchy lists the members and the freezer stops
/// them forking while they are killed; on v2 the unified hierarchy does both.
#[derive(Clone, Debug)]
struct Cgroup {
    /// The directories (one per hierarchy used) of `/<name>`.
    dirs: Vec<PathBuf>,
    /// Where the freeze switch is, and its on/off values.
    freeze: (PathBuf, &'static str, &'static str),
}

impl Cgroup {
    /// Why this machine's cgroups cannot hold a host, if they cannot.
    fn unsupported() -> Option<String> {
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            return None;
        }
        let v1 = ["pids", "freezer"].iter().all(|c| {
            Path::new("/sys/fs/cgroup")
                .join(c)
                .join("cgroup.procs")
                .exists()
        });
        (!v1).then(|| "neither cgroup v2 nor the v1 pids and freezer hierarchies".to_string())
    }

    fn new(name: &str) -> Cgroup {
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            let dir = root.join(name);
            return Cgroup {
                freeze: (dir.join("cgroup.freeze"), "1", "0"),
                dirs: vec![dir],
            };
        }
        let pids = root.join("pids").join(name);
        let freezer = root.join("freezer").join(name);
        Cgroup {
            freeze: (freezer.join("freezer.state"), "FROZEN", "THAWED"),
            dirs: vec![pids, freezer],
        }
    }

    /// The `cgroup.procs` files a host's daemon writes itself into.
    fn init_procs(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.join("init").join("cgroup.procs"))
            .collect()
    }

    fn create(&self) {
        for d in &self.dirs {
            fs::create_dir_all(d.join("init"))
                .unwrap_or_else(|e| panic!("create cgroup {}: {e}", d.display()));
        }
    }

    /// Every process in the subtree (from the first hierarchy, which has them all).
    fn members(&self) -> Vec<u32> {
        self.members_in(vec![self.dirs[0].clone()])
    }

    /// The processes of its containers: all but the daemons in `init`.
    fn container_members(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir(&self.dirs[0]) else {
            return Vec::new();
        };
        let containers = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != "init")
            .map(|e| e.path())
            .collect();
        self.members_in(containers)
    }

    fn members_in(&self, mut stack: Vec<PathBuf>) -> Vec<u32> {
        let mut pids = Vec::new();
        while let Some(dir) = stack.pop() {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
            if let Ok(entries) = fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        pids
    }

    /// SIGKILLs every member, frozen so none can fork meanwhile; true once
    /// the subtree is empty. `reap` runs each round, so that the caller's own
    /// dead children do not linger as zombies.
    fn kill_all(&self, reap: impl Fn()) -> bool {
        self.kill_members(Cgroup::members, reap)
    }

    /// SIGKILLs its containers' processes (not the daemons); true once none is left.
    fn kill_containers(&self) -> bool {
        self.kill_members(Cgroup::container_members, || {})
    }

    fn kill_members(&self, members: fn(&Cgroup) -> Vec<u32>, reap: impl Fn()) -> bool {
        poll_until(KILL_TIMEOUT, || {
            let (switch, on, off) = &self.freeze;
            let _ = fs::write(switch, on);
            let members = members(self);
            for pid in &members {
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
            // Frozen tasks die only once thawed.
            let _ = fs::write(switch, off);
            reap();
            members.is_empty()
        })
    }
}

/// The mount points of every cgroup hierarchy (v1 controllers, v2 unified).
fn cgroup_roots() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, f)| f.starts_with("cgroup ") || f.starts_with("cgroup2 "))
        })
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .collect()
}

/// Removes `/<name>` from every cgroup hierarchy (runc creates the
/// containers' cgroups in all of them), deepest directories first.
fn remove_cgroups(name: &str) {
    for root in cgroup_roots() {
        remove_dir_tree(&root.join(name));
    }
}

/// rmdir of a directory tree of cgroups (their files cannot be unlinked).
fn remove_dir_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_dir_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Whether `/<name>` still exists in any cgroup hierarchy.
fn cgroup_exists(name: &str) -> bool {
    cgroup_roots().iter().any(|root| root.join(name).exists())
}

/// A command that, between fork and exec, moves itself into `procs` (each a
/// `cgroup.procs` file), so everything it later starts is in the cgroup too.
fn in_cgroup(cmd: &mut Command, procs: &[PathBuf]) {
    let paths: Vec<std::ffi::CString> = procs
        .iter()
        .map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap())
        .collect();
    // Only async-signal-safe calls (open, write, close) after fork.
    unsafe {
        cmd.pre_exec(move || {
            for path in &paths {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

// ---------------------------------------------------------------------------
// Hosts
// ---------------------------------------------------------------------------

/// Why simulated hosts cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    let tools = [
        "dockerd",
        "containerd",
        "nsenter",
        "unshare",
        "ip",
        "iptables",
        "docker",
    ];
    if let Some(missing) = tools.iter().find(|t| !on_path(t)) {
        return Some(format!("`{missing}` is not on PATH"));
    }
    Cgroup::unsupported()
}

/// N simulated hosts; see the module docs. Torn down at drop.
pub struct Hosts {
    plan: Plan,
    hosts: Vec<Host>,
}

impl Hosts {
    /// Starts `n` hosts, or returns `None` after saying why they cannot run
    /// here (not root, tools missing). With `SHOAL_REQUIRE_HOSTS=1` that is a
    /// failure instead.
    pub fn try_start(n: usize) -> Option<Hosts> {
        if let Some(why) = unavailable() {
            let required = std::env::var("SHOAL_REQUIRE_HOSTS").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "SHOAL_REQUIRE_HOSTS=1 but hosts cannot run: {why}"
            );
            eprintln!("skipped: simulated hosts need root and dockerd ({why})");
            return None;
        }
        Some(Hosts::start(n))
    }

    /// Starts `n` hosts (1 ≤ n ≤ 99) in parallel: namespaces, link, dockerd
    /// with `busybox:latest` loaded from the main engine, and shoal, each
    /// ready to answer. Panics when that fails or cannot run here.
    pub fn start(n: usize) -> Hosts {
        assert!((1..100).contains(&n), "1 to 99 hosts, not {n}");
        if let Some(why) = unavailable() {
            panic!("simulated hosts cannot run here: {why}");
        }
        let began = Instant::now();
        reap_stale();
        let plan = claim_subnet(n);
        // From here on, drop (also while a panic unwinds) undoes whatever was made.
        let hosts = Hosts {
            hosts: (1..=n).map(|i| Host::new(&plan, i)).collect(),
            plan,
        };
        fs::create_dir_all(hosts.plan.dir()).expect("create the instance dir");
        hosts.make_bridge();
        let image = hosts.plan.dir().join("image.tar");
        thread::scope(|s| {
            let saver = s.spawn(|| save_image(&image));
            for h in &hosts.hosts {
                s.spawn(move || h.boot());
            }
            saver.join().expect("saving the test image panicked");
        });
        // Loads run in parallel with each other; each needs its engine up.
        thread::scope(|s| {
            for h in &hosts.hosts {
                let image = &image;
                s.spawn(move || h.load_image(image));
            }
        });
        eprintln!(
            "hosts {}: {n} ready in {:.1?} on {}",
            hosts.plan.id,
            began.elapsed(),
            hosts.plan.cidr()
        );
        hosts
    }

    fn make_bridge(&self) {
        let br = self.plan.bridge();
        let gw = format!("{}/24", self.plan.gateway());
        must("ip", &["link", "add", &br, "type", "bridge"]);
        must("ip", &["addr", "add", &gw, "dev", &br]);
        must("ip", &["link", "set", &br, "up"]);
        for rule in self.plan.iptables_rules() {
            must("iptables", &iptables_args("-I", &rule));
        }
    }

    /// Host `i`, counting from 1 like the names (`<id>-h1` is `host(1)`).
    #[track_caller]
    pub fn host(&self, i: usize) -> &Host {
        assert!(
            (1..=self.hosts.len()).contains(&i),
            "hosts are numbered 1..={}, not {i}",
            self.hosts.len()
        );
        &self.hosts[i - 1]
    }

    /// All hosts, h1 first.
    pub fn iter(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter()
    }

    /// The instance id every name starts with.
    pub fn id(&self) -> &str {
        &self.plan.id
    }

    /// The root-namespace bridge joining the hosts.
    pub fn bridge(&self) -> String {
        self.plan.bridge()
    }

    /// The bridge's address, which the test process uses to reach the hosts.
    pub fn gateway(&self) -> Ipv4Addr {
        self.plan.gateway()
    }

    /// Prints the tail of every host's shoal log (shoal's own lines, not its
    /// libraries' debug chatter) and of its dockerd log to stderr.
    pub fn dump_logs(&self) {
        for h in &self.hosts {
            eprintln!(
                "--- {} shoal log ({}), last lines ---\n{}",
                h.name,
                h.shoal_log_path().display(),
                tail(&own_lines(&h.shoal_log()), 80)
            );
            eprintln!(
                "--- {} dockerd log, last lines ---\n{}",
                h.name,
                tail(&h.engine_log(), 10)
            );
        }
    }

    /// What this instance made on the machine, for checking after drop that
    /// none of it is left.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            plan: self.plan.clone(),
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if thread::panicking() {
            self.dump_logs();
        }
        let began = Instant::now();
        teardown(&self.plan, &self.hosts);
        eprintln!(
            "hosts {}: {} torn down in {:.1?}",
            self.plan.id,
            self.hosts.len(),
            began.elapsed()
        );
    }
}

/// Removes everything an instance made, in an order where each step can
/// succeed: processes (politely, then by cgroup), then what they held
/// (mounts, namespaces, links, iptables rules), then cgroups, files and the
/// claim. `hosts` is empty for an instance left by a dead process.
/// Never panics: it runs while failed tests unwind.
fn teardown(plan: &Plan, hosts: &[Host]) {
    stop_processes(plan, hosts);
    remove_network(plan);
    unmount_under(&plan.dir());
    for i in 1..=plan.n {
        remove_cgroups(&plan.host_name(i));
    }
    remove_files(plan);
}

/// SIGTERM to all shoals, then all engines, so their logs end cleanly; then
/// SIGKILL to whatever is left in the hosts' cgroups. The containers go
/// before the engines, by SIGKILL: an engine stopping them itself would give
/// each its stop timeout (10 s by default) whatever --shutdown-timeout says.
fn stop_processes(plan: &Plan, hosts: &[Host]) {
    let shoals: Vec<_> = hosts.iter().map(|h| &h.shoal).collect();
    let engines: Vec<_> = hosts.iter().map(|h| &h.engine).collect();
    terminate(&shoals);
    for h in hosts {
        h.cgroup.kill_containers();
    }
    terminate(&engines);
    for i in 1..=plan.n {
        let host = hosts.get(i - 1);
        let cgroup = Cgroup::new(&plan.host_name(i));
        if !cgroup.kill_all(|| host.into_iter().for_each(Host::reap_exited)) {
            eprintln!(
                "hosts: processes of {} still alive after SIGKILL",
                plan.host_name(i)
            );
        }
    }
    for h in hosts {
        h.reap_children();
    }
}

/// The iptables rules, the namespaces with their veths, and the bridge.
fn remove_network(plan: &Plan) {
    for rule in plan.iptables_rules() {
        while sys("iptables", &iptables_args("-D", &rule)).is_ok() {}
    }
    for i in 1..=plan.n {
        let ns = plan.host_name(i);
        let _ = sys("ip", &["netns", "delete", &ns]);
        // If `ip` could not, do what it does.
        let file = Path::new("/run/netns").join(&ns);
        unmount_under(&file);
        let _ = fs::remove_file(file);
        // Gone with its namespace, unless something still holds that.
        let _ = sys("ip", &["link", "delete", &plan.veth(i)]);
    }
    let _ = sys("ip", &["link", "delete", &plan.bridge()]);
}

/// The instance's dir, then its claim on the subnet.
fn remove_files(plan: &Plan) {
    if let Err(e) = fs::remove_dir_all(plan.dir()) {
        if e.kind() != io::ErrorKind::NotFound {
            eprintln!("hosts: cannot remove {}: {e}", plan.dir().display());
        }
    }
    // Only if still ours: another process reaping the same stale instance
    // may have released it already, and a new instance claimed it since.
    let claim = fs::read_to_string(plan.claim()).unwrap_or_default();
    if claim.split_whitespace().next() == Some(plan.id.as_str()) {
        let _ = fs::remove_file(plan.claim());
    }
}

/// `iptables -w -t TABLE <op> CHAIN match...` for one of
/// [`Plan::iptables_rules`] (`-w`: instances may change rules at once).
fn iptables_args<'a>(op: &'a str, rule: &'a [String]) -> Vec<&'a str> {
    let (table, chain_and_match) = rule.split_at(2);
    let mut args = vec!["-w"];
    args.extend(table.iter().map(String::as_str));
    args.push(op);
    args.extend(chain_and_match.iter().map(String::as_str));
    args
}

/// SIGTERM to each child; waits up to [`TERM_GRACE`] for all to exit.
fn terminate(children: &[&Mutex<Option<Child>>]) {
    for child in children {
        signal_child(child, libc::SIGTERM);
    }
    poll_until(TERM_GRACE, || children.iter().all(|c| reap(c)));
}

fn signal_child(child: &Mutex<Option<Child>>, sig: i32) {
    if let Some(c) = child.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        unsafe { libc::kill(c.id() as i32, sig) };
    }
}

/// Reaps the child if it has exited; true when there is no live child.
fn reap(child: &Mutex<Option<Child>>) -> bool {
    let mut guard = child.lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_mut().map(|c| c.try_wait()) {
        None | Some(Ok(Some(_))) | Some(Err(_)) => {
            *guard = None;
            true
        }
        Some(Ok(None)) => false,
    }
}

/// `docker save busybox:latest` from the main engine, once per instance.
fn save_image(path: &Path) {
    let out = engine_docker(&["save", "-o", &path.to_string_lossy(), IMAGE]);
    assert!(
        out.status.success(),
        "docker save {IMAGE} from the main engine failed (run scripts/make-test-images): {}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------
// One host
// ---------------------------------------------------------------------------

/// One simulated host. Its processes run in network namespace `/run/netns/<name>`
/// and in the UTS namespace bound at `<dir>/uts`; its files are in `dir`:
/// `docker.sock`, `engine/` (data root), `exec/`, `dockerd.log`, `shoal.sock`,
/// `data/` (shoal's), `shoal.log`.
pub struct Host {
    /// `<id>-h<i>`: its hostname, netns, cgroup and containerd namespace.
    pub name: String,
    /// Its hostname (what `docker info` calls `Name`); the same as `name`.
    pub hostname: String,
    /// Its address on the bridge (`eth0` in its namespace).
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
    veth: String,
    bridge: String,
    gateway: Ipv4Addr,
    cgroup: Cgroup,
    /// The storage driver its engine came up with.
    driver: Mutex<&'static str>,
    engine: Mutex<Option<Child>>,
    shoal: Mutex<Option<Child>>,
    /// Set by [`Host::put_engine_behind_tls`]: the engine's server files and
    /// the client files shoal and the checks use.
    engine_tls: Mutex<Option<(TlsFiles, TlsFiles)>>,
}

impl Host {
    fn new(plan: &Plan, i: usize) -> Host {
        let name = plan.host_name(i);
        Host {
            hostname: name.clone(),
            ip: plan.host_ip(i),
            dir: plan.host_dir(i),
            veth: plan.veth(i),
            bridge: plan.bridge(),
            gateway: plan.gateway(),
            cgroup: Cgroup::new(&name),
            name,
            driver: Mutex::new(STORAGE_DRIVERS[0]),
            engine: Mutex::new(None),
            shoal: Mutex::new(None),
            engine_tls: Mutex::new(None),
        }
    }

    /// `unix://` address of its shoal (what DOCKER_HOST points at).
    pub fn shoal_addr(&self) -> String {
        format!("unix://{}", self.shoal_sock().display())
    }

    pub fn shoal_sock(&self) -> PathBuf {
        self.dir.join("shoal.sock")
    }

    /// `unix://` address of its dockerd.
    pub fn engine_addr(&self) -> String {
        format!("unix://{}", self.engine_sock().display())
    }

    pub fn engine_sock(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// The file its network namespace is bound to.
    pub fn netns(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    fn uts(&self) -> PathBuf {
        self.dir.join("uts")
    }

    fn docker_config(&self) -> PathBuf {
        self.dir.join("docker-config")
    }

    pub fn shoal_log_path(&self) -> PathBuf {
        self.dir.join("shoal.log")
    }

    /// Namespaces, link, cgroup, dockerd and shoal; panics on failure.
    fn boot(&self) {
        fs::create_dir_all(self.docker_config()).expect("create the host dir");
        self.make_namespaces();
        self.cgroup.create();
        self.write_engine_config();
        self.start_engine_with_fallback();
        self.start_shoal();
    }

    fn make_namespaces(&self) {
        let ns = &self.name;
        must("ip", &["netns", "add", ns]);
        // `unshare --uts=FILE` binds the new namespace to FILE, which must exist.
        File::create(self.uts()).expect("create the uts file");
        let uts = format!("--uts={}", self.uts().display());
        must("unshare", &[&uts, "hostname", &self.hostname]);
        must(
            "ip",
            &[
                "link", "add", &self.veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        );
        must(
            "ip",
            &["link", "set", &self.veth, "master", &self.bridge, "up"],
        );
        let addr = format!("{}/24", self.ip);
        let gw = self.gateway.to_string();
        must("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
        must("ip", &["-n", ns, "link", "set", "eth0", "up"]);
        must("ip", &["-n", ns, "link", "set", "lo", "up"]);
        // A default route makes eth0 the host's "outside" interface, as on a
        // real machine (where swarm picks its default address from).
        must("ip", &["-n", ns, "route", "add", "default", "via", &gw]);
    }

    /// Its own config file: the machine's daemon.json sets data-root (which
    /// clashes with --data-root), and without its own key path every engine
    /// would report the same engine ID.
    fn write_engine_config(&self) {
        let config = serde_json::json!({
            "deprecated-key-path": self.dir.join("key.json"),
        });
        fs::write(self.dir.join("daemon.json"), config.to_string()).expect("write daemon.json");
    }

    /// A command run inside this host's network and UTS namespaces (entered
    /// with nsenter: `ip netns exec` remounts /sys, and dockerd then fails).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns().display()))
            .arg(format!("--uts={}", self.uts().display()))
            .arg(program);
        cmd
    }

    /// A daemon of this host: in its namespaces and cgroup, output appended to
    /// `log` in its dir.
    fn spawn_daemon(&self, mut cmd: Command, log: &str) -> Child {
        in_cgroup(&mut cmd, &self.cgroup.init_procs());
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log))
            .expect("open daemon log");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start {log} daemon of {}: {e}", self.name))
    }

    fn engine_command(&self, driver: &str) -> Command {
        let d = |p: &str| self.dir.join(p).to_string_lossy().into_owned();
        let ns = &self.name;
        let mut cmd = self.command("dockerd");
        cmd.args(["--config-file", &d("daemon.json")])
            .args(["--data-root", &d("engine"), "--exec-root", &d("exec")])
            .args(["--pidfile", &d("dockerd.pid")])
            .args(self.engine_listen_args())
            .args(["--storage-driver", driver])
            .args(["--cgroup-parent", &format!("/{ns}")])
            .args(["--containerd-namespace", ns])
            .args(["--containerd-plugins-namespace", &format!("{ns}-plugins")])
            // A host's teardown should not wait long for its engine to stop.
            .args(["--shutdown-timeout", "1"]);
        cmd.env_remove("DOCKER_HOST");
        cmd
    }

    /// Where dockerd listens: its unix socket, or only TLS on tcp.
    fn engine_listen_args(&self) -> Vec<String> {
        let tls = self.engine_tls.lock().unwrap().clone();
        let Some((server, _)) = tls else {
            return vec!["-H".into(), self.engine_addr()];
        };
        let path = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            "-H".into(),
            ENGINE_TLS_ADDR.into(),
            "--tlsverify".into(),
            "--tlscacert".into(),
            path(&server.ca),
            "--tlscert".into(),
            path(&server.cert),
            "--tlskey".into(),
            path(&server.key),
        ]
    }

    /// How its shoal reaches the engine.
    fn shoal_engine_args(&self) -> Vec<String> {
        let tls = self.engine_tls.lock().unwrap().clone();
        let Some((_, client)) = tls else {
            return vec!["--engine".into(), self.engine_addr()];
        };
        let path = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            "--engine".into(),
            ENGINE_TLS_ADDR.into(),
            "--engine-tlscacert".into(),
            path(&client.ca),
            "--engine-tlscert".into(),
            path(&client.cert),
            "--engine-tlskey".into(),
            path(&client.key),
        ]
    }

    /// Whether its engine answers where it listens.
    fn engine_answers(&self) -> bool {
        if self.engine_tls.lock().unwrap().is_none() {
            return ping(&self.engine_sock());
        }
        let mut cmd = self.engine_docker_cmd();
        cmd.args(["version", "--format", "{{.Server.Version}}"]);
        run(cmd, None, Duration::from_secs(5)).status.success()
    }

    /// Restarts its engine listening only on TLS (tcp, client certificates
    /// required; no unix socket) and its shoal with `--engine tcp://…` and
    /// the `--engine-tls*` files. `server`/`client` as from
    /// [`super::Certs`] (SAN 127.0.0.1). Containers stay.
    #[track_caller]
    pub fn put_engine_behind_tls(&self, server: &TlsFiles, client: &TlsFiles) {
        self.stop_shoal();
        self.stop_engine();
        *self.engine_tls.lock().unwrap() = Some((server.clone(), client.clone()));
        if let Err(log) = self.start_engine() {
            panic!("dockerd of {} exited at a TLS start:\n{log}", self.name);
        }
        self.start_shoal();
    }

    /// SIGTERM to its dockerd; waits for it to exit.
    #[track_caller]
    pub fn stop_engine(&self) {
        signal_child(&self.engine, libc::SIGTERM);
        let stopped = poll_until(ENGINE_TIMEOUT, || reap(&self.engine));
        assert!(stopped, "dockerd of {} did not stop", self.name);
    }

    /// SIGKILL to its dockerd only (containerd, the shims and shoal stay),
    /// as when the engine crashes; [`start_engine_again`](Self::start_engine_again)
    /// starts it again.
    pub fn kill_engine(&self) {
        if let Some(mut child) = self.engine.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts its dockerd again after [`kill_engine`](Self::kill_engine) or
    /// [`stop_engine`](Self::stop_engine), on the same data root.
    #[track_caller]
    pub fn start_engine_again(&self) {
        assert!(reap(&self.engine), "dockerd of {} is running", self.name);
        // Its containerd died with it; stale pid files would make the new
        // one wait on a dead socket.
        let _ = fs::remove_file(self.dir.join("dockerd.pid"));
        let _ = fs::remove_file(self.dir.join("exec/containerd/containerd.pid"));
        if let Err(log) = self.start_engine() {
            panic!("dockerd of {} exited at restart:\n{log}", self.name);
        }
    }

    /// Starts dockerd with the first storage driver that works here.
    fn start_engine_with_fallback(&self) {
        for driver in STORAGE_DRIVERS {
            *self.driver.lock().unwrap() = driver;
            match self.start_engine() {
                Ok(()) => return,
                // dockerd says "error initializing graphdriver" whatever the driver.
                Err(log) if log.contains("graphdriver") => {
                    eprintln!("hosts: {}: storage driver {driver} fails here", self.name);
                    // The next driver must not find this one's files.
                    unmount_under(&self.dir.join("engine"));
                    let _ = fs::remove_dir_all(self.dir.join("engine"));
                }
                Err(log) => panic!("dockerd of {} exited at start:\n{log}", self.name),
            }
        }
        panic!("no storage driver works for dockerd of {}", self.name);
    }

    /// Spawns dockerd and waits for `/_ping`; `Err` with what it logged if
    /// it exits first.
    fn start_engine(&self) -> Result<(), String> {
        let driver = *self.driver.lock().unwrap();
        let logged_before = self.engine_log().len();
        let child = self.spawn_daemon(self.engine_command(driver), "dockerd.log");
        *self.engine.lock().unwrap() = Some(child);
        let mut exited = false;
        let ready = poll_until(ENGINE_TIMEOUT, || {
            exited = reap(&self.engine);
            exited || self.engine_answers()
        });
        if exited {
            let log = self.engine_log();
            return Err(tail(log.get(logged_before..).unwrap_or(&log), 20));
        }
        assert!(
            ready,
            "dockerd of {} did not answer /_ping within {ENGINE_TIMEOUT:?}:\n{}",
            self.name,
            tail(&self.engine_log(), 20)
        );
        Ok(())
    }

    fn load_image(&self, tar: &Path) {
        let out = self.engine_docker(&["load", "-q", "-i", &tar.to_string_lossy()]);
        assert!(
            out.status.success(),
            "loading {IMAGE} into {} failed: {}",
            self.name,
            stderr(&out)
        );
    }

    /// Its dockerd's log so far.
    pub fn engine_log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Its shoal's log so far (all runs, appended).
    pub fn shoal_log(&self) -> String {
        fs::read_to_string(self.shoal_log_path()).unwrap_or_default()
    }

    // -- shoal ---------------------------------------------------------------

    /// Starts shoal (again: same socket and data dir, log appended) in the
    /// host's namespaces and waits until it answers `/_ping`.
    #[track_caller]
    pub fn start_shoal(&self) {
        assert!(
            reap(&self.shoal),
            "shoal of {} is already running",
            self.name
        );
        let d = |p: &str| self.dir.join(p).to_string_lossy().into_owned();
        let mut cmd = self.command(shoal_bin());
        cmd.args(["-H", &self.shoal_addr()])
            .args(self.shoal_engine_args())
            .args(["--data-dir", &d("data"), "--log-level", "debug"])
            .env_remove("SHOAL_ENGINE")
            .env_remove("RUST_LOG");
        let child = self.spawn_daemon(cmd, "shoal.log");
        *self.shoal.lock().unwrap() = Some(child);
        let sock = self.shoal_sock();
        let mut exited = false;
        let ready = poll_until(START_TIMEOUT, || {
            exited = reap(&self.shoal);
            exited || ping(&sock)
        });
        assert!(
            ready && !exited,
            "shoal of {} {} answering /_ping; its log:\n{}",
            self.name,
            if exited {
                "exited before"
            } else {
                "timed out before"
            },
            tail(&self.shoal_log(), 40)
        );
    }

    /// SIGTERM to shoal; waits (up to 20 s) for it to exit and returns how it did.
    #[track_caller]
    pub fn stop_shoal(&self) -> ExitStatus {
        signal_child(&self.shoal, libc::SIGTERM);
        let mut guard = self.shoal.lock().unwrap();
        let child = guard.as_mut().expect("shoal is not running");
        let status = wait_for(
            &format!("shoal of {} to exit after SIGTERM", self.name),
            Duration::from_secs(20),
            || child.try_wait().expect("try_wait"),
        );
        *guard = None;
        status
    }

    /// SIGKILL to shoal, and reap it.
    pub fn kill_shoal(&self) {
        if let Some(mut child) = self.shoal.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its shoal's process ID while it runs (for RSS readings).
    pub fn shoal_pid(&self) -> Option<u32> {
        self.shoal.lock().ok()?.as_ref().map(Child::id)
    }

    /// Whether its shoal process is running.
    pub fn shoal_running(&self) -> bool {
        !reap(&self.shoal)
    }

    // -- the whole host ------------------------------------------------------

    /// Kills the whole host at once, as a power cut would: shoal, dockerd,
    /// containerd, shims and containers (everything in its cgroup). Its
    /// files stay; [`start`](Self::start) boots it again.
    #[track_caller]
    pub fn kill(&self) {
        assert!(
            self.cgroup.kill_all(|| self.reap_exited()),
            "processes of {} survive SIGKILL",
            self.name
        );
        self.reap_children();
    }

    /// Reaps its shoal and dockerd if they have exited.
    fn reap_exited(&self) {
        reap(&self.shoal);
        reap(&self.engine);
    }

    fn reap_children(&self) {
        for child in [&self.shoal, &self.engine] {
            if let Some(mut c) = child.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Boots a killed host again: dockerd on the same data root, then shoal.
    #[track_caller]
    pub fn start(&self) {
        assert!(
            self.processes().is_empty(),
            "{} is still running; kill it first",
            self.name
        );
        // A pid file naming a recycled pid would make the new daemons refuse to start.
        let _ = fs::remove_file(self.dir.join("dockerd.pid"));
        let _ = fs::remove_file(self.dir.join("exec/containerd/containerd.pid"));
        if let Err(log) = self.start_engine() {
            panic!("dockerd of {} exited at restart:\n{log}", self.name);
        }
        self.start_shoal();
    }

    /// Every process of this host: its cgroup's members, and (in case one
    /// escaped the cgroup) any process naming a file in its dir.
    pub fn processes(&self) -> Vec<u32> {
        let mut pids = self.cgroup.members();
        let dir = format!("{}/", self.dir.display());
        pids.extend(processes_mentioning(&dir));
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Takes its link down (as if its cable were pulled): nothing reaches it
    /// and it reaches nothing; its processes keep running.
    #[track_caller]
    pub fn cut(&self) {
        must("ip", &["link", "set", &self.veth, "down"]);
    }

    /// Brings its link back up after [`cut`](Self::cut).
    #[track_caller]
    pub fn heal(&self) {
        must("ip", &["link", "set", &self.veth, "up"]);
    }

    // -- docker CLI ----------------------------------------------------------

    /// A docker command aimed at this host's shoal.
    pub fn docker_cmd(&self) -> Command {
        let mut cmd = docker_command(&self.docker_config());
        cmd.env("DOCKER_HOST", self.shoal_addr());
        cmd
    }

    /// `docker <args>` through this host's shoal.
    pub fn docker(&self, args: &[&str]) -> Output {
        let mut cmd = self.docker_cmd();
        cmd.args(args);
        run(cmd, None, CMD_TIMEOUT)
    }

    /// `docker <args>` through this host's shoal must succeed; returns stdout.
    #[track_caller]
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "{}: docker {} failed ({}):\nstdout: {}\nstderr: {}\nshoal log tail:\n{}",
            self.name,
            args.join(" "),
            out.status,
            stdout(&out),
            stderr(&out),
            tail(&self.shoal_log(), 40)
        );
        stdout(&out)
    }

    /// `docker <args>` straight to this host's dockerd (set-up and checks
    /// only, never what a test asserts about shoal).
    pub fn engine_docker(&self, args: &[&str]) -> Output {
        let mut cmd = self.engine_docker_cmd();
        cmd.args(args);
        run(cmd, None, CMD_TIMEOUT)
    }

    /// A docker command aimed at its engine: its unix socket, or (behind
    /// TLS) tcp with the client files, from inside its namespace.
    fn engine_docker_cmd(&self) -> Command {
        let tls = self.engine_tls.lock().unwrap().clone();
        let Some((_, client)) = tls else {
            let mut cmd = docker_command(&self.docker_config());
            cmd.env("DOCKER_HOST", self.engine_addr());
            return cmd;
        };
        let mut cmd = self.command("docker");
        for var in ["DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CERT_PATH"] {
            cmd.env_remove(var);
        }
        cmd.env("DOCKER_CONFIG", self.docker_config())
            .env("DOCKER_HOST", ENGINE_TLS_ADDR)
            .args(["--tlsverify", "--tlscacert"])
            .arg(&client.ca)
            .arg("--tlscert")
            .arg(&client.cert)
            .arg("--tlskey")
            .arg(&client.key);
        cmd
    }

    /// [`engine_docker`](Self::engine_docker) that must succeed; returns stdout.
    #[track_caller]
    pub fn engine_docker_ok(&self, args: &[&str]) -> String {
        let out = self.engine_docker(args);
        assert!(
            out.status.success(),
            "{}: docker {} on its engine failed: {}",
            self.name,
            args.join(" "),
            stderr(&out)
        );
        stdout(&out)
    }
}

/// Whether something answers `GET /_ping` over the unix socket.
fn ping(sock: &Path) -> bool {
    http_unix_timeout(sock, "GET", "/_ping", None, Duration::from_secs(2)).is_ok()
}

// ---------------------------------------------------------------------------
// What an instance leaves behind
// ---------------------------------------------------------------------------

/// The names an instance used on the machine (see [`Hosts::footprint`]).
#[derive(Clone, Debug)]
pub struct Footprint {
    plan: Plan,
}

impl Footprint {
    /// Everything of the instance still on the machine, one line each:
    /// iptables rules, namespaces, links, cgroups, processes, mounts, files
    /// and the subnet claim. Empty after a clean teardown.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = self.network_leftovers();
        let plan = &self.plan;
        for name in (1..=plan.n).map(|i| plan.host_name(i)) {
            if cgroup_exists(&name) {
                left.push(format!("cgroup /{name}"));
            }
        }
        let (id, dir) = (plan.id.as_str(), plan.dir());
        for pid in processes_mentioning(id) {
            left.push(format!("process {pid} mentions {id}"));
        }
        for m in mounts_where(|p| is_under(p, &dir) || p.contains(id)) {
            left.push(format!("mount {m}"));
        }
        for file in [dir, plan.claim()] {
            if file.exists() {
                left.push(format!("file {}", file.display()));
            }
        }
        left
    }

    fn network_leftovers(&self) -> Vec<String> {
        let plan = &self.plan;
        let br = plan.bridge();
        let mut left = Vec::new();
        for table_chain in [["filter", "FORWARD"], ["nat", "POSTROUTING"]] {
            let [table, chain] = table_chain;
            let rules = sys("iptables", &["-w", "-t", table, "-S", chain]).unwrap_or_default();
            for rule in rules.lines().filter(|r| r.contains(&br)) {
                left.push(format!("iptables -t {table} {rule}"));
            }
        }
        let netns = sys("ip", &["netns", "list"]).unwrap_or_default();
        let netns: Vec<&str> = netns.lines().filter_map(|l| l.split(' ').next()).collect();
        for ns in (1..=plan.n).map(|i| plan.host_name(i)) {
            if netns.contains(&ns.as_str()) {
                left.push(format!("netns {ns}"));
            }
        }
        let links = sys("ip", &["-o", "link", "show"]).unwrap_or_default();
        // Lines read "7: NAME@PEER: <FLAGS> ...".
        let links: Vec<&str> = links
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n))
            .collect();
        let ours = std::iter::once(br.clone()).chain((1..=plan.n).map(|i| plan.veth(i)));
        for link in ours {
            if links.contains(&link.as_str()) {
                left.push(format!("link {link}"));
            }
        }
        left
    }
}

/// Processes whose command line contains `needle`: every daemon of a host
/// (dockerd, containerd, shims, shoal) names its dir or its id.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// shoal's own lines of a debug log: the HTTP/2, TLS and engine client
/// libraries log every frame at debug level.
fn own_lines(log: &str) -> String {
    const CHATTER: [&str; 5] = [" h2::", " hyper", " rustls::", " bollard::", "Decoded into"];
    log.lines()
        .filter(|l| !CHATTER.iter().any(|c| l.contains(c)))
        .collect::<Vec<_>>()
        .join("\n")
}
