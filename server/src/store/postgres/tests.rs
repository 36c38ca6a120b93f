//! The PostgreSQL store against a real PostgreSQL (Debian's, started by
//! `scripts/postgres` under `target/`): the shared suite, each test in a database of
//! its own; several nodes migrating one database at once; a database that goes away
//! and comes back; a URL that reaches nothing.

use std::sync::OnceLock;

use super::fixture::{free_port, Postgres};
use super::*;
use crate::store::suite::{service, token, user};

/// The server the suite's tests share, with the databases of earlier runs dropped.
fn shared() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| {
        let pg = Postgres::start("unit");
        pg.drop_test_databases();
        pg
    })
}

fn store() -> PgStore {
    PgStore::connect(&shared().fresh_db()).expect("the test database opens")
}

crate::store::suite::store_suite!(super::store());

#[test]
fn the_store_is_shareable_across_threads() {
    fn ensure_send_sync<T: Send + Sync + 'static>() {}
    ensure_send_sync::<PgStore>();
}

#[test]
fn nodes_starting_together_migrate_once_and_share_the_registry() {
    let url = shared().fresh_db();
    let nodes: Vec<PgStore> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| PgStore::connect(&url)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().expect("every node opens the store"))
            .collect()
    });
    nodes[0].create_user(&user("alice", &["execute"])).unwrap();
    nodes[1]
        .put_token(&[5; 32], &token("alice", TokenKind::Access, None))
        .unwrap();
    for node in &nodes {
        assert_eq!(node.user("alice").unwrap().unwrap().grants, ["execute"]);
        assert!(node.token(&[5; 32]).unwrap().is_some());
    }
    assert!(nodes[3].delete_token(&[5; 32]).unwrap());
    assert_eq!(nodes[2].token(&[5; 32]).unwrap(), None, "revoked for all");
    // Reopening an up-to-date database changes nothing.
    drop(nodes);
    let again = PgStore::connect(&url).unwrap();
    assert!(again.user("alice").unwrap().is_some());
}

#[test]
fn calls_run_inside_and_outside_a_runtime() {
    let s = store();
    s.create_user(&user("alice", &[])).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let found = rt.block_on(async { s.user("alice") }).unwrap();
    assert!(found.is_some());
    // Dropped inside a runtime too.
    rt.block_on(async move { drop(s) });
}

#[test]
fn corrupt_rows_are_backend_errors() {
    let pg = shared();
    let url = pg.fresh_db();
    let s = PgStore::connect(&url).unwrap();
    s.put_service(&service("scorer", "v1", 1)).unwrap();
    pg.query(&url, "UPDATE services SET files = '{\"not\": \"a list\"}'");
    let err = s.service("scorer", "v1").unwrap_err();
    assert!(matches!(&err, StoreError::Backend(_)), "{err}");
}

#[test]
fn a_database_that_cannot_be_reached_is_a_clear_error() {
    let port = free_port();
    let url = format!("postgres://rookery:x@127.0.0.1:{port}/rookery");
    let err = PgStore::connect(&url).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{port}/rookery")),
        "{message}"
    );
    assert!(!message.contains(":x@"), "no password in {message}");
    let err = PgStore::connect("postgres://[bad").unwrap_err();
    assert!(err.to_string().contains("URL"), "{err}");
}

#[test]
fn a_wrong_password_is_refused_by_name() {
    let pg = shared();
    let url = format!("postgres://rookery:wrong-pw@127.0.0.1:{}/rookery", pg.port);
    let err = PgStore::connect(&url).unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    let err = err.to_string();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("wrong-pw"), "no password in {err}");
}

#[test]
fn the_store_is_unavailable_while_the_database_is_down_and_recovers() {
    let mut pg = Postgres::start("outage");
    let s = PgStore::connect(&pg.url).unwrap();
    let name = format!("u{}", std::process::id());
    s.create_user(&user(&name, &[])).unwrap();
    assert_eq!(s.ping(), Ok(()));

    pg.stop();
    let err = s.user(&name).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(matches!(s.ping(), Err(StoreError::Unavailable(_))));

    pg.restart();
    // The pool drops the broken connections and opens new ones.
    let back = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        s.ping().is_ok()
    });
    assert!(back, "the store answers again once the database is back");
    assert!(s.user(&name).unwrap().is_some(), "nothing was lost");
    s.remove_user(&name).unwrap();
}
