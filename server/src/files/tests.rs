//! Tests of the per-user folders: path rules, symlinks never followed, modes, atomic writes.

use super::*;
use std::os::unix::fs::{symlink, PermissionsExt};

struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    users: UserDirs,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let users = UserDirs::open(&data).unwrap();
    Fixture {
        _tmp: tmp,
        data,
        users,
    }
}

fn session(f: &Fixture, user: &str) -> ConfinedDir {
    f.users
        .user(user)
        .unwrap()
        .create_session(&uuid::Uuid::new_v4())
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn raw_names(p: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn reason(e: FileError) -> &'static str {
    match e {
        FileError::BadPath { reason, .. } => reason,
        other => panic!("expected BadPath, got {other:?}"),
    }
}

/// A file in bob's jobs folder, for alice's links to aim at.
fn bobs_secret(f: &Fixture) -> PathBuf {
    f.users
        .user("bob")
        .unwrap()
        .jobs()
        .unwrap()
        .write("secret.txt", b"bob only")
        .unwrap();
    f.data.join("users/bob/jobs/secret.txt")
}

#[test]
fn write_then_read_and_overwrite() {
    let f = fixture();
    let s = session(&f, "alice");
    s.write("a.txt", b"hello").unwrap();
    assert_eq!(s.read("a.txt").unwrap(), b"hello");
    s.write("a.txt", b"bye").unwrap();
    assert_eq!(s.read("a.txt").unwrap(), b"bye");
    assert_eq!(
        raw_names(&s.path()),
        ["a.txt"],
        "no temporary file is left behind"
    );
    assert_eq!(mode(&s.path().join("a.txt")), 0o600);
}

#[test]
fn write_creates_nested_folders_0700() {
    let f = fixture();
    let s = session(&f, "alice");
    s.write("a/b/c.csv", b"x,y\n").unwrap();
    assert_eq!(s.read("a/b/c.csv").unwrap(), b"x,y\n");
    assert_eq!(mode(&s.path().join("a")), 0o700);
    assert_eq!(mode(&s.path().join("a/b")), 0o700);
}

#[test]
fn list_is_recursive_and_sorted() {
    let f = fixture();
    let s = session(&f, "alice");
    s.write("z.txt", b"12345").unwrap();
    s.write("a/b/c.txt", b"1").unwrap();
    s.write("a/a.txt", b"").unwrap();
    let list = s.list().unwrap();
    let paths: Vec<&str> = list.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["a", "a/a.txt", "a/b", "a/b/c.txt", "z.txt"]);
    let z = list.iter().find(|e| e.path == "z.txt").unwrap();
    assert_eq!((z.size, z.is_dir), (5, false));
    assert!(z.modified > 1_600_000_000, "{}", z.modified);
    assert!(list.iter().find(|e| e.path == "a/b").unwrap().is_dir);
    assert_eq!(s.total_size().unwrap(), 6);
}

#[test]
fn list_leaves_out_links_special_and_unaddressable_names() {
    let f = fixture();
    let s = session(&f, "alice");
    s.write("ok.txt", b"1").unwrap();
    std::fs::write(s.path().join("back\\slash"), b"22").unwrap();
    symlink("ok.txt", s.path().join("link")).unwrap();
    std::os::unix::net::UnixListener::bind(s.path().join("sock")).unwrap();
    let paths: Vec<String> = s.list().unwrap().into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["ok.txt"]);
    assert_eq!(
        s.total_size().unwrap(),
        3,
        "the quota counts unlisted files"
    );
}

#[test]
fn list_stops_at_the_entry_cap() {
    let f = fixture();
    let s = session(&f, "alice");
    for i in 0..5 {
        s.write(&format!("f{i}"), b"").unwrap();
    }
    assert_eq!(s.list_capped(5).unwrap().len(), 5);
    assert_eq!(s.list_capped(4), Err(FileError::TooMany));
}

#[test]
fn walk_refuses_trees_deeper_than_the_limit() {
    let f = fixture();
    let s = session(&f, "alice");
    let deep = vec!["d"; MAX_WALK_DEPTH + 1].join("/");
    std::fs::create_dir_all(s.path().join(deep)).unwrap();
    assert_eq!(s.list(), Err(FileError::TooMany));
}

#[test]
fn remove_files_and_empty_folders_only() {
    let f = fixture();
    let s = session(&f, "alice");
    s.write("d/x.txt", b"1").unwrap();
    assert_eq!(
        reason(s.remove("d").unwrap_err()),
        "the folder is not empty"
    );
    s.remove("d/x.txt").unwrap();
    assert_eq!(
        s.read("d/x.txt"),
        Err(FileError::NotFound("d/x.txt".into()))
    );
    s.remove("d").unwrap();
    assert!(s.list().unwrap().is_empty());
    assert_eq!(s.remove("d"), Err(FileError::NotFound("d".into())));
}

