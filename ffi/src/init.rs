//! Starting R: once per process, on the thread that will own it.
//!
//! [`start`] sets `R_HOME` (baked in at build time) when the environment lacks it,
//! makes sure the locale is UTF-8, starts R with Rookery's embedding hooks (console
//! capture, no stdin, `q()` handling, a C stack limit measured from the real thread
//! stack), then installs the calling handlers every evaluation uses. It returns the
//! [`RToken`] for this thread; R can never move to another thread or be restarted.

use std::ffi::CString;
use std::os::raw::{c_char, c_int};
use std::path::PathBuf;

use crate::sexp::RToken;
use crate::{sys, Error};

/// What `q()` does in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuitBehaviour {
    /// `q()` is an R error: the host process owns its lifetime (in-process embedding).
    #[default]
    Error,
    /// `q()` ends the process at once with `_exit(status)`, skipping R's exit path,
    /// which would delete state shared with other processes (pre-forked workers).
    Exit,
}

/// How to start R.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Extra command-line arguments for R, after Rookery's own
    /// (`--vanilla --no-echo --no-restore --no-save`).
    pub args: Vec<String>,
    /// What `q()` does.
    pub quit: QuitBehaviour,
    /// Install R's own signal handlers (SIGINT, SIGSEGV reporting, SIGPIPE). Off by
    /// default: an embedding host keeps its signals; interrupts go through
    /// [`interrupt`].
    pub signal_handlers: bool,
    /// R's home; defaults to `R_HOME`, else the R found at build time.
    pub r_home: Option<PathBuf>,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            args: Vec::new(),
            quit: QuitBehaviour::Error,
            signal_handlers: false,
            r_home: None,
        }
    }
}

/// The R home this crate was built against.
pub const BUILD_R_HOME: &str = env!("ROOKERY_R_HOME");

/// Starts R on the current thread and returns its token.
///
/// Call it before the process starts other threads if you can: R reads and sets
/// environment variables while it starts (`R_HOME`, `R_SESSION_TMPDIR`, locale).
/// Fails with [`Error::AlreadyStarted`] on a second call, from any thread.
pub fn start(opts: &StartOptions) -> Result<RToken<'static>, Error> {
    let home = opts
        .r_home
        .clone()
        .or_else(|| std::env::var_os("R_HOME").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(BUILD_R_HOME));
    if !home.join("library").join("base").exists() {
        return Err(Error::Startup(format!(
            "R_HOME {} has no base library; install R (Debian: r-base-core) or set R_HOME",
            home.display()
        )));
    }
    let r = RToken::claim().ok_or(Error::AlreadyStarted)?;
    prepare_environment(&home);
    let args = r_args(opts)?;
    let mut argv: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    let argc = c_int::try_from(argv.len()).map_err(|_| Error::Startup("too many args".into()))?;
    // SAFETY: first and only start (claim succeeded); argv holds argc valid C strings
    // that outlive the call (R copies what it keeps). The sink and the OOB hook are
    // functions with the signatures the shim expects that never unwind.
    unsafe {
        sys::rk_set_sink(Some(crate::output::console_sink));
        sys::rk_set_oob_hook(Some(crate::oob::oob_hook));
        sys::rk_start(
            argc,
            argv.as_mut_ptr(),
            c_int::from(opts.signal_handlers),
            quit_mode(opts.quit),
        );
    }
    crate::eval::install_runtime(r)?;
    remove_temp_dir_at_exit(r);
    Ok(r)
}

static TEMP_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// R deletes its session temp dir only on its own exit path, which an embedded R never
/// takes. Delete it when the process exits normally (`exit`, return from `main`);
/// processes that leave with `_exit` (forked workers sharing the dir) skip it.
fn remove_temp_dir_at_exit(r: RToken<'_>) {
    extern "C" fn remove() {
        if let Some(dir) = TEMP_DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    if TEMP_DIR.set(temp_dir(r)).is_ok() {
        // SAFETY: `remove` is a plain extern "C" fn that never unwinds (it ignores
        // every error) and touches only the path stored above.
        unsafe { libc::atexit(remove) };
    }
}

fn quit_mode(q: QuitBehaviour) -> c_int {
    match q {
        QuitBehaviour::Error => 0,
        QuitBehaviour::Exit => 1,
    }
}

/// Changes what `q()` does from now on (a zygote starts with `Error` and its forked
/// workers switch to `Exit`).
pub fn set_quit_behaviour(_r: RToken<'_>, q: QuitBehaviour) {
    // SAFETY: on the R thread (token); the shim only stores an int.
    unsafe { sys::rk_set_quit_mode(quit_mode(q)) };
}

fn r_args(opts: &StartOptions) -> Result<Vec<CString>, Error> {
    let fixed = [
        "rookery",
        "--vanilla",
        "--no-echo",
        "--no-restore",
        "--no-save",
    ];
    fixed
        .iter()
        .map(|s| s.to_string())
        .chain(opts.args.iter().cloned())
        .map(|a| CString::new(a).map_err(|_| Error::Startup("NUL byte in an R argument".into())))
        .collect()
}

fn prepare_environment(home: &std::path::Path) {
    if std::env::var_os("R_HOME").is_none() {
        std::env::set_var("R_HOME", home);
    }
    let utf8 = ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .is_some_and(|v| v.to_ascii_lowercase().replace('-', "").contains("utf8"));
    if !utf8 {
        std::env::set_var("LC_CTYPE", "C.UTF-8");
        std::env::remove_var("LC_ALL");
    }
}

/// Asks R to stop the current evaluation at its next interrupt check. Safe to call
/// from any thread (and from a signal handler): it sets one flag.
pub fn interrupt() {
    // SAFETY: rk_interrupt performs one atomic store to R's pending-interrupt flag.
    unsafe { sys::rk_interrupt() };
}

/// Whether an interrupt is pending (R acts on it at its next check).
pub fn interrupt_pending(_r: RToken<'_>) -> bool {
    // SAFETY: one atomic load; the token proves we are on the R thread.
    unsafe { sys::rk_interrupt_pending() != 0 }
}

/// Clears an interrupt that arrived after the call it was meant for ended.
pub fn clear_interrupt(_r: RToken<'_>) {
    // SAFETY: one atomic store; the token proves we are on the R thread.
    unsafe { sys::rk_clear_interrupt() };
}

/// The C stack limit R enforces, in bytes (deep recursion is an R error before it).
pub fn c_stack_limit(_r: RToken<'_>) -> usize {
    // SAFETY: reads an integer R set at start-up.
    unsafe { sys::rk_cstack_limit() }
}

/// R's session temporary directory.
pub fn temp_dir(_r: RToken<'_>) -> PathBuf {
    // SAFETY: R_TempDir is a NUL-terminated path R set at start-up and never frees.
    let dir = unsafe { std::ffi::CStr::from_ptr(sys::rk_temp_dir()) };
    PathBuf::from(dir.to_string_lossy().into_owned())
}
