//! Parse and evaluate R code with every failure turned into an [`Error`].
//!
//! User code is passed to R as data (a character vector), parsed by `R_ParseVector`
//! and evaluated expression by expression, each step inside a toplevel context of the
//! shim with Rookery's calling handlers installed: errors and interrupts are recorded
//! and abort to that context, warnings are recorded and muffled. The runtime state
//! (the handler call, the record, the function that takes it) is built once at
//! start-up from Rookery's own R source, never from user text.

use std::cell::OnceCell;
use std::ffi::CString;
use std::os::raw::{c_char, c_int};

use crate::convert::{from_value, to_value};
use crate::output::{take_console, Output, Warning};
use crate::sexp::{Protected, RToken};
use crate::value::Value;
use crate::{sys, Error};

/// R source of the runtime: handlers that record conditions, and `take()`.
const RUNTIME_R: &str = r#"local({
  state <- new.env(parent = emptyenv())
  state$warnings <- list()
  state$error <- NULL
  abort <- function(cond) { state$error <- cond; invokeRestart("abort") }
  warn <- function(w) {
    if (isTRUE(getOption("warn") >= 2)) return(invisible(NULL))
    n <- length(state$warnings)
    if (n < 1000L) state$warnings[[n + 1L]] <- w
    invokeRestart("muffleWarning")
  }
  handlers <- list(error = abort, interrupt = abort, warning = warn)
  install <- as.call(list(as.name(".Internal"), as.call(list(as.name(".addCondHands"),
    names(handlers), handlers, globalenv(), NULL, TRUE))))
  describe <- function(cond) {
    msg <- tryCatch(paste(conditionMessage(cond), collapse = "\n"),
                    error = function(e) "(the condition has no readable message)")
    call <- tryCatch(conditionCall(cond), error = function(e) NULL)
    call <- if (is.null(call)) NA_character_ else
      paste(deparse(call, width.cutoff = 500L, nlines = 1L), collapse = " ")
    list(msg, call, as.character(class(cond)))
  }
  take <- function() {
    e <- state$error
    w <- state$warnings
    state$error <- NULL
    state$warnings <- list()
    list(if (is.null(e)) NULL else describe(e), lapply(w, describe))
  }
  list(state = state, install = install, take = as.call(list(take)))
})"#;

struct Runtime {
    take: Protected<'static>,
}

thread_local! {
    static RUNTIME: OnceCell<Runtime> = const { OnceCell::new() };
}

/// Builds the runtime; called once by start-up, on the R thread.
pub(crate) fn install_runtime(r: RToken<'static>) -> Result<(), Error> {
    let parts = r.internal_eval(RUNTIME_R, None)?;
    let get = |i| {
        // SAFETY: `parts` is a protected list of three elements built by RUNTIME_R.
        unsafe { Protected::try_preserve(r, sys::VECTOR_ELT(parts.sexp(), i)) }
    };
    let (state, install, take) = (get(0)?, get(1)?, get(2)?);
    // SAFETY: both objects are protected above; the shim preserves them for good.
    unsafe { sys::rk_set_handlers(install.sexp(), state.sexp()) };
    RUNTIME.with(|rt| rt.set(Runtime { take }).ok());
    Ok(())
}

/// The error for a parse status other than PARSE_OK: the end of input came too soon
/// (2, PARSE_INCOMPLETE), or `msg` (NUL-terminated, from the shim) at `line`.
fn parse_status_error(code: &str, status: c_int, line: c_int, msg: &[c_char; 256]) -> Error {
    match status {
        2 => Error::Parse {
            message: "unexpected end of input".into(),
            line: u32::try_from(code.lines().count().max(1)).unwrap_or(u32::MAX),
        },
        _ => Error::Parse {
            // SAFETY: the shim NUL-terminates `msg` within its 256 bytes.
            message: unsafe { std::ffi::CStr::from_ptr(msg.as_ptr()) }
                .to_string_lossy()
                .into_owned(),
            line: u32::try_from(line.max(1)).unwrap_or(1),
        },
    }
}

