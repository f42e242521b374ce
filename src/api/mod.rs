//! The HTTP front door. Strips `/vX.YY`, sends swarm paths to shoal's own
//! handlers, patches `/info` and `/_ping`, hands everything else to `proxy`,
//! and turns every error into the engine's response shape in one place
//! (`error.rs`).

mod allocating;
mod decode;
pub mod error;
mod events;
mod filters;
pub mod fuzz;
mod info;
mod logs;
mod networks;
mod nodes;
mod query;
mod secrets;
mod services;
mod shape;
mod swarm;
mod tasks;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::body::{self, Body};
use crate::cluster::Cluster;
use crate::proxy::Proxy;
pub use error::{ApiError, RpcCode};
use query::Query;
use secrets::Flavor;

/// Answers above this size are reshaped on a blocking thread.
const LARGE_ANSWER: usize = 256 * 1024;

/// Routes each request; cheap to clone per connection.
#[derive(Clone)]
pub struct Api {
    proxy: Proxy,
    cluster: Arc<Cluster>,
    shapes: Arc<shape::Shapes>,
}

/// Who answers a request.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// The swarm API: shoal answers from its own cluster state.
    Swarm,
    /// An engine endpoint with swarm parts: the engine answers, shoal adds them.
    Info,
    Ping,
    Events,
    /// `/networks`: split between swarm (shoal) and local (engine) networks.
    Networks,
    /// `POST /containers/create`: swarm network names become their bridges.
    ContainerCreate,
    /// Everything else: the engine answers, unchanged.
    Engine,
}

impl Api {
    pub fn new(proxy: Proxy, cluster: Arc<Cluster>) -> Self {
        Self {
            proxy,
            cluster,
            shapes: Arc::new(shape::Shapes::new()),
        }
    }

    pub async fn handle(self, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let route = route(req.method(), req.uri().path());
        tracing::trace!(method = %req.method(), path = req.uri().path(), ?route, "request");
        let response = match route {
            Route::Engine => self.proxy.forward(req).await.map_err(ApiError::from),
            Route::Info => info::info(&self.cluster, &self.proxy, req).await,
            Route::Ping => info::ping(&self.cluster, &self.proxy, req).await,
            Route::Events => events::events(&self.cluster, &self.proxy, req).await,
            Route::Networks => {
                let response = networks::handle(&self.cluster, &self.proxy, req).await;
                Ok(self
                    .identified(response.unwrap_or_else(ApiError::into_response))
                    .await)
            }
            Route::ContainerCreate => {
                networks::container_create(&self.cluster, &self.proxy, req).await
            }
            Route::Swarm => return Ok(self.swarm(req).await),
        };
        Ok(response.unwrap_or_else(ApiError::into_response))
    }

    /// Adds the engine's identity headers to an answer shoal made itself.
    async fn identified(&self, mut response: Response<Body>) -> Response<Body> {
        if response.headers().contains_key("api-version") {
            return response;
        }
        if let Ok(identity) = self.proxy.identity().await {
            for (name, value) in &identity.headers {
                response.headers_mut().insert(name, value.clone());
            }
        }
        response
    }

    /// shoal's own endpoints answer with the engine's identity headers.
    async fn swarm(&self, req: Request<Incoming>) -> Response<Body> {
        let identity = self.proxy.identity().await.ok().cloned();
        let (requested, path) = split_version(req.uri().path());
        let (requested, path) = (requested.map(str::to_string), path.to_string());
        let method = req.method().clone();
        let result = match (&identity, requested.clone()) {
            (Some(id), Some(requested)) if !version_le(&requested, &id.api_version) => {
                Err(ApiError::VersionTooNew {
                    requested,
                    max: id.api_version.clone(),
                })
            }
            _ => self.dispatch(req).await,
        };
        let mut response = result.unwrap_or_else(ApiError::into_response);
        // Without a version in the path the engine answers with its own.
        let version = requested.or_else(|| identity.as_ref().map(|i| i.api_version.clone()));
        if let Some(version) = version {
            response = self
                .reshape(response, method.as_str(), &path, &version)
                .await;
        }
        if let Some(identity) = identity {
            for (name, value) in &identity.headers {
                response.headers_mut().insert(name, value.clone());
            }
        }
        response
    }

