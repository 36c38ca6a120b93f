//! `rookery bench pool`: the prefork engine's figures on this machine, in under a
//! minute, as one JSON object (`--json`) or a table.
//!
//! Owns the workload (docs/peers.md: glm and a 50-tree random forest on ten normal
//! features, fixed seeds) and how each figure is measured. Timings are medians of
//! many runs, measured from the caller's side of the public API, so they include
//! everything a user pays.

use std::time::{Duration, Instant};

use anyhow::Context;
use rookery_engine::{BatchOptions, Pool, Value};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct PoolFigures {
    pub workers: usize,
    pub eval_p50_us: f64,
    pub eval_p99_us: f64,
    pub transfer_1e6_ms: f64,
    pub respawn_ms: f64,
    pub batch_glm_1e6_s: f64,
    pub batch_rf_1e6_s: Option<f64>,
    /// The same batches on one worker at a time: the ratio is the parallel speed-up.
    pub batch_glm_1e6_one_worker_s: f64,
    pub batch_rf_1e6_one_worker_s: Option<f64>,
    pub idle_uss_kb: u64,
    pub idle_uss_after_1000_calls_kb: u64,
    pub zygote_start_ms: f64,
}

pub fn pool(json: bool, workers: usize) -> anyhow::Result<()> {
    let program = std::env::current_exe()?;
    let started = Instant::now();
    let pool = Pool::builder()
        .workers(workers)
        .program(&program)
        .init(rookery_server::demo::MODEL_CODE)
        .init("big <- as.numeric(seq_len(1e6))")
        .build()
        .context("starting the pool")?;
    let zygote_start_ms = ms(started.elapsed());
    let idle_uss_kb = idle_uss(&pool);
    let one_row = pool.eval("make_features(1)")?.value;
    for _ in 0..1000 {
        pool.call("score_glm", &[("", &one_row)])?;
    }
    let idle_uss_after = idle_uss(&pool);
    let (p50, p99) = eval_latency(&pool)?;
    let transfer = transfer(&pool)?;
    let data = pool
        .eval("set.seed(7); make_features(1e6)")
        .context("generating 1e6 rows")?
        .value;
    let glm = time_batch(&pool, "score_glm", &data, None)?;
    let glm_one = time_batch(&pool, "score_glm", &data, Some(1))?;
    let has_rf = pool.eval("exists('rf_model')")?.value == Value::scalar_bool(true);
    let (rf, rf_one) = if has_rf {
        (
            Some(time_batch(&pool, "score_rf", &data, None)?),
            Some(time_batch(&pool, "score_rf", &data, Some(1))?),
        )
    } else {
        (None, None)
    };
    drop(pool);
    let figures = PoolFigures {
        workers,
        eval_p50_us: p50,
        eval_p99_us: p99,
        transfer_1e6_ms: transfer,
        respawn_ms: respawn(&program)?,
        batch_glm_1e6_s: glm,
        batch_rf_1e6_s: rf,
        batch_glm_1e6_one_worker_s: glm_one,
        batch_rf_1e6_one_worker_s: rf_one,
        idle_uss_kb,
        idle_uss_after_1000_calls_kb: idle_uss_after,
        zygote_start_ms,
    };
    print(&figures, json)
}

/// Median private memory of the idle workers, after they settle.
fn idle_uss(pool: &Pool) -> u64 {
    std::thread::sleep(Duration::from_millis(200));
    let mut kb: Vec<u64> = pool.stats().idle.iter().map(|w| w.2).collect();
    kb.sort_unstable();
    kb.get(kb.len() / 2).copied().unwrap_or(0)
}

/// `1+1` round trips, one after another from one thread.
fn eval_latency(pool: &Pool) -> anyhow::Result<(f64, f64)> {
    for _ in 0..2000 {
        pool.eval("1+1")?;
    }
    let mut samples = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let t = Instant::now();
        pool.eval("1+1")?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok((
        percentile(&mut samples, 0.50),
        percentile(&mut samples, 0.99),
    ))
}

/// 1e6 doubles from a worker to the caller (R vector -> Rust `Vec<f64>`).
fn transfer(pool: &Pool) -> anyhow::Result<f64> {
    let mut samples = Vec::new();
    for i in 0..60 {
        let t = Instant::now();
        let v = pool.eval("big")?.value;
        let elapsed = ms(t.elapsed());
        anyhow::ensure!(v.len() == 1_000_000, "got {} doubles", v.len());
        if i >= 10 {
            samples.push(elapsed);
        }
    }
    Ok(percentile(&mut samples, 0.5))
}

fn time_batch(
    pool: &Pool,
    function: &str,
    data: &Value,
    parallelism: Option<usize>,
) -> anyhow::Result<f64> {
    let opts = BatchOptions {
        parallelism,
        ..BatchOptions::default()
    };
    let t = Instant::now();
    let outcome = pool.batch_with(function, data, 50_000, &opts)?;
    let elapsed = t.elapsed().as_secs_f64();
    let scores = outcome.into_value()?;
    anyhow::ensure!(
        scores.len() == 1_000_000,
        "{function}: {} scores",
        scores.len()
    );
    Ok(elapsed)
}

/// SIGKILL the only worker of a one-worker pool; time from the kill until the pool
/// answers again (death noticed, new worker forked and ready, call served).
fn respawn(program: &std::path::Path) -> anyhow::Result<f64> {
    let pool = Pool::builder().workers(1).program(program).build()?;
    let mut samples = Vec::new();
    for _ in 0..21 {
        pool.eval("1+1")?;
        // Steady state: the previous kill's spare has been re-forked.
        let ready = Instant::now();
        while pool.stats().spares == 0 && ready.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let pid = pool
            .stats()
            .idle
            .first()
            .map(|w| w.0)
            .context("no idle worker")?;
        let pid = rustix::process::Pid::from_raw(pid as i32).context("pid 0")?;
        let t = Instant::now();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL)?;
        let answer = pool.eval("1+1")?;
        samples.push(ms(t.elapsed()));
        anyhow::ensure!(answer.value == Value::scalar_double(2.0), "wrong answer");
    }
    Ok(percentile(&mut samples, 0.5))
}

pub(crate) fn percentile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples.get(i).copied().unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print(f: &PoolFigures, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(f)?);
        return Ok(());
    }
    let rf = match (f.batch_rf_1e6_s, f.batch_rf_1e6_one_worker_s) {
        (Some(s), Some(one)) => format!("{s:.3} s (one worker {one:.3} s, {:.2}x)", one / s),
        _ => "n/a (no randomForest)".into(),
    };
    let glm_one = f.batch_glm_1e6_one_worker_s;
    println!("workers                         {}", f.workers);
    println!(
        "1+1 round trip p50 / p99        {:.2} / {:.2} µs",
        f.eval_p50_us, f.eval_p99_us
    );
    println!(
        "1e6 doubles worker -> caller    {:.2} ms",
        f.transfer_1e6_ms
    );
    println!("respawn after kill              {:.2} ms", f.respawn_ms);
    println!(
        "batch glm, 1e6 rows             {:.3} s (one worker {glm_one:.3} s, {:.2}x)",
        f.batch_glm_1e6_s,
        glm_one / f.batch_glm_1e6_s
    );
    println!("batch randomForest, 1e6 rows    {rf}");
    println!("idle worker private memory      {} kB", f.idle_uss_kb);
    println!(
        "  after 1000 scoring calls      {} kB",
        f.idle_uss_after_1000_calls_kb
    );
    println!(
        "zygote start (R + models)       {:.0} ms",
        f.zygote_start_ms
    );
    Ok(())
}
