//! The HTTP front door. Strips `/vX.YY`, sends swarm paths to shoal's own
//! handlers and everything else to `proxy`, and turns every error into the
//! engine's response shape in one place (`error.rs`).

pub mod error;

use std::convert::Infallible;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::Body;
use crate::proxy::Proxy;
pub use error::ApiError;

/// Routes each request; cheap to clone per connection.
#[derive(Clone)]
pub struct Api {
    proxy: Proxy,
}

/// Who answers a request.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// The swarm API: shoal answers from its own cluster state.
    Swarm,
    /// Everything else: the engine answers, unchanged.
    Engine,
}

impl Api {
    pub fn new(proxy: Proxy) -> Self {
        Self { proxy }
    }

    pub async fn handle(self, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let route = route(req.uri().path());
        tracing::trace!(method = %req.method(), path = req.uri().path(), ?route, "request");
        let result = match route {
            Route::Engine => self.proxy.forward(req).await.map_err(ApiError::from),
            Route::Swarm => Err(ApiError::NotSwarmManager),
        };
        Ok(result.unwrap_or_else(ApiError::into_response))
    }
}

/// The path without its `/vX.YY` prefix, and the version if there was one.
pub fn split_version(path: &str) -> (Option<&str>, &str) {
    let Some(rest) = path.strip_prefix("/v") else {
        return (None, path);
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let version = &rest[..end];
    let is_version = version
        .split_once('.')
        .is_some_and(|(major, minor)| is_digits(major) && is_digits(minor));
    if is_version {
        (Some(version), &rest[end..])
    } else {
        (None, path)
    }
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Swarm-mode resources; `/networks` is split later by scope, so it is not here.
const SWARM_RESOURCES: [&str; 6] = ["swarm", "nodes", "services", "tasks", "secrets", "configs"];

fn route(path: &str) -> Route {
    let (_, path) = split_version(path);
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if SWARM_RESOURCES.contains(&first) {
        Route::Swarm
    } else {
        Route::Engine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_version_prefix() {
        assert_eq!(
            split_version("/v1.41/containers/json"),
            (Some("1.41"), "/containers/json")
        );
        assert_eq!(split_version("/_ping"), (None, "/_ping"));
        assert_eq!(split_version("/v1.41"), (Some("1.41"), ""));
        assert_eq!(split_version("/volumes"), (None, "/volumes"));
        assert_eq!(split_version("/vx.1/info"), (None, "/vx.1/info"));
    }

    #[test]
    fn routes_swarm_paths_to_shoal_and_the_rest_to_the_engine() {
        assert_eq!(route("/v1.41/services/create"), Route::Swarm);
        assert_eq!(route("/swarm"), Route::Swarm);
        assert_eq!(route("/v1.47/nodes"), Route::Swarm);
        assert_eq!(route("/v1.41/containers/json"), Route::Engine);
        assert_eq!(route("/_ping"), Route::Engine);
        assert_eq!(route("/servicesx"), Route::Engine);
    }
}
