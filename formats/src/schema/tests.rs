//! Declarations, their JSON Schema, and validation of decoded frames.

use rookery_value::Value;
use rookery_value::{na_real, Data, Logical, NA_INTEGER};
use serde_json::json;

use super::testing::{assert_same, example_columns, frame};
use super::*;

fn example() -> Json {
    json!({"columns": example_columns(), "max_rows": 3})
}

fn spec(name: &str, ty: ColumnType, nullable: bool) -> ColumnSpec {
    ColumnSpec {
        name: name.into(),
        ty,
        nullable,
    }
}

fn schema(columns: Vec<ColumnSpec>) -> Schema {
    Schema {
        columns,
        max_rows: None,
    }
}

fn parse_error(json: Json) -> String {
    Schema::parse(&json)
        .expect_err("should be refused")
        .to_string()
}

fn validate_error(schema: &Schema, table: Value) -> String {
    schema
        .validate(table)
        .expect_err("should be refused")
        .to_string()
}

#[test]
fn parses_the_documented_example() {
    let parsed = Schema::parse(&example()).expect("valid");
    let levels = vec!["a".to_owned(), "b".to_owned()];
    let expected = Schema {
        columns: vec![
            spec("x1", ColumnType::Double, false),
            spec("n", ColumnType::Integer, true),
            spec("flag", ColumnType::Logical, false),
            spec("s", ColumnType::Character, false),
            spec("g", ColumnType::Factor { levels }, false),
            spec("d", ColumnType::Date, false),
        ],
        max_rows: Some(3),
    };
    assert_eq!(parsed, expected);
}

#[test]
fn serializes_back_to_an_equivalent_declaration() {
    let parsed = Schema::parse(&example()).expect("valid");
    let written = serde_json::to_value(&parsed).expect("serializes");
    assert_eq!(written["columns"][4]["levels"], json!(["a", "b"]));
    assert_eq!(written["columns"][4]["type"], json!("factor"));
    assert_eq!(Schema::parse(&written).expect("reparses"), parsed);
    let deserialized: Schema = serde_json::from_value(written).expect("deserializes");
    assert_eq!(deserialized, parsed);
}

#[test]
fn refuses_malformed_declarations_with_a_clear_reason() {
    let cases = [
        (json!([1]), "must be a JSON object"),
        (json!({"columns": []}), "declares no columns"),
        (json!({"columns": {}}), "must be an array"),
        (
            json!({"columns": [{"name": "x", "type": "float"}]}),
            "column 1 (\"x\"): unknown type \"float\"",
        ),
        (
            json!({"columns": [{"name": "", "type": "double"}]}),
            "column 1: \"name\" must be a non-empty string",
        ),
        (
            json!({"columns": [{"type": "double"}]}),
            "column 1: \"name\"",
        ),
        (json!({"columns": [{"name": "x"}]}), "missing \"type\""),
        (
            json!({"columns": [{"name": "g", "type": "factor"}]}),
            "column 1 (\"g\"): a factor needs",
        ),
        (
            json!({"columns": [{"name": "g", "type": "factor", "levels": []}]}),
            "a factor needs",
        ),
        (
            json!({"columns": [{"name": "g", "type": "factor", "levels": ["a", "a"]}]}),
            "duplicate level \"a\"",
        ),
        (
            json!({"columns": [{"name": "x", "type": "double", "levels": ["a"]}]}),
            "only allowed for factor",
        ),
        (
            json!({"columns": [{"name": "x", "type": "double", "nulable": true}]}),
            "unknown field \"nulable\"",
        ),
        (
            json!({"columns": [{"name": "x", "type": "double", "nullable": "yes"}]}),
            "\"nullable\" must be",
        ),
        (
            json!({"columns": [{"name": "x", "type": "double"}], "rows": 3}),
            "unknown schema field \"rows\"",
        ),
        (
            json!({"columns": [{"name": "x", "type": "double"}], "max_rows": 0}),
            "positive integer",
        ),
        (
            json!({"columns": [{"name": "x", "type": "double"}, {"name": "x", "type": "integer"}]}),
            "duplicate column name \"x\"",
        ),
    ];
    for (json, expected) in cases {
        let message = parse_error(json.clone());
        assert!(message.contains(expected), "{json}: {message}");
    }
}

#[test]
fn json_schema_describes_the_records_form() {
    let schema = Schema::parse(&example()).expect("valid").to_json_schema();
    assert_eq!(schema["type"], "array");
    assert_eq!(schema["maxItems"], 3);
    let items = &schema["items"];
    assert_eq!(items["type"], "object");
    assert_eq!(items["properties"]["x1"], json!({"type": "number"}));
    assert_eq!(
        items["properties"]["n"],
        json!({"type": ["integer", "null"]})
    );
    assert_eq!(items["properties"]["flag"], json!({"type": "boolean"}));
    assert_eq!(
        items["properties"]["g"],
        json!({"type": "string", "enum": ["a", "b"]})
    );
    assert_eq!(items["properties"]["d"]["format"], "date");
    assert_eq!(items["required"], json!(["x1", "flag", "s", "g", "d"]));
}

