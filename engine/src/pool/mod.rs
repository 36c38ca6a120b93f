//! `Pool`: pre-forked R workers, each its own process, driven from any thread.
//!
//! ```text
//!  host process (tokio, rayon, plain threads)            zygote (R started once)
//!  Pool ── Shared { idle stack, queue, spawner } ──────▶ fork ──▶ worker 1 (R, own pid,
//!    │ checkout ─▶ WorkerConn ══ socketpair + memfd page + memfd region ══▶   own temp dir)
//!    │ checkin  ◀─ healthy? back to idle : retire, spawner forks a new one    worker 2 ...
//! ```
//!
//! Owns the public API (builder, stateless calls, sessions, fresh workers, async
//! forms, shutdown). It must not fork (the zygote does) and must not block an async
//! runtime: the `_async` methods run the blocking call on tokio's blocking pool.
//!
//! A program that builds a pool must call [`crate::run_zygote_if_requested`] first
//! thing in `main`: the pool starts its zygote by re-executing that program (or the
//! one named by [`PoolBuilder::program`]), so R is never started, and fork never
//! called, in a multi-threaded host.

mod deadline;
mod session;
mod slots;
mod worker_conn;
pub mod worker_env;
mod zygote_handle;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rookery_ffi::Value;

pub use session::Session;

use crate::cancel::CancelHandle;
use crate::child::zygote::{InitStep, ZygoteConfig};
use crate::child::WorkerConfig;
use crate::protocol::{self, Request};
use crate::{Error, Evaluation};
use slots::Shared;
use worker_conn::{Answer, Limits, WorkerConn};

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Overrides the pool's call timeout for this call.
    pub timeout: Option<Duration>,
    /// Cancels the call when triggered from another thread.
    pub cancel: Option<CancelHandle>,
    /// Overrides the pool's cap on the call's result, in bytes (0: none); see
    /// [`PoolBuilder::max_result_bytes`].
    pub max_result_bytes: Option<u64>,
}

/// Settings fixed when the pool is built. See [`PoolBuilder`] for each trade-off.
#[derive(Debug)]
pub(crate) struct PoolConfig {
    pub workers: usize,
    pub spares: usize,
    pub call_timeout: Option<Duration>,
    pub max_result_bytes: u64,
    pub grace: Duration,
    pub max_queue: usize,
    pub queue_timeout: Duration,
    pub max_calls: Option<u64>,
    pub start_timeout: Duration,
    pub cpu_affinity: bool,
    pub worker_cgroups: bool,
    next_cpu: AtomicUsize,
}

impl PoolConfig {
    fn cpu_for_next(&self) -> Option<usize> {
        self.cpu_affinity.then(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            self.next_cpu.fetch_add(1, Ordering::Relaxed) % cpus
        })
    }
}

/// Builds a [`Pool`].
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    workers: usize,
    spares: usize,
    program: Option<PathBuf>,
    zygote: ZygoteConfig,
    call_timeout: Option<Duration>,
    max_result_bytes: u64,
    grace: Duration,
    max_queue: usize,
    queue_timeout: Duration,
    max_calls: Option<u64>,
    start_timeout: Duration,
    cpu_affinity: bool,
    worker_cgroups: bool,
    pass_env: Vec<String>,
    set_env: Vec<(String, String)>,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            spares: 1,
            program: None,
            zygote: ZygoteConfig {
                worker: WorkerConfig {
                    max_private_kb: 1 << 20,
                    ..WorkerConfig::default()
                },
                ..ZygoteConfig::default()
            },
            call_timeout: None,
            max_result_bytes: 0,
            grace: Duration::from_millis(500),
            max_queue: 1024,
            queue_timeout: Duration::from_secs(10),
            max_calls: None,
            start_timeout: Duration::from_secs(60),
            cpu_affinity: false,
            worker_cgroups: false,
            pass_env: Vec::new(),
            set_env: Vec::new(),
        }
    }
}

impl PoolBuilder {
    /// Number of warm workers (default: one per CPU).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Extra workers kept forked and ready beside the pool (default 1). A worker that
    /// dies, times out or is recycled is replaced by a spare at once (≈ 0.1 ms
    /// instead of a 2-4 ms fork); the spare is re-forked in the background. Each
    /// costs one idle worker's private memory (a few hundred kB).
    pub fn spares(mut self, n: usize) -> Self {
        self.spares = n;
        self
    }

    /// Attaches an R package in the zygote, so every worker has it loaded for free.
    pub fn preload(mut self, package: impl Into<String>) -> Self {
        self.zygote.preload.push(package.into());
        self
    }

