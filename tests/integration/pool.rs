//! The pre-forked pool against real R workers: calls, sessions, deadlines, crashes,
//! recycling, state isolation, back-pressure, shutdown, async use and batch jobs.
//! Pools whose workers a test breaks on purpose are private to that test.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rookery_engine::{BatchOptions, CallOptions, CancelHandle, Error, Pool, PoolBuilder, Value};

/// A pool shared by the tests that leave its workers healthy.
fn shared() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        builder()
            .workers(2)
            .init("score <- function(d) d$x * 2")
            .build()
            .expect("pool starts")
    })
}

fn builder() -> PoolBuilder {
    Pool::builder().program(env!("CARGO_BIN_EXE_rookery"))
}

fn one_worker() -> PoolBuilder {
    builder().workers(1).spares(0)
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn pid_of(pool: &Pool) -> i32 {
    pool.eval("Sys.getpid()").unwrap().value.as_f64().unwrap() as i32
}

#[test]
fn eval_returns_value_output_and_visibility() {
    let ev = shared()
        .eval("cat('hi\\n'); message('note'); 1 + 1")
        .unwrap();
    assert_eq!(ev.value, Value::scalar_double(2.0));
    assert_eq!(ev.output.stdout, "hi\n");
    assert_eq!(ev.output.stderr, "note\n");
    assert!(ev.visible);
    assert!(!shared().eval("x <- 1").unwrap().visible);
}

#[test]
fn output_of_child_processes_is_captured() {
    let ev = shared().eval("system('echo from-shell'); 1").unwrap();
    assert_eq!(ev.output.stdout, "from-shell\n");
}

#[test]
fn r_errors_and_parse_errors_come_back_and_the_worker_serves_on() {
    match shared().eval("stop('bad input')") {
        Err(Error::R(e)) => assert!(e.to_string().contains("bad input"), "{e}"),
        other => panic!("{other:?}"),
    }
    match shared().eval("1 +") {
        Err(Error::R(rookery_ffi::Error::Parse { .. })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        shared().eval("2 * 3").unwrap().value,
        Value::scalar_double(6.0)
    );
}

#[test]
fn call_passes_values_both_ways() {
    let frame = Value::data_frame(vec![("x".into(), Value::doubles(vec![1.0, 2.5]))]).unwrap();
    let got = shared().call("score", &[("", &frame)]).unwrap();
    assert_eq!(got, Value::doubles(vec![2.0, 5.0]));
    let big = Value::doubles((0..1_000_000).map(f64::from).collect::<Vec<_>>());
    let back = shared().call("rev", &[("", &big)]).unwrap();
    assert_eq!(back.as_doubles().unwrap()[0], 999_999.0);
    assert_eq!(back.len(), 1_000_000);
}

#[test]
fn oversized_payloads_are_clear_errors_both_ways() {
    let pool = one_worker().max_payload(1 << 20).build().unwrap();
    let big = Value::doubles(vec![0.5; 300_000]);
    match pool.call("length", &[("", &big)]) {
        Err(Error::R(rookery_ffi::Error::InvalidValue(m))) => {
            assert!(m.contains("too large"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    match pool.eval("numeric(3e5)") {
        Err(Error::R(rookery_ffi::Error::InvalidValue(m))) => {
            assert!(m.contains("too large"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        pool.eval("length(numeric(1e4))").unwrap().value,
        Value::scalar_int(10_000)
    );
}

#[test]
fn sessions_keep_state_and_stateless_calls_do_not() {
    let mut s = shared().session().unwrap();
    s.eval("counter <- 41").unwrap();
    s.assign("extra", &Value::scalar_int(1)).unwrap();
    let ev = s.eval("counter + extra").unwrap();
    assert_eq!(ev.value, Value::scalar_double(42.0));
    assert_eq!(s.get("counter").unwrap(), Value::scalar_double(41.0));
    assert!(matches!(s.get("nope"), Err(Error::R(_))));
    drop(s);
    assert_eq!(
        shared().eval("exists('counter')").unwrap().value,
        Value::scalar_bool(false)
    );
}

#[test]
fn no_state_leaks_to_the_next_caller_of_a_recycled_worker() {
    let pool = one_worker().build().unwrap();
    let first = pid_of(&pool);
    pool.eval(
        "assign('leak', 1, envir = globalenv()); options(rookery.leak = TRUE); \
         library(stats4); Sys.setenv(ROOKERY_LEAK = '1'); \
         writeLines('x', file.path(tempdir(), 'left-behind'))",
    )
    .unwrap();
    let probe = "c(exists('leak'), !is.null(getOption('rookery.leak')), \
                 'package:stats4' %in% search(), isNamespaceLoaded('stats4'), \
                 nzchar(Sys.getenv('ROOKERY_LEAK')), \
                 file.exists(file.path(tempdir(), 'left-behind')))";
    let seen = pool.eval(probe).unwrap().value;
    assert_eq!(seen, Value::logicals([false; 6]), "state leaked: {seen:?}");
    assert_ne!(pid_of(&pool), first, "the dirty worker was replaced");
    // A clean stateless call keeps its worker, and plain assignments do not count.
    let clean = pid_of(&pool);
    pool.eval("y <- runif(3); sum(y)").unwrap();
    assert_eq!(pid_of(&pool), clean);
    // Options set and put back (`on.exit(options(op))`, as predict methods do) are
    // not a change; options left changed are.
    pool.eval(
        "f <- function() { op <- options(digits = 3, warn = 1); on.exit(options(op)); 1 }; f()",
    )
    .unwrap();
    assert_eq!(pid_of(&pool), clean);
    pool.eval("options(digits = 4)").unwrap();
    assert_ne!(pid_of(&pool), clean);
    assert_eq!(
        pool.eval("getOption('digits')").unwrap().value,
        Value::integers(vec![7])
    );
    // A session's state is gone for the next session on the same worker.
    let mut s = pool.session().unwrap();
    s.eval("secret <- 'abc'; options(rookery.session = 1)")
        .unwrap();
    drop(s);
    let mut s = pool.session().unwrap();
    let ev = s.eval("c(exists('secret'), !is.null(getOption('rookery.session')))");
    assert_eq!(ev.unwrap().value, Value::logicals([false, false]));
}

#[test]
fn random_numbers_restart_from_the_zygote_seed() {
    let pool = one_worker().init("set.seed(1)").build().unwrap();
    let a = pool.eval("runif(1)").unwrap().value;
    let b = pool.eval("runif(1)").unwrap().value;
    assert_eq!(a, b, "a reused worker draws what a fresh fork would");
}

#[test]
fn a_call_past_its_deadline_times_out_and_the_worker_is_replaced() {
    let pool = one_worker()
        .call_timeout(Some(Duration::from_millis(300)))
        .grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let before = pid_of(&pool);
    let started = Instant::now();
    match pool.eval("Sys.sleep(30)") {
        Err(Error::Timeout { after }) => assert_eq!(after, Duration::from_millis(300)),
        other => panic!("{other:?}"),
    }
    // Code that swallows the interrupt is killed after the grace period.
    let stubborn = "repeat tryCatch(Sys.sleep(30), interrupt = function(e) NULL)";
    assert!(matches!(pool.eval(stubborn), Err(Error::Timeout { .. })));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_ne!(pid_of(&pool), before);
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(30)),
        ..CallOptions::default()
    };
    assert!(
        pool.eval_with("Sys.sleep(0.5); 1", &opts).is_ok(),
        "per-call override"
    );
}

#[test]
fn a_dying_worker_reports_how_and_is_replaced() {
    let pool = one_worker().spares(1).build().unwrap();
    match pool.eval("q(status = 3)") {
        Err(Error::WorkerDied { code, signal, .. }) => {
            assert_eq!((code, signal), (Some(3), None))
        }
        other => panic!("{other:?}"),
    }
    match pool.eval("tools::pskill(Sys.getpid(), 11L); Sys.sleep(5)") {
        Err(Error::WorkerDied { signal, .. }) => assert_eq!(signal, Some(11)),
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.eval("1 + 1").unwrap().value, Value::scalar_double(2.0));
}

#[test]
fn a_worker_killed_while_idle_costs_its_next_caller_nothing() {
    let pool = one_worker().build().unwrap();
    let pid = pool.stats().idle[0].0;
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(pool.eval("1 + 1").unwrap().value, Value::scalar_double(2.0));
}

#[test]
fn a_zygote_that_ends_is_replaced_with_its_init_and_the_pool_serves_on() {
    let pool = one_worker()
        .init("score <- function(d) d$x * 2")
        .build()
        .unwrap();
    let first = pool.stats().zygote_pid;
    let zygote = rustix::process::Pid::from_raw(first as i32).unwrap();
    rustix::process::kill_process(zygote, rustix::process::Signal::KILL).unwrap();
    // What the worker forked before does (or does not) survive its zygote; either
    // way, the next worker comes from a new zygote, started as the first was.
    let _ = pool.eval("q(status = 3)");
    let scored = pool.eval("score(data.frame(x = 21))").unwrap().value;
    assert_eq!(scored, Value::scalar_double(42.0));
    let stats = pool.stats();
    assert_eq!(stats.zygote_restarts, 1, "{stats:?}");
    assert_ne!(stats.zygote_pid, first);
    // The new zygote forks on: another worker death is a plain respawn.
    assert!(matches!(
        pool.eval("q(status = 4)"),
        Err(Error::WorkerDied { .. })
    ));
    assert_eq!(pool.eval("1 + 1").unwrap().value, Value::scalar_double(2.0));
    assert_eq!(pool.stats().zygote_restarts, 1);
}

#[test]
fn other_callers_do_not_notice_a_crash() {
    let pool = builder().workers(2).build().unwrap();
    let steady = {
        let pool = pool.clone();
        std::thread::spawn(move || (0..200).all(|i| pool.eval(&format!("{i} + 1")).is_ok()))
    };
    for _ in 0..3 {
        let died = pool.eval("tools::pskill(Sys.getpid(), tools::SIGKILL); Sys.sleep(5)");
        assert!(matches!(died, Err(Error::WorkerDied { .. })));
    }
    assert!(steady.join().unwrap());
}

#[test]
fn workers_are_recycled_after_max_calls() {
    let pool = one_worker().max_calls(3).build().unwrap();
    let pids: Vec<i32> = (0..4).map(|_| pid_of(&pool)).collect();
    assert_eq!(pids[0], pids[2]);
    assert_ne!(pids[2], pids[3]);
}

#[test]
fn workers_are_recycled_past_the_memory_limit() {
    let pool = one_worker().max_private_memory(8 << 20).build().unwrap();
    let first = pid_of(&pool);
    for _ in 0..40 {
        pool.eval("keep <- numeric(4e6); invisible(keep[1] <- 1); 1")
            .unwrap();
    }
    assert_ne!(pid_of(&pool), first);
}

#[test]
fn fresh_sessions_get_their_own_process() {
    let pool = one_worker().build().unwrap();
    let pooled = pid_of(&pool);
    let mut fresh = pool.fresh_session().unwrap();
    assert_ne!(fresh.pid() as i32, pooled);
    fresh.eval("z <- 1").unwrap();
    let fresh_pid = fresh.pid();
    drop(fresh);
    assert!(
        !PathBuf::from(format!("/proc/{fresh_pid}/status")).exists() || {
            std::thread::sleep(Duration::from_millis(300));
            !PathBuf::from(format!("/proc/{fresh_pid}")).exists()
        }
    );
}

#[test]
fn fresh_sessions_take_a_spare_and_the_pool_forks_another() {
    let pool = one_worker().spares(2).build().unwrap();
    let wait_for_spares = |n: usize| {
        for _ in 0..200 {
            if pool.stats().spares == n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("spares never reached {n}: {:?}", pool.stats());
    };
    wait_for_spares(2);
    let respawned = pool.stats().respawned;
    let mut a = pool.fresh_session().unwrap();
    let mut b = pool.fresh_session().unwrap();
    assert_ne!(a.pid(), b.pid());
    a.eval("mine <- 'a'").unwrap();
    assert!(
        b.eval("mine").is_err(),
        "each fresh session is its own process"
    );
    wait_for_spares(2);
    assert!(
        pool.stats().respawned >= respawned + 2,
        "{:?}",
        pool.stats()
    );
}

#[test]
fn a_full_pool_answers_busy() {
    let pool = one_worker()
        .queue_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let held = pool.session().unwrap();
    let started = Instant::now();
    match pool.eval("1") {
        Err(Error::Busy { waited, .. }) => assert!(waited >= Duration::from_millis(100)),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(held);
    assert!(pool.eval("1").is_ok());
    let no_queue = one_worker().max_queue(0).build().unwrap();
    let _held = no_queue.session().unwrap();
    assert!(matches!(no_queue.eval("1"), Err(Error::Busy { .. })));
}

#[test]
fn cancel_stops_a_running_call() {
    let pool = one_worker().build().unwrap();
    let cancel = CancelHandle::new().unwrap();
    let trigger = cancel.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        trigger.cancel();
    });
    let opts = CallOptions {
        cancel: Some(cancel),
        ..CallOptions::default()
    };
    let started = Instant::now();
    assert!(matches!(
        pool.eval_with("Sys.sleep(30)", &opts),
        Err(Error::Cancelled)
    ));
    assert!(started.elapsed() < Duration::from_secs(10));
    t.join().unwrap();
    assert!(pool.eval("1").is_ok());
}

#[test]
fn each_worker_has_its_own_temp_dir_and_only_its_own_fds() {
    let mut a = shared().session().unwrap();
    let mut b = shared().session().unwrap();
    let dir_a = text(&a.eval("tempdir()").unwrap().value);
    let dir_b = text(&b.eval("tempdir()").unwrap().value);
    assert_ne!(dir_a, dir_b);
    assert!(dir_a.contains("/worker-"), "{dir_a}");
    let fds = a
        .eval("sapply(list.files('/proc/self/fd', full.names = TRUE), Sys.readlink)")
        .unwrap()
        .value;
    let targets: Vec<String> = fds
        .as_strings()
        .unwrap()
        .iter()
        .map(|s| s.clone().unwrap_or_default())
        .collect();
    // Its own link's two sockets (doorbell, fd handoff) and nothing of the zygote's:
    // its control socket, other workers' pidfds.
    let sockets = targets.iter().filter(|t| t.starts_with("socket:")).count();
    assert_eq!(sockets, 2, "{targets:?}");
    assert!(!targets.iter().any(|t| t.contains("pidfd")), "{targets:?}");
}

#[test]
fn shutdown_reaps_every_process_and_removes_temp_dirs() {
    let pool = builder().workers(2).build().unwrap();
    let dir = text(&pool.eval("tempdir()").unwrap().value);
    let zygote_dir = PathBuf::from(&dir).parent().unwrap().to_owned();
    let mut pids: Vec<u32> = pool.stats().idle.iter().map(|w| w.0).collect();
    pids.push(pool.stats().zygote_pid);
    pool.shutdown(Duration::from_secs(5));
    assert!(matches!(pool.eval("1"), Err(Error::Closed)));
    drop(pool);
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(status.is_empty(), "pid {pid} remains: {status:.200}");
    }
    assert!(!zygote_dir.exists(), "{} remains", zygote_dir.display());
}

#[test]
fn the_pool_works_from_inside_a_tokio_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = tokio::task::spawn_blocking(|| builder().workers(2).build())
            .await
            .unwrap()
            .unwrap();
        let calls = (0..32).map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.eval_async(format!("{i} * 2")).await })
        });
        for (i, call) in calls.enumerate() {
            let ev = call.await.unwrap().unwrap();
            assert_eq!(ev.value, Value::scalar_double(i as f64 * 2.0));
        }
        let v = pool
            .call_async("sum", vec![(String::new(), Value::integers(vec![1, 2, 3]))])
            .await
            .unwrap();
        assert_eq!(v, Value::scalar_int(6));
        tokio::task::spawn_blocking(move || drop(pool))
            .await
            .unwrap();
    });
}

