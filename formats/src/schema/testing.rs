//! Test helpers shared by the format modules: building frames, comparing R values bit
//! for bit.

use rookery_value::Value;
use rookery_value::{Data, RString};

/// True when `a` and `b` are the same R value, doubles compared by their bits (so NA
/// equals NA, and NA differs from `NaN`), attributes in order.
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    let attrs_match = a.attrs.0.len() == b.attrs.0.len()
        && (a.attrs.iter().zip(b.attrs.iter()))
            .all(|((n1, v1), (n2, v2))| n1 == n2 && same(v1, v2));
    attrs_match && same_data(&a.data, &b.data)
}

fn same_data(a: &Data, b: &Data) -> bool {
    match (a, b) {
        (Data::Double(x), Data::Double(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        }
        (Data::List(x), Data::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        _ => a == b,
    }
}

/// Panics, showing both, unless `actual` and `expected` are [`same`].
#[track_caller]
pub(crate) fn assert_same(actual: &Value, expected: &Value) {
    assert!(
        same(actual, expected),
        "values differ:\n  actual:   {actual:?}\n  expected: {expected:?}"
    );
}

#[test]
fn same_tells_na_from_nan_and_checks_attributes() {
    use rookery_value::na_real;
    let na = Value::doubles([na_real()]);
    assert!(same(&na, &Value::doubles([na_real()])));
    assert!(!same(&na, &Value::doubles([f64::NAN])));
    assert!(!same(&Value::date([1.0]), &Value::doubles([1.0])));
    let nested = |x: f64| Value::list([Value::doubles([x])]);
    assert!(same(&nested(2.0), &nested(2.0)));
    assert!(!same(&nested(2.0), &nested(3.0)));
}

/// A data frame from `(name, column)` pairs of equal length.
pub(crate) fn frame(columns: Vec<(&str, Value)>) -> Value {
    let named = columns
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    Value::data_frame(named).expect("equal lengths")
}

/// Factor levels from string slices.
pub(crate) fn levels(names: &[&str]) -> Vec<RString> {
    names.iter().map(|l| Some((*l).to_owned())).collect()
}

/// The declared columns the format tests share: one of each column type.
pub(crate) fn example_columns() -> serde_json::Value {
    serde_json::json!([
        {"name": "x1", "type": "double"},
        {"name": "n", "type": "integer", "nullable": true},
        {"name": "flag", "type": "logical"},
        {"name": "s", "type": "character"},
        {"name": "g", "type": "factor", "levels": ["a", "b"]},
        {"name": "d", "type": "date"}
    ])
}
