//! How long does one trip into R take? Pre-built call vs parse+eval on the R thread,
//! 1e6 doubles each way, and the same `1+1` through `LocalR` from another thread.
//!
//! Run with `cargo bench --bench eval_roundtrip`. Each group compares strategies
//! side by side; quote medians.

use criterion::{black_box, Criterion};
use rookery_engine::{LocalOptions, LocalR, Value};

fn on_r_thread(r: &LocalR) {
    r.with(|rt| {
        let mut c = Criterion::default().configure_from_args();
        let mut g = c.benchmark_group("on_r_thread");
        let call = rt.parse("1 + 1").expect("parses");
        g.bench_function("prebuilt_call_1p1", |b| {
            b.iter(|| black_box(rt.eval_many(&call, None).expect("evaluates")))
        });
        g.bench_function("parse_eval_1p1", |b| {
            b.iter(|| black_box(rt.eval_str(black_box("1 + 1"), None).expect("evaluates")))
        });
        let xs = Value::doubles((0..1_000_000).map(f64::from).collect::<Vec<_>>());
        g.bench_function("doubles_1e6_rust_to_r", |b| {
            b.iter(|| black_box(rt.from_value(&xs).expect("converts")))
        });
        let big = rt.from_value(&xs).expect("converts");
        g.bench_function("doubles_1e6_r_to_rust", |b| {
            b.iter(|| black_box(rt.to_value(&big).expect("converts")))
        });
        g.finish();
        c.final_summary();
    })
    .expect("bench runs on the R thread");
}

fn from_another_thread(r: &LocalR) {
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("from_another_thread");
    g.bench_function("empty_job", |b| b.iter(|| r.with(|_| ()).expect("runs")));
    g.bench_function("eval_1p1", |b| {
        b.iter(|| black_box(r.eval("1 + 1").expect("evaluates")))
    });
    g.finish();
    c.final_summary();
}

fn main() {
    let r = LocalR::start(LocalOptions::default()).expect("R starts");
    on_r_thread(&r);
    from_another_thread(&r);
}