fn frame(n: usize) -> Value {
    let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
    Value::data_frame(vec![("x".into(), Value::doubles(x))]).unwrap()
}

#[test]
fn batch_keeps_input_order_and_reports_progress() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let opts = BatchOptions {
        progress: Some(Arc::new(move |p| {
            seen.fetch_add(1, Ordering::SeqCst);
            assert!(p.chunks_done <= p.chunks_total);
        })),
        ..BatchOptions::default()
    };
    let out = shared()
        .batch_with("score", &frame(1000), 64, &opts)
        .unwrap();
    assert_eq!(out.chunks.len(), 16);
    assert_eq!(calls.load(Ordering::SeqCst), 16);
    let expected: Vec<f64> = (0..1000).map(|i| i as f64 * 2.0).collect();
    assert_eq!(out.into_value().unwrap(), Value::doubles(expected));
}

#[test]
fn batch_reports_the_failed_chunk_and_keeps_the_others() {
    let pool = builder()
        .workers(2)
        .init("picky <- function(d) { if (any(d$x == 500)) stop('row 500 is bad'); d$x }")
        .build()
        .unwrap();
    let out = pool.batch("picky", &frame(1000), 100).unwrap();
    let failures: Vec<_> = out.failures().collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].chunk, 5);
    assert_eq!(failures[0].rows, 500..600);
    assert!(failures[0].error.to_string().contains("row 500 is bad"));
    assert_eq!(out.chunks.iter().filter(|c| c.is_ok()).count(), 9);
    assert_eq!(
        out.chunks[9].as_ref().unwrap().as_doubles().unwrap()[0],
        900.0
    );
}

