//! Admin routes: users, grants, the audit log.

use axum::http::StatusCode;
use rookery_server::store::Role;
use serde_json::json;

use super::{call, code, shared, token_for, user};

#[tokio::test]
async fn an_admin_manages_users_and_grants_over_http() {
    let admin = token_for(&shared().server, "root");
    let new = json!({"username": "vera", "password": "long enough pw", "role": "user", "grants": ["service:double"]});
    let (status, body) = call("POST", "/api/v1/users", Some(&admin), Some(new.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call("POST", "/api/v1/users", Some(&admin), Some(new)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = call(
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"username": "vera", "password": "long enough pw"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let vera = body["access_token"].as_str().unwrap().to_owned();
    let (status, _) = call(
        "POST",
        "/api/v1/services/double/1",
        Some(&vera),
        Some(json!([{"x": 1}])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the grant given at creation works");
    let (status, _) = call("POST", "/api/v1/sessions", Some(&vera), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        "PUT",
        "/api/v1/users/vera/grants/execute",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = call("POST", "/api/v1/sessions", Some(&vera), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = call(
        "DELETE",
        "/api/v1/users/vera/grants/service:double",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(
        "POST",
        "/api/v1/services/double/1",
        Some(&vera),
        Some(json!([{"x": 1}])),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a revoked grant takes effect at once"
    );
    let (_, list) = call("GET", "/api/v1/users", Some(&admin), None).await;
    let vera_row = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "vera")
        .unwrap();
    assert_eq!(vera_row["grants"], json!(["execute"]));
    assert!(vera_row.get("password_hash").is_none() && !list.to_string().contains("argon2"));
    let folder = shared().server.state.config.data.join("users/vera");
    assert!(folder.is_dir());
    let (status, _) = call("DELETE", "/api/v1/users/vera", Some(&admin), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        !folder.exists(),
        "the folder and the open session went with the user"
    );
    let (status, _) = call("GET", "/api/v1/me", Some(&vera), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "its tokens went too");
    let (status, _) = call("DELETE", "/api/v1/users/vera", Some(&admin), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_user_requests_and_non_admins_are_refused() {
    let admin = token_for(&shared().server, "root");
    for (body, want) in [
        (
            json!({"username": "Bad Name", "password": "long enough pw", "role": "user"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"username": "wendy", "password": "short", "role": "user"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"username": "wendy", "password": "long enough pw", "role": "king"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"username": "wendy", "password": "long enough pw", "role": "user", "grants": ["root"]}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, resp) = call("POST", "/api/v1/users", Some(&admin), Some(body.clone())).await;
        assert_eq!(status, want, "{body}: {resp}");
    }
    let publisher = user("xena", Role::Publisher, &[]);
    for (method, uri) in [
        ("GET", "/api/v1/users"),
        ("DELETE", "/api/v1/users/pub"),
        ("GET", "/api/v1/audit"),
    ] {
        let (status, body) = call(method, uri, Some(&publisher), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
        assert_eq!(code(&body), "forbidden");
    }
    let (status, body) = call("GET", "/api/v1/audit?limit=5", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["entries"].as_array().unwrap().len() <= 5);
}