    /// Runs R code in the zygote's global environment (after the preloads, in order):
    /// define scoring functions, `readRDS` models. Workers inherit the result.
    pub fn init(mut self, code: impl Into<String>) -> Self {
        self.zygote.init.push(InitStep::Code(code.into()));
        self
    }

    /// Sources an R file in the zygote's global environment, like [`PoolBuilder::init`].
    pub fn init_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.zygote.init.push(InitStep::File(path.into()));
        self
    }

    /// Extra R command-line arguments for the zygote.
    pub fn r_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.zygote.r_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// The program to re-execute as the zygote (default: this executable). It must
    /// call [`crate::run_zygote_if_requested`] first thing in `main`.
    pub fn program(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Some(path.into());
        self
    }

    /// Default deadline of every call (default: none). Past it the worker is
    /// interrupted, killed after the grace period, and replaced; the caller gets
    /// [`Error::Timeout`].
    pub fn call_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Default cap on a call's result, in bytes as it would travel (default 0: no
    /// cap). A larger value is refused in the worker, before it is encoded or
    /// copied to the caller: [`crate::RError::ResultTooLarge`]. Per call:
    /// [`CallOptions::max_result_bytes`].
    pub fn max_result_bytes(mut self, bytes: u64) -> Self {
        self.max_result_bytes = bytes;
        self
    }

    /// How long an interrupted call may take to unwind before SIGKILL (default
    /// 500 ms). Longer lets R run `on.exit` handlers; shorter frees the slot sooner.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// At most this many callers wait for a worker (default 1024); the next one gets
    /// [`Error::Busy`] at once.
    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = n;
        self
    }

    /// How long a caller waits for a worker before [`Error::Busy`] (default 10 s).
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// Retire a worker after this many calls (default: never). Bounds slow leaks in
    /// packages at the cost of one fork per `n` calls.
    pub fn max_calls(mut self, n: u64) -> Self {
        self.max_calls = Some(n.max(1));
        self
    }

    /// Retire a worker whose private memory passes `bytes` (default 1 GiB; checked
    /// every 32 calls, which costs about 50 µs each time).
    pub fn max_private_memory(mut self, bytes: u64) -> Self {
        self.zygote.worker.max_private_kb = (bytes / 1024).max(1);
        self
    }

    /// Pin worker `i` to CPU `i mod ncpu` (default off). Helps cache locality when
    /// the machine runs nothing else; hurts when it does.
    pub fn cpu_affinity(mut self, on: bool) -> Self {
        self.cpu_affinity = on;
        self
    }

    /// How long both sides poll for the next message before sleeping (default
    /// 100 µs). Polling saves two wake-ups per call (≈ 15 µs) for back-to-back calls
    /// and costs that much CPU after each call; zero always sleeps. A side whose
    /// previous wait outlasted the budget (slow calls, idle peers) sleeps at once,
    /// so slow calls do not pay for it.
    pub fn spin(mut self, spin: Duration) -> Self {
        self.zygote.worker.spin = spin;
        self
    }

    /// Keep large freed blocks mapped in workers (default on): a 1e6-double
    /// conversion is about 3x faster, at the cost of private memory held after a
    /// large call (bounded by [`PoolBuilder::max_private_memory`]).
    pub fn tune_malloc(mut self, on: bool) -> Self {
        self.zygote.worker.tune_malloc = on;
        self
    }

    /// The largest value a call may send or return, in bytes of its binary form
    /// (default 1 GiB). Larger ones fail with a clear error; the worker serves on.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.zygote.worker.max_payload = bytes.max(1 << 16);
        self
    }

    /// Confines the zygote (see [`crate::confine::Confinement`]) right after R
    /// starts, before preload and init: for pools that run code their host does not
    /// trust (a published service). Init code and every worker run inside it; each
    /// worker's temp dir is `worker-<pid>` inside the spec's `temp_dir`, which must be
    /// writable by its identity. If it cannot be applied, building the pool fails.
    pub fn confine(mut self, spec: crate::confine::Confinement) -> Self {
        self.zygote.confine = Some(spec);
        self
    }

    /// Gives every worker its own memory + pids cgroup (`rookery/w<zygote>-<pid>`,
    /// v2 with controllers or v1; needs root), made and joined when the worker is
    /// forked, so that [`crate::Session::confine`] only writes its limits
    /// ([`crate::confine::Confinement::cgroup_limits`]). On cgroup v1 a move costs an
    /// RCU grace period (≈ 10 ms): forked ahead, a spare pays it in the background.
    /// Building the pool fails if a cgroup cannot be made.
    pub fn worker_cgroups(mut self, on: bool) -> Self {
        self.worker_cgroups = on;
        self
    }

    /// Passes these variables of the host's environment through to the zygote and
    /// its workers. Nothing else of the host's environment reaches them beyond what R
    /// needs (see [`worker_env`]).
    pub fn pass_env(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.pass_env.extend(names.into_iter().map(Into::into));
        self
    }

    /// Sets `name` to `value` in the environment of the zygote and its workers
    /// (replacing a passed or inherited value): a pool's own settings.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_env.push((name.into(), value.into()));
        self
    }

    /// How long R start-up plus init may take in the zygote, and a worker its
    /// set-up (default 60 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts the zygote, runs preload and init there, and forks the workers.
    pub fn build(mut self) -> Result<Pool, Error> {
        self.zygote.worker.temp_on_first_use = self.zygote.confine.is_none();
        if std::env::var_os(crate::child::zygote::ZYGOTE_ENV).is_some() {
            return Err(Error::Spawn(
                "this process was started as a zygote but builds a pool: call \
                 rookery_engine::run_zygote_if_requested() first thing in main()"
                    .into(),
            ));
        }
        let program = match self.program {
            Some(p) => p,
            None => std::env::current_exe()
                .map_err(|e| Error::Spawn(format!("cannot find this executable: {e}")))?,
        };
        if self.worker_cgroups {
            crate::confine::Cgroup::sweep_stale_workers();
        }
        let env = worker_env::zygote_env(std::env::vars_os(), &self.pass_env, &self.set_env);
        let zygote =
            zygote_handle::Zygote::start(&program, &self.zygote, &env, self.start_timeout)?;
        let (respawn, wake) = crossbeam_channel::unbounded();
        let start = slots::ZygoteStart {
            program,
            config: self.zygote.clone(),
            env,
            timeout: self.start_timeout,
        };
        let config = PoolConfig {
            workers: self.workers,
            spares: self.spares,
            call_timeout: self.call_timeout,
            max_result_bytes: self.max_result_bytes,
            grace: self.grace,
            max_queue: self.max_queue,
            queue_timeout: self.queue_timeout,
            max_calls: self.max_calls,
            start_timeout: self.start_timeout,
            cpu_affinity: self.cpu_affinity,
            worker_cgroups: self.worker_cgroups,
            next_cpu: AtomicUsize::new(0),
        };
        let shared = Arc::new(Shared::new(zygote, start, config, respawn));
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("rookery-spawner".into())
            .spawn(move || slots::spawner(weak, wake))
            .map_err(|e| Error::Spawn(format!("spawner thread: {e}")))?;
        let pool = Pool { shared };
        pool.fill()?;
        // The spares are forked in the background.
        let _ = pool.shared.respawn.send(());
        Ok(pool)
    }
}

