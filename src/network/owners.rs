//! Which swarms on this host still have a live shoal.
//!
//! Several shoals may share one engine and one kernel (tests do; so does a
//! shoal restarted while its old process lingers). Each running data plane
//! holds an exclusive `flock` on `/run/shoal/swarms/<short cluster id>`,
//! which the kernel releases when the process ends, however it ends
//! (SIGKILL too). A bridge or nft table whose swarm's lock is free was left
//! behind by a shoal that is gone, and any other shoal may clean it up; one
//! whose lock is held belongs to a live swarm and is left alone, even while
//! it has no container.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DIR: &str = "/run/shoal/swarms";

/// The short form of a cluster ID that names its lock and its nft table
/// (nft identifiers are short): its first 12 ASCII letters and digits.
pub fn short_id(cluster_id: &str) -> String {
    cluster_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect()
}

/// This process's claim on a swarm; released (and its file removed) when
/// dropped.
pub struct Claim {
    path: PathBuf,
    _file: File,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Unlinked before the descriptor (and so the lock) goes: a shoal
        // asking meanwhile finds no file, which also means "gone".
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Claims `cluster_id` for this process. `None` when the lock cannot be
/// taken (logged): the swarm then merely looks gone to other shoals.
pub async fn claim(cluster_id: &str) -> Option<Claim> {
    claim_in(Path::new(DIR), cluster_id).await
}

/// Removes the lock files of swarms whose shoal is gone.
pub fn remove_dead_claims() {
    remove_dead_claims_in(Path::new(DIR));
}

/// Whether a live shoal holds `cluster_id`. When that cannot be told (an
/// unreadable directory), says yes: better a stale bridge than a live
/// swarm's bridge removed under it.
pub fn is_alive(cluster_id: &str) -> bool {
    is_alive_in(Path::new(DIR), cluster_id)
}

/// Tries a few times: another shoal removing a dead claim's file holds its
/// lock for a moment, and a file unlinked under us must be made again.
async fn claim_in(dir: &Path, cluster_id: &str) -> Option<Claim> {
    let path = dir.join(short_id(cluster_id));
    let mut error = std::io::Error::other("no attempt");
    for _ in 0..3 {
        match try_claim(dir, &path) {
            Ok(Some(file)) => return Some(Claim { path, _file: file }),
            Ok(None) => {
                // Unlinked by a cleaner before we locked it: make it again.
                error = std::io::Error::other("the lock file kept being replaced");
                continue;
            }
            Err(e) => error = e,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(path = %path.display(), %error, "cannot mark this swarm as alive on this host");
    None
}

/// The locked file, or `None` when the file at `path` is no longer the one
/// locked (a cleaner unlinked it in between).
fn try_claim(dir: &Path, path: &Path) -> std::io::Result<Option<File>> {
    std::fs::create_dir_all(dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(std::io::Error::other(
                "another shoal on this host holds the same swarm",
            ))
        }
        Err(TryLockError::Error(e)) => return Err(e),
    }
    let ours = file.metadata()?;
    let same =
        std::fs::metadata(path).is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino());
    Ok(same.then_some(file))
}

fn remove_dead_claims_in(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(file) = File::open(entry.path()) else {
            continue;
        };
        // Unlinked while we hold its lock, so no claimer can be holding it.
        if file.try_lock().is_ok() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn is_alive_in(dir: &Path, cluster_id: &str) -> bool {
    let file = match File::open(dir.join(short_id(cluster_id))) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(_) => return true,
    };
    // A lock we get is released when `file` drops, right here.
    !matches!(file.try_lock(), Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_claim_is_seen_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let id = "abcdefghijklmnopqrstuvwxy";
        assert!(!is_alive_in(dir.path(), id), "never claimed");
        let claim = claim_in(dir.path(), id).await.unwrap();
        assert!(is_alive_in(dir.path(), id));
        assert!(is_alive_in(dir.path(), id), "asking does not release it");
        assert!(
            claim_in(dir.path(), id).await.is_none(),
            "a second claim on the same swarm"
        );
        assert!(!is_alive_in(dir.path(), "zzzzzzzzzzzzzzzzzzzzzzzzz"));
        drop(claim);
        assert!(!is_alive_in(dir.path(), id));
        assert!(claim_in(dir.path(), id).await.is_some(), "claimable again");
    }

    #[tokio::test]
    async fn dead_claims_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let live = claim_in(dir.path(), "live").await.unwrap();
        // A claim whose process died: its file, unlocked.
        std::fs::write(dir.path().join("dead"), b"").unwrap();
        remove_dead_claims_in(dir.path());
        assert!(!dir.path().join("dead").exists());
        assert!(dir.path().join("live").exists());
        assert!(is_alive_in(dir.path(), "live"));
        drop(live);
        assert!(!dir.path().join("live").exists());
    }

    #[test]
    fn short_ids_are_nft_identifiers() {
        assert_eq!(short_id("abc-def.ghi_jklmnopq"), "abcdefghijkl");
    }
}
