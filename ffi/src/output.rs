//! What an R call printed and warned, and how it is captured.
//!
//! Two channels feed a call's [`Output`]:
//! - R's console (`Rprintf`, `REprintf`, `print()`, `message()`), which R hands to the
//!   sink installed at start-up; the sink appends to per-thread buffers.
//! - Optionally the process's file descriptors 1 and 2 (`system()`, C code that calls
//!   `printf`), redirected into a memfd by [`FdCapture`].
//!
//! Buffers are capped per call so that a runaway `repeat print(1)` cannot exhaust
//! memory; the cut is marked in the text.

use std::cell::RefCell;
use std::os::raw::{c_char, c_int};

use serde::{Deserialize, Serialize};

/// One warning raised by a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub message: String,
    /// The deparsed call that raised it, if any.
    pub call: Option<String>,
}

/// Console output and warnings of one call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub warnings: Vec<Warning>,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty() && self.warnings.is_empty()
    }
}

/// Default cap on captured console bytes per stream per call.
pub const DEFAULT_OUTPUT_LIMIT: usize = 16 << 20;

struct Console {
    out: Vec<u8>,
    err: Vec<u8>,
    limit: usize,
    cut: [bool; 2],
}

thread_local! {
    static CONSOLE: RefCell<Console> = const {
        RefCell::new(Console { out: Vec::new(), err: Vec::new(), limit: DEFAULT_OUTPUT_LIMIT, cut: [false; 2] })
    };
}

/// The console sink R calls (from C) for every piece of output.
pub(crate) unsafe extern "C" fn console_sink(buf: *const c_char, len: c_int, otype: c_int) {
    let Ok(len) = usize::try_from(len) else {
        return;
    };
    if buf.is_null() || len == 0 {
        return;
    }
    // SAFETY: R passes a buffer of `len` readable bytes that stays valid for this call.
    let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    // A panic must not reach C: `append` cannot panic short of an allocation failure,
    // which aborts rather than unwinds.
    CONSOLE.with(|c| c.borrow_mut().append(bytes, otype != 0));
}

impl Console {
    fn append(&mut self, bytes: &[u8], err: bool) {
        let limit = self.limit;
        let (buf, cut) = if err {
            (&mut self.err, &mut self.cut[1])
        } else {
            (&mut self.out, &mut self.cut[0])
        };
        let room = limit.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        *cut |= bytes.len() > room;
    }
}

/// Sets the per-stream cap for output captured on this thread.
pub fn set_output_limit(bytes: usize) {
    CONSOLE.with(|c| c.borrow_mut().limit = bytes);
}

/// Takes what R printed on this thread since the last call.
pub(crate) fn take_console() -> (String, String) {
    CONSOLE.with(|c| {
        let mut c = c.borrow_mut();
        let cut = std::mem::take(&mut c.cut);
        let out = finish(std::mem::take(&mut c.out), cut[0]);
        let err = finish(std::mem::take(&mut c.err), cut[1]);
        (out, err)
    })
}

fn finish(bytes: Vec<u8>, cut: bool) -> String {
    let mut s = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    if cut {
        s.push_str("\n[output truncated by rookery]\n");
    }
    s
}

/// Redirects file descriptors 1 and 2 into an in-memory file, so that output written
/// below R's console (`system()`, `printf` in C code) is captured too.
///
/// In a worker process it is installed once for the life of the process; in a host
/// process, [`FdCapture::begin`] and [`FdCapture::end`] bracket each call (the host's
/// own writes to stdout during a call are captured with it).
#[derive(Debug)]
pub struct FdCapture {
    memfd: std::os::fd::OwnedFd,
    saved: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
}

impl FdCapture {
    /// Creates the in-memory file. Nothing is redirected yet.
    pub fn new() -> std::io::Result<FdCapture> {
        let memfd = crate::fdio::memfd("rookery-output")?;
        Ok(FdCapture { memfd, saved: None })
    }

    /// Points fds 1 and 2 at the capture, remembering where they pointed.
    pub fn begin(&mut self) -> std::io::Result<()> {
        if self.saved.is_none() {
            let out = crate::fdio::dup(1)?;
            let err = crate::fdio::dup(2)?;
            crate::fdio::flush_stdio();
            crate::fdio::dup2(&self.memfd, 1)?;
            crate::fdio::dup2(&self.memfd, 2)?;
            self.saved = Some((out, err));
        }
        Ok(())
    }

    /// Points fds 1 and 2 at the capture for the rest of the process's life, keeping
    /// nothing of where they pointed: in a worker, whose stdout and stderr were the
    /// host's (its log), so that no code it runs can write there, and no fd of the
    /// host's stays open in it.
    pub fn take_over(&mut self) -> std::io::Result<()> {
        crate::fdio::flush_stdio();
        crate::fdio::dup2(&self.memfd, 1)?;
        crate::fdio::dup2(&self.memfd, 2)?;
        self.saved = None;
        Ok(())
    }

    /// Restores fds 1 and 2 and returns what was written since [`FdCapture::begin`].
    pub fn end(&mut self) -> std::io::Result<Vec<u8>> {
        crate::fdio::flush_stdio();
        if let Some((out, err)) = self.saved.take() {
            crate::fdio::dup2(&out, 1)?;
            crate::fdio::dup2(&err, 2)?;
        }
        self.drain()
    }

    /// Returns and clears what was written so far, leaving the redirection in place.
    pub fn drain(&mut self) -> std::io::Result<Vec<u8>> {
        crate::fdio::flush_stdio();
        crate::fdio::take_all(&self.memfd)
    }
}
