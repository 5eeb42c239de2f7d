//! What one server connection owes, as a value with no I/O: the replies still to come for the
//! client's requests and for pgrouter's own insertions, and which of them the client must not
//! see. Only its methods change it: [`Ledger::sent`] for each client message written,
//! `injected_*` for each message of pgrouter's own, and one method per server message that
//! matters ([`Ledger::ready_for_query`], [`Ledger::error`], …), which says what to do with it.
//!
//! The protocol facts it encodes: every `Query`, `Sync` and `FunctionCall` is answered by exactly
//! one `ReadyForQuery`; a `Sync` sent during COPY FROM STDIN is ignored by the server (and owes
//! nothing); after an error in an extended-protocol segment the server skips to `Sync`, so the
//! `ParseComplete`/`CloseComplete` of messages pgrouter slipped in before the client's next ones
//! never come. Replies pgrouter must hide are matched to what it sent in order (a queue, not
//! a count): a client's `Parse` and one of pgrouter's in the same segment each get their own
//! `ParseComplete`, and only pgrouter's is hidden.

use pgrouter_protocol::backend as be;
use pgrouter_protocol::frontend as fe;
use std::collections::VecDeque;

/// A `ParseComplete` or `CloseComplete` still to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Completion {
    /// The client segment (counted from the connection's first) it belongs to.
    segment: u64,
    /// `ParseComplete` or `CloseComplete`.
    tag: u8,
    /// It answers a message of pgrouter's own: the client must not see it.
    hidden: bool,
}

/// The bookkeeping of one server connection.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Ledger {
    /// `ReadyForQuery` messages owed for client requests.
    pending: u32,
    /// `ReadyForQuery` messages owed for requests pgrouter injected; everything up to and
    /// including each of them is swallowed.
    swallow: u32,
    /// `ParseComplete` / `CloseComplete` replies to come, in order, each the client's or
    /// pgrouter's own.
    completions: VecDeque<Completion>,
    /// Client segments (through `Sync`, a `Query`, a `FunctionCall`, or a `Sync` pgrouter sent
    /// to close one) sent and answered: an error belongs to segment `answered`.
    sent_segments: u64,
    answered_segments: u64,
    /// `ReadyForQuery` messages owed for `Sync`s pgrouter sent to close a segment the client left
    /// open: only the `ReadyForQuery` itself is hidden.
    hide_ready: u32,
    /// `Sync`s sent since the last `Execute`/`Query`: if that started a COPY FROM STDIN, the
    /// server ignores them and they owe no `ReadyForQuery`.
    syncs_since_execute: u32,
    /// Extended-protocol messages were sent since the last `Sync`.
    in_segment: bool,
    /// The open segment has a `Bind` or `Execute`: it holds a portal or an implicit transaction,
    /// so everything up to its `Sync` must follow it.
    segment_runs: bool,
    /// An `ErrorResponse` arrived for the current client request.
    saw_error: bool,
    /// The server sent a FATAL error: the connection is going away.
    said_fatal: bool,
    /// How many entries of the session's replay log this connection has run.
    replayed: usize,
    /// The client ran something here that may have left session state pgrouter does not track
    /// (see `unit::leaves_session_clean`).
    untracked_state: bool,
}

/// What a `ReadyForQuery` from the server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    /// It ends a request pgrouter injected (it, and all before it, stays hidden).
    Swallowed,
    /// It ends a segment pgrouter closed for the client: hidden.
    Hidden,
    /// The client's: `done` when nothing more is owed (the unit is complete), `failed` when the
    /// request it ends had an error.
    Client {
        /// No further reply is owed and no segment is open.
        done: bool,
        /// The request failed.
        failed: bool,
    },
}

/// Whose an `ErrorResponse` from the server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorFor {
    /// It answers a request pgrouter injected.
    Injected,
    /// Nothing was asked (the connection was terminated while idle): not the client's business.
    Unsolicited,
    /// The client's request.
    Client,
}

