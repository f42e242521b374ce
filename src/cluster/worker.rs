//! A worker: no store, no raft. Its agent gets its assignment set from a
//! manager's session over the cluster port and reports its tasks' status
//! back; when that manager goes away it moves to another one from the list
//! the session gave it, without touching its containers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::wire::{Empty, SessionMessage, StatusBatch, LEAVE_PATH, SESSION_PATH, STATUS_PATH};
use super::LocalNode;
use crate::agent::{self, Assignment, Executor, StatusReport};
use crate::network::NodeNetwork;
use crate::transport::client::Lines;
use crate::transport::tls::MANAGER_NAME;
use crate::transport::{Peers, Role};

/// Reports one status call carries at most.
const MAX_REPORTS: usize = 512;
/// A session that sent nothing for this long is given up (the leader sends
/// a heartbeat every second).
const SESSION_SILENCE: Duration = Duration::from_secs(4);
/// Between managers: a follower refuses sessions at once, so the worker
/// finds the leader in a few tries.
const RETRY_AFTER: Duration = Duration::from_millis(200);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Leaving must not hang on managers that are gone.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Worker {
    pub local: LocalNode,
    peers: Arc<Peers>,
    managers: Arc<Mutex<Vec<String>>>,
    /// The role the node's spec asks for, as its session last said.
    wanted_role: watch::Receiver<Role>,
    /// The swarm's root CA now and whether a rotation is under way, as
    /// its session last said.
    trust: Arc<Mutex<Option<(String, bool)>>>,
    loops: CancellationToken,
    running: TaskTracker,
    /// Told to stop waiting through this worker's leader when it stops.
    network: NodeNetwork,
}

impl Worker {
    pub fn start(
        local: LocalNode,
        peers: Arc<Peers>,
        executor: Arc<dyn Executor>,
        network: NodeNetwork,
    ) -> Worker {
        let managers = Arc::new(Mutex::new(local.managers.clone()));
        let loops = CancellationToken::new();
        let running = TaskTracker::new();
        let (sets_tx, sets_rx) = watch::channel(Arc::new(Vec::new()));
        let (reports_tx, reports_rx) = mpsc::channel(4096);
        let (role_tx, wanted_role) = watch::channel(Role::Worker);
        let trust = Arc::new(Mutex::new(None));
        let following = Arc::new(Mutex::new(None));
        let leader = super::drains::Leader::Session(following.clone());
        running.spawn(super::drains::report_routing(
            local.node_id.clone(),
            leader.clone(),
            Some(peers.clone()),
            network.routing_applied(),
            loops.clone(),
        ));
        network.set_barrier(Some(Arc::new(super::drains::LeaderBarrier {
            leader,
            peers: Some(peers.clone()),
        })));
        let session = Session {
            following,
            peers: peers.clone(),
            managers: managers.clone(),
            sets: sets_tx,
            role: role_tx,
            trust: trust.clone(),
            network: network.clone(),
            node_id: local.node_id.clone(),
            loops: loops.clone(),
        };
        running.spawn(session.run(loops.clone()));
        running.spawn(send_reports(
            peers.clone(),
            managers.clone(),
            reports_rx,
            loops.clone(),
        ));
        running.spawn(agent::run(
            local.node_id.clone(),
            executor,
            network.clone(),
            sets_rx,
            reports_tx,
            loops.clone(),
        ));
        running.close();
        Worker {
            local,
            peers,
            managers,
            wanted_role,
            trust,
            loops,
            running,
            network,
        }
    }

    /// The root CA the swarm has now, and whether it is rotating.
    pub fn trust(&self) -> Option<(String, bool)> {
        self.trust.lock().ok().and_then(|t| t.clone())
    }

    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    pub fn peers_arc(&self) -> Arc<Peers> {
        self.peers.clone()
    }

    pub fn node_id(&self) -> &str {
        &self.local.node_id
    }

