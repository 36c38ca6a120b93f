/*
 * shim.c: the C side of rookery-ffi.
 *
 * Owns every call into libR that can longjmp. Each entry point below runs its R work
 * inside R_ToplevelExec, so an R error, interrupt or allocation failure ends at the
 * toplevel context this file sets up and comes back to Rust as a return code. No
 * longjmp ever crosses a Rust frame, and no Rust code ever runs between a setjmp here
 * and the R code it protects (Rust callbacks from R, such as the console sink, never
 * call back into R).
 *
 * It also owns R start-up (embedding hooks, console capture, C stack bounds) because
 * those globals are missing from libR-sys' precomputed bindings.
 *
 * Objects handed to Rust are already protected: they sit in a doubly linked precious
 * list (O(1) insert and release), and Rust owns the list cell.
 */
#define R_INTERFACE_PTRS 1
#define CSTACK_DEFNS 1
#define _GNU_SOURCE 1
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <Rinternals.h>
#include <Rinterface.h>
#include <Rembedded.h>
#include <R_ext/Parse.h>
#include <R_ext/Rdynload.h>

/* Exported by libR but not declared in its public headers. */
extern Rboolean R_Visible;
extern int R_ParseError;
extern char R_ParseErrorMsg[];
extern int R_SignalHandlers;
extern int R_CStackDir;
extern int R_interrupts_pending;

static int rk_exec(void (*fun)(void *), void *data);
static void rk_register_routines(void);

/* ---- console capture ------------------------------------------------------ */

typedef void (*rk_sink_fn)(const char *buf, int len, int otype);
static rk_sink_fn rk_sink = NULL;

static void rk_write_console_ex(const char *buf, int len, int otype)
{
    if (rk_sink)
        rk_sink(buf, len, otype);
    else
        (void)!write(otype ? 2 : 1, buf, (size_t)len);
}

static void rk_show_message(const char *msg)
{
    rk_write_console_ex(msg, (int)strlen(msg), 1);
    rk_write_console_ex("\n", 1, 1);
}

/* stdin is never R's: readline() and friends see end of input. */
static int rk_read_console(const char *prompt, unsigned char *buf, int len, int hist)
{
    (void)prompt; (void)hist;
    if (len > 0) buf[0] = 0;
    return 0;
}

static void rk_busy(int which) { (void)which; }

/* ---- q() / fatal errors ----------------------------------------------------- */

/* 0: q() raises an R error (in-process). 1: q() ends the process with _exit(status). */
static int rk_quit_mode = 0;

static void rk_cleanup(SA_TYPE saveact, int status, int runLast)
{
    (void)saveact; (void)runLast;
    if (rk_quit_mode == 1) {
        fflush(NULL);
        _exit(status);
    }
    Rf_error("q() and quit() cannot end an embedded R: the host process owns its lifetime");
}

static void rk_suicide(const char *msg)
{
    /* R's state is unusable after this; there is nothing to return to. */
    (void)!write(2, "rookery: fatal R error: ", 24);
    (void)!write(2, msg, strlen(msg));
    (void)!write(2, "\n", 1);
    _exit(70);
}

void rk_set_quit_mode(int mode) { rk_quit_mode = mode; }

/* ---- precious list ------------------------------------------------------- */

static SEXP rk_precious = NULL;

/* Must run inside a toplevel context: Rf_cons may fail to allocate. */
static SEXP rk_insert(SEXP x)
{
    PROTECT(x);
    SEXP cell = PROTECT(Rf_cons(rk_precious, CDR(rk_precious)));
    SET_TAG(cell, x);
    SETCDR(rk_precious, cell);
    if (CDR(cell) != R_NilValue)
        SETCAR(CDR(cell), cell);
    UNPROTECT(2);
    return cell;
}

void rk_release(SEXP cell)
{
    SEXP before = CAR(cell), after = CDR(cell);
    SETCDR(before, after);
    if (after != R_NilValue)
        SETCAR(after, before);
    SET_TAG(cell, R_NilValue);
}

SEXP rk_cell_value(SEXP cell) { return TAG(cell); }

