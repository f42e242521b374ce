//! The one place where an error becomes a Docker-shaped response:
//! the engine's status code and `{"message": "..."}`.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};
use crate::cluster::ClusterError;
use crate::network::NetworkError;
use crate::proxy::ProxyError;
use crate::store::{ProposeError, StoreError};
use crate::types::Kind;

/// swarmkit's gRPC codes that reach clients through the engine, with the
/// HTTP status the engine maps each to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcCode {
    InvalidArgument,
    FailedPrecondition,
    Unimplemented,
}

impl RpcCode {
    fn status(self) -> StatusCode {
        match self {
            RpcCode::InvalidArgument | RpcCode::FailedPrecondition => StatusCode::BAD_REQUEST,
            RpcCode::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

impl std::fmt::Display for RpcCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Everything `api` can answer with instead of a success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{}", store_message(.0))]
    Store(#[from] StoreError),
    #[error("rpc error: code = Unavailable desc = {0}")]
    Propose(#[from] ProposeError),
    /// An error swarmkit raises, reported with its gRPC prefix as the engine does.
    #[error("rpc error: code = {code} desc = {desc}")]
    Rpc { code: RpcCode, desc: String },
    /// The engine's own 400s: bad query values, bad bodies.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Errors the engine reports as 500 without a class (bad filter values).
    #[error("{0}")]
    Internal(String),
    #[error("client version {requested} is too new. Maximum supported API version is {max}")]
    VersionTooNew { requested: String, max: String },
    /// Swarm networks, VIPs and published ports (`crate::network`).
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("{0} is not supported by shoal yet")]
    NotSupported(&'static str),
    /// A request body over `query::MAX_BODY`.
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// A body the engine's JSON decoder would refuse, with its text.
    #[error(transparent)]
    Decode(#[from] super::decode::DecodeError),
}

impl ApiError {
    pub fn rpc(code: RpcCode, desc: impl Into<String>) -> Self {
        ApiError::Rpc {
            code,
            desc: desc.into(),
        }
    }

    pub fn page_not_found() -> Self {
        ApiError::NotFound("page not found".to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Proxy(ProxyError::EngineUnreachable { .. }) => StatusCode::BAD_GATEWAY,
            ApiError::Proxy(ProxyError::BadUri(_)) => StatusCode::BAD_REQUEST,
            ApiError::Proxy(ProxyError::EngineAnswer { .. }) => StatusCode::BAD_GATEWAY,
            ApiError::Cluster(error) => cluster_status(error),
            ApiError::Store(error) => store_status(error),
            ApiError::Propose(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Rpc { code, .. } => code.status(),
            ApiError::BadRequest(_) | ApiError::VersionTooNew { .. } | ApiError::Decode(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotSupported(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Network(error) => {
                StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, %status, "request failed");
        } else {
            tracing::debug!(error = %self, %status, "request refused");
        }
        let mut bytes = serde_json::to_vec(&serde_json::json!({ "message": self.to_string() }))
            .unwrap_or_default();
        bytes.push(b'\n');
        let mut response = Response::new(body::full(bytes));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

fn cluster_status(error: &ClusterError) -> StatusCode {
    match error {
        ClusterError::AlreadyInSwarm
        | ClusterError::NotInSwarm
        | ClusterError::NotManager
        | ClusterError::LastManager
        | ClusterError::Locked
        | ClusterError::LockedLeave
        | ClusterError::WorkerNotManager
        | ClusterError::LeaveLosesQuorum { .. }
        | ClusterError::JoinTimeout => StatusCode::SERVICE_UNAVAILABLE,
        ClusterError::InvalidToken
        | ClusterError::MalformedToken
        | ClusterError::CaMismatch(_)
        | ClusterError::JoinRefused(_)
        | ClusterError::Listen { .. } => StatusCode::BAD_REQUEST,
        ClusterError::Keys(crate::secrets::SecretsError::BadKeyFormat) => StatusCode::BAD_REQUEST,
        ClusterError::Keys(crate::secrets::SecretsError::WrongKey) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn store_status(error: &StoreError) -> StatusCode {
    match error {
        StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
        StoreError::Ambiguous { .. } | StoreError::Invalid { .. } => StatusCode::BAD_REQUEST,
        StoreError::AlreadyExists { .. } | StoreError::NameConflict { .. } => StatusCode::CONFLICT,
        StoreError::OutOfSequence { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        // Retried by the allocating writers; seen only when a write lost
        // every race.
        StoreError::Changed { .. } => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The engine's texts for store outcomes: its own for lookups, swarmkit's
/// (with the gRPC prefix) for writes.
fn store_message(error: &StoreError) -> String {
    match error {
        StoreError::NotFound { kind, id } => format!("{kind} {id} not found"),
        StoreError::Ambiguous { kind, reference, count } => {
            format!("{kind} {reference} is ambiguous ({count} matches found)")
        }
        StoreError::OutOfSequence { .. } => "rpc error: code = Unknown desc = update out of sequence".to_string(),
        // swarmkit words a taken name differently for secrets and configs.
        StoreError::NameConflict { kind: kind @ (Kind::Secret | Kind::Config), name } => {
            format!("rpc error: code = AlreadyExists desc = {kind} {name} already exists")
        }
        StoreError::NameConflict { kind, name } => format!(
            "rpc error: code = AlreadyExists desc = name conflicts with an existing object: {kind} {name} already exists"
        ),
        StoreError::AlreadyExists { kind, id } => {
            format!("rpc error: code = AlreadyExists desc = {kind} {id} already exists")
        }
        StoreError::Invalid { reason, .. } => format!("rpc error: code = InvalidArgument desc = {reason}"),
        StoreError::Changed { .. } => format!("rpc error: code = Unavailable desc = {error}"),
    }
}
