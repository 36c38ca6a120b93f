//! Unit tests for the QAP1 codec: the byte-for-byte test vectors of qap1.md §14,
//! round trips, and property tests that random or corrupted bytes never panic.

use proptest::prelude::*;
use rookery_value::{na_real, Complex, Data, Logical, Value, NA_INTEGER};

use crate::frame::{self, cmd, dt, resp, status, Header, QapError};
use crate::sexp::{self, XT_CLOS, XT_LANG_TAG, XT_S4, XT_SYMNAME, XT_UNKNOWN, XT_VECTOR_EXP};

/// Bytes from space-separated hex pairs.
fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

/// A response payload: one DT_SEXP parameter holding `v`.
fn sexp_payload(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    frame::push_param(&mut out, dt::SEXP, &sexp::encode(v).expect("encodes"));
    out
}

/// Decodes a response payload that is one DT_SEXP parameter.
fn decode_payload(payload: &[u8]) -> Result<Value, QapError> {
    let params = frame::decode_params(payload)?;
    assert_eq!(params.len(), 1, "one parameter");
    sexp::decode(params[0].as_sexp()?)
}

/// Equality that tells NA from NaN: two values are the same when they encode alike.
fn assert_same(a: &Value, b: &Value) {
    assert_eq!(
        sexp::encode(a).unwrap(),
        sexp::encode(b).unwrap(),
        "{a:?} vs {b:?}"
    );
}

/// Checks one §14 vector both ways: `v` encodes to `wire`, and `wire` decodes to `v`.
fn vector(wire: &str, v: &Value) {
    let bytes = hex(wire);
    assert_eq!(sexp_payload(v), bytes, "encoding {v:?}");
    assert_same(&decode_payload(&bytes).expect("decodes"), v);
}

fn names(n: &[&str]) -> Value {
    Value::strings(n.iter().copied())
}

#[test]
fn integer_vectors() {
    vector("0a 08 00 00 20 04 00 00 01 00 00 00", &Value::scalar_int(1));
    vector(
        "0a 08 00 00 20 04 00 00 00 00 00 80",
        &Value::scalar_int(NA_INTEGER),
    );
    vector("0a 04 00 00 20 00 00 00", &Value::integers(vec![]));
}

#[test]
fn double_vectors_keep_na_apart_from_nan() {
    vector(
        "0a 14 00 00 21 10 00 00 00 00 00 00 00 00 f8 3f a2 07 00 00 00 00 f0 7f",
        &Value::doubles(vec![1.5, na_real()]),
    );
    let wire = "0a 1c 00 00 21 18 00 00 a2 07 00 00 00 00 f0 7f \
                00 00 00 00 00 00 f8 7f 00 00 00 00 00 00 f0 7f";
    vector(
        wire,
        &Value::doubles(vec![na_real(), f64::NAN, f64::INFINITY]),
    );
    let back = decode_payload(&hex(wire)).unwrap();
    let d = back.as_doubles().unwrap();
    assert!(rookery_value::is_na_real(d[0]));
    assert!(d[1].is_nan() && !rookery_value::is_na_real(d[1]));
}

#[test]
fn character_vectors() {
    vector(
        "0a 08 00 00 22 04 00 00 61 00 01 01",
        &Value::scalar_string("a"),
    );
    vector(
        "0a 08 00 00 22 04 00 00 78 00 ff 00",
        &Value::strings_na(vec![Some("x".into()), None]),
    );
    vector(
        "0a 08 00 00 22 04 00 00 ff 00 01 01",
        &Value::strings_na(vec![None]),
    );
    vector(
        "0a 08 00 00 22 04 00 00 00 01 01 01",
        &Value::scalar_string(""),
    );
    vector("0a 04 00 00 22 00 00 00", &Value::strings_na(vec![]));
    vector(
        "0a 08 00 00 22 04 00 00 c3 a9 00 01",
        &Value::scalar_string("é"),
    );
}