    /// A successful JSON answer shaped for the client's API version.
    async fn reshape(
        &self,
        response: Response<Body>,
        method: &str,
        path: &str,
        version: &str,
    ) -> Response<Body> {
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v == "application/json");
        if response.status() != StatusCode::OK || !is_json {
            return response;
        }
        let (parts, body) = response.into_parts();
        // shoal's own answers are whole in memory: collecting is free.
        let Ok(collected) = http_body_util::BodyExt::collect(body).await else {
            return ApiError::Internal("cannot read the answer".to_string()).into_response();
        };
        let bytes = collected.to_bytes();
        let large = bytes.len() > LARGE_ANSWER;
        let shapes = self.shapes.clone();
        let (method, path, version) = (method.to_string(), path.to_string(), version.to_string());
        let input = bytes.clone();
        let shape = move || {
            let mut value = serde_json::from_slice::<serde_json::Value>(&input).ok()?;
            shapes.reshape(&method, &path, &version, &mut value);
            Some(json(StatusCode::OK, &value))
        };
        // A large listing (thousands of tasks) is parsed and encoded again
        // off the runtime thread, as it was made.
        let shaped = if large {
            tokio::task::spawn_blocking(shape).await.ok().flatten()
        } else {
            shape()
        };
        let Some(mut shaped) = shaped else {
            return Response::from_parts(parts, body::full(bytes));
        };
        *shaped.headers_mut() = parts.headers;
        shaped.headers_mut().remove(header::CONTENT_LENGTH);
        shaped
    }

    async fn dispatch(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let (parts, body) = req.into_parts();
        let body = query::read_body(body).await?;
        let query = Query::parse(parts.uri.query());
        let (_, path) = split_version(parts.uri.path());
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let cluster = &self.cluster;
        let method = &parts.method;
        match (method, segments.as_slice()) {
            (&Method::POST, ["swarm", "init"]) => swarm::init(cluster, &self.proxy, body).await,
            (&Method::POST, ["swarm", "join"]) => swarm::join(cluster, &self.proxy, body).await,
            (&Method::POST, ["swarm", "leave"]) => swarm::leave(cluster, &query).await,
            (&Method::POST, ["swarm", "unlock"]) => swarm::unlock(cluster, body).await,
            (&Method::GET, ["swarm"]) => swarm::inspect(cluster).await,
            (&Method::POST, ["swarm", "update"]) => swarm::update(cluster, &query, body).await,
            (&Method::GET, ["swarm", "unlockkey"]) => swarm::unlock_key(cluster).await,
            (_, ["swarm", ..]) => Err(ApiError::page_not_found()),
            _ => self.managed(method, &segments, &query, body).await,
        }
    }

    /// Endpoints that read or change cluster state: a manager is needed.
    async fn managed(
        &self,
        method: &Method,
        segments: &[&str],
        query: &Query,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let manager = self.cluster.manager().await?;
        match (method, segments) {
            (&Method::GET, ["nodes"]) => nodes::list(&manager, query),
            (&Method::GET, ["nodes", id]) => nodes::inspect(&manager, id),
            (&Method::POST, ["nodes", id, "update"]) => {
                nodes::update(&manager, id, query, body).await
            }
            (&Method::DELETE, ["nodes", id]) => nodes::remove(&manager, id, query).await,
            (&Method::POST, ["services", "create"]) => services::create(&manager, body).await,
            (&Method::GET, ["services"]) => services::list(&manager, query),
            (&Method::GET, ["services", id]) => services::inspect(&manager, id, query),
            (&Method::POST, ["services", id, "update"]) => {
                services::update(&manager, id, query, body).await
            }
            (&Method::DELETE, ["services", id]) => services::remove(&manager, id).await,
            (&Method::GET, ["tasks"]) => tasks::list(&manager, query).await,
            (&Method::GET, ["tasks", id]) => tasks::inspect(&manager, id),
            (&Method::GET, ["services", id, "logs"]) => {
                logs::service_logs(&manager, &self.proxy, id, query)
            }
            (&Method::GET, ["tasks", id, "logs"]) => {
                logs::task_logs(&manager, &self.proxy, id, query)
            }
            (&Method::POST, ["secrets", "create"]) => {
                secrets::create(&manager, Flavor::Secret, body).await
            }
            (&Method::GET, ["secrets"]) => secrets::list(&manager, Flavor::Secret, query),
            (&Method::GET, ["secrets", id]) => secrets::inspect(&manager, Flavor::Secret, id),
            (&Method::POST, ["secrets", id, "update"]) => {
                secrets::update(&manager, Flavor::Secret, id, query, body).await
            }
            (&Method::DELETE, ["secrets", id]) => {
                secrets::remove(&manager, Flavor::Secret, id).await
            }
            (&Method::POST, ["configs", "create"]) => {
                secrets::create(&manager, Flavor::Config, body).await
            }
            (&Method::GET, ["configs"]) => secrets::list(&manager, Flavor::Config, query),
            (&Method::GET, ["configs", id]) => secrets::inspect(&manager, Flavor::Config, id),
            (&Method::POST, ["configs", id, "update"]) => {
                secrets::update(&manager, Flavor::Config, id, query, body).await
            }
            (&Method::DELETE, ["configs", id]) => {
                secrets::remove(&manager, Flavor::Config, id).await
            }
            _ => Err(ApiError::page_not_found()),
        }
    }
}

