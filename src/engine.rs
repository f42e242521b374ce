//! How every part of shoal reaches the local engine: the proxy, the agent
//! (through bollard) and the network part. One settings value is built once
//! from `--engine` and `--engine-tls*` and handed to each, so an engine that
//! speaks only TLS is reached over TLS by all of them, through one connector.

use std::sync::Arc;

use bollard::{BollardRequest, ClientVersion, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::proxy::engine::{EngineAddr, EngineAddrError, EngineConnector};

/// What a client needs to reach the engine: where it is and, for a TLS
/// engine, the client's TLS settings. Cheap to clone (shared parts).
#[derive(Clone)]
pub struct EngineSettings {
    /// The address as the user wrote it, for messages.
    label: Arc<str>,
    addr: EngineAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for EngineSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSettings")
            .field("addr", &self.label)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl EngineSettings {
    /// `address`: `unix:///path` or `tcp://host:port`; `tls` only matters
    /// for tcp://.
    pub fn new(
        address: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<EngineSettings, EngineAddrError> {
        Ok(EngineSettings {
            label: address.into(),
            addr: EngineAddr::parse(address)?,
            tls,
        })
    }

    /// The address as the user wrote it.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Opens connections to the engine for a hyper-util client.
    pub fn connector(&self) -> EngineConnector {
        EngineConnector::new(self.addr.clone(), self.tls.clone())
    }

    /// A bollard client speaking `version`, whose requests go through
    /// [`Self::connector`] (plain, unix or TLS alike). `timeout_secs` bounds
    /// the wait for each response's headers.
    pub fn docker(
        &self,
        timeout_secs: u64,
        version: &ClientVersion,
    ) -> Result<Docker, bollard::errors::Error> {
        let client = Client::builder(TokioExecutor::new()).build(self.connector());
        let transport = move |request: BollardRequest| {
            let client = client.clone();
            async move {
                client
                    .request(request)
                    .await
                    .map_err(bollard::errors::Error::from)
            }
        };
        // The connector ignores the URI's host; bollard needs one to build
        // request URIs, and its scheme (http) keeps hyper from doing TLS
        // itself.
        Docker::connect_with_custom_transport(
            transport,
            Some("http://engine"),
            timeout_secs,
            version,
        )
    }
}
