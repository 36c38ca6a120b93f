//! The QAP1 codec against a real Rserve (no mocks): what Rserve sends decodes to the
//! value Rookery's own R gives for the same expression, our encoding of that value is
//! the bytes Rserve sent, and values we encode are `identical()` to R literals once
//! Rserve has read them (CMD_setSEXP / CMD_assignSEXP).
//!
//! Each test starts its own Rserve daemon on a free loopback port and kills it by the
//! pid it wrote (`crate::rserve`).

use rookery_engine::value::{na_real, Complex, Data, Value, NA_INTEGER};
use rookery_server::qap::frame::{self, cmd, dt, status, QapError, ID_STRING};
use rookery_server::qap::sexp;

use crate::rserve::{decode_payload, QapClient, Rserve};
use crate::support::{r, value};

/// A client on `rs`, after checking Rserve's ID string.
fn connect(rs: &Rserve) -> QapClient {
    let (c, id) = QapClient::open(rs.port);
    assert_eq!(id, ID_STRING, "ID string");
    c
}

/// Equality that compares doubles by bits, so NA and NaN differ.
fn same_bits(a: &Value, b: &Value) -> bool {
    let data = match (&a.data, &b.data) {
        (Data::Double(x), Data::Double(y)) => bits(x) == bits(y),
        (Data::Complex(x), Data::Complex(y)) => complex_bits(x) == complex_bits(y),
        (Data::List(x), Data::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_bits(p, q))
        }
        (x, y) => x == y,
    };
    let attrs = a.attrs.0.len() == b.attrs.0.len()
        && a.attrs
            .0
            .iter()
            .zip(&b.attrs.0)
            .all(|((n, p), (m, q))| n == m && same_bits(p, q));
    data && attrs
}

fn bits(x: &[f64]) -> Vec<u64> {
    x.iter().map(|d| d.to_bits()).collect()
}

fn complex_bits(x: &[Complex]) -> Vec<(u64, u64)> {
    x.iter().map(|c| (c.re.to_bits(), c.im.to_bits())).collect()
}

/// Expressions whose Rserve bytes must equal our encoding of Rookery's own value.
const SAME_BYTES: &[&str] = &[
    "c(1.5, NA, NaN, Inf, -Inf, -0)",
    "c(1L, NA, -5L)",
    "1:10",
    "c(TRUE, NA, FALSE)",
    r#"c("a", NA, "\u00e9", "\u65e5\u672c", "")"#,
    "as.raw(c(0, 1, 127, 255))",
    "complex(real = c(1, NA), imaginary = c(-1, 2))",
    "NULL",
    "list()",
    "list(a = 1, b = 'x', c = NULL)",
    "list(1L, list(2L, list('deep', NULL)))",
    "c(a = 1L, b = 2L)",
    "data.frame(n = c(1.5, NA), f = factor(c('u', NA)), s = c('a', NA))",
    "data.frame(x = 1:2, row.names = c('r1', 'r2'))",
    "matrix(1:6, 2, dimnames = list(c('r1', 'r2'), NULL))",
    "factor(c('lo', 'hi', NA), levels = c('lo', 'hi'))",
    "as.Date(c('2020-01-01', NA))",
    "as.POSIXct('2020-01-01 12:00:00', tz = 'UTC')",
    "seq_len(1e6) / 7",
    "as.double(seq_len(3e6))",
    "1:5e6",
];

#[test]
fn rserve_values_match_rookery_r_byte_for_byte() {
    let rs = Rserve::start("", false);
    let mut c = connect(&rs);
    for code in SAME_BYTES {
        let wire = c.eval_payload(code).expect(code);
        let ours = value(code);
        let decoded = decode_payload(&wire).unwrap_or_else(|e| panic!("{code}: {e}"));
        assert!(
            same_bits(&decoded, &ours),
            "{code}: Rserve {decoded:?}\nRookery {ours:?}"
        );
        let mut encoded = Vec::new();
        frame::push_param(&mut encoded, dt::SEXP, &sexp::encode(&ours).unwrap());
        assert!(
            encoded == wire,
            "{code}: our encoding differs from Rserve's"
        );
    }
}

#[test]
fn large_results_use_large_headers() {
    let rs = Rserve::start("", false);
    let mut c = connect(&rs);
    let wire = c.eval_payload("as.double(seq_len(3e6))").unwrap();
    assert_eq!(wire[0], dt::SEXP | dt::LARGE);
    assert_eq!(wire[8], sexp::XT_ARRAY_DOUBLE | sexp::XT_LARGE);
    let small = c.eval_payload("seq_len(1e6) / 7").unwrap();
    assert_eq!(
        small[..5],
        [dt::SEXP, 0x04, 0x12, 0x7a, sexp::XT_ARRAY_DOUBLE]
    );
}

#[test]
fn values_rserve_sends_that_only_decode() {
    let rs = Rserve::start("", false);
    let mut c = connect(&rs);
    // Rserve leaves raw padding uninitialised, so only the value is compared.
    for code in ["as.raw(1:5)", r#""\xffA""#] {
        let decoded = c.eval(code).unwrap();
        assert!(same_bits(&decoded, &value(code)), "{code}: {decoded:?}");
    }
    for code in [
        "new.env()",
        "function(x) x + 1",
        "quote(f(x, y = 2))",
        "sum",
        "as.name('a')",
    ] {
        let err = c.eval(code).unwrap_err();
        assert!(
            matches!(err, QapError::Unsupported { .. }),
            "{code}: {err:?}"
        );
        assert!(
            r().eval(code).is_err(),
            "{code}: Rookery's R has no Value either"
        );
    }
}

