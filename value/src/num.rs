//! How numbers become text, shared by JSON ([`crate::json`]) and frame slicing
//! ([`crate::frame`]): jsonlite's `digits` rounding, R's `as.character()` of a double,
//! and complex numbers as `"1+2i"`. Owns formatting only, no parsing.

use crate::{is_na_real, Complex};

pub(crate) fn non_finite_name(x: f64) -> &'static str {
    match x {
        x if is_na_real(x) => "NA",
        x if x.is_nan() => "NaN",
        x if x > 0.0 => "Inf",
        _ => "-Inf",
    }
}

/// Integral and small enough to print exactly as an integer, as jsonlite does.
pub(crate) fn is_integral(x: f64) -> bool {
    x.fract() == 0.0 && x.abs() < 1e15
}

/// jsonlite's `digits`: decimal places for ordinary magnitudes, `d` decimals of the
/// mantissa below 1e-5 and 15 significant digits from 1e15.
pub(crate) fn round_digits(x: f64, digits: Option<u32>) -> f64 {
    let Some(d) = digits.map(|d| d.min(15) as usize) else {
        return x;
    };
    let text = match x.abs() {
        a if a >= 1e15 => format!("{x:.14e}"),
        a if a < 1e-5 && a > 0.0 => format!("{x:.d$e}"),
        _ => format!("{x:.d$}"),
    };
    text.parse().unwrap_or(x)
}

/// A finite double as text: integers plainly, others in their shortest form.
pub(crate) fn number_text(x: f64, digits: Option<u32>) -> String {
    match x {
        x if x.is_nan() => "NaN".to_owned(),
        x if x.is_infinite() => non_finite_name(x).to_owned(),
        x => match round_digits(x, digits) {
            x if is_integral(x) => (x as i64).to_string(),
            x => format!("{x:?}"),
        },
    }
}

/// R's `as.character()` of a double (15 significant digits); NA is the caller's case.
pub(crate) fn number_string(x: f64) -> String {
    let rounded = match x.is_finite() {
        true => format!("{x:.14e}").parse().unwrap_or(x),
        false => x,
    };
    number_text(rounded, None)
}

/// `"1+2i"`, or `None` when either part is NA or NaN.
pub(crate) fn complex_string(c: Complex, digits: Option<u32>) -> Option<String> {
    if c.re.is_nan() || c.im.is_nan() {
        return None;
    }
    let sign = if c.im < 0.0 { '-' } else { '+' };
    let (re, im) = (number_text(c.re, digits), number_text(c.im.abs(), digits));
    Some(format!("{re}{sign}{im}i"))
}
