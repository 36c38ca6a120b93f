//! `rookery bench --quick`, end to end against the real peers (Rserve, plumber, R's
//! mclapply): the run finishes, stops what it started, and writes a well-formed
//! bench.json, bench.md, ratios.png and ratios.svg with every pair. No timing is
//! asserted: the figures of a shared 2-core machine are noise at this length.

use std::path::Path;
use std::process::{Command, Output};

const PAIRS: [&str; 13] = [
    "eval_1p1",
    "evals_1conn",
    "evals_4conn",
    "connect",
    "connect_paced",
    "transfer_out",
    "transfer_in",
    "glm_1row_1conn",
    "glm_1row_4conn",
    "rf_100rows_1conn",
    "rf_100rows_4conn",
    "batch_glm",
    "batch_rf",
];

fn bench(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rookery"))
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(out)
        .env_remove("R_HOME")
        .output()
        .expect("rookery bench runs")
}

fn json(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("bench.json")).expect("bench.json");
    serde_json::from_str(&text).expect("bench.json is JSON")
}

fn check_figures(file: &Path, magic: &[u8]) {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(
        bytes.starts_with(magic),
        "{} is not what it says",
        file.display()
    );
}

#[test]
fn quick_suite_compares_every_pair_and_writes_all_outputs() {
    let out = tempfile::tempdir().unwrap();
    let o = bench(&["--quick", "--rounds", "1"], out.path());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let report = json(out.path());
    let pairs = report["pairs"].as_array().expect("pairs");
    let keys: Vec<&str> = pairs
        .iter()
        .filter_map(|p| p["workload"].as_str())
        .collect();
    assert_eq!(keys, PAIRS);
    for p in pairs {
        // All three peers are installed here: every pair has both sides and a ratio.
        let speedup = p["speedup"].as_f64();
        assert!(speedup.is_some_and(|x| x > 0.0), "{p}");
        assert_eq!(p["peer_runs"].as_array().map(Vec::len), Some(1), "{p}");
        assert_eq!(p["rookery_runs"].as_array().map(Vec::len), Some(1), "{p}");
    }
    assert_eq!(report["missing"], serde_json::json!([]));
    let md = std::fs::read_to_string(out.path().join("bench.md")).expect("bench.md");
    assert!(md.contains("| workload | unit | peer |"), "{md}");
    for label in ["Rserve", "plumber", "mclapply", "batch randomForest"] {
        assert!(md.contains(label), "{label} missing from\n{md}");
    }
    assert_eq!(md.matches("×**").count(), PAIRS.len(), "{md}");
    check_figures(&out.path().join("ratios.png"), b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(out.path().join("ratios.svg")).expect("ratios.svg");
    assert!(svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains("batch glm (vs mclapply)"),
        "the SVG has the bar labels"
    );
    assert!(
        stderr.contains("bench: round 1/1"),
        "progress lines: {stderr}"
    );
}

#[test]
fn only_selects_workloads_and_rejects_unknown_ones() {
    let out = tempfile::tempdir().unwrap();
    let o = bench(
        &["compare", "--quick", "--rounds", "2", "--only", "batch_glm"],
        out.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = json(out.path());
    let pairs = report["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0]["peer_runs"].as_array().map(Vec::len), Some(2));
    assert!(pairs[0]["speedup"].as_f64().is_some());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| batch glm | s | mclapply |"), "{stdout}");

    let o = bench(&["--only", "nonsense"], out.path());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown workload \"nonsense\""));
}

/// Processes whose command line names `needle` (the suite's scratch folder is in the
/// command lines of Rserve, plumber, the mclapply R and `rookery serve`).
fn processes_naming(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

#[test]
fn ctrl_c_stops_every_peer_and_removes_the_scratch_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(["bench", "--quick", "--rounds", "50"])
        .args(["--only", "eval_1p1,glm_1row_1conn,batch_glm", "--out"])
        .arg(tmp.path().join("out"))
        .env("TMPDIR", tmp.path())
        .env_remove("R_HOME")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("bench: round 1/50")
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(start.elapsed().as_secs() < 300, "no round started");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let needle = format!("rookery-bench-{}-", child.id());
    assert!(
        !processes_naming(&needle).is_empty(),
        "the peers run from the scratch folder"
    );
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    // SIGKILL is delivered, not awaited: a peer may take a moment to go (R tearing
    // down its memory on a loaded machine). Wait up to a minute for what must happen.
    let start = std::time::Instant::now();
    let mut left = processes_naming(&needle);
    while !left.is_empty() && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = processes_naming(&needle);
    }
    assert!(left.is_empty(), "still running: {left:?}");
    let scratch: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("rookery-bench-")
        })
        .collect();
    assert!(scratch.is_empty(), "scratch folder left: {scratch:?}");
}

/// `rookery bench soak`, short: a real `rookery serve` under the mixed load with a
/// worker SIGKILLed every second. Every answer is right, none is lost, nothing of
/// the server is left behind, and its RSS after the warm-up (30,000 requests: its
/// threads' malloc arenas fill) grows by less than 1 MB per 100,000 requests (a
/// bound on memory per request, not on time; the creep once measured was 1.3 MB).
#[test]
fn a_short_soak_answers_everything_and_keeps_the_servers_memory_flat() {
    let out = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args([
            "bench",
            "soak",
            "--requests",
            "60000",
            "--minutes",
            "10",
            "--clients",
            "4",
            "--kill-every-secs",
            "1",
            "--sample-secs",
            "1",
            "--warmup-requests",
            "30000",
            "--json",
        ])
        .output()
        .expect("rookery bench soak runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a report")).expect("JSON");
    assert!(report["requests"].as_u64().unwrap() >= 60_000, "{report}");
    for zero in ["wrong", "lost", "leaked_processes", "leaked_folders"] {
        assert_eq!(report[zero], 0, "{zero}: {report}");
    }
    assert!(report["workers_killed"].as_u64().unwrap() > 0, "{report}");
    let growth = report["growth_kb_per_100k_requests"]
        .as_f64()
        .expect("enough samples after the warm-up");
    assert!(
        growth < 1024.0,
        "RSS grows {growth} kB per 100k requests: {report}"
    );
}