/// The value of an evaluation, with what it printed and warned.
#[derive(Debug)]
pub struct Evaluated<'r> {
    pub value: Protected<'r>,
    /// R's visibility flag after the last expression (`x <- 1` is invisible).
    pub visible: bool,
    pub output: Output,
}

/// An environment to evaluate in.
#[derive(Debug)]
pub struct Environment<'r>(Protected<'r>);

impl<'r> Environment<'r> {
    pub fn as_protected(&self) -> &Protected<'r> {
        &self.0
    }
}

impl<'r> RToken<'r> {
    /// The global environment.
    pub fn global_env(self) -> Result<Environment<'r>, Error> {
        // SAFETY: R_GlobalEnv is always reachable.
        unsafe { Protected::try_preserve(self, sys::R_GlobalEnv) }.map(Environment)
    }

    /// A new environment whose parent is `parent` (the global environment if `None`).
    pub fn new_env(self, parent: Option<&Environment<'r>>) -> Result<Environment<'r>, Error> {
        let parent = parent.map_or_else(
            // SAFETY: reading a global that R set at start-up.
            || unsafe { sys::R_GlobalEnv },
            |p| p.0.sexp(),
        );
        let mut cell = std::ptr::null_mut();
        // SAFETY: `parent` is an environment kept alive by R or by a `Protected`; the
        // shim allocates inside a toplevel context.
        if unsafe { sys::rk_new_env(parent, &mut cell) } == 0 {
            return Err(self.take_failure());
        }
        // SAFETY: a fresh cell from the shim, now ours.
        Ok(Environment(unsafe { Protected::assume_owned(self, cell) }))
    }

    /// Number of bindings in `env`'s own frame (not its parents').
    pub fn env_len(self, env: &Environment<'r>) -> usize {
        // SAFETY: `env` is a protected environment; the shim only counts its bindings.
        let n = unsafe { sys::rk_env_length(env.0.sexp()) };
        usize::try_from(n).unwrap_or(0)
    }

    /// Parses `code` into an expression vector without evaluating it.
    pub fn parse(self, code: &str) -> Result<Protected<'r>, Error> {
        let len = c_int::try_from(code.len())
            .map_err(|_| Error::InvalidValue("code longer than 2 GiB".into()))?;
        let (mut cell, mut status, mut line) = (std::ptr::null_mut(), 0, 0);
        let mut msg = [0 as c_char; 256];
        // SAFETY: `code` addresses `len` bytes of UTF-8 for the whole call; the
        // out-pointers are valid locals; the shim parses inside a toplevel context.
        let ran = unsafe {
            sys::rk_parse(
                code.as_ptr().cast(),
                len,
                &mut cell,
                &mut status,
                &mut line,
                msg.as_mut_ptr(),
                256,
            )
        };
        if ran == 0 {
            return Err(self.parse_failure_from_condition(code));
        }
        // SAFETY: rk_parse returned a fresh cell that we now own.
        let exprs = unsafe { Protected::assume_owned(self, cell) };
        match status {
            1 => Ok(exprs), // PARSE_OK
            _ => Err(parse_status_error(code, status, line, &msg)),
        }
    }

    /// The lexer raised an R error (for example an unknown escape in a string).
    fn parse_failure_from_condition(self, code: &str) -> Error {
        match self.take_failure() {
            Error::R { message, .. } => Error::Parse {
                line: parse_line_hint(&message, code),
                message,
            },
            other => other,
        }
    }

    /// Parses and evaluates `code` in `env` (the global environment if `None`).
    pub fn eval_str(
        self,
        code: &str,
        env: Option<&Environment<'r>>,
    ) -> Result<Evaluated<'r>, Error> {
        let len = c_int::try_from(code.len())
            .map_err(|_| Error::InvalidValue("code longer than 2 GiB".into()))?;
        let env = env.map_or_else(
            // SAFETY: reading a global that R set at start-up.
            || unsafe { sys::R_GlobalEnv },
            |e| e.0.sexp(),
        );
        let (mut cell, mut visible, mut status, mut line, mut phase) =
            (std::ptr::null_mut(), 0 as c_int, 0, 0, 0);
        let mut msg = [0 as c_char; 256];
        // SAFETY: `code` addresses `len` bytes of UTF-8 for the whole call; `env` is
        // protected (the global env, or an Environment's cell); the out-pointers are
        // valid locals; the shim parses and evaluates in one toplevel context with
        // the handlers installed, so no R error escapes it.
        let ran = unsafe {
            sys::rk_parse_eval(
                code.as_ptr().cast(),
                len,
                env,
                &mut cell,
                &mut visible,
                &mut status,
                &mut line,
                msg.as_mut_ptr(),
                256,
                &mut phase,
            )
        };
        if ran == 0 {
            return Err(if phase == 0 {
                let e = self.parse_failure_from_condition(code);
                let _ = take_console();
                e
            } else {
                self.take_failure()
            });
        }
        if status != 1 {
            // Output printed while parsing (rare) belongs to nobody; drop it.
            let _ = take_console();
            return Err(parse_status_error(code, status, line, &msg));
        }
        // SAFETY: rk_parse_eval returned a fresh cell that we now own.
        let value = unsafe { Protected::assume_owned(self, cell) };
        Ok(Evaluated {
            value,
            visible: visible != 0,
            output: self.take_output(),
        })
    }

    /// Evaluates each expression of an expression vector, returning the last value.
    pub fn eval_many(
        self,
        exprs: &Protected<'r>,
        env: Option<&Environment<'r>>,
    ) -> Result<Evaluated<'r>, Error> {
        self.run_eval(exprs, env, true)
    }

    /// Evaluates one R object (a call, a symbol, or a constant).
    pub fn eval_protected(
        self,
        expr: &Protected<'r>,
        env: Option<&Environment<'r>>,
    ) -> Result<Evaluated<'r>, Error> {
        self.run_eval(expr, env, false)
    }

    fn run_eval(
        self,
        expr: &Protected<'r>,
        env: Option<&Environment<'r>>,
        many: bool,
    ) -> Result<Evaluated<'r>, Error> {
        let (mut cell, mut visible) = (std::ptr::null_mut(), 0 as c_int);
        let env = env.map_or_else(
            // SAFETY: reading a global that R set at start-up.
            || unsafe { sys::R_GlobalEnv },
            |e| e.0.sexp(),
        );
        // SAFETY: expr and env are protected; out-pointers are valid locals; the shim
        // evaluates inside a toplevel context with the handlers installed.
        let ok =
            unsafe { sys::rk_eval(expr.sexp(), env, c_int::from(many), &mut cell, &mut visible) };
        if ok == 0 {
            return Err(self.take_failure());
        }
        // SAFETY: rk_eval returned a fresh cell that we now own.
        let value = unsafe { Protected::assume_owned(self, cell) };
        Ok(Evaluated {
            value,
            visible: visible != 0,
            output: self.take_output(),
        })
    }

    /// Collects console output and any recorded warnings after a successful call.
    fn take_output(self) -> Output {
        let (stdout, stderr) = take_console();
        // SAFETY: reads the runtime state without allocating.
        let warnings = if unsafe { sys::rk_pending_warnings() } > 0 {
            self.take_record().map(|(_, w)| w).unwrap_or_default()
        } else {
            Vec::new()
        };
        Output {
            stdout,
            stderr,
            warnings,
        }
    }

    /// Builds the error for an evaluation that jumped to top level.
    pub(crate) fn take_failure(self) -> Error {
        let (stdout, stderr) = take_console();
        let (error, warnings) = self
            .take_record()
            .unwrap_or_else(|e| (None, vec![warn_of(e)]));
        let output = Box::new(Output {
            stdout,
            stderr,
            warnings,
        });
        match error {
            Some(d) if d.classes.iter().any(|c| c == "interrupt") => Error::Interrupted { output },
            Some(d) => Error::R {
                message: d.message,
                call: d.call,
                classes: d.classes,
                output,
            },
            None => unrecorded_error(output),
        }
    }

    /// Runs the runtime's `take()`: the recorded error (if any) and warnings.
    fn take_record(self) -> Result<(Option<Described>, Vec<Warning>), Error> {
        let record = RUNTIME.with(|rt| {
            let take = &rt.get().expect("runtime installed at start-up").take;
            let (mut cell, mut vis) = (std::ptr::null_mut(), 0);
            // SAFETY: `take` is a protected call; evaluated like any other expression.
            let ok = unsafe { sys::rk_eval(take.sexp(), sys::R_BaseEnv, 0, &mut cell, &mut vis) };
            // SAFETY: on success the cell is fresh and ours.
            (ok != 0).then(|| unsafe { Protected::assume_owned(self, cell) })
        });
        let record = record.ok_or_else(|| Error::Alloc("reading the condition record".into()))?;
        let record = to_value(self, &record)?;
        let parts = record.as_list().unwrap_or_default();
        let error = parts.first().and_then(Described::from_value);
        let warnings = parts
            .get(1)
            .and_then(Value::as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(Described::from_value)
            .map(|d| Warning {
                message: d.message,
                call: d.call,
            })
            .collect();
        Ok((error, warnings))
    }

    /// Builds `fun(args...)`; `fun` may be `"name"`, `"pkg::name"` or `"pkg:::name"`.
    pub fn make_call(
        self,
        fun: &str,
        args: &[(Option<&str>, &Protected<'r>)],
    ) -> Result<Protected<'r>, Error> {
        let list = self.alloc_list(args.iter().map(|(_, p)| *p))?;
        let names: Vec<Option<String>> = args
            .iter()
            .map(|(n, _)| Some(n.unwrap_or("").to_owned()))
            .collect();
        if args.iter().any(|(n, _)| n.is_some()) {
            let names = from_value(self, &Value::strings_na(names))?;
            self.set_attr(&list, "names", &names)?;
        }
        let name = c_string(fun)?;
        let mut cell = std::ptr::null_mut();
        // SAFETY: `name` is a C string and `list` a protected list; the shim builds the
        // call inside a toplevel context.
        if unsafe { sys::rk_make_call(name.as_ptr(), list.sexp(), &mut cell) } == 0 {
            return Err(self.take_failure());
        }
        // SAFETY: fresh cell from the shim.
        Ok(unsafe { Protected::assume_owned(self, cell) })
    }

    /// Calls `fun` with R objects as arguments, in the global environment.
    pub fn call_protected(
        self,
        fun: &str,
        args: &[(Option<&str>, &Protected<'r>)],
    ) -> Result<Evaluated<'r>, Error> {
        let call = self.make_call(fun, args)?;
        self.eval_protected(&call, None)
    }

    /// Calls `fun` with values as arguments: `("", v)` is positional, `("name", v)`
    /// is passed as `name = v`.
    pub fn call(self, fun: &str, args: &[(&str, &Value)]) -> Result<Evaluated<'r>, Error> {
        let converted = args
            .iter()
            .map(|(_, v)| from_value(self, v))
            .collect::<Result<Vec<_>, _>>()?;
        let named: Vec<(Option<&str>, &Protected<'r>)> = args
            .iter()
            .zip(&converted)
            .map(|((n, _), p)| ((!n.is_empty()).then_some(*n), p))
            .collect();
        self.call_protected(fun, &named)
    }

    /// `assign(name, value, envir = env)`.
    pub fn assign(
        self,
        env: Option<&Environment<'r>>,
        name: &str,
        value: &Protected<'r>,
    ) -> Result<(), Error> {
        let global = self.global_env()?;
        let env = env.unwrap_or(&global);
        let name = c_string(name)?;
        // SAFETY: env and value are protected; the shim defines inside a toplevel context.
        if unsafe { sys::rk_define(env.0.sexp(), name.as_ptr(), value.sexp()) } == 0 {
            return Err(self.take_failure());
        }
        Ok(())
    }

    /// `get0(name, envir = env)`: the value bound to `name`, or `None` when unbound.
    pub fn get(
        self,
        env: Option<&Environment<'r>>,
        name: &str,
    ) -> Result<Option<Protected<'r>>, Error> {
        let global = self.global_env()?;
        let env = env.unwrap_or(&global);
        let name = c_string(name)?;
        let (mut cell, mut found) = (std::ptr::null_mut(), 0);
        // SAFETY: env is protected; the shim looks up (and forces promises) inside a
        // toplevel context.
        if unsafe { sys::rk_get(env.0.sexp(), name.as_ptr(), &mut cell, &mut found) } == 0 {
            return Err(self.take_failure());
        }
        // SAFETY: when found, the cell is fresh and ours.
        Ok((found != 0).then(|| unsafe { Protected::assume_owned(self, cell) }))
    }

    /// Reads, parses and evaluates an R source file (as `source(path, local = env)`).
    pub fn source_file(
        self,
        path: &std::path::Path,
        env: Option<&Environment<'r>>,
    ) -> Result<Evaluated<'r>, Error> {
        let code = std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidValue(format!("cannot read {}: {e}", path.display())))?;
        self.eval_str(&code, env)
    }

    /// Prints `x` as R's `print()` would and returns the text.
    pub fn print(self, x: &Protected<'r>) -> Result<String, Error> {
        let ev = self.call_protected("print", &[(None, x)])?;
        Ok(ev.output.stdout)
    }

    /// Converts an R object to a [`Value`].
    pub fn to_value(self, x: &Protected<'r>) -> Result<Value, Error> {
        to_value(self, x)
    }

    /// Whether `x` is a double vector without attributes (what
    /// [`RToken::append_plain_doubles_le`] writes).
    pub fn is_plain_double(self, x: &Protected<'r>) -> bool {
        // SAFETY: `x` is protected; reading its type and attribute list allocates
        // nothing.
        unsafe {
            sys::rk_typeof(x.sexp()) == crate::sys::sexptype::REALSXP
                && sys::ATTRIB(x.sexp()) == sys::R_NilValue
        }
    }

    /// R's `xlength(x)`: the number of elements of a vector (of bindings of an
    /// environment, 1 for other objects), read without running R code.
    pub fn xlength(self, x: &Protected<'r>) -> usize {
        // SAFETY: `x` is protected; Rf_xlength reads the object's header (an
        // environment's frame) and neither allocates nor raises an error.
        usize::try_from(unsafe { sys::Rf_xlength(x.sexp()) }).unwrap_or(0)
    }

    /// When `x` is a plain double vector (no attributes): writes
    /// `header(out, n)`, then its `n` numbers as little-endian bytes, straight from
    /// R's memory, and returns true. Any other object: nothing written, false.
    pub fn append_plain_doubles_le(
        self,
        x: &Protected<'r>,
        out: &mut Vec<u8>,
        header: impl FnOnce(&mut Vec<u8>, usize),
    ) -> bool {
        crate::convert::append_plain_doubles_le(x, out, header)
    }

    /// A new double vector of the little-endian numbers in `bytes` (8 bytes each,
    /// any alignment), copied once.
    pub fn doubles_from_le(self, bytes: &[u8]) -> Result<Protected<'r>, Error> {
        crate::convert::doubles_from_le(self, bytes)
    }

    /// Converts a [`Value`] to a new R object.
    pub fn from_value(self, v: &Value) -> Result<Protected<'r>, Error> {
        from_value(self, v)
    }

    /// Evaluates Rookery's own R source (never user code).
    fn internal_eval(
        self,
        src: &str,
        env: Option<&Environment<'r>>,
    ) -> Result<Protected<'r>, Error> {
        let src = c_string(src)?;
        let env = env.map_or_else(
            // SAFETY: reading a global that R set at start-up.
            || unsafe { sys::R_BaseEnv },
            |e| e.0.sexp(),
        );
        let mut cell = std::ptr::null_mut();
        // SAFETY: `src` is a C string; the shim parses and evaluates inside a toplevel
        // context.
        if unsafe { sys::rk_parse_eval_internal(src.as_ptr(), env, &mut cell) } == 0 {
            let (out, err) = take_console();
            return Err(Error::Startup(format!(
                "internal R code failed: {out}{err}"
            )));
        }
        // SAFETY: fresh cell from the shim.
        Ok(unsafe { Protected::assume_owned(self, cell) })
    }

    pub(crate) fn alloc_list<'a>(
        self,
        items: impl ExactSizeIterator<Item = &'a Protected<'r>>,
    ) -> Result<Protected<'r>, Error>
    where
        'r: 'a,
    {
        let list = crate::convert::alloc(self, crate::sys::sexptype::VECSXP, items.len())?;
        for (i, item) in items.enumerate() {
            // SAFETY: `list` is a protected list of this length; SET_VECTOR_ELT with an
            // in-range index neither allocates nor jumps.
            unsafe { sys::SET_VECTOR_ELT(list.sexp(), i as isize, item.sexp()) };
        }
        Ok(list)
    }

    pub(crate) fn set_attr(
        self,
        x: &Protected<'r>,
        name: &str,
        value: &Protected<'r>,
    ) -> Result<(), Error> {
        let cname = c_string(name)?;
        // SAFETY: x and value are protected; the shim sets the attribute inside a
        // toplevel context and reports R's objection instead of jumping.
        if unsafe { sys::rk_set_attr(x.sexp(), cname.as_ptr(), value.sexp()) } == 0 {
            return Err(match self.take_failure() {
                Error::R { message, .. } => {
                    Error::InvalidValue(format!("attribute '{name}': {message}"))
                }
                other => other,
            });
        }
        Ok(())
    }
}

