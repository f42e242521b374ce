//! Publishing committed changes to in-process watchers.
//!
//! Every change goes into a bounded history ring and a tokio broadcast
//! channel. Neither ever blocks the applier: the broadcast drops the oldest
//! message for a receiver that lags, and the watcher then catches up from
//! the ring or, if the ring has moved on too, tells its owner to resync.

use crate::store::tables::Change;
use crate::types::{Kind, Object};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::broadcast;

/// How many events the history ring keeps for watchers that lag past
/// their live buffer. Every watcher starts at the store's current index,
/// so the ring only bridges a short lag (a watcher further behind resyncs
/// from the store); each event holds the object's old and new versions, so
/// a longer ring is memory held for nothing (16,384 events were ~110 MiB
/// of superseded services under `shoal-bench load`).
pub const HISTORY: usize = 2_048;
/// Per-watcher live buffer; past it the watcher falls back to the ring.
const CHANNEL: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Remove,
}

/// One committed change of one object.
#[derive(Debug, Clone)]
pub struct Event {
    /// Store-wide event sequence number (several events share an index).
    pub seq: u64,
    /// Raft index of the transaction.
    pub index: u64,
    pub kind: Kind,
    pub id: String,
    pub action: Action,
    /// The object after the change; for `Remove`, as it was before.
    pub object: Arc<Object>,
    /// The object before an update or remove.
    pub before: Option<Arc<Object>>,
}

/// What a watcher yields.
#[derive(Debug, Clone)]
pub enum WatchItem {
    Event(Arc<Event>),
    /// Events were lost (too far behind, or a snapshot replaced the store).
    /// Re-read the store, note its `index()`, and start a new watcher with
    /// `watch_from(index)`. This watcher ends after yielding it.
    Resync,
}

#[derive(Debug, Clone)]
enum Msg {
    Event(Arc<Event>),
    Resync,
}

struct State {
    ring: VecDeque<Arc<Event>>,
    /// Events with `index <= floor` may be gone from the ring.
    floor: u64,
    next_seq: u64,
}

pub(crate) struct Hub {
    state: Mutex<State>,
    tx: broadcast::Sender<Msg>,
}

impl Hub {
    pub(crate) fn new(floor: u64) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(CHANNEL);
        Arc::new(Hub {
            state: Mutex::new(State {
                ring: VecDeque::new(),
                floor,
                next_seq: 1,
            }),
            tx,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent data (pushes and
        // pops only), so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publish the changes of the transaction at `index`. Called by the
    /// applier in apply order; never waits for watchers.
    pub(crate) fn publish(&self, index: u64, changes: Vec<Change>) {
        let mut st = self.lock();
        for c in changes {
            let Some(event) = to_event(st.next_seq, index, c) else {
                continue;
            };
            st.next_seq += 1;
            let event = Arc::new(event);
            if st.ring.len() == HISTORY {
                if let Some(old) = st.ring.pop_front() {
                    st.floor = st.floor.max(old.index);
                }
            }
            st.ring.push_back(event.clone());
            // An error only means nobody is listening.
            let _ = self.tx.send(Msg::Event(event));
        }
    }

    /// The store was replaced wholesale at `index`: history is void.
    pub(crate) fn reset(&self, index: u64) {
        let mut st = self.lock();
        st.ring.clear();
        st.floor = index;
        let _ = self.tx.send(Msg::Resync);
    }

    pub(crate) fn watch_from(self: &Arc<Self>, from: u64) -> Watcher {
        let st = self.lock();
        let rx = self.tx.subscribe();
        let mut w = Watcher {
            hub: Arc::downgrade(self),
            rx,
            backlog: VecDeque::new(),
            from,
            last_seq: st.next_seq - 1,
            phase: Phase::Live,
        };
        if from < st.floor {
            w.phase = Phase::ResyncDue;
            return w;
        }
        w.backlog = st.ring.iter().filter(|e| e.index > from).cloned().collect();
        if let Some(first) = w.backlog.front() {
            w.last_seq = first.seq - 1;
        }
        w
    }
}

fn to_event(seq: u64, index: u64, c: Change) -> Option<Event> {
    let (action, object, before) = match (c.before, c.after) {
        (None, Some(after)) => (Action::Create, after, None),
        (Some(before), Some(after)) => (Action::Update, after, Some(before)),
        (Some(before), None) => (Action::Remove, before.clone(), Some(before)),
        (None, None) => return None,
    };
    Some(Event {
        seq,
        index,
        kind: c.kind,
        id: c.id,
        action,
        object,
        before,
    })
}

/// A stream of committed changes after some index.
pub struct Watcher {
    /// Weak, so the channel closes (and `next` ends) when the store goes.
    hub: Weak<Hub>,
    rx: broadcast::Receiver<Msg>,
    backlog: VecDeque<Arc<Event>>,
    /// Only events of later indexes are yielded.
    from: u64,
    /// Sequence number of the last event yielded (or skipped as old).
    last_seq: u64,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Live,
    ResyncDue,
    Ended,
}

impl Watcher {
    /// The next change, `Resync` if changes were lost, `None` after a resync
    /// or when the store is gone.
    pub async fn next(&mut self) -> Option<WatchItem> {
        loop {
            match self.phase {
                Phase::Live => {}
                Phase::ResyncDue => {
                    self.phase = Phase::Ended;
                    return Some(WatchItem::Resync);
                }
                Phase::Ended => return None,
            }
            if let Some(event) = self.backlog.pop_front() {
                if let Some(item) = self.accept(event) {
                    return Some(item);
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(Msg::Event(event)) => {
                    if let Some(item) = self.accept(event) {
                        return Some(item);
                    }
                }
                Ok(Msg::Resync) => self.phase = Phase::ResyncDue,
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up(),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn accept(&mut self, event: Arc<Event>) -> Option<WatchItem> {
        if event.seq <= self.last_seq {
            return None;
        }
        self.last_seq = event.seq;
        (event.index > self.from).then_some(WatchItem::Event(event))
    }

    /// The live channel dropped messages: refill from the ring, or resync
    /// when the ring no longer reaches back to what we last saw.
    fn catch_up(&mut self) {
        let Some(hub) = self.hub.upgrade() else {
            self.phase = Phase::Ended;
            return;
        };
        let st = hub.lock();
        let reaches = st
            .ring
            .front()
            .is_some_and(|first| first.seq <= self.last_seq + 1);
        if !reaches && st.next_seq > self.last_seq + 1 {
            self.phase = Phase::ResyncDue;
            return;
        }
        self.backlog = st
            .ring
            .iter()
            .filter(|e| e.seq > self.last_seq)
            .cloned()
            .collect();
    }
}
