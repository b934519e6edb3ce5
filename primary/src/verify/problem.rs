//! What `verify` reports: the kinds of problem, and one problem as printed
//! and as `--json` carries it.

use super::Verifier;

/// What is wrong, for machines (`--json`'s `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Kind {
    /// An object that something names (or a chain needs) is not there.
    Missing,
    /// The object's bytes fail a check: checksum, layout, frame decoding.
    Corrupt,
    /// The object does not continue its chain: name, range, generation.
    Discontinuous,
    /// Two checksums of the same state disagree.
    Checksum,
    /// The manifest or the index says something else than the object.
    Disagrees,
    /// A kept snapshot's restore chain does not reach the newest state.
    Unreachable,
    /// An object of the layout that nothing reaches (`--list`).
    Orphan,
    /// A key that is not a name of the layout (`--list`).
    Stray,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Corrupt => "corrupt",
            Kind::Discontinuous => "discontinuous",
            Kind::Checksum => "checksum",
            Kind::Disagrees => "disagrees",
            Kind::Unreachable => "unreachable",
            Kind::Orphan => "orphan",
            Kind::Stray => "stray",
        }
    }
}

/// One problem found.
#[derive(Clone, Debug, serde::Serialize)]
pub(super) struct Problem {
    pub(super) key: String,
    pub(super) kind: Kind,
    pub(super) message: String,
}

impl Verifier<'_> {
    /// Reports a problem: printed at once, or kept for `--json`.
    pub(super) fn problem(&mut self, kind: Kind, key: &str, message: impl Into<String>) {
        let problem = Problem { key: key.to_string(), kind, message: message.into() };
        if !self.json {
            println!("{}: {}: {}", kind.as_str(), problem.key, problem.message);
        }
        self.problems.push(problem);
    }
}

/// An error's message without the "verb KEY" it starts with (the problem
/// line names the key already).
pub(super) fn cause(error: &dyn std::fmt::Display, key: &str) -> String {
    let text = error.to_string();
    if let Some(at) = text.find(key)
        && let Some((_, cause)) = text[at + key.len()..].split_once(": ")
    {
        return cause.to_string();
    }
    text
}
