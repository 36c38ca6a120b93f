//! `LocalR`: R in this process, on a thread of its own.
//!
//! R is single-threaded and can start only once per process, so [`LocalR::start`]
//! spawns one thread with a large stack, starts R there (with a C stack limit that
//! matches that stack), and serves jobs from a channel until the process exits.
//! A [`LocalR`] is a cheap, cloneable, `Send + Sync` handle to that thread.
//!
//! Jobs are closures that receive the thread's [`RToken`]; the typed methods
//! ([`LocalR::eval`], [`LocalR::call`], ...) are built on [`LocalR::with`]. A panic in a
//! job is caught on the R thread and returned as [`Error::Panicked`]; R itself never
//! sees it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::OnceLock;

use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TryRecvError};
use rookery_ffi::{FdCapture, Output, RToken, StartOptions, Value};

use crate::Error;

type Job = Box<dyn FnOnce(RToken<'static>) + Send>;

/// How to start the in-process R.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Start-up options for R itself.
    pub start: StartOptions,
    /// Stack size of the R thread. R's C stack limit is set from it, so deep recursion
    /// becomes an R error ("C stack usage is too close to the limit") well before the
    /// guard page. Default 64 MiB (address space only; pages are touched on use).
    pub stack_size: usize,
    /// Also capture what is written to file descriptors 1 and 2 during each call
    /// (`system()`, C code calling `printf`). This redirects the whole process's
    /// stdout and stderr for the duration of each call, so it is off by default in a
    /// host process.
    pub capture_fd_output: bool,
    /// How long the R thread, and a caller waiting for its answer, poll before they
    /// sleep. Polling saves the two thread wake-ups (several microseconds each) of a
    /// call that follows soon after the last, at the cost of that much CPU after each
    /// call. Zero sleeps at once.
    pub spin: Duration,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            start: StartOptions::default(),
            stack_size: 64 << 20,
            capture_fd_output: false,
            spin: Duration::from_micros(50),
        }
    }
}

/// The result of an evaluation: the value, its visibility, and what the call printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub value: Value,
    /// False for invisible results (`x <- 1`, `invisible(x)`).
    pub visible: bool,
    pub output: Output,
    /// The value as R's `print()` shows it, when asked for.
    pub printed: Option<String>,
}

/// A handle to the in-process R thread. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct LocalR {
    jobs: Sender<Job>,
    spin: Duration,
}

static LOCAL: OnceLock<Result<LocalR, Error>> = OnceLock::new();

fn _ensure_send_sync() {
    fn ensure<T: Send + Sync>() {}
    ensure::<LocalR>();
}

impl LocalR {
    /// Starts R on its own thread, or returns the handle if it is already running.
    /// Only the first call's options take effect (R runs once per process).
    pub fn start(opts: LocalOptions) -> Result<LocalR, Error> {
        LOCAL.get_or_init(|| spawn(opts)).clone()
    }