/// A pool of pre-forked R workers. Cheap to clone (an `Arc`); `Send + Sync`. The
/// last clone to drop shuts the pool down (see [`Pool::shutdown`]).
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("zygote", &self.shared.zygote().pid())
            .field("workers", &self.shared.config.workers)
            .finish()
    }
}

/// A snapshot of the pool, for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    pub zygote_pid: u32,
    /// Idle workers: (pid, calls served, private memory in kB).
    pub idle: Vec<(u32, u64, u64)>,
    pub busy: usize,
    pub waiting: usize,
    /// Spare workers ready to replace a retired one.
    pub spares: usize,
    /// Workers forked after the initial fill.
    pub respawned: u64,
    pub retired: u64,
    /// Zygotes started after the first, each because the one before had ended.
    pub zygote_restarts: u64,
}

fn _ensure_send_sync() {
    fn ensure<T: Send + Sync>() {}
    ensure::<Pool>();
}

impl Pool {
    /// A builder with the defaults documented on each of its methods.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// Forks the initial workers, in the calling thread, so `build` returns a warm pool.
    fn fill(&self) -> Result<(), Error> {
        for _ in 0..self.shared.config.workers {
            let w = self.shared.spawn_one()?;
            let mut st = self.shared.state.lock();
            st.live += 1;
            st.idle.push(w);
        }
        Ok(())
    }

    /// The cap on a call's result with `opts`, in bytes (0: none).
    pub(crate) fn result_limit(&self, opts: &CallOptions) -> u64 {
        opts.max_result_bytes
            .unwrap_or(self.shared.config.max_result_bytes)
    }

