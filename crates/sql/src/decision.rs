//! What classification decides.

/// Where a statement may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Provably read-only: a replica (or the primary, by weight) may run it.
    Read,
    /// Must run on the primary.
    Primary,
    /// Changes session state: runs on the session's current backend and is replayed on every
    /// other backend the session has or opens later.
    AllBackends,
}

impl Route {
    /// Lower-case name, for logs, metrics and `pgrouter explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Read => "read",
            Route::Primary => "primary",
            Route::AllBackends => "all",
        }
    }
}

/// The rule that made the decision; named in `pgrouter explain` and in metrics (bounded set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// `SELECT`, `VALUES`, `TABLE`, set operations, read-only CTEs and subqueries.
    ReadOnlyQuery,
    /// `SHOW`.
    Show,
    /// `EXPLAIN` (without `ANALYZE` of a write).
    Explain,
    /// `COPY … TO`.
    CopyTo,
    /// `/* pgrouter: replica */` on a read-only statement.
    HintReplica,
    /// `/* pgrouter: primary */` or `/*NO LOAD BALANCE*/`.
    HintPrimary,
    /// DML, DDL or a utility statement.
    Write,
    /// `SELECT … FOR UPDATE/NO KEY UPDATE/SHARE/KEY SHARE`.
    LockingClause,
    /// `SELECT … INTO`.
    SelectInto,
    /// A CTE containing `INSERT`/`UPDATE`/`DELETE`/`MERGE`.
    DataModifyingCte,
    /// A function known to write or to have side effects (built-in list or `write_functions`).
    WriteFunction,
    /// `read_only_functions` is set and the statement calls a function not in it.
    FunctionNotReadOnly,
    /// Names server backends by pid (`pg_backend_pid()`, `pg_stat_activity`, `pg_locks`): on the
    /// primary, so that a session sees its own primary connection consistently.
    BackendIdentity,
    /// `EXPLAIN ANALYZE` (or `EXPLAIN`) of a statement that writes.
    ExplainWrite,
    /// `BEGIN`/`START TRANSACTION`, `COMMIT`, `ROLLBACK`, savepoints.
    TransactionControl,
    /// `SET`, `RESET`, `DISCARD`, `PREPARE`, `DEALLOCATE`.
    SessionState,
    /// `EXECUTE` of an SQL-level prepared statement: the proxy routes it as the prepared one.
    ExecutePrepared,
    /// `LISTEN`, `UNLISTEN`, `NOTIFY`.
    Notification,
    /// Cursor statements (`DECLARE`, `FETCH`, `MOVE`, `CLOSE`).
    Cursor,
    /// The parser did not understand the statement.
    Unparsable,
    /// Nothing but whitespace and comments.
    Empty,
    /// Not read whole: a message larger than `routing.max_parse_size`, or one that arrived while
    /// the client buffer budget was spent, streams to the primary as it arrives.
    Streamed,
    /// A read whose text matches `routing.primary_query_patterns` (Pgpool-II's
    /// `primary_routing_query_pattern_list`).
    PrimaryPattern,
}

impl Rule {
    /// Every rule, in declaration order (`rule as usize` indexes it): for per-rule counters.
    pub const ALL: [Rule; 23] = [
        Rule::ReadOnlyQuery,
        Rule::Show,
        Rule::Explain,
        Rule::CopyTo,
        Rule::HintReplica,
        Rule::HintPrimary,
        Rule::Write,
        Rule::LockingClause,
        Rule::SelectInto,
        Rule::DataModifyingCte,
        Rule::WriteFunction,
        Rule::FunctionNotReadOnly,
        Rule::BackendIdentity,
        Rule::ExplainWrite,
        Rule::TransactionControl,
        Rule::SessionState,
        Rule::ExecutePrepared,
        Rule::Notification,
        Rule::Cursor,
        Rule::Unparsable,
        Rule::Empty,
        Rule::Streamed,
        Rule::PrimaryPattern,
    ];

    /// Kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::ReadOnlyQuery => "read-only-query",
            Rule::Show => "show",
            Rule::Explain => "explain",
            Rule::CopyTo => "copy-to",
            Rule::HintReplica => "hint-replica",
            Rule::HintPrimary => "hint-primary",
            Rule::Write => "write",
            Rule::LockingClause => "locking-clause",
            Rule::SelectInto => "select-into",
            Rule::DataModifyingCte => "data-modifying-cte",
            Rule::WriteFunction => "write-function",
            Rule::FunctionNotReadOnly => "function-not-read-only",
            Rule::BackendIdentity => "backend-identity",
            Rule::ExplainWrite => "explain-write",
            Rule::TransactionControl => "transaction-control",
            Rule::SessionState => "session-state",
            Rule::ExecutePrepared => "execute-prepared",
            Rule::Notification => "notification",
            Rule::Cursor => "cursor",
            Rule::Unparsable => "unparsable",
            Rule::Empty => "empty",
            Rule::Streamed => "streamed",
            Rule::PrimaryPattern => "primary-pattern",
        }
    }
}

