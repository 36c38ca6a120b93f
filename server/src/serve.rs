//! Start-up and shutdown: open the store and folders, warm the sessions pool, bind
//! the listener (plain HTTP on loopback, TLS elsewhere), load the stored services
//! while `/readyz` says "not yet", run the housekeeping tasks, and on SIGINT/SIGTERM
//! stop taking connections, close sessions and stop every pool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::audit::AuditLog;
use crate::auth::ratelimit::LoginLimiter;
use crate::config::Config;
use crate::engine::{Jobs, Services, Sessions, SharedJobs};
use crate::files::UserDirs;
use crate::formats::schema::Schema;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot start R: {0}")]
    Engine(#[from] rookery_engine::Error),
    #[error("{0}")]
    Io(String),
}

/// How often a node of a cluster compares its services with the store's.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// The store file inside the data folder.
pub fn store_path(data: &std::path::Path) -> std::path::PathBuf {
    data.join(crate::store::STORE_FILE)
}

/// A server's state, built but not yet listening.
#[derive(Debug, Clone)]
pub struct Server {
    pub state: AppState,
    /// What the QAP1 endpoint owns (TLS, login key, detached sessions, shutdown).
    pub qap: Arc<crate::qap::endpoint::QapState>,
}

impl Server {
    /// Opens the store and folders and starts the sessions pool. Blocking (R starts).
    pub fn open(mut config: Config) -> Result<Server, ServeError> {
        config.check()?;
        for note in &config.deprecated {
            tracing::warn!("deprecated config key: {note}");
        }
        std::fs::create_dir_all(&config.data)
            .map_err(|e| ServeError::Io(format!("creating {}: {e}", config.data.display())))?;
        // Workers change directory (and confined ones only see absolute folders):
        // every path handed to them must be absolute.
        config.data = config
            .data
            .canonicalize()
            .map_err(|e| ServeError::Io(format!("{}: {e}", config.data.display())))?;
        let config = Arc::new(config);
        let store = crate::store::open(config.store.url.as_deref(), &config.data)?;
        match &config.store.url {
            Some(url) => {
                tracing::info!(store = %crate::store::redact_url(url), "registry on PostgreSQL")
            }
            None => {
                tracing::info!(store = %store_path(&config.data).display(), "registry on SQLite")
            }
        }
        let dirs = Arc::new(
            UserDirs::open(&config.data)
                .map_err(|e| ServeError::Io(format!("users' folders: {e}")))?,
        );
        let confiner = Arc::new(
            crate::confine::Confiner::open(&config.confine, &config.data)
                .map_err(|e| ServeError::Io(format!("confinement: {e}")))?,
        );
        for line in confiner.describe() {
            if line.contains("REFUSED") || line.contains("DISABLED") {
                tracing::warn!("{line}");
            } else {
                tracing::info!("{line}");
            }
        }
        // Sessions take pristine workers (`fresh_session`): the pool's spares, forked
        // ahead; its one warm worker is never handed out.
        let pool = config
            .pool_builder()
            .workers(1)
            .spares(config.pool.session_spares)
            .spin(Duration::from_micros(config.pool.session_spin_us))
            .worker_cgroups(confiner.worker_cgroups())
            .call_timeout(Some(config.call_timeout()))
            .queue_timeout(Duration::from_millis(config.limits.queue_timeout_ms))
            .max_private_memory(config.pool.max_worker_mib << 20)
            .build()?;
        let node = Arc::new(crate::nodes::ThisNode::new(config.store.node_id.clone()));
        let metrics = Arc::new(Metrics::new());
        let mut jobs = Jobs::new(store.clone(), &config.limits);
        if let (Some(_), Some(shared)) = (&config.store.url, &config.store.shared_dir) {
            let part = SharedJobs::new(
                store.clone(),
                shared,
                node.id.clone(),
                &config.limits,
                metrics.clone(),
            )
            .map_err(|e| ServeError::Io(format!("shared batch jobs: {e}")))?;
            jobs = jobs.shared(Arc::new(part));
        }
        let jobs = Arc::new(jobs);
        let orphans = jobs.recover().map_err(|e| ServeError::Io(e.to_string()))?;
        if orphans > 0 {
            tracing::warn!(
                jobs = orphans,
                "jobs left running by a stopped server marked failed"
            );
        }
        let qap = Arc::new(crate::qap::endpoint::QapState::new(&config).map_err(ServeError::Io)?);
        let forwarder = match &config.store.url {
            Some(_) => Some(Arc::new(crate::forward::Forwarder::open(
                store.clone(),
                node.id.clone(),
                config.call_timeout(),
            )?)),
            None => None,
        };
        let state = AppState {
            sessions: Arc::new({
                let sessions = Sessions::new(
                    pool,
                    dirs.clone(),
                    confiner.clone(),
                    &config.limits,
                    &config.pool,
                );
                match &config.store.url {
                    Some(_) => sessions.on_node(node.id.clone()),
                    None => sessions,
                }
            }),
            forwarder,
            services: Arc::new(Services::new(config.clone(), confiner.clone())),
            confiner,
            jobs,
            metrics,
            limiter: Arc::new(match config.store.url {
                Some(_) => LoginLimiter::default().sharing(store.clone()),
                None => LoginLimiter::default(),
            }),
            inflight: crate::inflight::InFlight::new(
                config.limits.max_inflight_bytes_per_user,
                config.limits.max_inflight_bytes,
            ),
            tokens: Arc::new(crate::auth::tokens::TokenCache::new()),
            node,
            verified: Arc::new(crate::auth::cache::VerifyCache::new(Duration::from_secs(
                300,
            ))),
            audit: AuditLog::start(store.clone()),
            ready: Arc::new(AtomicBool::new(false)),
            config,
            store,
            dirs,
        };
        Ok(Server { state, qap })
    }

