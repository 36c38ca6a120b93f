//! QAP1-encoded R expressions: what `CMD_eval` / `CMD_voidEval` carry when their
//! parameter is a DT_SEXP instead of R code (RSclient's `RS.eval.qap`).
//!
//! Rserve decodes such a parameter into an R object and evaluates it in the global
//! environment: a call (XT_LANG_NOTAG / XT_LANG_TAG) is called, a symbol
//! (XT_SYMNAME) is looked up, and anything else (a number, a string, an expression
//! vector) evaluates to itself. [`decode_expr`] reads those bytes into an [`Expr`]
//! tree whose leaves are plain [`Value`]s; a server that holds R turns the tree back
//! into the object (this crate has no R). The rules follow Rserve's `QAP_decode`
//! (qap_decode.c), with two deliberate differences: the empty symbol is R's empty
//! argument (as in `x[, 1]`), which Rserve cannot `install()`; and a type Rserve
//! does not know is refused here, where Rserve silently reads `NULL`, except
//! XT_UNKNOWN (what an encoder sends for an environment or a pointer), which is
//! `NULL` in both.

use rookery_value::Value;

use crate::frame::{split_item, QapError};
use crate::sexp::{
    self, xt_name, Strings, MAX_DEPTH, XT_HAS_ATTR, XT_LANG_NOTAG, XT_LANG_TAG, XT_LARGE,
    XT_LIST_NOTAG, XT_LIST_TAG, XT_NULL, XT_STR, XT_SYMNAME, XT_UNKNOWN, XT_VECTOR, XT_VECTOR_EXP,
};

/// One element of a call or a pairlist: its tag (`None` for none) and its value.
pub type Element = (Option<String>, Expr);

/// An R object as a QAP1 expression encodes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Data: a vector, list, `NULL` or anything else [`sexp::decode`] reads.
    Value(Value),
    /// A symbol; the empty name is R's empty argument.
    Symbol(String),
    /// A call: the function first, then the arguments.
    Call(Vec<Element>),
    /// A pairlist (a function's formals, say).
    Pairlist(Vec<Element>),
    /// A list (`expression = false`) or an expression vector (`true`) holding at
    /// least one element that is not data (always an expression vector for the
    /// latter, whatever it holds).
    Vector { items: Vec<Expr>, expression: bool },
}

/// Most elements one call, pairlist or vector may have.
const MAX_ELEMENTS: usize = 1 << 20;

/// Decodes exactly one expression filling all of `bytes` (a DT_SEXP's data).
pub fn decode_expr(bytes: &[u8], strings: Strings) -> Result<Expr, QapError> {
    let (expr, rest) = object(bytes, 0, strings)?;
    if !rest.is_empty() {
        let detail = format!("{} bytes after the expression", rest.len());
        return Err(QapError::malformed("expression", detail));
    }
    Ok(expr)
}

/// One expression from the front of `bytes`, and the bytes after it.
fn object(bytes: &[u8], depth: usize, strings: Strings) -> Result<(Expr, &[u8]), QapError> {
    if depth > MAX_DEPTH {
        return Err(QapError::TooDeep { max: MAX_DEPTH });
    }
    let (head, body) = split_item(bytes, XT_LARGE, "expression")?;
    let item = &bytes[..head.size + body.len()];
    let rest = &bytes[item.len()..];
    let has_attr = head.kind & XT_HAS_ATTR != 0;
    let kind = head.kind & !XT_HAS_ATTR;
    let language = matches!(
        kind,
        XT_LANG_NOTAG | XT_LANG_TAG | XT_LIST_NOTAG | XT_LIST_TAG | XT_SYMNAME | XT_VECTOR_EXP
    );
    if !language && kind != XT_VECTOR && kind != XT_UNKNOWN {
        let value = sexp::decode_as(item, MAX_DEPTH.saturating_sub(depth), strings)?;
        return Ok((Expr::Value(value), rest));
    }
    if has_attr {
        // Data with attributes (a named list, a data frame) is read as data; a
        // language object with attributes (a srcref, say) has no form here.
        if kind == XT_VECTOR {
            let value = sexp::decode_as(item, MAX_DEPTH.saturating_sub(depth), strings)?;
            return Ok((Expr::Value(value), rest));
        }
        let detail = format!("{} with attributes", xt_name(kind));
        return Err(QapError::malformed("expression", detail));
    }
    let expr = match kind {
        XT_UNKNOWN => Expr::Value(Value::NULL),
        XT_SYMNAME => Expr::Symbol(strings.text(c_string(body))),
        XT_LANG_NOTAG | XT_LANG_TAG => {
            let elements = elements(body, kind == XT_LANG_TAG, depth, strings)?;
            if elements.is_empty() {
                return Err(QapError::malformed("call", "no function"));
            }
            Expr::Call(elements)
        }
        XT_LIST_NOTAG | XT_LIST_TAG => {
            let elements = elements(body, kind == XT_LIST_TAG, depth, strings)?;
            Expr::Pairlist(elements)
        }
        _ => {
            let items = items(body, depth, strings)?;
            let expression = kind == XT_VECTOR_EXP;
            if !expression && items.iter().all(|e| matches!(e, Expr::Value(_))) {
                let values = items.into_iter().filter_map(|e| match e {
                    Expr::Value(v) => Some(v),
                    _ => None,
                });
                Expr::Value(Value::list(values.collect::<Vec<_>>()))
            } else {
                Expr::Vector { items, expression }
            }
        }
    };
    Ok((expr, rest))
}

