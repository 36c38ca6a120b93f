//! `/jobs/{id}`: a batch job's state, progress and result; `DELETE` cancels it.
//! Another user's job is reported exactly like a missing one.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value as Json_};

use crate::auth::AuthUser;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::{JobRecord, JobState};

pub fn describe(job: &JobRecord) -> Json_ {
    json!({
        "id": job.id,
        "service": job.service,
        "version": job.version,
        "state": job.state,
        "progress": {
            "rows_done": job.rows_done,
            "rows_total": job.rows_total,
            "chunks_done": job.chunks_done,
            "chunks_total": job.chunks_total,
            "chunks_failed": job.chunks_failed,
        },
        "error": job.error,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "result_url": (job.state == JobState::Succeeded)
            .then(|| format!("/api/v1/jobs/{}/result", job.id)),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    /// Include the result inline once the job succeeded (default true).
    result: Option<bool>,
}

/// State and progress; once the job succeeded, its result too (`?result=false` to
/// leave it out, or fetch it from `/result`).
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
    user: AuthUser,
) -> Result<Response, AppError> {
    let job = state.jobs.get(&id, &user)?;
    let body = describe(&job);
    if !(job.state == JobState::Succeeded && q.result.unwrap_or(true)) {
        return Ok(Json(body).into_response());
    }
    // The stored result goes in as the text it is, never parsed into a tree (which
    // would take several times its size): `{...description, "result": <file>}`.
    let result = read_result(&state, &job).await?;
    let mut text = serde_json::to_vec(&body).map_err(|e| AppError::Internal(e.to_string()))?;
    text.pop(); // the description's closing brace
    text.extend_from_slice(b",\"result\":");
    text.extend_from_slice(&result);
    text.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}

/// The result as stored (JSON records).
pub async fn result(
    State(state): State<AppState>,
    Path(id): Path<String>,
    user: AuthUser,
) -> Result<Response, AppError> {
    let job = state.jobs.get(&id, &user)?;
    if job.state != JobState::Succeeded {
        return Err(AppError::Conflict(format!(
            "job `{id}` has no result (state: {:?})",
            job.state
        )));
    }
    let bytes = read_result(&state, &job).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

async fn read_result(state: &AppState, job: &JobRecord) -> Result<Vec<u8>, AppError> {
    let (jobs, dirs, job) = (state.jobs.clone(), state.dirs.clone(), job.clone());
    Ok(crate::engine::blocking(move || jobs.read_result(&job, &dirs)).await??)
}

/// Cancels a running job (a finished one is left as it is).
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    user: AuthUser,
) -> Result<(StatusCode, Json<Json_>), AppError> {
    let job = state.jobs.cancel(&id, &user)?;
    Ok((StatusCode::ACCEPTED, Json(describe(&job))))
}
