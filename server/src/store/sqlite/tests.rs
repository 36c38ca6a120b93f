//! Tests of the SQLite store: every method, errors, expiry, cascades, reopening a file.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use super::*;
use crate::store::GRANT_EXECUTE;

fn store() -> SqliteStore {
    SqliteStore::open_in_memory().unwrap()
}

fn user(name: &str, grants: &[&str]) -> UserRecord {
    UserRecord {
        name: name.to_owned(),
        role: Role::User,
        grants: grants.iter().map(|g| (*g).to_owned()).collect(),
        password_hash: format!("$argon2id$hash-of-{name}"),
        created_at: 1_700_000_000,
    }
}

fn token(user: &str, kind: TokenKind, expires_at: Option<Timestamp>) -> TokenRecord {
    TokenRecord {
        user: user.to_owned(),
        kind,
        label: Some("ci".to_owned()),
        created_at: 1_700_000_000,
        expires_at,
    }
}

fn service(name: &str, version: &str, created_at: Timestamp) -> ServiceRecord {
    ServiceRecord {
        name: name.to_owned(),
        version: version.to_owned(),
        owner: "alice".to_owned(),
        description: "scores".to_owned(),
        code: "f <- function(d) d".to_owned(),
        function: "f".to_owned(),
        inputs: json!({"x": "double"}),
        outputs: json!([{"name": "y", "type": "double"}]),
        files: vec!["model.rds".to_owned()],
        env: crate::store::ServiceEnv([("DB_PASSWORD".to_owned(), "hunter2".to_owned())].into()),
        created_at,
        updated_at: created_at + 1,
        retired: false,
    }
}

fn job(id: &str, state: JobState) -> JobRecord {
    JobRecord {
        id: id.to_owned(),
        owner: "alice".to_owned(),
        service: "scorer".to_owned(),
        version: "v1".to_owned(),
        state,
        rows_total: 1 << 40,
        rows_done: 10,
        chunks_total: 3,
        chunks_done: 1,
        chunks_failed: 0,
        error: None,
        created_at: 5,
        finished_at: None,
    }
}

fn audit(at: Timestamp) -> AuditEntry {
    AuditEntry {
        at,
        request_id: format!("req-{at}"),
        user: Some("alice".to_owned()),
        route: "POST /api/v1/eval".to_owned(),
        target: None,
        code_hash: Some("ab12".to_owned()),
        outcome: "200 ok".to_owned(),
    }
}

#[test]
fn users_round_trip_with_grants() {
    let s = store();
    let alice = user("alice", &[GRANT_EXECUTE, "service:b", "service:a"]);
    s.create_user(&alice).unwrap();
    s.create_user(&user("bob", &[])).unwrap();
    let got = s.user("alice").unwrap().unwrap();
    assert_eq!(got.grants, ["execute", "service:a", "service:b"]);
    assert_eq!(got.password_hash, alice.password_hash);
    assert_eq!(s.user("carol").unwrap(), None);
    let names: Vec<_> = s.users().unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["alice", "bob"]);
}

#[test]
fn a_taken_name_is_a_conflict() {
    let s = store();
    s.create_user(&user("alice", &[])).unwrap();
    let err = s.create_user(&user("alice", &["execute"])).unwrap_err();
    assert_eq!(err, StoreError::Conflict("user `alice`".into()));
    assert!(s.user("alice").unwrap().unwrap().grants.is_empty());
}

#[test]
fn password_and_role_updates() {
    let s = store();
    s.create_user(&user("alice", &[])).unwrap();
    s.set_password("alice", "$argon2id$new").unwrap();
    s.set_role("alice", Role::Admin).unwrap();
    let got = s.user("alice").unwrap().unwrap();
    assert_eq!(
        (got.password_hash.as_str(), got.role),
        ("$argon2id$new", Role::Admin)
    );
    let missing = StoreError::NotFound("user `bob`".into());
    assert_eq!(s.set_password("bob", "x"), Err(missing.clone()));
    assert_eq!(s.set_role("bob", Role::User), Err(missing.clone()));
    assert_eq!(s.remove_user("bob"), Err(missing));
}

