//! Showing a sync's or restore's progress on stderr: a bar redrawn in place
//! on a terminal, or one JSON object per line for tools. The command's
//! summary on stdout is the same either way (and alone without either).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Progress, ProgressFn};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressStyle {
    /// A bar on stderr, redrawn in place (for a terminal).
    Bar,
    /// One JSON object per line on stderr, at most one a second.
    Json,
}

/// What a command's `--progress` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressChoice {
    /// A bar when stderr is a terminal and the summary is not JSON.
    Auto,
    /// A bar, wherever stderr goes.
    Bar,
    /// JSON lines.
    Json,
    /// Nothing.
    None,
}

impl std::str::FromStr for ProgressChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(ProgressChoice::Auto),
            "bar" => Ok(ProgressChoice::Bar),
            "json" => Ok(ProgressChoice::Json),
            "none" => Ok(ProgressChoice::None),
            other => Err(format!("unknown progress style {other:?}: expected auto, bar, json or none")),
        }
    }
}

impl ProgressChoice {
    /// The style to show, for a command whose summary is JSON or not.
    pub fn style(self, json_summary: bool) -> Option<ProgressStyle> {
        use std::io::IsTerminal;
        match self {
            ProgressChoice::Auto if !json_summary && std::io::stderr().is_terminal() => Some(ProgressStyle::Bar),
            ProgressChoice::Bar => Some(ProgressStyle::Bar),
            ProgressChoice::Json => Some(ProgressStyle::Json),
            ProgressChoice::Auto | ProgressChoice::None => None,
        }
    }
}

/// Width of the bar itself, in characters.
const BAR_WIDTH: usize = 24;

/// A [`ProgressFn`] drawing `style` on stderr; `verb` names the work
/// ("restoring", "syncing"). A run that fetches nothing (a replica already
/// up to date) draws nothing; a bar ends its line with the run's last report.
pub fn progress_printer(style: ProgressStyle, verb: &'static str) -> ProgressFn {
    let started = Instant::now();
    // When the last line was written, if one was.
    let last = Mutex::new(None::<Instant>);
    Arc::new(move |p: &Progress| {
        if p.expected == 0 && p.fetched == 0 {
            return;
        }
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = started.elapsed();
        let mut stderr = std::io::stderr().lock();
        match style {
            ProgressStyle::Bar => {
                // \r and erase-line: the bar is redrawn where it stands.
                let _ = write!(stderr, "\r\x1b[2K{}", bar_line(verb, p, elapsed));
                if p.done {
                    let _ = writeln!(stderr);
                }
            }
            ProgressStyle::Json => {
                if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) && !p.done {
                    return;
                }
                let _ = writeln!(stderr, "{}", json_line(verb, p, elapsed));
            }
        }
        *last = Some(Instant::now());
        let _ = stderr.flush();
    })
}

/// `restoring [##########--------------]  42%  448.0/1058.2 MB  96.1 MB/s  ETA 6 s  109,375 pages  TXID 1000`
fn bar_line(verb: &str, p: &Progress, elapsed: Duration) -> String {
    let fraction = fraction(p);
    let filled = (fraction * BAR_WIDTH as f64).round() as usize;
    let bar = format!("{}{}", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled.min(BAR_WIDTH)));
    let rate = rate(p, elapsed);
    let eta = match eta(p, rate) {
        Some(seconds) => format!("ETA {}", seconds_text(seconds)),
        None => "ETA -".to_string(),
    };
    format!(
        "{verb} [{bar}] {:>3.0}%  {:.1}/{:.1} MB  {:.1} MB/s  {eta}  {} pages  TXID {}",
        fraction * 100.0,
        p.fetched as f64 / 1e6,
        p.expected.max(p.fetched) as f64 / 1e6,
        rate / 1e6,
        thousands(p.pages),
        p.txid.0,
    )
}

fn json_line(verb: &str, p: &Progress, elapsed: Duration) -> String {
    let rate = rate(p, elapsed);
    serde_json::json!({
        "progress": verb,
        "fetched_bytes": p.fetched,
        "expected_bytes": p.expected,
        "applied_bytes": p.bytes,
        "pages_written": p.pages,
        "objects": p.objects,
        "txid": p.txid.0,
        "bytes_per_second": rate.round() as u64,
        "eta_seconds": eta(p, rate),
        "elapsed_seconds": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
        "done": p.done,
    })
    .to_string()
}

/// The share done, by bytes received: applying follows close behind (a
/// large object is decoded as it arrives, small ones are a few ahead).
fn fraction(p: &Progress) -> f64 {
    if p.expected == 0 {
        return 0.0;
    }
    (p.fetched as f64 / p.expected as f64).clamp(0.0, 1.0)
}

fn rate(p: &Progress, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds < 0.05 { 0.0 } else { p.fetched as f64 / seconds }
}

fn eta(p: &Progress, rate: f64) -> Option<u64> {
    (p.expected > 0 && rate > 0.0).then(|| (p.expected.saturating_sub(p.fetched) as f64 / rate).ceil() as u64)
}

fn seconds_text(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TxId;

    fn at(fetched: u64, expected: u64, bytes: u64) -> Progress {
        Progress { txid: TxId(1000), objects: 1, bytes, fetched, expected, pages: 109_375, done: false }
    }

    #[test]
    fn the_bar_shows_share_sizes_rate_eta_pages_and_txid() {
        let line = bar_line("restoring", &at(448_000_000, 1_058_200_000, 0), Duration::from_secs(4));
        assert_eq!(
            line,
            "restoring [##########--------------]  42%  448.0/1058.2 MB  112.0 MB/s  ETA 6 s  109,375 pages  TXID 1000"
        );
    }

    #[test]
    fn an_unknown_total_shows_no_share_and_no_eta() {
        let line = bar_line("syncing", &at(0, 0, 0), Duration::from_millis(10));
        assert!(line.starts_with("syncing [------------------------]   0%  0.0/0.0 MB  0.0 MB/s  ETA -"), "{line}");
    }

    #[test]
    fn json_lines_carry_the_same_figures() {
        let line = json_line("restoring", &at(500, 1000, 400), Duration::from_secs(1));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["fetched_bytes"], 500);
        assert_eq!(value["expected_bytes"], 1000);
        assert_eq!(value["pages_written"], 109_375);
        assert_eq!(value["eta_seconds"], 1);
    }

    #[test]
    fn long_waits_are_written_in_minutes_and_hours() {
        assert_eq!(seconds_text(59), "59 s");
        assert_eq!(seconds_text(61), "1m01s");
        assert_eq!(seconds_text(3 * 3600 + 120), "3h02m");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