typedef struct { SEXP x; SEXP cell; } preserve_args;
static void do_preserve(void *d) { preserve_args *a = d; a->cell = rk_insert(a->x); }

int rk_preserve(SEXP x, SEXP *cell)
{
    preserve_args a = { x, NULL };
    if (!rk_exec(do_preserve, &a)) return 0;
    *cell = a.cell;
    return 1;
}

/* ---- protected execution ---------------------------------------------------- */

/* A pre-built call that installs Rookery's calling handlers (error, warning,
   interrupt) in the current toplevel context; set once after start-up. */
static SEXP rk_handlers = NULL;

static SEXP rk_state = NULL, rk_warnings_sym = NULL;

/* `call` installs the handlers; `state` is the environment they record into. */
void rk_set_handlers(SEXP call, SEXP state)
{
    R_PreserveObject(call);
    R_PreserveObject(state);
    rk_handlers = call;
    rk_state = state;
    rk_warnings_sym = Rf_install("warnings");
}

/* Number of warnings recorded since the state was last taken. Allocates nothing. */
int rk_pending_warnings(void)
{
    if (!rk_state) return 0;
    SEXP w = Rf_findVarInFrame(rk_state, rk_warnings_sym);
    return w == R_UnboundValue ? 0 : (int)Rf_xlength(w);
}

typedef struct { void (*fun)(void *); void *data; } exec_args;

static void do_exec(void *d)
{
    exec_args *e = d;
    if (rk_handlers) Rf_eval(rk_handlers, R_BaseEnv);
    e->fun(e->data);
}

/* Runs fun(data) in a fresh toplevel context with the handlers installed.
   Returns 1 when fun returned, 0 when R jumped out of it. */
static int rk_exec(void (*fun)(void *), void *data)
{
    exec_args e = { fun, data };
    return R_ToplevelExec(do_exec, &e) ? 1 : 0;
}

/* ---- start-up ------------------------------------------------------------- */

static void rk_set_cstack(void)
{
    pthread_attr_t attr;
    void *addr = NULL;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) return;
    if (pthread_attr_getstack(&attr, &addr, &size) == 0 && size > (1u << 20)) {
        /* The stack grows down from addr + size. Keep 256 kB beyond R's 95% mark
           for R's own error handling and our frames below it. */
        R_CStackStart = (uintptr_t)addr + size;
        R_CStackLimit = (uintptr_t)(size - (256u << 10));
        R_CStackDir = 1;
    }
    pthread_attr_destroy(&attr);
}

int rk_start(int argc, char **argv, int signal_handlers, int quit_mode)
{
    R_SignalHandlers = signal_handlers;
    rk_quit_mode = quit_mode;
    Rf_initialize_R(argc, argv);
    /* R measured the main thread's stack; R may run on another one. */
    rk_set_cstack();
    R_Interactive = FALSE;
    R_Outputfile = NULL;
    R_Consolefile = NULL;
    ptr_R_WriteConsole = NULL;
    ptr_R_WriteConsoleEx = rk_write_console_ex;
    ptr_R_ShowMessage = rk_show_message;
    ptr_R_ReadConsole = rk_read_console;
    ptr_R_CleanUp = rk_cleanup;
    ptr_R_Suicide = rk_suicide;
    ptr_R_Busy = rk_busy;
    setup_Rmainloop();
    /* Start-up leaves the limit disabled; bound it by the real stack again. */
    rk_set_cstack();
    rk_precious = Rf_cons(R_NilValue, Rf_cons(R_NilValue, R_NilValue));
    R_PreserveObject(rk_precious);
    rk_register_routines();
    return 0;
}

void rk_set_sink(rk_sink_fn sink) { rk_sink = sink; }

void rk_interrupt(void) { __atomic_store_n(&R_interrupts_pending, 1, __ATOMIC_RELAXED); }
void rk_clear_interrupt(void) { __atomic_store_n(&R_interrupts_pending, 0, __ATOMIC_RELAXED); }

uintptr_t rk_cstack_limit(void) { return R_CStackLimit; }
const char *rk_temp_dir(void) { return R_TempDir; }

/* ---- parse ------------------------------------------------------------------ */

