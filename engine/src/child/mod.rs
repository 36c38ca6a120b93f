//! The child side of a worker: what runs in the zygote and in the processes forked
//! from it. The parent's side of the same worker is `crate::pool::worker_conn`.
//!
//! This module: how a forked worker sets itself up and serves requests.
//!
//! Owns the worker's life from the moment `fork` returns in the child until `_exit`:
//! set-up (own process group, death signal, closed fds, SIGINT as an R interrupt, own
//! temp dir, fd-level output capture), then a loop that answers one request at a time
//! over its [`Channel`]. It must never return into the zygote's code and never run
//! R's exit path: every way out is [`fork::exit_now`].
//!
//! Stateless requests evaluate in a scratch environment whose parent is the global
//! environment, so ordinary assignments vanish with it. After each one the worker
//! checks, with pointer comparisons, that nothing else changed (global bindings,
//! `options()`, search path, namespaces, connections, sinks, devices, working
//! directory, temp dir); if something did, it tells the parent to retire it, and a
//! fresh fork takes its place. A session (`Open` .. `Reset`) keeps one environment
//! and is checked the same way when it ends.

pub(crate) mod confine;
pub(crate) mod fork;
mod oob;
pub(crate) use oob::NOT_ALLOWED as OOB_NOT_ALLOWED;
mod qap;
mod sockio;
pub(crate) mod zygote;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rookery_ffi::{Environment, Error as RError, FdCapture, Output, Protected, RToken, Value};
use serde::{Deserialize, Serialize};

use crate::channel::{Channel, LinkFds, Received, Watch};
use crate::protocol::{self, Payload, ProtocolError, Request, Response};

/// How a worker behaves; chosen by the pool builder, fixed for the pool's life.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerConfig {
    /// How long the worker polls for the next request before it sleeps.
    pub spin: Duration,
    /// Check private memory every this many calls (0: never).
    pub memory_check_every: u32,
    /// Retire once private memory passes this many kB (0: no limit).
    pub max_private_kb: u64,
    /// Values up to this many codec bytes travel inside the frame.
    pub inline_limit: usize,
    /// Tune malloc so large vectors reuse pages (see [`fork::tune_malloc`]).
    pub tune_malloc: bool,
    /// The largest request or answer, in bytes (caps the shared region).
    pub max_payload: usize,
    /// The seccomp deny list to install at the end of set-up, if any. Set by a
    /// confined zygote for its workers.
    pub seccomp: Option<confine::DenyList>,
    /// Make R's temp dir before the first call that runs R code rather than at
    /// set-up. For an unconfined zygote's workers, which a session may confine
    /// first (with the session's temp dir, so theirs is never made). A confined
    /// zygote's workers make it at set-up, where a failure fails the pool's build.
    pub temp_on_first_use: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            spin: Duration::from_micros(100),
            memory_check_every: 32,
            max_private_kb: 0,
            inline_limit: protocol::DEFAULT_INLINE_LIMIT,
            tune_malloc: true,
            max_payload: crate::shm::DEFAULT_MAX_CAPACITY,
            seccomp: None,
            temp_on_first_use: false,
        }
    }
}

/// Where worker `pid` keeps its R temp dir: inside the zygote's, so that the zygote
/// removes it after reaping the worker (and at exit, with its own).
pub(crate) fn worker_temp_dir(base: &Path, pid: u32) -> PathBuf {
    base.join(format!("worker-{pid}"))
}

/// The forked child's entry point. Never returns.
pub(crate) fn worker_main(
    r: RToken<'static>,
    link: LinkFds,
    config: &WorkerConfig,
    cpu: Option<usize>,
    tmp_base: &Path,
) -> ! {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        match set_up(r, link, config, cpu, tmp_base) {
            Ok(worker) => worker.run(),
            Err(e) => {
                eprintln!("rookery worker {}: set-up failed: {e}", std::process::id());
                71
            }
        }
    }));
    fork::exit_now(run.unwrap_or(101))
}

