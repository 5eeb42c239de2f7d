//! What pgrouter knows about functions, and the configurable policy (Pgpool-II's two lists).

use std::collections::HashSet;

/// Built-in functions that write, change cluster state, or only make sense on the session that
/// started something (sequence state, transaction ids): always the primary.
const WRITE_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "currval",
    "lastval",
    "txid_current",
    "txid_current_if_assigned",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_notify",
    "set_config",
    "setseed",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_switch_wal",
    "pg_promote",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_replication_slot_advance",
    "pg_logical_emit_message",
    "pg_import_system_collations",
    "pg_log_backend_memory_contexts",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "lowrite",
    "loread",
    "dblink",
    "dblink_exec",
    "pg_stat_statements_reset",
];

/// Prefixes of built-in function families that write or lock.
const WRITE_PREFIXES: &[&str] = &[
    "pg_advisory_",
    "pg_try_advisory_",
    "lo_",
    "pg_create_",
    "pg_drop_",
    "pg_copy_",
    "pg_stat_reset",
    "pg_replication_origin_",
    "pg_file_",
    "dblink_",
];

/// Session-level advisory locks: taking one pins the session to the primary.
const SESSION_ADVISORY_LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Functions and views that name server backends by pid. A split session has a backend on each
/// of two nodes; these go to the primary so that `pg_backend_pid()` followed by
/// `pg_terminate_backend(pid)` (which writes, so runs on the primary) agree.
const BACKEND_IDENTITY_FUNCTIONS: &[&str] = &[
    "pg_backend_pid",
    "pg_stat_get_activity",
    "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids",
];
const BACKEND_IDENTITY_VIEWS: &[&str] = &["pg_stat_activity", "pg_locks"];

/// Whether `name` is in `list`, as PostgreSQL matches unquoted names (case-insensitively).
fn listed(list: &[&str], name: &str) -> bool {
    list.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// True for a function or view that names server backends (see `BACKEND_IDENTITY_FUNCTIONS`).
pub(crate) fn names_backends(name: &str, view: bool) -> bool {
    let list = if view {
        BACKEND_IDENTITY_VIEWS
    } else {
        BACKEND_IDENTITY_FUNCTIONS
    };
    listed(list, name)
}

/// Built-ins besides `set_config` (see `statement.rs`) whose effect outlives the transaction in
/// the session: a pooled connection that ran them is reset before another client uses it.
/// Sequence functions are not here: a `serial` default sets `currval`/`lastval` state invisibly,
/// so the proxy marks every connection that ran a write instead (its `SequenceMark`).
const SESSION_STATE_FUNCTIONS: &[&str] = &[
    "setseed",
    "dblink_connect",
    "dblink_connect_u",
    "dblink_disconnect",
    "dblink_open",
];

/// True for built-ins whose effect outlives the transaction in the session (besides
/// `set_config`, which `statement.rs` reads argument by argument).
pub(crate) fn keeps_session_state(name: &str) -> bool {
    listed(SESSION_STATE_FUNCTIONS, name)
}

/// Built-ins that are safe on a replica, including some PostgreSQL marks VOLATILE although they
/// change nothing (`random`, `pg_is_in_recovery`, `clock_timestamp`, …). No catalog look-up is
/// needed for these.
const KNOWN_READ_FUNCTIONS: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "bool_and",
    "bool_or",
    "every",
    "stddev",
    "variance",
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "clock_timestamp",
    "timeofday",
    "random",
    "random_normal",
    "gen_random_uuid",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "pg_is_in_recovery",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_is_wal_replay_paused",
    "pg_get_wal_replay_pause_state",
    "inet_server_port",
    "inet_server_addr",
    "inet_client_addr",
    "inet_client_port",
    "version",
    "current_setting",
    "current_database",
    "current_schema",
    "current_schemas",
    "current_user",
    "session_user",
    "current_catalog",
    "current_role",
    "user",
    "pg_postmaster_start_time",
    "pg_conf_load_time",
    "pg_wal_lsn_diff",
    "txid_current_snapshot",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "lower",
    "upper",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "substr",
    "substring",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "replace",
    "concat",
    "concat_ws",
    "format",
    "left",
    "right",
    "repeat",
    "split_part",
    "position",
    "strpos",
    "md5",
    "encode",
    "decode",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_number",
    "date_trunc",
    "date_part",
    "extract",
    "age",
    "abs",
    "round",
    "ceil",
    "ceiling",
    "floor",
    "trunc",
    "mod",
    "power",
    "sqrt",
    "exp",
    "ln",
    "log",
    "sign",
    "generate_series",
    "unnest",
    "array_length",
    "cardinality",
    "array_to_string",
    "string_to_array",
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "row_to_json",
    "to_json",
    "to_jsonb",
    "json_array_elements",
    "jsonb_array_elements",
    "json_each",
    "jsonb_each",
    "jsonb_object_keys",
    "row_number",
    "rank",
    "dense_rank",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "ntile",
    "percent_rank",
    "cume_dist",
    "pg_typeof",
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_database_size",
    "pg_size_pretty",
    "has_table_privilege",
    "pg_get_viewdef",
    "pg_table_is_visible",
    "format_type",
    "obj_description",
    "col_description",
    "pg_get_expr",
    "pg_get_constraintdef",
    "pg_get_indexdef",
    "pg_get_userbyid",
    "regexp_replace",
    "regexp_matches",
    "regexp_split_to_table",
    "lpad",
    "rpad",
    "initcap",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "to_hex",
    "chr",
    "ascii",
    "make_date",
    "make_interval",
    "make_timestamp",
    "date",
    "array_position",
    "array_remove",
    "array_append",
    "array_cat",
    "jsonb_set",
    "jsonb_path_query",
    "starts_with",
    "reverse",
    "translate",
];

