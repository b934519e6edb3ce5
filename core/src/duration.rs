//! The one duration grammar of every flag, environment variable and
//! configuration key (docs/REPLICATE.md, "Durations").
//!
//! A duration is one or more terms of a number and a unit, summed: `500ms`,
//! `90s`, `1.5m`, `1h30m`, `7d`; a bare number is seconds (`90`). Units are
//! `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h` and `d` (24 hours). This is Go's
//! syntax, which Litestream's configuration files are written in, plus days
//! and bare seconds; signs are refused (no setting takes a negative time).
//!
//! Not `humantime`: it refuses fractions (`1.5m`, which Go and our flags
//! take) and bare seconds, and reads `M` as months and `y` as years, so it
//! would need a wrapper larger than this parser.

use std::time::Duration;

/// What a duration may look like, for error messages.
pub const DURATION_FORMS: &str = "expected a number and a unit (ns, us, ms, s, m, h or d), such as 500ms, 90s, 1.5m, 1h30m or 7d; a bare number is seconds";

/// A duration that does not follow the grammar.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason}; {DURATION_FORMS}")]
pub struct DurationError {
    text: String,
    reason: &'static str,
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a duration in the grammar of this module's documentation.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let invalid = |reason| DurationError { text: text.to_string(), reason };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    if trimmed.starts_with(['-', '+']) {
        return Err(invalid("durations take no sign"));
    }
    let mut nanos: u128 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let (whole, fraction, tail) = number(rest).ok_or_else(|| invalid("a term does not start with a number"))?;
        let tail = tail.trim_start();
        let unit_end = tail.find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let unit_nanos: u128 = match unit {
            // Only the whole text may be a bare number: `1h30` is a typo.
            "" if rest.len() == trimmed.len() && tail.is_empty() => NANOS_PER_SEC,
            "" => return Err(invalid("a number has no unit")),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            "d" => 86_400 * NANOS_PER_SEC,
            _ => return Err(invalid("unknown unit")),
        };
        let term = scaled(whole, fraction, unit_nanos).ok_or_else(|| invalid("too large"))?;
        nanos = nanos.checked_add(term).ok_or_else(|| invalid("too large"))?;
        rest = tail.trim_start();
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| invalid("too large"))?;
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// Splits a leading decimal number (`12`, `1.5`, `.5`, `2.`) into its whole
/// and fraction digits and the rest of the text; `None` without a digit.
fn number(text: &str) -> Option<(&str, &str, &str)> {
    let whole_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (whole, rest) = text.split_at(whole_end);
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(after) => after.split_at(after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len())),
        None => ("", rest),
    };
    (!whole.is_empty() || !fraction.is_empty()).then_some((whole, fraction, rest))
}

/// `whole.fraction` units of `unit_nanos` in nanoseconds, exactly (digits
/// past a nanosecond are dropped, as Go does); `None` on overflow.
fn scaled(whole: &str, fraction: &str, unit_nanos: u128) -> Option<u128> {
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut nanos = whole.checked_mul(unit_nanos)?;
    let mut place = unit_nanos;
    for digit in fraction.bytes() {
        place /= 10;
        if place == 0 {
            break;
        }
        nanos = nanos.checked_add(u128::from(digit - b'0') * place)?;
    }
    Some(nanos)
}

/// Prints a duration with one unit (`720h`, `90m`, `1500ms`): the form the
/// compactor's flags, the Lambda's variables and the infra template take,
/// and that [`parse_duration`] reads back exactly (to the millisecond).
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, unit_millis) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis > 0 && millis.is_multiple_of(unit_millis) {
            return format!("{}{unit}", millis / unit_millis);
        }
    }
    format!("{millis}ms")
}

/// Checks that an entry point (a flag, a configuration key) reads durations
/// as [`parse_duration`] does: for the same inputs, the same duration, or an
/// error naming `name` and giving core's reason. Panics otherwise: for the
/// tests of the crates that define flags and keys.
#[doc(hidden)]
pub fn assert_reads_as_core(name: &str, read: impl Fn(&str) -> Result<Duration, String>) {
    for text in ["1.5m", "1d", "90s", "1h30m", "250ms", "2", "abc", "-1s", "", "1x"] {
        match (parse_duration(text), read(text)) {
            (Ok(expected), Ok(read)) => assert_eq!(read, expected, "{name} {text:?}"),
            (Err(reason), Err(error)) => {
                assert!(error.contains(name) && error.contains(&reason.to_string()), "{name} {text:?}: {error}");
            }
            (expected, read) => panic!("{name} {text:?}: core says {expected:?}, {name} {read:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(text: &str) -> Result<u128, DurationError> {
        parse_duration(text).map(|d| d.as_millis())
    }

    #[test]
    fn takes_go_syntax_days_and_bare_seconds() {
        for (text, expected) in [
            ("100ms", 100),
            ("1.5s", 1_500),
            ("1.5m", 90_000),
            (".5s", 500),
            ("2.s", 2_000),
            ("5m", 300_000),
            ("720h", 2_592_000_000),
            ("7d", 604_800_000),
            ("1d", 86_400_000),
            ("1h30m", 5_400_000),
            ("2h45m30s", 9_930_000),
            ("1m 30s", 90_000),
            (" 5 m ", 300_000),
            ("90", 90_000),
            ("1.5", 1_500),
            ("0", 0),
            ("0s", 0),
        ] {
            assert_eq!(millis(text), Ok(expected), "{text}");
        }
        assert_eq!(parse_duration("1500us"), Ok(Duration::from_micros(1_500)));
        assert_eq!(parse_duration("1500µs"), Ok(Duration::from_micros(1_500)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("1.0000000019s"), Ok(Duration::new(1, 1)));
    }

    #[test]
    fn refuses_what_is_not_a_duration_and_says_what_is() {
        for text in
            ["", " ", "abc", "s", "m", "-1s", "+1s", "1h-5m", ".", "5 parsecs", "1x", "1h30", "1M", "1e3", "inf", "NaN"]
        {
            let error = parse_duration(text).expect_err(text).to_string();
            assert!(error.contains(&format!("{text:?}")) && error.contains("1h30m"), "{text}: {error}");
        }
        assert!(parse_duration("-1s").unwrap_err().to_string().contains("no sign"));
    }

    #[test]
    fn refuses_durations_too_large_to_hold() {
        let error = parse_duration("99999999999999999999999h").unwrap_err().to_string();
        assert!(error.contains("too large"), "{error}");
        assert!(parse_duration(&format!("{}s", u64::MAX)).is_ok());
        assert!(parse_duration(&format!("{}s1s", u64::MAX)).is_err());
    }

    #[test]
    fn prints_with_one_unit_that_reads_back() {
        for (millis, text) in
            [(2_592_000_000, "720h"), (5_400_000, "90m"), (1_500, "1500ms"), (60_000, "1m"), (0, "0ms")]
        {
            assert_eq!(format_duration(Duration::from_millis(millis)), text);
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(millis)));
        }
    }
}
