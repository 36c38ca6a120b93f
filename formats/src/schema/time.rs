//! Dates and date-times written as text: `"YYYY-MM-DD"` and RFC 3339.
//!
//! Only parsing lives here; writing dates is the JSON module's job (`value::json`).
//! Calendar validity comes from `jiff`; the day count is plain arithmetic.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// Days since 1970-01-01 for exactly `"YYYY-MM-DD"` naming a real day.
pub(super) fn parse_date(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 10 && bytes[4] == b'-' && bytes[7] == b'-';
    if !shape_ok {
        return None;
    }
    let year: i16 = digits(text.get(0..4)?)?;
    let month: i8 = digits(text.get(5..7)?)?;
    let day: i8 = digits(text.get(8..10)?)?;
    Date::new(year, month, day).ok()?;
    let days = days_from_civil(year.into(), month.into(), day.into());
    Some(days as f64)
}

/// Seconds since the epoch for an RFC 3339 / ISO 8601 date-time. A time without an
/// offset (`"2024-03-01 12:00:00"`, or a bare date) is taken as UTC.
pub(super) fn parse_timestamp(text: &str) -> Option<f64> {
    let instant = text
        .parse::<Timestamp>()
        .ok()
        .or_else(|| text.parse::<Zoned>().ok().map(|z| z.timestamp()))
        .or_else(|| civil_utc(text))?;
    let nanos = f64::from(instant.subsec_nanosecond());
    Some(instant.as_second() as f64 + nanos / 1e9)
}

fn civil_utc(text: &str) -> Option<Timestamp> {
    let civil: DateTime = text.parse().ok()?;
    Some(civil.to_zoned(TimeZone::UTC).ok()?.timestamp())
}

/// Parses ASCII digits only (no sign, no spaces).
fn digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    match text.bytes().all(|b| b.is_ascii_digit()) {
        true => text.parse().ok(),
        false => None,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date, counting in 400-year eras that
/// start on 1 March (the inverse of `civil_from_days` in `value::json`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let (era, yoe) = (year.div_euclid(400), year.rem_euclid(400));
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = yoe * 365 + yoe / 4 - yoe / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(parse_date("1970-01-01"), Some(0.0));
        assert_eq!(parse_date("2000-03-01"), Some(11_017.0));
        assert_eq!(parse_date("1969-12-31"), Some(-1.0));
        assert_eq!(parse_date("2024-02-29"), Some(19_782.0));
    }

    #[test]
    fn malformed_dates_are_refused() {
        for text in [
            "2023-02-29",
            "2020-13-01",
            "2020-1-01",
            "20200101",
            "+020-01-01",
            "",
        ] {
            assert_eq!(parse_date(text), None, "{text}");
        }
    }

    #[test]
    fn timestamps_accept_offsets_and_assume_utc_without_one() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:10Z"), Some(10.0));
        assert_eq!(parse_timestamp("1970-01-01T01:00:00+01:00"), Some(0.0));
        assert_eq!(parse_timestamp("1970-01-01 00:01:00"), Some(60.0));
        assert_eq!(parse_timestamp("1970-01-02"), Some(86_400.0));
        assert_eq!(parse_timestamp("1970-01-01T00:00:00.5Z"), Some(0.5));
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}