    /// Starts the configured QAP1 listeners on the current runtime; returns the
    /// bound loopback TCP address, if one is configured.
    pub async fn listen_qap(&self) -> std::io::Result<Option<SocketAddr>> {
        crate::qap::endpoint::listen(self.state.clone(), self.qap.clone()).await
    }

    pub fn router(&self) -> Router {
        crate::routes::router(self.state.clone())
    }

    /// Starts every stored live service; a service whose code no longer starts is
    /// logged and skipped. Sets `/readyz` when done. Returns how many started.
    pub async fn load_services(&self) -> usize {
        let records = match self.state.store.services() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the stored services");
                Vec::new()
            }
        };
        let mut started = 0;
        for record in records {
            let what = format!("{}/{}", record.name, record.version);
            let schema = match Schema::parse(&record.inputs) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(service = %what, error = %e, "stored schema is invalid");
                    continue;
                }
            };
            match self.state.services.start(record, schema).await {
                Ok(_) => started += 1,
                Err(e) => tracing::error!(service = %what, error = %e, "service did not start"),
            }
        }
        self.state.ready.store(true, Ordering::Release);
        started
    }

    /// With a shared store (PostgreSQL), every [`RECONCILE_EVERY`]: the versions
    /// other nodes published, updated or retired are started or retired here too
    /// (see `Services::reconcile`). A store that does not answer changes nothing.
    pub fn spawn_reconcile(&self) {
        if self.state.config.store.url.is_none() {
            return;
        }
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RECONCILE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let done = match state.services.reconcile(state.store.clone()).await {
                    Ok(done) => done,
                    Err(e) => {
                        tracing::debug!(error = %e, "reconcile: the store did not answer");
                        continue;
                    }
                };
                if done != crate::engine::Reconciled::default() {
                    tracing::info!(
                        started = done.started,
                        retired = done.retired,
                        failed = done.failed,
                        "reconciled services with the store"
                    );
                }
            }
        });
    }

    /// Housekeeping: idle sessions, expired tokens, finished jobs, every 30 s.
    pub fn spawn_housekeeping(&self) {
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                let closed = state.sessions.expire_idle().await;
                if closed > 0 {
                    tracing::info!(closed, "closed idle sessions");
                }
                state.limiter.purge_shared();
                if let Err(e) = state.store.purge_expired_tokens(crate::admin::now()) {
                    tracing::warn!(error = %e, "purging expired tokens failed");
                }
                state.jobs.prune();
            }
        });
    }

    /// In a cluster, this node's threads that score the chunks of shared batch jobs
    /// (as many as a service has workers).
    pub fn spawn_batch_runners(&self) {
        if let Some(shared) = self.state.jobs.shared_part() {
            shared.spawn_runners(
                self.state.services.clone(),
                self.state.config.pool.service_workers,
            );
        }
    }

    /// Hands unfinished batch chunks back, closes sessions and stops every pool.
    pub async fn shut_down(&self) {
        if let Some(shared) = self.state.jobs.shared_part().cloned() {
            let _ = tokio::task::spawn_blocking(move || shared.stop(Duration::from_secs(10))).await;
        }
        self.state.sessions.close_all().await;
        let services = self.state.services.clone();
        let sessions = self.state.sessions.clone();
        let _ = tokio::task::spawn_blocking(move || {
            services.shutdown(Duration::from_secs(10));
            sessions.pool().shutdown(Duration::from_secs(1));
        })
        .await;
    }
}

