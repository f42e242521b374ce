//! The store's [`Codec`] that encrypts Secret objects for disk.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::store::{Codec, CodecError};
use crate::types::Kind;

/// Starts with a NUL byte so sealed bytes can never be mistaken for the
/// JSON an unsealed object is stored as.
const MAGIC: &[u8] = b"\0shoal-aead-1";

/// Seals every Secret object (its whole JSON, so Data and anything else in
/// the spec) with ChaCha20-Poly1305 under the data key, a fresh random
/// nonce per write, and the kind as associated data. Other kinds pass
/// through: configs are not secret (the API returns their Data).
pub struct SecretCodec {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl SecretCodec {
    pub fn new(dek: &[u8; 32]) -> Result<SecretCodec, super::SecretsError> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, dek)
            .map_err(|_| super::SecretsError::Crypto("bad data key length"))?;
        Ok(SecretCodec {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }
}

/// Secrets, and the cluster object (it holds the root CA's key).
fn sealed_kind(kind: Kind) -> bool {
    matches!(kind, Kind::Secret | Kind::Cluster)
}

fn aad(kind: Kind) -> Aad<String> {
    Aad::from(format!("shoal/{kind}"))
}

impl Codec for SecretCodec {
    fn seal(&self, kind: Kind, plain: Vec<u8>) -> Result<Vec<u8>, CodecError> {
        if !sealed_kind(kind) {
            return Ok(plain);
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| CodecError::Other("no randomness for a nonce".to_string()))?;
        let mut in_out = plain;
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad(kind), &mut in_out)
            .map_err(|_| CodecError::Other("cannot encrypt a secret".to_string()))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + in_out.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        Ok(out)
    }

    fn open(&self, kind: Kind, sealed: Vec<u8>) -> Result<Vec<u8>, CodecError> {
        if !sealed_kind(kind) {
            return Ok(sealed);
        }
        let Some(rest) = sealed.strip_prefix(MAGIC) else {
            // Written before secrets were encrypted (plain JSON): readable,
            // and sealed from the next write or snapshot on.
            if sealed.first() == Some(&b'{') {
                return Ok(sealed);
            }
            return Err(CodecError::Other(
                "stored secret has an unknown format".into(),
            ));
        };
        if rest.len() < NONCE_LEN {
            return Err(CodecError::Other("stored secret is truncated".into()));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(nonce);
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes),
                aad(kind),
                &mut in_out,
            )
            .map_err(|_| {
                CodecError::Other("stored secret does not decrypt with this data key".into())
            })?;
        let len = plain.len();
        in_out.truncate(len);
        Ok(in_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_secrets_only_and_round_trips() {
        let codec = SecretCodec::new(&[7u8; 32]).unwrap();
        let plain = br#"{"Secret":{"Spec":{"Data":"bWFya2Vy"}}}"#.to_vec();
        let sealed = codec.seal(Kind::Secret, plain.clone()).unwrap();
        assert!(sealed.starts_with(MAGIC));
        assert!(!sealed.windows(8).any(|w| w == b"bWFya2Vy"));
        assert_eq!(codec.open(Kind::Secret, sealed.clone()).unwrap(), plain);
        // Two seals of the same bytes differ (fresh nonce).
        assert_ne!(codec.seal(Kind::Secret, plain.clone()).unwrap(), sealed);
        // Configs pass through.
        assert_eq!(codec.seal(Kind::Config, plain.clone()).unwrap(), plain);
    }

    #[test]
    fn tampering_or_another_key_is_refused() {
        let codec = SecretCodec::new(&[7u8; 32]).unwrap();
        let mut sealed = codec.seal(Kind::Secret, b"{}".to_vec()).unwrap();
        let other = SecretCodec::new(&[8u8; 32]).unwrap();
        assert!(other.open(Kind::Secret, sealed.clone()).is_err());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(codec.open(Kind::Secret, sealed).is_err());
        assert!(codec.open(Kind::Secret, MAGIC.to_vec()).is_err());
    }
}
