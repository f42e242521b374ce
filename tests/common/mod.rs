//! The shared test kit lives in the library (`shoal::testkit`, src/testkit/)
//! so the benchmark and the compat tool use the same one; every test file
//! reaches it as `common`.

#![allow(unused_imports)]

pub use shoal::testkit::*;