#[test]
fn rserve_error_statuses() {
    let rs = Rserve::start("", false);
    let mut c = connect(&rs);
    assert_eq!(c.eval_payload("1+").unwrap_err(), status::PARSE_INCOMPLETE);
    assert_eq!(c.eval_payload("1+)").unwrap_err(), status::PARSE_ERROR);
    assert_eq!(c.eval_payload("stop('boom')").unwrap_err(), status::R_ERROR);
    let reply = c.request(0x99, &[]);
    assert_eq!(reply.cmd, frame::resp_err(status::INV_CMD));
    let mut p = Vec::new();
    frame::push_int_param(&mut p, 1);
    assert_eq!(
        c.request(cmd::EVAL, &p).cmd,
        frame::resp_err(status::INV_PAR)
    );
    assert_eq!(
        c.eval("1L").unwrap(),
        Value::scalar_int(1),
        "session survives"
    );
}

/// Values built in Rust, and the R literal each must be `identical()` to in Rserve.
fn rust_values() -> Vec<(Value, &'static str)> {
    let df = Value::list(vec![
        Value::integers(vec![1, 2]),
        Value::strings(["a", "b"]),
    ])
    .with_attr("names", Value::strings(["x", "y"]))
    .with_attr("class", Value::strings(["data.frame"]))
    .with_attr("row.names", Value::integers(vec![NA_INTEGER, -2]));
    vec![
        (
            Value::doubles(vec![1.5, na_real(), f64::NAN]),
            "c(1.5, NA, NaN)",
        ),
        (Value::integers(vec![1, NA_INTEGER]), "c(1L, NA)"),
        (
            Value::logicals([Some(true), None, Some(false)]),
            "c(TRUE, NA, FALSE)",
        ),
        (
            Value::strings_na(vec![Some("é".into()), None, Some(String::new())]),
            r#"c("\u00e9", NA, "")"#,
        ),
        (Value::raw(vec![1, 2, 3, 4, 5]), "as.raw(1:5)"),
        (
            Value::complexes(vec![Complex { re: 1.0, im: -1.0 }]),
            "1-1i",
        ),
        (Value::NULL, "NULL"),
        (
            Value::named_list([("a", Value::scalar_double(1.0)), ("b", Value::list(vec![]))]),
            "list(a = 1, b = list())",
        ),
        (df, r#"data.frame(x = 1:2, y = c("a", "b"))"#),
        (
            Value::factor(
                vec![2, NA_INTEGER],
                vec![Some("u".into()), Some("v".into())],
            ),
            r#"factor(c("v", NA), levels = c("u", "v"))"#,
        ),
        (
            Value::matrix(Data::Integer(vec![1, 2, 3, 4]), 2, 2),
            "matrix(1:4, 2)",
        ),
        (Value::date(vec![18262.0]), r#"as.Date("2020-01-01")"#),
        (
            Value::posixct(vec![0.0], "UTC"),
            r#"as.POSIXct(0, tz = "UTC", origin = "1970-01-01")"#,
        ),
        (
            Value::doubles((1..=3_000_000).map(f64::from).collect::<Vec<_>>()),
            "as.double(1:3e6)",
        ),
    ]
}

#[test]
fn values_we_encode_are_identical_in_rserve() {
    let rs = Rserve::start("", false);
    let mut c = connect(&rs);
    let yes = Value::scalar_bool(true);
    for (v, literal) in rust_values() {
        c.assign(cmd::SET_SEXP, "qx", &v);
        let same = c.eval(&format!("identical(qx, {literal})")).unwrap();
        assert_eq!(
            same, yes,
            "setSEXP: Rserve sees something else than {literal}"
        );
        c.assign(cmd::ASSIGN_SEXP, "qy", &v);
        let same = c.eval(&format!("identical(qy, {literal})")).unwrap();
        assert_eq!(
            same, yes,
            "assignSEXP: Rserve sees something else than {literal}"
        );
        assert!(same_bits(&c.eval("qx").unwrap(), &v), "{literal} read back");
    }
}

#[test]
fn rookery_values_sent_to_rserve_come_back_unchanged() {
    let rs = Rserve::start("", false);
    let mut c = connect(&rs);
    for code in SAME_BYTES {
        let v = value(code);
        c.assign(cmd::SET_SEXP, "qz", &v);
        let same = c.eval(&format!("identical(qz, {code})")).unwrap();
        assert_eq!(same, Value::scalar_bool(true), "{code}");
    }
}

/// `CMD_detachedVoidEval` on a real Rserve: the same steps as Rookery's test
/// (`server::qap`), with the same answers: RESP_OK at attach after the code ran,
/// its state kept, and an R error's status 127 as the attach reply.
#[test]
fn rserve_detached_void_eval() {
    let rs = Rserve::start("", false);
    let (back, word) = crate::rserve::detached_void_eval(connect(&rs), "keepme <- 7L");
    assert_eq!(word, frame::resp::OK);
    let mut back = QapClient::from_stream(back);
    assert_eq!(back.eval("keepme"), Ok(Value::integers(vec![7])));
    let (_back, word) = crate::rserve::detached_void_eval(connect(&rs), "stop('detached boom')");
    assert_eq!(frame::status_of(word), status::R_ERROR);
}
