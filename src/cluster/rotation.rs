//! The swarm's root CA in the store, and `docker swarm ca --rotate`.
//!
//! The CA (certificate and key) lives in the cluster object's
//! `Spec.CAConfig.SigningCACert/SigningCAKey`, so raft replicates it to
//! every manager (and only to managers); the store's codec seals the
//! cluster object on disk as it seals secrets; API answers never show it.
//!
//! A rotation (`CAConfig.ForceRotate` raised, or a CA of the user's own
//! given) puts a new CA in place at once, new join tokens with it, and sets
//! `RootRotationInProgress`. Every node then trusts both roots, gets a
//! certificate signed by the new one (its node's `Description.TLSInfo`
//! says so, which is what `docker swarm ca` watches), and once every node
//! has one the leader clears the flag and nodes drop the old root.

use bollard::models::{Swarm, SwarmSpec, TlsInfo};

use super::ClusterError;
use crate::ca::RootCa;

/// The CA stored in the cluster object, when there is one.
pub fn stored_root(swarm: &Swarm) -> Option<RootCa> {
    let ca = swarm.spec.as_ref()?.ca_config.as_ref()?;
    Some(RootCa {
        cert_pem: ca.signing_ca_cert.clone().filter(|c| !c.is_empty())?,
        key_pem: ca.signing_ca_key.clone().filter(|k| !k.is_empty())?,
    })
}

/// Puts `root` into the spec (where raft carries it to every manager).
pub fn keep_root(spec: &mut SwarmSpec, root: &RootCa) {
    let ca = spec.ca_config.get_or_insert_with(Default::default);
    ca.signing_ca_cert = Some(root.cert_pem.clone());
    ca.signing_ca_key = Some(root.key_pem.clone());
}

/// Removes the CA from a cluster object before it is shown to a client.
pub fn redact(swarm: &mut Swarm) {
    if let Some(ca) = swarm.spec.as_mut().and_then(|s| s.ca_config.as_mut()) {
        ca.signing_ca_cert = None;
        ca.signing_ca_key = None;
    }
}

/// The CA a `swarm update` asks for: a new one when `ForceRotate` went up
/// or the client sent a CA of its own (certificate and key), else `None`.
pub fn requested(current: &Swarm, incoming: &SwarmSpec) -> Result<Option<RootCa>, ClusterError> {
    let ca = incoming.ca_config.clone().unwrap_or_default();
    let given_cert = ca.signing_ca_cert.filter(|c| !c.is_empty());
    let given_key = ca.signing_ca_key.filter(|k| !k.is_empty());
    if let (Some(cert_pem), Some(key_pem)) = (given_cert, given_key) {
        let given = RootCa { cert_pem, key_pem };
        let same = stored_root(current).is_some_and(|r| r.cert_pem == given.cert_pem);
        return Ok((!same).then_some(given));
    }
    let before = current
        .spec
        .as_ref()
        .and_then(|s| s.ca_config.as_ref())
        .and_then(|c| c.force_rotate)
        .unwrap_or(0);
    let now = ca.force_rotate.unwrap_or(0);
    if now > before {
        return Ok(Some(RootCa::generate()?));
    }
    Ok(None)
}

/// The TLSInfo nodes and the cluster show for `root`.
pub fn tls_info(root: &RootCa) -> Result<TlsInfo, ClusterError> {
    super::tls_info(root)
}

/// Whether a node's certificate comes from the cluster's current root.
pub fn node_rotated(node: &bollard::models::Node, cluster: &TlsInfo) -> bool {
    let theirs = node.description.as_ref().and_then(|d| d.tls_info.as_ref());
    theirs.is_some_and(|t| {
        t.cert_issuer_public_key == cluster.cert_issuer_public_key
            && t.cert_issuer_subject == cluster.cert_issuer_subject
    })
}
