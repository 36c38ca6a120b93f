//! A small tokio application that links the engine and scores rows through a pool:
//! the shape of a model-scoring service without the HTTP layer.
//!
//! `cargo run --release --example score -- 10000` fits the demo glm in the zygote,
//! scores one row at a time from many concurrent tasks, then the whole set as one
//! batch job, and checks that both agree.

use std::time::Instant;

use rookery_engine::{Pool, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First thing, before any thread: the pool re-executes this program as its zygote.
    rookery_engine::run_zygote_if_requested();

    let rows: usize = std::env::args().nth(1).map_or(Ok(2000), |a| a.parse())?;
    let pool = Pool::builder()
        .workers(2)
        .init(include_str!("../server/src/demo_model.R"))
        .build()?;
    let data = features(rows);

    let runtime = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    let one_by_one = runtime.block_on(score_each_row(&pool, &data))?;
    let per_row = started.elapsed();

    let started = Instant::now();
    let batch = pool.batch("score_glm", &data, 500)?.into_value()?;
    let batched = started.elapsed();

    let batch = batch.as_doubles().ok_or("scores are numbers")?;
    let max_diff = one_by_one
        .iter()
        .zip(batch)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!("scored {rows} rows: one call per row {per_row:.2?}, one batch {batched:.2?}");
    println!("first scores: {:?}", &batch[..batch.len().min(3)]);
    if max_diff > 1e-12 || one_by_one.len() != rows {
        return Err(format!("per-row and batch scores differ by {max_diff}").into());
    }
    Ok(())
}

/// One `call_async` per row, all in flight at once; the pool queues them.
async fn score_each_row(pool: &Pool, data: &Value) -> Result<Vec<f64>, rookery_engine::Error> {
    let rows = data.nrow().unwrap_or(0);
    let tasks: Vec<_> = (0..rows)
        .map(|i| {
            let row = data.slice_rows(i..i + 1);
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.call_async("score_glm", vec![(String::new(), row)])
                    .await
            })
        })
        .collect();
    let mut scores = Vec::with_capacity(rows);
    for task in tasks {
        let value = task.await.expect("task ran")?;
        scores.push(value.as_f64().unwrap_or(f64::NAN));
    }
    Ok(scores)
}

/// Ten deterministic features x1..x10, the inputs the demo models expect.
fn features(rows: usize) -> Value {
    let columns = (1..=10)
        .map(|c| {
            let x: Vec<f64> = (0..rows)
                .map(|r| ((r * 7919 + c * 104_729) % 2000) as f64 / 1000.0 - 1.0)
                .collect();
            (format!("x{c}"), Value::doubles(x))
        })
        .collect();
    Value::data_frame(columns).expect("equal-length columns")
}
