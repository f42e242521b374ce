//! The recording relay: a unix socket that forwards every connection to the
//! engine and logs each request/response pair, tagged with the command that
//! is running when the request arrives.

use std::io::{self, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use super::fixture::{self, Body, Exchange, Request, ResponseRec, BODY_LIMIT};
use super::http;

#[derive(Default)]
pub struct Log {
    /// The command that is running (index into the scenario's steps).
    pub current: AtomicUsize,
    /// (arrival sequence, command index, exchange).
    pub entries: Mutex<Vec<(usize, usize, Exchange)>>,
    seq: AtomicUsize,
    stop: AtomicBool,
}

pub struct Relay {
    pub path: PathBuf,
    pub log: Arc<Log>,
}

impl Relay {
    pub fn start(path: &Path, engine: &Path) -> io::Result<Relay> {
        let listener = UnixListener::bind(path)?;
        let log = Arc::new(Log::default());
        let engine = engine.to_path_buf();
        let l2 = log.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if l2.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let engine = engine.clone();
                let log = l2.clone();
                thread::spawn(move || {
                    if let Err(e) = serve(client, &engine, &log) {
                        eprintln!("relay: connection ended: {e}");
                    }
                });
            }
        });
        Ok(Relay {
            path: path.to_path_buf(),
            log,
        })
    }

    pub fn stop(&self) {
        self.log.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
    }
}

fn serve(client: UnixStream, engine: &Path, log: &Log) -> io::Result<()> {
    let upstream = UnixStream::connect(engine)?;
    let mut creader = BufReader::new(client.try_clone()?);
    let mut cwriter = client;
    let mut ureader = BufReader::new(upstream.try_clone()?);
    let mut uwriter = upstream;
    loop {
        let Some(req) = http::read_head(&mut creader)? else {
            return Ok(());
        };
        let seq = log.seq.fetch_add(1, Ordering::SeqCst);
        let cmd = log.current.load(Ordering::SeqCst);
        let mut parts = req.start.splitn(3, ' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        uwriter.write_all(&req.to_bytes())?;
        let mut req_body = Vec::new();
        http::pump_body(
            &mut creader,
            &mut uwriter,
            http::request_framing(&req),
            |c| req_body.extend_from_slice(c),
        )?;
        uwriter.flush()?;
        let Some(resp) = http::read_head(&mut ureader)? else {
            return Ok(());
        };
        cwriter.write_all(&resp.to_bytes())?;
        let framing = http::response_framing(&resp, &method);
        let mut resp_body = Vec::new();
        let mut truncated = false;
        let res = http::pump_body(&mut ureader, &mut cwriter, framing, |c| {
            if resp_body.len() + c.len() <= BODY_LIMIT {
                resp_body.extend_from_slice(c);
            } else {
                let take = BODY_LIMIT.saturating_sub(resp_body.len());
                resp_body.extend_from_slice(&c[..take]);
                truncated = true;
            }
        });
        let _ = cwriter.flush();
        let (path, query) = split_target(&target);
        let exchange = Exchange {
            request: Request {
                method: method.clone(),
                path,
                query,
                headers: fixture::keep_headers(&req.headers, fixture::REQUEST_HEADERS),
                body: Body::decode(&req_body, false),
            },
            response: ResponseRec {
                status: resp.status(),
                headers: fixture::keep_headers(&resp.headers, fixture::RESPONSE_HEADERS),
                body: Body::decode(&resp_body, truncated || res.is_err()),
                truncated: truncated || res.is_err(),
            },
            repeated: 0,
        };
        log.entries.lock().unwrap().push((seq, cmd, exchange));
        res?;
        if resp.status() == 101 {
            // An upgraded stream: splice, unrecorded.
            let mut c2 = cwriter.try_clone()?;
            let mut u2 = uwriter.try_clone()?;
            let t = thread::spawn(move || {
                let _ = io::copy(&mut ureader, &mut c2);
            });
            let _ = io::copy(&mut creader, &mut u2);
            let _ = t.join();
            return Ok(());
        }
        if req.wants_close() || resp.wants_close() || framing == http::Framing::UntilClose {
            return Ok(());
        }
    }
}

/// `/v1.41/tasks?filters=…` → ("/v1.41/tasks", [("filters", "…")]).
pub fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    match target.split_once('?') {
        Some((p, q)) => (
            p.to_string(),
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ),
        None => (target.to_string(), Vec::new()),
    }
}

/// The inverse of [`split_target`].
pub fn join_target(path: &str, query: &[(String, String)]) -> String {
    if query.is_empty() {
        return path.to_string();
    }
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        ser.append_pair(k, v);
    }
    format!("{path}?{}", ser.finish())
}
