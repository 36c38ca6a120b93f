//! Tests for the value model's JSON, binary codec and frame helpers.
//!
//! Unit tests pin the exact JSON that jsonlite 1.8 writes and reads (checked against R
//! with `jsonlite::toJSON` / `fromJSON`). Property tests cover every type, NA in every
//! type, NA vs. NaN doubles, empty vectors, non-ASCII text and nested lists: the codec
//! round trip is bit-identical, JSON round trips wherever jsonlite's conventions are
//! lossless, slicing rows and concatenating them back is the identity, and the decoder
//! never panics on hostile bytes.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::codec::{decode, encode, encode_into, encoded_len, CodecError, VERSION};
use crate::frame::{list_to_data_frame, ValueError};
use crate::json::{from_json, to_json, DataFrameLayout, JsonOptions};
use crate::{na_real, Complex, Data, Logical, Value, NA_INTEGER};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Structural equality with doubles compared by bit pattern, so NA, NaN and -0 count.
fn same(a: &Value, b: &Value) -> bool {
    let attrs = a.attrs.0.len() == b.attrs.0.len()
        && a.attrs
            .iter()
            .zip(b.attrs.iter())
            .all(|((n, x), (m, y))| n == m && same(x, y));
    attrs && same_data(&a.data, &b.data)
}