typedef struct {
    const char *code;
    int len;
    SEXP cell;
    ParseStatus status;
} parse_args;

static void do_parse(void *d)
{
    parse_args *a = d;
    SEXP text = PROTECT(Rf_ScalarString(Rf_mkCharLenCE(a->code, a->len, CE_UTF8)));
    SEXP exprs = PROTECT(R_ParseVector(text, -1, &a->status, R_NilValue));
    a->cell = rk_insert(exprs);
    UNPROTECT(2);
}

/* Parses len bytes of UTF-8 code (user code stays data: it is never spliced into
   other R source). Returns 1 when parsing ran (check *status), 0 when R raised an
   error while parsing (lexer errors and embedded NULs do that). On PARSE_ERROR, *line and msg describe the failure. */
int rk_parse(const char *code, int len, SEXP *cell, int *status, int *line, char *msg, int msglen)
{
    parse_args a = { code, len, NULL, PARSE_NULL };
    if (!rk_exec(do_parse, &a)) return 0;
    *cell = a.cell;
    *status = (int)a.status;
    *line = R_ParseError;
    if (msglen > 0) {
        strncpy(msg, R_ParseErrorMsg, (size_t)msglen - 1);
        msg[msglen - 1] = 0;
    }
    return 1;
}

/* ---- eval ------------------------------------------------------------------- */

typedef struct {
    SEXP expr, env, cell;
    int many, visible;
} eval_args;

static void do_eval(void *d)
{
    eval_args *a = d;
    SEXP value = R_NilValue;
    R_Visible = TRUE;
    if (a->many) {
        R_xlen_t n = XLENGTH(a->expr);
        for (R_xlen_t i = 0; i < n; i++) {
            R_Visible = TRUE;
            value = Rf_eval(VECTOR_ELT(a->expr, i), a->env);
        }
    } else {
        value = Rf_eval(a->expr, a->env);
    }
    a->visible = R_Visible;
    a->cell = rk_insert(value);
}

typedef struct {
    const char *code;
    int len;
    SEXP env, cell;
    ParseStatus status;
    int visible, phase;
} user_parse_eval_args;

static void do_user_parse_eval(void *d)
{
    user_parse_eval_args *a = d;
    SEXP text = PROTECT(Rf_ScalarString(Rf_mkCharLenCE(a->code, a->len, CE_UTF8)));
    SEXP exprs = PROTECT(R_ParseVector(text, -1, &a->status, R_NilValue));
    if (a->status != PARSE_OK) {
        UNPROTECT(2);
        return;
    }
    a->phase = 1;
    SEXP value = R_NilValue;
    R_Visible = TRUE;
    R_xlen_t n = XLENGTH(exprs);
    for (R_xlen_t i = 0; i < n; i++) {
        R_Visible = TRUE;
        value = Rf_eval(VECTOR_ELT(exprs, i), a->env);
    }
    PROTECT(value);
    a->visible = R_Visible;
    a->cell = rk_insert(value);
    UNPROTECT(3);
}

/* Parses len bytes of UTF-8 code and evaluates each expression in env, in one
   toplevel context (one set of handlers). Returns 1 when it ran to the end: then
   *status is the parse status, and on PARSE_OK *cell holds the last value; on
   PARSE_ERROR *line and msg describe the failure. Returns 0 when R jumped out:
   *phase says whether that was while parsing (0: a lexer error) or evaluating (1). */
int rk_parse_eval(const char *code, int len, SEXP env, SEXP *cell, int *visible,
                  int *status, int *line, char *msg, int msglen, int *phase)
{
    user_parse_eval_args a = { code, len, env, NULL, PARSE_NULL, 0, 0 };
    int ran = rk_exec(do_user_parse_eval, &a);
    *phase = a.phase;
    if (!ran) return 0;
    *cell = a.cell;
    *visible = a.visible;
    *status = (int)a.status;
    *line = R_ParseError;
    if (msglen > 0) {
        strncpy(msg, R_ParseErrorMsg, (size_t)msglen - 1);
        msg[msglen - 1] = 0;
    }
    return 1;
}

