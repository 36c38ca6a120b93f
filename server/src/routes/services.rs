//! `/services`: publish (and update in place), list, describe, call, retire, and
//! start batch jobs. Inputs are validated against the declared schema before R runs.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rookery_engine::Value;
use serde::Deserialize;
use serde_json::{json, Value as Json_};

use crate::audit::Entry;
use crate::auth::AuthUser;
use crate::engine::{record_for, LiveService, ServiceSpec, Services};
use crate::error::AppError;
use crate::formats::arrow::{self, ARROW_FILE, ARROW_STREAM};
use crate::formats::tabular::{self, Layout};
use crate::state::AppState;

use super::body::{
    content_type, decode_arriving, parse_json, read_whole, Arriving, RawBody, RequestId,
};
use super::sessions::{outcome_of, outcome_or};

fn describe(s: &LiveService) -> Json_ {
    let r = &s.record;
    json!({
        "name": r.name,
        "version": r.version,
        "description": r.description,
        "owner": r.owner,
        "function": r.function,
        "inputs": r.inputs,
        "outputs": r.outputs,
        "files": r.files,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    })
}

/// Publishes a version, or replaces one its caller owns. The new workers are started
/// and checked first; calls in flight on the old version finish on its workers.
pub async fn publish(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    user: AuthUser,
    RawBody(bytes): RawBody,
) -> Result<(StatusCode, Json<Json_>), AppError> {
    user.require_publisher()?;
    let spec: ServiceSpec = parse_json(&bytes)?;
    let (schema, files) = Services::check(&spec)?;
    let previous = state.store.service(&spec.name, &spec.version)?;
    let previous = previous.filter(|p| !p.retired);
    if let Some(p) = &previous {
        if !user.owns(&p.owner) {
            return Err(AppError::Forbidden(format!(
                "service {}/{} belongs to `{}`",
                p.name, p.version, p.owner
            )));
        }
    }
    let record = record_for(&spec, &user.name, previous.as_ref());
    // Reconciling with the store waits until the record is stored.
    let _changing = state.services.changing.lock().await;
    let result = state
        .services
        .publish(record.clone(), schema, files)
        .await
        .map_err(AppError::from);
    state.audit.record(Entry {
        request_id: &rid,
        user: Some(&user.name),
        route: "POST /api/v1/services",
        target: Some(format!("{}/{}", spec.name, spec.version)),
        code: Some(&spec.code),
        outcome: outcome_of(&result),
    });
    let live = result?;
    state.store.put_service(&record)?;
    let status = if previous.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(describe(&live))))
}

/// The versions the caller may call.
pub async fn list(State(state): State<AppState>, user: AuthUser) -> Json<Json_> {
    let all: Vec<_> = state
        .services
        .all()
        .iter()
        .filter(|s| user.may_call_service(&s.record.name))
        .map(|s| describe(s))
        .collect();
    Json(json!({ "services": all }))
}

/// The live version, if the caller may call it: 404 when there is no such version,
/// 403 when the caller lacks the role or the `service:NAME` grant.
fn find(
    state: &AppState,
    user: &AuthUser,
    name: &str,
    version: &str,
) -> Result<Arc<LiveService>, AppError> {
    let service = state
        .services
        .get(name, version)
        .ok_or_else(|| AppError::not_found(format!("service {name}/{version}")))?;
    if !user.may_call_service(name) {
        return Err(AppError::Forbidden(format!(
            "user `{}` is not granted service `{name}` (grant `service:{name}`)",
            user.name
        )));
    }
    Ok(service)
}
pub async fn show(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    user: AuthUser,
) -> Result<Json<Json_>, AppError> {
    let service = find(&state, &user, &name, &version)?;
    Ok(Json(describe(&service)))
}

