//! Tests of the SQLite store: every method, errors, expiry, cascades, reopening a file.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::store::suite::{job, service, token, user};

fn store() -> SqliteStore {
    SqliteStore::open_in_memory().unwrap()
}

crate::store::suite::store_suite!(super::store());

#[test]
fn removing_a_user_cascades_to_grants_and_tokens() {
    let s = store();
    crate::store::suite::removing_a_user_takes_its_grants_and_tokens(&s);
    // The cascade itself: no grant row of the removed alice is left behind.
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
