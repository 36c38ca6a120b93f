//! `/sessions`: open, list, execute code, read objects, the session's files, close.
//! Only the owner (or an admin) reaches a session; anyone else gets the same 404 as
//! for a session that does not exist.

use axum::body::Body;
use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, OriginalUri, Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rookery_engine::value::codec::encoded_len;
use rookery_engine::value::json::{to_json_writer, Json as ValueJson, JsonOptions};
use rookery_engine::Evaluation;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json_};

use crate::audit::Entry;
use crate::auth::AuthUser;
use crate::engine::{blocking, RFailureKind, SessionEntry};
use crate::error::AppError;
use crate::state::AppState;

use super::body::{JsonBody, RequestId};

fn describe(s: &SessionEntry) -> Json_ {
    json!({
        "id": s.name,
        "owner": s.owner,
        "created_at": s.created_at,
        "last_used": s.last_used(),
    })
}

/// A session the caller may use: the caller runs code (role or grant), and owns the
/// session named by the route's `{id}` (or is an admin). Anything else is the same
/// 404 as a missing session.
pub struct OwnedSession {
    pub user: AuthUser,
    pub entry: Arc<SessionEntry>,
}

impl FromRequestParts<AppState> for OwnedSession {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        user.require_execute()?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| AppError::BadRequest(e.to_string()))?;
        let id = params.get("id").map_or("", String::as_str);
        let entry = state.sessions.get(id, &user)?;
        Ok(OwnedSession { user, entry })
    }
}

pub async fn create(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    user: AuthUser,
) -> Result<(StatusCode, Json<Json_>), AppError> {
    user.require_execute()?;
    let result = state
        .sessions
        .open(
            &user.name,
            state.config.limits.max_result_bytes_for(user.role),
        )
        .await
        .map_err(AppError::from);
    let outcome = outcome_of(&result);
    let target = result.as_ref().ok().map(|s| s.name.clone());
    state.audit.record(Entry {
        request_id: &rid,
        user: Some(&user.name),
        route: "POST /api/v1/sessions",
        target,
        code: None,
        outcome,
    });
    let entry = result?;
    Ok((StatusCode::CREATED, Json(describe(&entry))))
}

/// The caller's sessions; in a cluster, those every live node holds (a node that
/// does not answer is named in `unreachable_nodes`).
pub async fn list(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    user: AuthUser,
) -> Result<Json<Json_>, AppError> {
    user.require_execute()?;
    let mut all: Vec<_> = state
        .sessions
        .list(&user)
        .iter()
        .map(|s| describe(s))
        .collect();
    let mut body = json!({});
    if let Some(fwd) = &state.forwarder {
        // A node asked by another answers for itself alone.
        if fwd.forwarded_by(&headers, &Method::GET, &uri).is_none() {
            let (answers, missing) = fwd
                .gather("/api/v1/sessions", headers.get(AUTHORIZATION))
                .await?;
            for answer in answers {
                if let Some(list) = answer["sessions"].as_array() {
                    all.extend(list.iter().cloned());
                }
            }
            all.sort_by(|a, b| {
                (a["created_at"].as_i64(), a["id"].as_str())
                    .cmp(&(b["created_at"].as_i64(), b["id"].as_str()))
            });
            if !missing.is_empty() {
                body["unreachable_nodes"] = json!(missing);
            }
        }
    }
    body["sessions"] = json!(all);
    Ok(Json(body))
}

/// In a cluster, a request for a session another node holds is forwarded there
/// (see `forward.rs`); every answer about a session names the node holding it in
/// `x-rookery-node`. A request another node forwarded is never forwarded again.
pub async fn to_owner(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(fwd) = state.forwarder.clone() else {
        return next.run(req).await;
    };
    let uri = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().clone(), |o| o.0.clone());
    let id = session_in(uri.path()).to_owned();
    let owner = crate::forward::split_session_id(&id).map(|(node, _)| node.to_owned());
    let node = HeaderValue::from_str(owner.as_deref().unwrap_or(fwd.node()));
    match owner {
        Some(owner) if owner != fwd.node() => {
            if fwd
                .forwarded_by(req.headers(), req.method(), &uri)
                .is_some()
            {
                return AppError::not_found(format!("session `{id}`")).into_response();
            }
            let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
            let client = req
                .extensions()
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip());
            let mut response = fwd
                .to_owner(&owner, &id, target, client, req)
                .await
                .unwrap_or_else(IntoResponse::into_response);
            if let Ok(node) = node {
                response.headers_mut().insert(crate::forward::NODE, node);
            }
            response
        }
        _ => {
            let mut response = next.run(req).await;
            if let Ok(node) = node {
                response.headers_mut().insert(crate::forward::NODE, node);
            }
            response
        }
    }
}

/// The `{id}` of `/.../sessions/{id}/...`.
fn session_in(path: &str) -> &str {
    path.split_once("/sessions/")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""))
}

pub async fn show(OwnedSession { entry, .. }: OwnedSession) -> Json<Json_> {
    Json(describe(&entry))
}