fn set_up<'r>(
    r: RToken<'r>,
    link: LinkFds,
    config: &WorkerConfig,
    cpu: Option<usize>,
    tmp_base: &Path,
) -> std::io::Result<Worker<'r>> {
    // A session and process group of its own: the pool can kill the group (all it
    // started), and neither it nor its children share the server's controlling
    // terminal.
    rustix::process::setsid()?;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    // First in line for the OOM killer (raising needs no privilege). A confined
    // zygote's worker cannot open /proc: the pool sets it from outside instead.
    let _ = crate::oom::set_own(crate::oom::WORKER);
    let keep = [
        link.socket.as_raw_fd(),
        link.mailbox.as_raw_fd(),
        link.region.as_raw_fd(),
        link.handoff.as_raw_fd(),
    ];
    fork::close_fds_except(&keep)?;
    if let Some(cpu) = cpu {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu % rustix::thread::CpuSet::MAX_CPU);
        rustix::thread::sched_setaffinity(None, &set)?;
    }
    fork::install_signal_dispositions()?;
    if config.tune_malloc {
        fork::tune_malloc();
    }
    let pid = std::process::id();
    // With `temp_on_first_use`, the temp dir is made before the first call that runs
    // R code (`Worker::ensure_temp`).
    let temp_dir = worker_temp_dir(tmp_base, pid);
    rookery_ffi::set_temp_dir(r, &temp_dir).map_err(std::io::Error::other)?;
    std::env::set_var("TMPDIR", &temp_dir);
    // From here on the worker's stdout and stderr are its own in-memory file: the
    // host's (its log) are closed in it before any user code runs.
    let mut capture = FdCapture::new()?;
    capture.take_over()?;
    let channel = Channel::from_fds(link, config.spin, config.max_payload)?;
    if let Some(filter) = config.seccomp {
        confine::install_seccomp(filter)?;
    }
    let mut worker = Worker {
        r,
        channel,
        capture,
        config: config.clone(),
        scratch: None,
        session: None,
        cwd: std::env::current_dir()?,
        temp: TempDir {
            path: temp_dir,
            fd: None,
            mtime: None,
        },
        calls: 0,
        proc_files: ProcFiles::open(),
        qap_in: Vec::new(),
        qap_out: Vec::new(),
        skip_drain: false,
        request_id: 0,
        direct_oob: None,
        parsed: ParseCache::new(),
        result_limit: 0,
    };
    if !config.temp_on_first_use {
        worker.ensure_temp().map_err(std::io::Error::other)?;
    }
    Ok(worker)
}

/// `/proc/self` files the memory check reads, opened before confinement (Landlock
/// then hides `/proc`).
struct ProcFiles {
    statm: Option<std::fs::File>,
    smaps_rollup: Option<std::fs::File>,
}

impl ProcFiles {
    fn open() -> ProcFiles {
        ProcFiles {
            statm: std::fs::File::open("/proc/self/statm").ok(),
            smaps_rollup: std::fs::File::open("/proc/self/smaps_rollup").ok(),
        }
    }
}

/// The whole of an open `/proc` file, read from its start.
fn read_proc(file: Option<&std::fs::File>) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let file = file?;
    let mut buf = vec![0u8; 4096];
    let n = file.read_at(&mut buf, 0).ok()?;
    buf.truncate(n);
    String::from_utf8(buf).ok()
}

struct Worker<'r> {
    r: RToken<'r>,
    channel: Channel,
    capture: FdCapture,
    config: WorkerConfig,
    /// The environment of stateless calls; replaced when a call leaves bindings in it.
    scratch: Option<Environment<'r>>,
    /// The environment of the open session.
    session: Option<Environment<'r>>,
    cwd: PathBuf,
    /// The temp dir, open: its mtime changes when a file is created or removed in it.
    temp: TempDir,
    calls: u64,
    proc_files: ProcFiles,
    /// QAP1 direct mode's message buffers, kept between messages.
    qap_in: Vec<u8>,
    /// Set while serving QAP1 directly, where no call's output is read.
    skip_drain: bool,
    qap_out: Vec<u8>,
    /// The request being answered: OOB messages over the link name it.
    request_id: u64,
    /// Set while serving QAP1 directly: R code's OOB messages go straight to the
    /// client (see [`oob`]).
    direct_oob: Option<oob::Direct>,
    parsed: ParseCache<'r>,
    /// The cap on the current request's result, in bytes (0: none).
    result_limit: u64,
}

