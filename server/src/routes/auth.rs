//! `POST /login`, `POST /logout`, `GET /me`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value as Json_};

use crate::admin;
use crate::audit::Entry;
use crate::auth::{AuthUser, Credential};
use crate::engine::blocking;
use crate::error::AppError;
use crate::state::AppState;

use super::body::{ClientAddr, JsonBody, RequestId};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
}

/// Checks a password and issues an access token. Failures are rate limited per user
/// name and per client address, and take as long for unknown names as for known ones.
pub async fn login(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    ClientAddr(addr): ClientAddr,
    JsonBody(body): JsonBody<Login>,
) -> Result<Json<Json_>, AppError> {
    if let Err(after) = state.limiter.check(&body.username, addr) {
        audit(&state, &rid, &body.username, "429 rate_limited");
        return Err(AppError::RateLimited(after));
    }
    let user = state.store.user(&body.username)?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let password = body.password;
    let (verified, name) = (state.verified.clone(), body.username.clone());
    let ok = blocking(move || match hash {
        Some(h) => verified.verify(&name, &password, &h),
        None => verified.verify_unknown(&password).map(|()| false),
    })
    .await?;
    let ok = ok.map_err(|busy| {
        audit(&state, &rid, &body.username, "503 login_busy");
        AppError::LoginBusy(busy.to_string())
    })?;
    if !ok {
        state.limiter.record_failure(&body.username, addr);
        audit(&state, &rid, &body.username, "401 bad_credentials");
        tracing::warn!(user = %body.username, %addr, "failed login");
        return Err(AppError::Unauthenticated("Bearer realm=\"rookery\""));
    }
    let ttl = Duration::from_secs(state.config.limits.token_ttl_secs);
    let (token, _) = admin::issue_access_token(state.store.as_ref(), &body.username, ttl)
        .map_err(|e| AppError::Internal(e.to_string()))?;
    audit(&state, &rid, &body.username, "200 ok");
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
    })))
}

fn audit(state: &AppState, rid: &str, user: &str, outcome: &str) {
    state.audit.record(Entry {
        request_id: rid,
        user: Some(user),
        route: "POST /api/v1/login",
        target: None,
        code: None,
        outcome: outcome.to_owned(),
    });
}

/// Revokes the token the request was made with.
pub async fn logout(State(state): State<AppState>, user: AuthUser) -> Result<StatusCode, AppError> {
    match user.credential {
        Credential::Bearer { hash, .. } => {
            state.store.delete_token(&hash)?;
            state.tokens.forget(&hash);
            Ok(StatusCode::NO_CONTENT)
        }
        Credential::Password => Err(AppError::BadRequest(
            "this caller logged in with a password and holds no token to revoke".into(),
        )),
    }
}

/// Who the token belongs to.
pub async fn me(user: AuthUser) -> Json<Json_> {
    Json(json!({
        "username": user.name,
        "role": user.role,
        "grants": user.grants,
        "via": match user.credential {
            Credential::Bearer { kind, .. } => Some(kind),
            Credential::Password => None,
        },
    }))
}
