//! The cluster port (2377 by default): node-to-node traffic over HTTP/2 and
//! mutual TLS. One connection per peer carries raft RPCs, forwarded
//! writes, joins and node sessions; nothing else opens sockets between
//! nodes.
//!
//! [`server`] accepts connections and tells the handler who the peer is
//! (from its certificate); [`client`] keeps one connection per peer and
//! sends JSON calls or opens streams; [`tls`] builds both sides' configs.

pub mod client;
pub mod server;
pub mod tls;

pub use client::Peers;
pub use server::{serve, Handler};
pub use tls::Identity;

/// A node's role as its certificate's OU says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    pub fn ou(self) -> &'static str {
        match self {
            Role::Manager => "swarm-manager",
            Role::Worker => "swarm-worker",
        }
    }

    pub fn from_ou(ou: &str) -> Option<Role> {
        match ou {
            "swarm-manager" => Some(Role::Manager),
            "swarm-worker" => Some(Role::Worker),
            _ => None,
        }
    }
}

/// Who is on the other end of a cluster-port connection, from the
/// certificate it presented (verified against the root CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node_id: String,
    pub role: Role,
    pub addr: std::net::SocketAddr,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The peer answered with an error status and this message.
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("unexpected answer from {addr}: {reason}")]
    BadAnswer { addr: String, reason: String },
    #[error("{addr} did not answer within {secs} s")]
    Timeout { addr: String, secs: u64 },
}

impl TransportError {
    /// The peer could not be reached at all (as opposed to refusing).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            TransportError::Unreachable { .. } | TransportError::Timeout { .. }
        )
    }
}
