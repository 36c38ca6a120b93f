//! `CMD_eval` / `CMD_voidEval` with a QAP-encoded expression (a DT_SEXP parameter,
//! what RSclient's `RS.eval.qap` sends) instead of R code.
//!
//! Rserve decodes the object and evaluates it in the global environment. Here the
//! decoded [`Expr`] tree travels to the session's worker as one plain [`Value`] (a
//! nested list of nodes, see [`node`]); one fixed R function ([`EVAL_CODE`]) rebuilds
//! the object from it and evaluates it in the session's environment. No R code is
//! generated from the client's bytes, so no name or string can break out of the
//! rebuilt object, and the temporary variable is gone before the user's expression
//! runs (`ls()` in it sees only the user's own names).

use rookery_engine::Value;
use rookery_qap::expr::{Element, Expr};

/// The session variable the node tree is assigned to.
pub(super) const NODE_VAR: &str = ".rookery_qap_expr";

/// Rebuilds the object from its node tree, removes the variable, then evaluates the
/// object where the session evaluates code (R's global environment in a session).
pub(super) const EVAL_CODE: &str = r#"eval((function(n) {
  force(n)
  rm(list = ".rookery_qap_expr", envir = parent.frame())
  b <- function(n) switch(n[[1L]],
    v = n[[2L]],
    s = as.name(n[[2L]]),
    m = quote(expr = ),
    c = as.call(`names<-`(lapply(n[[2L]], b), n[[3L]])),
    p = as.pairlist(`names<-`(lapply(n[[2L]], b), n[[3L]])),
    l = lapply(n[[2L]], b),
    e = as.expression(lapply(n[[2L]], b)))
  b(n)
})(.rookery_qap_expr))"#;

/// `expr` as the node tree [`EVAL_CODE`] reads: `list("v", value)` for data,
/// `list("s", name)` for a symbol, `list("m")` for the empty argument,
/// `list("c" | "p", elements, tags or NULL)` for a call or a pairlist, and
/// `list("l" | "e", items)` for a list or an expression vector holding language.
pub(super) fn node(expr: &Expr) -> Value {
    let kind = |k: &str| Value::scalar_string(k);
    match expr {
        Expr::Value(v) => Value::list(vec![kind("v"), v.clone()]),
        Expr::Symbol(name) if name.is_empty() => Value::list(vec![kind("m")]),
        Expr::Symbol(name) => Value::list(vec![kind("s"), Value::scalar_string(name.as_str())]),
        Expr::Call(elements) => tagged("c", elements),
        Expr::Pairlist(elements) => tagged("p", elements),
        Expr::Vector { items, expression } => Value::list(vec![
            kind(if *expression { "e" } else { "l" }),
            Value::list(items.iter().map(node).collect::<Vec<_>>()),
        ]),
    }
}

fn tagged(kind: &str, elements: &[Element]) -> Value {
    let items = Value::list(elements.iter().map(|(_, e)| node(e)).collect::<Vec<_>>());
    let tags = if elements.iter().any(|(t, _)| t.is_some()) {
        Value::strings(elements.iter().map(|(t, _)| t.clone().unwrap_or_default()))
    } else {
        Value::NULL
    };
    Value::list(vec![Value::scalar_string(kind), items, tags])
}
