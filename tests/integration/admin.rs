//! `rookery user …` and `rookery key …`, run as an administrator would: the real
//! binary against a data folder in a temporary directory, passwords on stdin. The
//! results are checked by opening the store the binary wrote.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use rookery_server::auth::{password, token};
use rookery_server::store::{Role, SqliteStore, Store, TokenKind};

const PASSWORD: &str = "correct horse battery";

/// Runs `rookery ARGS --data DATA` with `stdin` piped in.
fn rookery(data: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("ROOKERY_DATA")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rookery runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    // A command refused before it reads stdin closes it: not an error here.
    if let Err(e) = input.write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    drop(input);
    child.wait_with_output().expect("rookery finishes")
}

/// Like [`rookery`], and the command must succeed.
fn ok(data: &Path, args: &[&str], stdin: &str) -> String {
    let out = rookery(data, args, stdin);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Like [`rookery`], the command must fail, and its stderr must contain `message`.
fn fails(data: &Path, args: &[&str], stdin: &str, message: &str) {
    let out = rookery(data, args, stdin);
    assert!(!out.status.success(), "{args:?} should fail");
    let err = stderr(&out);
    assert!(
        err.contains(message),
        "{args:?}: expected {message:?} in {err:?}"
    );
    assert!(!err.contains(PASSWORD), "{args:?} printed the password");
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn store(data: &Path) -> SqliteStore {
    SqliteStore::open(&data.join("rookery.db")).expect("the store opens")
}

fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("data");
    (dir, data)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

/// No file of the data folder (database, WAL, shared memory) contains `secret`.
fn assert_not_on_disk(data: &Path, secret: &str) {
    for entry in std::fs::read_dir(data).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{} holds a secret in plain text", path.display());
    }
}

#[test]
fn add_list_and_change_password() {
    let (_dir, data) = data_dir();
    let pw_line = format!("{PASSWORD}\n");
    ok(
        &data,
        &["user", "add", "alice", "--role", "publisher"],
        &pw_line,
    );
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("rookery.db")), 0o600);

    let list = ok(&data, &["user", "list"], "");
    let row = list.lines().find(|l| l.starts_with("alice")).expect(&list);
    assert!(row.contains("publisher"), "{list}");
    assert!(list.starts_with("NAME"), "{list}");

    let user = store(&data).user("alice").unwrap().expect("alice exists");
    assert_eq!(user.role, Role::Publisher);
    assert!(password::verify(PASSWORD, &user.password_hash));
    assert_not_on_disk(&data, PASSWORD);

    ok(&data, &["user", "passwd", "alice"], "a new password\r\n");
    let hash = store(&data).user("alice").unwrap().unwrap().password_hash;
    assert!(
        password::verify("a new password", &hash),
        "CRLF is stripped"
    );
    assert!(!password::verify(PASSWORD, &hash));
}

#[test]
fn grants_and_revocations() {
    let (_dir, data) = data_dir();
    ok(&data, &["user", "add", "bob"], &format!("{PASSWORD}\n"));
    ok(&data, &["user", "grant", "bob", "execute"], "");
    ok(&data, &["user", "grant", "bob", "service:scorer"], "");
    let bob = store(&data).user("bob").unwrap().unwrap();
    assert_eq!(bob.role, Role::User, "the default role");
    assert_eq!(bob.grants, ["execute", "service:scorer"]);
    let list = ok(&data, &["user", "list"], "");
    assert!(list.contains("execute,service:scorer"), "{list}");

    ok(&data, &["user", "revoke", "bob", "execute"], "");
    assert_eq!(
        store(&data).user("bob").unwrap().unwrap().grants,
        ["service:scorer"]
    );
    fails(
        &data,
        &["user", "grant", "bob", "root"],
        "",
        "unknown grant",
    );
}