/* Evaluates expr (or each element of an EXPRSXP when many != 0) in env, with the
   Rookery's calling handlers installed. Returns 1 and a protected cell on
   success, 0 when evaluation jumped to top level (error, interrupt, abort). */
int rk_eval(SEXP expr, SEXP env, int many, SEXP *cell, int *visible)
{
    eval_args a = { expr, env, NULL, many, 1 };
    if (!rk_exec(do_eval, &a)) return 0;
    *cell = a.cell;
    *visible = a.visible;
    return 1;
}

/* ---- building R objects ----------------------------------------------------- */

typedef struct { SEXPTYPE type; R_xlen_t n; SEXP cell; } alloc_args;

static void do_alloc(void *d)
{
    alloc_args *a = d;
    a->cell = rk_insert(Rf_allocVector(a->type, a->n));
}

int rk_alloc(unsigned int type, R_xlen_t n, SEXP *cell)
{
    alloc_args a = { (SEXPTYPE)type, n, NULL };
    if (!rk_exec(do_alloc, &a)) return 0;
    *cell = a.cell;
    return 1;
}

typedef struct {
    SEXP target;
    R_xlen_t offset, n;
    const char *const *ptrs;
    const int *lens;
} strings_args;

static void do_strings(void *d)
{
    strings_args *a = d;
    for (R_xlen_t i = 0; i < a->n; i++) {
        SEXP s = a->lens[i] < 0 ? NA_STRING : Rf_mkCharLenCE(a->ptrs[i], a->lens[i], CE_UTF8);
        SET_STRING_ELT(a->target, a->offset + i, s);
    }
}

/* Fills target[offset .. offset+n) from UTF-8 buffers; a negative length is NA. */
int rk_set_strings(SEXP target, R_xlen_t offset, R_xlen_t n, const char *const *ptrs, const int *lens)
{
    strings_args a = { target, offset, n, ptrs, lens };
    return rk_exec(do_strings, &a);
}

typedef struct { SEXP x; const char *name; SEXP value; } attr_args;

static void do_set_attr(void *d)
{
    attr_args *a = d;
    SEXP sym = Rf_install(a->name);
    if (sym != R_RowNamesSymbol) {
        Rf_setAttrib(a->x, sym, a->value);
        return;
    }
    /* Rf_setAttrib rewrites integer row names 1:n into the compact c(NA, n) form;
       append row.names as given so that every form round-trips unchanged. The
       object is fresh, so it holds no row.names yet. */
    SEXP cell = PROTECT(Rf_cons(a->value, R_NilValue));
    SET_TAG(cell, sym);
    SEXP attrs = ATTRIB(a->x);
    if (attrs == R_NilValue) {
        SET_ATTRIB(a->x, cell);
    } else {
        while (CDR(attrs) != R_NilValue) attrs = CDR(attrs);
        SETCDR(attrs, cell);
    }
    UNPROTECT(1);
}

int rk_set_attr(SEXP x, const char *name, SEXP value)
{
    attr_args a = { x, name, value };
    return rk_exec(do_set_attr, &a);
}

/* ---- reading R objects ----------------------------------------------------- */

typedef struct { SEXP x; void *ptr; } dataptr_args;
static void do_dataptr(void *d) { dataptr_args *a = d; a->ptr = DATAPTR(a->x); }

/* The data pointer of a vector, materializing an ALTREP vector first (which may
   allocate). Valid while x is protected and unmodified. */
int rk_dataptr(SEXP x, void **ptr)
{
    dataptr_args a = { x, NULL };
    if (!rk_exec(do_dataptr, &a)) return 0;
    *ptr = a.ptr;
    return 1;
}

typedef struct { SEXP x; const char *out; } tr_args;
static void do_translate(void *d) { tr_args *a = d; a->out = Rf_translateCharUTF8(a->x); }

/* UTF-8 form of a CHARSXP in another encoding; the result lives until the next R call. */
int rk_translate_utf8(SEXP x, const char **out)
{
    tr_args a = { x, NULL };
    if (!rk_exec(do_translate, &a)) return 0;
    *out = a.out;
    return 1;
}

