//! `/users` and `/audit`, for admins: manage users and grants over HTTP (the same
//! operations as `rookery user ...`), and read the audit log.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value as Json_};

use crate::admin::{self, AdminError};
use crate::audit::Entry;
use crate::auth::AuthUser;
use crate::engine::blocking;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::Role;

use super::body::{JsonBody, RequestId};

impl From<AdminError> for AppError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::UnknownUser(name) => AppError::NotFound(format!("user `{name}`")),
            AdminError::Exists(_) => AppError::Conflict(e.to_string()),
            AdminError::Store(s) => s.into(),
            AdminError::Hashing(_) => AppError::Internal(e.to_string()),
            other => AppError::BadRequest(other.to_string()),
        }
    }
}

fn audit(state: &AppState, rid: &str, admin: &AuthUser, route: &str, target: &str) {
    state.audit.record(Entry {
        request_id: rid,
        user: Some(&admin.name),
        route,
        target: Some(target.to_owned()),
        code: None,
        outcome: "200 ok".into(),
    });
}

pub async fn list(State(state): State<AppState>, user: AuthUser) -> Result<Json<Json_>, AppError> {
    user.require_admin()?;
    let users = admin::list_users(state.store.as_ref())?;
    Ok(Json(json!({ "users": users })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    password: String,
    role: Role,
    #[serde(default)]
    grants: Vec<String>,
}

/// Creates a user (the password is hashed with argon2id; only the hash is kept).
pub async fn create(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    user: AuthUser,
    JsonBody(body): JsonBody<NewUser>,
) -> Result<(StatusCode, Json<Json_>), AppError> {
    user.require_admin()?;
    for g in &body.grants {
        admin::validate_grant(g)?;
    }
    let store = state.store.clone();
    let (name, password, role) = (body.username.clone(), body.password, body.role);
    blocking(move || admin::add_user(store.as_ref(), &name, role, &password)).await??;
    for g in &body.grants {
        admin::grant(state.store.as_ref(), &body.username, g)?;
    }
    audit(&state, &rid, &user, "POST /api/v1/users", &body.username);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "username": body.username, "role": body.role, "grants": body.grants })),
    ))
}

/// Removes a user, its tokens and keys, and its folder.
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RequestId(rid): RequestId,
    user: AuthUser,
) -> Result<StatusCode, AppError> {
    user.require_admin()?;
    if name == user.name {
        return Err(AppError::Conflict("an admin cannot remove itself".into()));
    }
    admin::remove_user(state.store.as_ref(), &name)?;
    state.tokens.forget_user(&name);
    for s in state
        .sessions
        .list(&user)
        .iter()
        .filter(|s| s.owner == name)
    {
        state.sessions.close(s).await?;
    }
    state.dirs.remove_user(&name)?;
    audit(&state, &rid, &user, "DELETE /api/v1/users/{name}", &name);
    Ok(StatusCode::NO_CONTENT)
}

/// Gives a grant (`execute` or `service:NAME`).
pub async fn grant(
    state: State<AppState>,
    path: Path<(String, String)>,
    rid: RequestId,
    user: AuthUser,
) -> Result<StatusCode, AppError> {
    change_grant(state, path, rid, user, true)
}

/// Takes a grant back.
pub async fn revoke(
    state: State<AppState>,
    path: Path<(String, String)>,
    rid: RequestId,
    user: AuthUser,
) -> Result<StatusCode, AppError> {
    change_grant(state, path, rid, user, false)
}

fn change_grant(
    State(state): State<AppState>,
    Path((name, grant)): Path<(String, String)>,
    RequestId(rid): RequestId,
    user: AuthUser,
    give: bool,
) -> Result<StatusCode, AppError> {
    user.require_admin()?;
    let store = state.store.as_ref();
    let route = if give {
        admin::grant(store, &name, &grant)?;
        "PUT /api/v1/users/{name}/grants/{grant}"
    } else {
        admin::revoke(store, &name, &grant)?;
        "DELETE /api/v1/users/{name}/grants/{grant}"
    };
    state.tokens.forget_user(&name);
    audit(&state, &rid, &user, route, &name);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<usize>,
}

/// The newest audit entries (default 100, at most 10,000), newest first.
pub async fn audit_log(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
    user: AuthUser,
) -> Result<Json<Json_>, AppError> {
    user.require_admin()?;
    let limit = q.limit.unwrap_or(100).min(10_000);
    let entries = state.store.audit_tail(limit)?;
    Ok(Json(json!({ "entries": entries })))
}
