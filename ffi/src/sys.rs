//! Raw declarations: libR-sys' bindings plus what they lack, and the C shim's entry points.
//!
//! Nothing here is safe to call without reading `csrc/shim.c`; the safe layer is the
//! rest of this crate. Every function that can longjmp is reached only through a shim
//! entry point that runs it in its own toplevel context.

#![allow(non_snake_case, reason = "names follow R's C API")]
#![expect(
    improper_ctypes,
    reason = "SEXPREC is opaque: only pointers to it cross"
)]

use std::os::raw::{c_char, c_int};

pub(crate) use libR_sys::{
    R_BaseEnv, R_GlobalEnv, R_NaString, R_NilValue, Rf_getCharCE, Rf_xlength, ATTRIB, CAR, CDR,
    DATAPTR_OR_NULL, PRINTNAME, R_CHAR, SET_VECTOR_ELT, SEXP, STRING_ELT, TAG, VECTOR_ELT,
};

/// SEXPTYPE codes, as `int` (libR-sys models them as a closed enum, which an unknown
/// type read from R would violate).
pub(crate) mod sexptype {
    pub const NILSXP: i32 = 0;
    pub const LGLSXP: i32 = 10;
    pub const INTSXP: i32 = 13;
    pub const REALSXP: i32 = 14;
    pub const CPLXSXP: i32 = 15;
    pub const STRSXP: i32 = 16;
    pub const VECSXP: i32 = 19;
    pub const RAWSXP: i32 = 24;
}

/// A sink for R's console output: `otype` 0 is stdout, 1 is stderr.
pub(crate) type SinkFn = unsafe extern "C" fn(buf: *const c_char, len: c_int, otype: c_int);

/// The hook behind Rserve's `Rserve_oobSend` / `Rserve_oobMsg` (see `crate::oob`).
pub(crate) type OobFn = unsafe extern "C" fn(
    message: c_int,
    code: c_int,
    what: SEXP,
    cell: *mut SEXP,
    err: *mut c_char,
    errlen: c_int,
) -> c_int;

extern "C" {
    pub(crate) fn rk_start(
        argc: c_int,
        argv: *mut *mut c_char,
        signal_handlers: c_int,
        quit_mode: c_int,
    ) -> c_int;
    pub(crate) fn rk_set_sink(sink: Option<SinkFn>);
    pub(crate) fn rk_set_oob_hook(hook: Option<OobFn>);
    pub(crate) fn rk_interrupt_pending() -> c_int;
    pub(crate) fn rk_set_handlers(call: SEXP, state: SEXP);
    pub(crate) fn rk_pending_warnings() -> c_int;
    pub(crate) fn rk_set_quit_mode(mode: c_int);
    pub(crate) fn rk_interrupt();
    pub(crate) fn rk_clear_interrupt();
    pub(crate) fn rk_cstack_limit() -> usize;
    pub(crate) fn rk_temp_dir() -> *const c_char;

    pub(crate) fn rk_release(cell: SEXP);
    pub(crate) fn rk_cell_value(cell: SEXP) -> SEXP;
    pub(crate) fn rk_preserve(x: SEXP, cell: *mut SEXP) -> c_int;

    pub(crate) fn rk_parse(
        code: *const c_char,
        len: c_int,
        cell: *mut SEXP,
        status: *mut c_int,
        line: *mut c_int,
        msg: *mut c_char,
        msglen: c_int,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rk_parse_eval(
        code: *const c_char,
        len: c_int,
        env: SEXP,
        cell: *mut SEXP,
        visible: *mut c_int,
        status: *mut c_int,
        line: *mut c_int,
        msg: *mut c_char,
        msglen: c_int,
        phase: *mut c_int,
    ) -> c_int;
    pub(crate) fn rk_eval(
        expr: SEXP,
        env: SEXP,
        many: c_int,
        cell: *mut SEXP,
        visible: *mut c_int,
    ) -> c_int;
    pub(crate) fn rk_alloc(sexptype: u32, n: isize, cell: *mut SEXP) -> c_int;
    pub(crate) fn rk_set_strings(
        target: SEXP,
        offset: isize,
        n: isize,
        ptrs: *const *const c_char,
        lens: *const c_int,
    ) -> c_int;
    pub(crate) fn rk_set_attr(x: SEXP, name: *const c_char, value: SEXP) -> c_int;
    pub(crate) fn rk_dataptr(x: SEXP, ptr: *mut *mut std::ffi::c_void) -> c_int;
    pub(crate) fn rk_translate_utf8(x: SEXP, out: *mut *const c_char) -> c_int;
    pub(crate) fn rk_is_altrep(x: SEXP) -> c_int;
    pub(crate) fn rk_typeof(x: SEXP) -> c_int;
    pub(crate) fn rk_last_error_message() -> *const c_char;
    pub(crate) fn rk_make_call(name: *const c_char, args: SEXP, cell: *mut SEXP) -> c_int;
    pub(crate) fn rk_parse_eval_internal(src: *const c_char, env: SEXP, cell: *mut SEXP) -> c_int;
    pub(crate) fn rk_define(env: SEXP, name: *const c_char, value: SEXP) -> c_int;
    pub(crate) fn rk_new_env(parent: SEXP, cell: *mut SEXP) -> c_int;
    pub(crate) fn rk_env_length(env: SEXP) -> isize;
    pub(crate) fn rk_set_temp_dir(path: *const c_char) -> c_int;
    pub(crate) fn rk_state_snapshot() -> c_int;
    pub(crate) fn rk_state_changes() -> c_int;
    pub(crate) fn rk_get(
        env: SEXP,
        name: *const c_char,
        cell: *mut SEXP,
        found: *mut c_int,
    ) -> c_int;
}
