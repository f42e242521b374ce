//! The data key and its file, `<data-dir>/swarm/dek.json` (mode 0600):
//! `{"Version":1,"Wrapped":false,"Key":"<base64 DEK>"}` with autolock off,
//! `{"Version":1,"Wrapped":true,"Key":"<base64 nonce‖sealed DEK>"}` with it
//! on. The unlock key itself is never written: it lives in memory from
//! `swarm init --autolock`, `swarm update --autolock=true`, a rotation or
//! `swarm unlock` until the process ends.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::{SecretCodec, SecretsError};
use crate::store::Codec;

const FILE_NAME: &str = "dek.json";
const UNLOCK_PREFIX: &str = "SWMKEY-1-";
const FILE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OnDisk {
    version: u32,
    wrapped: bool,
    key: String,
}

/// What the key file holds at start-up.
pub enum KeyFile {
    /// Autolock off: the data key is usable at once.
    Open(KeyStore),
    /// Autolock on: `swarm unlock` must supply the key first.
    Locked(LockedKey),
}

/// A wrapped data key waiting for its unlock key.
pub struct LockedKey {
    path: PathBuf,
    wrapped: Vec<u8>,
}

impl LockedKey {
    /// Unwraps the data key with `unlock_key` (`SWMKEY-1-…`).
    pub fn unlock(&self, unlock_key: &str) -> Result<KeyStore, SecretsError> {
        let raw = parse_unlock_key(unlock_key)?;
        let dek = unwrap_dek(&raw, &self.wrapped)?;
        Ok(KeyStore {
            path: self.path.clone(),
            dek,
            unlock_key: Mutex::new(Some(unlock_key.to_string())),
        })
    }
}

/// The unlocked data key of this node's swarm, and the unlock key while
/// autolock is on.
pub struct KeyStore {
    path: PathBuf,
    dek: [u8; 32],
    unlock_key: Mutex<Option<String>>,
}

impl KeyStore {
    /// A new random data key for a new swarm, written to `dir` (wrapped
    /// under a new unlock key when `autolock`).
    pub fn create(dir: &Path, autolock: bool) -> Result<KeyStore, SecretsError> {
        let mut dek = [0u8; 32];
        SystemRandom::new()
            .fill(&mut dek)
            .map_err(|_| SecretsError::Crypto("no randomness for a data key"))?;
        let store = KeyStore {
            path: dir.join(FILE_NAME),
            dek,
            unlock_key: Mutex::new(None),
        };
        let mut key = store.lock_key();
        if autolock {
            *key = Some(new_unlock_key()?);
        }
        store.write(&key)?;
        drop(key);
        Ok(store)
    }

    /// A manager that joins takes the swarm's data key and, with autolock
    /// on, its unlock key (both sent by a manager over mutual TLS): the
    /// data key is kept wrapped under the same unlock key as on the other
    /// managers, or in clear when autolock is off.
    pub fn adopt(
        dir: &Path,
        dek: [u8; 32],
        unlock_key: Option<String>,
    ) -> Result<KeyStore, SecretsError> {
        let store = KeyStore {
            path: dir.join(FILE_NAME),
            dek,
            unlock_key: Mutex::new(unlock_key),
        };
        let key = store.lock_key();
        store.write(&key)?;
        drop(key);
        Ok(store)
    }

    /// The data key in base64, for a manager that joins.
    pub fn data_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.dek)
    }

    /// Reads the key file under `dir`; `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<KeyFile>, SecretsError> {
        let path = dir.join(FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SecretsError::Disk { path, source }),
        };
        let corrupt = |reason: String| SecretsError::Corrupt {
            path: path.clone(),
            reason,
        };
        let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if disk.version != FILE_VERSION {
            return Err(corrupt(format!("unknown version {}", disk.version)));
        }
        let key = base64::engine::general_purpose::STANDARD
            .decode(disk.key.as_bytes())
            .map_err(|e| corrupt(e.to_string()))?;
        if disk.wrapped {
            return Ok(Some(KeyFile::Locked(LockedKey { path, wrapped: key })));
        }
        let dek: [u8; 32] = key
            .try_into()
            .map_err(|_| corrupt("the data key is not 32 bytes".to_string()))?;
        Ok(Some(KeyFile::Open(KeyStore {
            path,
            dek,
            unlock_key: Mutex::new(None),
        })))
    }

    /// The codec raft writes through.
    pub fn codec(&self) -> Result<Arc<dyn Codec>, SecretsError> {
        Ok(Arc::new(SecretCodec::new(&self.dek)?))
    }

    /// The unlock key while autolock is on.
    pub fn unlock_key(&self) -> Option<String> {
        self.lock_key().clone()
    }

    /// Makes the key file match the swarm's `AutoLockManagers`: wraps the
    /// data key under a new unlock key when it turns on, stores it in clear
    /// when it turns off. Returns whether anything changed.
    pub fn set_autolock(&self, on: bool) -> Result<bool, SecretsError> {
        let mut key = self.lock_key();
        if on == key.is_some() {
            return Ok(false);
        }
        let next = if on { Some(new_unlock_key()?) } else { None };
        self.write(&next)?;
        *key = next;
        Ok(true)
    }

    /// A new unlock key for the same data key (autolock on only).
    pub fn rotate(&self) -> Result<(), SecretsError> {
        let mut key = self.lock_key();
        if key.is_none() {
            return Ok(());
        }
        let next = Some(new_unlock_key()?);
        self.write(&next)?;
        *key = next;
        Ok(())
    }

    fn lock_key(&self) -> MutexGuard<'_, Option<String>> {
        // A panic while holding the lock cannot leave the Option torn.
        self.unlock_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, unlock_key: &Option<String>) -> Result<(), SecretsError> {
        let (wrapped, key) = match unlock_key {
            Some(unlock) => (true, wrap_dek(&parse_unlock_key(unlock)?, &self.dek)?),
            None => (false, self.dek.to_vec()),
        };
        let disk = OnDisk {
            version: FILE_VERSION,
            wrapped,
            key: base64::engine::general_purpose::STANDARD.encode(key),
        };
        let bytes = serde_json::to_vec(&disk).map_err(|e| SecretsError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write_private(&self.path, &bytes)
    }
}

