//! JSON tables in both layouts, with and without a declared schema, and results as JSON.

use rookery_value::Value;
use rookery_value::{na_real, Data, Logical, RString, NA_INTEGER};
use serde_json::json;

use super::*;
use crate::schema::testing::assert_same;
use crate::schema::testing::{example_columns, frame, levels};
use crate::schema::{CellProblem, ColumnType};

fn schema(json: serde_json::Value) -> Schema {
    Schema::parse(&json).expect("valid schema")
}

fn example() -> Schema {
    schema(json!({ "columns": example_columns() }))
}

fn read(text: &str, schema: Option<&Schema>) -> Result<Value, TableError> {
    table_from_json(text.as_bytes(), schema)
}

fn error(text: &str, schema: &Schema) -> String {
    read(text, Some(schema))
        .expect_err("should be refused")
        .to_string()
}

const RECORDS: &str = r#"[
    {"x1": 1.5, "n": 2, "flag": true, "s": "p", "g": "b", "d": "1970-01-02", "extra": [1]},
    {"d": 3, "g": "a", "s": "q", "flag": false, "x1": 2}
]"#;

const COLUMNS: &str = r#"{
    "extra": {"nested": true},
    "x1": [1.5, 2], "n": [2, null], "flag": [true, false],
    "s": ["p", "q"], "g": ["b", "a"], "d": ["1970-01-02", 3]
}"#;

fn expected_example() -> Value {
    frame(vec![
        ("x1", Value::doubles([1.5, 2.0])),
        ("n", Value::integers([2, NA_INTEGER])),
        ("flag", Value::logicals([true, false])),
        ("s", Value::strings(["p", "q"])),
        ("g", Value::factor([2, 1], levels(&["a", "b"]))),
        ("d", Value::date([1.0, 3.0])),
    ])
}

#[test]
fn records_and_columns_give_the_same_frame() {
    let s = example();
    let records = read(RECORDS, Some(&s)).expect("records");
    let columns = read(COLUMNS, Some(&s)).expect("columns");
    assert_same(&records, &expected_example());
    assert_same(&columns, &expected_example());
}

