//! kill -9 test: a child process (this test binary again, in "writer"
//! mode) writes concurrently and prints every acknowledged write; we kill
//! it at random moments, then reopen the data dir and check that every
//! acknowledged write is there.

use super::tests::create;
use super::{NodeOptions, RaftNode};
use crate::store::Proposer;
use crate::types::{new_id, Kind};
use rand::Rng;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// Set (to the data dir) only in the child: selects writer mode.
const WRITER_DIR: &str = "SHOAL_CRASH_WRITER_DIR";
const WRITERS: usize = 16;

/// The child's body. A no-op in an ordinary test run.
#[test]
fn crash_writer() {
    let Ok(dir) = std::env::var(WRITER_DIR) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let opts = NodeOptions {
            snapshot_every: 200, // so kills also land during snapshots and purges
            keep_after_snapshot: 20,
            ..NodeOptions::default()
        };
        let node = Arc::new(RaftNode::open(dir.as_ref(), 1, opts).await.unwrap());
        say("READY");
        let writers: Vec<_> = (0..WRITERS)
            .map(|_| {
                let node = node.clone();
                tokio::spawn(async move {
                    loop {
                        let id = new_id(&mut rand::thread_rng());
                        let done = node.propose(create(&id)).await.unwrap().unwrap();
                        say(&format!("ACK {id} {}", done.index));
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
    });
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Run one writer, kill it `after` its READY line, return its ACK lines.
fn run_and_kill(dir: &std::path::Path, after: Duration) -> Vec<(String, u64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "raft::crash_test::crash_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    // Drain stdout on a thread so the child never blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acks = Vec::new();
    // The harness prints "test ... " without a newline before our output,
    // so markers are searched for, not matched whole.
    for line in lines.iter() {
        if line.ends_with("READY") {
            break;
        }
    }
    // The kill moment is random on purpose; it is not a synchronisation.
    std::thread::sleep(after);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    for line in lines.try_iter() {
        if let Some((_, rest)) = line.split_once("ACK ") {
            let (id, index) = rest.split_once(' ').unwrap();
            acks.push((id.to_string(), index.parse().unwrap()));
        }
    }
    acks
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var(WRITER_DIR).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut acked = Vec::new();
    for round in 0..5 {
        let after = Duration::from_millis(rng.gen_range(50..500));
        let acks = run_and_kill(dir.path(), after);
        eprintln!(
            "round {round}: killed after {after:?}, {} acknowledged",
            acks.len()
        );
        acked.extend(acks);
    }
    assert!(!acked.is_empty(), "the writer acknowledged nothing");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let node = RaftNode::open(dir.path(), 1, NodeOptions::default())
            .await
            .unwrap();
        let store = node.store();
        for (id, index) in &acked {
            let object = store.get(Kind::Service, id);
            let object =
                object.unwrap_or_else(|| panic!("acknowledged {id} at {index} is missing"));
            assert_eq!(object.version(), Some(*index), "{id}");
        }
        eprintln!(
            "all {} acknowledged writes present ({} services in store)",
            acked.len(),
            store.list(Kind::Service).len()
        );
        node.shutdown().await.unwrap();
    });
}