#[test]
fn batch_can_be_cancelled() {
    let pool = builder()
        .workers(2)
        .init("slow <- function(d) { Sys.sleep(0.2); d$x }")
        .build()
        .unwrap();
    let cancel = CancelHandle::new().unwrap();
    let trigger = cancel.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        trigger.cancel();
    });
    let opts = BatchOptions {
        cancel: Some(cancel),
        ..BatchOptions::default()
    };
    let out = pool.batch_with("slow", &frame(1000), 10, &opts).unwrap();
    t.join().unwrap();
    let cancelled = out
        .chunks
        .iter()
        .filter(|c| matches!(c, Err(f) if f.error == Error::Cancelled))
        .count();
    assert!(cancelled >= 80, "{cancelled} of 100 chunks cancelled");
    assert!(out.chunks[0].is_ok());
}

/// The variables a worker sees, and whether a `system("env")` child sees `name`.
fn env_seen(pool: &Pool, name: &str) -> (String, bool) {
    let code = format!(
        "c(Sys.getenv('{name}'), any(startsWith(system('env', intern = TRUE), '{name}=')))"
    );
    let v = pool.eval(&code).unwrap().value;
    let parts: Vec<String> = v
        .as_strings()
        .unwrap()
        .iter()
        .map(|s| s.clone().unwrap_or_default())
        .collect();
    (parts[0].clone(), parts[1] == "TRUE")
}