#[test]
fn read_refuses_missing_and_folders() {
    let f = fixture();
    let s = session(&f, "alice");
    s.write("d/x.txt", b"1").unwrap();
    assert_eq!(s.read("nope"), Err(FileError::NotFound("nope".into())));
    assert_eq!(s.read("nope/x"), Err(FileError::NotFound("nope/x".into())));
    assert_eq!(reason(s.read("d").unwrap_err()), "the path is a folder");
    assert_eq!(
        reason(s.read("d/x.txt/y").unwrap_err()),
        "a parent of the path is not a folder"
    );
    assert_eq!(
        reason(s.write("d", b"1").unwrap_err()),
        "the path is a folder"
    );
}

/// Each rule of [`check_relative`], with a path that breaks only that rule.
fn rejected() -> Vec<(String, &'static str)> {
    let long_part = "x".repeat(MAX_COMPONENT_BYTES + 1);
    let long_path = vec!["y".repeat(200); 21].join("/");
    let many = vec!["p"; MAX_COMPONENTS + 1].join("/");
    [
        ("", "the path is empty"),
        ("/etc/passwd", "the path is absolute"),
        ("a/../b", "the path has a `..` component"),
        ("..", "the path has a `..` component"),
        ("./a", "the path has a `.` component"),
        (
            "a//b",
            "the path has an empty component (`//` or a trailing `/`)",
        ),
        (
            "a/",
            "the path has an empty component (`//` or a trailing `/`)",
        ),
        ("a\\b", "the path contains a backslash"),
        ("a\0b", "the path contains a NUL byte"),
        ("a\nb", "the path contains a control character"),
        ("a\u{7f}b", "the path contains a control character"),
        (&long_part, "a component is longer than 255 bytes"),
        (&long_path, "the path is longer than 4096 bytes"),
        (&many, "the path has more than 32 components"),
        (
            ".rookery-tmp-x",
            "a component uses the reserved `.rookery-tmp-` prefix",
        ),
    ]
    .into_iter()
    .map(|(p, r)| (p.to_owned(), r))
    .collect()
}

#[test]
fn check_relative_names_each_broken_rule() {
    for (path, want) in rejected() {
        let got = check_relative(&path).unwrap_err();
        assert_eq!(
            got,
            FileError::BadPath {
                path: path.clone(),
                reason: want
            },
            "{path:?}"
        );
    }
}

#[test]
fn check_relative_accepts_plain_paths() {
    let longest = vec!["z".repeat(MAX_COMPONENT_BYTES); 16].join("/");
    let deepest = vec!["q"; MAX_COMPONENTS].join("/");
    for ok in [
        "a",
        "a/b.csv",
        ".hidden",
        "..a",
        "a..b",
        "é/日本.txt",
        "a b",
        &longest,
        &deepest,
    ] {
        check_relative(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
    }
}

#[test]
fn rejected_writes_create_nothing() {
    let f = fixture();
    let s = session(&f, "alice");
    let outside = f.data.join("escape.txt");
    let absolute = outside.to_str().unwrap().to_owned();
    let cases = rejected()
        .into_iter()
        .map(|(p, _)| p)
        .chain([absolute, "../escape.txt".into()]);
    for path in cases {
        assert!(
            matches!(s.write(&path, b"x"), Err(FileError::BadPath { .. })),
            "{path:?}"
        );
    }
    assert!(raw_names(&s.path()).is_empty());
    assert!(!outside.exists());
}

#[test]
fn a_link_to_another_users_file_is_neither_read_nor_written() {
    let f = fixture();
    let s = session(&f, "alice");
    let target = bobs_secret(&f);
    symlink(&target, s.path().join("abs")).unwrap();
    symlink("../../../bob/jobs/secret.txt", s.path().join("rel")).unwrap();
    for link in ["abs", "rel"] {
        assert_eq!(
            reason(s.read(link).unwrap_err()),
            "the path is a symbolic link"
        );
        assert_eq!(
            reason(s.write(link, b"pwned").unwrap_err()),
            "the path is a symbolic link"
        );
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"bob only");
    s.remove("abs").unwrap();
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"bob only",
        "removing a link spares its target"
    );
}

#[test]
fn a_link_inside_the_session_is_refused_too() {
    let f = fixture();
    let s = session(&f, "alice");
    s.write("real.txt", b"mine").unwrap();
    symlink("real.txt", s.path().join("alias")).unwrap();
    assert_eq!(
        reason(s.read("alias").unwrap_err()),
        "the path is a symbolic link"
    );
}

