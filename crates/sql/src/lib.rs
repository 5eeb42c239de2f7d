//! Statement classification: may this SQL run on a replica, and what does it do to the session?
//!
//! [`Classifier::classify`] takes one statement string (possibly several statements) and returns
//! a [`Classification`]:
//! - a [`Route`] (`Read`, `Primary` or `AllBackends`),
//! - the [`Rule`] that decided it,
//! - the statement's [`Effects`] on the session: transaction control, session state to replay on
//!   other backends, and features that pin the session to the primary.
//!
//! It parses with `sqlparser`'s PostgreSQL dialect. Anything it cannot parse or does not
//! recognise goes to the primary: a read sent to the primary is only slower, while a write sent
//! to a replica is an error.
//!
//! What it must not do: perform I/O, know protocol types, or keep session state. Decisions that
//! depend on the session (inside a transaction, pinned, …) are made by the proxy from the
//! classification.
//!
//! # Layout
//! - [`decision`]: the output types.
//! - [`functions`]: what is known about functions (built-in writers, safe volatile readers) and
//!   the configurable policy.
//! - [`hints`]: `/* pgrouter: primary */`-style hints in a leading comment.
//! - `statement`: the walk over the syntax tree.
//! - `fast`: a lexical fast path for plain `SELECT`s, which need no parse.
//! - [`cache`]: a bounded cache so repeated statements are not parsed again.

pub mod cache;
pub mod decision;
mod fast;
pub mod functions;
pub mod hints;
mod statement;

pub use cache::ClassificationCache;
pub use decision::{
    set_config_replay, Classification, ConfigArg, Effects, PinReason, Route, Rule, SessionChange,
    TxControl,
};
pub use functions::{FunctionList, FunctionPolicy};

/// Classifies statements under one function policy.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    policy: FunctionPolicy,
    /// Longer statements are not parsed (0: no limit).
    max_parse_len: usize,
    /// Reads whose text matches one of these go to the primary.
    primary_patterns: Vec<regex::Regex>,
}

impl Classifier {
    /// A classifier with the given function policy.
    pub fn new(policy: FunctionPolicy) -> Self {
        Self {
            policy,
            max_parse_len: 0,
            primary_patterns: Vec::new(),
        }
    }

    /// Reads whose whole text matches one of `patterns` (compiled by the caller, anchored and
    /// case-insensitive as it wants them) go to the primary, with rule `primary-pattern`.
    pub fn with_primary_patterns(mut self, patterns: Vec<regex::Regex>) -> Self {
        self.primary_patterns = patterns;
        self
    }

    /// Statements longer than `len` bytes are not parsed: parsing costs time in proportion to
    /// the length, on the thread that serves other clients too. They are classified as unparsable (the
    /// primary; their effects on the session unknown), after the lexical fast path.
    pub fn with_max_parse_len(mut self, len: usize) -> Self {
        self.max_parse_len = len;
        self
    }

    /// The function policy in use.
    pub fn policy(&self) -> &FunctionPolicy {
        &self.policy
    }

    /// True when the statement is a plain `SELECT` that the lexical fast path classifies as a
    /// read without parsing (no function call, subquery, locking clause, `INTO`, hint).
    pub fn is_plain_select(&self, sql: &str) -> bool {
        fast::is_plain_select(sql) && hints::leading_hint(sql).is_none()
    }

    /// Classifies a statement string. Never panics; unparsable input is `Primary`.
    pub fn classify(&self, sql: &str) -> Classification {
        let mut c = self.classify_statement(sql);
        if c.route == Route::Read
            && !self.primary_patterns.is_empty()
            && self.primary_patterns.iter().any(|p| p.is_match(sql.trim()))
        {
            c.route = Route::Primary;
            c.rule = Rule::PrimaryPattern;
        }
        c
    }

    fn classify_statement(&self, sql: &str) -> Classification {
        match fast::scan(sql) {
            Some(fast::Fast::PlainSelect) if hints::leading_hint(sql).is_none() => {
                return Classification::new(Route::Read, Rule::ReadOnlyQuery);
            }
            Some(fast::Fast::PlainDml) => return Classification::new(Route::Primary, Rule::Write),
            _ => {}
        }
        if self.max_parse_len > 0 && sql.len() > self.max_parse_len {
            let mut c = statement::unparsable(sql);
            // What it does to the session is unknown: its server connection is reset before
            // another client gets it.
            c.effects.untracked = true;
            return c;
        }
        let hint = hints::leading_hint(sql);
        let mut c = statement::classify(sql, &self.policy);
        match hint {
            Some(hints::Hint::Primary) if c.route == Route::Read => {
                c.route = Route::Primary;
                c.rule = Rule::HintPrimary;
            }
            Some(hints::Hint::Replica) if c.route == Route::Read => c.rule = Rule::HintReplica,
            _ => {}
        }
        c
    }
}

#[cfg(test)]
mod tests;
