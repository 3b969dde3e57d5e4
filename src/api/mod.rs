//! The CA server's HTTPS API (`/v1`, JSON).
//!
//! - [`routes`]: thin handlers that call the authority;
//! - [`error`]: the one mapping from errors to HTTP statuses and stable codes;
//! - [`extract`]: JSON bodies, the TLS client certificate, admin authentication;
//! - [`tls`] and [`server`]: rustls configuration and the accept loop with its limits;
//! - [`metrics`]: Prometheus text.
//!
//! [`app`] builds the whole router; tests and `etcd-ca serve` share it.

pub mod error;
pub mod extract;
pub mod fleet;
pub mod follow;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod routes;
pub mod run;
pub mod server;
pub mod tls;
pub mod ui;

use crate::wire::ErrorCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::authority::Authority;

/// The largest request body accepted (CSRs are a few hundred bytes each).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long one request may take, reading its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a backup may take before its archive starts streaming: copying a large store
/// (a million certificates out of PostgreSQL) takes minutes, not seconds.
pub const BACKUP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The longest a `GET /v1/watch` waits for a change (under [`REQUEST_TIMEOUT`]).
pub const MAX_WATCH: Duration = Duration::from_secs(25);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub authority: Arc<Authority>,
    pub metrics: Arc<metrics::Metrics>,
    pub limiter: Arc<limits::AttemptLimiter>,
    /// Refusals of requests without credentials, audited as a summary.
    pub anonymous: Arc<limits::RefusalDigest>,
    /// The CA state agents wait on (`GET /v1/watch`), published by [`follow::Follower`].
    pub watched: tokio::sync::watch::Receiver<follow::Watched>,
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(routes::health))
        .route("/v1/ca", get(routes::trust_bundle))
        .route("/v1/ca/lineage", get(routes::lineage))
        .route("/v1/crl", get(routes::crl))
        .route("/v1/watch", get(routes::watch))
        .route("/v1/enroll", post(routes::enroll))
        .route("/v1/renew", post(routes::renew))
        .route("/v1/renew/node", post(routes::renew_node))
        .route("/v1/sign", post(routes::sign))
        .route("/v1/tokens", post(routes::create_token))
        .route("/v1/certs", get(routes::list_certs))
        .route("/v1/certs/{serial}", get(routes::show_cert))
        .route("/v1/certs/{serial}/revoke", post(routes::revoke_cert))
        .route("/v1/issue", post(routes::issue))
        .route("/v1/audit", get(routes::audit))
        .route("/v1/admin-tokens", get(routes::admin_tokens))
        .route("/v1/tidy", post(routes::tidy))
        .route(
            "/v1/admin-tokens/{id}/revoke",
            post(routes::revoke_admin_token),
        )
        .route("/v1/agent/report", post(routes::agent_report))
        .route("/v1/rotation", get(routes::rotation_status))
        .route("/v1/fleet", get(routes::fleet))
        .route("/v1/rotation/lease", post(routes::take_lease))
        .route("/v1/rotation/lease/release", post(routes::release_lease))
        .route("/v1/rotation/{step}", post(routes::rotate))
        .route("/metrics", get(routes::metrics))
        .merge(ui::routes())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(|request, next| {
            deadline(REQUEST_TIMEOUT, request, next)
        }))
        .merge(
            Router::new()
                .route("/v1/backup", get(routes::backup))
                .layer(axum::middleware::from_fn(|request, next| {
                    deadline(BACKUP_TIMEOUT, request, next)
                })),
        )
        .with_state(state)
}

/// Answers a request still running after `limit` with a JSON 408 (through the one error
/// mapping, like every other refusal); the handler is dropped.
async fn deadline(
    limit: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error::ApiError::Request {
            status: StatusCode::REQUEST_TIMEOUT,
            code: ErrorCode::RequestTimeout,
            message: format!(
                "the request took longer than {}; it was abandoned",
                humantime::format_duration(limit)
            ),
        }
        .into_response(),
    }
}

/// A known path asked with a method it does not take: JSON 405 like every refusal.
async fn method_not_allowed(method: axum::http::Method) -> Response {
    error::ApiError::Request {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: ErrorCode::MethodNotAllowed,
        message: format!("this endpoint does not take {method}"),
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_is_a_json_408() {
        let app: Router = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "done"
                }),
            )
            .layer(axum::middleware::from_fn(|request, next| {
                deadline(Duration::from_millis(50), request, next)
            }));
        let request = axum::http::Request::get("/slow")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(body_json(response).await["code"], "request_timeout");
    }
}
