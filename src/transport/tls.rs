//! The cluster port's TLS: every node presents the certificate the swarm's
//! root CA issued it; a peer's node ID and role are read from the
//! certificate it presented, never from what it says in a request.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use super::{Role, TransportError};

/// The name a client asks for when it wants any manager: every manager's
/// certificate carries it, no worker's does (as swarmkit's `swarm-manager`).
pub const MANAGER_NAME: &str = "swarm-manager";
/// HTTP/2 only: the cluster port carries nothing else.
const ALPN_H2: &[u8] = b"h2";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// This node's credentials on the cluster port, all PEM.
#[derive(Clone)]
pub struct Identity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity { .. }")
    }
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TransportError::Tls(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TransportError::Tls("no certificate in PEM".into()));
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, TransportError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| TransportError::Tls(format!("bad key PEM: {e}")))?
        .ok_or_else(|| TransportError::Tls("no private key in PEM".into()))
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| TransportError::Tls(format!("bad root CA: {e}")))?;
    }
    Ok(Arc::new(roots))
}

fn tls_error(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// The cluster port's TLS configuration, replaced when the node's role
/// changes, its certificate is renewed or the swarm's root CA rotates,
/// without closing the port: each new connection takes the current one.
#[derive(Debug)]
pub struct ServerSlot(std::sync::RwLock<Arc<ServerConfig>>);

impl ServerSlot {
    pub fn new(identity: &Identity) -> Result<ServerSlot, TransportError> {
        Ok(ServerSlot(std::sync::RwLock::new(Arc::new(server_config(
            identity,
        )?))))
    }

    pub fn set(&self, identity: &Identity) -> Result<(), TransportError> {
        let next = Arc::new(server_config(identity)?);
        if let Ok(mut current) = self.0.write() {
            *current = next;
        }
        Ok(())
    }

    pub fn current(&self) -> Option<Arc<ServerConfig>> {
        self.0.read().ok().map(|c| c.clone())
    }
}

/// The cluster port's server side: our node certificate; a client
/// certificate is checked against the root CA (every root of the bundle
/// while one rotates) when given, and may be missing (a joining node has
/// none yet; such a peer reaches only the join calls).
fn server_config(identity: &Identity) -> Result<ServerConfig, TransportError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(&identity.ca_pem)?, provider())
            .allow_unauthenticated()
            .build()
            .map_err(tls_error)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&identity.cert_pem)?, key(&identity.key_pem)?)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// The PEM certificates of a bundle, each as its own PEM text.
pub fn split_bundle(pem: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in pem.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            current.clear();
        }
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END CERTIFICATE-----") {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

/// A member's client side: the root CA as the only trust root, our node
/// certificate as the client certificate.
pub fn client_config(identity: &Identity) -> Result<ClientConfig, TransportError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_root_certificates(roots(&identity.ca_pem)?)
        .with_client_auth_cert(certs(&identity.cert_pem)?, key(&identity.key_pem)?)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A joining node's client side once it trusts the root CA (checked
/// against its token's digest): no client certificate yet.
pub fn joining_config(ca_pem: &str) -> Result<ClientConfig, TransportError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// The very first call of a join, which fetches the root CA: the server is
/// not verified here because the CA that would verify it is what is being
/// fetched; the caller checks the answer against the digest in its join
/// token before it trusts anything (swarmkit does the same).
pub fn fetch_ca_config() -> Result<ClientConfig, TransportError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CheckedLater(provider())))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// Accepts any server certificate, still checking the handshake's
/// signatures; see [`fetch_ca_config`].
#[derive(Debug)]
struct CheckedLater(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for CheckedLater {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Who a verified certificate says its holder is: CN = node ID,
/// OU = `swarm-manager` or `swarm-worker`.
pub fn identity_of(cert: &CertificateDer<'_>) -> Option<(String, Role)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let node_id = subject.iter_common_name().next()?.as_str().ok()?;
    let ou = subject.iter_organizational_unit().next()?.as_str().ok()?;
    let role = Role::from_ou(ou)?;
    Some((node_id.to_string(), role))
}

/// The organisation (O) of the certificate in `pem`: the cluster ID in a
/// node certificate.
pub fn organisation(pem: &str) -> Option<String> {
    let der = certs(pem).ok()?.into_iter().next()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let org = parsed.subject().iter_organization().next()?.as_str().ok()?;
    Some(org.to_string())
}

/// When the certificate in `pem` became valid and when it expires, in
/// seconds since the epoch.
pub fn validity(pem: &str) -> Option<(i64, i64)> {
    let der = certs(pem).ok()?.into_iter().next()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let validity = parsed.validity();
    Some((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}
