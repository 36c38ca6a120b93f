//! Arrow IPC both ways: round trips, both container formats, batches, types, bad input.

use std::sync::Arc;

use arrow_array::builder::StringDictionaryBuilder;
use arrow_array::types::Int8Type;
use arrow_array::{
    ArrayRef, BinaryArray, Date32Array, Float32Array, Int32Array, Int64Array, RecordBatch,
    TimestampMillisecondArray, TimestampSecondArray, UInt64Array,
};
use arrow_ipc::writer::{FileWriter, StreamWriter};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};
use proptest::prelude::*;
use rookery_value::Value;
use rookery_value::{na_real, Complex, Data, Logical, RString, NA_INTEGER};

use super::*;
use crate::schema::testing::{assert_same, frame, levels, same};

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).expect("valid batch")
}

fn stream_of(batches: &[RecordBatch]) -> Vec<u8> {
    let mut writer = StreamWriter::try_new(Vec::new(), &batches[0].schema()).expect("writer");
    for b in batches {
        writer.write(b).expect("write");
    }
    writer.into_inner().expect("finish")
}

fn file_of(batches: &[RecordBatch]) -> Vec<u8> {
    let mut writer = FileWriter::try_new(Vec::new(), &batches[0].schema()).expect("writer");
    for b in batches {
        writer.write(b).expect("write");
    }
    writer.into_inner().expect("finish")
}

fn sample_batch() -> RecordBatch {
    let mut g = StringDictionaryBuilder::<Int8Type>::new();
    for v in [Some("b"), None, Some("a")] {
        g.append_option(v);
    }
    batch(vec![
        (
            "x",
            Arc::new(Float32Array::from(vec![Some(0.5), None, Some(-2.0)])) as ArrayRef,
        ),
        (
            "n",
            Arc::new(Int32Array::from(vec![Some(1), Some(2), None])),
        ),
        ("g", Arc::new(g.finish())),
    ])
}

fn sample_frame() -> Value {
    frame(vec![
        ("x", Value::doubles([0.5, na_real(), -2.0])),
        ("n", Value::integers([1, 2, NA_INTEGER])),
        ("g", Value::factor([1, NA_INTEGER, 2], levels(&["b", "a"]))),
    ])
}

#[test]
fn stream_and_file_formats_read_the_same() {
    let batches = [sample_batch()];
    let from_stream = table_from_ipc(&stream_of(&batches)).expect("stream");
    let from_file = table_from_ipc(&file_of(&batches)).expect("file");
    assert_same(&from_stream, &sample_frame());
    assert_same(&from_file, &sample_frame());
}

#[test]
fn batches_are_concatenated_and_dictionaries_merged() {
    let first = sample_batch();
    let mut g = StringDictionaryBuilder::<Int8Type>::new();
    g.append_value("c");
    g.append_value("a");
    let second = batch(vec![
        (
            "x",
            Arc::new(Float32Array::from(vec![1.0, 2.0])) as ArrayRef,
        ),
        ("n", Arc::new(Int32Array::from(vec![7, 8]))),
        ("g", Arc::new(g.finish())),
    ]);
    let table = table_from_ipc(&stream_of(&[first.clone(), second, first.clone()])).expect("reads");
    assert_eq!(table.nrow(), Some(8));
    let n = table.column("n").and_then(Value::as_integers).expect("n");
    assert_eq!(n, &[1, 2, NA_INTEGER, 7, 8, 1, 2, NA_INTEGER]);
    let g = table.column("g").expect("g");
    assert_eq!(
        g.attr("levels").and_then(Value::as_strings),
        Some(&levels(&["b", "a", "c"])[..])
    );
    let codes = [1, NA_INTEGER, 2, 3, 2, 1, NA_INTEGER, 2];
    assert_eq!(g.as_integers(), Some(&codes[..]));
    // The file format allows one dictionary per field, shared by every batch.
    let from_file = table_from_ipc(&file_of(&[first.clone(), first])).expect("reads");
    let twice = Value::concat_rows(&[sample_frame(), sample_frame()]).expect("same columns");
    assert_same(&from_file, &twice);
}

#[test]
fn a_stream_without_batches_gives_typed_empty_columns() {
    let schema = sample_batch().schema();
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).expect("writer");
    writer.finish().expect("finish");
    let table = table_from_ipc(&writer.into_inner().expect("bytes")).expect("reads");
    assert_eq!(table.nrow(), Some(0));
    assert!(table.column("g").expect("g").inherits("factor"));
    assert_eq!(table.column("x").and_then(Value::as_doubles), Some(&[][..]));
}

