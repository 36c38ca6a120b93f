//! The integration test binary: one `mod` per topic, all against a real R.
//!
//! R runs once per process, so every test shares one in-process R through
//! [`support::r`]; tests keep to their own variable names.

mod admin;
mod batch;
mod bench_suite;
mod cli;
mod cluster;
mod confine;
mod loadgen;
mod local_eval;
mod pool;
mod qap_bench;
mod qap_rserve;
mod rserve;
mod server;
mod support;
mod values_roundtrip;
