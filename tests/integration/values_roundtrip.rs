//! R objects <-> Values through a real R: exact shapes, NA in every type, and
//! property tests that Value -> R -> Value is the identity.

use proptest::prelude::*;
use rookery_engine::value::{na_real, Complex, Data, Logical, Value, NA_INTEGER};

use crate::support::{r, value};

/// Sends `v` to R, checks `identical(v, <expected R expression>)` there, and brings
/// it back unchanged.
fn assert_matches_r(v: &Value, expected_r: &str) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "t_rt{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let r = r();
    r.assign(&name, v.clone()).unwrap();
    let same = value(&format!("identical({name}, {expected_r})"));
    assert_eq!(
        same,
        Value::scalar_bool(true),
        "R sees a different object for {expected_r}"
    );
    let back = value(expected_r);
    assert!(
        same_bits(&back, v),
        "{expected_r}: R gave {back:?}, expected {v:?}"
    );
}

/// Equality that compares doubles by bits (NA and NaN differ; NaN equals itself).
fn same_bits(a: &Value, b: &Value) -> bool {
    let data = match (&a.data, &b.data) {
        (Data::Double(x), Data::Double(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        }
        (Data::Complex(x), Data::Complex(y)) => {
            x.len() == y.len()
                && x.iter().zip(y).all(|(p, q)| {
                    p.re.to_bits() == q.re.to_bits() && p.im.to_bits() == q.im.to_bits()
                })
        }
        (Data::List(x), Data::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_bits(p, q))
        }
        (x, y) => x == y,
    };
    data && a.attrs.0.len() == b.attrs.0.len()
        && a.attrs
            .0
            .iter()
            .zip(&b.attrs.0)
            .all(|((n, p), (m, q))| n == m && same_bits(p, q))
}

#[test]
fn atomic_vectors_with_na() {
    assert_matches_r(
        &Value::logicals([Some(true), None, Some(false)]),
        "c(TRUE, NA, FALSE)",
    );
    assert_matches_r(&Value::integers(vec![1, NA_INTEGER, -3]), "c(1L, NA, -3L)");
    assert_matches_r(
        &Value::doubles(vec![1.5, na_real(), f64::NAN, f64::INFINITY]),
        "c(1.5, NA, NaN, Inf)",
    );
    assert_matches_r(
        &Value::complexes(vec![
            Complex { re: 1.0, im: -1.0 },
            Complex {
                re: na_real(),
                im: 0.0,
            },
        ]),
        "c(1-1i, complex(real = NA_real_, imaginary = 0))",
    );
    assert_matches_r(
        &Value::strings_na(vec![Some("a".into()), None, Some("".into())]),
        "c('a', NA, '')",
    );
    assert_matches_r(&Value::raw(vec![0, 1, 255]), "as.raw(c(0, 1, 255))");
}

#[test]
fn empty_vectors_and_null() {
    assert_matches_r(&Value::logicals(Vec::<bool>::new()), "logical(0)");
    assert_matches_r(&Value::integers(vec![]), "integer(0)");
    assert_matches_r(&Value::doubles(vec![]), "numeric(0)");
    assert_matches_r(&Value::strings(Vec::<String>::new()), "character(0)");
    assert_matches_r(&Value::list(vec![]), "list()");
    assert_matches_r(&Value::NULL, "NULL");
}

#[test]
fn non_ascii_strings() {
    assert_matches_r(
        &Value::strings(["é", "日本語", "emoji 🦀", "tab\tnewline\n"]),
        "c('\\u00e9', '\\u65e5\\u672c\\u8a9e', 'emoji \\U0001F980', 'tab\\tnewline\\n')",
    );
    // A latin1-marked string comes back as UTF-8.
    assert_eq!(
        value("iconv('\\u00e9', 'UTF-8', 'latin1')"),
        Value::scalar_string("é")
    );
}

#[test]
fn named_and_nested_lists() {
    let v = Value::named_list([
        ("a", Value::scalar_double(1.0)),
        (
            "b",
            Value::list(vec![Value::scalar_int(2), Value::scalar_string("x")]),
        ),
    ]);
    assert_matches_r(&v, "list(a = 1, b = list(2L, 'x'))");
    let named = Value::integers(vec![1, 2]).with_attr("names", Value::strings(["x", "y"]));
    assert_matches_r(&named, "c(x = 1L, y = 2L)");
}

#[test]
fn factors_dates_times_matrices() {
    assert_matches_r(
        &Value::factor(
            vec![1, 2, 1, NA_INTEGER],
            vec![Some("u".into()), Some("v".into())],
        ),
        "factor(c('u', 'v', 'u', NA))",
    );
    assert_matches_r(&Value::date(vec![18262.0]), "as.Date('2020-01-01')");
    assert_matches_r(
        &Value::posixct(vec![1577880000.0], "UTC"),
        "as.POSIXct('2020-01-01 12:00:00', tz = 'UTC')",
    );
    assert_matches_r(
        &Value::matrix(Data::Integer(vec![1, 2, 3, 4]), 2, 2),
        "matrix(1:4, 2)",
    );
}

