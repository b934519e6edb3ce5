//! Durations and sizes as written in configuration files and flags.
//!
//! Durations take Go's syntax too (`1h30m`, `1.5h`, `500ms`), because
//! Litestream's files are written in it, plus `d` for days.

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Parses `100ms`, `1s`, `1.5s`, `5m`, `1h`, `7d`, Go-style sums such as
/// `1h30m`, and a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let invalid = || format!("invalid duration {text:?} (examples: 100ms, 1s, 5m, 1h30m)");
    let trimmed = text.trim();
    if let Ok(seconds) = trimmed.parse::<f64>() {
        return seconds_to_duration(seconds).with_context(invalid);
    }
    if trimmed.is_empty() {
        bail!(invalid());
    }
    let mut seconds = 0.0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        let value: f64 = number.parse().ok().with_context(invalid)?;
        let unit_end = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let unit_seconds = match unit.trim() {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3_600.0,
            "d" => 86_400.0,
            other => bail!("invalid duration unit {other:?} in {text:?} (use ms, s, m, h or d)"),
        };
        seconds += value * unit_seconds;
        rest = tail;
    }
    seconds_to_duration(seconds).with_context(invalid)
}

fn seconds_to_duration(seconds: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(seconds).context("a duration is a non-negative number of seconds")
}

/// Prints a duration with one unit (`720h`, `90m`, `1500ms`), the form the
/// compactor's flags, the Lambda's variables and the infra template take.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, unit_millis) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis > 0 && millis.is_multiple_of(unit_millis) {
            return format!("{}{unit}", millis / unit_millis);
        }
    }
    format!("{millis}ms")
}

/// Parses `1048576`, `64MiB`, `1GiB`, `500KiB` (also MB/GB as powers of 1024).
pub fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().with_context(|| format!("invalid size {text:?} (examples: 64MiB, 1GiB)"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => bail!("invalid size unit {other:?} in {text:?} (use KiB, MiB or GiB)"),
    };
    value.checked_mul(multiplier).with_context(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_our_syntax_and_go_syntax() {
        for (text, millis) in [
            ("100ms", 100),
            ("1.5s", 1_500),
            ("5m", 300_000),
            ("720h", 2_592_000_000),
            ("7d", 604_800_000),
            ("1h30m", 5_400_000),
            ("2h45m30s", 9_930_000),
            ("1m 30s", 90_000),
            ("90", 90_000),
            ("0", 0),
        ] {
            assert_eq!(parse_duration(text).unwrap(), Duration::from_millis(millis), "{text}");
        }
        for text in ["", "s", "5 parsecs", "-1s", "1h-5m", "."] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn durations_print_with_one_unit() {
        for (millis, text) in
            [(2_592_000_000, "720h"), (5_400_000, "90m"), (1_500, "1500ms"), (60_000, "1m"), (0, "0ms")]
        {
            assert_eq!(format_duration(Duration::from_millis(millis)), text);
            assert_eq!(parse_duration(text).unwrap(), Duration::from_millis(millis));
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert!(parse_size("1TiB").is_err());
    }
}