#[test]
fn nullable_enumerations_admit_null() {
    let levels = vec!["a".to_owned()];
    let s = schema(vec![spec("g", ColumnType::Factor { levels }, true)]).to_json_schema();
    let g = &s["items"]["properties"]["g"];
    assert_eq!(g["enum"], json!(["a", null]));
    assert_eq!(g["type"], json!(["string", "null"]));
    assert!(s.get("maxItems").is_none());
}

#[test]
fn validate_keeps_declared_columns_in_order_and_drops_the_rest() {
    let s = schema(vec![
        spec("b", ColumnType::Double, false),
        spec("a", ColumnType::Integer, false),
    ]);
    let table = frame(vec![
        ("a", Value::integers([1, 2])),
        ("extra", Value::strings(["x", "y"])),
        ("b", Value::doubles([0.5, 1.5])),
    ]);
    let expected = frame(vec![
        ("b", Value::doubles([0.5, 1.5])),
        ("a", Value::integers([1, 2])),
    ]);
    assert_same(&s.validate(table).expect("valid"), &expected);
}

#[test]
fn validate_makes_lossless_coercions() {
    let levels = vec!["a".to_owned(), "b".to_owned()];
    let s = schema(vec![
        spec("x", ColumnType::Double, false),
        spec("n", ColumnType::Integer, false),
        spec("g", ColumnType::Factor { levels }, false),
        spec("d", ColumnType::Date, false),
        spec("t", ColumnType::Timestamp, false),
    ]);
    let table = frame(vec![
        ("x", Value::integers([1, 2])),
        ("n", Value::doubles([3.0, -4.0])),
        ("g", Value::strings(["b", "a"])),
        ("d", Value::strings(["1970-01-02", "2000-03-01"])),
        ("t", Value::integers([60, 0])),
    ]);
    let expected = frame(vec![
        ("x", Value::doubles([1.0, 2.0])),
        ("n", Value::integers([3, -4])),
        (
            "g",
            Value::factor([2, 1], [Some("a".into()), Some("b".into())]),
        ),
        ("d", Value::date([1.0, 11_017.0])),
        ("t", Value::posixct([60.0, 0.0], "UTC")),
    ]);
    assert_same(&s.validate(table).expect("valid"), &expected);
}

#[test]
fn validate_recodes_a_factor_against_the_declared_levels() {
    let levels = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let s = schema(vec![spec("g", ColumnType::Factor { levels }, true)]);
    let own_levels = [Some("c".to_owned()), Some("a".to_owned())];
    let table = frame(vec![("g", Value::factor([1, 2, NA_INTEGER], own_levels))]);
    let out = s.validate(table).expect("valid");
    let g = out.column("g").expect("g");
    assert_eq!(g.as_integers(), Some(&[3, 1, NA_INTEGER][..]));
}

#[test]
fn validate_refuses_values_outside_the_levels() {
    let levels = vec!["a".to_owned(), "b".to_owned()];
    let s = schema(vec![spec("g", ColumnType::Factor { levels }, false)]);
    let message = validate_error(&s, frame(vec![("g", Value::strings(["a", "c"]))]));
    assert_eq!(
        message,
        r#"column "g" row 2: "c" is not one of the levels "a", "b""#
    );
}