impl Ledger {
    /// A client message was written to the connection.
    pub(crate) fn sent(&mut self, tag: u8) {
        match tag {
            fe::QUERY => {
                self.pending += 1;
                self.sent_segments += 1;
                self.syncs_since_execute = 0;
                // A simple query ends an open extended-protocol segment.
                self.in_segment = false;
                self.segment_runs = false;
            }
            fe::SYNC => {
                self.pending += 1;
                self.sent_segments += 1;
                self.syncs_since_execute += 1;
                self.in_segment = false;
                self.segment_runs = false;
            }
            fe::FUNCTION_CALL => {
                self.pending += 1;
                self.sent_segments += 1;
            }
            fe::COPY_DONE | fe::COPY_FAIL => {
                // Syncs sent during copy-in were ignored by the server.
                self.pending = self.pending.saturating_sub(self.syncs_since_execute);
                self.sent_segments = self
                    .sent_segments
                    .saturating_sub(u64::from(self.syncs_since_execute));
                self.syncs_since_execute = 0;
            }
            fe::BIND => {
                self.in_segment = true;
                self.segment_runs = true;
            }
            fe::EXECUTE => {
                self.in_segment = true;
                self.segment_runs = true;
                self.syncs_since_execute = 0;
            }
            fe::PARSE => {
                self.in_segment = true;
                self.expect(be::PARSE_COMPLETE, false);
            }
            fe::CLOSE => {
                self.in_segment = true;
                self.expect(be::CLOSE_COMPLETE, false);
            }
            fe::DESCRIBE | fe::FLUSH => self.in_segment = true,
            _ => {}
        }
    }

    fn expect(&mut self, tag: u8, hidden: bool) {
        self.completions.push_back(Completion {
            segment: self.sent_segments,
            tag,
            hidden,
        });
    }

    /// Whether a `ParseComplete`/`CloseComplete` is pgrouter's own (to hide): the first one of
    /// that kind still to come says.
    fn completed(&mut self, tag: u8) -> bool {
        if self.swallow > 0 {
            // It answers a request of pgrouter's own (those go before the client's messages).
            return true;
        }
        match self.completions.iter().position(|c| c.tag == tag) {
            Some(i) => self.completions.remove(i).is_some_and(|c| c.hidden),
            None => false,
        }
    }

    /// The segment now answered failed: the server skips to its `Sync`, so the completions
    /// still expected in it never come.
    fn segment_failed(&mut self) {
        let segment = self.answered_segments;
        self.completions.retain(|c| c.segment != segment);
    }

    /// pgrouter sent a whole request of its own (a simple query, or `Parse`… `Sync`): its
    /// answer, through its `ReadyForQuery`, is swallowed. Only into a connection that owes the
    /// client nothing (everything up to it is swallowed): the session never pipelines its own
    /// requests behind the client's (a deferred `BEGIN` waits, replays happen when a connection
    /// is taken up). The property test below holds it to that.
    pub(crate) fn injected_request(&mut self) {
        self.swallow += 1;
    }

    /// pgrouter slipped a `Parse` into the client's segment: its `ParseComplete` is hidden.
    pub(crate) fn injected_parse(&mut self) {
        self.expect(be::PARSE_COMPLETE, true);
    }

    /// pgrouter slipped a `Close` of a statement into the client's segment: its `CloseComplete`
    /// is hidden.
    pub(crate) fn injected_close(&mut self) {
        self.expect(be::CLOSE_COMPLETE, true);
    }

    /// Closes a segment of only `Parse`/`Describe`/`Flush` that the client left open, with a
    /// `Sync` of pgrouter's whose `ReadyForQuery` is hidden. Returns false (and changes nothing)
    /// when that is not safe: the segment runs something, or replies are still owed.
    pub(crate) fn close_idle_segment(&mut self) -> bool {
        if !self.in_segment || self.segment_runs || self.pending > 0 || self.swallow > 0 {
            return false;
        }
        self.in_segment = false;
        self.hide_ready += 1;
        self.sent_segments += 1;
        true
    }

