//! User and key administration: the operations behind `rookery user …` and
//! `rookery key …`, also used by the server (`POST /login` issues its tokens here).
//! Owns the rules for names, grants and secrets on their way into the [`Store`]; it
//! must not print, log or keep a password or a secret, and knows nothing of HTTP.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::TryRngCore;
use serde::Serialize;

use crate::auth::password::{self, PasswordError};
use crate::auth::token;
use crate::store::{
    Role, Store, StoreError, Timestamp, TokenKind, TokenRecord, UserRecord, GRANT_EXECUTE,
};

/// Longest user name: names become folder names.
pub const MAX_NAME_LEN: usize = 32;

/// Longest service name accepted in a `service:NAME` grant.
pub const MAX_SERVICE_NAME_LEN: usize = 64;

/// Why an administrative operation was refused. Never contains a password or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error(
        "invalid user name {0:?}: use 1 to 32 characters from a-z, 0-9, `_`, `.` and `-`, \
         starting with a letter or `_`"
    )]
    InvalidName(String),
    #[error("weak password: {0}")]
    WeakPassword(PasswordError),
    #[error("no user named {0:?}")]
    UnknownUser(String),
    #[error("unknown grant {0:?} (expected `execute` or `service:NAME`)")]
    UnknownGrant(String),
    #[error("user {0:?} already exists")]
    Exists(String),
    /// Hashing failed (the OS random source, not the password).
    #[error("{0}")]
    Hashing(PasswordError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A user as shown to administrators: never the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSummary {
    pub name: String,
    pub role: Role,
    pub grants: Vec<String>,
    pub created_at: Timestamp,
}

/// Now, in seconds since the Unix epoch.
pub fn now() -> Timestamp {
    jiff::Timestamp::now().as_second()
}

/// `at` as an RFC 3339 UTC time (`2025-01-02T03:04:05Z`), for tables and logs.
pub fn format_timestamp(at: Timestamp) -> String {
    jiff::Timestamp::from_second(at).map_or_else(|_| at.to_string(), |t| t.to_string())
}

/// Accepts names matching `^[a-z_][a-z0-9_.-]{0,31}$`: they become folder names.
pub fn validate_user_name(name: &str) -> Result<(), AdminError> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok =
        bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if first_ok && rest_ok && name.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(AdminError::InvalidName(name.to_owned()))
    }
}

/// Accepts `execute` and `service:NAME`, NAME being 1 to 64 characters from
/// `A-Za-z0-9_.-`.
pub fn validate_grant(grant: &str) -> Result<(), AdminError> {
    let ok = grant == GRANT_EXECUTE || grant.strip_prefix("service:").is_some_and(is_service_name);
    ok.then_some(())
        .ok_or_else(|| AdminError::UnknownGrant(grant.to_owned()))
}