#[test]
fn escaped_ff_string_is_not_na() {
    let v = decode_payload(&hex("0a 08 00 00 22 04 00 00 ff ff 41 00")).unwrap();
    assert_eq!(v, Value::scalar_string("\u{fffd}A"));
}

#[test]
fn logical_vectors() {
    vector(
        "0a 0c 00 00 24 08 00 00 01 00 00 00 01 ff ff ff",
        &Value::scalar_bool(true),
    );
    vector(
        "0a 0c 00 00 24 08 00 00 01 00 00 00 02 ff ff ff",
        &Value::logicals([Logical::NA]),
    );
    vector(
        "0a 0c 00 00 24 08 00 00 03 00 00 00 01 02 00 ff",
        &Value::logicals([Some(true), None, Some(false)]),
    );
    vector(
        "0a 08 00 00 24 04 00 00 00 00 00 00",
        &Value::logicals(Vec::<bool>::new()),
    );
}

#[test]
fn any_other_logical_byte_is_na() {
    let v = sexp::decode(&hex("24 08 00 00 02 00 00 00 07 01 ff ff")).unwrap();
    assert_eq!(v, Value::logicals([None, Some(true)]));
}

#[test]
fn null_and_lists() {
    vector("0a 04 00 00 00 00 00 00", &Value::NULL);
    vector("0a 04 00 00 10 00 00 00", &Value::list(vec![]));
    vector(
        "0a 18 00 00 10 14 00 00 20 04 00 00 01 00 00 00 10 08 00 00 20 04 00 00 02 00 00 00",
        &Value::list(vec![
            Value::scalar_int(1),
            Value::list(vec![Value::scalar_int(2)]),
        ]),
    );
}

#[test]
fn named_list_and_named_vector() {
    vector(
        "0a 30 00 00 90 2c 00 00 15 14 00 00 22 04 00 00 61 00 62 00 13 08 00 00 \
         6e 61 6d 65 73 00 00 00 21 08 00 00 00 00 00 00 00 00 f0 3f 22 04 00 00 78 00 01 01",
        &Value::named_list([
            ("a", Value::scalar_double(1.0)),
            ("b", Value::scalar_string("x")),
        ]),
    );
    vector(
        "0a 20 00 00 a0 1c 00 00 15 14 00 00 22 04 00 00 61 00 01 01 13 08 00 00 \
         6e 61 6d 65 73 00 00 00 01 00 00 00",
        &Value::scalar_int(1).with_attr("names", names(&["a"])),
    );
}

#[test]
fn matrix_data_frame_factor_date() {
    vector(
        "0a 2c 00 00 a0 28 00 00 15 14 00 00 20 08 00 00 02 00 00 00 02 00 00 00 \
         13 04 00 00 64 69 6d 00 01 00 00 00 02 00 00 00 03 00 00 00 04 00 00 00",
        &Value::matrix(Data::Integer(vec![1, 2, 3, 4]), 2, 2),
    );
    let df = Value::list(vec![Value::integers(vec![1, 2]), names(&["a", "b"])])
        .with_attr("names", names(&["x", "y"]))
        .with_attr("class", names(&["data.frame"]))
        .with_attr("row.names", Value::integers(vec![NA_INTEGER, -2]));
    vector(
        "0a 68 00 00 90 64 00 00 15 4c 00 00 22 04 00 00 78 00 79 00 13 08 00 00 \
         6e 61 6d 65 73 00 00 00 22 0c 00 00 64 61 74 61 2e 66 72 61 6d 65 00 01 \
         13 08 00 00 63 6c 61 73 73 00 00 00 20 08 00 00 00 00 00 80 fe ff ff ff \
         13 0c 00 00 72 6f 77 2e 6e 61 6d 65 73 00 00 00 20 08 00 00 01 00 00 00 \
         02 00 00 00 22 04 00 00 61 00 62 00",
        &df,
    );
    vector(
        "0a 40 00 00 a0 3c 00 00 15 2c 00 00 22 04 00 00 75 00 76 00 13 08 00 00 \
         6c 65 76 65 6c 73 00 00 22 08 00 00 66 61 63 74 6f 72 00 01 13 08 00 00 \
         63 6c 61 73 73 00 00 00 01 00 00 00 02 00 00 00 01 00 00 00",
        &Value::factor(vec![1, 2, 1], vec![Some("u".into()), Some("v".into())]),
    );
    vector(
        "0a 28 00 00 a1 24 00 00 15 18 00 00 22 08 00 00 44 61 74 65 00 01 01 01 \
         13 08 00 00 63 6c 61 73 73 00 00 00 00 00 00 00 80 d5 d1 40",
        &Value::date(vec![18262.0]),
    );
}