int rk_is_altrep(SEXP x) { return ALTREP(x) != 0; }
int rk_is_s4(SEXP x) { return IS_S4_OBJECT(x) != 0; }

int rk_typeof(SEXP x) { return TYPEOF(x); }

/* ---- calls ------------------------------------------------------------------ */

typedef struct { const char *name; SEXP args; SEXP cell; } call_args;

static void do_make_call(void *d)
{
    call_args *a = d;
    const char *sep = strstr(a->name, "::");
    SEXP fun;
    if (sep) {
        char pkgname[256];
        size_t plen = (size_t)(sep - a->name);
        if (plen >= sizeof pkgname) Rf_error("package name too long in '%s'", a->name);
        memcpy(pkgname, a->name, plen);
        pkgname[plen] = 0;
        SEXP pkg = PROTECT(Rf_install(pkgname));
        const char *rest = sep + 2;
        int internal = (*rest == ':');
        if (internal) rest++;
        fun = Rf_lang3(Rf_install(internal ? ":::" : "::"), pkg, Rf_install(rest));
        UNPROTECT(1);
    } else {
        fun = Rf_install(a->name);
    }
    PROTECT(fun);
    SEXP names = Rf_getAttrib(a->args, R_NamesSymbol);
    R_xlen_t n = XLENGTH(a->args);
    SEXP rest = PROTECT(Rf_allocList((int)n));
    SEXP call = Rf_lcons(fun, rest);
    UNPROTECT(1);
    PROTECT(call);
    SEXP p = CDR(call);
    for (R_xlen_t i = 0; i < n; i++, p = CDR(p)) {
        SETCAR(p, VECTOR_ELT(a->args, i));
        if (names != R_NilValue) {
            const char *tag = CHAR(STRING_ELT(names, i));
            if (STRING_ELT(names, i) != NA_STRING && tag[0])
                SET_TAG(p, Rf_install(tag));
        }
    }
    a->cell = rk_insert(call);
    UNPROTECT(2);
}

/* Builds the call name(args...) where args is a list whose names tag the
   arguments. "pkg::fun" and "pkg:::fun" name functions in a namespace. */
int rk_make_call(const char *name, SEXP args, SEXP *cell)
{
    call_args a = { name, args, NULL };
    if (!rk_exec(do_make_call, &a)) return 0;
    *cell = a.cell;
    return 1;
}

typedef struct { const char *src; SEXP env; SEXP cell; } pe_args;

static void do_parse_eval(void *d)
{
    pe_args *a = d;
    a->cell = rk_insert(R_ParseEvalString(a->src, a->env));
}

/* Evaluates Rookery's own R source (never user code) in env. */
int rk_parse_eval_internal(const char *src, SEXP env, SEXP *cell)
{
    pe_args a = { src, env, NULL };
    if (!rk_exec(do_parse_eval, &a)) return 0;
    *cell = a.cell;
    return 1;
}

typedef struct { SEXP env; const char *name; SEXP value; } def_args;

static void do_define(void *d)
{
    def_args *a = d;
    Rf_defineVar(Rf_install(a->name), a->value, a->env);
}

int rk_define(SEXP env, const char *name, SEXP value)
{
    def_args a = { env, name, value };
    return rk_exec(do_define, &a);
}

typedef struct { SEXP env; const char *name; SEXP cell; int found; } get_args;

static void do_get(void *d)
{
    get_args *a = d;
    SEXP v = Rf_findVar(Rf_install(a->name), a->env);
    if (v == R_UnboundValue) { a->found = 0; return; }
    PROTECT(v);
    if (TYPEOF(v) == PROMSXP) v = Rf_eval(v, a->env);
    UNPROTECT(1);
    a->found = 1;
    a->cell = rk_insert(v);
}

/* Looks name up from env (inheriting), forcing promises. *found = 0 when unbound. */
int rk_get(SEXP env, const char *name, SEXP *cell, int *found)
{
    get_args a = { env, name, NULL, 0 };
    if (!rk_exec(do_get, &a)) return 0;
    *found = a.found;
    if (a.found) *cell = a.cell;
    return 1;
}

/* R's text of the last error ("Error in f() : msg\n"), for errors that no handler
   recorded (for example when handling a C stack overflow ran out of stack). */