    /// The managers this worker knows, for `/info`'s RemoteManagers.
    pub fn managers(&self) -> Vec<String> {
        self.managers.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn wanted_role(&self) -> watch::Receiver<Role> {
        self.wanted_role.clone()
    }

    /// Tells a manager this node leaves, so it shows down at once.
    pub async fn say_goodbye(&self) {
        for addr in self.managers() {
            let said: Result<Empty, _> = self
                .peers
                .call(&addr, MANAGER_NAME, LEAVE_PATH, &Empty {}, GOODBYE_TIMEOUT)
                .await;
            if said.is_ok() {
                return;
            }
        }
        tracing::warn!("no manager heard that this node leaves");
    }

    pub async fn stop(&self) {
        self.network.set_barrier(None);
        self.loops.cancel();
        // The agent gets its own grace to stop; leave waits no longer.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.running.wait()).await;
    }
}

struct Session {
    /// The manager whose session this worker follows now (the leader).
    following: Arc<Mutex<Option<String>>>,
    peers: Arc<Peers>,
    managers: Arc<Mutex<Vec<String>>>,
    sets: watch::Sender<Arc<Vec<Assignment>>>,
    role: watch::Sender<Role>,
    trust: Arc<Mutex<Option<(String, bool)>>>,
    /// Where the ingress plane goes (this node's listeners).
    network: NodeNetwork,
    node_id: String,
    /// The worker's loops: the ingress ends with them.
    loops: CancellationToken,
}

impl Session {
    /// Keeps a session open with some manager, trying each in turn.
    async fn run(self, stop: CancellationToken) {
        let mut next = 0usize;
        loop {
            let managers = self.managers.lock().map(|m| m.clone()).unwrap_or_default();
            if let Some(addr) = managers.get(next % managers.len().max(1)).cloned() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    ended = self.follow(&addr) => {
                        tracing::info!(manager = %addr, reason = %ended, "session ended; trying another manager");
                    }
                }
            }
            next = next.wrapping_add(1);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }

    /// Follows one manager's session until it breaks; says why.
    async fn follow(&self, addr: &str) -> String {
        let response = match self
            .peers
            .open(addr, MANAGER_NAME, SESSION_PATH, &Empty {})
            .await
        {
            Ok(response) => response,
            Err(error) => return error.to_string(),
        };
        tracing::info!(manager = %addr, "session opened");
        self.set_following(Some(addr.to_string()));
        let mut lines = Lines::new(response.into_body());
        let ended = loop {
            let message = match tokio::time::timeout(SESSION_SILENCE, lines.next()).await {
                Err(_) => break "the manager went silent".to_string(),
                Ok(None) => break "the manager closed the session".to_string(),
                Ok(Some(Err(error))) => break format!("bad session message: {error}"),
                Ok(Some(Ok(message))) => message,
            };
            self.take(message);
        };
        self.set_following(None);
        ended
    }

    fn set_following(&self, addr: Option<String>) {
        if let Ok(mut following) = self.following.lock() {
            *following = addr;
        }
    }

    fn take(&self, message: SessionMessage) {
        if !message.managers.is_empty() {
            if let Ok(mut managers) = self.managers.lock() {
                *managers = message.managers;
            }
        }
        if let (Some(root), Ok(mut trust)) = (message.trust_root, self.trust.lock()) {
            *trust = Some((root, message.rotating));
        }
        self.role.send_if_modified(|role| {
            let changed = *role != message.role;
            *role = message.role;
            changed
        });
        if let Some(plane) = message.ingress {
            self.network
                .follow_ingress(plane, &self.node_id, &self.loops);
        }
        if let Some(set) = message.assignments {
            // Before the agent sees the set: the plane it builds from it
            // is reported to the leader with this index.
            self.network.note_routing_index(message.index);
            self.sets.send_if_modified(|current| {
                let same = current.as_slice() == set.as_slice();
                if !same {
                    *current = Arc::new(set);
                }
                // The first set must reach the agent even when empty: it
                // waits for one before it removes unclaimed containers.
                true
            });
        }
    }
}

/// Sends the agent's reports to a manager, many per call; a report is
/// state, so it is retried (on the next manager) until one takes it.
async fn send_reports(
    peers: Arc<Peers>,
    managers: Arc<Mutex<Vec<String>>>,
    mut reports: mpsc::Receiver<StatusReport>,
    stop: CancellationToken,
) {
    let mut pending: Vec<StatusReport> = Vec::new();
    let mut next = 0usize;
    loop {
        if pending.is_empty() {
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                n = reports.recv_many(&mut pending, MAX_REPORTS) => n,
            };
            if received == 0 {
                return;
            }
        }
        let batch = StatusBatch {
            reports: pending
                .iter()
                .map(|r| (r.task_id.clone(), r.status.clone()))
                .collect(),
        };
        let addrs = managers.lock().map(|m| m.clone()).unwrap_or_default();
        let Some(addr) = addrs.get(next % addrs.len().max(1)).cloned() else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RETRY_AFTER) => continue,
            }
        };
        let sent: Result<Empty, _> = peers
            .call(&addr, MANAGER_NAME, STATUS_PATH, &batch, CALL_TIMEOUT)
            .await;
        match sent {
            Ok(_) => pending.clear(),
            Err(error) => {
                tracing::warn!(manager = %addr, %error, "task status not delivered; retrying");
                next = next.wrapping_add(1);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_AFTER) => {}
                }
            }
        }
    }
}
