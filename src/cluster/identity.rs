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