#[test]
fn grants_are_idempotent_and_need_a_user() {
    let s = store();
    s.create_user(&user("bob", &[])).unwrap();
    s.grant("bob", GRANT_EXECUTE).unwrap();
    s.grant("bob", GRANT_EXECUTE).unwrap();
    assert_eq!(s.user("bob").unwrap().unwrap().grants, ["execute"]);
    s.revoke("bob", GRANT_EXECUTE).unwrap();
    s.revoke("bob", GRANT_EXECUTE).unwrap();
    assert!(s.user("bob").unwrap().unwrap().grants.is_empty());
    assert!(matches!(
        s.grant("nobody", "execute"),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.revoke("nobody", "execute"),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn tokens_round_trip() {
    let s = store();
    s.create_user(&user("alice", &[])).unwrap();
    let key = token("alice", TokenKind::ApiKey, None);
    let access = TokenRecord {
        label: None,
        created_at: 1_700_000_001,
        ..token("alice", TokenKind::Access, Some(1_700_003_600))
    };
    s.put_token(&[1; 32], &key).unwrap();
    s.put_token(&[2; 32], &access).unwrap();
    assert_eq!(s.token(&[1; 32]).unwrap(), Some(key.clone()));
    assert_eq!(s.token(&[2; 32]).unwrap(), Some(access.clone()));
    assert_eq!(s.token(&[3; 32]).unwrap(), None);
    let listed = s.tokens_of("alice").unwrap();
    assert_eq!(
        listed,
        [
            ("010101010101".into(), key),
            ("020202020202".into(), access)
        ]
    );
    assert!(s.tokens_of("bob").unwrap().is_empty());
    assert_eq!(s.delete_token(&[1; 32]), Ok(true));
    assert_eq!(s.delete_token(&[1; 32]), Ok(false));
    assert_eq!(s.token(&[1; 32]).unwrap(), None);
}

#[test]
fn token_conflicts_and_unknown_users() {
    let s = store();
    s.create_user(&user("alice", &[])).unwrap();
    let t = token("alice", TokenKind::ApiKey, None);
    s.put_token(&[7; 32], &t).unwrap();
    assert!(matches!(
        s.put_token(&[7; 32], &t),
        Err(StoreError::Conflict(_))
    ));
    let orphan = token("nobody", TokenKind::Access, None);
    let err = s.put_token(&[8; 32], &orphan).unwrap_err();
    assert_eq!(err, StoreError::NotFound("user `nobody`".into()));
}

#[test]
fn purge_deletes_only_expired_tokens() {
    let s = store();
    s.create_user(&user("alice", &[])).unwrap();
    s.put_token(&[1; 32], &token("alice", TokenKind::Access, Some(100)))
        .unwrap();
    s.put_token(&[2; 32], &token("alice", TokenKind::Access, Some(200)))
        .unwrap();
    s.put_token(&[3; 32], &token("alice", TokenKind::ApiKey, None))
        .unwrap();
    assert_eq!(
        s.purge_expired_tokens(100),
        Ok(0),
        "expiring at `now` is kept"
    );
    assert_eq!(s.purge_expired_tokens(150), Ok(1));
    assert_eq!(s.token(&[1; 32]).unwrap(), None);
    assert!(s.token(&[2; 32]).unwrap().is_some());
    assert_eq!(s.purge_expired_tokens(i64::MAX), Ok(1));
    assert!(
        s.token(&[3; 32]).unwrap().is_some(),
        "no expiry, never purged"
    );
}

#[test]
fn removing_a_user_cascades_to_grants_and_tokens() {
    let s = store();
    s.create_user(&user("alice", &["execute"])).unwrap();
    s.create_user(&user("bob", &["execute"])).unwrap();
    s.put_token(&[1; 32], &token("alice", TokenKind::ApiKey, None))
        .unwrap();
    s.put_token(&[2; 32], &token("bob", TokenKind::ApiKey, None))
        .unwrap();
    s.remove_user("alice").unwrap();
    assert_eq!(s.user("alice").unwrap(), None);
    assert_eq!(s.token(&[1; 32]).unwrap(), None);
    let leftover: i64 = s
        .read(|c| {
            c.query_row(
                "SELECT count(*) FROM grants WHERE user = 'alice'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap();
    assert_eq!(leftover, 0);
    // A new alice starts clean.
    s.create_user(&user("alice", &[])).unwrap();
    assert!(s.user("alice").unwrap().unwrap().grants.is_empty());
    assert!(s.tokens_of("alice").unwrap().is_empty());
    assert!(s.token(&[2; 32]).unwrap().is_some(), "bob keeps his key");
}

#[test]
fn services_versions_and_retirement() {
    let s = store();
    let v1 = service("scorer", "v1", 10);
    let v2 = service("scorer", "v2", 20);
    let other = service("alpha", "1.0", 30);
    for svc in [&v2, &v1, &other] {
        s.put_service(svc).unwrap();
    }
    assert_eq!(s.service("scorer", "v1").unwrap(), Some(v1.clone()));
    assert_eq!(s.service("scorer", "v3").unwrap(), None);
    let listed = s.services().unwrap();
    assert_eq!(listed, [other.clone(), v1.clone(), v2.clone()]);
    let edited = ServiceRecord {
        description: "better".into(),
        ..v1.clone()
    };
    s.put_service(&edited).unwrap();
    assert_eq!(s.service("scorer", "v1").unwrap(), Some(edited));
    assert_eq!(s.retire_service("scorer", "v1"), Ok(true));
    assert_eq!(
        s.retire_service("scorer", "v1"),
        Ok(false),
        "already retired"
    );
    assert_eq!(s.retire_service("nope", "v1"), Ok(false));
    assert_eq!(s.services().unwrap(), [other, v2]);
    assert!(s.service("scorer", "v1").unwrap().unwrap().retired);
}

#[test]
fn jobs_insert_and_replace() {
    let s = store();
    let queued = job("j1", JobState::Queued);
    s.put_job(&queued).unwrap();
    assert_eq!(s.job("j1").unwrap(), Some(queued.clone()));
    let failed = JobRecord {
        state: JobState::Failed,
        chunks_failed: 1,
        error: Some("Error: boom".into()),
        finished_at: Some(9),
        ..queued
    };
    s.put_job(&failed).unwrap();
    assert_eq!(s.job("j1").unwrap(), Some(failed));
    assert_eq!(s.job("j2").unwrap(), None);
    for state in [JobState::Running, JobState::Succeeded, JobState::Cancelled] {
        s.put_job(&job("j3", state)).unwrap();
        assert_eq!(s.job("j3").unwrap().unwrap().state, state);
        let unfinished = s.unfinished_jobs().unwrap();
        assert_eq!(
            unfinished.iter().any(|j| j.id == "j3"),
            !state.is_finished(),
            "{state:?}"
        );
    }
}

#[test]
fn audit_tail_is_newest_first() {
    let s = store();
    for at in 1..=5 {
        s.append_audit(&audit(at)).unwrap();
    }
    let anonymous = AuditEntry {
        user: None,
        code_hash: None,
        target: Some("scorer/v1".into()),
        ..audit(6)
    };
    s.append_audit(&anonymous).unwrap();
    let tail = s.audit_tail(3).unwrap();
    assert_eq!(tail, [anonymous, audit(5), audit(4)]);
    assert_eq!(s.audit_tail(100).unwrap().len(), 6);
    assert!(s.audit_tail(0).unwrap().is_empty());
    assert_eq!(s.audit_tail(usize::MAX).unwrap().len(), 6);
    let batch: Vec<_> = (7..=9).map(audit).collect();
    s.append_audit_batch(&batch).unwrap();
    let tail = s.audit_tail(3).unwrap();
    assert_eq!(
        tail,
        [audit(9), audit(8), audit(7)],
        "a batch keeps its order"
    );
}

#[test]
fn corrupt_rows_are_backend_errors() {
    let s = store();
    s.put_job(&job("j1", JobState::Queued)).unwrap();
    s.write(|tx| tx.execute("UPDATE jobs SET state = 'exploded'", []))
        .unwrap();
    let err = s.job("j1").unwrap_err();
    assert!(
        matches!(&err, StoreError::Backend(m) if m.contains("exploded")),
        "{err}"
    );
}

#[test]
fn a_file_store_is_private_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/data/rookery.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.path(), Some(path.as_path()));
        s.create_user(&user("alice", &["execute"])).unwrap();
        s.put_token(&[9; 32], &token("alice", TokenKind::ApiKey, None))
            .unwrap();
        s.put_service(&service("scorer", "v1", 1)).unwrap();
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.user("alice").unwrap().unwrap().grants, ["execute"]);
    assert!(s.token(&[9; 32]).unwrap().is_some());
    assert_eq!(s.services().unwrap().len(), 1);
    let journal: String = s
        .read(|c| c.pragma_query_value(None, "journal_mode", |r| r.get(0)))
        .unwrap();
    assert_eq!(journal, "wal");
    let fk: bool = s
        .read(|c| c.pragma_query_value(None, "foreign_keys", |r| r.get(0)))
        .unwrap();
    assert!(fk);
}

#[test]
fn two_handles_on_one_file_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rookery.db");
    let server = SqliteStore::open(&path).unwrap();
    let cli = SqliteStore::open(&path).unwrap();
    cli.create_user(&user("alice", &[])).unwrap();
    assert!(server.user("alice").unwrap().is_some());
}

#[test]
fn migrations_set_the_version_and_refuse_newer_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rookery.db");
    let s = SqliteStore::open(&path).unwrap();
    let version: usize = s
        .read(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
        .unwrap();
    assert_eq!(version, MIGRATIONS.len());
    s.read(|c| c.pragma_update(None, "user_version", 99))
        .unwrap();
    drop(s);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::Backend(m) if m.contains("99")),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rookery.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::Backend(_))
    ));
}