#[test]
fn validate_names_column_row_and_value_of_a_wrong_type() {
    let s = schema(vec![spec("x1", ColumnType::Double, false)]);
    let message = validate_error(&s, frame(vec![("x1", Value::strings(["1", "2", "abc"]))]));
    assert_eq!(message, r#"column "x1" row 1: expected a number, got "1""#);
    let s = schema(vec![spec("n", ColumnType::Integer, false)]);
    let message = validate_error(&s, frame(vec![("n", Value::doubles([1.0, 2.5]))]));
    assert_eq!(message, r#"column "n" row 2: expected an integer, got 2.5"#);
    let message = validate_error(&s, frame(vec![("n", Value::doubles([3e9]))]));
    assert_eq!(
        message,
        r#"column "n" row 1: expected an integer, got 3000000000.0"#
    );
}

#[test]
fn validate_refuses_na_in_a_column_that_is_not_nullable() {
    let s = schema(vec![spec("x1", ColumnType::Double, false)]);
    let message = validate_error(
        &s,
        frame(vec![("x1", Value::doubles([1.0, na_real(), 3.0]))]),
    );
    assert_eq!(message, r#"column "x1" row 2: NA not allowed"#);
    let s = schema(vec![spec("s", ColumnType::Character, false)]);
    let message = validate_error(
        &s,
        frame(vec![("s", Value::strings_na([Some("a".into()), None]))]),
    );
    assert_eq!(message, r#"column "s" row 2: NA not allowed"#);
}

#[test]
fn validate_accepts_an_all_na_column_of_any_type_when_nullable() {
    let s = schema(vec![
        spec("x", ColumnType::Double, true),
        spec("d", ColumnType::Date, true),
    ]);
    let na = Value::logicals([Logical::NA, Logical::NA]);
    let out = s
        .validate(frame(vec![("x", na.clone()), ("d", na)]))
        .expect("valid");
    let expected = frame(vec![
        ("x", Value::doubles([na_real(), na_real()])),
        ("d", Value::date([na_real(), na_real()])),
    ]);
    assert_same(&out, &expected);
}

#[test]
fn validate_reports_missing_columns_and_too_many_rows() {
    let mut s = schema(vec![
        spec("x1", ColumnType::Double, false),
        spec("x2", ColumnType::Double, true),
    ]);
    let message = validate_error(&s, frame(vec![("x1", Value::doubles([1.0]))]));
    assert_eq!(message, r#"missing column "x2""#);
    s.max_rows = Some(2);
    let table = frame(vec![
        ("x1", Value::doubles([1.0; 3])),
        ("x2", Value::doubles([1.0; 3])),
    ]);
    assert_eq!(
        s.validate(table),
        Err(ValidationError::TooManyRows { max: 2 })
    );
}

#[test]
fn validate_refuses_what_is_not_a_data_frame() {
    let s = schema(vec![spec("x", ColumnType::Double, false)]);
    let message = validate_error(&s, Value::doubles([1.0]));
    assert_eq!(message, "expected a table (a data frame), got a vector");
    let nested = frame(vec![("x", frame(vec![("y", Value::doubles([1.0]))]))]);
    let message = validate_error(&s, nested);
    assert_eq!(
        message,
        r#"column "x" row 1: expected a number, got a data frame"#
    );
}

#[test]
fn validate_is_idempotent_and_keeps_a_timestamp_zone() {
    let levels = vec!["a".to_owned(), "b".to_owned()];
    let s = schema(vec![
        spec("g", ColumnType::Factor { levels }, true),
        spec("t", ColumnType::Timestamp, false),
        spec("l", ColumnType::Logical, true),
    ]);
    let table = frame(vec![
        ("g", Value::strings_na([Some("b".into()), None])),
        ("t", Value::posixct([1.5, 2.0], "Europe/Paris")),
        ("l", Value::logicals([Some(true), None])),
    ]);
    let once = s.validate(table).expect("valid");
    assert_eq!(
        once.column("t")
            .and_then(|t| t.attr("tzone"))
            .and_then(Value::as_str),
        Some("Europe/Paris")
    );
    let twice = s.validate(once.clone()).expect("still valid");
    assert_same(&twice, &once);
}

#[test]
fn validate_reads_dates_and_times_from_text_and_refuses_bad_ones() {
    let s = schema(vec![spec("t", ColumnType::Timestamp, false)]);
    let table = frame(vec![(
        "t",
        Value::strings(["1970-01-01T00:01:00Z", "1970-01-01 00:00:01"]),
    )]);
    let out = s.validate(table).expect("valid");
    assert_eq!(
        out.column("t").and_then(Value::as_doubles),
        Some(&[60.0, 1.0][..])
    );
    let s = schema(vec![spec("d", ColumnType::Date, false)]);
    let message = validate_error(&s, frame(vec![("d", Value::strings(["2021-02-30"]))]));
    assert!(
        message.starts_with(r#"column "d" row 1: expected a date"#),
        "{message}"
    );
    assert!(message.ends_with(r#"got "2021-02-30""#), "{message}");
}

#[test]
fn long_values_are_shortened_in_errors() {
    let s = schema(vec![spec("x", ColumnType::Double, false)]);
    let long = "y".repeat(100);
    let message = validate_error(&s, frame(vec![("x", Value::strings([long]))]));
    assert!(message.len() < 120, "{message}");
    assert!(message.ends_with("…\""), "{message}");
}

#[test]
fn complex_and_list_columns_are_refused() {
    let s = schema(vec![spec("x", ColumnType::Character, false)]);
    let list = Value::list([Value::scalar_int(1)]);
    let message = validate_error(&s, frame(vec![("x", list)]));
    assert_eq!(
        message,
        r#"column "x" row 1: expected a string, got a list"#
    );
    let data = Data::Complex(vec![Default::default()]);
    let message = validate_error(&s, frame(vec![("x", Value::from(data))]));
    assert_eq!(
        message,
        r#"column "x" row 1: expected a string, got a complex number"#
    );
}