/// The parsed form of code strings evaluated before: a client that sends the same
/// code again and again (a loop over `RS.eval`, the fixed code behind serEval and
/// `RS.eval.qap`) pays R's parser once. Evaluating a parsed expression leaves it as
/// it was (R copies language objects before changing them), so reusing it is what
/// a fresh parse would give. Bounded: code up to [`ParseCache::MAX_CODE`] bytes, at
/// most [`ParseCache::MAX_ENTRIES`] of them (emptied when full).
struct ParseCache<'r> {
    entries: std::collections::HashMap<String, Protected<'r>>,
}

impl<'r> ParseCache<'r> {
    const MAX_CODE: usize = 4096;
    const MAX_ENTRIES: usize = 64;

    fn new() -> Self {
        ParseCache {
            entries: std::collections::HashMap::new(),
        }
    }

    /// Takes the parse of `code` out of the cache, if it is there, with the key to
    /// put it back under (no new string for a code seen before).
    fn take(&mut self, code: &str) -> (String, Option<Protected<'r>>) {
        match self.entries.remove_entry(code) {
            Some((key, exprs)) => (key, Some(exprs)),
            None => (code.to_owned(), None),
        }
    }

    fn put(&mut self, code: String, exprs: Protected<'r>) {
        if code.len() > Self::MAX_CODE {
            return;
        }
        if self.entries.len() >= Self::MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(code, exprs);
    }
}

/// What a request produced, before it is written back.
type Outcome = Result<(Value, bool, Output), RError>;

impl<'r> Worker<'r> {
    fn run(mut self) -> i32 {
        let ready = Response::Ready {
            pid: std::process::id(),
        };
        if self.channel.send(|_| Ok(ready)).is_err() {
            return 72;
        }
        loop {
            match self.channel.recv::<Request>(Watch::default(), None) {
                Ok(Received::Message(Request::Shutdown)) | Ok(Received::Hangup) => return 0,
                Ok(Received::Message(request)) => {
                    if let Err(e) = self.handle(request) {
                        eprintln!("rookery worker {}: {e}", std::process::id());
                        return 72;
                    }
                }
                Ok(Received::PeerExited | Received::Cancelled | Received::TimedOut) => {}
                Err(e) => {
                    eprintln!("rookery worker {}: {e}", std::process::id());
                    return 72;
                }
            }
        }
    }

    fn handle(&mut self, request: Request) -> Result<(), ProtocolError> {
        self.request_id = request.id().unwrap_or(0);
        self.result_limit = 0;
        if let Request::Eval { id, .. }
        | Request::Call { id, .. }
        | Request::Assign { id, .. }
        | Request::Get { id, .. } = &request
        {
            if let Err(e) = self.ensure_temp() {
                return self.reply(*id, Err(e));
            }
        }
        match request {
            Request::Eval {
                id,
                code,
                bindings,
                max_result,
            } => {
                self.result_limit = max_result;
                let outcome = match self.take_args(bindings) {
                    Ok(bindings) => self.eval_code(&code, &bindings),
                    Err(e) => Err(e),
                };
                self.reply(id, outcome)
            }
            Request::Call {
                id,
                function,
                args,
                max_result,
            } => {
                self.result_limit = max_result;
                let outcome = match self.take_args(args) {
                    Ok(args) => self.evaluate(|r, env| call_in(r, env, &function, &args)),
                    Err(e) => Err(e),
                };
                self.reply(id, outcome)
            }
            Request::Assign { id, name, value } => {
                let outcome = self.assign(&name, &value);
                self.reply(id, outcome)
            }
            Request::Get {
                id,
                name,
                max_result,
            } => {
                self.result_limit = max_result;
                let outcome = self.get(&name);
                self.reply(id, outcome)
            }
            Request::Open { id, global } => {
                let env = if global {
                    self.r.global_env()
                } else {
                    self.r.new_env(None)
                };
                let outcome = env.map(|env| {
                    self.session = Some(env);
                    (Value::NULL, false, Output::default())
                });
                self.reply(id, outcome)
            }
            Request::Reset { id } => {
                self.session = None;
                self.reply(id, Ok((Value::NULL, false, Output::default())))
            }
            Request::Confine { id, spec } => {
                let outcome = self
                    .confine(&spec)
                    .map(|()| (Value::NULL, false, Output::default()));
                self.reply(id, outcome)
            }
            Request::ServeQap { id, options } => self.serve_qap(id, options),
            // Only ever sent while a call waits for it (`oob::over_link`).
            Request::OobReply { id, .. } => Err(ProtocolError::Io(std::io::Error::other(format!(
                "an OOB reply for request {id}, which sent no OOB message"
            )))),
            Request::Shutdown => Ok(()),
        }
    }