#[test]
fn the_store_is_shareable_across_threads() {
    fn ensure_send_sync<T: Send + Sync + 'static>() {}
    ensure_send_sync::<SqliteStore>();
    let s = std::sync::Arc::new(store());
    s.create_user(&user("alice", &[])).unwrap();
    let handles: Vec<_> = (0..4u8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                s.put_token(&[i; 32], &token("alice", TokenKind::Access, None))
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    assert_eq!(s.tokens_of("alice").unwrap().len(), 4);
}

#[test]
fn os_users_map_to_existing_users_and_go_with_them() {
    let s = store();
    assert!(matches!(
        s.map_os_user("ghost", 1000),
        Err(StoreError::NotFound(_))
    ));
    s.create_user(&user("alice", &[])).unwrap();
    s.create_user(&user("bob", &[])).unwrap();
    assert_eq!(s.os_user(1000).unwrap(), None);
    s.map_os_user("alice", 1000).unwrap();
    assert_eq!(s.os_user(1000).unwrap().as_deref(), Some("alice"));
    s.map_os_user("bob", 1000).unwrap();
    assert_eq!(s.os_user(1000).unwrap().as_deref(), Some("bob"), "remapped");
    s.remove_user("bob").unwrap();
    assert_eq!(
        s.os_user(1000).unwrap(),
        None,
        "the mapping went with the user"
    );
}
