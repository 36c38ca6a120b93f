//! The engine's confinement on its own: a fresh session's worker locked into a job
//! folder (and, as root, a worker account), and a confined zygote for a pool.

use std::path::Path;

use rookery_engine::confine::{probe, Confinement, Identity};
use rookery_engine::Pool;

use super::{chown, job_dirs, nobody, text};

fn pool() -> Pool {
    Pool::builder()
        .program(env!("CARGO_BIN_EXE_rookery"))
        .workers(1)
        .spares(1)
        .build()
        .expect("pool starts")
}

#[test]
fn confined_session_keeps_to_its_folder() {
    let pool = pool();
    let (root, job, tmp) = job_dirs();
    let mut spec = Confinement::for_job(&job, &tmp);
    spec.identity = nobody();
    let mut s = pool.fresh_session().unwrap();
    s.confine(&spec).unwrap();
    let wd = text(&s.eval("getwd()").unwrap().value);
    assert_eq!(Path::new(&wd), job);
    let t = text(&s.eval("tempdir()").unwrap().value);
    assert_eq!(Path::new(&t), tmp);
    // Its own folder works; R's runtime reads; everything else is out of reach.
    s.eval("writeLines('hi', 'a.txt'); stopifnot(readLines('a.txt') == 'hi')")
        .unwrap();
    s.eval("f <- tempfile(); writeLines('x', f); stopifnot(file.exists(f))")
        .unwrap();
    s.eval("stopifnot(nchar(R.home()) > 0, length(readLines(file.path(R.home('etc'), 'Renviron'))) > 0)")
        .unwrap();
    let shadow = s.eval("tryCatch(readLines('/etc/shadow'), error = function(e) 'denied', warning = function(w) 'denied')");
    assert_eq!(text(&shadow.unwrap().value), "denied");
    let out = s
        .eval("tryCatch({writeLines('x', '/tmp/rookery-escape'); 'wrote'}, error = function(e) 'denied', warning = function(w) 'denied')")
        .unwrap();
    assert_eq!(text(&out.value), "denied");
    assert!(!Path::new("/tmp/rookery-escape").exists());
    // system() still works inside.
    let out = s.eval("system('echo $HOME', intern = TRUE)").unwrap();
    assert_eq!(Path::new(&text(&out.value)), job);
    if let Some(id) = spec.identity {
        let uid = s.eval("system('id -u', intern = TRUE)").unwrap();
        assert_eq!(text(&uid.value), id.uid.to_string());
    }
    drop(s);
    drop(root);
}

#[test]
fn a_confined_zygote_runs_init_and_workers_inside() {
    let (root, job, tmp) = job_dirs();
    let mut spec = Confinement::for_job(&job, &tmp);
    spec.identity = nobody();
    std::fs::write(job.join("model.txt"), "42").unwrap();
    if let Some(id) = spec.identity {
        chown(&job.join("model.txt"), id);
    }
    let pool = Pool::builder()
        .program(env!("CARGO_BIN_EXE_rookery"))
        .workers(2)
        .confine(spec.clone())
        .init("model <- as.numeric(readLines('model.txt'))")
        .build()
        .expect("confined pool starts");
    assert_eq!(pool.eval("model").unwrap().value.as_f64(), Some(42.0));
    let out = pool
        .eval("tryCatch(readLines('/etc/shadow'), error = function(e) 'denied', warning = function(w) 'denied')")
        .unwrap();
    assert_eq!(text(&out.value), "denied");
    let t = text(&pool.eval("tempdir()").unwrap().value);
    assert!(Path::new(&t).starts_with(&tmp), "{t}");
    drop(pool);
    drop(root);
}

#[test]
fn below_the_landlock_floor_nothing_runs() {
    let pool = pool();
    let (root, job, tmp) = job_dirs();
    let mut spec = Confinement::for_job(&job, &tmp);
    spec.min_landlock_abi = probe().landlock_abi + 1;
    let mut s = pool.fresh_session().unwrap();
    let err = s.confine(&spec).unwrap_err().to_string();
    assert!(err.contains("Landlock ABI"), "{err}");
    assert!(s.eval("1").is_err(), "the worker was discarded");
    drop(root);
}

#[test]
fn a_session_from_the_warm_pool_cannot_be_confined() {
    let pool = pool();
    let (root, job, tmp) = job_dirs();
    let mut s = pool.session().unwrap();
    let err = s.confine(&Confinement::for_job(&job, &tmp)).unwrap_err();
    assert!(err.to_string().contains("fresh"), "{err}");
    drop(root);
}

#[allow(dead_code)]
fn _identity_is_plain_data(_: Identity) {}

#[test]
fn workers_that_cannot_set_up_fail_the_build_with_the_reason() {
    let Some(id) = nobody() else {
        return;
    };
    let (root, job, tmp) = job_dirs();
    let mut spec = Confinement::for_job(&job, &tmp);
    spec.identity = Some(id);
    // The temp dir belongs to root: the workers cannot make their own in it.
    std::os::unix::fs::chown(&tmp, Some(0), Some(0)).unwrap();
    let err = Pool::builder()
        .program(env!("CARGO_BIN_EXE_rookery"))
        .workers(1)
        .confine(spec)
        .start_timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ermission denied") || err.contains("died"),
        "{err}"
    );
    drop(root);
}
