//! The pieces of `shoal-compat`.

/// Comparing replayed responses with recorded ones (normalisers).
pub mod compare;
/// The fixture files' model.
pub mod fixture;
/// Blocking HTTP/1.1 over unix sockets.
pub mod http;
/// `record`: the real engine in swarm mode behind a recording relay.
pub mod record;
/// The recording relay.
pub mod relay;
/// `check` and `report`: replay against a fresh shoal, ledger.
pub mod replay;
/// The scenario file.
pub mod scenario;
/// Response bodies against the Engine API 1.41 schema.
pub mod schema;

/// A temp dir removed at drop (the binary cannot use the `tempfile`
/// dev-dependency).
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "{prefix}{}-{nanos:x}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