#[test]
fn refusals_are_clear_and_exit_non_zero() {
    let (_dir, data) = data_dir();
    let pw_line = format!("{PASSWORD}\n");
    let add = |name, role| ["user", "add", name, "--role", role];
    fails(
        &data,
        &add("carol", "root"),
        &pw_line,
        "unknown role `root`",
    );
    fails(&data, &add("Carol", "user"), &pw_line, "invalid user name");
    fails(&data, &add("../etc", "user"), &pw_line, "invalid user name");
    fails(&data, &add("carol", "user"), "short\n", "weak password");
    fails(&data, &add("carol", "user"), "", "no password on stdin");
    assert!(
        store(&data).users().unwrap().is_empty(),
        "nothing was created"
    );

    ok(&data, &add("carol", "user"), &pw_line);
    fails(&data, &add("carol", "admin"), &pw_line, "already exists");
    fails(
        &data,
        &["user", "passwd", "carol"],
        "short\n",
        "weak password",
    );
    for args in [
        &["user", "passwd", "nobody"][..],
        &["user", "remove", "nobody"],
        &["user", "grant", "nobody", "execute"],
        &["key", "create", "nobody"],
    ] {
        fails(&data, args, &pw_line, "no user named \"nobody\"");
    }
    fails(
        &data,
        &["key", "create", "carol", "--expires-days", "0"],
        "",
        "0",
    );
}

#[test]
fn api_keys_are_printed_once_and_go_with_their_user() {
    let (_dir, data) = data_dir();
    ok(&data, &["user", "add", "alice"], &format!("{PASSWORD}\n"));
    ok(&data, &["user", "add", "dave"], &format!("{PASSWORD}\n"));
    let args = [
        "key",
        "create",
        "alice",
        "--label",
        "nightly",
        "--expires-days",
        "30",
    ];
    let out = ok(&data, &args, "");
    assert_eq!(out.lines().count(), 1, "only the secret on stdout: {out:?}");
    let secret = out.trim_end();
    assert!(
        token::looks_like_token(secret) && secret.starts_with("rkk_"),
        "{secret}"
    );
    let forever = ok(&data, &["key", "create", "dave"], "");

    let record = store(&data)
        .token(&token::hash(secret))
        .unwrap()
        .expect("stored");
    assert_eq!(
        (record.user.as_str(), record.kind),
        ("alice", TokenKind::ApiKey)
    );
    assert_eq!(record.label.as_deref(), Some("nightly"));
    assert_eq!(record.expires_at, Some(record.created_at + 30 * 86_400));
    assert_not_on_disk(&data, secret);

    let folder = data.join("users/alice/sessions/some-session");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("notes.txt"), "mine").unwrap();
    ok(&data, &["user", "remove", "alice"], "");
    assert!(!data.join("users/alice").exists(), "the folder went too");
    let s = store(&data);
    assert!(s.user("alice").unwrap().is_none());
    assert!(
        s.token(&token::hash(secret)).unwrap().is_none(),
        "the key went too"
    );
    assert!(s.token(&token::hash(forever.trim_end())).unwrap().is_some());
    let list = ok(&data, &["user", "list"], "");
    assert!(!list.contains("alice") && list.contains("dave"), "{list}");
}

#[test]
fn map_os_user_ties_a_uid_to_an_existing_user() {
    let (_dir, data) = data_dir();
    ok(
        &data,
        &["user", "add", "pia", "--role", "user"],
        &format!("{PASSWORD}\n"),
    );
    let out = ok(&data, &["user", "map-os-user", "pia", "4242"], "");
    assert!(out.is_empty(), "confirmations go to stderr: {out:?}");
    assert_eq!(store(&data).os_user(4242).unwrap().as_deref(), Some("pia"));
    fails(
        &data,
        &["user", "map-os-user", "nobody", "4243"],
        "",
        "nobody",
    );
    fails(&data, &["user", "map-os-user", "pia", "-1"], "", "-1");
    assert_eq!(store(&data).os_user(4243).unwrap(), None);
}