/// Where the server listens, once bound (port 0 in the config picks a free port).
#[derive(Debug, Clone)]
pub struct Listening {
    pub http: SocketAddr,
    pub qap: Option<SocketAddr>,
    pub qap_unix: Option<std::path::PathBuf>,
    /// The QAP1 anonymous identity, when one is configured (announced as a warning).
    pub qap_anonymous: Option<String>,
}

/// Puts this process (the server) last in line for the kernel's OOM killer: its
/// workers and zygotes raise their own scores and go first (`rookery_engine::oom`).
/// Lowering needs CAP_SYS_RESOURCE; without it the server's score stays, logged.
pub fn last_for_the_oom_killer() {
    use rookery_engine::oom;
    match oom::set_own(oom::SERVER) {
        Ok(()) => tracing::info!(
            oom_score_adj = oom::SERVER,
            "OOM killer: workers first, the server last"
        ),
        Err(e) => tracing::info!(
            error = %e,
            "OOM killer: workers first; the server's own score stays (lowering it needs CAP_SYS_RESOURCE)"
        ),
    }
}

/// Serves until SIGINT or SIGTERM. `on_listening` is told where.
pub async fn run(server: Server, on_listening: impl FnOnce(&Listening)) -> Result<(), ServeError> {
    let config = server.state.config.clone();
    if !config.listen.ip().is_loopback() && config.tls.is_none() {
        tracing::warn!(
            listen = %config.listen,
            "SERVING PLAIN HTTP ON A NON-LOOPBACK ADDRESS (--insecure-plaintext): passwords \
             and tokens cross the network unencrypted"
        );
    }
    let app = server
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let bound = match &config.tls {
        Some(tls) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(|e| ServeError::Io(format!("TLS certificate or key: {e}")))?;
            let std_listener = bind(config.listen)?;
            let addr = local_addr(&std_listener)?;
            // TCP_NODELAY on every connection: an answer streamed in pieces (a file, a
            // large result) must not wait for the client's delayed ACK between them.
            let tls = axum_server::tls_rustls::RustlsAcceptor::new(rustls)
                .acceptor(axum_server::accept::NoDelayAcceptor::new());
            let mut server = axum_server::from_tcp(std_listener).acceptor(tls);
            header_deadline(server.http_builder(), &config);
            let server_task = server.handle(handle.clone()).serve(app);
            (addr, tokio::spawn(server_task))
        }
        None => {
            let std_listener = bind(config.listen)?;
            let addr = local_addr(&std_listener)?;
            let mut server = axum_server::from_tcp(std_listener)
                .acceptor(axum_server::accept::NoDelayAcceptor::new());
            header_deadline(server.http_builder(), &config);
            let server_task = server.handle(handle.clone()).serve(app);
            (addr, tokio::spawn(server_task))
        }
    };
    let (addr, task) = bound;
    let qap = server
        .listen_qap()
        .await
        .map_err(|e| ServeError::Io(format!("QAP1 listener: {e}")))?;
    if qap.is_some() || config.qap.unix.is_some() {
        tracing::info!(
            qap = ?qap,
            qap_unix = ?config.qap.unix,
            "QAP1 listener up: logins required (plaintext, loopback/Unix only)"
        );
    }
    on_listening(&Listening {
        http: addr,
        qap,
        qap_unix: config.qap.unix.clone(),
        qap_anonymous: config.qap.anonymous.clone(),
    });
    if !server.state.ready.load(Ordering::Acquire) {
        let loaded = server.load_services().await;
        tracing::info!(services = loaded, "stored services started");
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let advertised = config
        .store
        .advertise
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    server.state.node.set_address(advertised);
    tracing::info!(%addr, node = %server.state.node.id, tls = config.tls.is_some(), "ready");
    server.spawn_housekeeping();
    server.spawn_reconcile();
    server.spawn_batch_runners();
    spawn_heartbeat(server.state.clone());
    tokio::select! {
        () = shutdown_signal() => {}
        () = server.qap.shutdown.notified() => {}
    }
    tracing::info!("shutting down");
    // Unready at once (a load balancer stops sending), no more batch chunks taken on,
    // then the calls in flight finish.
    server.state.ready.store(false, Ordering::Release);
    if let Some(shared) = server.state.jobs.shared_part() {
        shared.stop_claiming();
    }
    handle.graceful_shutdown(Some(Duration::from_secs(10)));
    let _ = task.await;
    server.shut_down().await;
    let store = server.state.store.clone();
    let node = server.state.node.clone();
    let _ = tokio::task::spawn_blocking(move || crate::nodes::leave(store.as_ref(), &node)).await;
    Ok(())
}