const char *rk_last_error_message(void) { return R_curErrorBuf(); }

/* ---- worker support: temp dir and state fingerprint ------------------------- */

/* Points R's session temp dir at `path` (a directory the caller created). The old
   string is left alone: the zygote's copy of it still names the zygote's dir. */
int rk_set_temp_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return 0;
    R_TempDir = copy;
    return 1;
}

/* What a stateless caller could leave behind, as pointers taken at a quiet moment:
   [0] symbols bound in the global env, [1] their values, [2] the values of
   options(), [3] the environments on the search path, [4] the check below, [5] the
   names of options(). The list itself is preserved,
   so none of the old objects can be freed and their addresses reused. */
static SEXP rk_fp = NULL;
static R_xlen_t rk_fp_nglobal = 0, rk_fp_nns = 0;

static SEXP rk_options(void)
{
    return Rf_findVarInFrame3(R_BaseEnv, Rf_install(".Options"), TRUE);
}

/* Open connections, diverted sinks, open graphics devices: state outside the
   pointers above. `.Internal` calls, because the closures around them (sink.number's
   match.arg) cost tens of microseconds. */
static const char *rk_extra_state_src =
    "length(.Internal(getAllConnections())) > 3L || .Internal(sink.number(TRUE)) > 0L || "
    ".Internal(sink.number(FALSE)) != 2L || .Device != \"null device\"";

static void do_snapshot(void *d)
{
    (void)d;
    SEXP fp = PROTECT(Rf_allocVector(VECSXP, 6));
    ParseStatus status;
    SEXP src = PROTECT(Rf_mkString(rk_extra_state_src));
    SEXP parsed = PROTECT(R_ParseVector(src, 1, &status, R_NilValue));
    if (status != PARSE_OK) Rf_error("rookery: cannot parse the state check");
    SET_VECTOR_ELT(fp, 4, VECTOR_ELT(parsed, 0));
    UNPROTECT(2);
    SEXP names = PROTECT(R_lsInternal3(R_GlobalEnv, TRUE, FALSE));
    R_xlen_t n = Rf_xlength(names);
    SEXP syms = Rf_allocVector(VECSXP, n);
    SET_VECTOR_ELT(fp, 0, syms);
    SEXP vals = Rf_allocVector(VECSXP, n);
    SET_VECTOR_ELT(fp, 1, vals);
    for (R_xlen_t i = 0; i < n; i++) {
        SEXP sym = Rf_installTrChar(STRING_ELT(names, i));
        SET_VECTOR_ELT(syms, i, sym);
        SET_VECTOR_ELT(vals, i, Rf_findVarInFrame3(R_GlobalEnv, sym, FALSE));
    }
    SEXP opts = rk_options();
    SEXP ov = Rf_allocVector(VECSXP, Rf_length(opts));
    SET_VECTOR_ELT(fp, 2, ov);
    SEXP ot = Rf_allocVector(VECSXP, Rf_length(opts));
    SET_VECTOR_ELT(fp, 5, ot);
    R_xlen_t k = 0;
    for (SEXP o = opts; o != R_NilValue; o = CDR(o), k++) {
        SET_VECTOR_ELT(ov, k, CAR(o));
        SET_VECTOR_ELT(ot, k, TAG(o));
    }
    R_xlen_t depth = 0;
    for (SEXP e = ENCLOS(R_GlobalEnv); e != R_EmptyEnv; e = ENCLOS(e)) depth++;
    SEXP sp = Rf_allocVector(VECSXP, depth);
    SET_VECTOR_ELT(fp, 3, sp);
    k = 0;
    for (SEXP e = ENCLOS(R_GlobalEnv); e != R_EmptyEnv; e = ENCLOS(e)) SET_VECTOR_ELT(sp, k++, e);
    if (rk_fp) R_ReleaseObject(rk_fp);
    R_PreserveObject(fp);
    rk_fp = fp;
    rk_fp_nglobal = Rf_length(R_GlobalEnv);
    rk_fp_nns = Rf_length(R_NamespaceRegistry);
    UNPROTECT(2);
}

