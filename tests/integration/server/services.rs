//! Services: publishing, schema checks before R runs, formats, grants, R errors,
//! crashes, deadlines, a saturated pool, updates without dropped calls, retiring.

use axum::body::Body;
use axum::http::StatusCode;
use rookery_server::store::Role;
use serde_json::{json, Value as Json};

use super::{call, code, double_spec, send, send_raw, shared, user, DOUBLE_CODE};

#[tokio::test]
async fn a_granted_user_scores_records_columns_and_arrow() {
    let t = user("greta", Role::User, &["double"]);
    let (status, body) = call(
        "POST",
        "/api/v1/services/double/1",
        Some(&t),
        Some(json!([{"x": 1}, {"x": 2.5}])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!([2, 5]));
    let (status, body) = call(
        "POST",
        "/api/v1/services/double/1",
        Some(&t),
        Some(json!({"x": [4, 5]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!([8, 10]));
    // Arrow in, Arrow out.
    let table = rookery_engine::Value::data_frame(vec![(
        "x".into(),
        rookery_engine::Value::doubles(vec![1.0, 2.0]),
    )])
    .unwrap();
    let ipc = rookery_server::formats::arrow::value_to_ipc(&table).unwrap();
    let arrow = rookery_server::formats::arrow::ARROW_STREAM;
    let (status, headers, bytes) = send_raw(
        &shared().router,
        "POST",
        "/api/v1/services/double/1",
        Some(&t),
        &[("content-type", arrow), ("accept", arrow)],
        Body::from(ipc),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(headers["content-type"], arrow);
    let back = rookery_server::formats::arrow::table_from_ipc(&bytes).unwrap();
    assert_eq!(
        back.column("value").and_then(|c| c.as_doubles()),
        Some(&[2.0, 4.0][..])
    );
}

#[tokio::test]
async fn bad_input_is_rejected_before_r_runs() {
    let t = user("hank", Role::User, &["double"]);
    let cases = [
        (json!([{"y": 1}]), "x"),
        (json!([{"x": "abc"}]), "x"),
        (json!([{"x": null}]), "NA not allowed"),
        (json!([{"x": [1, 2]}]), "x"),
        (json!({"x": {"a": 1}}), "x"),
        (json!(42), ""),
    ];
    for (input, needle) in cases {
        let (status, body) = call(
            "POST",
            "/api/v1/services/double/1",
            Some(&t),
            Some(input.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{input}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
    }
    let (status, body) = send(
        &shared().router,
        "POST",
        "/api/v1/services/double/1",
        Some(&t),
        Body::from("[{\"x\": 1,}]"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, _) = send_raw(
        &shared().router,
        "POST",
        "/api/v1/services/double/1",
        Some(&t),
        &[("content-type", "text/csv")],
        Body::from("x\n1\n"),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // curl -d labels JSON as a form: it is read as JSON.
    let (status, _, bytes) = send_raw(
        &shared().router,
        "POST",
        "/api/v1/services/double/1",
        Some(&t),
        &[("content-type", "application/x-www-form-urlencoded")],
        Body::from("[{\"x\": 2}]"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let big = format!("[{}]", vec!["{\"x\": 1.0}"; 200_000].join(","));
    let (status, body) = send(
        &shared().router,
        "POST",
        "/api/v1/services/double/1",
        Some(&t),
        Body::from(big),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(code(&body), "too_large");
}

#[tokio::test]
async fn without_a_grant_a_service_is_forbidden_and_unlisted() {
    let t = user("ivan", Role::User, &[]);
    let (status, _) = call(
        "POST",
        "/api/v1/services/double/1",
        Some(&t),
        Some(json!([{"x": 1}])),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, list) = call("GET", "/api/v1/services", Some(&t), None).await;
    assert_eq!(list["services"], json!([]));
    let (status, _) = call(
        "POST",
        "/api/v1/services/nothing/9",
        Some(&t),
        Some(json!([{"x": 1}])),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn r_errors_crashes_and_deadlines_map_to_422_502_504_and_the_next_call_works() {
    let t = user("jack", Role::User, &["double"]);
    let uri = "/api/v1/services/double/1";
    let (status, body) = call("POST", uri, Some(&t), Some(json!([{"x": -2}]))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["message"], "negative input: -2");
    assert!(body["error"]["call"]
        .as_str()
        .unwrap()
        .contains("double_it"));
    let (status, body) = call("POST", uri, Some(&t), Some(json!([{"x": -1}]))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let (status, body) = call("POST", uri, Some(&t), Some(json!([{"x": 1}]))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call("POST", uri, Some(&t), Some(json!([{"x": -3}]))).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let (status, body) = call("POST", uri, Some(&t), Some(json!([{"x": 2}]))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!([4]));
}

#[test]
fn a_saturated_service_answers_503_with_retry_after() {
    // Its own server: one worker, one queue place, a short queue wait.
    let (server, _data) = super::server_with(|c| {
        c.pool.service_workers = 1;
        c.pool.max_queue = 1;
        c.limits.queue_timeout_ms = 300;
    });
    let router = server.router();
    super::publish(&server, &router, double_spec("busy", "1", DOUBLE_CODE));
    let token = super::token_for(&server, "pub");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (statuses, busy) = rt.block_on(async {
        let slow = || async {
            send_raw(
                &router,
                "POST",
                "/api/v1/services/busy/1",
                Some(&token),
                &[],
                Body::from("[{\"x\": -4}]"),
            )
            .await
        };
        let (a, b, c) = tokio::join!(slow(), slow(), slow());
        let statuses = [a.0, b.0, c.0];
        let busy: Vec<_> = [a, b, c]
            .into_iter()
            .filter(|r| r.0 == StatusCode::SERVICE_UNAVAILABLE)
            .collect();
        (statuses, busy)
    });
    assert!(!busy.is_empty(), "{statuses:?}");
    assert_eq!(busy[0].1["retry-after"], "1");
    let body: Json = serde_json::from_slice(&busy[0].2).unwrap();
    assert_eq!(code(&body), "busy");
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    rt.block_on(server.shut_down());
}

#[tokio::test]
async fn publishing_checks_the_spec_and_the_code() {
    let p = user("pete", Role::Publisher, &[]);
    let mut bad_schema = double_spec("bad-schema", "1", DOUBLE_CODE);
    bad_schema["inputs"] = json!({"columns": [{"name": "x", "type": "quaternion"}]});
    let mut no_fn = double_spec("no-fn", "1", "y <- 1");
    no_fn["function"] = json!("double_it");
    let failing = double_spec("failing", "1", "stop('model file missing')");
    let bad_name = double_spec("Bad Name", "1", DOUBLE_CODE);
    for (spec, want, needle) in [
        (bad_schema, StatusCode::BAD_REQUEST, "quaternion"),
        (no_fn, StatusCode::BAD_REQUEST, "double_it"),
        (
            failing,
            StatusCode::UNPROCESSABLE_ENTITY,
            "model file missing",
        ),
        (bad_name, StatusCode::BAD_REQUEST, "service name"),
    ] {
        let (status, body) = call("POST", "/api/v1/services", Some(&p), Some(spec)).await;
        assert_eq!(status, want, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
    }
}

#[tokio::test]
async fn model_files_are_loaded_from_the_services_folder() {
    let p = user("mona", Role::Publisher, &[]);
    // An .rds made by R itself: a scale factor the function reads at start-up.
    let r = crate::support::r();
    let path = std::env::temp_dir().join(format!("rookery-model-{}.rds", std::process::id()));
    r.eval(&format!(
        "saveRDS(list(k = 10), {:?})",
        path.to_str().unwrap()
    ))
    .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    use base64::Engine as _;
    let spec = json!({
        "name": "scaled", "version": "2", "function": "score",
        "code": "m <- readRDS('model.rds'); score <- function(d) d$x * m$k",
        "inputs": {"columns": [{"name": "x", "type": "double"}]},
        "files": {"model.rds": base64::engine::general_purpose::STANDARD.encode(bytes)},
    });
    let (status, body) = call("POST", "/api/v1/services", Some(&p), Some(spec)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call(
        "POST",
        "/api/v1/services/scaled/2",
        Some(&p),
        Some(json!([{"x": 1.5}])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!([15]));
}

#[tokio::test]
async fn an_update_drops_no_call_in_flight_and_retire_removes_the_version() {
    let p = user("quinn", Role::Publisher, &[]);
    let spec = |k: f64| {
        double_spec(
            "live",
            "1",
            &format!("double_it <- function(d) {{ Sys.sleep(0.05); d$x * {k} }}"),
        )
    };
    let (status, body) = call("POST", "/api/v1/services", Some(&p), Some(spec(2.0))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let caller = {
        let p = p.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..40 {
                let (status, body) = call(
                    "POST",
                    "/api/v1/services/live/1",
                    Some(&p),
                    Some(json!([{"x": 1}])),
                )
                .await;
                answers.push((status, body["result"][0].as_f64()));
            }
            answers
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body) = call("POST", "/api/v1/services", Some(&p), Some(spec(3.0))).await;
    assert_eq!(status, StatusCode::OK, "an update answers 200: {body}");
    let answers = caller.await.unwrap();
    assert!(
        answers.iter().all(|(s, _)| *s == StatusCode::OK),
        "{answers:?}"
    );
    assert_eq!(answers.last().unwrap().1, Some(3.0), "{answers:?}");
    assert_eq!(answers.first().unwrap().1, Some(2.0), "{answers:?}");
    // Someone else cannot replace or retire it.
    let other = user("rita", Role::Publisher, &[]);
    let (status, _) = call("POST", "/api/v1/services", Some(&other), Some(spec(4.0))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call("DELETE", "/api/v1/services/live/1", Some(&other), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call("DELETE", "/api/v1/services/live/1", Some(&p), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(
        "POST",
        "/api/v1/services/live/1",
        Some(&p),
        Some(json!([{"x": 1}])),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let listed: Json = call("GET", "/api/v1/services", Some(&p), None).await.1;
    assert!(!listed.to_string().contains("\"live\""));
}
