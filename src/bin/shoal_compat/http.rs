//! Blocking HTTP/1.1 over unix sockets: just enough to relay, record and
//! replay Docker API exchanges (content-length, chunked and close-delimited
//! bodies; HEAD; 1xx/204/304 without bodies).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A parsed message head (request line or status line, then headers).
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// `GET /v1.41/nodes HTTP/1.1` or `HTTP/1.1 200 OK`.
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// For a response head: the status code.
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.start.clone();
        out.push_str("\r\n");
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// Reads one head; `Ok(None)` at a clean EOF before any byte.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut start = String::new();
    if r.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let start = start.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "head cut short",
            ));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some(Head { start, headers }))
}

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

pub fn request_framing(head: &Head) -> Framing {
    if head.chunked() {
        Framing::Chunked
    } else {
        match head.content_length() {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    }
}

pub fn response_framing(head: &Head, method: &str) -> Framing {
    let status = head.status();
    if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::None
    } else if head.chunked() {
        Framing::Chunked
    } else {
        match head.content_length() {
            Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    }
}

/// Copies a body from `r` to `w` (raw bytes, framing kept), calling `sink`
/// with the decoded payload as it passes.
pub fn pump_body(
    r: &mut impl BufRead,
    w: &mut impl Write,
    framing: Framing,
    mut sink: impl FnMut(&[u8]),
) -> io::Result<()> {
    match framing {
        Framing::None => Ok(()),
        Framing::Length(n) => {
            let mut left = n;
            let mut buf = [0u8; 16384];
            while left > 0 {
                let want = left.min(buf.len());
                let k = r.read(&mut buf[..want])?;
                if k == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "body cut short",
                    ));
                }
                w.write_all(&buf[..k])?;
                w.flush()?;
                sink(&buf[..k]);
                left -= k;
            }
            Ok(())
        }
        Framing::UntilClose => {
            let mut buf = [0u8; 16384];
            loop {
                let k = r.read(&mut buf)?;
                if k == 0 {
                    return Ok(());
                }
                w.write_all(&buf[..k])?;
                w.flush()?;
                sink(&buf[..k]);
            }
        }
        Framing::Chunked => loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "chunk cut short",
                ));
            }
            w.write_all(line.as_bytes())?;
            let size =
                usize::from_str_radix(line.trim().split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let mut t = String::new();
                    r.read_line(&mut t)?;
                    w.write_all(t.as_bytes())?;
                    if t.trim().is_empty() {
                        break;
                    }
                }
                w.flush()?;
                return Ok(());
            }
            let mut data = vec![0u8; size + 2];
            r.read_exact(&mut data)?;
            w.write_all(&data)?;
            w.flush()?;
            sink(&data[..size]);
        },
    }
}

/// A response read by [`request`].
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request with `Connection: close`; reads at most `limit` body bytes
/// (a longer body, a stream, is cut there).
pub fn request(
    sock: &Path,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    limit: usize,
    timeout: Duration,
) -> io::Result<Response> {
    let mut stream = UnixStream::connect(sock)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = Head {
        start: format!("{method} {target} HTTP/1.1"),
        headers: vec![
            ("Host".into(), "api.moby.localhost".into()),
            ("User-Agent".into(), "shoal-compat".into()),
            ("Connection".into(), "close".into()),
        ],
    };
    head.headers.extend(headers.iter().cloned());
    if let Some(b) = body {
        head.headers
            .push(("Content-Length".into(), b.len().to_string()));
    }
    stream.write_all(&head.to_bytes())?;
    if let Some(b) = body {
        stream.write_all(b)?;
    }
    let mut r = BufReader::new(stream);
    let resp = read_head(&mut r)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no response"))?;
    let framing = response_framing(&resp, method);
    let mut body = Vec::new();
    let res = pump_body(&mut r, &mut io::sink(), framing, |chunk| {
        if body.len() < limit {
            let take = chunk.len().min(limit - body.len());
            body.extend_from_slice(&chunk[..take]);
        }
    });
    // A stream that outlives the timeout is cut: what was read is the answer.
    if let Err(e) = res {
        if (!matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) || body.is_empty())
            && body.is_empty()
            && framing != Framing::None
        {
            return Err(e);
        }
    }
    Ok(Response {
        status: resp.status(),
        headers: resp.headers,
        body,
    })
}
