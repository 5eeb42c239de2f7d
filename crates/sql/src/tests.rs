//! The classification table: one row per case, with the rule that must decide it.

use super::*;
use proptest::prelude::*;

use Route::{AllBackends as All, Primary as P, Read as R};

fn classifier() -> Classifier {
    Classifier::new(FunctionPolicy::from_lists(&["audit_write".into()], None))
}

#[test]
fn classification_table() {
    #[rustfmt::skip]
    let cases: &[(&str, Route, Rule)] = &[
        // Reads.
        ("SELECT 1", R, Rule::ReadOnlyQuery),
        ("select * from t where id = $1", R, Rule::ReadOnlyQuery),
        ("SELECT inet_server_port(), pg_is_in_recovery()", R, Rule::ReadOnlyQuery),
        // Backends by pid: the session's primary connection, consistently.
        ("SELECT pg_backend_pid()", P, Rule::BackendIdentity),
        ("SELECT pid, state FROM pg_catalog.pg_stat_activity", P, Rule::BackendIdentity),
        ("SELECT * FROM pg_locks l JOIN t ON true", P, Rule::BackendIdentity),
        ("VALUES (1), (2)", R, Rule::ReadOnlyQuery),
        ("TABLE accounts", R, Rule::ReadOnlyQuery),
        ("SELECT a FROM t UNION SELECT b FROM u EXCEPT SELECT c FROM v", R, Rule::ReadOnlyQuery),
        ("WITH x AS (SELECT 1) SELECT * FROM x", R, Rule::ReadOnlyQuery),
        ("SELECT * FROM (SELECT count(*) FROM t) s WHERE EXISTS (SELECT 1 FROM u)", R, Rule::ReadOnlyQuery),
        ("SHOW search_path", R, Rule::Show),
        ("SHOW ALL", R, Rule::Show),
        ("EXPLAIN SELECT * FROM t", R, Rule::Explain),
        ("EXPLAIN ANALYZE SELECT * FROM t", R, Rule::Explain),
        ("COPY t TO STDOUT", R, Rule::CopyTo),
        ("COPY (SELECT * FROM t) TO STDOUT WITH (FORMAT csv)", R, Rule::CopyTo),
        ("  /* comment */ SELECT\n 1 -- trailing", R, Rule::ReadOnlyQuery),
        ("SeLeCt \"Col\" FROM \"Table\"", R, Rule::ReadOnlyQuery),
        ("SELECT abalance FROM pgbench_accounts WHERE aid = 42", R, Rule::ReadOnlyQuery),
        ("/* pgrouter: replica */ SELECT 1", R, Rule::HintReplica),
        ("BEGIN READ ONLY", R, Rule::TransactionControl),
        ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", R, Rule::TransactionControl),
        ("SELECT 1; SELECT 2", R, Rule::ReadOnlyQuery),
        // Hints forcing the primary.
        ("/* pgrouter: primary */ SELECT 1", P, Rule::HintPrimary),
        ("/*NO LOAD BALANCE*/ SELECT 1", P, Rule::HintPrimary),
        // Writes.
        ("INSERT INTO t VALUES (1)", P, Rule::Write),
        ("UPDATE t SET a = 1", P, Rule::Write),
        ("DELETE FROM t", P, Rule::Write),
        ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", P, Rule::Write),
        ("CREATE TABLE t (a int)", P, Rule::Write),
        ("ALTER TABLE t ADD COLUMN b int", P, Rule::Write),
        ("DROP TABLE t", P, Rule::Write),
        ("TRUNCATE t", P, Rule::Write),
        ("GRANT SELECT ON t TO u", P, Rule::Write),
        ("CALL my_proc()", P, Rule::Write),
        ("COPY t FROM STDIN", P, Rule::Write),
        ("VACUUM t", P, Rule::Write),
        ("ANALYZE t", P, Rule::Write),
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", P, Rule::Write),
        ("REFRESH MATERIALIZED VIEW mv", P, Rule::Unparsable),
        ("DO $$ BEGIN PERFORM 1; END $$", P, Rule::Unparsable),
        ("CREATE SEQUENCE s", P, Rule::Write),
        ("SELECT * INTO new_t FROM t", P, Rule::SelectInto),
        ("SELECT * FROM t FOR UPDATE", P, Rule::LockingClause),
        ("SELECT * FROM t FOR NO KEY UPDATE", P, Rule::LockingClause),
        ("SELECT * FROM t FOR SHARE", P, Rule::LockingClause),
        ("SELECT * FROM t FOR KEY SHARE SKIP LOCKED", P, Rule::LockingClause),
        ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", P, Rule::LockingClause),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", P, Rule::DataModifyingCte),
        ("WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i", P, Rule::DataModifyingCte),
        ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", P, Rule::ExplainWrite),
        ("EXPLAIN DELETE FROM t", P, Rule::ExplainWrite),
        ("SELECT 1; INSERT INTO t VALUES (1)", P, Rule::Write),
        ("INSERT INTO t VALUES (1); SELECT 1", P, Rule::Write),
        // Functions that write or have side effects.
        ("SELECT nextval('s')", P, Rule::WriteFunction),
        ("select NEXTVAL('s')", P, Rule::WriteFunction),
        ("SELECT pg_catalog.nextval('s')", P, Rule::WriteFunction),
        ("SELECT \"pg_catalog\".nextval('s')", P, Rule::WriteFunction),
        ("SELECT setval('s', 1)", P, Rule::WriteFunction),
        ("SELECT currval('s')", P, Rule::WriteFunction),
        ("SELECT pg_advisory_lock(1)", P, Rule::WriteFunction),
        ("SELECT pg_try_advisory_xact_lock(1)", P, Rule::WriteFunction),
        ("SELECT pg_advisory_unlock_all()", P, Rule::WriteFunction),
        ("SELECT txid_current()", P, Rule::WriteFunction),
        ("SELECT pg_current_xact_id()", P, Rule::WriteFunction),
        ("SELECT pg_notify('c', 'p')", P, Rule::WriteFunction),
        ("SELECT set_config('a.b', '1', false)", P, Rule::WriteFunction),
        ("SELECT lo_import('/tmp/x')", P, Rule::WriteFunction),
        ("SELECT lo_unlink(42)", P, Rule::WriteFunction),
        ("SELECT pg_terminate_backend(1)", P, Rule::WriteFunction),
        ("SELECT pg_cancel_backend(1)", P, Rule::WriteFunction),
        ("SELECT pg_reload_conf()", P, Rule::WriteFunction),
        ("SELECT pg_switch_wal()", P, Rule::WriteFunction),
        ("SELECT pg_create_physical_replication_slot('s')", P, Rule::WriteFunction),
        ("SELECT pg_create_logical_replication_slot('s', 'pgoutput')", P, Rule::WriteFunction),
        ("SELECT dblink_exec('conn', 'DELETE FROM t')", P, Rule::WriteFunction),
        ("SELECT pg_current_wal_lsn()", P, Rule::WriteFunction),
        ("SELECT * FROM nextval('s')", P, Rule::WriteFunction),
        ("SELECT id FROM t WHERE v > (SELECT nextval('s'))", P, Rule::WriteFunction),
        ("SELECT audit_write(1)", P, Rule::WriteFunction),
        ("SELECT AUDIT_WRITE(1)", P, Rule::WriteFunction),
        // Transactions.
        ("BEGIN", P, Rule::TransactionControl),
        ("START TRANSACTION", P, Rule::TransactionControl),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", P, Rule::TransactionControl),
        ("COMMIT", P, Rule::TransactionControl),
        ("END", P, Rule::TransactionControl),
        ("ROLLBACK", P, Rule::TransactionControl),
        ("SAVEPOINT a", P, Rule::TransactionControl),
        ("ROLLBACK TO SAVEPOINT a", P, Rule::TransactionControl),
        ("RELEASE SAVEPOINT a", P, Rule::TransactionControl),
        ("SET TRANSACTION READ ONLY", P, Rule::TransactionControl),
        // Session state.
        ("SET search_path = app, public", All, Rule::SessionState),
        ("SET statement_timeout TO '5s'", All, Rule::SessionState),
        ("SET SESSION work_mem = '64MB'", All, Rule::SessionState),
        ("SET TIME ZONE 'UTC'", All, Rule::SessionState),
        ("SET ROLE reporting", All, Rule::SessionState),
        ("SET SESSION AUTHORIZATION DEFAULT", All, Rule::SessionState),
        ("RESET search_path", All, Rule::SessionState),
        ("RESET ALL", All, Rule::SessionState),
        ("DISCARD ALL", All, Rule::SessionState),
        ("PREPARE q (int) AS SELECT $1", All, Rule::SessionState),
        ("DEALLOCATE q", All, Rule::SessionState),
        ("DEALLOCATE ALL", All, Rule::SessionState),
        ("SET LOCAL search_path = x", P, Rule::SessionState),
        ("EXECUTE q(1)", P, Rule::ExecutePrepared),
        // Notifications and cursors.
        ("LISTEN chan", P, Rule::Notification),
        ("UNLISTEN *", P, Rule::Notification),
        ("NOTIFY chan, 'x'", P, Rule::Notification),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", P, Rule::Cursor),
        ("FETCH 10 FROM c", P, Rule::Cursor),
        ("CLOSE c", P, Rule::Cursor),
        // Nothing, or nonsense.
        ("", R, Rule::Empty),
        ("  ;  -- nothing\n", R, Rule::Empty),
        ("SELEKT 1", P, Rule::Unparsable),
        ("SELECT (", P, Rule::Unparsable),
    ];
    let c = classifier();
    let mut failures = Vec::new();
    for (sql, route, rule) in cases {
        let got = c.classify(sql);
        if (got.route, got.rule) != (*route, *rule) {
            failures.push(format!(
                "{sql:?}: expected {} / {}, got {} / {}",
                route.as_str(),
                rule.as_str(),
                got.route.as_str(),
                got.rule.as_str()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn effects_table() {
    let c = classifier();
    let begin = |ro| vec![TxControl::Begin { read_only: ro }];
    assert_eq!(c.classify("BEGIN").effects.transaction, begin(false));
    assert_eq!(
        c.classify("BEGIN READ ONLY").effects.transaction,
        begin(true)
    );
    assert_eq!(
        c.classify("COMMIT").effects.transaction,
        vec![TxControl::Commit]
    );
    assert_eq!(
        c.classify("ROLLBACK").effects.transaction,
        vec![TxControl::Rollback]
    );
    assert!(c
        .classify("ROLLBACK TO SAVEPOINT a")
        .effects
        .transaction
        .is_empty());
    assert_eq!(
        c.classify("SET TRANSACTION READ ONLY").effects.transaction,
        vec![TxControl::SetReadOnly(true)]
    );
    assert_eq!(
        c.classify("BEGIN; INSERT INTO t VALUES (1); COMMIT")
            .effects
            .transaction,
        vec![TxControl::Begin { read_only: false }, TxControl::Commit]
    );

    let pins = [
        ("CREATE TEMP TABLE x (a int)", Some(PinReason::TempObject)),
        (
            "CREATE TEMPORARY TABLE x AS SELECT 1",
            Some(PinReason::TempObject),
        ),
        ("LISTEN chan", Some(PinReason::Listen)),
        ("SELECT pg_advisory_lock(1)", Some(PinReason::AdvisoryLock)),
        (
            "SELECT pg_try_advisory_lock(1, 2)",
            Some(PinReason::AdvisoryLock),
        ),
        ("SELECT pg_advisory_xact_lock(1)", None),
        (
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            Some(PinReason::HoldCursor),
        ),
        ("DECLARE c CURSOR FOR SELECT 1", None),
        ("CREATE TABLE x (a int)", None),
    ];
    for (sql, pin) in pins {
        assert_eq!(c.classify(sql).effects.pin, pin, "{sql}");
    }

    let set = c.classify("SET search_path = app");
    assert_eq!(
        set.effects.session,
        vec![SessionChange::Replay("SET search_path = app".into())]
    );
    assert_eq!(
        c.classify("SET default_transaction_read_only = on")
            .effects
            .session[1],
        SessionChange::DefaultReadOnly(true)
    );
    assert_eq!(
        c.classify("DISCARD ALL").effects.session,
        vec![SessionChange::DiscardAll]
    );
    assert_eq!(
        c.classify("DEALLOCATE ALL").effects.session,
        vec![SessionChange::Deallocate(None)]
    );
    match &c.classify("PREPARE Q1 (int) AS SELECT $1").effects.session[0] {
        SessionChange::Prepare { name, route, .. } => {
            assert_eq!(name, "q1");
            assert_eq!(*route, Route::Read);
        }
        other => panic!("{other:?}"),
    }
    match &c
        .classify("PREPARE w AS INSERT INTO t VALUES (1)")
        .effects
        .session[0]
    {
        SessionChange::Prepare { route, .. } => assert_eq!(*route, Route::Primary),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.classify("EXECUTE Q1(1)").effects.executes.as_deref(),
        Some("q1")
    );
}

#[test]
fn unknown_functions_are_reported_for_lookup() {
    let c = classifier();
    let got = c.classify("SELECT my_func(a), count(*) FROM t GROUP BY 1");
    assert_eq!(got.route, Route::Read);
    assert_eq!(got.check_functions, vec!["my_func".to_string()]);
    let strict = Classifier::new(FunctionPolicy::from_lists(&[], Some(&["count".into()])));
    assert_eq!(strict.classify("SELECT count(*) FROM t").route, Route::Read);
    let got = strict.classify("SELECT my_func(a) FROM t");
    assert_eq!(
        (got.route, got.rule),
        (Route::Primary, Rule::FunctionNotReadOnly)
    );
}

proptest! {
    /// The lexical fast path never disagrees with the parser: whatever it accepts, the parser
    /// (when it understands the statement at all) also finds read-only.
    #[test]
    fn fast_path_agrees_with_the_parser(
        cols in "[a-z_]{1,8}( *, *[a-z_]{1,8}){0,3}",
        table in "[a-z_]{1,10}|\"[a-z ]{1,8}\"",
        tail in "( WHERE [a-z]{1,5} *(=|<|>=) *('[a-z ;(]{0,6}'|[0-9]{1,4}))?( ORDER BY 1)?( LIMIT [0-9]{1,3})?( FOR UPDATE| INTO x)?",
    ) {
        let sql = format!("SELECT {cols} FROM {table}{tail}");
        let fast = crate::fast::is_plain_select(&sql);
        let full = crate::statement::classify(&sql, &FunctionPolicy::default());
        if fast && full.rule != Rule::Unparsable {
            prop_assert_eq!(full.route, Route::Read, "{}", sql);
        }
        if full.route != Route::Read && full.rule != Rule::Unparsable {
            prop_assert!(!fast, "{}", sql);
        }
    }

    /// Random and mutated SQL: never a panic, and anything unparsable goes to the primary.
    #[test]
    fn random_sql_never_panics(sql in "\\PC{0,200}") {
        let got = classifier().classify(&sql);
        if got.rule == Rule::Unparsable {
            prop_assert_ne!(got.route, Route::Read);
        }
    }

    #[test]
    fn mutated_sql_never_panics(base in proptest::sample::select(vec![
        "SELECT * FROM t WHERE a = 1",
        "INSERT INTO t VALUES (1, 'x')",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "SELECT nextval('s') FROM t FOR UPDATE",
        "BEGIN READ ONLY; SELECT 1; COMMIT",
    ]), cut in 0usize..60, insert in "[ ;'\"()$a-z0-9*/-]{0,5}") {
        let mut s = base.to_string();
        let at = cut.min(s.len());
        s.insert_str(at, &insert);
        let got = classifier().classify(&s);
        if got.rule == Rule::Unparsable {
            prop_assert_ne!(got.route, Route::Read);
        }
        // Whatever the mutation, a statement that still parses and contains a write keyword at
        // the top never becomes a plain read.
        if s.trim_start().to_ascii_uppercase().starts_with("INSERT") {
            prop_assert_ne!(got.route, Route::Read);
        }
    }
}

/// Session state changed through functions: set_config with literals is replayed, with run-time
/// arguments it pins; anything else that may keep state is `untracked` (reset in the pool).
#[test]
fn session_state_through_functions() {
    let c = classifier();
    let replay = |s: &str| vec![SessionChange::Replay(s.to_owned())];
    #[rustfmt::skip]
    let cases: &[(&str, Vec<SessionChange>, Option<PinReason>, bool)] = &[
        ("SELECT set_config('app.tenant', '42', false)",
            replay("SELECT pg_catalog.set_config('app.tenant', '42', false)"), None, false),
        ("select pg_catalog.SET_CONFIG('a.b', 'it''s', 'off')",
            replay("SELECT pg_catalog.set_config('a.b', 'it''s', false)"), None, false),
        ("SELECT set_config('app.tenant', '42', true)", vec![], None, false),
        ("SELECT set_config('app.tenant', $1, false)", vec![SessionChange::SetConfigBound {
            name: ConfigArg::Text("app.tenant".into()), value: ConfigArg::Param(0) }], None, false),
        ("SELECT set_config($2, $1, 'false')", vec![SessionChange::SetConfigBound {
            name: ConfigArg::Param(1), value: ConfigArg::Param(0) }], None, false),
        ("SELECT set_config('jit', $1, true)", vec![], None, false),
        ("SELECT set_config($1, $2, $3)", vec![], Some(PinReason::SessionFunction), false),
        ("SELECT set_config('a.b', $0, false)", vec![], Some(PinReason::SessionFunction), false),
        ("SELECT set_config('a.b', $1 || 'x', false)", vec![], Some(PinReason::SessionFunction), false),
        ("UPDATE t SET a = set_config('x.y', v, false)", vec![], Some(PinReason::SessionFunction), false),
        ("SELECT setseed(0.5)", vec![], None, true),
        ("INSERT INTO t VALUES (my_function(1))", vec![], None, true),
        ("UPDATE t SET a = my_function(1)", vec![], None, true),
        ("CALL my_procedure()", vec![], None, true),
        ("SELECT my_function(1)", vec![], None, false), // a read: pg_proc decides (check_functions)
        ("INSERT INTO t VALUES (nextval('s'), now())", vec![], None, false),
        ("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1", vec![], None, false),
        ("SELECT 1", vec![], None, false),
        ("PREPARE p AS SELECT set_config('a.b', '1', false)", vec![SessionChange::Prepare {
            name: "p".into(), sql: "PREPARE p AS SELECT set_config('a.b', '1', false)".into(), route: P }], None, false),
    ];
    for (sql, session, pin, untracked) in cases {
        let got = c.classify(sql);
        assert_eq!(&got.effects.session, session, "{sql}");
        assert_eq!(got.effects.pin, *pin, "{sql}");
        assert_eq!(got.effects.untracked, *untracked, "{sql}");
        if !session.is_empty() || pin.is_some() || *untracked {
            assert_ne!(got.route, R, "{sql} must not run on a replica");
        }
    }
}

#[test]
fn long_statements_are_not_parsed() {
    let classifier = Classifier::new(FunctionPolicy::default()).with_max_parse_len(1024);
    let subquery = format!(
        "SELECT a FROM t WHERE b = (SELECT max(c) FROM u) AND d IN ({})",
        (0..400)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(subquery.len() > 1024);
    let c = classifier.classify(&subquery);
    assert_eq!((c.route, c.rule), (Route::Primary, Rule::Unparsable));
    assert!(
        c.effects.untracked,
        "its effects on the session are unknown"
    );
    // The same statement under the limit is parsed and read-only.
    let c = Classifier::new(FunctionPolicy::default()).classify(&subquery);
    assert_eq!((c.route, c.rule), (Route::Read, Rule::ReadOnlyQuery));
    // Plain SELECTs (no parentheses) of any length still take the lexical fast path.
    let plain = format!(
        "SELECT a FROM t WHERE {}",
        (0..200)
            .map(|i| format!("id = {i}"))
            .collect::<Vec<_>>()
            .join(" OR ")
    );
    assert!(plain.len() > 1024);
    assert_eq!(classifier.classify(&plain).route, Route::Read);
    // Transaction control is still seen lexically.
    let begin = format!("BEGIN /* {} */", "x".repeat(2000));
    let c = classifier.classify(&begin);
    assert_eq!(
        c.effects.transaction,
        vec![TxControl::Begin { read_only: false }]
    );
}
