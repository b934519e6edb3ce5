//! RFC 3339 times (`2026-11-21T22:29:29.825Z`) for commands' output and
//! `restore --timestamp`, through the `time` crate: one well-kept calendar
//! instead of our own civil-date arithmetic.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A time that is not RFC 3339, or not one we can use.
#[derive(Debug, thiserror::Error)]
#[error("invalid time {text:?}: {reason}; expected RFC 3339, for example 2026-01-31T12:00:00Z")]
pub struct InvalidTime {
    text: String,
    reason: String,
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC with
/// milliseconds (`2026-11-21T22:29:29.825Z`).
pub fn format(ms: u64) -> String {
    // Times past the crate's year 9999 cannot be shown; such a value is
    // not a real commit time, so print the epoch rather than panic.
    let nanos = i128::from(ms) * 1_000_000;
    let time = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let date = time.date();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        date.year(),
        u8::from(date.month()),
        date.day(),
        time.hour(),
        time.minute(),
        time.second(),
        time.millisecond()
    )
}

/// Parses an RFC 3339 time with any UTC offset into milliseconds since the
/// Unix epoch (fractions below a millisecond are dropped). Days a month
/// does not have (2026-02-31) are refused, not rolled over.
pub fn parse(text: &str) -> Result<u64, InvalidTime> {
    let invalid = |reason: String| InvalidTime { text: text.to_string(), reason };
    let time = OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|e| invalid(e.to_string()))?;
    let ms = time.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| invalid("it is before 1970".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_back_with_offsets() {
        let ms = 1_769_861_234_567;
        let text = format(ms);
        assert_eq!(text, "2026-01-31T12:07:14.567Z");
        assert_eq!(parse(&text).unwrap(), ms);
        assert_eq!(parse("2026-01-31T13:07:14.567+01:00").unwrap(), ms);
        assert_eq!(parse("2026-01-31t12:07:14.567z").unwrap(), ms, "RFC 3339 allows lower case");
        assert_eq!(parse("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(format(0), "1970-01-01T00:00:00.000Z");
        let error = parse("yesterday").unwrap_err().to_string();
        assert!(error.contains("\"yesterday\"") && error.contains("for example"), "{error}");
        assert!(parse("1969-12-31T23:59:59Z").unwrap_err().to_string().contains("before 1970"));
    }

    /// The hand-written parser took 2026-02-31 for 2026-03-03.
    #[test]
    fn refuses_days_the_month_does_not_have() {
        let error = parse("2026-02-31T00:00:00Z").unwrap_err().to_string();
        assert!(error.contains("2026-02-31") && error.contains("day"), "{error}");
        assert!(parse("2026-04-31T00:00:00Z").is_err());
        assert!(parse("2028-02-29T00:00:00Z").is_ok(), "a leap year");
        assert!(parse("2026-12-31T23:59:59Z").is_ok());
        assert!(parse("2026-01-00T00:00:00Z").is_err());
    }
}