    /// Binds `bindings`, then evaluates `code` (parsed once: the parse of a code
    /// string seen before is reused, see [`ParseCache`]).
    fn eval_code(&mut self, code: &str, bindings: &[(String, Value)]) -> Outcome {
        let (key, mut parsed) = self.parsed.take(code);
        let outcome = self.evaluate(|r, env| {
            for (name, value) in bindings {
                r.assign(Some(env), name, &r.from_value(value)?)?;
            }
            let exprs = match parsed.take() {
                Some(exprs) => exprs,
                None => r.parse(code)?,
            };
            let result = r.eval_many(&exprs, Some(env));
            parsed = Some(exprs);
            result
        });
        if let Some(exprs) = parsed {
            self.parsed.put(key, exprs);
        }
        outcome
    }

    /// Locks this worker in (see [`confine::enter`]) and remembers its new working
    /// directory and temp dir for the state checks.
    fn confine(&mut self, spec: &crate::confine::Confinement) -> Result<(), RError> {
        confine::enter(self.r, spec)
            .map_err(|e| RError::InvalidValue(format!("confinement: {e}")))?;
        if let Some(temp) = &spec.temp_dir {
            self.temp.path = temp.clone();
            self.temp.fd = None;
            self.ensure_temp()
                .map_err(|e| RError::InvalidValue(format!("confinement: {e}")))?;
        }
        if let Some(dir) = &spec.workdir {
            self.cwd = dir.clone();
        }
        Ok(())
    }