/// A condition as `describe()` reports it.
struct Described {
    message: String,
    call: Option<String>,
    classes: Vec<String>,
}

impl Described {
    fn from_value(v: &Value) -> Option<Described> {
        let parts = v.as_list()?;
        Some(Described {
            message: parts.first()?.as_str().unwrap_or_default().to_owned(),
            call: parts.get(1).and_then(Value::as_str).map(str::to_owned),
            classes: parts
                .get(2)
                .and_then(Value::as_strings)
                .map(|c| c.iter().flatten().cloned().collect())
                .unwrap_or_default(),
        })
    }
}

/// The evaluation jumped to top level without a recorded condition: either R could
/// not run the handler (say, out of C stack while handling a stack overflow) and
/// printed the error itself, or code invoked the "abort" restart.
fn unrecorded_error(mut output: Box<Output>) -> Error {
    // R printed the error itself; keep it out of the call's stderr.
    let at = output.stderr.rfind("Error");
    let printed = at.map(|i| output.stderr.split_off(i));
    let (message, call) = match printed {
        Some(line) => split_error_line(&line, last_error_text()),
        None => ("evaluation was aborted".to_owned(), None),
    };
    let classes = if message == "evaluation was aborted" {
        vec!["abort".into()]
    } else {
        vec!["error".into(), "condition".into()]
    };
    Error::R {
        message,
        call,
        classes,
        output,
    }
}

