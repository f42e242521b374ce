//! Identity: the swarm's root CA (made at `swarm init`), node certificates,
//! and join tokens in swarmkit's format.

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, PKCS_ECDSA_P256_SHA256,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("random number generator failed")]
    Random,
}

/// The root CA as kept in the cluster store: certificate and key in PEM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RootCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What `TLSInfo` shows of the root: the trust root and the issuer's subject
/// and public key as base64 DER, as the engine reports them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsInfo {
    pub trust_root: String,
    pub cert_issuer_subject: String,
    pub cert_issuer_public_key: String,
}

/// swarmkit names its CA `swarm-ca`, as a PrintableString.
const CA_COMMON_NAME: &str = "swarm-ca";
/// 20 years, as swarmkit's root CA.
const CA_VALIDITY_DAYS: i64 = 20 * 365;

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn ca_name() -> DistinguishedName {
    let mut name = DistinguishedName::new();
    let value = match CA_COMMON_NAME.try_into() {
        Ok(printable) => DnValue::PrintableString(printable),
        Err(_) => DnValue::Utf8String(CA_COMMON_NAME.to_string()),
    };
    name.push(DnType::CommonName, value);
    name
}

/// DER of the subject `CN=swarm-ca` (PrintableString), which rcgen does not expose.
fn ca_subject_der() -> Vec<u8> {
    let cn = CA_COMMON_NAME.as_bytes();
    let attribute_len = 5 + 2 + cn.len(); // OID (06 03 55 04 03) + string header + text
    let mut der = vec![
        0x30,
        (attribute_len + 4) as u8,
        0x31,
        (attribute_len + 2) as u8,
    ];
    der.extend([
        0x30,
        attribute_len as u8,
        0x06,
        0x03,
        0x55,
        0x04,
        0x03,
        0x13,
        cn.len() as u8,
    ]);
    der.extend_from_slice(cn);
    der
}

impl RootCa {
    /// A fresh root: ECDSA P-256, CN swarm-ca, valid for 20 years.
    pub fn generate() -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params();
        let now = time_now();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    pub fn tls_info(&self) -> Result<TlsInfo, CaError> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(TlsInfo {
            trust_root: self.cert_pem.clone(),
            cert_issuer_subject: b64.encode(ca_subject_der()),
            cert_issuer_public_key: b64.encode(key.subject_public_key_info()),
        })
    }

    /// The digest part of every join token of this swarm.
    pub fn token_digest(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.cert_pem.as_bytes());
        base36_padded(digest.as_ref(), 50)
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// A join token `SWMTKN-1-<CA digest>-<secret>`; the secret is 16 random
/// bytes in base 36, so rotating changes only it.
pub fn new_join_token(ca: &RootCa) -> Result<String, CaError> {
    let secret = random_bytes::<16>()?;
    Ok(format!(
        "SWMTKN-1-{}-{}",
        ca.token_digest(),
        base36_padded(&secret, 25)
    ))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CaError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    Ok(bytes)
}

/// Big-endian bytes as a base-36 number, left-padded with '0' to `width`.
fn base36_padded(bytes: &[u8], width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut number = bytes.to_vec();
    let mut out = Vec::new();
    while number.iter().any(|&b| b != 0) {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 36) as u8;
            remainder = value % 36;
        }
        out.push(DIGITS[remainder as usize]);
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_matches_known_values() {
        assert_eq!(base36_padded(&[0], 3), "000");
        assert_eq!(base36_padded(&[35], 1), "z");
        assert_eq!(base36_padded(&[1, 0], 1), "74"); // 256 = 7*36 + 4
    }

    #[test]
    fn subject_der_is_swarmkits() {
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(b64.encode(ca_subject_der()), "MBMxETAPBgNVBAMTCHN3YXJtLWNh");
    }

    #[test]
    fn tokens_share_the_digest_and_rotate_the_secret() {
        let ca = RootCa::generate().unwrap();
        let a = new_join_token(&ca).unwrap();
        let b = new_join_token(&ca).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), "SWMTKN-1-".len() + 50 + 1 + 25);
        assert_eq!(a[..59], b[..59]);
    }

    #[test]
    fn tls_info_shows_the_issuer_key() {
        let ca = RootCa::generate().unwrap();
        let info = ca.tls_info().unwrap();
        assert!(!info.cert_issuer_public_key.is_empty());
    }
}
