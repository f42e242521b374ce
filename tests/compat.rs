//! The compatibility suite under `cargo test`: replays every fixture in
//! `api-fixtures/` (recorded from the real engine in swarm mode) against a
//! fresh shoal per scenario in front of the local engine, and fails when any
//! result differs from `compat-tests/ledger.txt` in either direction.
//!
//! The table: `cargo run --bin shoal-compat -- report`.

use std::process::Command;

#[test]
fn replay_matches_ledger() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-compat"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("check")
        .arg("--shoal")
        .arg(env!("CARGO_BIN_EXE_shoal"))
        .output()
        .expect("run shoal-compat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "compat replay differs from compat-tests/ledger.txt (see above; \
         `cargo run --bin shoal-compat -- report -v` shows every difference)"
    );
}