#[test]
fn wide_integers_become_doubles_only_when_they_must() {
    let b = batch(vec![
        (
            "small",
            Arc::new(Int64Array::from(vec![Some(1), None, Some(-5)])) as ArrayRef,
        ),
        (
            "big",
            Arc::new(Int64Array::from(vec![Some(1), Some(1 << 40), None])),
        ),
        (
            "na_pattern",
            Arc::new(Int32Array::from(vec![i32::MIN, 0, 1])),
        ),
        (
            "unsigned",
            Arc::new(UInt64Array::from(vec![u64::MAX, 0, 1])),
        ),
    ]);
    let table = table_from_ipc(&stream_of(&[b])).expect("reads");
    let col = |name| table.column(name).expect("column");
    assert_eq!(col("small").as_integers(), Some(&[1, NA_INTEGER, -5][..]));
    let big = col("big").as_doubles().expect("double");
    assert_eq!(
        (big[1], big[2].to_bits()),
        ((1u64 << 40) as f64, na_real().to_bits())
    );
    assert_eq!(
        col("na_pattern").as_doubles(),
        Some(&[f64::from(i32::MIN), 0.0, 1.0][..])
    );
    assert_eq!(
        col("unsigned").as_doubles(),
        Some(&[u64::MAX as f64, 0.0, 1.0][..])
    );
}

#[test]
fn dates_and_timestamps_keep_their_zone() {
    let zoned =
        TimestampMillisecondArray::from(vec![Some(1_500), None]).with_timezone("Europe/Paris");
    let b = batch(vec![
        (
            "d",
            Arc::new(Date32Array::from(vec![Some(19_000), None])) as ArrayRef,
        ),
        ("t", Arc::new(zoned)),
        ("naive", Arc::new(TimestampSecondArray::from(vec![60, 120]))),
    ]);
    let table = table_from_ipc(&stream_of(&[b])).expect("reads");
    let expected = frame(vec![
        ("d", Value::date([19_000.0, na_real()])),
        ("t", Value::posixct([1.5, na_real()], "Europe/Paris")),
        ("naive", Value::posixct([60.0, 120.0], "UTC")),
    ]);
    assert_same(&table, &expected);
    assert_same(
        &table_from_ipc(&value_to_ipc(&table).expect("writes")).expect("reads"),
        &expected,
    );
}