    fn limits<'a>(&self, opts: &'a CallOptions) -> Limits<'a> {
        Limits {
            timeout: opts.timeout.or(self.shared.config.call_timeout),
            grace: self.shared.config.grace,
            cancel: opts.cancel.as_ref(),
        }
    }

    /// Parses and evaluates `code` on an idle worker, statelessly: assignments live
    /// in a scratch environment that is dropped afterwards, and a worker whose global
    /// state changed is replaced before anyone else uses it.
    pub fn eval(&self, code: &str) -> Result<Evaluation, Error> {
        self.eval_with(code, &CallOptions::default())
    }

    /// [`Pool::eval`] with a deadline or a cancel handle.
    pub fn eval_with(&self, code: &str, opts: &CallOptions) -> Result<Evaluation, Error> {
        self.with_worker(|pool, w| eval_on(pool, w, code, opts, &[], None))
    }

    /// Calls the R function `function` (`"name"` or `"pkg::name"`) with `args`
    /// (`""` for a positional argument) on an idle worker, statelessly.
    pub fn call(&self, function: &str, args: &[(&str, &Value)]) -> Result<Value, Error> {
        self.call_with(function, args, &CallOptions::default())
    }

    /// [`Pool::call`] with a deadline or a cancel handle.
    pub fn call_with(
        &self,
        function: &str,
        args: &[(&str, &Value)],
        opts: &CallOptions,
    ) -> Result<Value, Error> {
        self.with_worker(|pool, w| call_on(pool, w, function, args, opts))
            .map(|ev| ev.value)
    }

    /// Whether `name` is bound to a function on the workers (in the global
    /// environment, which init code filled, or on the search path). The name is
    /// passed to R as data, never spliced into code.
    pub fn has_function(&self, name: &str) -> Result<bool, Error> {
        let found = self.call(
            "exists",
            &[
                ("", &Value::scalar_string(name)),
                ("mode", &Value::scalar_string("function")),
            ],
        )?;
        Ok(found.as_logicals().and_then(|l| l.first()?.to_option()) == Some(true))
    }

    /// Holds one worker for a series of calls that share state, until the session is
    /// dropped. The worker is checked and recycled afterwards like any other.
    pub fn session(&self) -> Result<Session, Error> {
        let w = self.shared.checkout()?;
        Session::open(self.clone(), w, false)
    }

    /// A session on a worker no one has used (pristine state), which is discarded
    /// when the session is dropped. It takes a pre-forked spare when there is one (and
    /// the spawner forks a new spare in the background); otherwise it forks one now.
    pub fn fresh_session(&self) -> Result<Session, Error> {
        let spare = {
            let mut st = self.shared.state.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            st.spares.pop()
        };
        if let Some(w) = spare {
            let _ = self.shared.respawn.send(());
            // A spare killed while it waited (OOM killer, an operator) is replaced
            // by a fork below; any other failure is the caller's.
            match Session::open(self.clone(), w, true) {
                Err(Error::WorkerDied { .. }) => {}
                other => return other,
            }
        }
        let w = self.shared.spawn_one()?;
        Session::open(self.clone(), w, true)
    }

    /// [`Pool::eval`] on tokio's blocking pool, for async callers.
    pub async fn eval_async(&self, code: impl Into<String>) -> Result<Evaluation, Error> {
        let pool = self.clone();
        let code = code.into();
        run_blocking(move || pool.eval(&code)).await
    }

    /// [`Pool::call`] on tokio's blocking pool, for async callers.
    pub async fn call_async(
        &self,
        function: impl Into<String>,
        args: Vec<(String, Value)>,
    ) -> Result<Value, Error> {
        let pool = self.clone();
        let function = function.into();
        run_blocking(move || {
            let args: Vec<(&str, &Value)> = args.iter().map(|(n, v)| (n.as_str(), v)).collect();
            pool.call(&function, &args)
        })
        .await
    }

    /// Current state of the pool. Reads each idle worker's memory from `/proc`.
    pub fn stats(&self) -> PoolStats {
        let mut stats = {
            let st = self.shared.state.lock();
            PoolStats {
                zygote_pid: self.shared.zygote().pid(),
                idle: st.idle.iter().map(|w| (w.pid, w.calls, 0)).collect(),
                busy: st.out,
                waiting: st.waiting,
                spares: st.spares.len(),
                respawned: st.spawned,
                retired: st.retired,
                zygote_restarts: self.shared.zygote_restarts(),
            }
        };
        // Reading smaps_rollup takes about 0.2 ms per worker: never under the lock
        // that every checkout takes.
        for (pid, _, kb) in &mut stats.idle {
            *kb = crate::child::private_memory_kb_of(&pid.to_string()).unwrap_or(0);
        }
        stats
    }

    /// Number of workers the pool keeps.
    pub fn size(&self) -> usize {
        self.shared.config.workers
    }

    /// Stops taking calls, waits up to `drain` for calls in flight to finish, then
    /// stops every worker and the zygote, reaping them all. Later calls get
    /// [`Error::Closed`]. Idempotent; dropping the last clone does it with a 30 s drain.
    pub fn shutdown(&self, drain: Duration) {
        shutdown(&self.shared, drain);
    }

    /// Runs `f` on a checked-out worker and checks it back in, whatever happens. A
    /// worker found dead before it took the request (it died while idle: OOM killer,
    /// an operator's `kill`) is replaced and the call goes to another worker; its
    /// caller never sees that death.
    fn with_worker<T>(
        &self,
        mut f: impl FnMut(&Pool, &mut WorkerConn) -> Result<T, Error>,
    ) -> Result<T, Error> {
        loop {
            let mut w = self.shared.checkout()?;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self, &mut w)));
            let retry = w.undelivered && matches!(result, Ok(Err(Error::WorkerDied { .. })));
            if result.is_err() {
                w.broken = true;
            }
            self.shared.checkin(w);
            match result {
                Ok(_) if retry => continue,
                Ok(result) => return result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        debug_assert_eq!(st.out, 0, "a worker is still checked out as the pool drops");
        st.closed = true;
        let mut idle = std::mem::take(&mut st.idle);
        idle.append(&mut st.spares);
        stop_workers(&mut idle);
        self.zygote().shut_down(Duration::from_secs(5));
    }
}