#[test]
fn raw_and_complex() {
    vector(
        "0a 0c 00 00 25 08 00 00 03 00 00 00 01 02 ff 00",
        &Value::raw(vec![1, 2, 255]),
    );
    // Rserve leaves raw padding uninitialised; we write zeros and ignore it on input.
    vector(
        "0a 10 00 00 25 0c 00 00 05 00 00 00 01 02 03 04 05 00 00 00",
        &Value::raw(vec![1, 2, 3, 4, 5]),
    );
    let garbage = hex("0a 10 00 00 25 0c 00 00 05 00 00 00 01 02 03 04 05 4a 4b 4c");
    assert_eq!(
        decode_payload(&garbage).unwrap(),
        Value::raw(vec![1, 2, 3, 4, 5])
    );
    vector(
        "0a 14 00 00 26 10 00 00 00 00 00 00 00 00 f0 3f 00 00 00 00 00 00 f0 bf",
        &Value::complexes(vec![Complex { re: 1.0, im: -1.0 }]),
    );
}

#[test]
fn objects_without_a_value_form_are_errors() {
    let cases = [
        ("0a 08 00 00 13 04 00 00 61 62 63 00", XT_SYMNAME),
        (
            "0a 30 00 00 17 2c 00 00 13 04 00 00 66 00 00 00 00 00 00 00 13 04 00 00 \
             78 00 00 00 00 00 00 00 21 08 00 00 00 00 00 00 00 00 00 40 13 04 00 00 79 00 00 00",
            XT_LANG_TAG,
        ),
        (
            "0a 28 00 00 1a 24 00 00 16 20 00 00 13 04 00 00 2b 00 00 00 21 08 00 00 \
             00 00 00 00 00 00 f0 3f 21 08 00 00 00 00 00 00 00 00 00 40",
            XT_VECTOR_EXP,
        ),
        (
            "0a 38 00 00 12 34 00 00 15 10 00 00 13 04 00 00 00 00 00 00 13 04 00 00 \
             78 00 00 00 16 1c 00 00 13 04 00 00 2b 00 00 00 13 04 00 00 78 00 00 00 \
             21 08 00 00 00 00 00 00 00 00 f0 3f",
            XT_CLOS,
        ),
        ("0a 08 00 00 30 04 00 00 04 00 00 00", XT_UNKNOWN),
        ("0a 08 00 00 30 04 00 00 08 00 00 00", XT_UNKNOWN),
    ];
    for (wire, xt) in cases {
        match decode_payload(&hex(wire)) {
            Err(QapError::Unsupported { xt: got, .. }) => assert_eq!(got, xt, "{wire}"),
            other => panic!("{wire}: {other:?}"),
        }
    }
}

#[test]
fn s4_object_is_unsupported_after_reading_its_attributes() {
    let wire = "0a 50 00 00 87 4c 00 00 15 48 00 00 21 08 00 00 00 00 00 00 00 00 f0 3f \
                13 04 00 00 78 00 00 00 a2 24 00 00 15 1c 00 00 22 0c 00 00 2e 47 6c 6f \
                62 61 6c 45 6e 76 00 01 13 08 00 00 70 61 63 6b 61 67 65 00 50 00 01 01 \
                13 08 00 00 63 6c 61 73 73 00 00 00";
    let err = decode_payload(&hex(wire)).unwrap_err();
    assert!(
        matches!(err, QapError::Unsupported { xt: XT_S4, .. }),
        "{err:?}"
    );
    assert_eq!(err.status(), status::INV_PAR);
}