/// A call's or a pairlist's elements: each an expression, then (when `tagged`) its
/// tag, a symbol or XT_NULL for none.
fn elements(
    mut body: &[u8],
    tagged: bool,
    depth: usize,
    strings: Strings,
) -> Result<Vec<Element>, QapError> {
    let mut out = Vec::new();
    while !body.is_empty() {
        if out.len() >= MAX_ELEMENTS {
            return Err(QapError::malformed("expression", "too many elements"));
        }
        let (expr, after) = object(body, depth + 1, strings)?;
        let (tag, after) = if tagged {
            tag(after, strings)?
        } else {
            (None, after)
        };
        out.push((tag, expr));
        body = after;
    }
    Ok(out)
}

fn items(mut body: &[u8], depth: usize, strings: Strings) -> Result<Vec<Expr>, QapError> {
    let mut out = Vec::new();
    while !body.is_empty() {
        if out.len() >= MAX_ELEMENTS {
            return Err(QapError::malformed("expression", "too many elements"));
        }
        let (expr, after) = object(body, depth + 1, strings)?;
        out.push(expr);
        body = after;
    }
    Ok(out)
}

/// A tag: XT_NULL (none), or XT_SYMNAME / XT_STR with the name (empty is none).
fn tag(bytes: &[u8], strings: Strings) -> Result<(Option<String>, &[u8]), QapError> {
    let (head, body) = split_item(bytes, XT_LARGE, "tag")?;
    let rest = &bytes[head.size + body.len()..];
    match head.kind {
        XT_NULL => Ok((None, rest)),
        XT_SYMNAME | XT_STR => {
            let name = strings.text(c_string(body));
            Ok(((!name.is_empty()).then_some(name), rest))
        }
        other => {
            let detail = format!("expected a symbol, found {}", xt_name(other));
            Err(QapError::malformed("tag", detail))
        }
    }
}

