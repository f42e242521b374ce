use std::convert::Infallible;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Method, StatusCode};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::client::{message, Conn};

const MIB: u64 = 1024 * 1024;
const BLOCK: usize = 512;
const CHUNK: u64 = MIB;

/// What the engine says about the benchmark image.
pub struct ImageInfo {
    pub id: String,
    pub size: u64,
    pub created_now: bool,
}

/// Makes sure `reference` (e.g. `shoal-bench-big:latest`) exists locally with
/// at least `mib` MiB of incompressible content; if absent, `docker import`s
/// (POST /images/create?fromSrc=-) a tar holding one file of `mib` MiB of
/// random bytes, generated while it streams. The image is kept for re-runs;
/// `docker rmi shoal-bench-big` removes it.
pub async fn ensure(engine: &Path, reference: &str, mib: u64) -> Result<ImageInfo> {
    if let Some(info) = inspect(engine, reference).await? {
        if info.size < mib * MIB {
            bail!(
                "image {reference} exists but holds {:.0} MiB, less than the {mib} MiB asked for; \
                 remove it (docker rmi {reference}) and run again",
                info.size as f64 / MIB as f64
            );
        }
        return Ok(info);
    }
    let (repo, tag) = split_reference(reference);
    eprintln!(
        "making {reference}: docker import of {mib} MiB of random bytes (once; kept for re-runs)"
    );
    let start = Instant::now();
    let size = mib * MIB;
    let total = BLOCK as u64 + size + 2 * BLOCK as u64;
    let mut conn = Conn::connect(engine).await?;
    let path = format!("/images/create?fromSrc=-&repo={repo}&tag={tag}");
    let response = conn
        .send(
            Method::POST,
            &path,
            &[
                ("content-type", "application/x-tar".to_string()),
                ("content-length", total.to_string()),
            ],
            random_tar(size),
        )
        .await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the import's progress")?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    if status != StatusCode::OK {
        bail!("docker import of {reference}: {status}: {text}");
    }
    // The progress stream is JSON messages; a failure arrives as errorDetail
    // inside a 200.
    for line in text.lines() {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(error) = value.get("error").or_else(|| value.get("errorDetail")) {
                bail!("docker import of {reference} failed: {error}");
            }
        }
    }
    match inspect(engine, reference).await? {
        Some(mut info) => {
            info.created_now = true;
            eprintln!(
                "made {reference} ({:.0} MiB) in {:.1} s",
                info.size as f64 / MIB as f64,
                start.elapsed().as_secs_f64()
            );
            Ok(info)
        }
        None => bail!("docker import reported success but {reference} is not there: {text}"),
    }
}

async fn inspect(engine: &Path, reference: &str) -> Result<Option<ImageInfo>> {
    let mut conn = Conn::connect(engine).await?;
    let (status, value) = conn.get_json(&format!("/images/{reference}/json")).await?;
    match status {
        StatusCode::OK => Ok(Some(ImageInfo {
            id: value["Id"].as_str().unwrap_or_default().to_string(),
            size: value["Size"].as_u64().unwrap_or(0),
            created_now: false,
        })),
        StatusCode::NOT_FOUND => Ok(None),
        other => bail!("inspecting image {reference}: {other}: {}", message(&value)),
    }
}

fn split_reference(reference: &str) -> (&str, &str) {
    // A tag follows the last ':' unless that ':' belongs to a registry port.
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}

/// A ustar archive with one regular file `shoal-bench.bin` of `size` random
/// bytes (`size` a multiple of 512), produced chunk by chunk as it is sent.
fn random_tar(
    size: u64,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send> {
    enum Stage {
        Header,
        Data(u64),
        Done,
    }
    let rng = StdRng::from_entropy();
    let chunks = futures_util::stream::unfold((Stage::Header, rng), move |(stage, mut rng)| {
        let next = match stage {
            Stage::Header => Some((tar_header("shoal-bench.bin", size), Stage::Data(size))),
            // End of archive: two zero blocks.
            Stage::Data(0) => Some((Bytes::from(vec![0u8; 2 * BLOCK]), Stage::Done)),
            Stage::Data(left) => {
                let n = left.min(CHUNK);
                let mut chunk = vec![0u8; n as usize];
                rng.fill_bytes(&mut chunk);
                Some((Bytes::from(chunk), Stage::Data(left - n)))
            }
            Stage::Done => None,
        };
        async move { next.map(|(bytes, stage)| (Ok(Frame::data(bytes)), (stage, rng))) }
    });
    StreamBody::new(chunks)
}

fn tar_header(name: &str, size: u64) -> Bytes {
    fn put(header: &mut [u8], at: usize, value: &[u8]) {
        header[at..at + value.len()].copy_from_slice(value);
    }
    let mut h = [0u8; BLOCK];
    put(&mut h, 0, name.as_bytes());
    put(&mut h, 100, b"0000644\0");
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, b"00000000000\0");
    put(&mut h, 148, b"        ");
    h[156] = b'0';
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    Bytes::copy_from_slice(&h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repo_and_tag() {
        assert_eq!(split_reference("a:b"), ("a", "b"));
        assert_eq!(split_reference("a"), ("a", "latest"));
        assert_eq!(split_reference("host:5000/a"), ("host:5000/a", "latest"));
        assert_eq!(split_reference("host:5000/a:t"), ("host:5000/a", "t"));
    }

    #[test]
    fn tar_header_checksum_is_valid() {
        let h = tar_header("f", 1024);
        let stored = std::str::from_utf8(&h[148..154]).map(|s| u32::from_str_radix(s, 8));
        let mut blank = h.to_vec();
        blank[148..156].copy_from_slice(b"        ");
        let sum: u32 = blank.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(stored, Ok(Ok(sum)));
        assert_eq!(&h[124..136], b"00000002000\0");
    }
}
