//! Login, logout, tokens, API keys and roles.

use axum::http::StatusCode;
use rookery_server::admin;
use rookery_server::store::Role;
use serde_json::json;

use super::{call, code, shared, user, PASSWORD};

#[tokio::test]
async fn login_issues_a_token_that_works_until_logout() {
    user("lena", Role::Publisher, &[]);
    let (status, body) = call(
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"username": "lena", "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (status, me) = call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "lena");
    assert_eq!(me["role"], "publisher");
    assert_eq!(me["via"], "access", "{me}");
    let (status, _) = call("POST", "/api/v1/logout", Some(&token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "unauthenticated");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    user("mark", Role::User, &[]);
    for who in ["mark", "nobody-here"] {
        let (status, body) = call(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"username": who, "password": "wrong password"})),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}: {body}");
        assert_eq!(code(&body), "unauthenticated");
    }
}

#[tokio::test]
async fn repeated_failed_logins_are_rate_limited() {
    user("mallory", Role::User, &[]);
    let mut limited = None;
    for attempt in 0..10 {
        let (status, body) = call(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"username": "mallory", "password": "guess guess"})),
        )
        .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(code(&body), "rate_limited");
            limited = Some(attempt);
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let attempt = limited.expect("failed logins are limited");
    assert!(attempt >= 3, "limited after {attempt} failures");
    // Even the right password waits now: guessing cannot continue.
    let (status, _) = call(
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"username": "mallory", "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn malformed_login_json_is_a_400_with_the_parser_message() {
    let (status, body) = super::send(
        &shared().router,
        "POST",
        "/api/v1/login",
        None,
        axum::body::Body::from("{\"username\": \"x\", "),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("invalid JSON") && msg.contains("line 1"),
        "{msg}"
    );
}

#[tokio::test]
async fn missing_or_bad_tokens_are_401_with_a_challenge() {
    let (status, headers, _) = super::send_raw(
        &shared().router,
        "GET",
        "/api/v1/me",
        None,
        &[],
        axum::body::Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    for bad in ["junk", "rka_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let (status, _) = call("GET", "/api/v1/me", Some(bad), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
    }
}

#[tokio::test]
async fn api_keys_call_services_but_cannot_open_sessions() {
    user("kate", Role::Publisher, &[]);
    let store = shared().server.state.store.as_ref();
    let key = admin::create_api_key(store, "kate", Some("ci"), None).unwrap();
    let (status, body) = call(
        "POST",
        "/api/v1/services/double/1",
        Some(&key),
        Some(json!([{"x": 1.5}])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!([3]));
    let (status, body) = call("POST", "/api/v1/sessions", Some(&key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, me) = call("GET", "/api/v1/me", Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["via"], "api_key", "{me}");
}

#[tokio::test]
async fn roles_and_grants_decide_who_runs_code() {
    let plain = user("uma", Role::User, &[]);
    let granted = user("ursula", Role::User, &["execute"]);
    let (status, body) = call("POST", "/api/v1/sessions", Some(&plain), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("execute"));
    let (status, body) = call("POST", "/api/v1/sessions", Some(&granted), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap();
    let (status, _) = call(
        "DELETE",
        &format!("/api/v1/sessions/{id}"),
        Some(&granted),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // A plain user cannot publish either.
    let spec = super::double_spec("nope", "1", super::DOUBLE_CODE);
    let (status, _) = call("POST", "/api/v1/services", Some(&granted), Some(spec)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
