//! Operations: `/healthz` (the process answers), `/readyz` (every pool warm, the
//! store answering),
//! `/metrics` (Prometheus text), `/api/v1/openapi.json`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value as Json_};

use crate::auth::AuthUser;
use crate::state::AppState;

pub async fn healthz() -> Json<Json_> {
    Json(json!({ "status": "ok" }))
}

/// 200 once the stored services are loaded, every pool has a live worker and the
/// store answers (a shared PostgreSQL that went away makes the node unready, so a
/// load balancer sends its traffic elsewhere until it is back).
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Json_>) {
    let loaded = state.ready.load(Ordering::Acquire);
    let warm = |s: rookery_engine::PoolStats| !s.idle.is_empty() || s.busy > 0;
    let sessions = warm(state.sessions.pool().stats());
    let services: Vec<_> = state
        .services
        .all()
        .iter()
        .map(|s| {
            (
                format!("{}/{}", s.record.name, s.record.version),
                warm(s.pool.stats()),
            )
        })
        .collect();
    let store = state.store.clone();
    let store_ok = match tokio::task::spawn_blocking(move || store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let ready = loaded && sessions && services.iter().all(|(_, w)| *w) && store_ok.is_ok();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "services_loaded": loaded,
        "sessions_pool_warm": sessions,
        "store": match &store_ok {
            Ok(()) => json!({"ok": true}),
            Err(e) => json!({"ok": false, "error": e}),
        },
        "services": services.into_iter().map(|(n, w)| json!({"service": n, "warm": w})).collect::<Vec<_>>(),
    });
    (status, Json(body))
}

/// The nodes in the registry (admin): id, address, version, workers, busy,
/// sessions, start and last heartbeat, whether it is alive, and which is this one.
pub async fn nodes(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Json_>, crate::error::AppError> {
    user.require_admin()?;
    let store = state.store.clone();
    let listed = tokio::task::spawn_blocking(move || crate::nodes::list(store.as_ref())).await??;
    let nodes: Vec<Json_> = listed
        .into_iter()
        .map(|n| {
            let this = n.node.id == state.node.id;
            let mut v = serde_json::to_value(&n).unwrap_or_default();
            v["this"] = json!(this);
            v
        })
        .collect();
    Ok(Json(json!({ "node": state.node.id, "nodes": nodes })))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut pools = vec![("sessions".to_owned(), state.sessions.pool().stats())];
    for s in state.services.all() {
        let name = format!("{}/{}", s.record.name, s.record.version);
        pools.push((name, s.pool.stats()));
    }
    let text = state
        .metrics
        .render(pools, state.sessions.count(), state.inflight.total());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// The OpenAPI 3.1 description of the API, with a path for each service the caller
/// may call (none without a token).
pub async fn openapi(State(state): State<AppState>, headers: HeaderMap) -> Json<Json_> {
    let services = match AuthUser::from_headers(&headers, &state) {
        Ok(user) => state
            .services
            .all()
            .into_iter()
            .filter(|s| user.may_call_service(&s.record.name))
            .collect(),
        Err(_) => Vec::new(),
    };
    Json(crate::openapi::document(&services))
}