/// What this node reports now.
fn node_record(state: &AppState) -> Option<crate::store::NodeRecord> {
    let address = state.node.address()?.to_owned();
    let mut pools = vec![state.sessions.pool().stats()];
    pools.extend(state.services.all().iter().map(|s| s.pool.stats()));
    let busy: usize = pools.iter().map(|p| p.busy).sum();
    let idle: usize = pools.iter().map(|p| p.idle.len()).sum();
    Some(crate::store::NodeRecord {
        id: state.node.id.clone(),
        address,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        workers: (busy + idle) as u64,
        busy: busy as u64,
        sessions: state.sessions.count() as u64,
        started_at: state.node.started_at,
        heartbeat_at: crate::admin::now(),
    })
}

/// Registers this node and renews its entry until the server stops; forgets nodes
/// silent for [`crate::nodes::FORGET_AFTER`]. A store that does not answer is retried next time.
fn spawn_heartbeat(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::nodes::HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(me) = node_record(&state) else {
                continue;
            };
            let store = state.store.clone();
            let beat = tokio::task::spawn_blocking(move || {
                store.put_node(&me)?;
                store.remove_nodes_silent_since(crate::admin::now() - crate::nodes::FORGET_AFTER)
            })
            .await;
            if let Ok(Err(e)) = beat {
                tracing::warn!(error = %e, "the node's heartbeat did not reach the store");
            }
        }
    });
}

/// An HTTP/1 request's headers must arrive within `limits.read_timeout_secs` of its
/// first byte, or hyper closes the connection (its body has its own deadline, in
/// `routes::body`). hyper needs a timer for that; axum-server sets none.
fn header_deadline(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    config: &Config,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(config.limits.read_timeout());
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let l = std::net::TcpListener::bind(addr)
        .map_err(|e| ServeError::Io(format!("cannot listen on {addr}: {e}")))?;
    l.set_nonblocking(true)
        .map_err(|e| ServeError::Io(format!("listener: {e}")))?;
    Ok(l)
}

fn local_addr(l: &std::net::TcpListener) -> Result<SocketAddr, ServeError> {
    l.local_addr()
        .map_err(|e| ServeError::Io(format!("listener: {e}")))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// JSON logs on stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