    /// Runs `f` on the R thread and returns its result.
    pub fn with<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(RToken<'static>) -> T + Send + 'static,
    {
        let (tx, rx) = bounded(1);
        let job: Job = Box::new(move |r| {
            let out = catch_unwind(AssertUnwindSafe(|| f(r))).map_err(panic_message);
            let _ = tx.send(out);
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Stopped("the R thread is not running".into()))?;
        recv_spinning(&rx, self.spin)
            .ok_or_else(|| Error::Stopped("the R thread dropped the job".into()))?
            .map_err(Error::Panicked)
    }

    /// Parses and evaluates `code` in the global environment.
    pub fn eval(&self, code: &str) -> Result<Evaluation, Error> {
        self.eval_with(code, false)
    }

    /// Like [`LocalR::eval`], and also renders the value with R's `print()`.
    pub fn eval_print(&self, code: &str) -> Result<Evaluation, Error> {
        self.eval_with(code, true)
    }

    fn eval_with(&self, code: &str, print: bool) -> Result<Evaluation, Error> {
        let code = code.to_owned();
        self.with(move |r| {
            captured(r, |r| {
                let ev = r.eval_str(&code, None)?;
                finish(r, ev, print)
            })
        })?
    }

    /// Calls the R function `fun` with values as arguments: `("", v)` is positional,
    /// `("name", v)` is `name = v`.
    pub fn call(&self, fun: &str, args: Vec<(String, Value)>) -> Result<Evaluation, Error> {
        let fun = fun.to_owned();
        self.with(move |r| {
            captured(r, |r| {
                let refs: Vec<(&str, &Value)> = args.iter().map(|(n, v)| (n.as_str(), v)).collect();
                let ev = r.call(&fun, &refs)?;
                finish(r, ev, false)
            })
        })?
    }

    /// Binds `name` to `value` in the global environment.
    pub fn assign(&self, name: &str, value: Value) -> Result<(), Error> {
        let name = name.to_owned();
        self.with(move |r| {
            let x = r.from_value(&value)?;
            r.assign(None, &name, &x).map_err(Error::from)
        })?
    }

    /// The value bound to `name` (searching from the global environment), if any.
    pub fn get(&self, name: &str) -> Result<Option<Value>, Error> {
        let name = name.to_owned();
        self.with(move |r| match r.get(None, &name)? {
            Some(x) => Ok(Some(r.to_value(&x)?)),
            None => Ok(None),
        })?
    }

    /// Evaluates an R source file in the global environment.
    pub fn source(&self, path: impl Into<PathBuf>) -> Result<Evaluation, Error> {
        let path = path.into();
        self.with(move |r| {
            captured(r, |r| {
                let ev = r.source_file(&path, None)?;
                finish(r, ev, false)
            })
        })?
    }

    /// Interrupts the evaluation running now (if any); it fails with
    /// `rookery_ffi::Error::Interrupted`. Callable from any thread.
    pub fn interrupt(&self) {
        rookery_ffi::interrupt();
    }
}

fn finish(r: RToken<'_>, ev: rookery_ffi::Evaluated<'_>, print: bool) -> Result<Evaluation, Error> {
    let printed = if print && ev.visible {
        Some(r.print(&ev.value)?)
    } else {
        None
    };
    Ok(Evaluation {
        value: r.to_value(&ev.value)?,
        visible: ev.visible,
        output: ev.output,
        printed,
    })
}

thread_local! {
    static FD_CAPTURE: std::cell::RefCell<Option<FdCapture>> = const { std::cell::RefCell::new(None) };
}

/// Runs one call, with fd-level capture around it when it is enabled, and appends what
/// the descriptors received to the call's stdout (on success or failure).
fn captured<F>(r: RToken<'_>, f: F) -> Result<Evaluation, Error>
where
    F: FnOnce(RToken<'_>) -> Result<Evaluation, Error>,
{
    let began = FD_CAPTURE.with(|c| c.borrow_mut().as_mut().map(|c| c.begin().is_ok()));
    let mut result = f(r);
    if began == Some(true) {
        let bytes =
            FD_CAPTURE.with(|c| c.borrow_mut().as_mut().map(|c| c.end().unwrap_or_default()));
        let text = String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned();
        match &mut result {
            Ok(ev) => ev.output.stdout.push_str(&text),
            Err(Error::R(e)) => append_to_error(e, &text),
            Err(_) => {}
        }
    }
    // A late interrupt (after the call ended) must not hit the next call.
    rookery_ffi::clear_interrupt(r);
    result
}

fn append_to_error(e: &mut rookery_ffi::Error, text: &str) {
    if let rookery_ffi::Error::R { output, .. } | rookery_ffi::Error::Interrupted { output } = e {
        output.stdout.push_str(text);
    }
}

fn spawn(opts: LocalOptions) -> Result<LocalR, Error> {
    let spin = opts.spin;
    let (jobs_tx, jobs_rx) = unbounded::<Job>();
    let (ready_tx, ready_rx) = bounded(1);
    let thread = std::thread::Builder::new()
        .name("rookery-r".into())
        .stack_size(opts.stack_size)
        .spawn(move || {
            let r = match rookery_ffi::start(&opts.start) {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(Error::from(e)));
                    return;
                }
            };
            if opts.capture_fd_output {
                FD_CAPTURE.with(|c| *c.borrow_mut() = FdCapture::new().ok());
            }
            let _ = ready_tx.send(Ok(()));
            while let Some(job) = recv_spinning(&jobs_rx, opts.spin) {
                job(r);
            }
        })
        .map_err(|e| Error::Stopped(format!("cannot spawn the R thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(LocalR {
            jobs: jobs_tx,
            spin,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Stopped(format!(
            "the R thread ended during start-up: {:?}",
            thread.join().err().map(panic_message)
        ))),
    }
}

/// Receives a message, polling for up to `spin` before blocking. `None` when every
/// sender is gone.
fn recv_spinning<T>(rx: &Receiver<T>, spin: Duration) -> Option<T> {
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if start.elapsed() < spin => std::hint::spin_loop(),
            Err(TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