/* Records the current state as the baseline that rk_state_changes compares with. */
int rk_state_snapshot(void) { return rk_exec(do_snapshot, NULL); }

typedef struct { int changes; } changes_args;

/* The random seed goes back to the snapshot's, as a fresh fork would have it:
   using random numbers is not a reason to replace a worker. */
static void rk_restore_seed(void)
{
    SEXP sym = Rf_install(".Random.seed");
    SEXP syms = VECTOR_ELT(rk_fp, 0), vals = VECTOR_ELT(rk_fp, 1);
    SEXP now = Rf_findVarInFrame3(R_GlobalEnv, sym, FALSE);
    for (R_xlen_t i = 0; i < Rf_xlength(syms); i++) {
        if (VECTOR_ELT(syms, i) == sym) {
            if (now != VECTOR_ELT(vals, i)) Rf_defineVar(sym, VECTOR_ELT(vals, i), R_GlobalEnv);
            return;
        }
    }
    if (now != R_UnboundValue) R_removeVarFromFrame(sym, R_GlobalEnv);
}

static void do_changes(void *d)
{
    changes_args *a = d;
    int c = 0;
    rk_restore_seed();
    SEXP syms = VECTOR_ELT(rk_fp, 0), vals = VECTOR_ELT(rk_fp, 1);
    if (Rf_length(R_GlobalEnv) != rk_fp_nglobal) c |= 1;
    for (R_xlen_t i = 0; !(c & 1) && i < Rf_xlength(syms); i++)
        if (Rf_findVarInFrame3(R_GlobalEnv, VECTOR_ELT(syms, i), FALSE) != VECTOR_ELT(vals, i))
            c |= 1;
    SEXP ov = VECTOR_ELT(rk_fp, 2);
    R_xlen_t k = 0, nopt = Rf_xlength(ov);
    SEXP ot = VECTOR_ELT(rk_fp, 5);
    for (SEXP o = rk_options(); o != R_NilValue; o = CDR(o), k++) {
        if (k >= nopt || TAG(o) != VECTOR_ELT(ot, k)) { c |= 2; break; }
        /* `op <- options(...); on.exit(options(op))`, common in packages (predict
           methods among them), puts back equal values in new objects. */
        if (CAR(o) != VECTOR_ELT(ov, k) && !R_compute_identical(CAR(o), VECTOR_ELT(ov, k),
                                   IDENT_USE_CLOENV | IDENT_NUM_AS_BITS | IDENT_NA_AS_BITS)) {
            c |= 2;
            break;
        }
    }
    if (k != nopt) c |= 2;
    SEXP sp = VECTOR_ELT(rk_fp, 3);
    k = 0;
    R_xlen_t depth = Rf_xlength(sp);
    for (SEXP e = ENCLOS(R_GlobalEnv); e != R_EmptyEnv; e = ENCLOS(e), k++)
        if (k >= depth || e != VECTOR_ELT(sp, k)) { c |= 4; break; }
    if (k != depth) c |= 4;
    if (Rf_length(R_NamespaceRegistry) != rk_fp_nns) c |= 8;
    if (Rf_asLogical(Rf_eval(VECTOR_ELT(rk_fp, 4), R_BaseEnv)) != FALSE) c |= 16;
    a->changes = c;
}

/* Restores the random seed, then returns the bit set of what changed since the
   snapshot: 1 global env, 2 options(), 4 search
   path, 8 loaded namespaces, 16 open connections, sinks or devices. -1 if there is no snapshot or R jumped out. */
int rk_state_changes(void)
{
    if (!rk_fp) return -1;
    changes_args a = { 0 };
    /* A bare toplevel context: nothing here signals conditions worth recording, and
       installing the handlers would double the cost. */
    if (!R_ToplevelExec(do_changes, &a)) return -1;
    return a.changes;
}

typedef struct { SEXP parent; SEXP cell; } env_args;

static void do_new_env(void *d)
{
    env_args *a = d;
    a->cell = rk_insert(R_NewEnv(a->parent, TRUE, 0));
}

