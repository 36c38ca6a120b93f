//! A PostgreSQL server of the tests' own, started by `scripts/postgres` (Debian's
//! PostgreSQL, data under `target/`, a free loopback port) and stopped when the
//! value is dropped or the test process ends. Shared by the store's unit tests and
//! the integration tests (`tests/integration/cluster.rs` includes this file).
// Each includer uses a part.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::NoTls;

/// A PostgreSQL server of the tests' own, stopped when this value is dropped or
/// the test process ends (its script watches our end of a pipe).
pub(crate) struct Postgres {
    child: Option<Child>,
    pub(crate) url: String,
    dir: PathBuf,
    pub(crate) port: u16,
}

/// The workspace: the first folder up from this crate that holds `scripts/postgres`.
pub(crate) fn project_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("scripts/postgres").is_file())
        .expect("scripts/postgres in the workspace")
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Postgres {
    /// Starts the server kept in `target/postgres-tests/NAME` (created on first use).
    pub(crate) fn start(name: &str) -> Postgres {
        let dir = project_root().join("target/postgres-tests").join(name);
        let mut pg = Postgres {
            child: None,
            url: String::new(),
            dir,
            port: free_port(),
        };
        pg.up();
        pg
    }

    fn up(&mut self) {
        let mut child = Command::new(project_root().join("scripts/postgres"))
            .arg(&self.dir)
            .arg(self.port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("scripts/postgres runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("scripts/postgres prints its URL");
        assert!(
            line.starts_with("postgres://"),
            "scripts/postgres did not start a server: {line:?}"
        );
        self.url = line.trim().to_owned();
        self.child = Some(child);
    }

    /// Stops the server (fast shutdown) and waits for it.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with the same data.
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.up();
    }

    /// The URL of database `db` on this server.
    pub(crate) fn url_of(&self, db: &str) -> String {
        let base = self.url.rsplit_once('/').expect("a URL with a database").0;
        format!("{base}/{db}")
    }

    /// A new, empty database's URL.
    pub(crate) fn fresh_db(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let db = format!(
            "t_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.admin(&format!("CREATE DATABASE {db}"));
        self.url_of(&db)
    }

    /// Runs `sql` in the `rookery` database as the superuser.
    pub(crate) fn admin(&self, sql: &str) {
        self.query(&self.url, sql);
    }

    /// Runs `sql` (one or more statements) in the database at `url`; the first
    /// column of the rows it returns, as text.
    pub(crate) fn query(&self, url: &str, sql: &str) -> Vec<String> {
        query_at(url, sql)
    }

    /// Drops the databases [`Postgres::fresh_db`] made in earlier runs.
    pub(crate) fn drop_test_databases(&self) {
        let sql = "SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'";
        for db in self.query(&self.url, sql) {
            self.admin(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `sql` (one or more statements) in the database at `url`; the first column
/// of the rows it returns, as text.
pub(crate) fn query_at(url: &str, sql: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
        let task = tokio::spawn(conn);
        let messages = client.simple_query(sql).await.unwrap();
        drop(client);
        let _ = task.await;
        messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .collect()
    })
}