#[test]
fn a_linked_folder_is_not_traversed() {
    let f = fixture();
    let s = session(&f, "alice");
    let target = bobs_secret(&f);
    let bob_jobs = target.parent().unwrap().to_owned();
    symlink(&bob_jobs, s.path().join("d")).unwrap();
    std::fs::create_dir(s.path().join("inner")).unwrap();
    symlink("inner", s.path().join("e")).unwrap();
    let through = "the path goes through a symbolic link";
    assert_eq!(reason(s.read("d/secret.txt").unwrap_err()), through);
    assert_eq!(reason(s.write("d/new.txt", b"x").unwrap_err()), through);
    assert_eq!(reason(s.write("d/sub/new.txt", b"x").unwrap_err()), through);
    assert_eq!(reason(s.remove("d/secret.txt").unwrap_err()), through);
    assert_eq!(reason(s.write("e/x.txt", b"x").unwrap_err()), through);
    assert_eq!(raw_names(&bob_jobs), ["secret.txt"]);
    assert_eq!(std::fs::read(&target).unwrap(), b"bob only");
    assert!(raw_names(&s.path().join("inner")).is_empty());
    let paths: Vec<String> = s.list().unwrap().into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["inner"]);
}

#[test]
fn folders_are_private() {
    let f = fixture();
    let alice = f.users.user("alice").unwrap();
    let s = alice.create_session(&uuid::Uuid::new_v4()).unwrap();
    let jobs = alice.jobs().unwrap();
    assert_eq!(
        alice.path(),
        f.data.canonicalize().unwrap().join("users/alice")
    );
    assert!(s.path().starts_with(alice.path().join("sessions")));
    for p in [
        f.data.join("users"),
        alice.path(),
        alice.path().join("sessions"),
        s.path(),
        jobs.path(),
    ] {
        assert_eq!(mode(&p), 0o700, "{}", p.display());
    }
}

#[test]
fn two_users_are_apart_even_with_the_same_session_id() {
    let f = fixture();
    let id = uuid::Uuid::new_v4();
    let alice = f.users.user("alice").unwrap();
    let bob = f.users.user("bob").unwrap();
    assert_ne!(alice.path(), bob.path());
    alice
        .create_session(&id)
        .unwrap()
        .write("x.txt", b"a")
        .unwrap();
    let bobs = bob.create_session(&id).unwrap();
    assert_eq!(bobs.read("x.txt"), Err(FileError::NotFound("x.txt".into())));
    assert_ne!(bobs.path(), alice.session(&id).unwrap().path());
}

#[test]
fn user_names_are_one_plain_component() {
    let f = fixture();
    for name in ["", "a/b", "..", ".", "/abs", "a\\b"] {
        assert!(
            matches!(f.users.user(name), Err(FileError::BadPath { .. })),
            "{name:?}"
        );
    }
    assert_eq!(raw_names(&f.data.join("users")), Vec::<String>::new());
}

#[test]
fn session_lifecycle() {
    let f = fixture();
    let alice = f.users.user("alice").unwrap();
    let id = uuid::Uuid::new_v4();
    let missing = FileError::NotFound(format!("sessions/{id}"));
    assert_eq!(alice.session(&id).unwrap_err(), missing);
    alice
        .create_session(&id)
        .unwrap()
        .write("d/x.txt", b"1")
        .unwrap();
    assert!(matches!(alice.create_session(&id), Err(FileError::Io(_))));
    assert_eq!(alice.session(&id).unwrap().read("d/x.txt").unwrap(), b"1");
    alice.remove_session(&id).unwrap();
    assert_eq!(alice.session(&id).unwrap_err(), missing);
    assert_eq!(alice.remove_session(&id).unwrap_err(), missing);
}

#[test]
fn removing_a_session_spares_what_its_links_point_to() {
    let f = fixture();
    let alice = f.users.user("alice").unwrap();
    let id = uuid::Uuid::new_v4();
    let target = bobs_secret(&f);
    let s = alice.create_session(&id).unwrap();
    symlink(target.parent().unwrap(), s.path().join("d")).unwrap();
    alice.remove_session(&id).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"bob only");
}

#[test]
fn reopening_keeps_what_was_written() {
    let f = fixture();
    f.users
        .user("alice")
        .unwrap()
        .jobs()
        .unwrap()
        .write("j.txt", b"1")
        .unwrap();
    let again = UserDirs::open(&f.data).unwrap();
    assert_eq!(
        again
            .user("alice")
            .unwrap()
            .jobs()
            .unwrap()
            .read("j.txt")
            .unwrap(),
        b"1"
    );
}