#[test]
fn deprecated_scalars_read_as_vectors() {
    assert_eq!(
        sexp::decode(&hex("01 04 00 00 07 00 00 00")).unwrap(),
        Value::scalar_int(7)
    );
    let d = hex("02 08 00 00 00 00 00 00 00 00 f8 3f");
    assert_eq!(sexp::decode(&d).unwrap(), Value::scalar_double(1.5));
    let s = hex("03 04 00 00 61 62 00 00");
    assert_eq!(sexp::decode(&s).unwrap(), Value::scalar_string("ab"));
}

#[test]
fn large_header_for_five_million_integers() {
    let v = Value::integers((1..=5_000_000).collect::<Vec<i32>>());
    let payload = sexp_payload(&v);
    let head = hex("4a 08 2d 31 01 00 00 00 60 00 2d 31 01 00 00 00 01 00 00 00");
    assert_eq!(&payload[..head.len()], head.as_slice());
    assert_eq!(payload.len(), 20_000_016);
    assert_same(&decode_payload(&payload).unwrap(), &v);
    let resp = Header::new(resp::OK, payload.len() as u64).to_bytes();
    assert_eq!(
        resp.to_vec(),
        hex("01 00 01 00 10 2d 31 01 00 00 00 00 00 00 00 00")
    );
}

#[test]
fn large_header_is_accepted_at_any_size() {
    let v = sexp::decode(&hex("60 04 00 00 00 00 00 00 09 00 00 00")).unwrap();
    assert_eq!(v, Value::scalar_int(9));
    let large = hex("44 04 00 00 00 00 00 00 61 00 00 00");
    let params = frame::decode_params(&large).unwrap();
    assert_eq!(params[0].as_str().unwrap(), "a");
}

#[test]
fn rserve_estimate_decides_the_large_form() {
    // 2,097,150 doubles: 16,777,200 data bytes, estimate 0xfffff4 -> large.
    let v = Value::doubles(vec![0.0; 2_097_150]);
    assert_eq!(sexp::encode(&v).unwrap()[0], 0x61);
    // One fewer element: estimate 0xffffec -> small.
    let v = Value::doubles(vec![0.0; 2_097_149]);
    assert_eq!(sexp::encode(&v).unwrap()[0], 0x21);
}

#[test]
fn id_string_and_request_framing() {
    assert_eq!(
        frame::ID_STRING.to_vec(),
        hex("52 73 72 76 30 31 30 33 51 41 50 31 0d 0a 0d 0a 2d 2d 2d 2d 2d 2d 2d 2d 2d 2d 2d 2d 2d 2d 0d 0a")
    );
    let mut p = Vec::new();
    frame::push_string_param(&mut p, b"1L");
    let req = frame::encode_message(cmd::EVAL, 0, &p);
    assert_eq!(
        req,
        hex("03 00 00 00 08 00 00 00 00 00 00 00 00 00 00 00 04 04 00 00 31 4c 00 00")
    );
    let mut login = Vec::new();
    frame::push_string_param(&mut login, b"alice\nsecret");
    assert_eq!(
        login,
        hex("04 10 00 00 61 6c 69 63 65 0a 73 65 63 72 65 74 00 00 00 00")
    );
}

#[test]
fn set_sexp_request_matches_observed_bytes() {
    let mut p = Vec::new();
    frame::push_string_param(&mut p, b"y");
    let value = sexp::encode(&Value::doubles(vec![1.5, na_real()])).unwrap();
    frame::push_param(&mut p, dt::SEXP, &value);
    let req = frame::encode_message(cmd::SET_SEXP, 0, &p);
    assert_eq!(
        req,
        hex(
            "20 00 00 00 20 00 00 00 00 00 00 00 00 00 00 00 04 04 00 00 79 00 00 00 \
             0a 14 00 00 21 10 00 00 00 00 00 00 00 00 f8 3f a2 07 00 00 00 00 f0 7f"
        )
    );
    let params = frame::decode_params(&req[16..]).unwrap();
    assert_eq!(params[0].as_str().unwrap(), "y");
    assert_same(
        &sexp::decode(params[1].as_sexp().unwrap()).unwrap(),
        &Value::doubles(vec![1.5, na_real()]),
    );
}

