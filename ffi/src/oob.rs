//! Rserve's out-of-band messages from R code: `self.oobSend(what, code)` and
//! `self.oobMessage(what, code)` of the Rserve package, which call the native
//! routines `Rserve_oobSend` and `Rserve_oobMsg`. The shim registers those names in
//! the embedding application's domain, as Rserve's own binary does, and sends both
//! here ([`oob_hook`]).
//!
//! This file owns the step from R to whoever carries the message: the object is
//! copied into a [`Value`], handed to the handler the caller installed around an
//! evaluation ([`with_oob_handler`]), and the handler's answer (for `oobMessage`, the
//! client's reply) is turned back into an R object. The handler never touches R; no
//! error is raised here: the shim raises it from C once this returns. Without a
//! handler (a stateless call, an HTTP session), both routines fail with a clear R
//! error.

use std::cell::Cell;
use std::os::raw::{c_char, c_int};
use std::ptr::NonNull;

use crate::sexp::{Protected, RToken};
use crate::sys::SEXP;
use crate::Value;

/// Which routine R code called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OobKind {
    /// `self.oobSend`: nothing comes back (`OOB_SEND`).
    Send,
    /// `self.oobMessage`: the client's reply is the call's value (`OOB_MSG`).
    Message,
}

/// One message R code sends to its client.
#[derive(Debug, Clone, PartialEq)]
pub struct OobRequest {
    pub kind: OobKind,
    /// The 12-bit user code (`code & 0xfff`), ORed into the message's command.
    pub code: u32,
    pub value: Value,
}

/// Why a message did not get through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OobFailure {
    /// The client is gone: `self.oobSend` returns `FALSE` (as on Rserve),
    /// `self.oobMessage` is an R error with this message.
    Gone(String),
    /// Not allowed here, or the reply was malformed: an R error with this message.
    Refused(String),
    /// An interrupt (the call's deadline) arrived while waiting: R unwinds as for
    /// any interrupt.
    Interrupted,
}

/// What carries messages during one evaluation: given each message, it answers
/// `Ok(None)` for a delivered `Send`, `Ok(Some(reply))` for a `Message`.
pub type OobHandler<'a> = dyn FnMut(OobRequest) -> Result<Option<Value>, OobFailure> + 'a;

type Slot = Option<NonNull<OobHandler<'static>>>;

thread_local! {
    /// The handler of the evaluation running on this (R's) thread, if any.
    static HANDLER: Cell<Slot> = const { Cell::new(None) };
}

/// Puts the slot back when the scope ends, however it ends.
struct Restore(Slot);

impl Drop for Restore {
    fn drop(&mut self) {
        HANDLER.with(|h| h.set(self.0));
    }
}

/// Runs `f` (an evaluation) with `handler` receiving the OOB messages its R code
/// sends; the previous handler (normally none) is back when `f` returns.
pub fn with_oob_handler<T>(
    _r: RToken<'_>,
    handler: &mut OobHandler<'_>,
    f: impl FnOnce() -> T,
) -> T {
    let ptr: NonNull<OobHandler<'_>> = NonNull::from(handler);
    // SAFETY: only the lifetime is erased. The pointer is reachable through the slot
    // only until `_restore` drops at the end of this function, while `handler`'s
    // borrow is still alive; it is used on this thread alone (thread-local).
    let ptr: NonNull<OobHandler<'static>> = unsafe { std::mem::transmute(ptr) };
    let previous = HANDLER.with(|h| h.replace(Some(ptr)));
    let _restore = Restore(previous);
    f()
}

const OK: c_int = 0;
const ERROR: c_int = 1;
const INTERRUPTED: c_int = 2;
const GONE: c_int = 3;

/// Copies `message` into the shim's buffer of `len` bytes, NUL-terminated.
///
/// # Safety
/// `err` must point to `len` writable bytes.
unsafe fn put_message(err: *mut c_char, len: c_int, message: &str) {
    let Ok(len) = usize::try_from(len) else {
        return;
    };
    if err.is_null() || len == 0 {
        return;
    }
    let n = message.len().min(len - 1);
    // SAFETY: `n + 1 <= len` bytes are written into the caller's buffer, which does
    // not overlap `message`.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr().cast::<c_char>(), err, n);
        *err.add(n) = 0;
    }
}

/// The shim's hook: `message` is 1 for `Rserve_oobMsg`; on success a `Message`'s
/// reply is left in `*cell` (a precious-list cell the shim releases).
///
/// # Safety
/// Called by the shim only, on R's thread, from a `.Call` routine: `what` is that
/// call's protected argument, `cell` is writable and `err` has `errlen` bytes.
pub(crate) unsafe extern "C" fn oob_hook(
    message: c_int,
    code: c_int,
    what: SEXP,
    cell: *mut SEXP,
    err: *mut c_char,
    errlen: c_int,
) -> c_int {
    let run = std::panic::catch_unwind(|| -> Result<Option<Protected<'static>>, OobFailure> {
        let r = RToken::current()
            .ok_or_else(|| OobFailure::Refused("OOB messages only from R's thread".into()))?;
        let Some(handler) = HANDLER.with(|h| h.take()) else {
            return Err(OobFailure::Refused(
                "self.oobSend and self.oobMessage work only in code a QAP1 client runs, \
                 on a server started with [qap] oob = true"
                    .into(),
            ));
        };
        let _restore = Restore(Some(handler));
        // SAFETY: `what` is an argument of the running .Call, so R keeps it reachable.
        let object = unsafe { Protected::try_preserve(r, what) }
            .map_err(|e| OobFailure::Refused(e.to_string()))?;
        let value = crate::convert::to_value(r, &object)
            .map_err(|e| OobFailure::Refused(format!("the OOB message cannot carry it: {e}")))?;
        drop(object);
        let kind = if message != 0 {
            OobKind::Message
        } else {
            OobKind::Send
        };
        let request = OobRequest {
            kind,
            code: (code as u32) & 0xfff,
            value,
        };
        // SAFETY: the slot held this pointer, so `with_oob_handler` is still running
        // further up this thread's stack and the handler is alive; it was taken out
        // of the slot, so no other reference to it exists while it runs.
        let answer = unsafe { (*handler.as_ptr())(request) }?;
        match (kind, answer) {
            (OobKind::Send, _) => Ok(None),
            (OobKind::Message, reply) => {
                let reply = reply.unwrap_or(Value::NULL);
                crate::convert::from_value(r, &reply)
                    .map(Some)
                    .map_err(|e| OobFailure::Refused(format!("the client's reply: {e}")))
            }
        }
    });
    let (status, text) = match run {
        Ok(Ok(Some(object))) => {
            // SAFETY: `cell` is writable (the shim's local); the shim takes the cell over.
            unsafe { *cell = object.into_cell() };
            (OK, String::new())
        }
        Ok(Ok(None)) => (OK, String::new()),
        Ok(Err(OobFailure::Gone(m))) => (GONE, m),
        Ok(Err(OobFailure::Refused(m))) => (ERROR, m),
        Ok(Err(OobFailure::Interrupted)) => (INTERRUPTED, String::new()),
        Err(_) => (ERROR, "the OOB handler failed".into()),
    };
    // SAFETY: `err` has `errlen` bytes (the shim's buffer).
    unsafe { put_message(err, errlen, &text) };
    status
}
