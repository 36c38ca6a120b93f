//! The `rookery` binary, run as a user would.

use std::process::{Command, Output};

fn rookery(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(args)
        .env_remove("R_HOME")
        .output()
        .expect("rookery runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn eval_prints_like_r() {
    let o = rookery(&["eval", "1 + 1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "[1] 2\n");
    let o = rookery(&["eval", "data.frame(x = 1:2, y = c('a', NA))"]);
    assert_eq!(stdout(&o), "  x    y\n1 1    a\n2 2 <NA>\n");
    let o = rookery(&["eval", "x <- 1"]);
    assert_eq!(stdout(&o), "", "an invisible value prints nothing");
}

#[test]
fn eval_json() {
    let o = rookery(&["eval", "--json", "data.frame(x = 1:2, y = c('a', NA))"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "[{\"x\":1,\"y\":\"a\"},{\"x\":2}]\n");
    let o = rookery(&["eval", "--json", "--auto-unbox", "list(a = 1, b = 'x')"]);
    assert_eq!(stdout(&o), "{\"a\":1,\"b\":\"x\"}\n");
    let o = rookery(&["eval", "--json", "c(1.5, NA)"]);
    assert_eq!(stdout(&o), "[1.5,null]\n");
}

#[test]
fn eval_errors_exit_non_zero_with_r_message() {
    let o = rookery(&["eval", "stop('boom')"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Error: boom"), "{}", stderr(&o));
    let o = rookery(&["eval", "1 +)"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("parse error at line 1"),
        "{}",
        stderr(&o)
    );
    let o = rookery(&["eval", "q()"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot end an embedded R"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn eval_shows_output_and_warnings() {
    let o = rookery(&["eval", "cat('hello\\n'); warning('careful'); 3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello\n[1] 3\n");
    assert!(stderr(&o).contains("careful"), "{}", stderr(&o));
}

#[test]
fn version() {
    let o = rookery(&["--version"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("rookery "), "{}", stdout(&o));
}

#[test]
fn eval_leaves_no_temp_dir_behind() {
    let o = rookery(&[
        "eval",
        "--json",
        "d <- tempdir(); writeLines('x', file.path(d, 'f')); d",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir: Vec<String> = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(dir[0].contains("Rtmp"), "{dir:?}");
    assert!(
        !std::path::Path::new(&dir[0]).exists(),
        "{} was left behind",
        dir[0]
    );
}