/// Transaction control found in the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxControl {
    /// `BEGIN` / `START TRANSACTION`; `read_only` when declared `READ ONLY`.
    Begin {
        /// Declared `READ ONLY`.
        read_only: bool,
    },
    /// `SET TRANSACTION READ ONLY` (or `READ WRITE` when false).
    SetReadOnly(bool),
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT` (not `ROLLBACK TO SAVEPOINT`).
    Rollback,
}

/// How a `set_config(name, value, false)` is recorded for replay: this prefix, the quoted name,
/// `', '`, the quoted value, `', false)`. The proxy keys its replay log by the name, like `SET`.
pub const SET_CONFIG_REPLAY: &str = "SELECT pg_catalog.set_config('";

/// The statement that replays `set_config(name, value, false)` (see [`SET_CONFIG_REPLAY`]).
pub fn set_config_replay(name: &str, value: &str) -> String {
    let quote = |s: &str| s.replace('\'', "''");
    format!(
        "{SET_CONFIG_REPLAY}{}', '{}', false)",
        quote(name),
        quote(value)
    )
}

/// An argument of `set_config`: written in the statement, or a bind parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigArg {
    /// A string literal.
    Text(String),
    /// `$n`, as a 0-based parameter index.
    Param(usize),
}

/// A session-state change to replay on other backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionChange {
    /// A statement to run as is on other backends (`SET`, `RESET`, `SET ROLE`, …).
    Replay(String),
    /// `DISCARD ALL` (clears every replayed change and prepared statement).
    DiscardAll,
    /// SQL `PREPARE name AS …`: the statement text (to replay) and how its body routes.
    Prepare {
        /// Statement name, lower-cased unless quoted.
        name: String,
        /// The full `PREPARE` statement, to replay.
        sql: String,
        /// How `EXECUTE name` routes.
        route: Route,
    },
    /// SQL `DEALLOCATE name`, or every statement when `None`.
    Deallocate(Option<String>),
    /// `SET default_transaction_read_only = on|off` (session scope).
    DefaultReadOnly(bool),
    /// `set_config(name, value, false)` with a bind parameter for the name or the value
    /// (asyncpg's `set_config('jit', $1, false)`): the proxy reads the value from each `Bind`
    /// and records a [`SessionChange::Replay`] instead. Where it cannot, the session is pinned.
    SetConfigBound {
        /// The setting's name.
        name: ConfigArg,
        /// Its value.
        value: ConfigArg,
    },
}

/// Why the session must stay on the primary from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// A temporary table, view or sequence was created.
    TempObject,
    /// `LISTEN`.
    Listen,
    /// A session-level advisory lock was taken.
    AdvisoryLock,
    /// A `WITH HOLD` cursor was declared.
    HoldCursor,
    /// `set_config(…, false)` with arguments known only at run time (expressions, or bind
    /// parameters whose value cannot be read as text): the setting cannot be replayed elsewhere.
    SessionFunction,
    /// A named statement whose `Parse` streamed through (too large to keep): it cannot be
    /// prepared again on another server connection.
    StreamedStatement,
    /// The session's settings to replay on other server connections outgrew pgrouter's bound
    /// (1 MiB after compaction): it keeps its connection instead.
    ReplayLogFull,
}

impl PinReason {
    /// Name for logs and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            PinReason::TempObject => "temporary object",
            PinReason::Listen => "LISTEN",
            PinReason::AdvisoryLock => "session advisory lock",
            PinReason::HoldCursor => "WITH HOLD cursor",
            PinReason::SessionFunction => "set_config() with run-time arguments",
            PinReason::StreamedStatement => "named statement too large to keep",
            PinReason::ReplayLogFull => "session settings past pgrouter's replay bound",
        }
    }
}

/// What a statement does to the session besides producing results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Transaction control, in statement order.
    pub transaction: Vec<TxControl>,
    /// Session-state changes, in statement order.
    pub session: Vec<SessionChange>,
    /// Set when the statement pins the session to the primary.
    pub pin: Option<PinReason>,
    /// For `EXECUTE name`: the prepared statement's name.
    pub executes: Option<String>,
    /// The statement may change session state that pgrouter cannot see or replay: it calls a
    /// user-defined function (which may run `SET` or `set_config`), a built-in that keeps
    /// per-session state (`setseed`, `dblink_connect`), or is `CALL`/`DO`. A pooled server
    /// connection that ran it is reset before another client gets it.
    pub untracked: bool,
}

/// The result of classifying one statement string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Where it may run.
    pub route: Route,
    /// Why.
    pub rule: Rule,
    /// What it does to the session.
    pub effects: Effects,
    /// For `Read` decisions: functions whose volatility must still be checked (user-defined or
    /// not known to pgrouter); a volatile one sends the statement to the primary.
    pub check_functions: Vec<String>,
}

impl Classification {
    /// A decision with no effects.
    pub fn new(route: Route, rule: Rule) -> Self {
        Self {
            route,
            rule,
            effects: Effects::default(),
            check_functions: Vec::new(),
        }
    }
}

#[cfg(test)]
mod rule_index_tests {
    use super::Rule;

    #[test]
    fn all_rules_are_listed_in_declaration_order() {
        for (i, rule) in Rule::ALL.iter().enumerate() {
            assert_eq!(*rule as usize, i, "{}", rule.as_str());
        }
    }
}
