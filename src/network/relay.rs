//! The header in front of a connection that one node's ingress passes to
//! another (the node a chosen task runs on), and in front of a connection a
//! task gets when its service asks for the client's address.
//!
//! Both are PROXY protocol version 2 (haproxy's spec): the client's
//! address and port, and the published address it reached. A relayed
//! connection also carries the task it is for, in a TLV of the range the
//! spec leaves to applications (0xE0–0xEF), so the receiving node hands
//! it to that task only, or refuses it (closes) and the sender tries the
//! next task. Only connections from the swarm's nodes are read for it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Every PROXY v2 header starts with these twelve bytes.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY.
const VERSION_PROXY: u8 = 0x21;
/// TCP over IPv4.
const TCP4: u8 = 0x11;
/// TCP over IPv6.
const TCP6: u8 = 0x21;
/// The TLV naming the task a relayed connection is for.
const TLV_TASK: u8 = 0xE0;
/// No task ID is this long; a header that says more is not ours.
const MAX_HEADER: usize = 16 + 36 + 3 + 128;
/// How long a node's connection may take to show whether it is relayed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// What a header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The client, as the first node saw it.
    pub source: SocketAddr,
    /// The published address the client reached.
    pub destination: SocketAddr,
    /// For a relayed connection: the task to hand it to.
    pub task_id: Option<String>,
}

impl Header {
    /// The bytes of the header.
    pub fn encode(&self) -> Vec<u8> {
        let mut addresses = Vec::with_capacity(36);
        let family = match (self.source.ip(), self.destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                addresses.extend_from_slice(&s.octets());
                addresses.extend_from_slice(&d.octets());
                TCP4
            }
            (s, d) => {
                addresses.extend_from_slice(&v6(s).octets());
                addresses.extend_from_slice(&v6(d).octets());
                TCP6
            }
        };
        addresses.extend_from_slice(&self.source.port().to_be_bytes());
        addresses.extend_from_slice(&self.destination.port().to_be_bytes());
        if let Some(task) = &self.task_id {
            let value = task.as_bytes();
            addresses.push(TLV_TASK);
            addresses.extend_from_slice(&(value.len() as u16).to_be_bytes());
            addresses.extend_from_slice(value);
        }
        let mut out = Vec::with_capacity(16 + addresses.len());
        out.extend_from_slice(&SIGNATURE);
        out.push(VERSION_PROXY);
        out.push(family);
        out.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        out.extend_from_slice(&addresses);
        out
    }

    /// Reads a header from `bytes` (exactly one header, nothing after).
    pub fn decode(bytes: &[u8]) -> Option<Header> {
        let (head, body) = (bytes.get(..16)?, bytes.get(16..)?);
        if head[..12] != SIGNATURE || head[12] != VERSION_PROXY {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
        if body.len() != len {
            return None;
        }
        let (source, destination, rest) = match head[13] {
            TCP4 => {
                let a = body.get(..12)?;
                let ip = |o: usize| IpAddr::from([a[o], a[o + 1], a[o + 2], a[o + 3]]);
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                (
                    SocketAddr::new(ip(0), port(8)),
                    SocketAddr::new(ip(4), port(10)),
                    &body[12..],
                )
            }
            TCP6 => {
                let a = body.get(..36)?;
                let ip = |o: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&a[o..o + 16]);
                    IpAddr::from(octets)
                };
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                (
                    SocketAddr::new(ip(0), port(32)),
                    SocketAddr::new(ip(16), port(34)),
                    &body[36..],
                )
            }
            _ => return None,
        };
        Some(Header {
            source,
            destination,
            task_id: task_of(rest),
        })
    }
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The task TLV among `tlvs`, if any.
fn task_of(mut tlvs: &[u8]) -> Option<String> {
    while tlvs.len() >= 3 {
        let kind = tlvs[0];
        let len = usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]]));
        let value = tlvs.get(3..3 + len)?;
        if kind == TLV_TASK {
            return String::from_utf8(value.to_vec()).ok();
        }
        tlvs = &tlvs[3 + len..];
    }
    None
}

/// Whether a connection from a node is relayed: reads its header when it
/// starts with one (consuming exactly the header), and leaves any other
/// stream untouched (only peeked at). `None`: not a relay.
pub async fn read_relayed(stream: &mut TcpStream) -> Option<Header> {
    let peeked = tokio::time::timeout(HEADER_TIMEOUT, peek_header_len(stream))
        .await
        .ok()??;
    let mut bytes = vec![0u8; peeked];
    stream.read_exact(&mut bytes).await.ok()?;
    Header::decode(&bytes).filter(|h| h.task_id.is_some())
}

/// The length of the header the stream starts with, once the peeked bytes
/// show it whole; `None` as soon as they show it is not one.
async fn peek_header_len(stream: &TcpStream) -> Option<usize> {
    let mut buf = [0u8; MAX_HEADER];
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        let shown = n.min(SIGNATURE.len());
        if buf[..shown] != SIGNATURE[..shown] {
            return None;
        }
        if n >= 16 {
            let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
            if total > MAX_HEADER {
                return None;
            }
            if n >= total {
                return Some(total);
            }
        }
        // A partial header: wait for more without spinning.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The local address a client reached, for the header's destination.
pub fn destination_of(stream: &TcpStream) -> SocketAddr {
    stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_header_round_trips() {
        let header = Header {
            source: "192.0.2.7:51000".parse().unwrap(),
            destination: "10.1.2.3:8080".parse().unwrap(),
            task_id: Some("abc123".to_string()),
        };
        let bytes = header.encode();
        assert_eq!(&bytes[..12], &SIGNATURE);
        assert_eq!(Header::decode(&bytes), Some(header));
        // Without a task: a plain PROXY v2 header of 16 + 12 bytes.
        let plain = Header {
            task_id: None,
            ..Header::decode(&bytes).unwrap()
        };
        assert_eq!(plain.encode().len(), 28);
        assert!(Header::decode(&plain.encode()[..20]).is_none());
    }

    #[tokio::test]
    async fn only_a_relay_header_is_consumed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let header = Header {
            source: "192.0.2.7:51000".parse().unwrap(),
            destination: addr,
            task_id: Some("t1".to_string()),
        };
        let mut relayed = header.encode();
        relayed.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
        for (sent, want) in [
            (relayed, Some(header.clone())),
            (b"GET / HTTP/1.0\r\n\r\n".to_vec(), None),
        ] {
            let sender = tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                tokio::io::AsyncWriteExt::write_all(&mut s, &sent)
                    .await
                    .unwrap();
                s
            });
            let (mut stream, _) = listener.accept().await.unwrap();
            assert_eq!(read_relayed(&mut stream).await, want);
            let mut rest = vec![0u8; 18];
            stream.read_exact(&mut rest).await.unwrap();
            assert_eq!(rest, b"GET / HTTP/1.0\r\n\r\n");
            drop(sender.await.unwrap());
        }
    }
}
