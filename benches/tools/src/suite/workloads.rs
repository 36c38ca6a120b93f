//! The workloads of `rookery bench` (docs/peers.md), which peer each is compared with,
//! and how one side of one pair is measured: QAP1 figures through `crate::qap`, HTTP
//! scoring through `crate::http`, batches through the engine's pool or the mclapply peer.
//!
//! It measures only; it starts nothing (see `peers.rs`) and keeps no statistics (see
//! `report.rs`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use hyper::Method;
use rookery_engine::{BatchOptions, Pool, Value};
use serde::Serialize;

use super::peers::Mclapply;
use crate::http::{self, LoadSpec};
use crate::qap::{self, Figure, QapTarget};

/// The peer a workload compares Rookery with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Peer {
    Rserve,
    #[serde(rename = "plumber")]
    Plumber,
    #[serde(rename = "mclapply")]
    Mclapply,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Rserve => "Rserve",
            Peer::Plumber => "plumber",
            Peer::Mclapply => "mclapply",
        }
    }
}

/// What is measured on both sides.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A QAP1 figure: Rserve vs Rookery's QAP1 endpoint.
    Qap(QapKind),
    /// HTTP scoring (`POST` JSON records): plumber vs Rookery's service.
    Http {
        service: &'static str,
        body: &'static str,
        connections: usize,
    },
    /// A batch over the generated rows: mclapply vs the engine's batch API.
    Batch { function: &'static str },
}

#[derive(Debug, Clone, Copy)]
pub enum QapKind {
    Eval1p1,
    EvalsPerS(usize),
    /// Back to back.
    Connect,
    /// With a pause between cycles (a client connecting once per request).
    ConnectPaced,
    TransferOut,
    TransferIn,
}

/// One pair of the suite.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// The name `--only` takes and the JSON uses.
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub peer: Peer,
    pub kind: Kind,
}

const GLM_1ROW: &str = include_str!("../../../peers/glm_1row.json");
const RF_100ROWS: &str = include_str!("../../../peers/rf_100rows.json");

const fn qap(key: &'static str, label: &'static str, unit: &'static str, k: QapKind) -> Workload {
    let higher_is_better = matches!(k, QapKind::EvalsPerS(_));
    Workload {
        key,
        label,
        unit,
        higher_is_better,
        peer: Peer::Rserve,
        kind: Kind::Qap(k),
    }
}

const fn http(
    key: &'static str,
    label: &'static str,
    service: &'static str,
    body: &'static str,
    connections: usize,
) -> Workload {
    let kind = Kind::Http {
        service,
        body,
        connections,
    };
    Workload {
        key,
        label,
        unit: "req/s",
        higher_is_better: true,
        peer: Peer::Plumber,
        kind,
    }
}

const fn batch(key: &'static str, label: &'static str, function: &'static str) -> Workload {
    let kind = Kind::Batch { function };
    Workload {
        key,
        label,
        unit: "s",
        higher_is_better: false,
        peer: Peer::Mclapply,
        kind,
    }
}

/// Every workload, in the order of the table.
pub const ALL: [Workload; 13] = [
    qap(
        "eval_1p1",
        "`1+1` on an open connection, p50",
        "µs",
        QapKind::Eval1p1,
    ),
    qap(
        "evals_1conn",
        "`1+1` evals/s, 1 connection",
        "evals/s",
        QapKind::EvalsPerS(1),
    ),
    qap(
        "evals_4conn",
        "`1+1` evals/s, 4 connections",
        "evals/s",
        QapKind::EvalsPerS(4),
    ),
    qap(
        "connect",
        "new connection + `1+1` + close, p50",
        "ms",
        QapKind::Connect,
    ),
    qap(
        "connect_paced",
        "new connection + `1+1` + close, 10 ms apart, p50",
        "ms",
        QapKind::ConnectPaced,
    ),
    qap(
        "transfer_out",
        "1e6 doubles server → client",
        "ms",
        QapKind::TransferOut,
    ),
    qap(
        "transfer_in",
        "1e6 doubles client → server",
        "ms",
        QapKind::TransferIn,
    ),
    http(
        "glm_1row_1conn",
        "glm, 1 row, 1 connection",
        "glm",
        GLM_1ROW,
        1,
    ),
    http(
        "glm_1row_4conn",
        "glm, 1 row, 4 connections",
        "glm",
        GLM_1ROW,
        4,
    ),
    http(
        "rf_100rows_1conn",
        "randomForest, 100 rows, 1 connection",
        "rf",
        RF_100ROWS,
        1,
    ),
    http(
        "rf_100rows_4conn",
        "randomForest, 100 rows, 4 connections",
        "rf",
        RF_100ROWS,
        4,
    ),
    batch("batch_glm", "batch glm", "score_glm"),
    batch("batch_rf", "batch randomForest", "score_rf"),
];

