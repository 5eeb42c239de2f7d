//! Turns a Pgpool-II configuration into pgrouter's: `pgpool.conf`, and optionally its
//! `pool_hba.conf` and `pool_passwd`, become one pgrouter YAML configuration, and every parameter
//! set in them is reported as mapped, not needed (and why) or unsupported (and why).
//!
//! Pure: it reads text and returns text. It must not read files or talk to servers (the binary
//! reads the files), and it must not guess: what has no faithful pgrouter equivalent is reported
//! as unsupported, never silently approximated.

pub mod conf;
pub mod hba;
pub mod passwd;
pub mod pgpool;

pub use pgpool::{import, Import, ImportError, Inputs};

/// What became of one parameter (or line) of the imported files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Carried over: to which pgrouter setting, and how.
    Mapped(String),
    /// pgrouter needs no such setting: why.
    NotNeeded(String),
    /// pgrouter cannot do what it asks: why, and what to do instead.
    Unsupported(String),
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLine {
    /// The parameter (`backend_hostname0`) or line (`pool_hba.conf:12`).
    pub what: String,
    /// What became of it.
    pub outcome: Outcome,
}

impl std::fmt::Display for ReportLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, text) = match &self.outcome {
            Outcome::Mapped(t) => ("mapped", t),
            Outcome::NotNeeded(t) => ("not needed", t),
            Outcome::Unsupported(t) => ("UNSUPPORTED", t),
        };
        write!(f, "{}: {kind}: {text}", self.what)
    }
}