#[test]
fn workers_get_none_of_the_hosts_environment_but_what_they_are_given() {
    // cargo sets CARGO_MANIFEST_DIR in this test process's environment; it stands in
    // for a server's secret.
    let host = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it");
    let plain = one_worker().build().unwrap();
    assert_eq!(
        env_seen(&plain, "CARGO_MANIFEST_DIR"),
        (String::new(), false)
    );
    let path = plain.eval("nzchar(Sys.getenv('PATH'))").unwrap().value;
    assert_eq!(path, Value::logicals([true]), "PATH is inherited");
    let given = one_worker()
        .pass_env(["CARGO_MANIFEST_DIR"])
        .env("ROOKERY_SETTING", "42")
        .build()
        .unwrap();
    assert_eq!(env_seen(&given, "CARGO_MANIFEST_DIR"), (host, true));
    assert_eq!(env_seen(&given, "ROOKERY_SETTING"), ("42".to_owned(), true));
}

#[test]
fn a_worker_holds_no_fd_of_its_host() {
    let pool = one_worker().build().unwrap();
    let v = pool
        .eval(
            "fds <- list.files('/proc/self/fd', full.names = TRUE); \
             paste(basename(fds), Sys.readlink(fds), sep = ' -> ')",
        )
        .unwrap()
        .value;
    let fds: Vec<String> = v
        .as_strings()
        .unwrap()
        .iter()
        .map(|s| s.clone().unwrap_or_default())
        .collect();
    let target = |fd: &str| {
        fds.iter()
            .find_map(|l| l.strip_prefix(&format!("{fd} -> ")))
            .unwrap_or_else(|| panic!("no fd {fd} in {fds:?}"))
            .to_owned()
    };
    assert_eq!(target("0"), "/dev/null", "{fds:?}");
    for fd in ["1", "2"] {
        assert!(target(fd).contains("memfd:rookery-output"), "{fds:?}");
    }
    // What the host's own stdout and stderr are (a pipe or file under cargo test)
    // must not be open in the worker.
    for fd in [1, 2] {
        let host = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let host = host.to_string_lossy();
        if host != "/dev/null" {
            assert!(
                fds.iter().all(|l| !l.ends_with(&format!("-> {host}"))),
                "the host's fd {fd} ({host}) is open in the worker: {fds:?}"
            );
        }
    }
    // Everything else is the worker's own: its link to the host (sockets, shared
    // memory), its output capture, its /proc files, its temp dir, and the listing's
    // own directory handle (closed by the time it is read: NA).
    for line in &fds {
        let (_, to) = line.split_once(" -> ").unwrap();
        let own = to == "/dev/null"
            || to == "NA"
            || to.starts_with("socket:")
            || to.starts_with("anon_inode:")
            || to.starts_with("/memfd:")
            || to.starts_with("/dev/shm/")
            || to.starts_with("/proc/")
            || to.contains("/Rtmp")
            || to.contains("worker-");
        assert!(own, "fd {line} is not the worker's own: {fds:?}");
    }
}