fn same_data(a: &Data, b: &Data) -> bool {
    let bits = |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    match (a, b) {
        (Data::Double(x), Data::Double(y)) => bits(x) == bits(y),
        (Data::Complex(x), Data::Complex(y)) => {
            let parts = |v: &[Complex]| v.iter().flat_map(|c| [c.re, c.im]).collect::<Vec<_>>();
            bits(&parts(x)) == bits(&parts(y))
        }
        (Data::List(x), Data::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (a, b) => a == b,
    }
}

fn assert_same(a: &Value, b: &Value) {
    assert!(same(a, b), "values differ:\n left: {a:?}\nright: {b:?}");
}

fn json(v: &Value) -> String {
    to_json(v, &JsonOptions::default())
}

fn unboxed(v: &Value) -> String {
    to_json(
        v,
        &JsonOptions {
            auto_unbox: true,
            ..JsonOptions::default()
        },
    )
}

fn columns(v: &Value) -> String {
    to_json(
        v,
        &JsonOptions {
            dataframe: DataFrameLayout::Columns,
            ..JsonOptions::default()
        },
    )
}

fn na_strings(v: &Value) -> String {
    to_json(
        v,
        &JsonOptions {
            na_as_null: false,
            ..JsonOptions::default()
        },
    )
}

fn digits(v: &Value, d: u32) -> String {
    to_json(
        v,
        &JsonOptions {
            digits: Some(d),
            ..JsonOptions::default()
        },
    )
}

fn frame(cols: Vec<(&str, Value)>) -> Value {
    Value::data_frame(cols.into_iter().map(|(n, v)| (n.to_owned(), v)).collect())
        .expect("equal lengths")
}

fn parse(text: &str) -> Value {
    from_json(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn round_trip(v: &Value) -> Value {
    let mut bytes = Vec::new();
    encode(v, &mut bytes);
    assert_eq!(bytes.len(), encoded_len(v));
    decode(&bytes).expect("valid encoding")
}

// ---------------------------------------------------------------------------------------
// JSON writing: exact jsonlite output
// ---------------------------------------------------------------------------------------

#[test]
fn atomic_vectors_are_arrays_with_null_for_na() {
    assert_eq!(json(&Value::doubles([1.5, na_real()])), "[1.5,null]");
    assert_eq!(
        json(&Value::doubles([1.5, f64::NAN, f64::INFINITY])),
        "[1.5,null,null]"
    );
    assert_eq!(json(&Value::integers([1, NA_INTEGER])), "[1,null]");
    assert_eq!(
        json(&Value::logicals([Some(true), None, Some(false)])),
        "[true,null,false]"
    );
    assert_eq!(
        json(&Value::strings_na([Some("a".into()), None])),
        r#"["a",null]"#
    );
    assert_eq!(json(&Value::doubles(Vec::new())), "[]");
    assert_eq!(
        json(&Value::doubles([1.0, 2.0]).with_attr("names", Value::strings(["a", "b"]))),
        "[1,2]"
    );
}

#[test]
fn na_as_strings_when_asked() {
    let x = Value::doubles([1.5, na_real(), f64::NAN, f64::INFINITY, f64::NEG_INFINITY]);
    assert_eq!(na_strings(&x), r#"[1.5,"NA","NaN","Inf","-Inf"]"#);
    assert_eq!(
        na_strings(&Value::logicals([Some(true), None])),
        r#"[true,"NA"]"#
    );
    assert_eq!(
        na_strings(&Value::strings_na([Some("a".into()), None])),
        r#"["a","NA"]"#
    );
}

#[test]
fn auto_unbox_writes_scalars() {
    assert_eq!(unboxed(&Value::scalar_int(1)), "1");
    assert_eq!(json(&Value::scalar_int(1)), "[1]");
    assert_eq!(unboxed(&Value::logicals([None::<bool>])), "null");
    assert_eq!(unboxed(&Value::factor([1], [Some("a".into())])), r#""a""#);
    let l = Value::named_list([
        ("a", Value::scalar_double(1.0)),
        ("b", Value::scalar_string("x")),
    ]);
    assert_eq!(unboxed(&l), r#"{"a":1,"b":"x"}"#);
    assert_eq!(json(&l), r#"{"a":[1],"b":["x"]}"#);
    assert_eq!(unboxed(&Value::list([Value::scalar_int(1)])), "[1]");
}

#[test]
fn doubles_use_shortest_round_trip_form() {
    assert_eq!(
        json(&Value::doubles([1e10, 100.0, 2147483648.0])),
        "[10000000000,100,2147483648]"
    );
    assert_eq!(
        json(&Value::doubles([0.1, 1.0 / 3.0])),
        "[0.1,0.3333333333333333]"
    );
    assert_eq!(
        json(&Value::doubles([1e300, 1e-10, 123.456])),
        "[1e+300,1e-10,123.456]"
    );
}

#[test]
fn digits_round_like_jsonlite() {
    assert_eq!(
        digits(&Value::scalar_double(std::f64::consts::PI), 4),
        "[3.1416]"
    );
    assert_eq!(
        digits(&Value::doubles([0.125, -1234.5678]), 2),
        "[0.12,-1234.57]"
    );
    assert_eq!(digits(&Value::doubles([2.5, 3.5]), 0), "[2,4]");
    assert_eq!(
        digits(&Value::doubles([0.00002, 123_456_789.123_456_79]), 4),
        "[0,123456789.1235]"
    );
    assert_eq!(
        digits(&Value::scalar_double(1.123456789e-7), 4),
        "[1.1235e-7]"
    );
}

#[test]
fn lists_are_arrays_or_objects() {
    assert_eq!(json(&Value::NULL), "{}");
    assert_eq!(json(&Value::list(Vec::new())), "[]");
    let l = Value::list([Value::scalar_double(1.0), Value::scalar_string("x")]);
    assert_eq!(json(&l), r#"[[1],["x"]]"#);
    let partly = l.clone().with_attr("names", Value::strings(["a", ""]));
    assert_eq!(json(&partly), r#"{"a":[1],"2":["x"]}"#);
    let na_name = l.with_attr("names", Value::strings_na([Some("a".into()), None]));
    assert_eq!(json(&na_name), r#"{"a":[1],"2":["x"]}"#);
    assert_eq!(
        json(&Value::named_list([("a", Value::NULL)])),
        r#"{"a":{}}"#
    );
    assert_eq!(
        json(&Value::named_list([("a", Value::list(Vec::new()))])),
        r#"{"a":[]}"#
    );
}

#[test]
fn matrices_are_row_major() {
    assert_eq!(
        json(&Value::matrix(Data::Integer(vec![1, 2, 3, 4]), 2, 2)),
        "[[1,3],[2,4]]"
    );
    let s = Data::Character(vec![
        Some("a".into()),
        Some("b".into()),
        None,
        Some("d".into()),
    ]);
    assert_eq!(json(&Value::matrix(s, 2, 2)), r#"[["a",null],["b","d"]]"#);
    let cube =
        Value::integers((1..=8).collect::<Vec<_>>()).with_attr("dim", Value::integers([2, 2, 2]));
    assert_eq!(json(&cube), "[[[1,5],[3,7]],[[2,6],[4,8]]]");
    assert_eq!(json(&Value::matrix(Data::Double(vec![]), 0, 3)), "[]");
    assert_eq!(
        json(&Value::matrix(Data::Double(vec![]), 3, 0)),
        "[[],[],[]]"
    );
    assert_eq!(
        unboxed(&Value::matrix(Data::Integer(vec![1]), 1, 1)),
        "[[1]]"
    );
    let f = Value::factor([1, 2, 1, 2], [Some("a".into()), Some("b".into())]);
    assert_eq!(
        json(&f.with_attr("dim", Value::integers([2, 2]))),
        r#"[["a","a"],["b","b"]]"#
    );
}

#[test]
fn factors_dates_and_times_are_strings() {
    let f = Value::factor([1, 2, NA_INTEGER], [Some("a".into()), Some("b".into())]);
    assert_eq!(json(&f), r#"["a","b",null]"#);
    assert_eq!(
        json(&Value::date([18262.0, na_real()])),
        r#"["2020-01-01",null]"#
    );
    assert_eq!(
        json(&Value::date([1.9, -1.5])),
        r#"["1970-01-02","1969-12-30"]"#
    );
    assert_eq!(
        json(&Value::date([-719162.0, 2932896.0])),
        r#"["0001-01-01","9999-12-31"]"#
    );
    let t = Value::posixct([1577882096.0, -0.5, na_real()], "UTC");
    assert_eq!(
        json(&t),
        r#"["2020-01-01 12:34:56","1969-12-31 23:59:59",null]"#
    );
    assert_eq!(
        unboxed(&Value::named_list([("a", Value::date([18262.0]))])),
        r#"{"a":"2020-01-01"}"#
    );
}

#[test]
fn times_use_their_time_zone() {
    if jiff::tz::TimeZone::get("America/New_York").is_err() {
        return; // No time-zone database on this machine.
    }
    let t = Value::posixct([1577882096.0, 1593606896.0], "America/New_York");
    assert_eq!(json(&t), r#"["2020-01-01 07:34:56","2020-07-01 08:34:56"]"#);
}

#[test]
fn complex_and_raw_are_strings() {
    let c = |re, im| Complex { re, im };
    assert_eq!(json(&Value::complexes([c(1.0, 2.0)])), r#"["1+2i"]"#);
    let v = Value::complexes([c(1.0, -2.0), c(na_real(), 0.0), c(1.5, 0.0), c(-1.0, -0.0)]);
    assert_eq!(json(&v), r#"["1-2i",null,"1.5+0i","-1+0i"]"#);
    assert_eq!(
        json(&Value::complexes([c(f64::INFINITY, 1.0)])),
        r#"["Inf+1i"]"#
    );
    assert_eq!(json(&Value::raw([1, 2, 3, 255])), r#"["AQID/w=="]"#);
    assert_eq!(json(&Value::raw([])), r#"[""]"#);
    assert_eq!(unboxed(&Value::raw([1])), r#""AQ==""#);
    assert_eq!(unboxed(&Value::raw([1, 2])), r#""AQI=""#);
}

#[test]
fn strings_are_escaped_and_utf8() {
    assert_eq!(json(&Value::strings(["é\"\n😀"])), r#"["é\"\n😀"]"#);
}

#[test]
fn data_frames_are_records_without_na_fields() {
    let df = frame(vec![
        ("x", Value::integers([1, 2])),
        ("y", Value::strings_na([Some("a".into()), None])),
    ]);
    assert_eq!(json(&df), r#"[{"x":1,"y":"a"},{"x":2}]"#);
    assert_eq!(unboxed(&df), r#"[{"x":1,"y":"a"},{"x":2}]"#);
    assert_eq!(columns(&df), r#"{"x":[1,2],"y":["a",null]}"#);
    let nan = frame(vec![("x", Value::doubles([1.5, na_real(), f64::NAN]))]);
    assert_eq!(json(&nan), r#"[{"x":1.5},{},{}]"#);
    let f = frame(vec![(
        "f",
        Value::factor([1, NA_INTEGER], [Some("a".into())]),
    )]);
    assert_eq!(json(&f), r#"[{"f":"a"},{}]"#);
    assert_eq!(
        json(&frame(vec![("d", Value::date([18262.0]))])),
        r#"[{"d":"2020-01-01"}]"#
    );
}

#[test]
fn data_frame_shapes() {
    assert_eq!(json(&frame(vec![])), "[]");
    assert_eq!(json(&frame(vec![("x", Value::integers(Vec::new()))])), "[]");
    let one_row = frame(vec![]).with_attr("row.names", Value::integers([NA_INTEGER, -1]));
    assert_eq!(json(&one_row), "[{}]");
    let named = frame(vec![("x", Value::integers([1, 2]))])
        .with_attr("row.names", Value::strings(["r1", "r2"]));
    assert_eq!(json(&named), r#"[{"x":1,"_row":"r1"},{"x":2,"_row":"r2"}]"#);
    assert_eq!(columns(&named), r#"{"x":[1,2],"_row":["r1","r2"]}"#);
    let col1 = frame(vec![("x", Value::scalar_double(1.0))]);
    assert_eq!(
        to_json(
            &col1,
            &JsonOptions {
                auto_unbox: true,
                dataframe: DataFrameLayout::Columns,
                ..Default::default()
            }
        ),
        r#"{"x":[1]}"#
    );
}

#[test]
fn data_frames_with_nested_columns() {
    let inner = frame(vec![("z", Value::integers([3, 4]))]);
    let df = frame(vec![("x", Value::integers([1, 2])), ("d", inner)]);
    assert_eq!(json(&df), r#"[{"x":1,"d":{"z":3}},{"x":2,"d":{"z":4}}]"#);
    assert_eq!(columns(&df), r#"{"x":[1,2],"d":{"z":[3,4]}}"#);
    let list_col = Value::list([Value::NULL, Value::logicals([None::<bool>])]);
    let df = frame(vec![("x", Value::integers([1, 2])), ("l", list_col)]);
    assert_eq!(json(&df), r#"[{"x":1,"l":{}},{"x":2,"l":[null]}]"#);
    let m = Value::matrix(Data::Integer(vec![1, 2, 3, 4]), 2, 2);
    let df = frame(vec![("x", Value::integers([1, 2])), ("y", m)]);
    assert_eq!(json(&df), r#"[{"x":1,"y":[1,3]},{"x":2,"y":[2,4]}]"#);
}

#[test]
fn malformed_frames_do_not_panic() {
    let short = Value::named_list([("x", Value::integers([1])), ("y", Value::NULL)])
        .with_attr("class", Value::strings(["data.frame"]))
        .with_attr("row.names", Value::integers([NA_INTEGER, -3]));
    assert_eq!(json(&short), r#"[{"x":1},{},{}]"#);
    let bad_dim = Value::integers([1, 2, 3]).with_attr("dim", Value::integers([2, 2]));
    assert_eq!(json(&bad_dim), "[1,2,3]");
}

#[test]
fn writer_streams_the_same_text() {
    let df = frame(vec![("x", Value::doubles([0.5; 3]))]);
    let mut out = Vec::new();
    crate::json::to_json_writer(&mut out, &df, &JsonOptions::default()).expect("write to Vec");
    assert_eq!(String::from_utf8(out).expect("utf-8"), json(&df));
}

// ---------------------------------------------------------------------------------------
// JSON reading: jsonlite::fromJSON's simplification
// ---------------------------------------------------------------------------------------

#[test]
fn scalar_arrays_become_vectors() {
    assert_same(&parse("[1,2,3]"), &Value::integers([1, 2, 3]));
    assert_same(&parse("[1.0,2.0]"), &Value::doubles([1.0, 2.0]));
    assert_same(&parse("[1,null]"), &Value::integers([1, NA_INTEGER]));
    assert_same(&parse("[1.5,null]"), &Value::doubles([1.5, na_real()]));
    assert_same(&parse("[true,null]"), &Value::logicals([Some(true), None]));
    assert_same(
        &parse("[null,null]"),
        &Value::logicals([None::<bool>, None]),
    );
    assert_same(
        &parse(r#"["a",null]"#),
        &Value::strings_na([Some("a".into()), None]),
    );
    assert_same(
        &parse("[3000000000,-2147483648]"),
        &Value::doubles([3e9, -2147483648.0]),
    );
    assert_same(&parse("[2147483647]"), &Value::integers([i32::MAX]));
    assert_same(&parse("[1e2]"), &Value::doubles([100.0]));
    assert_same(&parse("1"), &Value::integers([1]));
    assert_same(&parse(r#""a""#), &Value::strings(["a"]));
    assert_same(&parse("null"), &Value::NULL);
}

#[test]
fn mixed_scalars_coerce_like_jsonlite() {
    assert_same(&parse(r#"[1,"a"]"#), &Value::strings(["1", "a"]));
    assert_same(&parse(r#"[true,"a"]"#), &Value::strings(["TRUE", "a"]));
    assert_same(&parse("[true,1]"), &Value::integers([1, 1]));
    assert_same(
        &parse("[true,1.5,null]"),
        &Value::doubles([1.0, 1.5, na_real()]),
    );
    assert_same(
        &parse(r#"["a",1.5,null]"#),
        &Value::strings_na([Some("a".into()), Some("1.5".into()), None]),
    );
    assert_same(&parse(r#"[1,"NA"]"#), &Value::integers([1, NA_INTEGER]));
    let specials = parse(r#"[1,"NaN","Inf","-Inf"]"#);
    let bits: Vec<u64> = specials
        .as_doubles()
        .expect("double")
        .iter()
        .map(|x| x.to_bits())
        .collect();
    assert_eq!(
        bits,
        [1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY].map(f64::to_bits)
    );
    assert_same(
        &parse(r#"[true,"NA"]"#),
        &Value::logicals([Some(true), None]),
    );
    assert_same(&parse(r#"["NA"]"#), &Value::logicals([None::<bool>]));
    assert_same(&parse(r#"["NA","a"]"#), &Value::strings(["NA", "a"]));
}

#[test]
fn objects_and_lists() {
    assert_same(&parse("[]"), &Value::list(Vec::new()));
    assert_same(
        &parse("{}"),
        &Value::named_list(Vec::<(String, Value)>::new()),
    );
    let l = Value::named_list([("a", Value::scalar_int(1)), ("b", Value::integers([1, 2]))]);
    assert_same(&parse(r#"{"a":1,"b":[1,2]}"#), &l);
    assert_same(
        &parse(r#"{"a":null}"#),
        &Value::named_list([("a", Value::NULL)]),
    );
    let dup = Value::named_list([("a", Value::scalar_int(1)), ("a", Value::scalar_int(2))]);
    assert_same(&parse(r#"{"a":1,"a":2}"#), &dup);
    assert_same(
        &parse("[1,[2]]"),
        &Value::list([Value::scalar_int(1), Value::scalar_int(2)]),
    );
    assert_same(
        &parse("[[1,2],null]"),
        &Value::list([Value::integers([1, 2]), Value::NULL]),
    );
    assert_same(
        &parse("[[1,2],[3]]"),
        &Value::list([Value::integers([1, 2]), Value::scalar_int(3)]),
    );
    let empties = Value::list([Value::list(Vec::new()), Value::list(Vec::new())]);
    assert_same(&parse("[[],[]]"), &empties);
}

#[test]
fn arrays_of_arrays_become_matrices() {
    assert_same(
        &parse("[[1,2],[3,4]]"),
        &Value::matrix(Data::Integer(vec![1, 3, 2, 4]), 2, 2),
    );
    assert_same(
        &parse("[[1,2],[3,null]]"),
        &Value::matrix(Data::Integer(vec![1, 3, 2, NA_INTEGER]), 2, 2),
    );
    let s = |x: &str| Some(x.to_owned());
    let chars = Data::Character(vec![s("1"), s("3"), s("a"), s("b")]);
    assert_same(&parse(r#"[[1,"a"],[3,"b"]]"#), &Value::matrix(chars, 2, 2));
    assert_same(
        &parse("[[1,2],[true,false]]"),
        &Value::matrix(Data::Integer(vec![1, 1, 2, 0]), 2, 2),
    );
    assert_same(
        &parse(r#"[["a"],["b"]]"#),
        &Value::matrix(Data::Character(vec![s("a"), s("b")]), 2, 1),
    );
    let cube =
        Value::integers([1, 5, 3, 7, 2, 6, 4, 8]).with_attr("dim", Value::integers([2, 2, 2]));
    assert_same(&parse("[[[1,2],[3,4]],[[5,6],[7,8]]]"), &cube);
}

#[test]
fn arrays_of_objects_become_data_frames() {
    let df = frame(vec![
        ("a", Value::integers([1, 2])),
        ("b", Value::strings_na([Some("x".into()), None])),
        ("c", Value::logicals([None, Some(true)])),
    ]);
    assert_same(&parse(r#"[{"a":1,"b":"x"},{"a":2,"c":true}]"#), &df);
    let with_null = frame(vec![("a", Value::integers([1, NA_INTEGER]))]);
    assert_same(&parse(r#"[{"a":1},null]"#), &with_null);
    assert_same(&parse(r#"[{"a":1},{}]"#), &with_null);
    let list_col = frame(vec![(
        "a",
        Value::list([Value::integers([1, 2]), Value::NULL]),
    )]);
    assert_same(&parse(r#"[{"a":[1,2]},{}]"#), &list_col);
    let nested = frame(vec![(
        "a",
        frame(vec![("b", Value::integers([1, NA_INTEGER]))]),
    )]);
    assert_same(&parse(r#"[{"a":{"b":1}},{}]"#), &nested);
    let no_cols = frame(vec![]).with_attr("row.names", Value::integers([NA_INTEGER, -2]));
    assert_same(&parse("[{},{}]"), &no_cols);
    let mixed = Value::list([
        Value::named_list([("a", Value::scalar_int(1))]),
        Value::list(Vec::new()),
    ]);
    assert_same(&parse(r#"[{"a":1},[]]"#), &mixed);
    let coerced = frame(vec![("x", Value::strings(["1", "a"]))]);
    assert_same(&parse(r#"[{"x":1},{"x":"a"}]"#), &coerced);
}

#[test]
fn parse_errors_carry_position() {
    let err = from_json("[1,\n  2,,]").expect_err("invalid");
    assert_eq!((err.line, err.column), (2, 5));
    assert!(err.message.contains("line 2"), "{}", err.message);
}

#[test]
fn columns_layout_reads_back_as_a_frame() {
    let df = frame(vec![
        ("x", Value::integers([1, 2])),
        ("y", Value::strings_na([Some("a".into()), None])),
    ]);
    let back = list_to_data_frame(parse(&columns(&df))).expect("equal columns");
    assert_same(&back, &df);
    let ragged = parse(r#"{"x":[1,2],"y":[1]}"#);
    assert!(matches!(
        list_to_data_frame(ragged),
        Err(ValueError::LengthMismatch { .. })
    ));
    assert_eq!(
        list_to_data_frame(Value::list([Value::scalar_int(1)])),
        Err(ValueError::NotANamedList)
    );
}

// ---------------------------------------------------------------------------------------
// Frames: building, slicing, concatenating
// ---------------------------------------------------------------------------------------

#[test]
fn data_frame_checks_lengths_and_reads_row_counts() {
    let err = Value::data_frame(vec![
        ("a".into(), Value::integers([1])),
        ("b".into(), Value::integers([1, 2])),
    ]);
    assert_eq!(
        err,
        Err(ValueError::LengthMismatch {
            column: "b".into(),
            expected: 1,
            found: 2
        })
    );
    let df = frame(vec![("a", Value::integers([1, 2, 3]))]);
    assert_eq!(
        df.attr("row.names"),
        Some(&Value::integers([NA_INTEGER, -3]))
    );
    assert_eq!(df.nrow(), Some(3));
    assert_eq!(df.column("a"), Some(&Value::integers([1, 2, 3])));
    assert_eq!(df.column("b"), None);
    assert_eq!(Value::integers([1]).nrow(), None);
    let named = df.with_attr("row.names", Value::strings(["x", "y", "z"]));
    assert_eq!(named.nrow(), Some(3));
}

#[test]
fn slice_rows_keeps_column_attributes() {
    let df = frame(vec![
        (
            "f",
            Value::factor([1, 2, 1], [Some("a".into()), Some("b".into())]),
        ),
        ("t", Value::posixct([1.0, 2.0, 3.0], "UTC")),
    ])
    .with_attr("row.names", Value::strings(["r1", "r2", "r3"]));
    let part = df.slice_rows(1..3);
    assert_eq!(part.nrow(), Some(2));
    assert_eq!(part.attr("row.names"), Some(&Value::strings(["r2", "r3"])));
    assert_eq!(
        part.column("f"),
        Some(&Value::factor([2, 1], [Some("a".into()), Some("b".into())]))
    );
    assert_eq!(part.column("t"), Some(&Value::posixct([2.0, 3.0], "UTC")));
    assert_eq!(df.slice_rows(2..10).nrow(), Some(1));
    assert_eq!(df.slice_rows(5..10).nrow(), Some(0));
}

#[test]
fn vectors_slice_and_concat_with_names() {
    let v = Value::doubles([1.0, 2.0, 3.0]).with_attr("names", Value::strings(["a", "b", "c"]));
    let head = v.slice(0..1);
    assert_eq!(
        head,
        Value::doubles([1.0]).with_attr("names", Value::strings(["a"]))
    );
    let joined = Value::concat(&[head, Value::doubles([9.0])]).expect("same type");
    assert_eq!(
        joined,
        Value::doubles([1.0, 9.0]).with_attr("names", Value::strings(["a", ""]))
    );
}

#[test]
fn concat_coerces_and_merges_levels() {
    let joined = Value::concat(&[
        Value::logicals([None::<bool>]),
        Value::integers([2]),
        Value::doubles([0.5]),
    ]);
    assert_same(
        &joined.expect("coercible"),
        &Value::doubles([na_real(), 2.0, 0.5]),
    );
    let s = Value::concat(&[Value::integers([1]), Value::strings(["x"])]).expect("coercible");
    assert_eq!(s, Value::strings(["1", "x"]));
    let a = Value::factor([1, 2], [Some("a".into()), Some("b".into())]);
    let b = Value::factor([1, 2], [Some("c".into()), Some("a".into())]);
    let levels = [Some("a".into()), Some("b".into()), Some("c".into())];
    assert_eq!(
        Value::concat(&[a, b]),
        Ok(Value::factor([1, 2, 3, 1], levels))
    );
    let bad = Value::concat(&[Value::raw([1]), Value::integers([1])]);
    assert!(matches!(bad, Err(ValueError::Mismatch { part: 1, .. })));
    let classes = Value::concat(&[Value::date([1.0]), Value::doubles([1.0])]);
    assert!(matches!(classes, Err(ValueError::Mismatch { part: 1, .. })));
    assert_eq!(Value::concat(&[]), Ok(Value::NULL));
    assert_eq!(
        Value::concat(&[Value::NULL, Value::integers([1])]),
        Ok(Value::integers([1]))
    );
}

#[test]
fn concat_rows_checks_layout() {
    let a = frame(vec![("x", Value::integers([1]))]);
    let b = frame(vec![("y", Value::integers([1]))]);
    assert!(matches!(
        Value::concat_rows(&[a.clone(), b]),
        Err(ValueError::Mismatch { part: 1, .. })
    ));
    let c = frame(vec![("x", Value::raw([1]))]);
    assert!(matches!(
        Value::concat_rows(&[a.clone(), c]),
        Err(ValueError::InColumn { .. })
    ));
    let joined = Value::concat_rows(&[a.clone(), a]).expect("same layout");
    assert_eq!(joined, frame(vec![("x", Value::integers([1, 1]))]));
}

#[test]
fn matrices_slice_and_rbind_by_rows() {
    let dimnames = Value::list([Value::strings(["a", "b", "c"]), Value::strings(["x", "y"])]);
    let m =
        Value::matrix(Data::Integer(vec![1, 2, 3, 4, 5, 6]), 3, 2).with_attr("dimnames", dimnames);
    let top = m.slice_rows(0..1);
    let expected_dimnames = Value::list([Value::strings(["a"]), Value::strings(["x", "y"])]);
    assert_eq!(
        top,
        Value::matrix(Data::Integer(vec![1, 4]), 1, 2).with_attr("dimnames", expected_dimnames)
    );
    let rest = m.slice_rows(1..3);
    assert_eq!(Value::concat_rows(&[top, rest]), Ok(m));
}

// ---------------------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------------------

#[test]
fn codec_layout_is_aligned_and_exact() {
    let v = Value::doubles([1.0, 2.0]).with_attr("names", Value::strings(["a", "b"]));
    let mut bytes = Vec::new();
    encode(&v, &mut bytes);
    assert_eq!(bytes[0], VERSION);
    assert_eq!(&bytes[8..12], &[3, 0, 0, 0]);
    assert_eq!(bytes[24..32], 1.0f64.to_le_bytes());
    assert_eq!(bytes.len() % 8, 0);
    let mut buf = vec![0xAA; bytes.len() + 5];
    assert_eq!(encode_into(&v, &mut buf), bytes.len());
    assert_eq!(&buf[..bytes.len()], &bytes[..]);
}

#[test]
fn codec_decodes_from_unaligned_input() {
    let v = Value::complexes([Complex { re: 1.0, im: -1.0 }]);
    let mut bytes = vec![0u8];
    encode(&v, &mut bytes);
    assert_same(&decode(&bytes[1..]).expect("valid"), &v);
}

#[test]
fn codec_rejects_corrupt_input() {
    let mut bytes = Vec::new();
    encode(&Value::strings(["ab"]), &mut bytes);
    assert!(matches!(decode(&[]), Err(CodecError::Truncated { .. })));
    assert_eq!(decode(&[0; 8]), Err(CodecError::BadVersion { found: 0 }));
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(&[0; 8]);
    assert!(matches!(
        decode(&trailing),
        Err(CodecError::TrailingBytes { extra: 8, .. })
    ));
    let mut utf8 = bytes.clone();
    utf8[28] = 0xFF;
    assert!(matches!(
        decode(&utf8),
        Err(CodecError::InvalidUtf8 { at: 28 })
    ));
    let mut huge = bytes.clone();
    huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(decode(&huge), Err(CodecError::BadLength { .. })));
    let mut tag = bytes;
    tag[8] = 42;
    assert!(matches!(
        decode(&tag),
        Err(CodecError::BadTag { tag: 42, .. })
    ));
}

#[test]
fn codec_caps_nesting() {
    let nest = |depth: usize| (0..depth).fold(Value::NULL, |v, _| Value::list([v]));
    assert_same(
        &round_trip(&nest(crate::codec::MAX_DEPTH)),
        &nest(crate::codec::MAX_DEPTH),
    );
    let mut bytes = Vec::new();
    encode(&nest(crate::codec::MAX_DEPTH + 1), &mut bytes);
    assert!(matches!(decode(&bytes), Err(CodecError::TooDeep { .. })));
}

#[test]
fn codec_moves_ten_million_doubles() {
    let v = Value::doubles(
        (0..10_000_000)
            .map(|i| f64::from(i) * 0.5)
            .collect::<Vec<_>>(),
    );
    let mut bytes = Vec::new();
    encode(&v, &mut bytes);
    assert_eq!(bytes.len(), 8 + 16 + 80_000_000);
    assert_same(&decode(&bytes).expect("valid"), &v);
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

fn any_double() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1e6..1e6f64,
        2 => any::<f64>(),
        1 => Just(na_real()),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(-0.0),
    ]
}

fn any_int() -> impl Strategy<Value = i32> {
    prop_oneof![4 => any::<i32>(), 1 => Just(NA_INTEGER)]
}

fn any_logical() -> impl Strategy<Value = Logical> {
    prop_oneof![Just(Logical::TRUE), Just(Logical::FALSE), Just(Logical::NA)]
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z]{0,6}", 1 => "\\PC{0,6}", 1 => Just("é😀\"\\\n".to_owned())]
}

fn any_rstring() -> impl Strategy<Value = Option<String>> {
    prop_oneof![4 => any_text().prop_map(Some), 1 => Just(None)]
}

fn any_complex() -> impl Strategy<Value = Complex> {
    (any_double(), any_double()).prop_map(|(re, im)| Complex { re, im })
}

/// An unclassed atomic vector of length `len`.
fn atomic(len: usize) -> BoxedStrategy<Value> {
    prop_oneof![
        vec(any_logical(), len).prop_map(|v| Value::from(Data::Logical(v))),
        vec(any_int(), len).prop_map(Value::integers),
        vec(any_double(), len).prop_map(Value::doubles),
        vec(any_complex(), len).prop_map(Value::complexes),
        vec(any_rstring(), len).prop_map(Value::strings_na),
        vec(any::<u8>(), len).prop_map(Value::raw),
    ]
    .boxed()
}

/// A data-frame column of length `len`, of any type R puts in frames.
fn column(len: usize) -> BoxedStrategy<Value> {
    let levels = vec(any_rstring(), 1..4);
    let factor = levels.prop_flat_map(move |lv| {
        let n = lv.len() as i32;
        let code = prop_oneof![4 => 1..=n, 1 => Just(NA_INTEGER)];
        vec(code, len).prop_map(move |codes| Value::factor(codes, lv.clone()))
    });
    let tz = prop_oneof![Just("UTC"), Just(""), Just("America/New_York")];
    prop_oneof![
        4 => atomic(len),
        1 => factor,
        1 => vec(any_double(), len).prop_map(Value::date),
        1 => (vec(any_double(), len), tz).prop_map(|(s, tz)| Value::posixct(s, tz)),
        1 => vec(atomic(2), len).prop_map(Value::list),
        1 => vec(any_int(), len * 2).prop_map(move |v| Value::matrix(Data::Integer(v), len, 2)),
    ]
    .boxed()
}

fn column_names(n: usize) -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(vec!["a", "b", "größe", "x1", "_y", "col 6"], n)
        .prop_map(|v| v.into_iter().map(str::to_owned).collect())
}

/// Any data frame, with compact, character or integer row names, maybe nested.
fn any_frame() -> impl Strategy<Value = Value> {
    (0usize..6, 0usize..4).prop_flat_map(|(nrow, ncol)| {
        let nested = vec(column(nrow), 1).prop_map(|c| frame(vec![("inner", c[0].clone())]));
        let cols = vec(prop_oneof![5 => column(nrow), 1 => nested], ncol);
        let row_names = prop_oneof![
            Just(None),
            Just(Some(Value::strings((0..nrow).map(|i| format!("r{i}"))))),
            Just(Some(Value::integers(
                (0..nrow).map(|i| i as i32 * 2 + 5).collect::<Vec<_>>()
            ))),
        ];
        (column_names(ncol), cols, row_names).prop_map(|(names, cols, rn)| {
            let df =
                Value::data_frame(names.into_iter().zip(cols).collect()).expect("equal lengths");
            match rn {
                Some(rn) => df.with_attr("row.names", rn),
                None => df,
            }
        })
    })
}

/// Any value at all: every type, classed vectors, frames, nested named lists, attributes.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::NULL),
        (0usize..5).prop_flat_map(atomic),
        (0usize..5).prop_flat_map(column),
        any_frame(),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::list),
            vec((any_text(), inner.clone()), 0..6).prop_map(Value::named_list),
            (inner, (0usize..4).prop_flat_map(atomic)).prop_map(|(v, a)| v.with_attr("extra", a)),
        ]
    })
}

fn json_safe_text() -> impl Strategy<Value = String> {
    any_text().prop_filter("jsonlite reads these as NA/NaN/Inf", |s| {
        !matches!(s.as_str(), "NA" | "NaN" | "Inf" | "-Inf")
    })
}

fn fractional() -> impl Strategy<Value = f64> {
    (-1e9..1e9f64).prop_filter("must not look like an integer", |x| x.fract() != 0.0)
}

/// A vector that JSON carries without loss: its first element fixes the type jsonlite
/// infers (so it is never NA, and doubles start with a fraction).
fn json_vector(len: usize) -> BoxedStrategy<Value> {
    let rest = len.saturating_sub(1);
    fn join<T: Clone>(first: T, rest: Vec<T>) -> Vec<T> {
        [vec![first], rest].concat()
    }
    let int = any_int().prop_filter("not NA", |&i| i != NA_INTEGER);
    let double =
        prop_oneof![4 => fractional(), 1 => Just(na_real()), 1 => (-5i32..5).prop_map(f64::from)];
    let text = prop_oneof![4 => json_safe_text().prop_map(Some), 1 => Just(None)];
    prop_oneof![
        (int, vec(any_int(), rest)).prop_map(|(a, r)| Value::integers(join(a, r))),
        (fractional(), vec(double, rest)).prop_map(|(a, r)| Value::doubles(join(a, r))),
        (any::<bool>(), vec(any_logical(), rest))
            .prop_map(|(a, r)| Value::from(Data::Logical(join(Logical::from(a), r)))),
        (json_safe_text(), vec(text, rest)).prop_map(|(a, r)| Value::strings_na(join(Some(a), r))),
    ]
    .boxed()
}

/// A data frame JSON carries without loss in either layout.
fn json_frame() -> impl Strategy<Value = Value> {
    (1usize..6, 1usize..5).prop_flat_map(|(nrow, ncol)| {
        (column_names(ncol), vec(json_vector(nrow), ncol)).prop_map(|(names, cols)| {
            Value::data_frame(names.into_iter().zip(cols).collect()).expect("equal")
        })
    })
}

/// Named lists of lossless vectors and further named lists.
fn json_named_list() -> impl Strategy<Value = Value> {
    let leaf = (1usize..5).prop_flat_map(json_vector);
    let tree = leaf.prop_recursive(3, 24, 5, |inner| named_list_of(inner.boxed()));
    named_list_of(tree.boxed())
}

fn named_list_of(items: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
    vec(("[a-z]{1,4}|é[0-9]", items), 0..5).prop_map(Value::named_list)
}

/// Cut points that split `0..n` into consecutive ranges.
fn cuts(n: usize) -> impl Strategy<Value = Vec<std::ops::Range<usize>>> {
    vec(0..=n, 0..4).prop_map(move |mut points| {
        points.extend([0, n]);
        points.sort_unstable();
        points.windows(2).map(|w| w[0]..w[1]).collect()
    })
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn codec_round_trip_is_identical(v in any_value()) {
        let mut bytes = Vec::new();
        encode(&v, &mut bytes);
        prop_assert_eq!(bytes.len(), encoded_len(&v));
        let back = decode(&bytes).expect("valid encoding");
        prop_assert!(same(&back, &v), "{:?} != {:?}", back, v);
    }

    #[test]
    fn decoder_survives_arbitrary_bytes(mut bytes in vec(any::<u8>(), 0..300), header in any::<bool>()) {
        if header && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(&[VERSION, 0, 0, 0, 0, 0, 0, 0]);
        }
        let _ = decode(&bytes);
    }

    #[test]
    fn decoder_rejects_truncations_and_survives_bit_flips(v in any_value(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
        let mut bytes = Vec::new();
        encode(&v, &mut bytes);
        prop_assert!(decode(&bytes[..cut.index(bytes.len())]).is_err());
        let bit = flip.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let _ = decode(&bytes);
    }

    #[test]
    fn json_writes_anything(v in any_value(), unbox in any::<bool>(), by_columns in any::<bool>(), na_null in any::<bool>()) {
        let dataframe = if by_columns { DataFrameLayout::Columns } else { DataFrameLayout::Rows };
        let opts = JsonOptions { auto_unbox: unbox, dataframe, digits: None, na_as_null: na_null };
        let text = to_json(&v, &opts);
        prop_assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok(), "{}", text);
    }

    #[test]
    fn json_round_trips_frames_by_rows(df in json_frame()) {
        let back = from_json(&json(&df)).expect("valid JSON");
        prop_assert!(same(&back, &df), "{} -> {:?}", json(&df), back);
    }

    #[test]
    fn json_round_trips_frames_by_columns(df in json_frame()) {
        let back = list_to_data_frame(from_json(&columns(&df)).expect("valid JSON")).expect("frame");
        prop_assert!(same(&back, &df), "{} -> {:?}", columns(&df), back);
    }

    #[test]
    fn json_round_trips_named_lists(l in json_named_list(), unbox in any::<bool>()) {
        let text = if unbox { unboxed(&l) } else { json(&l) };
        let back = from_json(&text).expect("valid JSON");
        prop_assert!(same(&back, &l), "{} -> {:?}", text, back);
    }

    #[test]
    fn json_round_trips_vectors(v in (1usize..8).prop_flat_map(json_vector)) {
        let back = from_json(&json(&v)).expect("valid JSON");
        prop_assert!(same(&back, &v), "{} -> {:?}", json(&v), back);
    }

    #[test]
    fn slice_rows_then_concat_rows_is_identity(df in any_frame().prop_flat_map(|df| {
        let n = df.nrow().unwrap_or(0);
        (Just(df), cuts(n))
    })) {
        let (df, ranges) = df;
        let parts: Vec<Value> = ranges.into_iter().map(|r| df.slice_rows(r)).collect();
        let back = Value::concat_rows(&parts).expect("same layout");
        prop_assert!(same(&back, &df), "{:?} != {:?}", back, df);
    }

    #[test]
    fn slice_then_concat_is_identity_for_vectors(v in (0usize..9).prop_flat_map(column), named in any::<bool>(), points in vec(0usize..9, 0..3)) {
        let n = v.len();
        let v = match named && !v.is_matrix() {
            true => v.with_attr("names", Value::strings((0..n).map(|i| format!("n{i}")))),
            false => v,
        };
        let mut points: Vec<usize> = points.into_iter().map(|p| p.min(n)).chain([0, n]).collect();
        points.sort_unstable();
        let parts: Vec<Value> = points.windows(2).map(|w| v.slice_rows(w[0]..w[1])).collect();
        let back = Value::concat_rows(&parts).expect("same type");
        prop_assert!(same(&back, &v), "{:?} != {:?}", back, v);
    }
}