#[test]
fn an_unsupported_type_names_the_column_and_type() {
    let blob = BinaryArray::from(vec![&b"ab"[..], b"c"]);
    let b = batch(vec![
        ("ok", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
        ("blob", Arc::new(blob)),
    ]);
    let err = table_from_ipc(&stream_of(&[b])).expect_err("binary");
    assert_eq!(
        err.to_string(),
        r#"column "blob": Arrow type Binary is not supported"#
    );
}

/// The error `table_from_ipc` gives when the decoder itself panicked.
fn is_caught_panic(e: &ArrowError) -> bool {
    matches!(e, ArrowError::Invalid(m) if m.contains("decoder failed"))
}

#[test]
fn every_truncation_is_a_clean_error() {
    let batches = [sample_batch(), sample_batch()];
    for bytes in [stream_of(&batches), file_of(&batches)] {
        for cut in 0..bytes.len() {
            let err = table_from_ipc(&bytes[..cut]).expect_err("truncated");
            assert!(matches!(err, ArrowError::Invalid(_)), "cut {cut}: {err:?}");
            assert!(!is_caught_panic(&err), "cut {cut}: decoder panicked");
        }
    }
}

#[test]
fn garbage_and_corrupted_bytes_never_panic() {
    for junk in [
        &b""[..],
        b"ARROW1",
        b"ARROW1\0\0garbageARROW1",
        b"{\"json\": true}",
        &[0xFF; 64],
    ] {
        let err = table_from_ipc(junk).expect_err("garbage");
        assert!(!is_caught_panic(&err), "{junk:?}: {err:?}");
    }
    let bytes = stream_of(&[sample_batch()]);
    for at in 0..bytes.len() {
        for bit in 0..8 {
            let mut corrupted = bytes.clone();
            corrupted[at] ^= 1 << bit;
            if let Err(e) = table_from_ipc(&corrupted) {
                assert!(
                    matches!(
                        e,
                        ArrowError::Invalid(_) | ArrowError::UnsupportedType { .. }
                    ),
                    "{e:?}"
                );
            }
        }
    }
}

#[test]
fn huge_announced_lengths_are_refused_before_allocating() {
    let mut bytes = stream_of(&[sample_batch()]);
    bytes[4..8].copy_from_slice(&i32::MAX.to_le_bytes());
    let err = table_from_ipc(&bytes).expect_err("length beyond the data");
    assert!(err.to_string().contains("ends early"), "{err}");
}

#[test]
fn vectors_matrices_and_null_are_written_as_tables() {
    let read_back = |v: &Value| table_from_ipc(&value_to_ipc(v).expect("writes")).expect("reads");
    let vector = read_back(&Value::strings_na([Some("a".to_owned()), None]));
    assert_same(
        &vector,
        &frame(vec![(
            "value",
            Value::strings_na([Some("a".to_owned()), None]),
        )]),
    );
    let matrix = Value::matrix(Data::Double(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), 3, 2).with_attr(
        "dimnames",
        Value::list([Value::NULL, Value::strings(["p", "q"])]),
    );
    let expected = frame(vec![
        ("p", Value::doubles([1.0, 2.0, 3.0])),
        ("q", Value::doubles([4.0, 5.0, 6.0])),
    ]);
    assert_same(&read_back(&matrix), &expected);
    let unnamed = Value::matrix(Data::Integer(vec![1, 2]), 1, 2);
    assert_eq!(
        read_back(&unnamed).names(),
        Some(&levels(&["V1", "V2"])[..])
    );
    assert_eq!(read_back(&Value::NULL).nrow(), Some(0));
}

#[test]
fn values_without_an_arrow_form_are_refused() {
    let list = Value::list([Value::scalar_int(1)]);
    assert_eq!(
        value_to_ipc(&list),
        Err(ArrowError::NotATable(
            "a list that is not a data frame".into()
        ))
    );
    let complex = frame(vec![(
        "z",
        Value::complexes(vec![Complex { re: 1.0, im: 2.0 }]),
    )]);
    let err = value_to_ipc(&complex).expect_err("complex");
    assert_eq!(
        err.to_string(),
        r#"column "z": cannot write a complex vector as Arrow"#
    );
}

#[test]
fn invalid_factor_codes_are_written_as_null() {
    let f = frame(vec![(
        "g",
        Value::factor([1, 3, 0, NA_INTEGER], levels(&["a", "b"])),
    )]);
    let back = table_from_ipc(&value_to_ipc(&f).expect("writes")).expect("reads");
    let codes = back
        .column("g")
        .and_then(Value::as_integers)
        .expect("codes");
    assert_eq!(codes, &[1, NA_INTEGER, NA_INTEGER, NA_INTEGER]);
}

#[test]
fn written_types_are_the_documented_ones() {
    let f = frame(vec![
        ("g", Value::factor([1], levels(&["a"]))),
        ("d", Value::date([1.0])),
        ("t", Value::posixct([1.0], "")),
        ("l", Value::logicals([Logical::NA])),
    ]);
    let bytes = value_to_ipc(&f).expect("writes");
    let reader = arrow_ipc::reader::StreamReader::try_new(&bytes[..], None).expect("reads");
    let expected = ArrowSchema::new(vec![
        Field::new(
            "g",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new("d", DataType::Date32, true),
        Field::new(
            "t",
            DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("l", DataType::Boolean, true),
    ]);
    assert_eq!(*reader.schema(), expected);
}

fn column_strategy(rows: usize) -> impl Strategy<Value = Value> {
    use proptest::collection::{btree_set, vec};
    let double = prop_oneof![4 => any::<f64>(), 1 => Just(na_real())];
    let int = prop_oneof![4 => any::<i32>().prop_filter("NA", |&i| i != NA_INTEGER), 1 => Just(NA_INTEGER)];
    let flag = prop_oneof![Just(Logical::TRUE), Just(Logical::FALSE), Just(Logical::NA)];
    let text = proptest::option::weighted(0.8, "\\PC{0,6}");
    let factor = btree_set("[a-z]{1,3}|\\PC{1,4}", 1..5).prop_flat_map(move |levels| {
        let n = i32::try_from(levels.len()).expect("few levels");
        let code = prop_oneof![4 => 1..=n, 1 => Just(NA_INTEGER)];
        let levels: Vec<RString> = levels.into_iter().map(Some).collect();
        vec(code, rows).prop_map(move |codes| Value::factor(codes, levels.clone()))
    });
    prop_oneof![
        vec(double, rows).prop_map(Value::doubles),
        vec(int, rows).prop_map(Value::integers),
        vec(flag, rows).prop_map(|v| Value::from(Data::Logical(v))),
        vec(text, rows).prop_map(Value::strings_na),
        factor,
    ]
}

fn frame_strategy() -> impl Strategy<Value = Value> {
    let columns =
        (0..40usize).prop_flat_map(|rows| proptest::collection::vec(column_strategy(rows), 1..6));
    columns.prop_map(|columns| {
        let named = columns
            .into_iter()
            .enumerate()
            .map(|(i, c)| (format!("c{i}"), c));
        Value::data_frame(named.collect()).expect("equal lengths")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn frames_round_trip_through_ipc(original in frame_strategy()) {
        let bytes = value_to_ipc(&original).expect("writes");
        let back = table_from_ipc(&bytes).expect("reads");
        prop_assert!(same(&back, &original), "{back:?}\n!=\n{original:?}");
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = table_from_ipc(&bytes) {
            prop_assert!(!is_caught_panic(&e), "{e:?}");
        }
    }
}
