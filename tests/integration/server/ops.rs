//! Health, readiness, metrics, OpenAPI, unknown routes, the audit log.

use axum::http::StatusCode;
use rookery_server::store::Role;
use serde_json::json;

use super::{call, shared, user};

#[tokio::test]
async fn health_ready_metrics_and_unknown_routes() {
    let s = shared();
    let (status, body) = call("GET", "/healthz", None, None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    s.server
        .state
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    let (status, body) = call("GET", "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let t = user("mia", Role::User, &["double"]);
    call(
        "POST",
        "/api/v1/services/double/1",
        Some(&t),
        Some(json!([{"x": 1}])),
    )
    .await;
    let (status, body) = call("GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    for needle in [
        "rookery_http_requests_total{method=\"POST\",route=\"/api/v1/services/{name}/{version}\",status=\"200\"}",
        "rookery_http_request_duration_seconds_bucket",
        "rookery_workers_idle{pool=\"double/1\"}",
        "rookery_queue_depth",
        "rookery_workers_respawned",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    let (status, body) = call("GET", "/no/such/route", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn openapi_lists_the_api_and_the_callers_services() {
    let t = user("nina", Role::User, &["double"]);
    let (status, doc) = call("GET", "/api/v1/openapi.json", Some(&t), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/sessions/{id}/execute"]["post"].is_object());
    let svc = &doc["paths"]["/api/v1/services/double/1"]["post"];
    let schema = &svc["requestBody"]["content"]["application/json"]["schema"];
    assert!(schema.to_string().contains("\"x\""), "{schema}");
    let (_, anonymous) = call("GET", "/api/v1/openapi.json", None, None).await;
    assert!(anonymous["paths"]["/api/v1/services/double/1"].is_null());
}

#[tokio::test]
async fn the_audit_log_records_who_ran_what() {
    let t = user("otto", Role::Publisher, &[]);
    let (_, body) = call("POST", "/api/v1/sessions", Some(&t), None).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let code = "audit_me <- 6 * 7";
    call(
        "POST",
        &format!("/api/v1/sessions/{id}/execute"),
        Some(&t),
        Some(json!({"code": code})),
    )
    .await;
    let hash = rookery_server::audit::code_hash(code);
    let store = &shared().server.state.store;
    let mut found = None;
    for _ in 0..100 {
        found = store
            .audit_tail(10_000)
            .unwrap()
            .into_iter()
            .find(|e| e.code_hash.as_deref() == Some(hash.as_str()));
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let entry = found.expect("the execute was audited");
    assert_eq!(entry.user.as_deref(), Some("otto"));
    assert_eq!(entry.target.as_deref(), Some(id.as_str()));
    assert_eq!(entry.outcome, "200 ok");
    assert!(entry.route.contains("execute"));
    call("DELETE", &format!("/api/v1/sessions/{id}"), Some(&t), None).await;
}