#[test]
fn records_and_columns_agree_without_a_schema() {
    let records = read(r#"[{"a": 1, "b": "x"}, {"a": 2, "b": null}]"#, None).expect("records");
    let columns = read(r#"{"a": [1, 2], "b": ["x", null]}"#, None).expect("columns");
    let expected = frame(vec![
        ("a", Value::integers([1, 2])),
        ("b", Value::strings_na([Some("x".into()), None])),
    ]);
    assert_same(&records, &expected);
    assert_same(&columns, &expected);
}

#[test]
fn ragged_columns_are_refused() {
    let s = schema(
        json!({"columns": [{"name": "a", "type": "double"}, {"name": "b", "type": "double"}]}),
    );
    let message = error(r#"{"a": [1, 2, 3], "b": [1, 2]}"#, &s);
    assert_eq!(
        message,
        r#"column "b" has 2 values, expected 3 like the others"#
    );
    let without = read(r#"{"a": [1, 2, 3], "b": [1, 2]}"#, None).expect_err("ragged");
    assert!(
        matches!(
            without,
            TableError::Ragged {
                found: 2,
                expected: 3,
                ..
            }
        ),
        "{without:?}"
    );
}

#[test]
fn nested_objects_are_refused_with_a_schema() {
    let s = schema(json!({"columns": [{"name": "x", "type": "double"}]}));
    let message = error(r#"[{"x": 1}, {"x": {"a": 1}}]"#, &s);
    assert_eq!(
        message,
        r#"column "x" row 2: expected a number, got an object"#
    );
    let message = error(r#"[{"x": [1, 2]}]"#, &s);
    assert_eq!(
        message,
        r#"column "x" row 1: expected a number, got an array"#
    );
    let message = error(r#"{"x": [1, [2]]}"#, &s);
    assert_eq!(
        message,
        r#"column "x" row 2: expected a number, got an array"#
    );
}

#[test]
fn wrong_types_name_column_and_row() {
    let s = example();
    let message = error(r#"{"x1": [1, 2, "abc"]}"#, &s);
    assert_eq!(
        message,
        r#"column "x1" row 3: expected a number, got "abc""#
    );
    let rows = r#"[{"x1": 1, "n": 1}, {"x1": 2, "n": 1.5}]"#;
    assert_eq!(
        error(rows, &s),
        r#"column "n" row 2: expected an integer, got 1.5"#
    );
    let flags = r#"[{"x1": 1, "flag": true}, {"x1": 1, "flag": 1}]"#;
    assert_eq!(
        error(flags, &s),
        r#"column "flag" row 2: expected true or false, got 1"#
    );
    let err = read(r#"[{"x1": 1, "g": "z"}]"#, Some(&s)).expect_err("not a level");
    let TableError::Invalid(ValidationError::Cell {
        column,
        row,
        problem,
    }) = err
    else {
        panic!("unexpected {err:?}");
    };
    assert_eq!((column.as_str(), row), ("g", 1));
    assert!(matches!(problem, CellProblem::NotALevel { .. }));
}

#[test]
fn missing_fields_are_na_and_checked_against_nullable() {
    let s = schema(json!({"columns": [
        {"name": "a", "type": "double"}, {"name": "b", "type": "character", "nullable": true}
    ]}));
    let out =
        read(r#"[{"a": 1}, null, {"a": 3, "b": "z"}]"#, Some(&s)).expect_err("row 2 has no a");
    assert_eq!(out.to_string(), r#"column "a" row 2: NA not allowed"#);
    let out = read(r#"[{"a": 1}, {"a": 2}]"#, Some(&s)).expect("b may be all NA");
    let expected = frame(vec![
        ("a", Value::doubles([1.0, 2.0])),
        ("b", Value::strings_na([None, None])),
    ]);
    assert_same(&out, &expected);
    assert_eq!(error(r#"[{"b": "x"}]"#, &s), r#"missing column "a""#);
    assert_eq!(error(r#"{"a": [1]}"#, &s), r#"missing column "b""#);
}

#[test]
fn empty_tables_have_the_declared_columns() {
    let s = example();
    let out = read("[]", Some(&s)).expect("empty");
    assert_eq!(out.nrow(), Some(0));
    assert_eq!(out.names().map(<[RString]>::len), Some(6));
    let g = out.column("g").expect("g");
    assert!(g.inherits("factor"));
}

#[test]
fn a_single_object_of_scalars_is_one_row() {
    let s = schema(
        json!({"columns": [{"name": "a", "type": "double"}, {"name": "b", "type": "logical"}]}),
    );
    let out = read(r#"{"a": 1.25, "b": false}"#, Some(&s)).expect("one row");
    assert_same(
        &out,
        &frame(vec![
            ("a", Value::doubles([1.25])),
            ("b", Value::logicals([false])),
        ]),
    );
    let out = read(r#"{"a": 1.25, "b": false}"#, None).expect("one row without schema");
    assert_eq!(out.nrow(), Some(1));
}

#[test]
fn duplicates_and_non_records_are_refused() {
    let s = schema(json!({"columns": [{"name": "a", "type": "double"}]}));
    assert_eq!(
        error(r#"[{"a": 1, "a": 2}]"#, &s),
        r#"row 1: field "a" is given twice"#
    );
    assert_eq!(
        error(r#"{"a": [1], "a": [2]}"#, &s),
        r#"column "a" is given twice"#
    );
    assert_eq!(
        error(r#"[{"a": 1}, 5]"#, &s),
        "row 2 is not a record: expected an object, got a number"
    );
    let top = read("42", Some(&s)).expect_err("scalar");
    assert_eq!(top, TableError::NotATable("a number".into()));
    let top = read("[1, 2]", None).expect_err("vector");
    assert!(matches!(top, TableError::NotATable(_)), "{top:?}");
    let nested = read(r#"{"a": [1], "b": {"c": 1}}"#, None).expect_err("nested");
    assert!(nested.to_string().contains("\"b\""), "{nested}");
}

#[test]
fn malformed_json_reports_serde_json_position() {
    let s = example();
    for schema in [Some(&s), None] {
        let err = read("[{\"x1\": 1},\n {\"x1\": }]", schema).expect_err("malformed");
        let TableError::Json {
            message,
            line,
            column,
        } = err
        else {
            panic!("unexpected {err:?}");
        };
        assert_eq!((line, column), (2, 9), "{message}");
        assert!(message.contains("expected value"), "{message}");
    }
    let trailing = read("[] x", Some(&s)).expect_err("trailing");
    assert!(
        matches!(trailing, TableError::Json { line: 1, .. }),
        "{trailing:?}"
    );
    for schema in [Some(&s), None] {
        let bad_utf8 = table_from_json(b"[\n{\"s\": \"\xff\"}]", schema).expect_err("not UTF-8");
        assert!(
            matches!(bad_utf8, TableError::Json { line: 2, .. }),
            "{bad_utf8:?}"
        );
    }
}

#[test]
fn a_byte_order_mark_is_ignored() {
    let s = schema(json!({"columns": [{"name": "a", "type": "integer"}]}));
    for schema in [Some(&s), None] {
        let out = table_from_json(b"\xEF\xBB\xBF[{\"a\": 1}]", schema).expect("reads");
        assert_same(&out, &frame(vec![("a", Value::integers([1]))]));
    }
}

#[test]
fn max_rows_stops_the_parse() {
    let s = schema(json!({"columns": [{"name": "a", "type": "double"}], "max_rows": 2}));
    assert!(read(r#"[{"a": 1}, {"a": 2}]"#, Some(&s)).is_ok());
    let err = read(r#"[{"a": 1}, {"a": 2}, {"a": 3}, {"a": "#, Some(&s)).expect_err("too many");
    assert_eq!(
        err,
        TableError::Invalid(ValidationError::TooManyRows { max: 2 })
    );
    let err = read(r#"{"a": [1, 2, 3]}"#, Some(&s)).expect_err("too many");
    assert_eq!(
        err,
        TableError::Invalid(ValidationError::TooManyRows { max: 2 })
    );
}

#[test]
fn jsonlite_spellings_of_special_doubles_are_read() {
    let s = schema(json!({"columns": [{"name": "x", "type": "double", "nullable": true}]}));
    let out = read(
        r#"{"x": ["NA", "NaN", "Inf", "-Inf", null, 1e300]}"#,
        Some(&s),
    )
    .expect("specials");
    let x = out
        .column("x")
        .and_then(Value::as_doubles)
        .expect("doubles");
    assert_eq!(x[0].to_bits(), na_real().to_bits());
    assert!(x[1].is_nan() && x[1].to_bits() != na_real().to_bits());
    assert_eq!(
        (x[2], x[3], x[5]),
        (f64::INFINITY, f64::NEG_INFINITY, 1e300)
    );
    assert_eq!(x[4].to_bits(), na_real().to_bits());
}

#[test]
fn escaped_strings_and_unicode_survive() {
    let s = schema(json!({"columns": [{"name": "s", "type": "character"}]}));
    let out = read(r#"[{"s": "a\"b\\n"}, {"s": "Zürich 🦀"}]"#, Some(&s)).expect("strings");
    let expected = Value::strings(["a\"b\\n", "Zürich 🦀"]);
    assert_same(out.column("s").expect("s"), &expected);
}

/// A 10k-row frame of every declared type, NA in the nullable columns.
fn big_frame(rows: usize) -> Value {
    let i32_of = |i: usize| i32::try_from(i).expect("small");
    let na_every = |i: usize, k: usize| i % k == k - 1;
    let doubles = (0..rows).map(|i| i as f64 * 0.37 - 1000.0 + 1.0 / (i as f64 + 3.0));
    let ints = (0..rows).map(|i| {
        if na_every(i, 7) {
            NA_INTEGER
        } else {
            i32_of(i) - 5000
        }
    });
    let flags = (0..rows).map(|i| {
        if na_every(i, 5) {
            Logical::NA
        } else {
            Logical::from(i % 2 == 0)
        }
    });
    let text = (0..rows).map(|i| (!na_every(i, 11)).then(|| format!("row \"{i}\" é")));
    let codes = (0..rows).map(|i| {
        if na_every(i, 13) {
            NA_INTEGER
        } else {
            i32_of(i % 3) + 1
        }
    });
    let days = (0..rows).map(|i| i as f64 - 3000.0);
    let seconds = (0..rows).map(|i| 1.7e9 + i as f64 * 61.0);
    frame(vec![
        ("x", Value::doubles(doubles.collect::<Vec<_>>())),
        ("n", Value::integers(ints.collect::<Vec<_>>())),
        ("flag", Value::from(Data::Logical(flags.collect()))),
        ("s", Value::strings_na(text.collect::<Vec<_>>())),
        (
            "g",
            Value::factor(codes.collect::<Vec<_>>(), levels(&["lo", "mid", "hi"])),
        ),
        ("d", Value::date(days.collect::<Vec<_>>())),
        ("t", Value::posixct(seconds.collect::<Vec<_>>(), "UTC")),
    ])
}

fn big_schema() -> Schema {
    schema(json!({"columns": [
        {"name": "x", "type": "double"},
        {"name": "n", "type": "integer", "nullable": true},
        {"name": "flag", "type": "logical", "nullable": true},
        {"name": "s", "type": "character", "nullable": true},
        {"name": "g", "type": "factor", "levels": ["lo", "mid", "hi"], "nullable": true},
        {"name": "d", "type": "date"},
        {"name": "t", "type": "timestamp"}
    ], "max_rows": 10000}))
}

#[test]
fn a_10k_row_table_round_trips_in_both_layouts() {
    let (original, s) = (big_frame(10_000), big_schema());
    for layout in [Layout::Records, Layout::Columns] {
        let bytes = value_to_json(&original, layout);
        let back = table_from_json(&bytes, Some(&s)).expect("reads back");
        assert_same(&back, &original);
        assert_same(&s.validate(back).expect("validates"), &original);
    }
}

#[test]
fn a_10k_row_table_round_trips_without_a_schema() {
    let original = frame(vec![
        ("x", big_frame(10_000).column("x").cloned().expect("x")),
        ("s", Value::strings((0..10_000).map(|i| format!("s{i}")))),
    ]);
    let bytes = value_to_json(&original, Layout::Columns);
    assert_same(
        &table_from_json(&bytes, None).expect("reads back"),
        &original,
    );
}

#[test]
fn results_keep_a_stable_shape() {
    let text = |v: &Value, layout| String::from_utf8(value_to_json(v, layout)).expect("UTF-8");
    assert_eq!(text(&Value::scalar_double(0.5), Layout::Records), "[0.5]");
    assert_eq!(
        text(&Value::integers([1, NA_INTEGER]), Layout::Records),
        "[1,null]"
    );
    let f = frame(vec![
        ("a", Value::doubles([1.0, na_real()])),
        ("b", Value::strings(["x", "y"])),
    ]);
    assert_eq!(text(&f, Layout::Records), r#"[{"a":1,"b":"x"},{"b":"y"}]"#);
    assert_eq!(text(&f, Layout::Columns), r#"{"a":[1,null],"b":["x","y"]}"#);
    let list = Value::named_list([("p", Value::scalar_int(3)), ("f", f)]);
    assert_eq!(
        text(&list, Layout::Columns),
        r#"{"p":[3],"f":{"a":[1,null],"b":["x","y"]}}"#
    );
    assert_eq!(
        text(&Value::factor([2], levels(&["a", "b"])), Layout::Records),
        r#"["b"]"#
    );
}

#[test]
fn column_types_are_reported_by_name() {
    assert_eq!(ColumnType::Timestamp.name(), "timestamp");
    let s = example();
    assert_eq!(s.column("g").map(|c| c.ty.name()), Some("factor"));
}

/// Gives its text a few bytes at a time, as a body arriving in pieces does.
struct Trickle<'a> {
    text: &'a [u8],
    step: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.text.len());
        buf[..n].copy_from_slice(&self.text[..n]);
        self.text = &self.text[n..];
        Ok(n)
    }
}

#[test]
fn a_table_read_as_it_arrives_is_the_table_read_whole() {
    let s = example();
    for text in [RECORDS, COLUMNS] {
        for step in [1, 3, 7, 4096] {
            let bom = format!("\u{feff}{text}");
            for t in [text, bom.as_str()] {
                let input = Trickle {
                    text: t.as_bytes(),
                    step,
                };
                let got = table_from_json_reader(input, &s).expect("a table");
                assert_same(&got, &expected_example());
            }
        }
    }
    // The same refusals, with the same words.
    for bad in [
        r#"[{"x1": "one"}]"#,
        r#"[{"x1": 1, "x1": 2}]"#,
        r#"{"x1": [1, 2], "n": [1]}"#,
        r#"[{"x1": 1}"#,
        "[1, 2]",
    ] {
        let whole = error(bad, &s);
        let input = Trickle {
            text: bad.as_bytes(),
            step: 2,
        };
        let arriving = table_from_json_reader(input, &s)
            .expect_err("should be refused")
            .to_string();
        assert_eq!(arriving, whole, "{bad}");
    }
}

#[test]
fn a_read_error_while_a_table_arrives_is_named() {
    struct Broken;
    impl std::io::Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("the client went away"))
        }
    }
    let e = table_from_json_reader(Broken, &example()).unwrap_err();
    assert!(e.to_string().contains("the client went away"), "{e}");
}
