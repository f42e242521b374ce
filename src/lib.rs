//! The `shoal` library: the test kit shared by the end-to-end tests
//! (`tests/`), the benchmark (`shoal-bench`) and the compat tool
//! (`shoal-compat`). The daemon itself is the `shoal` binary (src/main.rs).

pub mod testkit;