/// R code's OOB messages (the native routines behind Rserve's `self.oobSend` and
/// `self.oobMessage`) cross the link to the caller of `Session::eval_with_oob`
/// while the call waits, large ones through shared memory, and what the sink
/// answers is `oobMessage`'s value; a stateless call and a plain session eval have
/// no sink, so the same code is a clear R error there and the worker serves on.
#[test]
fn oob_messages_reach_the_sessions_sink_and_nothing_else() {
    use rookery_engine::{OobFailure, OobKind, OobRequest};
    let pool = shared();
    let mut session = pool.session().unwrap();
    let mut seen: Vec<(OobKind, u32, usize)> = Vec::new();
    let mut sink = |req: OobRequest| {
        let len = req.value.len();
        seen.push((req.kind, req.code, len));
        match (req.kind, req.code) {
            (OobKind::Message, 1) => Ok(Some(Value::scalar_double(len as f64))),
            (OobKind::Message, _) => Err(OobFailure::Refused("not now".into())),
            (OobKind::Send, 2) => Err(OobFailure::Gone("left".into())),
            (OobKind::Send, _) => Ok(None),
        }
    };
    let ev = session
        .eval_with_oob(
            "c(.Call('Rserve_oobSend', 'a', 0L), \
               .Call('Rserve_oobMsg', as.numeric(1:200000), 1L), \
               .Call('Rserve_oobSend', 'b', 2L), \
               nchar(tryCatch(.Call('Rserve_oobMsg', 'c', 3L), error = conditionMessage)))",
            &CallOptions::default(),
            &mut sink,
        )
        .unwrap();
    assert_eq!(ev.value, Value::doubles(vec![1.0, 200_000.0, 0.0, 7.0]));
    assert_eq!(
        seen,
        [
            (OobKind::Send, 0, 1),
            (OobKind::Message, 1, 200_000),
            (OobKind::Send, 2, 1),
            (OobKind::Message, 3, 1)
        ]
    );
    for e in [
        session.eval(".Call('Rserve_oobSend', 1, 0L)").unwrap_err(),
        pool.eval(".Call('Rserve_oobMsg', 1, 0L)").unwrap_err(),
    ] {
        assert!(e.to_string().contains("[qap] oob = true"), "{e}");
    }
    assert_eq!(session.eval("1L").unwrap().value, Value::integers(vec![1]));
}

/// The worker reuses the parse of code it has seen: code that changes a language
/// object it got from its own text must not change that text's next run.
#[test]
fn reused_parses_are_not_changed_by_the_code_that_ran_them() {
    let mut session = shared().session().unwrap();
    let code = "e <- quote(a + b); e[[1]] <- as.name('-'); \
                g <- function() 1; body(g) <- quote(2); c(deparse(quote(a + b)), deparse(e), \
                deparse(body(function() 1)))";
    for _ in 0..3 {
        let v = session.eval(code).unwrap().value;
        assert_eq!(v, Value::strings(["a + b", "a - b", "1"]));
    }
    for _ in 0..3 {
        assert!(matches!(session.eval("1 +"), Err(Error::R(_))));
    }
}