pub async fn close(
    State(state): State<AppState>,
    OwnedSession { entry, .. }: OwnedSession,
) -> Result<StatusCode, AppError> {
    state.sessions.close(&entry).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Execute {
    code: String,
}

/// Runs code in the session: the value (JSON), whether it was visible, console
/// output and warnings; an R error is a 422 with R's message, call and classes.
pub async fn execute(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    OwnedSession { user, entry }: OwnedSession,
    JsonBody(body): JsonBody<Execute>,
) -> Result<Response, AppError> {
    let result = state.sessions.execute(&entry, body.code.clone()).await;
    // The code ran, but its value (a function, an environment, a model with formulas
    // inside) has no JSON form: say so instead of failing the call.
    let result = match result {
        Err(e) => match e.r_failure(RFailureKind::Unsupported) {
            Some(f) => Ok(Err(json!({
                "result": null,
                "visible": true,
                "stdout": f.stdout,
                "stderr": f.stderr,
                "note": format!("{}; assign it to a variable to keep it in the session", f.message),
            }))),
            None => Err(AppError::from(e)),
        },
        Ok(ev) => Ok(Ok(ev)),
    };
    state.audit.record(Entry {
        request_id: &rid,
        user: Some(&user.name),
        route: "POST /api/v1/sessions/{id}/execute",
        target: Some(entry.name.clone()),
        code: Some(&body.code),
        outcome: outcome_of(&result),
    });
    match result? {
        Ok(ev) => evaluation_response(&state, &user.name, ev).await,
        Err(unsupported) => Ok(Json(unsupported).into_response()),
    }
}

/// `{"result", "visible", "stdout", "stderr", "warnings"}`; a large result is
/// streamed as it is encoded (see [`super::stream`]).
async fn evaluation_response(
    state: &AppState,
    user: &str,
    ev: Evaluation,
) -> Result<Response, AppError> {
    let size = encoded_len(&ev.value);
    super::stream::json(&state.inflight, user, size, move |out| {
        let opts = JsonOptions {
            auto_unbox: true,
            ..JsonOptions::default()
        };
        let body = EvaluationOut {
            result: ValueJson {
                value: &ev.value,
                opts: &opts,
            },
            visible: ev.visible,
            stdout: &ev.output.stdout,
            stderr: &ev.output.stderr,
            warnings: ev
                .output
                .warnings
                .iter()
                .map(|w| WarningOut {
                    message: &w.message,
                    call: w.call.as_deref(),
                })
                .collect(),
        };
        serde_json::to_writer(out, &body).map_err(std::io::Error::from)
    })
    .await
}

#[derive(Serialize)]
struct EvaluationOut<'a> {
    result: ValueJson<'a>,
    visible: bool,
    stdout: &'a str,
    stderr: &'a str,
    warnings: Vec<WarningOut<'a>>,
}

#[derive(Serialize)]
struct WarningOut<'a> {
    message: &'a str,
    call: Option<&'a str>,
}

/// The value of one variable of the session, as JSON.
pub async fn object(
    State(state): State<AppState>,
    Path((_, name)): Path<(String, String)>,
    OwnedSession { user, entry }: OwnedSession,
) -> Result<Response, AppError> {
    let value = state.sessions.object(&entry, name).await?;
    let size = encoded_len(&value);
    super::stream::json(&state.inflight, &user.name, size, move |out| {
        to_json_writer(out, &value, &JsonOptions::default())
    })
    .await
}

pub async fn list_files(OwnedSession { entry, .. }: OwnedSession) -> Result<Json<Json_>, AppError> {
    let files = blocking(move || entry.dir.list()).await??;
    Ok(Json(json!({ "files": files })))
}

/// The file, sent a piece at a time as it is read (with its length).
pub async fn get_file(
    Path((_, path)): Path<(String, String)>,
    OwnedSession { entry, .. }: OwnedSession,
) -> Result<Response, AppError> {
    let (file, len) = blocking(move || entry.dir.open(&path)).await??;
    Ok(super::stream::file(file, len))
}

/// Writes the body to the file as it arrives; the file appears whole, or not at all.
pub async fn put_file(
    State(state): State<AppState>,
    Path((_, path)): Path<(String, String)>,
    OwnedSession { user, entry }: OwnedSession,
    body: Body,
) -> Result<StatusCode, AppError> {
    super::body::into_file(&state, &user.name, body, move || entry.dir.create(&path)).await?;
    Ok(StatusCode::CREATED)
}

pub async fn delete_file(
    Path((_, path)): Path<(String, String)>,
    OwnedSession { entry, .. }: OwnedSession,
) -> Result<StatusCode, AppError> {
    blocking(move || entry.dir.remove(&path)).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `200 ok`, or the error's status and code, for the audit log.
pub fn outcome_of<T>(result: &Result<T, AppError>) -> String {
    outcome_or(result, "200 ok")
}

/// `ok` on success, else the error's status and code.
pub fn outcome_or<T>(result: &Result<T, AppError>, ok: &str) -> String {
    match result {
        Ok(_) => ok.into(),
        Err(e) => format!("{} {}", e.status().as_u16(), e.code()),
    }
}