    /// Makes R's temp dir if it is not there yet, and remembers its state for the
    /// checks after stateless calls.
    fn ensure_temp(&mut self) -> Result<(), RError> {
        if self.temp.fd.is_some() {
            return Ok(());
        }
        let path = &self.temp.path;
        match std::fs::create_dir(path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(RError::InvalidValue(format!(
                    "temp dir {}: {e}",
                    path.display()
                )))
            }
            _ => {}
        }
        let fd = std::fs::File::open(path)
            .map_err(|e| RError::InvalidValue(format!("temp dir {}: {e}", path.display())))?;
        self.temp.mtime = mtime(&fd);
        self.temp.fd = Some(fd);
        Ok(())
    }

    /// Runs `f` in the session's environment, or in the scratch environment of a
    /// stateless call, and collects its value and output.
    fn evaluate<F>(&mut self, f: F) -> Outcome
    where
        F: FnOnce(RToken<'r>, &Environment<'r>) -> Result<rookery_ffi::Evaluated<'r>, RError>,
    {
        self.evaluate_with(f, |r, value| r.to_value(value))
    }

    /// [`Worker::evaluate`] with the result turned into `T` by `convert` (a
    /// [`Value`], or bytes written straight from R's memory).
    fn evaluate_with<F, T>(
        &mut self,
        f: F,
        convert: impl FnOnce(RToken<'r>, &Protected<'r>) -> Result<T, RError>,
    ) -> Result<(T, bool, Output), RError>
    where
        F: FnOnce(RToken<'r>, &Environment<'r>) -> Result<rookery_ffi::Evaluated<'r>, RError>,
    {
        self.calls += 1;
        let r = self.r;
        self.env()?;
        let env = self
            .session
            .as_ref()
            .or(self.scratch.as_ref())
            .expect("made by env()");
        let run = || {
            f(r, env).and_then(|ev| match convert(r, &ev.value) {
                Ok(value) => Ok((value, ev.visible, ev.output)),
                // The code ran; keep what it printed and warned with the error.
                Err(RError::Unsupported { r_type, .. }) => Err(RError::Unsupported {
                    r_type,
                    output: Box::new(ev.output),
                }),
                Err(e) => Err(e),
            })
        };
        // R code's OOB messages (Rserve's `self.oobSend`, `self.oobMessage`) go to
        // the client itself in direct mode, else over the link to the server.
        let mut outcome = match &self.direct_oob {
            Some(direct) => {
                let mut relay = |req| direct.relay(r, req);
                rookery_ffi::with_oob_handler(r, &mut relay, run)
            }
            None => {
                let (channel, id) = (&mut self.channel, self.request_id);
                let inline = self.config.inline_limit;
                let mut relay = |req| oob::over_link(channel, id, inline, req);
                rookery_ffi::with_oob_handler(r, &mut relay, run)
            }
        };
        // In QAP1 direct mode nobody reads the output: drain it now and then only,
        // so the capture file stays small without a system call per call.
        if !self.skip_drain || self.calls % 256 == 0 {
            let text = self.capture.drain().unwrap_or_default();
            if !text.is_empty() {
                append_output(&mut outcome, &String::from_utf8_lossy(&text));
            }
        }
        rookery_ffi::clear_interrupt(r);
        if self.session.is_none() && self.scratch.as_ref().is_some_and(|s| r.env_len(s) > 0) {
            self.scratch = None;
        }
        outcome
    }

    fn env(&mut self) -> Result<&Environment<'r>, RError> {
        if self.session.is_none() && self.scratch.is_none() {
            self.scratch = Some(self.r.new_env(None)?);
        }
        Ok(self
            .session
            .as_ref()
            .or(self.scratch.as_ref())
            .expect("set above"))
    }

    fn take_args(&mut self, args: Vec<(String, Payload)>) -> Result<Vec<(String, Value)>, RError> {
        args.into_iter()
            .map(|(name, payload)| {
                protocol::take_value(&payload, self.channel.region())
                    .map(|v| (name, v))
                    .map_err(|e| RError::InvalidValue(format!("argument: {e}")))
            })
            .collect()
    }

    fn assign(&mut self, name: &str, payload: &Payload) -> Outcome {
        let value = protocol::take_value(payload, self.channel.region())
            .map_err(|e| RError::InvalidValue(format!("value: {e}")))?;
        let r = self.r;
        let object = r.from_value(&value)?;
        let env = self.env()?;
        r.assign(Some(env), name, &object)?;
        Ok((Value::NULL, false, Output::default()))
    }

    fn get(&mut self, name: &str) -> Outcome {
        let r = self.r;
        let env = self.env()?;
        match r.get(Some(env), name)? {
            Some(object) => Ok((r.to_value(&object)?, true, Output::default())),
            None => Err(RError::R {
                message: format!("object '{name}' not found"),
                call: None,
                classes: vec!["simpleError".into(), "error".into(), "condition".into()],
                output: Box::default(),
            }),
        }
    }

    fn reply(&mut self, id: u64, outcome: Outcome) -> Result<(), ProtocolError> {
        let retire = self.retire_reason();
        let inline_limit = self.config.inline_limit;
        let outcome = outcome.and_then(|done| {
            // Refused here, before the value is encoded or copied to the caller.
            let limit = self.result_limit;
            let bytes = if limit > 0 {
                rookery_ffi::value::codec::encoded_len(&done.0) as u64
            } else {
                0
            };
            if bytes > limit {
                return Err(RError::ResultTooLarge { bytes, limit });
            }
            Ok(done)
        });
        let (value, visible, output) = match outcome {
            Ok(done) => done,
            Err(error) => {
                return self
                    .channel
                    .send(|_| Ok(Response::Err { id, error, retire }));
            }
        };
        let sent = self.channel.send(|region| {
            let value = protocol::put_value(&value, region, inline_limit)?;
            Ok(Response::Ok {
                id,
                value,
                visible,
                output,
                retire: retire.clone(),
            })
        });
        match sent {
            Err(ProtocolError::Shm(e)) => {
                let error = RError::InvalidValue(format!("result too large to return: {e}"));
                self.channel
                    .send(|_| Ok(Response::Err { id, error, retire }))
            }
            other => other,
        }
    }

    /// Why this worker must not serve another caller, if it must not.
    fn retire_reason(&mut self) -> Option<String> {
        if self.session.is_some() {
            return None;
        }
        let r = self.r;
        match r.state_changes() {
            Ok(c) if c.any() => return Some(format!("session state changed: {c:?}")),
            Ok(_) => {}
            Err(e) => return Some(format!("cannot check session state: {e}")),
        }
        if std::env::current_dir().ok().as_ref() != Some(&self.cwd) {
            return Some("working directory changed".into());
        }
        if self.temp.fd.as_ref().and_then(mtime) != self.temp.mtime {
            return Some("files were left in the temp dir".into());
        }
        self.memory_reason()
    }

    fn memory_reason(&self) -> Option<String> {
        let every = u64::from(self.config.memory_check_every);
        if self.config.max_private_kb == 0 || every == 0 || self.calls % every != 0 {
            return None;
        }
        // statm is O(1); smaps_rollup walks every page table entry (≈ 0.2 ms for an R
        // process), so read it only when the anonymous memory could be over the limit.
        let statm = read_proc(self.proc_files.statm.as_ref())?;
        if anonymous_memory_kb(&statm)? <= self.config.max_private_kb {
            return None;
        }
        let kb = private_memory_kb_in(&read_proc(self.proc_files.smaps_rollup.as_ref())?)?;
        (kb > self.config.max_private_kb).then(|| {
            format!(
                "private memory {kb} kB is over the limit of {} kB",
                self.config.max_private_kb
            )
        })
    }
}