#[test]
fn data_frames_with_compact_and_character_row_names() {
    let df = value("data.frame(x = 1:2, y = c('a', NA), z = factor(c('p', 'q')))");
    assert_eq!(df.nrow(), Some(2));
    assert_matches_r(
        &df,
        "data.frame(x = 1:2, y = c('a', NA), z = factor(c('p', 'q')))",
    );
    let mt = value("head(mtcars, 3)");
    assert_eq!(mt.nrow(), Some(3));
    assert_matches_r(&mt, "head(mtcars, 3)");
    let built = Value::data_frame(vec![
        ("x".into(), Value::integers(vec![1, 2])),
        ("y".into(), Value::strings_na(vec![Some("a".into()), None])),
    ])
    .unwrap();
    assert_matches_r(&built, "data.frame(x = 1:2, y = c('a', NA))");
}

#[test]
fn altrep_vectors_materialize() {
    assert_eq!(value("1:5"), Value::integers(vec![1, 2, 3, 4, 5]));
    assert_eq!(value("as.character(1:3)"), Value::strings(["1", "2", "3"]));
    assert_eq!(
        value("seq(0, 1, by = 0.5)"),
        Value::doubles(vec![0.0, 0.5, 1.0])
    );
}

#[test]
fn unsupported_objects_are_clean_errors() {
    for code in ["function(x) x", "new.env()", "quote(a + b)", "sum"] {
        let e = r().eval(code).unwrap_err();
        assert!(e.to_string().contains("cannot convert"), "{code}: {e}");
    }
}

#[test]
fn invalid_values_are_rejected_by_r_cleanly() {
    let bad = Value::integers(vec![1, 2, 3]).with_attr("dim", Value::integers(vec![2, 2]));
    let e = r().assign("t_bad", bad).unwrap_err();
    assert!(e.to_string().contains("dim"), "{e}");
    let nul = Value::scalar_string("a\0b");
    let e = r().assign("t_nul", nul).unwrap_err();
    assert!(e.to_string().contains("nul"), "{e}");
}

#[test]
fn ten_million_doubles_round_trip() {
    let n = 10_000_000;
    let xs: Vec<f64> = (0..n).map(|i| i as f64 * 0.5).collect();
    let r = r();
    r.assign("t_big", Value::doubles(xs.clone())).unwrap();
    assert_eq!(
        value("length(t_big) == 1e7 && t_big[1e7] == (1e7 - 1) * 0.5"),
        Value::scalar_bool(true)
    );
    let back = r.get("t_big").unwrap().unwrap();
    assert_eq!(back.as_doubles().unwrap(), &xs[..]);
    r.eval("rm(t_big)").unwrap();
}

fn arb_string() -> impl Strategy<Value = Option<String>> {
    prop_oneof![1 => Just(None), 6 => "\\PC{0,8}".prop_map(Some)]
}

fn arb_double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(na_real()),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-0.0)
    ]
}

fn arb_atomic() -> impl Strategy<Value = Value> {
    let n = 0..12usize;
    prop_oneof![
        prop::collection::vec(
            prop_oneof![Just(Logical::NA), any::<bool>().prop_map(Logical::from)],
            n.clone()
        )
        .prop_map(|v| Value::from(Data::Logical(v))),
        prop::collection::vec(any::<i32>(), n.clone()).prop_map(Value::integers),
        prop::collection::vec(arb_double(), n.clone()).prop_map(Value::doubles),
        prop::collection::vec(
            (arb_double(), arb_double()).prop_map(|(re, im)| Complex { re, im }),
            n.clone()
        )
        .prop_map(Value::complexes),
        prop::collection::vec(arb_string(), n.clone()).prop_map(Value::strings_na),
        prop::collection::vec(any::<u8>(), n).prop_map(Value::raw),
    ]
}

fn with_names(v: Value, names: Vec<Option<String>>) -> Value {
    let n = v.len();
    if n == 0 {
        return v;
    }
    let names: Vec<_> = names.into_iter().cycle().take(n).collect();
    v.with_attr("names", Value::strings_na(names))
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = (
        arb_atomic(),
        prop::option::of(prop::collection::vec(arb_string(), 1..4)),
    )
        .prop_map(|(v, names)| match names {
            Some(names) => with_names(v, names),
            None => v,
        });
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Value::list)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn value_to_r_and_back_is_identity(v in arb_value()) {
        let got = r().with({
            let v = v.clone();
            move |r| {
                let x = r.from_value(&v).unwrap();
                r.to_value(&x).unwrap()
            }
        }).unwrap();
        prop_assert!(same_bits(&got, &v), "sent {v:?}\ngot  {got:?}");
    }
}