fn c_string(body: &[u8]) -> &[u8] {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    &body[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sexp::{XT_ARRAY_INT, XT_ARRAY_STR};

    /// One XT item: `kind`, then `body` padded to a multiple of 4.
    fn item(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut body = body.to_vec();
        while body.len() % 4 != 0 {
            body.push(0);
        }
        let word = u32::from(kind) | (body.len() as u32) << 8;
        let mut out = word.to_le_bytes().to_vec();
        out.extend(body);
        out
    }

    fn sym(name: &str) -> Vec<u8> {
        let mut b = name.as_bytes().to_vec();
        b.push(0);
        item(XT_SYMNAME, &b)
    }

    fn int(x: i32) -> Vec<u8> {
        item(XT_ARRAY_INT, &x.to_le_bytes())
    }

    fn string(s: &str) -> Vec<u8> {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        while b.len() % 4 != 0 {
            b.push(1);
        }
        item(XT_ARRAY_STR, &b)
    }

    fn null() -> Vec<u8> {
        item(XT_NULL, &[])
    }

    fn decode(bytes: &[u8]) -> Result<Expr, QapError> {
        decode_expr(bytes, Strings::Utf8)
    }

    #[test]
    fn untagged_call_of_symbols_and_constants() {
        // quote(keep_me + 1L), as RSclient's RS.eval.qap encodes it.
        let bytes = item(XT_LANG_NOTAG, &[sym("+"), sym("keep_me"), int(1)].concat());
        let expected = Expr::Call(vec![
            (None, Expr::Symbol("+".into())),
            (None, Expr::Symbol("keep_me".into())),
            (None, Expr::Value(Value::integers(vec![1]))),
        ]);
        assert_eq!(decode(&bytes).unwrap(), expected);
    }

    #[test]
    fn tagged_call_keeps_tags_and_reads_xt_null_as_none() {
        // quote(paste("a", "b", sep = "-")): every element is followed by its tag.
        let body = [
            sym("paste"),
            null(),
            string("a"),
            null(),
            string("b"),
            null(),
            string("-"),
            sym("sep"),
        ]
        .concat();
        let Expr::Call(elements) = decode(&item(XT_LANG_TAG, &body)).unwrap() else {
            panic!("a call");
        };
        let tags: Vec<_> = elements.iter().map(|(t, _)| t.as_deref()).collect();
        assert_eq!(tags, [None, None, None, Some("sep")]);
        assert_eq!(elements[3].1, Expr::Value(Value::strings(["-"])));
    }

    #[test]
    fn rserves_own_bytes_for_a_tagged_call() {
        // qap1.md §14: Rserve's encoding of quote(f(x, y=2)), after the DT_SEXP header.
        let hex = "17 2c 00 00 13 04 00 00 66 00 00 00 00 00 00 00 13 04 00 00 78 00 00 00 \
                   00 00 00 00 21 08 00 00 00 00 00 00 00 00 00 40 13 04 00 00 79 00 00 00";
        let bytes: Vec<u8> = hex
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        assert_eq!(
            decode(&bytes).unwrap(),
            Expr::Call(vec![
                (None, Expr::Symbol("f".into())),
                (None, Expr::Symbol("x".into())),
                (Some("y".into()), Expr::Value(Value::doubles(vec![2.0]))),
            ])
        );
    }

    #[test]
    fn nested_calls_lists_and_expression_vectors() {
        let inner = item(XT_LANG_NOTAG, &[sym("c"), int(1), int(2)].concat());
        let outer = item(XT_LANG_NOTAG, &[sym("sum"), inner].concat());
        let Expr::Call(e) = decode(&outer).unwrap() else {
            panic!("a call")
        };
        assert!(matches!(&e[1].1, Expr::Call(inner) if inner.len() == 3));

        // A list of data stays data; one holding a symbol does not.
        let data = item(XT_VECTOR, &[int(1), string("x")].concat());
        assert_eq!(
            decode(&data).unwrap(),
            Expr::Value(Value::list(vec![
                Value::integers(vec![1]),
                Value::strings(["x"])
            ]))
        );
        let mixed = item(XT_VECTOR, &[int(1), sym("x")].concat());
        assert!(matches!(
            decode(&mixed).unwrap(),
            Expr::Vector {
                expression: false,
                ..
            }
        ));
        let exp = item(XT_VECTOR_EXP, &int(1));
        assert!(matches!(
            decode(&exp).unwrap(),
            Expr::Vector {
                expression: true,
                ..
            }
        ));
        let formals = item(XT_LIST_TAG, &[sym(""), sym("x")].concat());
        assert_eq!(
            decode(&formals).unwrap(),
            Expr::Pairlist(vec![(Some("x".into()), Expr::Symbol(String::new()))])
        );
    }

    #[test]
    fn plain_data_and_unknown_objects() {
        assert_eq!(
            decode(&int(7)).unwrap(),
            Expr::Value(Value::integers(vec![7]))
        );
        let unknown = item(XT_UNKNOWN, &4u32.to_le_bytes());
        assert!(matches!(decode(&unknown).unwrap(), Expr::Value(v) if v.is_null()));
    }

    #[test]
    fn malformed_expressions_are_errors() {
        // An empty call, trailing bytes, a tag that is not a symbol, a language
        // object with attributes, a truncated item.
        assert!(decode(&item(XT_LANG_NOTAG, &[])).is_err());
        assert!(decode(&[sym("x"), int(1)].concat()).is_err());
        let bad_tag = item(XT_LANG_TAG, &[sym("f"), int(1)].concat());
        assert!(decode(&bad_tag).is_err());
        let attrs = item(XT_LIST_TAG, &[int(1), sym("a")].concat());
        let lang_with_attrs = item(XT_LANG_NOTAG | XT_HAS_ATTR, &[attrs, sym("f")].concat());
        assert!(decode(&lang_with_attrs).is_err());
        let whole = item(XT_LANG_NOTAG, &[sym("f"), int(1)].concat());
        assert!(decode(&whole[..whole.len() - 2]).is_err());
    }

    #[test]
    fn deep_nesting_is_capped() {
        let mut bytes = sym("x");
        for _ in 0..=MAX_DEPTH + 1 {
            bytes = item(XT_LANG_NOTAG, &[sym("f"), bytes].concat());
        }
        assert!(matches!(decode(&bytes), Err(QapError::TooDeep { .. })));
    }
}
