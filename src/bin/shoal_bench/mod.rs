//! The pieces of `shoal-bench`, shared by its subcommands.

/// HTTP/1 keep-alive client over a unix socket (hyper 1 client conn).
pub mod client;
/// `shoal-bench cluster`.
pub mod cluster;
/// Starting, probing and stopping the shoal under test.
pub mod daemon;
/// `shoal-bench fuzz`.
pub mod fuzz;
/// `shoal-bench idle`.
pub mod idle;
/// The large local image the throughput benchmark streams.
pub mod image;
/// `shoal-bench load`.
pub mod load;
/// `shoal-bench network`.
pub mod network;
/// `shoal-bench overlay`.
pub mod overlay;
/// `shoal-bench proxy`.
pub mod proxy;
/// `shoal-bench raft`.
pub mod raft;
/// HAProxy and socat in front of the engine, to compare the proxy with.
pub mod relay;
/// `shoal-bench services`.
pub mod services;
/// Percentiles, medians and the printed table.
pub mod stats;
