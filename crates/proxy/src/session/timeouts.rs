//! The session's timers: `client.idle_timeout`, `client.idle_transaction_timeout` and
//! `client.query_timeout`. Which one runs, and until when, is a pure function of the session's
//! facts ([`next`]); the relay loop sleeps until then and acts on what expired.

use std::time::Duration;
use tokio::time::Instant;

/// The configured limits (zero: off).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Limits {
    pub(super) idle: Duration,
    pub(super) idle_in_transaction: Duration,
    pub(super) query: Duration,
}

impl Limits {
    /// Whether any timer is on.
    pub(super) fn any(&self) -> bool {
        !(self.idle.is_zero() && self.idle_in_transaction.is_zero() && self.query.is_zero())
    }
}

/// What the session is doing, as far as the timers care.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts {
    /// Since when a server has owed an answer without pause; `None`: nothing is owed.
    pub(super) busy_since: Option<Instant>,
    /// When the query timeout's cancel request went out.
    pub(super) cancel_sent_at: Option<Instant>,
    /// A transaction is open.
    pub(super) in_transaction: bool,
    /// The last byte from the client or a server.
    pub(super) last_activity: Instant,
}

/// What expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expired {
    /// Idle outside a transaction: close (57P05).
    Idle,
    /// Idle inside a transaction: close, rolling it back (25P03).
    IdleInTransaction,
    /// The server has not answered in time: cancel the request.
    Query,
    /// The server ignored the cancel as long again: close the session.
    CancelIgnored,
}

/// The next deadline, and what expires then; `None`: no timer applies.
pub(super) fn next(limits: &Limits, facts: &Facts) -> Option<(Instant, Expired)> {
    let after = |since: Instant, limit: Duration| since.checked_add(limit);
    match (facts.busy_since, facts.cancel_sent_at) {
        _ if facts.busy_since.is_some() && limits.query.is_zero() => None,
        (Some(_), Some(sent)) => after(sent, limits.query).map(|t| (t, Expired::CancelIgnored)),
        (Some(since), None) => after(since, limits.query).map(|t| (t, Expired::Query)),
        (None, _) if facts.in_transaction => (!limits.idle_in_transaction.is_zero())
            .then(|| after(facts.last_activity, limits.idle_in_transaction))
            .flatten()
            .map(|t| (t, Expired::IdleInTransaction)),
        (None, _) => (!limits.idle.is_zero())
            .then(|| after(facts.last_activity, limits.idle))
            .flatten()
            .map(|t| (t, Expired::Idle)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_timer_runs() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let limits = Limits {
            idle: s(100),
            idle_in_transaction: s(10),
            query: s(5),
        };
        let facts = |busy: Option<u64>, cancel: Option<u64>, tx: bool, last: u64| Facts {
            busy_since: busy.map(|b| t0 + s(b)),
            cancel_sent_at: cancel.map(|c| t0 + s(c)),
            in_transaction: tx,
            last_activity: t0 + s(last),
        };
        #[rustfmt::skip]
        let cases = [
            ("idle, no transaction", limits, facts(None, None, false, 1), Some((101, Expired::Idle))),
            ("idle in a transaction", limits, facts(None, None, true, 1), Some((11, Expired::IdleInTransaction))),
            ("waiting for the server", limits, facts(Some(2), None, true, 3), Some((7, Expired::Query))),
            ("cancel sent, still waiting", limits, facts(Some(2), Some(7), false, 3), Some((12, Expired::CancelIgnored))),
            ("no query timeout: waiting is not idleness", Limits { query: s(0), ..limits }, facts(Some(2), None, false, 3), None),
            ("idle timeout off", Limits { idle: s(0), ..limits }, facts(None, None, false, 1), None),
            ("idle-in-transaction timeout off", Limits { idle_in_transaction: s(0), ..limits }, facts(None, None, true, 1), None),
            ("everything off", Limits::default(), facts(None, None, true, 1), None),
        ];
        for (what, limits, facts, expected) in cases {
            let got = next(&limits, &facts).map(|(t, e)| ((t - t0).as_secs(), e));
            assert_eq!(got, expected, "{what}");
        }
    }
}