fn call_in<'r>(
    r: RToken<'r>,
    env: &Environment<'r>,
    function: &str,
    args: &[(String, Value)],
) -> Result<rookery_ffi::Evaluated<'r>, RError> {
    let objects = args
        .iter()
        .map(|(_, v)| r.from_value(v))
        .collect::<Result<Vec<_>, _>>()?;
    let named: Vec<(Option<&str>, &Protected<'r>)> = args
        .iter()
        .zip(&objects)
        .map(|((n, _), p)| ((!n.is_empty()).then_some(n.as_str()), p))
        .collect();
    let call = r.make_call(function, &named)?;
    r.eval_protected(&call, Some(env))
}

fn append_output<T>(outcome: &mut Result<(T, bool, Output), RError>, text: &str) {
    match outcome {
        Ok((_, _, output)) => output.stdout.push_str(text),
        Err(
            RError::R { output, .. }
            | RError::Interrupted { output }
            | RError::Unsupported { output, .. },
        ) => output.stdout.push_str(text),
        Err(_) => {}
    }
}

/// R's temp dir (`tempdir()`, `TMPDIR`): made on first use.
struct TempDir {
    path: PathBuf,
    /// Open once the dir exists.
    fd: Option<std::fs::File>,
    /// Its modification time when it was opened: files left in it change it.
    mtime: Option<(i64, i64)>,
}

/// The directory's mtime as (seconds, nanoseconds), by `fstat` on its open fd (no
/// path lookup: this runs after every call).
fn mtime(dir: &std::fs::File) -> Option<(i64, i64)> {
    let st = rustix::fs::fstat(dir).ok()?;
    Some((st.st_mtime as i64, st.st_mtime_nsec as i64))
}

/// This process's resident anonymous memory in kB (`/proc/self/statm`: resident
/// minus file-backed and shared-memory pages): an upper bound of its private memory,
/// since pages shared copy-on-write with the zygote count here too.
fn anonymous_memory_kb(text: &str) -> Option<u64> {
    let mut fields = text
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>().ok());
    let resident = fields.next()??;
    let shared = fields.next()??;
    let page_kb = rustix::param::page_size() as u64 / 1024;
    Some(resident.saturating_sub(shared) * page_kb)
}

/// Private memory of process `pid` ("self" for this one), in kB.
pub(crate) fn private_memory_kb_of(pid: &str) -> Option<u64> {
    private_memory_kb_in(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

/// `Private_Clean + Private_Dirty` of a `smaps_rollup` text, in kB.
fn private_memory_kb_in(text: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(field("Private_Clean:")? + field("Private_Dirty:")?)
}
