//! This node's credentials on disk (`<data-dir>/swarm`): the root CA's
//! certificate, the node's certificate and key, and on managers the CA key
//! (`ca.json`) that signs the certificates of joining nodes.

use std::path::Path;
use std::time::Duration;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, Issuer,
    KeyPair, PKCS_ECDSA_P256_SHA256,
};

use super::ClusterError;
use crate::ca::RootCa;
use crate::transport::{Identity, Role};

const CA_CERT: &str = "ca.pem";
const NODE_CERT: &str = "node.crt";
const NODE_KEY: &str = "node.key";

pub fn save(dir: &Path, identity: &Identity) -> Result<(), ClusterError> {
    super::write_private(&dir.join(CA_CERT), identity.ca_pem.as_bytes())?;
    super::write_private(&dir.join(NODE_CERT), identity.cert_pem.as_bytes())?;
    super::write_private(&dir.join(NODE_KEY), identity.key_pem.as_bytes())
}

pub fn load(dir: &Path) -> Result<Identity, ClusterError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| ClusterError::Disk { path, source })
    };
    Ok(Identity {
        ca_pem: read(CA_CERT)?,
        cert_pem: read(NODE_CERT)?,
        key_pem: read(NODE_KEY)?,
    })
}

/// A new key pair and a signing request for it; the key never leaves this
/// node. Returns (CSR PEM, key PEM).
pub fn new_request() -> Result<(String, String), ClusterError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(ca_error)?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(ca_error)?;
    Ok((csr.pem().map_err(ca_error)?, key.serialize_pem()))
}

/// The root CA signs a node's request: CN = node ID, OU = role, O = the
/// cluster ID, as swarmkit's node certificates. Whatever subject the
/// request asked for is ignored; only its public key is used.
pub fn sign_request(
    root: &RootCa,
    csr_pem: &str,
    node_id: &str,
    role: Role,
    cluster_id: &str,
    expiry: Duration,
) -> Result<String, ClusterError> {
    let mut request = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| ClusterError::JoinRefused(format!("invalid certificate request: {e}")))?;
    let mut params = CertificateParams::new(vec![role.ou().to_string(), node_id.to_string()])
        .map_err(ca_error)?;
    params.distinguished_name.push(DnType::CommonName, node_id);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, role.ou());
    params
        .distinguished_name
        .push(DnType::OrganizationName, cluster_id);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::try_from(expiry).unwrap_or(time::Duration::days(90));
    request.params = params;
    let ca_key = KeyPair::from_pem(&root.key_pem).map_err(ca_error)?;
    let issuer = Issuer::from_ca_cert_pem(&root.cert_pem, ca_key).map_err(ca_error)?;
    let cert = request.signed_by(&issuer).map_err(ca_error)?;
    Ok(cert.pem())
}

/// The first manager's own certificate, signed right after the CA is made.
pub fn issue_own(
    root: &RootCa,
    node_id: &str,
    role: Role,
    cluster_id: &str,
    expiry: Duration,
) -> Result<Identity, ClusterError> {
    let (csr, key_pem) = new_request()?;
    let cert_pem = sign_request(root, &csr, node_id, role, cluster_id, expiry)?;
    Ok(Identity {
        ca_pem: root.cert_pem.clone(),
        cert_pem,
        key_pem,
    })
}

/// At start: a node whose certificate has expired cannot talk to any peer.
/// A manager holds the CA key and signs itself a new one; a worker cannot,
/// and is told what the engine tells (leave and join again).
pub fn renew_expired(dir: &Path, node_id: &str, role: Role) -> Result<(), ClusterError> {
    let current = load(dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let expired =
        crate::transport::tls::validity(&current.cert_pem).is_some_and(|(_, until)| until <= now);
    if !expired {
        return Ok(());
    }
    if role == Role::Worker {
        tracing::error!(
            "Swarm certificates have expired. To replace them, leave the swarm and join again."
        );
        return Ok(());
    }
    let path = dir.join("ca.json");
    let bytes = std::fs::read(&path).map_err(|source| ClusterError::Disk {
        path: path.clone(),
        source,
    })?;
    let root: RootCa = serde_json::from_slice(&bytes).map_err(|e| ClusterError::Corrupt {
        path,
        reason: e.to_string(),
    })?;
    let cluster_id = crate::transport::tls::organisation(&current.cert_pem).unwrap_or_default();
    let renewed = issue_own(&root, node_id, role, &cluster_id, RENEWED_LIFETIME)?;
    save(dir, &renewed)?;
    tracing::warn!("this node's certificate had expired; the manager signed itself a new one");
    Ok(())
}

/// A self-renewed manager's certificate lives a day; the renewal loop
/// replaces it with one of the cluster's NodeCertExpiry soon after start.
const RENEWED_LIFETIME: Duration = Duration::from_secs(24 * 3600);

fn ca_error(e: rcgen::Error) -> ClusterError {
    ClusterError::Ca(crate::ca::CaError::Rcgen(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_names_the_node_and_its_role() {
        let root = RootCa::generate().unwrap();
        let identity = issue_own(
            &root,
            "node1",
            Role::Worker,
            "cluster1",
            Duration::from_secs(3600),
        )
        .unwrap();
        let der = rustls_pemfile::certs(&mut identity.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (id, role) = crate::transport::tls::identity_of(&der).unwrap();
        assert_eq!((id.as_str(), role), ("node1", Role::Worker));
        let (from, until) = crate::transport::tls::validity(&identity.cert_pem).unwrap();
        // Valid from an hour ago (clock skew) for the hour asked.
        assert_eq!(until - from, 7200);
    }

    #[test]
    fn an_expired_manager_certificate_is_renewed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let root = RootCa::generate().unwrap();
        std::fs::write(
            dir.path().join("ca.json"),
            serde_json::to_vec(&root).unwrap(),
        )
        .unwrap();
        // Valid for one more second; then wait until it has expired.
        let old = issue_own(&root, "n1", Role::Manager, "c1", Duration::from_secs(1)).unwrap();
        save(dir.path(), &old).unwrap();
        let (_, until) = crate::transport::tls::validity(&old.cert_pem).unwrap();
        while std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            <= until
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        renew_expired(dir.path(), "n1", Role::Manager).unwrap();
        let new = load(dir.path()).unwrap();
        assert_ne!(new.cert_pem, old.cert_pem);
        assert_eq!(
            crate::transport::tls::organisation(&new.cert_pem).as_deref(),
            Some("c1")
        );
    }

    #[test]
    fn garbage_requests_are_refused() {
        let root = RootCa::generate().unwrap();
        let refused = sign_request(
            &root,
            "not a csr",
            "n",
            Role::Manager,
            "c",
            Duration::from_secs(3600),
        );
        assert!(matches!(refused, Err(ClusterError::JoinRefused(_))));
    }
}
