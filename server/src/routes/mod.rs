//! The router: every route of the API, the layers around it (request id, tracing,
//! metrics, body limit), and the JSON 404 for unknown routes. Handlers live in one
//! module per resource and learn the caller only through `AuthUser`.

mod auth;
pub(crate) mod body;
mod jobs;
mod ops;
mod services;
mod sessions;
mod stream;
mod users;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::middleware;
use axum::routing::{delete, get, post, put};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing::Level;

use crate::error::AppError;
use crate::state::AppState;

/// The whole HTTP API, ready to serve.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/login", post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/me", get(auth::me))
        .route("/openapi.json", get(ops::openapi))
        .route("/sessions", post(sessions::create).get(sessions::list))
        .merge(one_session(state.clone()))
        .route("/services", post(services::publish).get(services::list))
        .route(
            "/services/{name}/{version}",
            post(services::call)
                .get(services::show)
                .delete(services::retire),
        )
        .route("/services/{name}/{version}/batch", post(services::batch))
        .route("/jobs/{id}", get(jobs::show).delete(jobs::cancel))
        .route("/jobs/{id}/result", get(jobs::result))
        .route("/users", get(users::list).post(users::create))
        .route("/users/{name}", delete(users::remove))
        .route(
            "/users/{name}/grants/{grant}",
            put(users::grant).delete(users::revoke),
        )
        .route("/audit", get(users::audit_log))
        .route("/nodes", get(ops::nodes));
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(
            state.config.limits.max_body_bytes,
            body::refuse_oversized,
        ))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .layer(DefaultBodyLimit::max(state.config.limits.max_body_bytes))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                // One access-log line per request (status, latency), in its span.
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(LatencyUnit::Micros),
                )
                .make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "request",
                        id,
                        method = %req.method(),
                        path = %req.uri().path(),
                        user = tracing::field::Empty,
                    )
                }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// The routes of one session, `/sessions/{id}/...`: in a cluster, forwarded to the
/// node that holds the session (`sessions::to_owner`).
fn one_session(state: AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/sessions/{id}",
            get(sessions::show).delete(sessions::close),
        )
        .route("/sessions/{id}/execute", post(sessions::execute))
        .route("/sessions/{id}/objects/{name}", get(sessions::object))
        .route("/sessions/{id}/files", get(sessions::list_files))
        .route(
            "/sessions/{id}/files/{*path}",
            get(sessions::get_file)
                .put(sessions::put_file)
                .delete(sessions::delete_file),
        )
        .route_layer(middleware::from_fn_with_state(state, sessions::to_owner))
}

async fn unknown_route() -> AppError {
    AppError::not_found("route")
}