    /// Everything that follows, through the next `ReadyForQuery`, belongs to something pgrouter
    /// sent: the client must not see it.
    pub(crate) fn swallowing(&self) -> bool {
        self.swallow > 0
    }

    /// A `ReadyForQuery` arrived.
    pub(crate) fn ready_for_query(&mut self) -> Ready {
        if self.swallow > 0 {
            self.swallow -= 1;
            return Ready::Swallowed;
        }
        if self.hide_ready > 0 {
            // An error in that segment was the answer to it, not to the client's next request.
            self.hide_ready -= 1;
            self.saw_error = false;
            self.answered_segments += 1;
            return Ready::Hidden;
        }
        self.pending = self.pending.saturating_sub(1);
        self.answered_segments += 1;
        Ready::Client {
            done: self.pending == 0 && !self.in_segment,
            failed: std::mem::take(&mut self.saw_error),
        }
    }

    /// An `ErrorResponse` arrived (`fatal`: its severity is FATAL or PANIC).
    pub(crate) fn error(&mut self, fatal: bool) -> ErrorFor {
        self.said_fatal |= fatal;
        if self.swallow > 0 {
            return ErrorFor::Injected;
        }
        if !self.busy() {
            return ErrorFor::Unsolicited;
        }
        self.saw_error = true;
        self.segment_failed();
        ErrorFor::Client
    }

    /// A `ParseComplete` arrived: true when it answers pgrouter's own `Parse` (hide it).
    pub(crate) fn parse_complete(&mut self) -> bool {
        self.completed(be::PARSE_COMPLETE)
    }

    /// A `CloseComplete` arrived: true when it answers pgrouter's own `Close` (hide it).
    pub(crate) fn close_complete(&mut self) -> bool {
        self.completed(be::CLOSE_COMPLETE)
    }

    /// A held read was refused (its `ErrorResponse` just arrived) and goes to another
    /// connection: the rest of its answer here, through its `ReadyForQuery`, is swallowed.
    pub(crate) fn request_moved_elsewhere(&mut self) {
        self.segment_failed();
        self.pending = self.pending.saturating_sub(1);
        self.answered_segments += 1;
        self.swallow += 1;
        self.in_segment = false;
    }

    /// True while the connection owes replies or is inside an extended-protocol segment: the
    /// session may not switch to another connection.
    pub(crate) fn busy(&self) -> bool {
        self.pending > 0 || self.swallow > 0 || self.hide_ready > 0 || self.in_segment
    }

    /// `ReadyForQuery` messages owed for the client's requests.
    pub(crate) fn owed(&self) -> u32 {
        self.pending
    }

    /// An error arrived for the current client request.
    pub(crate) fn saw_error(&self) -> bool {
        self.saw_error
    }

    /// Nothing of pgrouter's own is still to be hidden and the server did not end the
    /// connection: it may go back to its pool (with `busy()` false).
    pub(crate) fn reusable(&self) -> bool {
        self.completions.is_empty() && !self.said_fatal
    }

    /// How many entries of the session's replay log this connection has run.
    pub(crate) fn replayed(&self) -> usize {
        self.replayed
    }

    /// The connection has run the session's replay log up to `entries`.
    pub(crate) fn set_replayed(&mut self, entries: usize) {
        self.replayed = entries;
    }

    /// The client ran something here that may leave state pgrouter does not track.
    pub(crate) fn note_untracked_state(&mut self) {
        self.untracked_state = true;
    }

    /// Whether the connection must be reset (`pool.reset_query`) before another client gets
    /// it: it ran replayed settings of this session, or something that may have left state
    /// pgrouter cannot see. Plain reads and writes leave it clean.
    pub(crate) fn needs_reset(&self) -> bool {
        self.replayed > 0 || self.untracked_state
    }

    /// The open segment holds a portal or an implicit transaction.
    pub(crate) fn in_running_segment(&self) -> bool {
        self.in_segment && self.segment_runs
    }
}

#[cfg(test)]
mod tests;