/// `SWMKEY-1-` and 32 random bytes in unpadded standard base64, as swarmkit.
fn new_unlock_key() -> Result<String, SecretsError> {
    let mut raw = [0u8; 32];
    SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| SecretsError::Crypto("no randomness for an unlock key"))?;
    Ok(format!(
        "{UNLOCK_PREFIX}{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw)
    ))
}

fn parse_unlock_key(key: &str) -> Result<Vec<u8>, SecretsError> {
    let rest = key
        .strip_prefix(UNLOCK_PREFIX)
        .ok_or(SecretsError::BadKeyFormat)?;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(rest.as_bytes())
        .map_err(|_| SecretsError::BadKeyFormat)
}

/// The key-encryption key: HKDF-SHA256 of the unlock key's bytes.
fn kek(raw: &[u8]) -> Result<LessSafeKey, SecretsError> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"shoal unlock key v1");
    let prk = salt.extract(raw);
    let okm = prk
        .expand(&[b"data key wrapping"], &CHACHA20_POLY1305)
        .map_err(|_| SecretsError::Crypto("cannot derive the key-encryption key"))?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

fn wrap_dek(raw: &[u8], dek: &[u8; 32]) -> Result<Vec<u8>, SecretsError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| SecretsError::Crypto("no randomness for a nonce"))?;
    let mut in_out = dek.to_vec();
    kek(raw)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(b"shoal/dek"),
            &mut in_out,
        )
        .map_err(|_| SecretsError::Crypto("cannot wrap the data key"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&in_out);
    Ok(out)
}

fn unwrap_dek(raw: &[u8], wrapped: &[u8]) -> Result<[u8; 32], SecretsError> {
    if wrapped.len() < NONCE_LEN {
        return Err(SecretsError::WrongKey);
    }
    let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
    let mut nonce_bytes = [0u8; NONCE_LEN];
    nonce_bytes.copy_from_slice(nonce);
    let mut in_out = sealed.to_vec();
    let plain = kek(raw)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(b"shoal/dek"),
            &mut in_out,
        )
        .map_err(|_| SecretsError::WrongKey)?;
    plain.try_into().map_err(|_| SecretsError::WrongKey)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SecretsError> {
    crate::fsutil::write_private(path, bytes).map_err(|source| SecretsError::Disk {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autolock_wraps_and_the_right_key_unwraps() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::create(dir.path(), true).unwrap();
        let unlock = keys.unlock_key().unwrap();
        assert!(unlock.starts_with("SWMKEY-1-"));
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        let plain_b64 = base64::engine::general_purpose::STANDARD.encode(keys.dek);
        assert!(!text.contains(&plain_b64), "the DEK is wrapped");
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let Some(KeyFile::Locked(locked)) = KeyStore::load(dir.path()).unwrap() else {
            panic!("locked expected");
        };
        assert!(matches!(
            locked.unlock("SWMKEY-1-AAAA"),
            Err(SecretsError::WrongKey)
        ));
        assert!(matches!(
            locked.unlock("nonsense"),
            Err(SecretsError::BadKeyFormat)
        ));
        let again = locked.unlock(&unlock).unwrap();
        assert_eq!(again.dek, keys.dek);

        // Rotation keeps the DEK and retires the old key.
        again.rotate().unwrap();
        let rotated = again.unlock_key().unwrap();
        assert_ne!(rotated, unlock);
        let Some(KeyFile::Locked(locked)) = KeyStore::load(dir.path()).unwrap() else {
            panic!("locked expected");
        };
        assert!(locked.unlock(&unlock).is_err());
        assert_eq!(locked.unlock(&rotated).unwrap().dek, keys.dek);

        // Off: the DEK is in clear and the node starts unlocked.
        assert!(again.set_autolock(false).unwrap());
        assert!(again.unlock_key().is_none());
        let Some(KeyFile::Open(open)) = KeyStore::load(dir.path()).unwrap() else {
            panic!("open expected");
        };
        assert_eq!(open.dek, keys.dek);
    }
}
