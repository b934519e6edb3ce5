//! Compactor settings found in a configuration file.
//!
//! Litestream compacts inside its replicator, so its files carry retention,
//! snapshot and level settings. Here the compactor is a separate program:
//! the Lambda by default, or `distributary compact` (in this process with
//! `compaction: local`). These settings are never dropped: they are kept per
//! database, and when the Lambda is the compactor `replicate` says at start
//! exactly what to set on it ([`lambda_instructions`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::DbConfig;
use super::units::format_duration;

/// Time between local compaction runs unless `retention-check-interval`
/// says otherwise: `distributary compact --watch`'s default.
pub const LOCAL_INTERVAL: Duration = Duration::from_secs(10);

/// Where compaction runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompactionMode {
    /// The Lambda (`infra/template.yaml`), triggered by uploads; or
    /// `distributary compact` where there is no Lambda. The default.
    #[default]
    Lambda,
    /// In the replicating process (`compaction: local`).
    Local,
}

/// One compactor setting. The names are `distributary compact`'s flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CompactionKey {
    /// `--l1-window`: width of the windows of L0 segments merged into one L1 segment.
    L1Window,
    /// `--snapshot-interval`: minimum time between snapshots.
    SnapshotInterval,
    /// `--snapshot-retention`: how long snapshots are kept.
    SnapshotRetention,
    /// `--l0-retention`: how long merged L0 segments stay for polling readers.
    L0Retention,
    /// `--interval`: time between compaction runs (`compact --watch`, or
    /// local compaction; the Lambda runs on every upload instead).
    Interval,
}

impl CompactionKey {
    /// Every setting, in the order messages list them.
    pub const ALL: [CompactionKey; 5] = [
        CompactionKey::L1Window,
        CompactionKey::SnapshotInterval,
        CompactionKey::SnapshotRetention,
        CompactionKey::L0Retention,
        CompactionKey::Interval,
    ];

    /// The `distributary compact` flag.
    pub fn flag(self) -> &'static str {
        match self {
            CompactionKey::L1Window => "--l1-window",
            CompactionKey::SnapshotInterval => "--snapshot-interval",
            CompactionKey::SnapshotRetention => "--snapshot-retention",
            CompactionKey::L0Retention => "--l0-retention",
            CompactionKey::Interval => "--interval",
        }
    }

    /// The Lambda's environment variable (`lambda/src/lib.rs`,
    /// `config_from_env`) and the `infra/template.yaml` parameter that sets
    /// it; `None` for the run interval, which the Lambda does not have.
    pub fn lambda(self) -> Option<(&'static str, &'static str)> {
        match self {
            CompactionKey::L1Window => Some(("DISTRIBUTARY_L1_WINDOW", "L1Window")),
            CompactionKey::SnapshotInterval => Some(("DISTRIBUTARY_SNAPSHOT_INTERVAL", "SnapshotInterval")),
            CompactionKey::SnapshotRetention => Some(("DISTRIBUTARY_SNAPSHOT_RETENTION", "SnapshotRetention")),
            CompactionKey::L0Retention => Some(("DISTRIBUTARY_L0_RETENTION", "L0Retention")),
            CompactionKey::Interval => None,
        }
    }

    /// When the stores of one database disagree, which value wins: the
    /// longest retention and the shortest interval, so nothing is kept for
    /// less time, or done less often, than one of them asked.
    fn longest_wins(self) -> bool {
        matches!(self, CompactionKey::SnapshotRetention | CompactionKey::L0Retention)
    }
}

/// The compactor settings of one database. `None` keeps the compactor's
/// default (`distributary compact --help`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionSettings {
    /// Where compaction runs.
    pub mode: CompactionMode,
    /// L1 window (Litestream 0.5 `levels[0].interval`).
    pub l1_window: Option<Duration>,
    /// Snapshot interval (`snapshot-interval`, `snapshot.interval`).
    pub snapshot_interval: Option<Duration>,
    /// Snapshot retention (`retention`, `snapshot.retention`).
    pub snapshot_retention: Option<Duration>,
    /// L0 retention (`l0-retention`).
    pub l0_retention: Option<Duration>,
    /// Time between compaction runs (`retention-check-interval`).
    pub interval: Option<Duration>,
    /// The configuration key each given setting was read from, for messages
    /// (`snapshot.retention`, `dbs[0].replicas[1].retention`).
    pub from: BTreeMap<CompactionKey, String>,
}

impl CompactionSettings {
    /// The value given for `key`.
    pub fn get(&self, key: CompactionKey) -> Option<Duration> {
        *self.slot_ref(key)
    }

    /// Records `value` for `key`, read from the configuration key `from`.
    pub(super) fn set(&mut self, key: CompactionKey, value: Duration, from: String) {
        *self.slot(key) = Some(value);
        self.from.insert(key, from);
    }

    /// True when no setting was given (the mode aside).
    pub fn is_empty(&self) -> bool {
        CompactionKey::ALL.iter().all(|&key| self.get(key).is_none())
    }