fn shutdown(shared: &Shared, drain: Duration) {
    let deadline = std::time::Instant::now() + drain;
    let mut st = shared.state.lock();
    st.closed = true;
    shared.available.notify_all();
    while st.out > 0 {
        if shared.available.wait_until(&mut st, deadline).timed_out() {
            break;
        }
    }
    let mut idle = std::mem::take(&mut st.idle);
    st.live -= idle.len();
    idle.append(&mut st.spares);
    drop(st);
    stop_workers(&mut idle);
    // The zygote kills and reaps whatever is left (a spare forked meanwhile, a
    // worker still held past the drain) before it exits.
    shared.zygote().shut_down(Duration::from_secs(5));
}

/// Asks each worker to exit, waits briefly, and kills those still running.
fn stop_workers(workers: &mut Vec<WorkerConn>) {
    for w in workers.iter_mut() {
        w.retire();
    }
    for w in workers.drain(..) {
        if !w.wait_exit(Duration::from_millis(500)) {
            w.kill();
        }
    }
}

pub(crate) fn eval_on(
    pool: &Pool,
    w: &mut WorkerConn,
    code: &str,
    opts: &CallOptions,
    bindings: &[(&str, &Value)],
    oob: Option<&mut crate::OobSink<'_>>,
) -> Result<Evaluation, Error> {
    let limits = pool.limits(opts);
    let answer = w.request_with_oob(limits, oob, |id, region| {
        let bindings = bindings
            .iter()
            .map(|(name, v)| {
                protocol::put_value(v, region, protocol::DEFAULT_INLINE_LIMIT)
                    .map(|p| ((*name).to_owned(), p))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Request::Eval {
            id,
            code: code.to_owned(),
            bindings,
            max_result: pool.result_limit(opts),
        })
    })?;
    Ok(evaluation(answer))
}

pub(crate) fn call_on(
    pool: &Pool,
    w: &mut WorkerConn,
    function: &str,
    args: &[(&str, &Value)],
    opts: &CallOptions,
) -> Result<Evaluation, Error> {
    let answer = w.request(pool.limits(opts), |id, region| {
        let args = args
            .iter()
            .map(|(name, v)| {
                protocol::put_value(v, region, protocol::DEFAULT_INLINE_LIMIT)
                    .map(|p| ((*name).to_owned(), p))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Request::Call {
            id,
            function: function.to_owned(),
            args,
            max_result: pool.result_limit(opts),
        })
    })?;
    Ok(evaluation(answer))
}

pub(crate) fn evaluation(answer: Answer) -> Evaluation {
    Evaluation {
        value: answer.value,
        visible: answer.visible,
        output: answer.output,
        printed: None,
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(Error::Panicked(e.to_string())),
    }
}
