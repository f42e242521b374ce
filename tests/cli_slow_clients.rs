//! Clients that connect and then send nothing, or a byte now and then, or
//! stall a TLS handshake: everyone else is still served, and the stalled
//! ones are cut once the client timeouts pass (shortened here to 2 s from
//! the default 30 s for headers and 10 s for TLS handshakes).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const TIMEOUT_SECS: u64 = 2;
const IDLE_CLIENTS: usize = 500;
/// How long past the timeout a cut may come (a busy CI machine).
const SLACK: Duration = Duration::from_secs(8);

/// Reads until the peer closes (or errors); how long that took.
fn time_until_closed(stream: &mut impl Read, started: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

fn assert_cut_after_timeout(what: &str, took: Duration) {
    let timeout = Duration::from_secs(TIMEOUT_SECS);
    assert!(
        took >= timeout - Duration::from_millis(300) && took <= timeout + SLACK,
        "{what} was cut after {took:?}, expected about {timeout:?}"
    );
}

/// `GET /_ping` sent one byte at a time: served like any other request.
fn byte_by_byte_ping(sock: &std::path::Path) -> String {
    let mut stream = UnixStream::connect(sock).unwrap();
    for byte in b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n" {
        stream.write_all(&[*byte]).unwrap();
        thread::sleep(Duration::from_millis(10));
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"OK") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn idle_slow_and_stalled_clients_do_not_stop_others_and_are_cut() {
    let certs = Certs::generate();
    let shoal = Shoal::builder()
        .tlsverify(certs.server.clone())
        .arg("--header-read-timeout")
        .arg(TIMEOUT_SECS.to_string())
        .arg("--tls-handshake-timeout")
        .arg(TIMEOUT_SECS.to_string())
        .start();
    let sockets_before = shoal.socket_fd_count();

    // 500 clients that connect and say nothing.
    let idle: Vec<UnixStream> = (0..IDLE_CLIENTS)
        .map(|_| UnixStream::connect(&shoal.sock).unwrap())
        .collect();
    let started = Instant::now();
    // A slow-loris: a request line, then a header byte now and then, never
    // finishing its headers.
    let loris_sock = shoal.sock.clone();
    let loris = thread::spawn(move || {
        let mut stream = UnixStream::connect(&loris_sock).unwrap();
        stream.write_all(b"GET /_ping HTTP/1.1\r\n").unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(TIMEOUT_SECS) + SLACK {
            if stream.write_all(b"X").is_err() {
                break;
            }
            let mut buf = [0u8; 64];
            stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            match stream.read(&mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => break,
                _ => {}
            }
        }
        started.elapsed()
    });
    // A TLS client that connects and never starts its handshake.
    let tls_addr = shoal.tcp.unwrap();
    let stalled_tls = thread::spawn(move || {
        let mut stream = TcpStream::connect(tls_addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(TIMEOUT_SECS) + SLACK * 2))
            .unwrap();
        time_until_closed(&mut stream, Instant::now())
    });

    // Meanwhile other clients are answered as usual.
    let answer = byte_by_byte_ping(&shoal.sock);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("OK"),
        "byte-by-byte GET /_ping answered {answer:?}"
    );
    for _ in 0..20 {
        let asked = Instant::now();
        let response = shoal.http("GET", "/_ping");
        assert_eq!(response.status, 200);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "GET /_ping took {:?} beside {IDLE_CLIENTS} idle clients",
            asked.elapsed()
        );
    }
    let out = shoal.docker_ok(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert!(!out.trim().is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(TIMEOUT_SECS),
        "the clients above should have been served before the timeout"
    );

    assert_cut_after_timeout("the slow-loris client", loris.join().unwrap());
    assert_cut_after_timeout("the stalled TLS handshake", stalled_tls.join().unwrap());

    // The idle clients are cut too: their sockets are gone from shoal.
    let mut idle = idle;
    let first = time_until_closed(&mut idle[0], started);
    assert_cut_after_timeout("an idle client", first);
    wait_for("shoal to close the idle clients' sockets", SLACK, || {
        (shoal.socket_fd_count() <= sockets_before + 5).then_some(())
    });
    // And shoal still answers.
    assert_eq!(shoal.http("GET", "/_ping").status, 200);
}