    /// The compactor's settings with these applied over its defaults, and
    /// the time between runs (`distributary compact`'s `--interval`
    /// default, 10 s, when not given): what `compaction: local` runs with.
    pub fn local_compactor(&self) -> (distributary_core::compact::CompactConfig, Duration) {
        let defaults = distributary_core::compact::CompactConfig::default();
        let config = distributary_core::compact::CompactConfig {
            l1_window: self.l1_window.unwrap_or(defaults.l1_window),
            snapshot_interval: self.snapshot_interval.unwrap_or(defaults.snapshot_interval),
            snapshot_retention: self.snapshot_retention.unwrap_or(defaults.snapshot_retention),
            l0_retention: self.l0_retention.unwrap_or(defaults.l0_retention),
            ..defaults
        };
        (config, self.interval.unwrap_or(LOCAL_INTERVAL))
    }

    /// The environment variables to set on the Lambda, with their values,
    /// for the settings that were given (the run interval has none: the
    /// Lambda runs on every upload).
    pub fn lambda_settings(&self) -> Vec<(&'static str, String)> {
        CompactionKey::ALL.iter().filter_map(|&key| Some((key.lambda()?.0, format_duration(self.get(key)?)))).collect()
    }

    /// `self`, with the settings it lacks taken from `defaults` (a
    /// database's own over the file's global ones).
    pub(super) fn or(mut self, defaults: &CompactionSettings) -> CompactionSettings {
        for key in CompactionKey::ALL {
            if self.get(key).is_none()
                && let Some(value) = defaults.get(key)
            {
                self.set(key, value, defaults.from[&key].clone());
            }
        }
        self
    }

    /// Folds in the settings of another store of the same database; returns
    /// a description of each disagreement, with the value kept.
    pub(super) fn merge_store(&mut self, other: &CompactionSettings) -> Vec<String> {
        let mut conflicts = Vec::new();
        for key in CompactionKey::ALL {
            let Some(theirs) = other.get(key) else { continue };
            let their_key = other.from[&key].clone();
            match self.get(key) {
                None => self.set(key, theirs, their_key),
                Some(ours) if ours == theirs => {}
                Some(ours) => {
                    let take_theirs = if key.longest_wins() { theirs > ours } else { theirs < ours };
                    let ours_from = self.from[&key].clone();
                    if take_theirs {
                        self.set(key, theirs, their_key.clone());
                    }
                    conflicts.push(format!(
                        "{ours_from} = {} and {their_key} = {} differ; the compactor keeps one value per database: {} ({})",
                        format_duration(ours),
                        format_duration(theirs),
                        format_duration(self.get(key).expect("set above")),
                        if key.longest_wins() { "the longest retention" } else { "the shortest interval" },
                    ));
                }
            }
        }
        conflicts
    }

    fn slot(&mut self, key: CompactionKey) -> &mut Option<Duration> {
        match key {
            CompactionKey::L1Window => &mut self.l1_window,
            CompactionKey::SnapshotInterval => &mut self.snapshot_interval,
            CompactionKey::SnapshotRetention => &mut self.snapshot_retention,
            CompactionKey::L0Retention => &mut self.l0_retention,
            CompactionKey::Interval => &mut self.interval,
        }
    }

    fn slot_ref(&self, key: CompactionKey) -> &Option<Duration> {
        match key {
            CompactionKey::L1Window => &self.l1_window,
            CompactionKey::SnapshotInterval => &self.snapshot_interval,
            CompactionKey::SnapshotRetention => &self.snapshot_retention,
            CompactionKey::L0Retention => &self.l0_retention,
            CompactionKey::Interval => &self.interval,
        }
    }
}

/// What to set on the Lambda for the databases whose compactor it is and
/// whose configuration gave compactor settings: one line per distinct set
/// of values, naming the databases. `replicate` logs these once at start.
pub fn lambda_instructions(dbs: &[DbConfig]) -> Vec<String> {
    // Databases with the same settings share a line (one function serves them all).
    let mut groups: Vec<(&CompactionSettings, Vec<&Path>)> = Vec::new();
    for db in dbs.iter().filter(|db| db.compaction.mode == CompactionMode::Lambda && !db.compaction.is_empty()) {
        let wanted = db.compaction.lambda_settings();
        match groups.iter_mut().find(|(settings, _)| settings.lambda_settings() == wanted) {
            Some((_, paths)) => paths.push(&db.path),
            None => groups.push((&db.compaction, vec![&db.path])),
        }
    }
    groups
        .into_iter()
        .filter(|(settings, _)| !settings.lambda_settings().is_empty())
        .map(|(settings, paths)| {
            // The settings the Lambda has, with their values and variables.
            let given: Vec<(CompactionKey, String, (&str, &str))> = CompactionKey::ALL
                .into_iter()
                .filter_map(|key| Some((key, format_duration(settings.get(key)?), key.lambda()?)))
                .collect();
            let variables: Vec<String> = given
                .iter()
                .map(|(key, value, (variable, _))| format!("{variable}={value} (from {})", settings.from[key]))
                .collect();
            let parameters: Vec<&str> = given.iter().map(|(_, _, (_, parameter))| *parameter).collect();
            let flags: Vec<String> = given.iter().map(|(key, value, _)| format!("{} {value}", key.flag())).collect();
            let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            format!(
                "the compactor is the Lambda: set {} on the function (infra/template.yaml parameter{} {}) for {}; \
                 without the Lambda, run `distributary compact --watch {} STORE_URL`, or set `compaction: local`",
                variables.join(", "),
                if parameters.len() == 1 { "" } else { "s" },
                parameters.join(", "),
                paths.join(", "),
                flags.join(" "),
            )
        })
        .collect()
}