fn last_error_text() -> String {
    // SAFETY: R_curErrorBuf returns R's static, NUL-terminated error buffer.
    unsafe { std::ffi::CStr::from_ptr(sys::rk_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// Splits R's "Error in CALL : MSG" / "Error: MSG" text, preferring R's full buffer.
fn split_error_line(line: &str, full: String) -> (String, Option<String>) {
    let text = if full.trim().is_empty() {
        line.to_owned()
    } else {
        full
    };
    let text = text.trim_end();
    if let Some(rest) = text.strip_prefix("Error in ") {
        if let Some((call, msg)) = rest.split_once(" : ") {
            return (msg.trim().to_owned(), Some(call.trim().to_owned()));
        }
    }
    let msg = text.strip_prefix("Error:").unwrap_or(text).trim();
    (msg.to_owned(), None)
}

fn warn_of(e: Error) -> Warning {
    Warning {
        message: format!("rookery could not read R's condition record: {e}"),
        call: None,
    }
}

pub(crate) fn c_string(s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::InvalidValue(format!("NUL byte in name {s:?}")))
}

/// Lexer errors name no line; point at the first line holding a backslash escape,
/// else line 1.
fn parse_line_hint(message: &str, code: &str) -> u32 {
    let quoted = message.split('"').nth(1).unwrap_or("");
    code.lines()
        .position(|l| !quoted.is_empty() && l.contains(quoted.trim_end_matches('"')))
        .and_then(|i| u32::try_from(i + 1).ok())
        .unwrap_or(1)
}
