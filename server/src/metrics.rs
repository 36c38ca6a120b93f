//! Prometheus metrics: requests and latency per route, and the state of every R pool
//! (busy and idle workers, queue depth, respawns, timeouts), read at scrape time.
//! Owns the registry and the middleware that times each request.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use rookery_engine::PoolStats;

use crate::error::ErrorCode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// The registry and its metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    r_failures: Family<OutcomeLabels, Counter>,
    batch_chunks: Family<OutcomeLabels, Counter>,
    busy: Family<PoolLabels, Gauge>,
    idle: Family<PoolLabels, Gauge>,
    waiting: Family<PoolLabels, Gauge>,
    respawned: Family<PoolLabels, Gauge>,
    sessions: Gauge,
    inflight: Gauge,
    inflight_limit: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rookery");
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                60.0,
            ])
        });
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            latency,
            r_failures: Family::default(),
            batch_chunks: Family::default(),
            busy: Family::default(),
            idle: Family::default(),
            waiting: Family::default(),
            respawned: Family::default(),
            sessions: Gauge::default(),
            inflight: Gauge::default(),
            inflight_limit: Gauge::default(),
        };
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.latency.clone(),
        );
        r.register(
            "r_call_failures",
            "R calls that timed out, crashed their worker, or found every worker busy",
            m.r_failures.clone(),
        );
        r.register(
            "batch_chunks",
            "Chunks of shared batch jobs this node worked on, by outcome (scored, assembled, \
             lost: another node had taken it over, failed)",
            m.batch_chunks.clone(),
        );
        r.register("workers_busy", "Workers running a call", m.busy.clone());
        r.register(
            "workers_idle",
            "Warm workers waiting for a call",
            m.idle.clone(),
        );
        r.register(
            "queue_depth",
            "Callers waiting for a worker",
            m.waiting.clone(),
        );
        r.register(
            "workers_respawned",
            "Workers forked after start-up (replacing retired, crashed or timed-out ones)",
            m.respawned.clone(),
        );
        r.register(
            "sessions_open",
            "Open interactive sessions",
            m.sessions.clone(),
        );
        r.register(
            "inflight_bytes",
            "Bytes held by requests still arriving and large answers still being sent, all users",
            m.inflight.clone(),
        );
        r.register(
            "inflight_limit_bytes",
            "The server's budget of bytes in flight (limits.max_inflight_bytes; 0: none)",
            m.inflight_limit.clone(),
        );
        Metrics { registry, ..m }
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64, error: Option<&str>) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
        if let Some(code @ ("timeout" | "worker_died" | "busy")) = error {
            self.r_failures
                .get_or_create(&OutcomeLabels {
                    outcome: code.to_owned(),
                })
                .inc();
        }
    }

    /// Counts one chunk of a shared batch job by `outcome`.
    pub fn batch_chunk(&self, outcome: &str) {
        self.batch_chunks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The text exposition, with the pool gauges set from `pools` (each pool's name
    /// and its stats, read now), the open-session gauge from `sessions`, and the
    /// bytes in flight with their budget from `inflight`.
    pub fn render(
        &self,
        pools: Vec<(String, PoolStats)>,
        sessions: usize,
        inflight: (u64, u64),
    ) -> String {
        for (name, stats) in pools {
            let l = PoolLabels { pool: name };
            self.busy.get_or_create(&l).set(stats.busy as i64);
            self.idle.get_or_create(&l).set(stats.idle.len() as i64);
            self.waiting.get_or_create(&l).set(stats.waiting as i64);
            self.respawned.get_or_create(&l).set(stats.respawned as i64);
        }
        self.sessions.set(sessions as i64);
        self.inflight.set(inflight.0 as i64);
        self.inflight_limit.set(inflight.1 as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Times each request and counts it by route (the route's pattern, never the raw
/// path, so ids do not explode the label set).
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let response = next.run(request).await;
    let error = response.extensions().get::<ErrorCode>().map(|c| c.0);
    metrics.observe(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
        error,
    );
    response
}
