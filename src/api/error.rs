//! The one place where an error becomes a Docker-shaped response:
//! the engine's status code and `{"message": "..."}`.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};
use crate::proxy::ProxyError;

/// Everything `api` can answer with instead of a success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// Swarm endpoints on a node that is not a manager of an active swarm.
    #[error("This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.")]
    NotSwarmManager,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Proxy(ProxyError::EngineUnreachable { .. }) => StatusCode::BAD_GATEWAY,
            ApiError::Proxy(ProxyError::BadUri(_)) => StatusCode::BAD_REQUEST,
            ApiError::NotSwarmManager => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, %status, "request failed");
        } else {
            tracing::debug!(error = %self, %status, "request refused");
        }
        let message = serde_json::json!({ "message": self.to_string() });
        let mut bytes = serde_json::to_vec(&message).unwrap_or_default();
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