/// How long and how much each measurement does.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Effort {
    /// The window of each throughput measurement.
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    pub eval_calls: usize,
    pub connects: usize,
    pub transfers: usize,
    pub batch_rows: usize,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// One side's QAP1 figure.
pub fn measure_qap(target: &QapTarget, kind: QapKind, e: &Effort) -> anyhow::Result<f64> {
    let figure = match kind {
        QapKind::Eval1p1 => Figure::Eval1p1 {
            calls: e.eval_calls,
        },
        QapKind::EvalsPerS(connections) => Figure::EvalsPerS {
            connections,
            duration: e.duration,
        },
        QapKind::Connect => Figure::ConnectEvalClose {
            connects: e.connects,
            gap: std::time::Duration::ZERO,
        },
        QapKind::ConnectPaced => Figure::ConnectEvalClose {
            connects: e.connects,
            gap: std::time::Duration::from_millis(10),
        },
        QapKind::TransferOut => Figure::TransferOut {
            repeats: e.transfers,
        },
        QapKind::TransferIn => Figure::TransferIn {
            repeats: e.transfers,
        },
    };
    qap::measure(target, figure)
}

/// Where an HTTP side sends its requests.
#[derive(Debug, Clone)]
pub struct HttpSide {
    pub base: SocketAddr,
    /// `/glm` on plumber, `/api/v1/services/glm/1` on Rookery: `{service}` is replaced.
    pub path: &'static str,
    pub bearer: Option<String>,
}

/// One side's requests/s for an HTTP workload; any failed request fails it.
pub fn measure_http(
    rt: &tokio::runtime::Runtime,
    side: &HttpSide,
    kind: Kind,
    e: &Effort,
) -> anyhow::Result<f64> {
    let Kind::Http {
        service,
        body,
        connections,
    } = kind
    else {
        anyhow::bail!("not an HTTP workload");
    };
    let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    if let Some(key) = &side.bearer {
        headers.push(("Authorization".to_owned(), format!("Bearer {key}")));
    }
    let spec = LoadSpec {
        url: format!(
            "http://{}{}",
            side.base,
            side.path.replace("{service}", service)
        ),
        method: Method::POST,
        headers,
        body: body.as_bytes().to_vec(),
        connections,
        duration: e.duration,
        warmup: e.warmup,
    };
    let report = rt.block_on(http::run(&spec))?;
    ensure!(
        report.errors == 0 && report.requests > 0,
        "{} of {} requests failed ({:?})",
        report.errors,
        report.requests,
        report.status_counts
    );
    Ok(report.req_per_s)
}

/// Rookery's batch side: a pool of `workers` with the demo models, and the rows.
#[derive(Debug)]
pub struct RookeryBatch {
    pool: Pool,
    rows: Value,
    pub has_rf: bool,
}

impl RookeryBatch {
    pub fn start(workers: usize, rows: usize) -> anyhow::Result<RookeryBatch> {
        let pool = Pool::builder()
            .workers(workers)
            .program(std::env::current_exe()?)
            .init(rookery_server::demo::MODEL_CODE)
            .build()
            .context("starting the pool")?;
        let rows = pool
            .eval(&format!("set.seed(7); make_features({rows})"))
            .context("generating the rows")?
            .value;
        let has_rf = pool.eval("exists('rf_model')")?.value == Value::scalar_bool(true);
        Ok(RookeryBatch { pool, rows, has_rf })
    }

    /// Seconds for one batch of `function` over all rows, 50,000-row chunks.
    pub fn batch(&self, function: &str, expected: usize) -> anyhow::Result<f64> {
        let t = Instant::now();
        let outcome =
            self.pool
                .batch_with(function, &self.rows, 50_000, &BatchOptions::default())?;
        let elapsed = t.elapsed().as_secs_f64();
        let scores = outcome.into_value()?;
        ensure!(
            scores.len() == expected,
            "{function}: {} scores",
            scores.len()
        );
        Ok(elapsed)
    }
}

/// The mclapply side of a batch workload.
pub fn measure_mclapply(peer: &mut Mclapply, function: &str) -> anyhow::Result<f64> {
    let seconds = peer.batch(function, Duration::from_secs(600))?;
    ensure!(
        seconds.is_finite(),
        "mclapply returned the wrong number of scores"
    );
    Ok(seconds)
}