pub async fn retire(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    RequestId(rid): RequestId,
    user: AuthUser,
) -> Result<StatusCode, AppError> {
    user.require_publisher()?;
    let live = find(&state, &user, &name, &version)?;
    if !user.owns(&live.record.owner) {
        return Err(AppError::Forbidden(format!(
            "service {name}/{version} belongs to `{}`",
            live.record.owner
        )));
    }
    state.store.retire_service(&name, &version)?;
    state.services.retire(&name, &version);
    state.audit.record(Entry {
        request_id: &rid,
        user: Some(&user.name),
        route: "DELETE /api/v1/services/{name}/{version}",
        target: Some(format!("{name}/{version}")),
        code: None,
        outcome: "204 retired".into(),
    });
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CallQuery {
    /// `records` (default) or `columns`, for JSON answers.
    format: Option<String>,
}

/// Scores a table: JSON records or columns, or Arrow IPC; answers in JSON (records
/// or columns, `?format=`) or Arrow IPC (`Accept: application/vnd.apache.arrow.stream`).
pub async fn call(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Query(q): Query<CallQuery>,
    RequestId(rid): RequestId,
    user: AuthUser,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let service = find(&state, &user, &name, &version)?;
    let layout = layout_of(q.format.as_deref())?;
    let table = read_table(&state, &user.name, &service, &headers, body).await?;
    let cap = state.config.limits.max_result_bytes_for(user.role);
    let result = state
        .services
        .call(service, table, cap)
        .await
        .map_err(AppError::from);
    state.audit.record(Entry {
        request_id: &rid,
        user: Some(&user.name),
        route: "POST /api/v1/services/{name}/{version}",
        target: Some(format!("{name}/{version}")),
        code: None,
        outcome: outcome_of(&result),
    });
    write_answer(&state, &user.name, result?, &headers, layout).await
}

/// Starts a batch job over the table; answers 202 with the job.
pub async fn batch(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    RequestId(rid): RequestId,
    user: AuthUser,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Json_>), AppError> {
    let service = find(&state, &user, &name, &version)?;
    let table = read_table(&state, &user.name, &service, &headers, body).await?;
    let out = state.dirs.user(&user.name)?.jobs()?;
    // In a cluster the table is written out to the shared folder: off the async threads.
    let (jobs, owner) = (state.jobs.clone(), user.name.clone());
    let result = crate::engine::blocking(move || jobs.start(&owner, service, table, out))
        .await
        .and_then(|r| r)
        .map_err(AppError::from);
    state.audit.record(Entry {
        request_id: &rid,
        user: Some(&user.name),
        route: "POST /api/v1/services/{name}/{version}/batch",
        target: Some(format!("{name}/{version}")),
        code: None,
        outcome: outcome_or(&result, "202 accepted"),
    });
    let job = result?;
    Ok((StatusCode::ACCEPTED, Json(super::jobs::describe(&job))))
}

fn layout_of(format: Option<&str>) -> Result<Layout, AppError> {
    match format {
        None | Some("records") => Ok(Layout::Records),
        Some("columns") => Ok(Layout::Columns),
        Some(other) => Err(AppError::BadRequest(format!(
            "format `{other}`: expected `records` or `columns`"
        ))),
    }
}

/// Decodes the body by its content type and validates it against the schema. A
/// large JSON body is decoded as it arrives (`body::decode_arriving`); Arrow IPC is
/// read whole first (`body::read_whole`).
async fn read_table(
    state: &AppState,
    user: &str,
    service: &Arc<LiveService>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, AppError> {
    let media = content_type(headers);
    let table = match media.as_str() {
        // curl's `-d` labels JSON as a form; plain text is a common label too.
        ""
        | "application/json"
        | "text/json"
        | "text/plain"
        | "application/x-www-form-urlencoded" => {
            let service = Arc::clone(service);
            let decoded = decode_arriving(state, user, body, move |input| {
                let table = match input {
                    Arriving::Whole(bytes) => {
                        tabular::table_from_json(bytes, Some(&service.schema))
                    }
                    Arriving::Reader(r) => tabular::table_from_json_reader(r, &service.schema),
                };
                table.map_err(|e| AppError::BadRequest(e.to_string()))
            });
            decoded.await?
        }
        ARROW_STREAM | ARROW_FILE => {
            let bytes = read_whole(state, user, body).await?;
            arrow::table_from_ipc(&bytes).map_err(|e| AppError::BadRequest(e.to_string()))?
        }
        other => {
            return Err(AppError::UnsupportedMedia(format!(
                "{other}; send application/json or {ARROW_STREAM}"
            )))
        }
    };
    service
        .schema
        .validate(table)
        .map_err(|e| AppError::Invalid(e.to_string()))
}

fn wants_arrow(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains(ARROW_STREAM) || a.contains(ARROW_FILE))
}

/// The answer in JSON (streamed when large) or Arrow IPC.
async fn write_answer(
    state: &AppState,
    user: &str,
    value: Value,
    headers: &HeaderMap,
    layout: Layout,
) -> Result<Response, AppError> {
    if wants_arrow(headers) {
        let bytes = arrow::value_to_ipc(&value)
            .map_err(|e| AppError::Invalid(format!("the result cannot be sent as Arrow: {e}")))?;
        return Ok(([(header::CONTENT_TYPE, ARROW_STREAM)], bytes).into_response());
    }
    let size = rookery_engine::value::codec::encoded_len(&value);
    super::stream::json(&state.inflight, user, size, move |out| {
        out.write_all(b"{\"result\":")?;
        tabular::value_to_json_writer(&mut *out, &value, layout)?;
        out.write_all(b"}")
    })
    .await
}
