//! What a session remembers so that it can move between server connections without the client
//! noticing: transaction status, pins, session changes to replay, prepared statements.

use crate::context::SequenceMark;
use bytes::Bytes;
use pgrouter_protocol::backend::TransactionStatus;
use pgrouter_sql::{Classification, PinReason, Route, SessionChange, TxControl};
use std::collections::HashMap;
use std::sync::Arc;

/// Past this many entries the replay log is compacted.
pub(crate) const REPLAY_LOG_LIMIT: usize = 256;

/// A replay log still larger than this after compaction (statement text, in bytes) stops
/// growing: the session is pinned to its connection instead (nothing needs replaying then),
/// so a session's settings cost at most this much memory.
pub(crate) const REPLAY_LOG_MAX_BYTES: usize = 1 << 20;

/// `SET [SESSION] name …` and `RESET name` touch one parameter: the key under which only the last
/// one matters.
fn parameter_key(sql: &str) -> Option<String> {
    // `set_config(name, value, false)` as pgrouter records it (see pgrouter-sql): the same key as
    // `SET name`.
    if let Some(rest) = sql.strip_prefix(pgrouter_sql::decision::SET_CONFIG_REPLAY) {
        let name = rest.split_once("', ")?.0;
        return (!name.contains('\'')).then(|| name.to_ascii_lowercase());
    }
    let mut words = sql.split_whitespace().map(str::to_ascii_lowercase);
    let verb = words.next()?;
    let mut name = words.next()?;
    if verb == "set" && name == "session" {
        name = words.next()?;
    }
    match (verb.as_str(), name.as_str()) {
        (_, "role" | "all" | "local" | "transaction") => None,
        ("set" | "reset", _) => Some(name.trim_end_matches(['=', ';']).to_owned()),
        _ => None,
    }
}

/// Identifies a statement's definition (query text and parameter types), whatever its name and
/// whichever client made it: a pooled server connection that already holds a statement under
/// this name with this version can run it for any client without a new `Parse`.
fn statement_version(parse: &[u8], name_len: usize) -> u64 {
    use std::hash::{Hash, Hasher};
    // The Parse message: tag, length, name, NUL, then the definition.
    let definition = parse.get(5 + name_len + 1..).unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    definition.hash(&mut h);
    h.finish()
}

/// A protocol-level prepared statement as the client created it.
#[derive(Debug)]
pub(crate) struct StoredStatement {
    /// The client's complete `Parse` message, replayed on other connections.
    pub(crate) parse: Bytes,
    /// How statements using it route.
    pub(crate) route: Route,
    /// The definition's identity ([`statement_version`]): distinguishes re-definitions of the
    /// same name, and lets clients share what a pooled connection has prepared.
    pub(crate) version: u64,
    /// How its text was classified: its effects on the session apply each time it runs.
    pub(crate) classification: Arc<Classification>,
}

/// Session state that outlives any one server connection.
#[derive(Debug)]
pub(crate) struct SessionState {
    /// As last reported by the server (or implied by a deferred `BEGIN`).
    pub(crate) tx_status: TransactionStatus,
    /// Set once the session must stay on the primary.
    pub(crate) pin: Option<PinReason>,
    /// `default_transaction_read_only` for the session.
    pub(crate) default_read_only: bool,
    /// Session-scope statements, in order, replayed on connections opened or used later.
    pub(crate) replay: Vec<String>,
    /// SQL-level `PREPARE`d statements: how `EXECUTE name` routes.
    pub(crate) sql_prepared: HashMap<String, Route>,
    /// Protocol-level statements by name (`""` is the unnamed one). Changed only through
    /// [`Self::store_statement`], [`Self::remove_statement`] and [`Self::clear_statements`], which
    /// keep `statement_bytes`.
    pub(crate) statements: HashMap<String, Arc<StoredStatement>>,
    /// Bytes of the `Parse` messages kept in `statements`.
    statement_bytes: usize,
    /// Statements that are one of Pgpool-II's `SHOW POOL_*`, prepared by pgrouter itself (never
    /// on a server). A name is in at most one of this and `statements`: storing or removing a
    /// statement of that name forgets it here.
    pub(crate) pgpool_statements: HashMap<String, crate::console::pgpool::PgpoolShow>,
    /// Changes made inside the current transaction, kept until it commits.
    tx_changes: Vec<SessionChange>,
    /// The replay log's length when `compact_replay` last looked at it.
    compaction_checked: usize,
    /// The current transaction failed at some point (its changes are discarded).
    tx_failed: bool,
    /// This session's number, for [`SequenceMark`]s.
    id: u64,
    /// Units that may have set sequence state (writes) so far.
    writes: u64,
    /// A statement that writes has run in this session (for `routing.reads_after_write`).
    pub(crate) has_written: bool,
    /// A write ran since the session last learnt the primary's WAL position (read-your-writes).
    pub(crate) write_unconfirmed: bool,
    /// The WAL position the session's reads must see: its own writes' (read-your-writes) and
    /// `pgrouter.min_lsn`'s.
    pub(crate) min_lsn: u64,
    /// The position after the session's last write, as last learnt (`SHOW
    /// pgrouter.last_write_lsn`).
    pub(crate) last_write_lsn: u64,
    /// `pgrouter.max_staleness`: reads only on replicas less far behind.
    pub(crate) max_staleness: Option<std::time::Duration>,
}