/// True for built-ins known to be safe on a replica (and so to change nothing).
pub(crate) fn is_known_read(name: &str) -> bool {
    listed(KNOWN_READ_FUNCTIONS, name)
}

/// A configured list of functions: names, and regular expressions a whole name must match (as
/// Pgpool-II's function lists), all case-insensitive.
#[derive(Debug, Clone, Default)]
pub struct FunctionList {
    names: HashSet<String>,
    patterns: Vec<regex::Regex>,
}

impl FunctionList {
    /// A list of `names` (lower-cased here) and `patterns` (compiled by the caller, anchored and
    /// case-insensitive as it wants them).
    pub fn new(names: impl IntoIterator<Item = String>, patterns: Vec<regex::Regex>) -> Self {
        Self {
            names: names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
            patterns,
        }
    }

    /// Whether `name` (lower-case) is listed or matches a pattern.
    fn contains(&self, name: &str) -> bool {
        self.names.contains(name) || self.patterns.iter().any(|p| p.is_match(name))
    }
}

/// What classification may assume about functions.
#[derive(Debug, Clone, Default)]
pub struct FunctionPolicy {
    /// Extra functions that write (`routing.write_functions`).
    pub write_functions: FunctionList,
    /// If set (`routing.read_only_functions`), only these functions may appear in a statement sent
    /// to a replica; any other sends it to the primary and no catalog look-up is made.
    pub read_only_functions: Option<FunctionList>,
}

/// What is known about one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    /// Safe on a replica.
    Read,
    /// Must run on the primary.
    Write {
        /// A session-level advisory lock (pins the session).
        session_lock: bool,
    },
    /// Not allowed by `read_only_functions`.
    NotListedReadOnly,
    /// Unknown: its volatility must be looked up.
    Unknown,
}

impl FunctionPolicy {
    /// A policy from configuration lists (names are matched case-insensitively).
    pub fn from_lists(write: &[String], read_only: Option<&[String]>) -> Self {
        Self {
            write_functions: FunctionList::new(write.iter().cloned(), Vec::new()),
            read_only_functions: read_only
                .map(|l| FunctionList::new(l.iter().cloned(), Vec::new())),
        }
    }

    /// Classifies a function by its unqualified name (already case-folded as PostgreSQL would).
    pub fn kind(&self, name: &str) -> FunctionKind {
        let lower = name.to_ascii_lowercase();
        let name = lower.as_str();
        if self.write_functions.contains(name)
            || WRITE_FUNCTIONS.contains(&name)
            || WRITE_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            return FunctionKind::Write {
                session_lock: SESSION_ADVISORY_LOCKS.contains(&name),
            };
        }
        if let Some(allowed) = &self.read_only_functions {
            return if allowed.contains(name) {
                FunctionKind::Read
            } else {
                FunctionKind::NotListedReadOnly
            };
        }
        if KNOWN_READ_FUNCTIONS.contains(&name) {
            FunctionKind::Read
        } else {
            FunctionKind::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let p = FunctionPolicy::from_lists(&["my_writer".into()], None);
        let w = FunctionKind::Write {
            session_lock: false,
        };
        let cases = [
            ("nextval", w),
            ("NEXTVAL", w),
            (
                "pg_advisory_lock",
                FunctionKind::Write { session_lock: true },
            ),
            ("pg_advisory_xact_lock", w),
            (
                "pg_try_advisory_lock_shared",
                FunctionKind::Write { session_lock: true },
            ),
            ("lo_import", w),
            ("pg_create_physical_replication_slot", w),
            ("my_writer", w),
            ("count", FunctionKind::Read),
            ("pg_is_in_recovery", FunctionKind::Read),
            ("my_function", FunctionKind::Unknown),
        ];
        for (name, kind) in cases {
            assert_eq!(p.kind(name), kind, "{name}");
        }
        let strict = FunctionPolicy::from_lists(&[], Some(&["count".into()]));
        let patterns = FunctionPolicy {
            write_functions: FunctionList::new(
                Vec::new(),
                vec![regex::Regex::new("(?i)^(?:audit_.*|log_write)$").unwrap()],
            ),
            read_only_functions: None,
        };
        assert_eq!(patterns.kind("Audit_Insert"), w);
        assert_eq!(patterns.kind("log_write"), w);
        assert_eq!(
            patterns.kind("my_audit_insert"),
            FunctionKind::Unknown,
            "anchored"
        );
        assert_eq!(strict.kind("count"), FunctionKind::Read);
        assert_eq!(strict.kind("lower"), FunctionKind::NotListedReadOnly);
        assert_eq!(strict.kind("nextval"), w);
    }
}
