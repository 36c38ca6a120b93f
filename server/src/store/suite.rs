//! The one test suite every [`Store`] backend passes: each function takes a fresh,
//! empty store; [`store_suite!`] turns them all into tests for one backend (see
//! `sqlite/tests.rs` and `postgres/tests.rs`). What only one backend has (files,
//! pragmas, a server that goes away) is tested beside it.

use serde_json::json;

use super::{
    AuditEntry, JobRecord, JobState, NodeRecord, Role, ServiceRecord, Store, StoreError, Timestamp,
    TokenKind, TokenRecord, UserRecord, GRANT_EXECUTE,
};

/// `store_suite!(EXPR)`: the suite as `#[test]`s in a module `suite`, each on the
/// store `EXPR` makes (fresh and empty each time).
macro_rules! store_suite {
    ($make:expr) => {
        $crate::store::suite::store_suite!(@tests $make; users_round_trip_with_grants, a_taken_name_is_a_conflict, password_and_role_updates, grants_are_idempotent_and_need_a_user, tokens_round_trip, token_conflicts_and_unknown_users, purge_deletes_only_expired_tokens, services_versions_and_retirement, jobs_insert_and_replace, audit_tail_is_newest_first, os_users_map_to_existing_users_and_go_with_them, removing_a_user_takes_its_grants_and_tokens, writers_on_several_threads, text_keeps_every_character, nodes_register_renew_and_leave, login_failures_count_in_a_window, cluster_secret_is_set_once, shared_job_chunks_are_claimed_once_and_assembled, an_expired_lease_is_claimed_again_and_the_late_claimer_counts_nothing, claims_follow_services_age_and_unfinished_jobs, a_stopping_node_hands_its_chunks_back);
    };
    (@tests $make:expr; $($name:ident),*) => {
        mod suite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    let store = $make;
                    $crate::store::suite::$name(&store);
                }
            )*
        }
    };
}
pub(crate) use store_suite;

pub(crate) fn user(name: &str, grants: &[&str]) -> UserRecord {
    UserRecord {
        name: name.to_owned(),
        role: Role::User,
        grants: grants.iter().map(|g| (*g).to_owned()).collect(),
        password_hash: format!("$argon2id$hash-of-{name}"),
        created_at: 1_700_000_000,
    }
}

pub(crate) fn token(user: &str, kind: TokenKind, expires_at: Option<Timestamp>) -> TokenRecord {
    TokenRecord {
        user: user.to_owned(),
        kind,
        label: Some("ci".to_owned()),
        created_at: 1_700_000_000,
        expires_at,
    }
}

