//! `rookery bench qap`, run as a user would: against a real Rserve the test starts
//! (TCP, Unix socket, and with plaintext login required), and against peers that are
//! not QAP1 servers or hang up, which must give clear errors and non-zero exits.
//!
//! Each Rserve is the installed package's daemon on a free loopback port, killed by
//! its pidfile when the test ends, pass or fail. No assertion depends on speed.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use crate::rserve::{free_port, Rserve};

/// Small counts so a full run takes a few seconds.
const QUICK: &[&str] = &[
    "--calls",
    "50",
    "--warmup-calls",
    "5",
    "--connects",
    "5",
    "--repeats",
    "2",
    "--duration",
    "150ms",
];

const JSON_KEYS: [&str; 9] = [
    "eval_1p1_p50_us",
    "eval_1p1_p99_us",
    "connect_eval_close_p50_ms",
    "connect_eval_close_p99_ms",
    "connect_eval_close_paced_p50_ms",
    "connect_eval_close_paced_p99_ms",
    "transfer_1e6_out_ms",
    "transfer_1e6_in_ms",
    "evals_per_s",
];

/// Runs `rookery bench qap ARGS` with `env` set.
fn bench(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(["bench", "qap"])
        .args(args)
        .env_remove("ROOKERY_QAP_PASSWORD")
        .envs(env.iter().copied())
        .output()
        .expect("rookery runs")
}

/// Runs a quick `--json` benchmark that must succeed, and returns its report.
fn quick_json(target: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let args = [target, QUICK, &["--json"]].concat();
    let out = bench(&args, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

/// Exactly the documented keys, every figure positive, four concurrency levels.
fn assert_figures(report: &serde_json::Value) {
    let obj = report.as_object().expect("a JSON object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = JSON_KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "{report}");
    for key in &JSON_KEYS[..6] {
        let x = obj[*key].as_f64().unwrap_or(0.0);
        assert!(x > 0.0 && x.is_finite(), "{key} = {}", obj[*key]);
    }
    let rates = obj["evals_per_s"].as_object().expect("evals_per_s object");
    let mut levels: Vec<&str> = rates.keys().map(String::as_str).collect();
    levels.sort_unstable();
    assert_eq!(levels, ["1", "16", "2", "4"], "{report}");
    for (n, rate) in rates {
        assert!(
            rate.as_f64().unwrap_or(0.0) > 0.0,
            "evals_per_s[{n}] = {rate}"
        );
    }
}

/// Fails with a non-zero exit and returns stderr.
fn expect_failure(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = bench(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{args:?} should fail; stderr: {stderr}"
    );
    assert!(out.stdout.is_empty(), "no report on failure");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn every_figure_against_rserve() {
    let rs = Rserve::start("", false);
    let target = rs.target();
    assert_figures(&quick_json(&["--target", &target], &[]));
    let out = bench(&[&["--target", &target], QUICK].concat(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for name in [
        "eval_1p1",
        "connect_eval_close",
        "transfer_1e6_out",
        "transfer_1e6_in",
    ] {
        assert!(table.contains(name), "{name} missing from\n{table}");
    }
    assert!(
        table.contains("evals_per_s") && table.contains("16: "),
        "{table}"
    );
}

#[test]
fn unix_socket_target() {
    let rs = Rserve::start("", true);
    let socket = rs.socket();
    assert_figures(&quick_json(
        &["--unix", socket.to_str().expect("utf-8 path")],
        &[],
    ));
}

#[test]
fn plaintext_login_when_the_server_asks() {
    let conf = "auth required\nplaintext enable\npwdfile {dir}/users\n";
    let rs = Rserve::start(conf, false);
    std::fs::write(rs.dir.join("users"), "alice secret\n").expect("pwdfile");
    let target = rs.target();
    let stderr = expect_failure(&["--target", &target, "--json"], &[]);
    assert!(stderr.contains("requires authentication"), "{stderr}");
    assert!(stderr.contains("--user"), "{stderr}");
    let login = ["--target", &target, "--user", "alice"];
    let stderr = expect_failure(&login, &[("ROOKERY_QAP_PASSWORD", "wrong")]);
    assert!(stderr.contains("CMD_login as \"alice\""), "{stderr}");
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert_figures(&quick_json(&login, &[("ROOKERY_QAP_PASSWORD", "secret")]));
}

#[test]
fn nothing_listening_is_a_clear_error() {
    let target = format!("127.0.0.1:{}", free_port());
    let stderr = expect_failure(&["--target", &target, "--json"], &[]);
    assert!(
        stderr.contains(&format!("cannot connect to {target}")),
        "{stderr}"
    );
}

/// Accepts one connection, writes `greeting`, then reads up to one request and closes.
fn one_shot_peer(greeting: &'static [u8]) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.write_all(greeting).expect("greeting");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = s.read(&mut [0; 64]);
    });
    (addr, peer)
}

#[test]
fn an_http_server_is_not_a_qap1_server() {
    let (target, peer) = one_shot_peer(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let stderr = expect_failure(&["--target", &target], &[]);
    assert!(stderr.contains("not a QAP1 server"), "{stderr}");
    assert!(stderr.contains("HTTP/1.1 400"), "{stderr}");
    peer.join().expect("peer thread");
}

#[test]
fn a_server_that_hangs_up_mid_benchmark_is_an_error() {
    let (target, peer) = one_shot_peer(b"Rsrv0103QAP1\r\n\r\n--------------\r\n");
    let stderr = expect_failure(&["--target", &target], &[]);
    assert!(stderr.contains("eval_1p1"), "{stderr}");
    assert!(stderr.contains("closed the connection"), "{stderr}");
    peer.join().expect("peer thread");
}

/// `--versus`: two servers measured round by round and printed side by side with
/// the ratio. Two real Rserves stand in for "Rookery and Rserve" here (the
/// figures are not checked, only that every one is there, from both, per round).
#[test]
fn versus_prints_two_servers_side_by_side() {
    let (a, b) = (Rserve::start("", false), Rserve::start("", false));
    let (ta, tb) = (a.target(), b.target());
    let args = [&["--target", &ta, "--versus", &tb, "--rounds", "2"], QUICK].concat();
    let out = bench(&args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&ta) && table.contains(&tb), "{table}");
    assert!(table.contains("medians of 2 interleaved rounds"), "{table}");
    for figure in [
        "1+1 p50",
        "the same, paced, p50",
        "1e6 doubles in",
        "evals/s, 16 connections",
    ] {
        let line = table
            .lines()
            .find(|l| l.starts_with(figure))
            .unwrap_or_else(|| panic!("{figure} missing from\n{table}"));
        assert!(line.contains('×'), "no ratio in {line}");
    }
    let out = bench(&[&args[..], &["--json"]].concat(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 12, "{v}");
    for row in rows {
        for side in ["target", "versus", "ratio"] {
            let x = row[side].as_f64().unwrap_or(0.0);
            assert!(x > 0.0 && x.is_finite(), "{row}");
        }
    }
    assert_eq!(v["target_runs"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["versus_runs"].as_array().map(Vec::len), Some(2));
    // --versus-user without --versus is refused by the argument parser.
    let stderr = expect_failure(&["--target", &ta, "--versus-user", "x"], &[]);
    assert!(stderr.contains("--versus"), "{stderr}");
}
