//! Batch jobs: progress, result, owner-only access, cancel.

use std::time::Duration;

use axum::http::StatusCode;
use rookery_server::store::Role;
use serde_json::{json, Value as Json};

use super::{call, user};

async fn wait_finished(t: &str, id: &str) -> Json {
    for _ in 0..600 {
        let (status, body) = call(
            "GET",
            &format!("/api/v1/jobs/{id}?result=false"),
            Some(t),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if ["succeeded", "failed", "cancelled"].contains(&body["state"].as_str().unwrap()) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} did not finish");
}

#[tokio::test]
async fn a_batch_job_scores_every_row_in_order_for_its_owner_only() {
    let t = user("bella", Role::User, &["double"]);
    let other = user("boris", Role::User, &["double"]);
    let xs: Vec<f64> = (0..5_500).map(|i| i as f64).collect();
    let (status, body) = call(
        "POST",
        "/api/v1/services/double/1/batch",
        Some(&t),
        Some(json!({ "x": xs })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["progress"]["chunks_total"], 6);
    let (status, _) = call("GET", &format!("/api/v1/jobs/{id}"), Some(&other), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call("DELETE", &format!("/api/v1/jobs/{id}"), Some(&other), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let done = wait_finished(&t, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["progress"]["rows_done"], 5_500);
    let (_, with_result) = call("GET", &format!("/api/v1/jobs/{id}"), Some(&t), None).await;
    let result = with_result["result"].as_array().unwrap();
    assert_eq!(result.len(), 5_500);
    assert_eq!(result[4_321], json!(8_642));
    let (status, _) = call("GET", &format!("/api/v1/jobs/{id}/result"), Some(&t), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_failing_chunk_fails_the_job_with_its_rows_and_cancel_stops_one() {
    let t = user("carl", Role::User, &["double"]);
    let mut xs: Vec<f64> = vec![1.0; 3_000];
    xs[2_500] = -2.0;
    let (_, body) = call(
        "POST",
        "/api/v1/services/double/1/batch",
        Some(&t),
        Some(json!({ "x": xs })),
    )
    .await;
    let done = wait_finished(&t, body["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "failed");
    let error = done["error"].as_str().unwrap();
    assert!(
        error.contains("rows 2000..3000") && error.contains("negative input"),
        "{error}"
    );
    let slow = vec![-4.0; 10_000];
    let (_, body) = call(
        "POST",
        "/api/v1/services/double/1/batch",
        Some(&t),
        Some(json!({ "x": slow })),
    )
    .await;
    let id = body["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = call("DELETE", &format!("/api/v1/jobs/{id}"), Some(&t), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = wait_finished(&t, &id).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    let (status, _) = call(
        "GET",
        "/api/v1/jobs/00000000-0000-0000-0000-000000000000",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