pub(crate) fn service(name: &str, version: &str, created_at: Timestamp) -> ServiceRecord {
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

pub(crate) fn job(id: &str, state: JobState) -> JobRecord {
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

pub(crate) fn audit(at: Timestamp) -> AuditEntry {
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

pub(crate) fn users_round_trip_with_grants(s: &dyn Store) {
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

pub(crate) fn a_taken_name_is_a_conflict(s: &dyn Store) {
    s.create_user(&user("alice", &[])).unwrap();
    let err = s.create_user(&user("alice", &["execute"])).unwrap_err();
    assert_eq!(err, StoreError::Conflict("user `alice`".into()));
    assert!(s.user("alice").unwrap().unwrap().grants.is_empty());
}

pub(crate) fn password_and_role_updates(s: &dyn Store) {
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

pub(crate) fn grants_are_idempotent_and_need_a_user(s: &dyn Store) {
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

pub(crate) fn tokens_round_trip(s: &dyn Store) {
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

pub(crate) fn token_conflicts_and_unknown_users(s: &dyn Store) {
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

pub(crate) fn purge_deletes_only_expired_tokens(s: &dyn Store) {
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

pub(crate) fn services_versions_and_retirement(s: &dyn Store) {
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

pub(crate) fn jobs_insert_and_replace(s: &dyn Store) {
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

pub(crate) fn audit_tail_is_newest_first(s: &dyn Store) {
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

pub(crate) fn os_users_map_to_existing_users_and_go_with_them(s: &dyn Store) {
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

pub(crate) fn removing_a_user_takes_its_grants_and_tokens(s: &dyn Store) {
    s.create_user(&user("alice", &["execute"])).unwrap();
    s.create_user(&user("bob", &["execute"])).unwrap();
    s.put_token(&[1; 32], &token("alice", TokenKind::ApiKey, None))
        .unwrap();
    s.put_token(&[2; 32], &token("bob", TokenKind::ApiKey, None))
        .unwrap();
    s.remove_user("alice").unwrap();
    assert_eq!(s.user("alice").unwrap(), None);
    assert_eq!(s.token(&[1; 32]).unwrap(), None);
    // A new alice starts clean.
    s.create_user(&user("alice", &[])).unwrap();
    assert!(s.user("alice").unwrap().unwrap().grants.is_empty());
    assert!(s.tokens_of("alice").unwrap().is_empty());
    assert!(s.token(&[2; 32]).unwrap().is_some(), "bob keeps his key");
    assert_eq!(s.user("bob").unwrap().unwrap().grants, ["execute"]);
}

pub(crate) fn writers_on_several_threads(s: &dyn Store) {
    s.create_user(&user("alice", &[])).unwrap();
    std::thread::scope(|scope| {
        for i in 0..4u8 {
            scope.spawn(move || {
                for j in 0..8u8 {
                    let hash = [i * 16 + j; 32];
                    s.put_token(&hash, &token("alice", TokenKind::Access, None))
                        .unwrap();
                    s.append_audit(&audit(i64::from(i) * 100 + i64::from(j)))
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(s.tokens_of("alice").unwrap().len(), 32);
    assert_eq!(s.audit_tail(100).unwrap().len(), 32);
}

pub(crate) fn text_keeps_every_character(s: &dyn Store) {
    let odd = "Zo\u{eb} \u{1F426} 'quoted' \"double\" \\ % _ \t tab";
    let svc = ServiceRecord {
        description: odd.to_owned(),
        code: format!("f <- function(d) {{ d$y <- '{odd}'; d }}"),
        inputs: json!({"z": "double", "a": "integer", "m": {"nested": [1, 2.5, null]}}),
        ..service("odd", "1.0-\u{3b2}", 7)
    };
    s.put_service(&svc).unwrap();
    let got = s.service("odd", "1.0-\u{3b2}").unwrap().unwrap();
    assert_eq!(got, svc);
}

pub(crate) fn nodes_register_renew_and_leave(s: &dyn Store) {
    let node = |id: &str, beat: Timestamp| NodeRecord {
        id: id.to_owned(),
        address: format!("http://127.0.0.1:80{}", id.len()),
        version: "0.1.0".to_owned(),
        workers: 5,
        busy: 1,
        sessions: 2,
        started_at: 100,
        heartbeat_at: beat,
    };
    assert!(s.nodes().unwrap().is_empty());
    s.put_node(&node("b", 110)).unwrap();
    s.put_node(&node("a", 110)).unwrap();
    let renewed = NodeRecord {
        busy: 4,
        ..node("a", 120)
    };
    s.put_node(&renewed).unwrap();
    assert_eq!(s.nodes().unwrap(), [renewed.clone(), node("b", 110)]);
    assert_eq!(s.remove_nodes_silent_since(115), Ok(1));
    assert_eq!(s.nodes().unwrap(), [renewed]);
    assert_eq!(s.remove_node("a"), Ok(true));
    assert_eq!(s.remove_node("a"), Ok(false));
    assert!(s.nodes().unwrap().is_empty());
}

pub(crate) fn login_failures_count_in_a_window(s: &dyn Store) {
    assert_eq!(s.login_failures_since("ada", 0), Ok(0));
    for at in [10, 20, 30] {
        s.record_login_failure("ada", at).unwrap();
    }
    s.record_login_failure("bob", 25).unwrap();
    assert_eq!(s.login_failures_since("ada", 20), Ok(2));
    assert_eq!(s.login_failures_since("bob", 0), Ok(1));
    assert_eq!(s.purge_login_failures(25), Ok(2));
    assert_eq!(s.login_failures_since("ada", 0), Ok(1));
    assert_eq!(s.login_failures_since("bob", 0), Ok(1));
}

pub(crate) fn cluster_secret_is_set_once(store: &dyn Store) {
    let first = store.cluster_secret(&[7; 32]).unwrap();
    assert_eq!(first, vec![7; 32]);
    // Another node offering its own fresh secret gets the stored one.
    assert_eq!(store.cluster_secret(&[9; 48]).unwrap(), vec![7; 32]);
}

/// A queued shared job of `rows` rows in chunks of `chunk` rows, of `scorer/v1`.
fn shared_job(store: &dyn Store, id: &str, rows: u64, chunk: u64, created_at: Timestamp) {
    let chunks: Vec<(u64, u64)> = (0..rows.div_ceil(chunk))
        .map(|i| (i * chunk, chunk.min(rows - i * chunk)))
        .collect();
    let record = JobRecord {
        state: JobState::Queued,
        rows_total: rows,
        rows_done: 0,
        chunks_total: chunks.len() as u64,
        chunks_done: 0,
        chunks_failed: 0,
        created_at,
        finished_at: None,
        ..job(id, JobState::Queued)
    };
    store.put_shared_job(&record, &chunks).unwrap();
}

fn scorer() -> Vec<(String, String)> {
    vec![("scorer".to_owned(), "v1".to_owned())]
}

pub(crate) fn shared_job_chunks_are_claimed_once_and_assembled(store: &dyn Store) {
    use super::{ChunkDone, ChunkKind};
    shared_job(store, "j1", 25, 10, 100);
    let mut claims = Vec::new();
    for node in ["a", "b", "a"] {
        claims.push(
            store
                .claim_chunk(node, &scorer(), 1000, 1010)
                .unwrap()
                .unwrap(),
        );
    }
    let seen: Vec<_> = claims
        .iter()
        .map(|c| (c.seq, c.first_row, c.rows, c.attempt, c.kind))
        .collect();
    assert_eq!(
        seen,
        [
            (0, 0, 10, 1, ChunkKind::Rows),
            (1, 10, 10, 1, ChunkKind::Rows),
            (2, 20, 5, 1, ChunkKind::Rows)
        ]
    );
    assert_eq!(store.job("j1").unwrap().unwrap().state, JobState::Running);
    assert_eq!(store.claim_chunk("b", &scorer(), 1000, 1010).unwrap(), None);
    // Only the claimer finishes its chunk, once.
    assert_eq!(store.chunk_done("j1", 1, "a").unwrap(), ChunkDone::Lost);
    assert_eq!(
        store.chunk_done("j1", 1, "b").unwrap(),
        ChunkDone::Counted { last: false }
    );
    assert_eq!(store.chunk_done("j1", 1, "b").unwrap(), ChunkDone::Lost);
    assert_eq!(
        store.chunk_done("j1", 0, "a").unwrap(),
        ChunkDone::Counted { last: false }
    );
    let job = store.job("j1").unwrap().unwrap();
    assert_eq!((job.rows_done, job.chunks_done), (20, 2));
    assert_eq!(
        store.chunk_done("j1", 2, "a").unwrap(),
        ChunkDone::Counted { last: true }
    );
    let assemble = store
        .claim_chunk("b", &scorer(), 1001, 1011)
        .unwrap()
        .unwrap();
    assert_eq!((assemble.seq, assemble.kind), (3, ChunkKind::Assemble));
    assert!(store
        .end_job("j1", JobState::Succeeded, None, false, 1002)
        .unwrap());
    assert!(!store
        .end_job("j1", JobState::Failed, Some("late"), true, 1003)
        .unwrap());
    let job = store.job("j1").unwrap().unwrap();
    assert_eq!(
        (job.state, job.rows_done, job.finished_at, job.error),
        (JobState::Succeeded, 25, Some(1002), None)
    );
    assert_eq!(store.claim_chunk("b", &scorer(), 1004, 1014).unwrap(), None);
}

pub(crate) fn an_expired_lease_is_claimed_again_and_the_late_claimer_counts_nothing(
    store: &dyn Store,
) {
    use super::ChunkDone;
    shared_job(store, "j1", 10, 10, 100);
    let first = store
        .claim_chunk("a", &scorer(), 1000, 1010)
        .unwrap()
        .unwrap();
    assert_eq!(first.attempt, 1);
    // Before the lease runs out nobody else gets it; renewing keeps it longer.
    assert_eq!(store.claim_chunk("b", &scorer(), 1009, 1019).unwrap(), None);
    assert!(store.renew_chunk("j1", 0, "a", 1020).unwrap());
    assert!(!store.renew_chunk("j1", 0, "b", 1030).unwrap());
    assert_eq!(store.claim_chunk("b", &scorer(), 1015, 1025).unwrap(), None);
    // Node a goes silent: after its lease, b takes the chunk over.
    let again = store
        .claim_chunk("b", &scorer(), 1021, 1031)
        .unwrap()
        .unwrap();
    assert_eq!((again.seq, again.attempt), (0, 2));
    assert!(!store.renew_chunk("j1", 0, "a", 1040).unwrap());
    assert_eq!(store.chunk_done("j1", 0, "a").unwrap(), ChunkDone::Lost);
    assert_eq!(
        store.chunk_done("j1", 0, "b").unwrap(),
        ChunkDone::Counted { last: true }
    );
    let job = store.job("j1").unwrap().unwrap();
    assert_eq!((job.rows_done, job.chunks_done), (10, 1));
}

pub(crate) fn claims_follow_services_age_and_unfinished_jobs(store: &dyn Store) {
    shared_job(store, "newer", 10, 10, 200);
    shared_job(store, "older", 10, 10, 100);
    let other = vec![("other".to_owned(), "v1".to_owned())];
    assert_eq!(store.claim_chunk("a", &other, 1000, 1010).unwrap(), None);
    assert_eq!(store.claim_chunk("a", &[], 1000, 1010).unwrap(), None);
    // The oldest job first; a cancelled job's chunks are never handed out.
    assert!(store
        .end_job("older", JobState::Cancelled, None, false, 1000)
        .unwrap());
    let claim = store
        .claim_chunk("a", &scorer(), 1000, 1010)
        .unwrap()
        .unwrap();
    assert_eq!(claim.job, "newer");
    assert!(store
        .end_job(
            "newer",
            JobState::Failed,
            Some("chunk 0 failed"),
            true,
            1001
        )
        .unwrap());
    assert!(!store.renew_chunk("newer", 0, "a", 1020).unwrap());
    let job = store.job("newer").unwrap().unwrap();
    assert_eq!(
        (job.state, job.chunks_failed, job.error.as_deref()),
        (JobState::Failed, 1, Some("chunk 0 failed"))
    );
    assert_eq!(
        store.job("older").unwrap().unwrap().state,
        JobState::Cancelled
    );
    // No rows: the job is left only its (empty) result to assemble.
    shared_job(store, "empty", 0, 10, 300);
    let claim = store
        .claim_chunk("a", &scorer(), 1002, 1012)
        .unwrap()
        .unwrap();
    assert_eq!(
        (claim.job.as_str(), claim.kind),
        ("empty", super::ChunkKind::Assemble)
    );
}

pub(crate) fn a_stopping_node_hands_its_chunks_back(store: &dyn Store) {
    shared_job(store, "j1", 30, 10, 100);
    store
        .claim_chunk("a", &scorer(), 1000, 1010)
        .unwrap()
        .unwrap();
    store
        .claim_chunk("a", &scorer(), 1000, 1010)
        .unwrap()
        .unwrap();
    let b = store
        .claim_chunk("b", &scorer(), 1000, 1010)
        .unwrap()
        .unwrap();
    assert_eq!(store.release_chunks("a").unwrap(), 2);
    assert_eq!(store.release_chunks("a").unwrap(), 0);
    // Handed back at once (no lease to wait out), not counted as an attempt.
    let again = store
        .claim_chunk("c", &scorer(), 1001, 1011)
        .unwrap()
        .unwrap();
    assert_eq!((again.seq, again.attempt), (0, 1));
    assert!(store.renew_chunk("j1", b.seq, "b", 1020).unwrap());
}
