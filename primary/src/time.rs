//! RFC 3339 times for the restore and listing commands, without a date
//! library: formatting and parsing of UTC offsets only need civil-date math.

use anyhow::{Result, bail};

pub use distributary_core::clock::format_rfc3339;

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` into milliseconds since
/// the Unix epoch.
pub fn parse_rfc3339(text: &str) -> Result<u64> {
    let bad = || anyhow::anyhow!("invalid time {text:?}: expected RFC 3339, for example 2026-01-31T12:00:00Z");
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| text.get(range).and_then(|s| s.parse::<i64>().ok()).ok_or_else(bad);
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    // Day 31 of a 30-day month would roll into the next one silently.
    let month_days =
        days_from_civil(year + i64::from(month == 12), month % 12 + 1, 1) - days_from_civil(year, month, 1);
    if day > month_days {
        bail!("invalid time {text:?}: {year:04}-{month:02} has {month_days} days");
    }
    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = padded.parse().map_err(|_| bad())?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && &rest[3..4] == ":" => {
            let minutes =
                rest[1..3].parse::<i64>().map_err(|_| bad())? * 60 + rest[4..6].parse::<i64>().map_err(|_| bad())?;
            if rest.starts_with('-') { -minutes } else { minutes }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(year, month, day);
    let ms = ((days * 86_400 + hour * 3600 + minute * 60 + second) - offset_minutes * 60) * 1000 + millis;
    if ms < 0 {
        bail!("time {text:?} is before 1970");
    }
    Ok(ms as u64)
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_back_with_offsets() {
        let ms = 1_769_861_234_567;
        let text = format_rfc3339(ms);
        assert_eq!(text, "2026-01-31T12:07:14.567Z");
        assert_eq!(parse_rfc3339(&text).unwrap(), ms);
        assert_eq!(parse_rfc3339("2026-01-31T13:07:14.567+01:00").unwrap(), ms);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert!(parse_rfc3339("yesterday").is_err());
    }

    /// It took 2026-02-31 for 2026-03-03.
    #[test]
    fn refuses_days_the_month_does_not_have() {
        let error = parse_rfc3339("2026-02-31T00:00:00Z").unwrap_err().to_string();
        assert!(error.contains("2026-02 has 28 days"), "{error}");
        assert!(parse_rfc3339("2026-04-31T00:00:00Z").is_err());
        assert!(parse_rfc3339("2028-02-29T00:00:00Z").is_ok(), "a leap year");
        assert!(parse_rfc3339("2026-12-31T23:59:59Z").is_ok());
        assert!(parse_rfc3339("2026-01-00T00:00:00Z").is_err());
    }
}
