//! Owned, protected R objects and the token that proves code runs on the R thread.
//!
//! [`RToken`] is zero-sized and `!Send`: holding one means "this is the thread R was
//! started on". Every safe function that touches R takes one. [`Protected`] owns one
//! cell of the shim's precious list; dropping it releases the object to R's GC in O(1).
//! Raw `SEXP`s never leave this crate.

use std::marker::PhantomData;
use std::sync::OnceLock;
use std::thread::ThreadId;

use crate::sys::{self, SEXP};

static R_THREAD: OnceLock<ThreadId> = OnceLock::new();

/// Proof that the current thread is the one R runs on. Zero-sized, `Copy`, `!Send`.
#[derive(Clone, Copy, Debug)]
pub struct RToken<'r> {
    _not_send: PhantomData<(&'r (), *const ())>,
}

static_assertions::assert_not_impl_any!(RToken<'static>: Send, Sync);
static_assertions::assert_not_impl_any!(Protected<'static>: Send, Sync);
static_assertions::assert_eq_size!(RToken<'static>, ());

impl RToken<'static> {
    /// The token, if R was started on this thread.
    pub fn current() -> Option<RToken<'static>> {
        let id = R_THREAD.get()?;
        (*id == std::thread::current().id()).then_some(RToken {
            _not_send: PhantomData,
        })
    }

    /// Marks the current thread as R's. Called once, by start-up.
    pub(crate) fn claim() -> Option<RToken<'static>> {
        R_THREAD.set(std::thread::current().id()).ok()?;
        Some(RToken {
            _not_send: PhantomData,
        })
    }
}

/// True once R has been started in this process (on any thread).
pub fn is_started() -> bool {
    R_THREAD.get().is_some()
}

/// An R object kept alive until this value is dropped.
#[derive(Debug)]
pub struct Protected<'r> {
    cell: SEXP,
    _r: PhantomData<RToken<'r>>,
}

impl<'r> Protected<'r> {
    /// Takes ownership of a precious-list cell returned by the shim.
    ///
    /// # Safety
    /// `cell` must be a cell freshly returned by a shim function (`rk_preserve`,
    /// `rk_eval`, `rk_alloc`, ...) that no other `Protected` owns.
    pub(crate) unsafe fn assume_owned(_r: RToken<'r>, cell: SEXP) -> Protected<'r> {
        Protected {
            cell,
            _r: PhantomData,
        }
    }

    /// Protects an object that is currently reachable (so safe from GC) by other means.
    ///
    /// # Safety
    /// `x` must be a valid SEXP that stays reachable until this call returns.
    pub(crate) unsafe fn try_preserve(
        r: RToken<'r>,
        x: SEXP,
    ) -> Result<Protected<'r>, crate::Error> {
        let mut cell = std::ptr::null_mut();
        // SAFETY: `x` is valid per the contract; the shim allocates inside a toplevel
        // context and reports failure instead of jumping.
        if unsafe { sys::rk_preserve(x, &mut cell) } == 0 {
            return Err(crate::Error::Alloc("protecting an object".into()));
        }
        // SAFETY: `cell` was just returned by rk_preserve and is owned by no one else.
        Ok(unsafe { Protected::assume_owned(r, cell) })
    }

    /// Gives up ownership of the cell, for C code that takes it over (and releases
    /// it with `rk_release`).
    pub(crate) fn into_cell(self) -> SEXP {
        let cell = self.cell;
        std::mem::forget(self);
        cell
    }

    /// The object. Valid while `self` lives.
    pub(crate) fn sexp(&self) -> SEXP {
        // SAFETY: the cell is alive (owned by self) and reading its TAG allocates nothing.
        unsafe { sys::rk_cell_value(self.cell) }
    }

    /// R's `typeof()` of the object.
    pub fn type_name(&self) -> &'static str {
        // SAFETY: the object is protected and TYPEOF only reads its header.
        type_name(unsafe { sys::rk_typeof(self.sexp()) })
    }
}

impl Drop for Protected<'_> {
    fn drop(&mut self) {
        // SAFETY: `self.cell` is a live cell owned by this value; release only relinks
        // list pointers, never allocates or jumps. Drop runs on the R thread (!Send).
        unsafe { sys::rk_release(self.cell) };
    }
}

pub(crate) fn type_name(t: i32) -> &'static str {
    const NAMES: [&str; 26] = [
        "NULL",
        "symbol",
        "pairlist",
        "closure",
        "environment",
        "promise",
        "language",
        "special",
        "builtin",
        "char",
        "logical",
        "",
        "",
        "integer",
        "double",
        "complex",
        "character",
        "...",
        "any",
        "list",
        "expression",
        "bytecode",
        "externalptr",
        "weakref",
        "raw",
        "S4",
    ];
    usize::try_from(t)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
        .filter(|n| !n.is_empty())
        .unwrap_or("unknown")
}