#[test]
fn parameters_of_every_kind() {
    let mut p = Vec::new();
    frame::push_int_param(&mut p, 100);
    frame::push_param(&mut p, dt::BYTESTREAM, b"abcdefgh");
    assert_eq!(
        p,
        hex("01 04 00 00 64 00 00 00 05 08 00 00 61 62 63 64 65 66 67 68")
    );
    let params = frame::decode_params(&p).unwrap();
    assert_eq!(params[0].as_int().unwrap(), 100);
    assert_eq!(
        (params[1].dt, params[1].data),
        (dt::BYTESTREAM, &b"abcdefgh"[..])
    );
    assert!(params[0].as_str().is_err(), "a DT_INT is not a string");
    // Detach reply; a trailing zero word ends the list.
    let detach = hex("01 04 00 00 39 30 00 00 05 04 00 00 01 02 03 04 00 00 00 00");
    let params = frame::decode_params(&detach).unwrap();
    assert_eq!((params.len(), params[0].as_int().unwrap()), (2, 12345));
}

#[test]
fn string_parameter_without_nul_is_accepted() {
    let nonul = hex("04 04 00 00 31 2b 31 32");
    let params = frame::decode_params(&nonul).unwrap();
    assert_eq!(params[0].as_str().unwrap(), "1+12");
}

#[test]
fn response_words_and_status() {
    assert_eq!(
        frame::resp_err(status::PARSE_INCOMPLETE).to_le_bytes(),
        [0x02, 0x00, 0x01, 0x02]
    );
    assert_eq!(
        frame::resp_err(status::R_ERROR).to_le_bytes(),
        [0x02, 0x00, 0x01, 0x7f]
    );
    assert_eq!(
        frame::status_of(u32::from_le_bytes([0x02, 0x00, 0x01, 0x43])),
        status::INV_CMD
    );
    assert!(frame::is_special(cmd::SER_EVAL) && !frame::is_special(cmd::EVAL));
    assert_eq!(cmd::OC_INIT.to_le_bytes(), *b"RsOC");
}

#[test]
fn header_length_limit_is_enforced() {
    let h = Header::new(cmd::EVAL, 0x1_0000_0010).to_bytes();
    assert_eq!(h[4..8], [0x10, 0, 0, 0]);
    assert_eq!(h[12..16], [1, 0, 0, 0]);
    assert_eq!(
        Header::try_from_bytes(&h, u64::MAX).unwrap().len,
        0x1_0000_0010
    );
    let err = Header::try_from_bytes(&h, 1 << 28).unwrap_err();
    assert_eq!(
        err,
        QapError::TooLarge {
            len: 0x1_0000_0010,
            max: 1 << 28
        }
    );
    assert_eq!(err.status(), status::DATA_OVERFLOW);
}

#[test]
fn hostile_counts_and_lengths_are_rejected() {
    // Raw count 2^31-1 with 4 data bytes (crashed Rserve).
    let raw = sexp::decode(&hex("25 08 00 00 ff ff ff 7f 01 02 03 04"));
    assert!(matches!(raw, Err(QapError::Truncated { .. })), "{raw:?}");
    // Negative logical count.
    let lgl = sexp::decode(&hex("24 08 00 00 ff ff ff ff 01 02 03 04"));
    assert!(matches!(lgl, Err(QapError::Malformed { .. })), "{lgl:?}");
    // An element longer than its list.
    let list = sexp::decode(&hex("10 08 00 00 20 08 00 00 01 00 00 00"));
    assert!(matches!(list, Err(QapError::Truncated { .. })), "{list:?}");
    // A parameter longer than the payload (Rserve reads its zero tail instead).
    let short = hex("04 08 00 00 31 00 00 00");
    let par = frame::decode_params(&short);
    assert!(matches!(par, Err(QapError::Truncated { .. })), "{par:?}");
    // Trailing bytes, misaligned arrays, attributes that are not a tagged list.
    assert!(sexp::decode(&hex("00 00 00 00 00 00 00 00")).is_err());
    assert!(sexp::decode(&hex("21 04 00 00 00 00 00 00")).is_err());
    assert!(sexp::decode(&hex("a0 08 00 00 10 00 00 00 01 00 00 00")).is_err());
    assert!(sexp::decode(&hex("80 08 00 00 15 04 00 00 00 00 00 00")).is_err());
}

