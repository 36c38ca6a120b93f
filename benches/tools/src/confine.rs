//! `rookery bench confine`: what confinement costs on this machine.
//!
//! Owns two figures of issue 5. (1) The cost of confining one worker: a pre-forked
//! spare's `Session::confine` round trip (identity, Landlock, seccomp, rlimits,
//! cgroup join, temp dir and working directory), minus an empty round trip on the
//! same worker. (2) End to end, through the server's own session API: from "a
//! user's request arrives and no worker is theirs yet" to "first result" (lease an
//! account or take back the user's lingering lease, make the GUID folder and temp
//! dir, take a spare, confine it, evaluate `1+1`): a returning user and a new user
//! with confinement on, and confinement off, interleaved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rookery_engine::confine::{Confinement, Identity};
use rookery_engine::Pool;
use rookery_server::config::Config;
use rookery_server::serve::Server;
use rookery_server::store::Role;
use serde::Serialize;

use crate::pool::percentile;

#[derive(Debug, Serialize)]
pub struct ConfineFigures {
    pub layers: Vec<String>,
    pub runs: usize,
    /// `Session::confine` minus an empty round trip, median and p99.
    pub confine_p50_ms: f64,
    pub confine_p99_ms: f64,
    /// Open a session and get `1+1` back, confinement on, for a user whose account
    /// lease is still lingering from their previous session.
    pub first_result_confined_p50_ms: f64,
    pub first_result_confined_p99_ms: f64,
    /// The same for a user never seen before: a new lease and a new folder.
    pub first_result_new_user_p50_ms: f64,
    pub first_result_new_user_p99_ms: f64,
    /// The same with `[confine] enabled = false`.
    pub first_result_unconfined_p50_ms: f64,
    pub first_result_unconfined_p99_ms: f64,
}

pub fn confine(json: bool, runs: usize) -> anyhow::Result<()> {
    let runs = runs.max(5);
    let (confine_p50, confine_p99) = worker_cost(runs)?;
    let rt = tokio::runtime::Runtime::new()?;
    let (mut on, mut fresh, mut off) = rt.block_on(end_to_end(runs))?;
    let figures = ConfineFigures {
        layers: rookery_engine::confine::probe().describe(),
        runs,
        confine_p50_ms: confine_p50,
        confine_p99_ms: confine_p99,
        first_result_confined_p50_ms: percentile(&mut on, 0.5),
        first_result_confined_p99_ms: percentile(&mut on, 0.99),
        first_result_new_user_p50_ms: percentile(&mut fresh, 0.5),
        first_result_new_user_p99_ms: percentile(&mut fresh, 0.99),
        first_result_unconfined_p50_ms: percentile(&mut off, 0.5),
        first_result_unconfined_p99_ms: percentile(&mut off, 0.99),
    };
    if json {
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    for line in &figures.layers {
        println!("  {line}");
    }
    println!("runs: {}", figures.runs);
    println!(
        "confine one worker:              p50 {:.3} ms   p99 {:.3} ms",
        figures.confine_p50_ms, figures.confine_p99_ms
    );
    println!(
        "request -> first result, on:     p50 {:.3} ms   p99 {:.3} ms",
        figures.first_result_confined_p50_ms, figures.first_result_confined_p99_ms
    );
    println!(
        "  the same, a new user:           p50 {:.3} ms   p99 {:.3} ms",
        figures.first_result_new_user_p50_ms, figures.first_result_new_user_p99_ms
    );
    println!(
        "request -> first result, off:    p50 {:.3} ms   p99 {:.3} ms",
        figures.first_result_unconfined_p50_ms, figures.first_result_unconfined_p99_ms
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A job folder and temp dir owned by `id` (as root, `nobody`), under a fresh root.
fn job_dirs(id: Option<Identity>) -> anyhow::Result<(tempfile::TempDir, Confinement)> {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir()?;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711))?;
    let (job, tmp) = (root.path().join("job"), root.path().join("tmp"));
    for d in [&job, &tmp] {
        std::fs::create_dir(d)?;
        if let Some(id) = id {
            std::os::unix::fs::chown(d, Some(id.uid), Some(id.gid))?;
        }
    }
    let mut spec = Confinement::for_job(&job, &tmp);
    spec.identity = id;
    Ok((root, spec))
}

fn worker_cost(runs: usize) -> anyhow::Result<(f64, f64)> {
    let pool = Pool::builder()
        .program(std::env::current_exe()?)
        .workers(1)
        .spares(2)
        .build()?;
    let id = rustix::process::geteuid().is_root().then_some(Identity {
        uid: 65534,
        gid: 65534,
    });
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (_root, spec) = job_dirs(id)?;
        let mut s = pool.fresh_session()?;
        let t = Instant::now();
        s.eval("NULL")?;
        let empty = t.elapsed();
        let t = Instant::now();
        s.confine(&spec).context("confining a worker")?;
        let confined = t.elapsed();
        samples.push(ms(confined.saturating_sub(empty)));
        drop(s);
        // Let the pool fork the next spare, as it would between requests.
        std::thread::sleep(Duration::from_millis(30));
    }
    Ok((
        percentile(&mut samples.clone(), 0.5),
        percentile(&mut samples, 0.99),
    ))
}

type Series = (Vec<f64>, Vec<f64>, Vec<f64>);

async fn end_to_end(runs: usize) -> anyhow::Result<Series> {
    let open = |confined: bool| -> anyhow::Result<(Server, tempfile::TempDir)> {
        let data = tempfile::tempdir()?;
        let mut config = Config {
            data: data.path().to_owned(),
            ..Config::default()
        };
        config.confine.enabled = confined;
        let server = Server::open(config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let store = server.state.store.as_ref();
        rookery_server::admin::add_user(store, "bench", Role::User, "bench-password")?;
        for i in 0..runs {
            let name = format!("new{i}");
            rookery_server::admin::add_user(store, &name, Role::User, "bench-password")?;
        }
        Ok((server, data))
    };
    let (on, _on_data) = tokio::task::block_in_place(|| open(true))?;
    let (off, _off_data) = tokio::task::block_in_place(|| open(false))?;
    let mut results = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let new_user = format!("new{i}");
        let rounds = [
            (&on, "bench", &mut results.0),
            (&on, new_user.as_str(), &mut results.1),
            (&off, "bench", &mut results.2),
        ];
        for (server, user, out) in rounds {
            let sessions = Arc::clone(&server.state.sessions);
            let t = Instant::now();
            let entry = sessions.open(user, 0).await?;
            let answer = sessions.execute(&entry, "1+1".into()).await?;
            out.push(ms(t.elapsed()));
            anyhow::ensure!(answer.value.as_f64() == Some(2.0), "wrong answer");
            sessions.close(&entry).await?;
            // The next spare's fork, as between requests.
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    Ok(results)
}