/* A new hashed environment whose enclosure is `parent`. */
int rk_new_env(SEXP parent, SEXP *cell)
{
    env_args a = { parent, NULL };
    if (!rk_exec(do_new_env, &a)) return 0;
    *cell = a.cell;
    return 1;
}

/* Number of bindings in an environment's own frame. Allocates nothing, cannot fail. */
R_xlen_t rk_env_length(SEXP env) { return TYPEOF(env) == ENVSXP ? Rf_length(env) : 0; }

/* ---- Rserve's R API in the "(embedding)" domain ---------------------------------
 *
 * Rserve's own binary registers its native routines with the embedding application's
 * DllInfo, and the Rserve package's R functions (`self.oobSend`, `self.oobMessage`)
 * find them there by name (its .onLoad then skips loading its own library). Rookery
 * registers the same names, so `library(Rserve); self.oobSend(x)` works unmodified in
 * a session. The work is done by a Rust hook (rookery-ffi's `oob` module) that never
 * calls back into R: it takes the object, hands it on and returns a status, and only
 * then does this file raise an R error, from C frames alone.
 */

typedef int (*rk_oob_fn)(int message, int code, SEXP what, SEXP *cell, char *err, int errlen);
static rk_oob_fn rk_oob_hook = NULL;
void rk_set_oob_hook(rk_oob_fn hook) { rk_oob_hook = hook; }

/* The hook's answers. */
#define RK_OOB_OK 0
#define RK_OOB_ERROR 1
#define RK_OOB_INTERRUPTED 2
#define RK_OOB_GONE 3

static SEXP rk_oob(SEXP what, SEXP code, int message)
{
    static char err[1024];
    SEXP cell = R_NilValue, value;
    int user_code = Rf_asInteger(code), rc;
    if (user_code == NA_INTEGER)
        Rf_error("the OOB message code must be an integer");
    if (!rk_oob_hook)
        Rf_error("OOB messages are not available in this process");
    err[0] = 0;
    rc = rk_oob_hook(message, user_code & 0xfff, what, &cell, err, (int) sizeof err);
    err[sizeof err - 1] = 0;
    switch (rc) {
    case RK_OOB_OK:
        break;
    case RK_OOB_GONE:
        /* As Rserve: a send to a client that is gone is FALSE, not an error. */
        if (!message)
            return Rf_ScalarLogical(FALSE);
        Rf_error("%s", err);
    case RK_OOB_INTERRUPTED:
        R_CheckUserInterrupt();
        Rf_error("%s", err[0] ? err : "interrupted while waiting for the client");
    default:
        Rf_error("%s", err[0] ? err : "the OOB message failed");
    }
    if (!message)
        return Rf_ScalarLogical(TRUE);
    value = PROTECT(rk_cell_value(cell));
    rk_release(cell);
    UNPROTECT(1);
    return value;
}

static SEXP rk_oob_send(SEXP what, SEXP code) { return rk_oob(what, code, 0); }
static SEXP rk_oob_msg(SEXP what, SEXP code) { return rk_oob(what, code, 1); }

static SEXP rk_no_ctrl(SEXP what)
{
    (void) what;
    Rf_error("Rookery has no control commands (self.ctrlEval, self.ctrlSource): "
             "each session is a process of its own, with nothing shared to change");
    return R_NilValue;
}

/* Through void (*)(void), which matches every function type, as R's registration
   expects of a .Call routine of any arity. */
#define RK_CALL(f) ((DL_FUNC) (void (*)(void)) (f))

static const R_CallMethodDef rk_call_methods[] = {
    {"Rserve_oobSend", RK_CALL(rk_oob_send), 2},
    {"Rserve_oobMsg", RK_CALL(rk_oob_msg), 2},
    {"Rserve_ctrlEval", RK_CALL(rk_no_ctrl), 1},
    {"Rserve_ctrlSource", RK_CALL(rk_no_ctrl), 1},
    {NULL, NULL, 0}
};

static void rk_register_routines(void)
{
    R_registerRoutines(R_getEmbeddingDllInfo(), NULL, rk_call_methods, NULL, NULL);
}

int rk_interrupt_pending(void) { return __atomic_load_n(&R_interrupts_pending, __ATOMIC_RELAXED) != 0; }