fn is_service_name(name: &str) -> bool {
    (1..=MAX_SERVICE_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Turns "user not found" and "user exists" into their own variants.
fn user_error(name: &str) -> impl Fn(StoreError) -> AdminError + '_ {
    move |e| match e {
        StoreError::NotFound(_) => AdminError::UnknownUser(name.to_owned()),
        StoreError::Conflict(_) => AdminError::Exists(name.to_owned()),
        other => AdminError::Store(other),
    }
}

/// A strong random password (24 bytes of the OS CSPRNG, base64url: 32 characters),
/// for accounts made by the server itself (the demo user).
///
/// # Panics
/// When the OS random source fails, as [`token::generate`] does.
pub fn random_password() -> String {
    let mut bytes = [0u8; 24];
    OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the OS random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Checks the strength of `password` and hashes it.
fn strong_hash(password: &str) -> Result<String, AdminError> {
    password::check_strength(password).map_err(AdminError::WeakPassword)?;
    password::hash(password).map_err(AdminError::Hashing)
}

/// Creates user `name` with `role`, no grants, and `password` (stored hashed).
pub fn add_user(
    store: &dyn Store,
    name: &str,
    role: Role,
    password: &str,
) -> Result<(), AdminError> {
    validate_user_name(name)?;
    let user = UserRecord {
        name: name.to_owned(),
        role,
        grants: Vec::new(),
        password_hash: strong_hash(password)?,
        created_at: now(),
    };
    store.create_user(&user).map_err(user_error(name))
}

/// Replaces the password of user `name`. Its tokens and keys stay valid.
pub fn set_password(store: &dyn Store, name: &str, password: &str) -> Result<(), AdminError> {
    let hash = strong_hash(password)?;
    store.set_password(name, &hash).map_err(user_error(name))
}

/// Removes user `name` with its grants, tokens and keys.
pub fn remove_user(store: &dyn Store, name: &str) -> Result<(), AdminError> {
    store.remove_user(name).map_err(user_error(name))
}

/// Gives `grant` (see [`validate_grant`]) to user `name`; granting twice is fine.
pub fn grant(store: &dyn Store, name: &str, grant: &str) -> Result<(), AdminError> {
    validate_grant(grant)?;
    store.grant(name, grant).map_err(user_error(name))
}

/// Takes `grant` from user `name`; revoking a grant the user lacks is fine.
pub fn revoke(store: &dyn Store, name: &str, grant: &str) -> Result<(), AdminError> {
    validate_grant(grant)?;
    store.revoke(name, grant).map_err(user_error(name))
}

/// Every user, by name, without password hashes.
pub fn list_users(store: &dyn Store) -> Result<Vec<UserSummary>, AdminError> {
    let users = store.users()?;
    Ok(users
        .into_iter()
        .map(|u| UserSummary {
            name: u.name,
            role: u.role,
            grants: u.grants,
            created_at: u.created_at,
        })
        .collect())
}

/// Makes an API key for `user` and returns its secret, which exists only in the
/// answer: the store keeps its hash. `expires_in: None` never expires.
pub fn create_api_key(
    store: &dyn Store,
    user: &str,
    label: Option<&str>,
    expires_in: Option<Duration>,
) -> Result<String, AdminError> {
    let (secret, _) = issue(store, user, TokenKind::ApiKey, label, expires_in)?;
    Ok(secret)
}

/// Makes an access token for `user`, valid for `ttl` (what `POST /login` returns).
pub fn issue_access_token(
    store: &dyn Store,
    user: &str,
    ttl: Duration,
) -> Result<(String, TokenRecord), AdminError> {
    issue(store, user, TokenKind::Access, None, Some(ttl))
}

fn issue(
    store: &dyn Store,
    user: &str,
    kind: TokenKind,
    label: Option<&str>,
    expires_in: Option<Duration>,
) -> Result<(String, TokenRecord), AdminError> {
    let created_at = now();
    let record = TokenRecord {
        user: user.to_owned(),
        kind,
        label: label.map(str::to_owned),
        created_at,
        expires_at: expires_in.map(|d| created_at.saturating_add(seconds(d))),
    };
    let new = token::generate(kind);
    store
        .put_token(&new.hash, &record)
        .map_err(user_error(user))?;
    Ok((new.secret, record))
}

fn seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Revokes the token or key `secret`; false when there was none (or `secret` is not
/// shaped like one).
pub fn revoke_token(store: &dyn Store, secret: &str) -> Result<bool, AdminError> {
    if !token::looks_like_token(secret) {
        return Ok(false);
    }
    Ok(store.delete_token(&token::hash(secret))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    const PW: &str = "a long enough password";

    fn store_with(names: &[&str]) -> SqliteStore {
        let store = SqliteStore::open_in_memory().unwrap();
        for name in names {
            add_user(&store, name, Role::User, PW).unwrap();
        }
        store
    }

    #[test]
    fn user_names() {
        for good in ["alice", "_svc", "a", "bob.smith-2", "x_1", &"a".repeat(32)] {
            assert_eq!(validate_user_name(good), Ok(()), "{good}");
        }
        let long = "a".repeat(33);
        for bad in [
            "", ".", "..", "Alice", "1abc", "-x", ".hidden", "a/b", "a b", "é", &long,
        ] {
            assert!(
                matches!(validate_user_name(bad), Err(AdminError::InvalidName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn grants() {
        for good in ["execute", "service:scorer", "service:My_Model-2.1"] {
            assert_eq!(validate_grant(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "admin",
            "Execute",
            "service:",
            "service:a/b",
            "service:a b",
        ] {
            assert_eq!(
                validate_grant(bad),
                Err(AdminError::UnknownGrant(bad.into()))
            );
        }
    }

    #[test]
    fn add_user_hashes_the_password() {
        let store = SqliteStore::open_in_memory().unwrap();
        add_user(&store, "alice", Role::Publisher, PW).unwrap();
        let user = store.user("alice").unwrap().unwrap();
        assert_eq!(user.role, Role::Publisher);
        assert!(user.password_hash.starts_with("$argon2id$"));
        assert!(password::verify(PW, &user.password_hash));
        assert!(user.created_at > 1_600_000_000);
    }

    #[test]
    fn add_user_refusals() {
        let store = store_with(&["alice"]);
        let err = add_user(&store, "alice", Role::User, PW).unwrap_err();
        assert_eq!(err, AdminError::Exists("alice".into()));
        let err = add_user(&store, "Bob", Role::User, PW).unwrap_err();
        assert!(matches!(err, AdminError::InvalidName(_)));
        let err = add_user(&store, "bob", Role::User, "short").unwrap_err();
        assert_eq!(err, AdminError::WeakPassword(PasswordError::TooShort));
        assert!(store.user("bob").unwrap().is_none());
    }

    #[test]
    fn set_password_replaces_the_hash() {
        let store = store_with(&["alice"]);
        set_password(&store, "alice", "another password").unwrap();
        let hash = store.user("alice").unwrap().unwrap().password_hash;
        assert!(password::verify("another password", &hash));
        assert!(!password::verify(PW, &hash));
        let err = set_password(&store, "nobody", "another password").unwrap_err();
        assert_eq!(err, AdminError::UnknownUser("nobody".into()));
        let err = set_password(&store, "alice", "weak").unwrap_err();
        assert!(matches!(err, AdminError::WeakPassword(_)));
    }

    #[test]
    fn grant_and_revoke() {
        let store = store_with(&["bob"]);
        grant(&store, "bob", "execute").unwrap();
        grant(&store, "bob", "execute").unwrap();
        grant(&store, "bob", "service:scorer").unwrap();
        let grants = &list_users(&store).unwrap()[0].grants;
        assert_eq!(grants, &["execute", "service:scorer"]);
        revoke(&store, "bob", "execute").unwrap();
        revoke(&store, "bob", "execute").unwrap();
        assert_eq!(list_users(&store).unwrap()[0].grants, ["service:scorer"]);
        let err = grant(&store, "bob", "root").unwrap_err();
        assert_eq!(err, AdminError::UnknownGrant("root".into()));
        let err = grant(&store, "nobody", "execute").unwrap_err();
        assert_eq!(err, AdminError::UnknownUser("nobody".into()));
    }

    #[test]
    fn list_users_by_name() {
        let store = store_with(&["carol", "alice"]);
        let users = list_users(&store).unwrap();
        let names: Vec<_> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["alice", "carol"]);
        assert_eq!(users[0].role, Role::User);
        let json = serde_json::to_string(&users).unwrap();
        assert!(!json.contains("argon2"), "{json}");
    }

    #[test]
    fn api_keys_are_stored_only_as_hashes() {
        let store = store_with(&["alice"]);
        let day = Duration::from_secs(86_400);
        let secret = create_api_key(&store, "alice", Some("nightly"), Some(day)).unwrap();
        assert!(secret.starts_with("rkk_"));
        let record = store.token(&token::hash(&secret)).unwrap().unwrap();
        assert_eq!(record.kind, TokenKind::ApiKey);
        assert_eq!(record.label.as_deref(), Some("nightly"));
        assert_eq!(record.expires_at, Some(record.created_at + 86_400));
        let forever = create_api_key(&store, "alice", None, None).unwrap();
        assert_eq!(
            store
                .token(&token::hash(&forever))
                .unwrap()
                .unwrap()
                .expires_at,
            None
        );
        let err = create_api_key(&store, "nobody", None, None).unwrap_err();
        assert_eq!(err, AdminError::UnknownUser("nobody".into()));
    }

    #[test]
    fn access_tokens_and_revocation() {
        let store = store_with(&["alice"]);
        let (secret, record) =
            issue_access_token(&store, "alice", Duration::from_secs(3600)).unwrap();
        assert!(secret.starts_with("rka_"));
        assert_eq!(record.kind, TokenKind::Access);
        assert_eq!(record.expires_at, Some(record.created_at + 3600));
        assert_eq!(store.token(&token::hash(&secret)).unwrap(), Some(record));
        assert_eq!(revoke_token(&store, &secret), Ok(true));
        assert_eq!(revoke_token(&store, &secret), Ok(false));
        assert_eq!(revoke_token(&store, "junk"), Ok(false));
    }

    #[test]
    fn remove_user_takes_its_keys() {
        let store = store_with(&["alice", "bob"]);
        let key = create_api_key(&store, "alice", None, None).unwrap();
        let bobs = create_api_key(&store, "bob", None, None).unwrap();
        remove_user(&store, "alice").unwrap();
        assert!(store.token(&token::hash(&key)).unwrap().is_none());
        assert!(store.token(&token::hash(&bobs)).unwrap().is_some());
        let err = remove_user(&store, "alice").unwrap_err();
        assert_eq!(err, AdminError::UnknownUser("alice".into()));
    }

    #[test]
    fn random_passwords_are_strong_and_differ() {
        let (a, b) = (random_password(), random_password());
        assert_eq!(a.len(), 32);
        assert_eq!(password::check_strength(&a), Ok(()));
        assert_ne!(a, b);
        let store = SqliteStore::open_in_memory().unwrap();
        add_user(&store, "demo", Role::User, &a).unwrap();
    }

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00Z");
        assert!(now() > 1_600_000_000);
    }
}