/// A JSON answer as the engine writes it: `application/json`, newline-terminated.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            let mut response = Response::new(body::full(bytes));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => {
            ApiError::Internal(format!("cannot encode the response: {error}")).into_response()
        }
    }
}

/// `200` with an empty body, as the engine answers most swarm writes.
pub fn empty_ok() -> Response<Body> {
    let mut response = Response::new(body::empty());
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// The path without its `/vX.YY` prefix, and the version if there was one.
pub fn split_version(path: &str) -> (Option<&str>, &str) {
    let Some(rest) = path.strip_prefix("/v") else {
        return (None, path);
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let version = &rest[..end];
    if parse_version(version).is_some() {
        (Some(version), &rest[end..])
    } else {
        (None, path)
    }
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn version_le(a: &str, b: &str) -> bool {
    match (parse_version(a), parse_version(b)) {
        (Some(a), Some(b)) => a <= b,
        _ => true,
    }
}

pub fn version_at_least(version: &str, floor: (u32, u32)) -> bool {
    parse_version(version).is_some_and(|v| v >= floor)
}

/// Swarm-mode resources; `/networks` is split later by scope, so it is not here.
const SWARM_RESOURCES: [&str; 6] = ["swarm", "nodes", "services", "tasks", "secrets", "configs"];

fn route(method: &Method, path: &str) -> Route {
    let (_, path) = split_version(path);
    let mut segments = path.trim_start_matches('/').split('/');
    let first = segments.next().unwrap_or("");
    let second = segments.next();
    let only = second.is_none();
    match first {
        _ if SWARM_RESOURCES.contains(&first) => Route::Swarm,
        "info" if only && method == Method::GET => Route::Info,
        "_ping" if only => Route::Ping,
        "events" if only && method == Method::GET => Route::Events,
        "networks" => Route::Networks,
        "containers"
            if method == Method::POST && second == Some("create") && segments.next().is_none() =>
        {
            Route::ContainerCreate
        }
        _ => Route::Engine,
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
        assert_eq!(route(&Method::POST, "/v1.41/services/create"), Route::Swarm);
        assert_eq!(route(&Method::GET, "/swarm"), Route::Swarm);
        assert_eq!(route(&Method::GET, "/v1.47/nodes"), Route::Swarm);
        assert_eq!(route(&Method::GET, "/v1.41/containers/json"), Route::Engine);
        assert_eq!(route(&Method::GET, "/v1.41/info"), Route::Info);
        assert_eq!(route(&Method::HEAD, "/_ping"), Route::Ping);
        assert_eq!(route(&Method::GET, "/servicesx"), Route::Engine);
        assert_eq!(route(&Method::GET, "/v1.41/networks"), Route::Networks);
        assert_eq!(
            route(&Method::POST, "/v1.41/containers/create"),
            Route::ContainerCreate
        );
        assert_eq!(route(&Method::POST, "/containers/x/start"), Route::Engine);
    }

    #[test]
    fn compares_versions() {
        assert!(version_le("1.41", "1.41"));
        assert!(version_le("1.9", "1.41"));
        assert!(!version_le("1.99", "1.41"));
        assert!(version_at_least("1.42", (1, 42)));
        assert!(!version_at_least("1.41", (1, 42)));
    }
}