#[test]
fn too_many_parameters() {
    let mut p = Vec::new();
    (0..17).for_each(|i| frame::push_int_param(&mut p, i));
    assert_eq!(
        frame::decode_params(&p),
        Err(QapError::TooManyParams { max: 16 })
    );
}

#[test]
fn deep_nesting_is_capped() {
    // 200,000 nested XT_VECTOR headers (crashed Rserve), each claiming the rest.
    let n = 200_000usize;
    let mut bytes = Vec::with_capacity(n * 8);
    for i in 0..n {
        let len = ((n - i - 1) * 8) as u64;
        bytes.extend(frame::large_header(sexp::XT_VECTOR | sexp::XT_LARGE, len));
    }
    assert_eq!(
        sexp::decode(&bytes),
        Err(QapError::TooDeep {
            max: sexp::MAX_DEPTH
        })
    );
    let nested = (0..10).fold(Value::scalar_int(1), |v, _| Value::list(vec![v]));
    let bytes = sexp::encode(&nested).unwrap();
    assert!(sexp::decode_with_depth(&bytes, 9).is_err());
    assert_eq!(sexp::decode_with_depth(&bytes, 10).unwrap(), nested);
}

#[test]
fn strings_with_nul_cannot_be_encoded() {
    assert!(sexp::encode(&Value::scalar_string("a\0b")).is_err());
    let v = Value::scalar_int(1).with_attr("x\0", Value::NULL);
    assert!(sexp::encode(&v).is_err());
}

// ---------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------

fn any_double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(na_real()),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
    ]
}

fn any_int() -> impl Strategy<Value = i32> {
    prop_oneof![any::<i32>(), Just(NA_INTEGER)]
}

fn any_rstring() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[^\u{0}]{0,6}")
}

fn atomic() -> impl Strategy<Value = Data> {
    let logical = prop_oneof![Just(Logical::TRUE), Just(Logical::FALSE), Just(Logical::NA)];
    let complex = (any_double(), any_double()).prop_map(|(re, im)| Complex { re, im });
    prop_oneof![
        prop::collection::vec(logical, 0..9).prop_map(Data::Logical),
        prop::collection::vec(any_int(), 0..9).prop_map(Data::Integer),
        prop::collection::vec(any_double(), 0..9).prop_map(Data::Double),
        prop::collection::vec(complex, 0..5).prop_map(Data::Complex),
        prop::collection::vec(any_rstring(), 0..9).prop_map(Data::Character),
        prop::collection::vec(any::<u8>(), 0..9).prop_map(Data::Raw),
    ]
}

fn with_attrs(data: impl Strategy<Value = Data>) -> impl Strategy<Value = Value> {
    let attr = ("[a-z.]{0,7}", atomic().prop_map(Value::from));
    (data, prop::collection::vec(attr, 0..3)).prop_map(|(data, attrs)| Value {
        data,
        attrs: rookery_value::Attributes(attrs),
    })
}

fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![Just(Value::NULL), with_attrs(atomic())];
    leaf.prop_recursive(4, 32, 5, |inner| {
        with_attrs(prop::collection::vec(inner, 0..5).prop_map(Data::List))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn values_round_trip(v in any_value()) {
        let bytes = sexp::encode(&v).unwrap();
        prop_assert_eq!(bytes.len() % 4, 0);
        let back = sexp::decode(&bytes).unwrap();
        prop_assert_eq!(sexp::encode(&back).unwrap(), bytes);
        prop_assert_eq!(back.attrs.0.len(), v.attrs.0.len());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = sexp::decode(&bytes);
        let _ = frame::decode_params(&bytes);
        let _ = crate::expr::decode_expr(&bytes, sexp::Strings::Utf8);
    }

    #[test]
    fn corrupted_encodings_never_panic(
        v in any_value(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = sexp_payload(&v);
        for (at, bit) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        let _ = decode_payload_lenient(&bytes);
        let _ = crate::expr::decode_expr(&bytes[4..], sexp::Strings::Utf8);
        let end = cut.index(bytes.len() + 1);
        let _ = decode_payload_lenient(&bytes[..end]);
    }
}

/// Like [`decode_payload`], without asserting the parameter count.
fn decode_payload_lenient(payload: &[u8]) -> Result<Vec<Value>, QapError> {
    frame::decode_params(payload)?
        .iter()
        .map(|p| sexp::decode(p.data))
        .collect()
}

#[test]
fn a_bytestream_keeps_its_exact_length_and_the_next_parameter_its_place() {
    let mut p = Vec::new();
    frame::push_bytes_param(&mut p, b"abcde");
    frame::push_int_param(&mut p, 7);
    assert_eq!(&p[..4], &[5, 5, 0, 0], "the header says 5 bytes");
    assert_eq!(p.len(), 4 + 8 + 8, "padded to 8, then the int");
    let params = frame::decode_params(&p).unwrap();
    assert_eq!(params[0].data, b"abcde");
    assert_eq!(params[1].as_int(), Ok(7));
}

#[test]
fn calls_decode_with_their_head_and_tagged_arguments() {
    // f-less call: list("ref", y = 2) as XT_LANG_TAG, value then tag (qap1.md §7.8).
    let mut body = sexp::encode(&Value::strings(["ref"])).unwrap();
    body.extend([0, 0, 0, 0]);
    body.extend(sexp::encode(&Value::doubles(vec![2.0])).unwrap());
    body.extend([0x13, 0x04, 0, 0, b'y', 0, 0, 0]);
    let mut bytes = ((body.len() as u32) << 8 | u32::from(XT_LANG_TAG))
        .to_le_bytes()
        .to_vec();
    bytes.extend(&body);
    let call = sexp::decode_call(&bytes).unwrap();
    assert_eq!(call.head, Value::strings(["ref"]));
    assert_eq!(
        call.args,
        vec![(Some("y".into()), Value::doubles(vec![2.0]))]
    );
    // Not a call, trailing bytes, a symbol head (no value form): errors, no panic.
    assert!(sexp::decode_call(&sexp::encode(&Value::doubles(vec![1.0])).unwrap()).is_err());
    let mut trailing = bytes.clone();
    trailing.extend([0, 0, 0, 0]);
    assert!(sexp::decode_call(&trailing).is_err());
    let symbol_head = [22, 8, 0, 0, 0x13, 4, 0, 0, b'f', 0, 0, 0];
    assert!(sexp::decode_call(&symbol_head).is_err());
    assert!(sexp::decode_call(&[22, 0, 0, 0]).is_err(), "no function");
}

#[test]
fn latin1_strings_drop_what_latin1_cannot_hold() {
    use crate::sexp::Strings;
    assert_eq!(&*Strings::Latin1.bytes("a\u{e9}\u{65e5}b"), b"a\xe9b");
    assert_eq!(Strings::Latin1.text(b"\xe9t\xe9"), "\u{e9}t\u{e9}");
    assert_eq!(&*Strings::Utf8.bytes("\u{e9}"), "\u{e9}".as_bytes());
    let v = rookery_value::Value::strings(["\u{e9}"]);
    let mut out = Vec::new();
    crate::sexp::encode_into_as(&mut out, &v, Strings::Latin1).unwrap();
    assert_eq!(out, [0x22, 4, 0, 0, 0xe9, 0, 1, 1]);
    let back = crate::sexp::decode_as(&out, 8, Strings::Latin1).unwrap();
    assert_eq!(back, v);
}