/// Session numbers: unique for the life of the process.
static NEXT_SESSION_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl SessionState {
    pub(crate) fn new() -> Self {
        Self {
            tx_status: TransactionStatus::Idle,
            pin: None,
            default_read_only: false,
            replay: Vec::new(),
            sql_prepared: HashMap::new(),
            statements: HashMap::new(),
            statement_bytes: 0,
            pgpool_statements: HashMap::new(),
            tx_changes: Vec::new(),
            compaction_checked: 0,
            tx_failed: false,
            id: NEXT_SESSION_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            writes: 0,
            has_written: false,
            write_unconfirmed: false,
            min_lsn: 0,
            last_write_lsn: 0,
            max_staleness: None,
        }
    }

    /// The mark a connection carries when it holds this session's current sequence state.
    pub(crate) fn sequence_mark(&self) -> SequenceMark {
        SequenceMark {
            session: self.id,
            write: self.writes,
        }
    }

    /// Counts a unit that may set sequence state; returns the mark its connection now carries.
    /// Any other connection with an older mark of this session is stale from now on.
    pub(crate) fn wrote(&mut self) -> SequenceMark {
        self.writes += 1;
        self.sequence_mark()
    }

    /// Remembers a client `Parse` (`name_len`: the name's length in the message); returns the
    /// version now current for the name.
    pub(crate) fn store_statement(
        &mut self,
        name: &str,
        name_len: usize,
        parse: Bytes,
        route: Route,
        classification: Arc<Classification>,
    ) -> u64 {
        let version = statement_version(&parse, name_len);
        self.keep_statement(name, parse, route, version, classification);
        version
    }

    /// Remembers a client `Parse` that streamed through without being kept: its `parse` is
    /// empty, so it is never prepared on another connection, and its version is one no
    /// definition shares. Returns that version.
    pub(crate) fn store_streamed_statement(
        &mut self,
        name: &str,
        classification: Arc<Classification>,
    ) -> u64 {
        let version = rand::random();
        self.keep_statement(name, Bytes::new(), Route::Primary, version, classification);
        version
    }

    fn keep_statement(
        &mut self,
        name: &str,
        parse: Bytes,
        route: Route,
        version: u64,
        classification: Arc<Classification>,
    ) {
        self.pgpool_statements.remove(name);
        self.statement_bytes += parse.len();
        let old = self.statements.insert(
            name.to_owned(),
            Arc::new(StoredStatement {
                parse,
                route,
                version,
                classification,
            }),
        );
        if let Some(old) = old {
            self.statement_bytes -= old.parse.len();
        }
    }

    /// Forgets a statement (closed, deallocated, or the unnamed one replaced by a query).
    pub(crate) fn remove_statement(&mut self, name: &str) {
        // Every simple query forgets the unnamed statement: skip the hashing when none is kept.
        if self.statements.is_empty() && self.pgpool_statements.is_empty() {
            return;
        }
        self.pgpool_statements.remove(name);
        if let Some(old) = self.statements.remove(name) {
            self.statement_bytes -= old.parse.len();
        }
    }

    /// Forgets every statement (`DEALLOCATE ALL`, `DISCARD ALL`).
    pub(crate) fn clear_statements(&mut self) {
        self.pgpool_statements.clear();
        self.statements.clear();
        self.statement_bytes = 0;
    }

    /// Makes `name` one of Pgpool-II's commands prepared by pgrouter: any statement of that name
    /// is forgotten first, so a server connection that still has one gets it closed before the
    /// name is used there (a `Bind` then fails on the server, never runs the old statement).
    pub(crate) fn store_pgpool_statement(
        &mut self,
        name: &str,
        command: crate::console::pgpool::PgpoolShow,
    ) {
        self.remove_statement(name);
        self.pgpool_statements.insert(name.to_owned(), command);
    }

    /// Bytes of the statement definitions kept for the session.
    pub(crate) fn statement_bytes(&self) -> usize {
        self.statement_bytes
    }

    /// Applies the effects of requests that completed; `failed` when an error occurred, `status`
    /// the transaction status reported at the end.
    pub(crate) fn complete(
        &mut self,
        done: &[Arc<Classification>],
        failed: bool,
        status: TransactionStatus,
    ) {
        // Changes inside a transaction block (one that was open, or that these requests opened)
        // only last if it commits.
        let was_in_tx = self.tx_status != TransactionStatus::Idle
            || done.iter().any(|c| {
                c.effects
                    .transaction
                    .iter()
                    .any(|t| matches!(t, TxControl::Begin { .. }))
            });
        if status == TransactionStatus::Failed || failed {
            self.tx_failed = self.tx_failed || status != TransactionStatus::Idle || was_in_tx;
        }
        for c in done {
            if !failed {
                if let Some(pin) = c.effects.pin {
                    self.pin.get_or_insert(pin);
                }
            }
            for change in &c.effects.session {
                if failed {
                    continue;
                }
                if status == TransactionStatus::Idle && !was_in_tx {
                    self.apply(change.clone());
                } else {
                    self.tx_changes.push(change.clone());
                }
            }
        }
        if status == TransactionStatus::Idle {
            let committed = !self.tx_failed
                && !failed
                && done
                    .iter()
                    .flat_map(|c| c.effects.transaction.iter())
                    .all(|t| *t != TxControl::Rollback);
            let changes = std::mem::take(&mut self.tx_changes);
            if committed {
                for change in changes {
                    self.apply(change);
                }
            }
            self.tx_failed = false;
        }
        self.tx_status = status;
    }

    /// Shrinks the replay log once it grows past `REPLAY_LOG_LIMIT` entries, or as soon as a
    /// parameter is set again (an application that runs `SET` on every request would otherwise
    /// grow it forever). Keeps the last `SET`/`RESET`
    /// of each parameter and everything else in order; drops everything before a `RESET ALL` or
    /// `DISCARD ALL`. Returns the old length when it compacted.
    pub(crate) fn compact_replay(&mut self) -> Option<usize> {
        // Looked at once per new entry, not on every request.
        let grew = self.replay.len() != self.compaction_checked;
        self.compaction_checked = self.replay.len();
        if self.replay.len() <= REPLAY_LOG_LIMIT && !(grew && self.last_setting_repeats()) {
            if grew {
                self.bound_replay_log();
            }
            return None;
        }
        let old_len = self.replay.len();
        let start = self
            .replay
            .iter()
            .rposition(|s| {
                let u = s.to_ascii_uppercase();
                u == "DISCARD ALL" || u == "RESET ALL"
            })
            .unwrap_or(0);
        let mut seen = std::collections::HashSet::new();
        let mut kept: Vec<String> = Vec::new();
        for sql in self.replay[start..].iter().rev() {
            let repeated = parameter_key(sql).is_some_and(|key| !seen.insert(key));
            if !repeated {
                kept.push(sql.clone());
            }
        }
        kept.reverse();
        self.replay = kept;
        self.compaction_checked = self.replay.len();
        self.bound_replay_log();
        Some(old_len)
    }

    /// Pins the session once its compacted replay log is larger than [`REPLAY_LOG_MAX_BYTES`];
    /// from then on the log does not grow (see [`Self::apply`]).
    fn bound_replay_log(&mut self) {
        if self.pin.is_none()
            && self.replay.iter().map(String::len).sum::<usize>() > REPLAY_LOG_MAX_BYTES
        {
            tracing::info!(
                entries = self.replay.len(),
                "the session's settings to replay passed 1 MiB: it keeps its server connection"
            );
            self.pin = Some(PinReason::ReplayLogFull);
        }
    }

    /// Adds an entry to the replay log, unless the log reached its bound (the session is
    /// pinned then: its connection already ran everything, nothing will be replayed).
    fn record(&mut self, sql: String) {
        if self.pin != Some(PinReason::ReplayLogFull) {
            self.replay.push(sql);
        }
    }

    /// The newest entry sets a parameter an earlier entry set: the log can shrink now. An
    /// application that sets the same parameter in every transaction (a tenant id, say) would
    /// otherwise have every pooled connection replay hundreds of entries.
    fn last_setting_repeats(&self) -> bool {
        let Some((last, earlier)) = self.replay.split_last() else {
            return false;
        };
        let Some(key) = parameter_key(last) else {
            return false;
        };
        earlier
            .iter()
            .any(|s| parameter_key(s).as_deref() == Some(key.as_str()))
    }

    fn apply(&mut self, change: SessionChange) {
        match change {
            SessionChange::Replay(sql) => self.record(sql),
            SessionChange::DiscardAll => {
                // Every connection of the session must forget too: DISCARD ALL is replayed like any
                // other statement, and the log before it no longer matters to new connections, but
                // connections that replayed part of it must still see the DISCARD.
                self.record("DISCARD ALL".to_owned());
                self.sql_prepared.clear();
                self.default_read_only = false;
            }
            SessionChange::Prepare { name, sql, route } => {
                self.sql_prepared.insert(name, route);
                self.record(sql);
            }
            SessionChange::Deallocate(name) => match &name {
                // An SQL-level statement is in the replay log: the DEALLOCATE follows it there.
                Some(n) if self.sql_prepared.remove(n).is_some() => {
                    self.record(format!("DEALLOCATE \"{}\"", n.replace('"', "\"\"")));
                }
                // A protocol-level statement is forgotten; connections that still hold it close
                // it before its name is used again (see `relay::send`).
                Some(n) => {
                    self.remove_statement(n);
                }
                None => {
                    self.sql_prepared.clear();
                    self.clear_statements();
                    self.record("DEALLOCATE ALL".to_owned());
                }
            },
            SessionChange::DefaultReadOnly(on) => self.default_read_only = on,
            // Resolved from the `Bind` before it gets here (`unit::bound_classification`);
            // unresolved, the setting cannot be replayed: the session stays where it was made.
            SessionChange::SetConfigBound { .. } => {
                self.pin.get_or_insert(PinReason::SessionFunction);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parameter set again replaces its earlier entry at once, long before the size limit.
    #[test]
    fn a_setting_repeated_is_compacted_at_once() {
        let mut s = SessionState::new();
        s.replay.push("SET search_path = a".into());
        assert_eq!(s.compact_replay(), None);
        s.replay
            .push("SELECT pg_catalog.set_config('app.tenant', '1', false)".into());
        assert_eq!(s.compact_replay(), None);
        s.replay
            .push("SELECT pg_catalog.set_config('app.tenant', '2', false)".into());
        assert_eq!(s.compact_replay(), Some(3));
        assert_eq!(
            s.replay,
            vec![
                "SET search_path = a".to_string(),
                "SELECT pg_catalog.set_config('app.tenant', '2', false)".to_string(),
            ]
        );
        // Nothing new: nothing to look at again.
        assert_eq!(s.compact_replay(), None);
    }

    /// Settings that compaction cannot shrink (every one a different parameter) stop at the
    /// bound: the session is pinned and the log grows no more.
    #[test]
    fn replay_log_is_bounded_by_pinning() {
        let mut s = SessionState::new();
        let setting = |i: usize| format!("SET app.p{i} = '{}'", "v".repeat(1000));
        let mut i = 0;
        while s.pin.is_none() {
            s.apply(SessionChange::Replay(setting(i)));
            s.compact_replay();
            i += 1;
            assert!(i < 5000, "never pinned");
        }
        assert_eq!(s.pin, Some(PinReason::ReplayLogFull));
        let bytes: usize = s.replay.iter().map(String::len).sum();
        assert!(bytes > REPLAY_LOG_MAX_BYTES && bytes < REPLAY_LOG_MAX_BYTES + 2000);
        let len = s.replay.len();
        s.apply(SessionChange::Replay(setting(i)));
        s.apply(SessionChange::DiscardAll);
        assert_eq!(s.replay.len(), len, "pinned: nothing more is recorded");
    }

    #[test]
    fn replay_log_is_compacted() {
        let mut s = SessionState::new();
        s.replay.push("PREPARE q AS SELECT 1".into());
        for i in 0..300 {
            s.replay.push(format!("SET application_name = 'req{i}'"));
            s.replay
                .push(format!("SET SESSION statement_timeout = {i}"));
        }
        s.replay.push("RESET statement_timeout".into());
        for i in 0..10 {
            s.replay.push(format!(
                "SELECT pg_catalog.set_config('App.Tenant', '{i}', false)"
            ));
        }
        s.replay.push("SET app.tenant = 'last'".into());
        assert_eq!(s.compact_replay(), Some(613));
        assert_eq!(
            s.replay,
            vec![
                "PREPARE q AS SELECT 1".to_string(),
                "SET application_name = 'req299'".to_string(),
                "RESET statement_timeout".to_string(),
                "SET app.tenant = 'last'".to_string(),
            ]
        );
        assert_eq!(s.compact_replay(), None);
        for _ in 0..300 {
            s.replay.push("SET ROLE app".into());
        }
        s.replay.push("DISCARD ALL".into());
        s.replay.push("SET search_path = x".into());
        for _ in 0..300 {
            s.replay.push("SET search_path = y".into());
        }
        s.compact_replay();
        assert_eq!(
            s.replay,
            vec!["DISCARD ALL".to_string(), "SET search_path = y".to_string()]
        );
    }
}
