//! Runs `tests/docker_py` (docker-py, the Python SDK, against a per-test
//! shoal) with the venv's Python. Without `.venv/bin/python` able to import
//! `docker` the test is skipped with a note, unless SHOAL_REQUIRE_DOCKER_PY=1
//! (set by `.ci/run`, which makes the venv), where that is a failure.

use std::path::Path;
use std::process::Command;

#[test]
fn docker_py_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    let required = std::env::var("SHOAL_REQUIRE_DOCKER_PY").is_ok_and(|v| v == "1");
    let usable = python.exists()
        && Command::new(&python)
            .args(["-c", "import docker"])
            .status()
            .is_ok_and(|s| s.success());
    if !usable {
        assert!(
            !required,
            "SHOAL_REQUIRE_DOCKER_PY=1 but {} cannot import docker \
             (python3 -m venv .venv && .venv/bin/pip install docker)",
            python.display()
        );
        eprintln!("skipped: no .venv with docker-py (python3 -m venv .venv && .venv/bin/pip install docker)");
        return;
    }
    let out = Command::new(&python)
        .current_dir(root)
        .args(["-m", "unittest", "discover", "-s", "tests/docker_py", "-v"])
        .env("SHOAL_BIN", env!("CARGO_BIN_EXE_shoal"))
        .output()
        .expect("run python");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "docker-py tests failed (see above)");
}
