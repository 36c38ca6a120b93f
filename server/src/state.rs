//! `AppState`: what every handler can reach (store, folders, R pools, jobs,
//! metrics, limits). Cheap to clone: a handful of `Arc`s.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::audit::AuditLog;
use crate::auth::ratelimit::LoginLimiter;
use crate::config::Config;
use crate::engine::{Jobs, Services, Sessions};
use crate::files::UserDirs;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub dirs: Arc<UserDirs>,
    pub sessions: Arc<Sessions>,
    pub services: Arc<Services>,
    /// What confines workers, and the worker-account pool.
    pub confiner: Arc<crate::confine::Confiner>,
    pub jobs: Arc<Jobs>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<LoginLimiter>,
    /// Bytes of each user's requests still arriving (`limits.max_inflight_bytes_per_user`).
    pub inflight: Arc<crate::inflight::InFlight>,
    /// Bearer tokens looked up in the last moment (no store trip per call).
    pub tokens: Arc<crate::auth::tokens::TokenCache>,
    /// Recent successful password checks (QAP1 clients reconnect often).
    pub verified: Arc<crate::auth::cache::VerifyCache>,
    pub audit: AuditLog,
    /// Who this node is in the registry.
    pub node: Arc<crate::nodes::ThisNode>,
    /// In a cluster: the way to the other nodes (sessions they hold).
    pub forwarder: Option<Arc<crate::forward::Forwarder>>,
    /// Set once the stored services are loaded; cleared when the server stops.
    pub ready: Arc<AtomicBool>,
}
