//! The `AuthUser` extractor: the only way a handler learns who is calling. Reads the
//! bearer token, looks up its hash and its user (in the store, or in the token
//! cache for a moment after: `tokens.rs`), checks expiry, and offers the
//! role and grant checks every route uses.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::error::AppError;
use crate::state::AppState;
use crate::store::{service_grant, Role, TokenKind, GRANT_EXECUTE};

use super::token;
use super::tokens::Known;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub name: String,
    pub role: Role,
    pub grants: Vec<String>,
    /// What the caller presented to prove who they are.
    pub credential: Credential,
}

/// How a caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A bearer token over HTTP: an access token from login or an API key. `hash` is
    /// its SHA-256, the key logout revokes.
    Bearer { kind: TokenKind, hash: [u8; 32] },
    /// A username and password checked at a QAP1 login; no token exists to revoke.
    Password,
}

const CHALLENGE: &str = "Bearer realm=\"rookery\"";
const CHALLENGE_INVALID: &str = "Bearer realm=\"rookery\", error=\"invalid_token\"";

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let auth = AuthUser::from_headers(&parts.headers, state)?;
        tracing::Span::current().record("user", auth.name.as_str());
        // For the body extractors after it (bytes in flight are counted per user).
        parts.extensions.insert(auth.clone());
        Ok(auth)
    }
}

impl AuthUser {
    /// Authenticates the bearer token of `headers`.
    pub fn from_headers(headers: &HeaderMap, state: &AppState) -> Result<AuthUser, AppError> {
        let secret = bearer(headers)?;
        if !token::looks_like_token(secret) {
            return Err(AppError::Unauthenticated(CHALLENGE_INVALID));
        }
        let hash = token::hash(secret);
        let known = match state.tokens.get(&hash) {
            Some(known) => known,
            None => {
                let known = look_up(state, &hash)?;
                state.tokens.put(hash, known.clone());
                known
            }
        };
        if known.expires_at.is_some_and(|at| at <= crate::admin::now()) {
            return Err(AppError::Unauthenticated(CHALLENGE_INVALID));
        }
        Ok(AuthUser {
            name: known.user,
            role: known.role,
            grants: known.grants,
            credential: Credential::Bearer {
                kind: known.kind,
                hash,
            },
        })
    }
}

/// The token of hash `hash` and its user, from the store.
fn look_up(state: &AppState, hash: &[u8; 32]) -> Result<Known, AppError> {
    let record = state
        .store
        .token(hash)?
        .ok_or(AppError::Unauthenticated(CHALLENGE_INVALID))?;
    let user = state
        .store
        .user(&record.user)?
        .ok_or(AppError::Unauthenticated(CHALLENGE_INVALID))?;
    Ok(Known {
        user: user.name,
        role: user.role,
        grants: user.grants,
        kind: record.kind,
        expires_at: record.expires_at,
    })
}

fn bearer(headers: &HeaderMap) -> Result<&str, AppError> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or(AppError::Unauthenticated(CHALLENGE))?;
    let text = value
        .to_str()
        .map_err(|_| AppError::Unauthenticated(CHALLENGE_INVALID))?;
    let (scheme, secret) = text
        .split_once(' ')
        .ok_or(AppError::Unauthenticated(CHALLENGE_INVALID))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AppError::Unauthenticated(CHALLENGE_INVALID));
    }
    Ok(secret.trim())
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Admins and publishers run code; users only with the `execute` grant.
    pub fn require_execute(&self) -> Result<(), AppError> {
        self.require_login()?;
        let allowed = matches!(self.role, Role::Admin | Role::Publisher)
            || self.grants.iter().any(|g| g == GRANT_EXECUTE);
        allowed.then_some(()).ok_or_else(|| {
            AppError::Forbidden(format!(
                "user `{}` may not run arbitrary R code (needs the publisher role or the \
                 `{GRANT_EXECUTE}` grant)",
                self.name
            ))
        })
    }

    /// Admins and publishers publish services.
    pub fn require_publisher(&self) -> Result<(), AppError> {
        self.require_login()?;
        matches!(self.role, Role::Admin | Role::Publisher)
            .then_some(())
            .ok_or_else(|| {
                AppError::Forbidden(format!("user `{}` may not publish services", self.name))
            })
    }

    pub fn require_admin(&self) -> Result<(), AppError> {
        self.require_login()?;
        self.is_admin()
            .then_some(())
            .ok_or_else(|| AppError::Forbidden("this needs the admin role".into()))
    }

    /// Admins and publishers call any service; users the ones they are granted.
    pub fn may_call_service(&self, name: &str) -> bool {
        matches!(self.role, Role::Admin | Role::Publisher)
            || self.grants.iter().any(|g| *g == service_grant(name))
    }

    /// API keys are for calling services; everything else needs a login.
    fn require_login(&self) -> Result<(), AppError> {
        match self.credential {
            Credential::Bearer {
                kind: TokenKind::Access,
                ..
            }
            | Credential::Password => Ok(()),
            Credential::Bearer {
                kind: TokenKind::ApiKey,
                ..
            } => Err(AppError::Forbidden(
                "API keys may only call services; log in for this".into(),
            )),
        }
    }

    /// Whether this caller may see a resource owned by `owner`.
    pub fn owns(&self, owner: &str) -> bool {
        self.is_admin() || self.name == owner
    }
}
