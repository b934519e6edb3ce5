//! Durations and sizes as written in configuration files and flags.
//!
//! Durations have one grammar everywhere, core's (Go's syntax, which
//! Litestream's files are written in, plus `d` for days and bare seconds).

use anyhow::{Context, Result, bail};
pub use distributary_core::duration::{format_duration, parse_duration};

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

    /// A configuration key reads durations as every flag does: the same
    /// inputs are taken or refused alike, the error naming the key and
    /// carrying core's reason.
    #[test]
    fn config_keys_take_the_one_duration_grammar() {
        distributary_core::duration::assert_reads_as_core("l0-retention", |text| {
            let yaml =
                format!("dbs:\n  - path: /a.db\n    replicas:\n      - url: file:///x\nl0-retention: {text:?}\n");
            let config = crate::config::Config::parse(&yaml).map_err(|e| format!("{e:#}"))?;
            Ok(config.dbs[0].compaction.l0_retention.expect("set"))
        });
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert!(parse_size("1TiB").is_err());
    }
}
