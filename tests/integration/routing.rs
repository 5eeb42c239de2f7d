//! Read/write splitting observed from real clients: every statement reports where it ran with
//! `inet_server_port()` and `pg_is_in_recovery()`.

use crate::harness::{cluster, connect, psql, Cluster, Router};
use std::sync::OnceLock;

/// A router whose primary serves no reads (weight 0), so every read must land on a replica.
/// The pooling mode a routing test runs under: every routing rule must hold in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    Session,
    Transaction,
}

/// One router per pooling mode, reads on the replicas only, over tables and functions made once.
/// Replicas serve reads however far behind, and a read after the session's write waits up to
/// 5 s for a replica to have it (see `router_in`).
const NO_LAG_LIMIT: &str =
    "routing: {max_replica_lag_bytes: 0, max_replica_lag: 0s, read_your_writes_wait: 5s}\n";

fn router_in(pooling: Pooling) -> Option<&'static Router> {
    static SESSION: OnceLock<Option<Router>> = OnceLock::new();
    static TRANSACTION: OnceLock<Option<Router>> = OnceLock::new();
    static SETUP: OnceLock<()> = OnceLock::new();
    // These tests share the cluster with tests that write a lot (pgbench, the drivers): a
    // replica briefly past the lag limit, or slower than the default read-your-writes wait,
    // would take reads to the primary, which is not what they are about (the limits and the
    // wait are tested in `ha/` and `read_your_writes.rs`).
    let (cell, pool) = match pooling {
        Pooling::Session => (&SESSION, ""),
        Pooling::Transaction => (&TRANSACTION, "pool: {mode: transaction}\n"),
    };
    cell.get_or_init(|| {
        cluster().map(|c| {
            SETUP.get_or_init(|| {
                c.superuser_sql(
                    "CREATE TABLE IF NOT EXISTS routing_t (id serial PRIMARY KEY, v int); \
                     GRANT ALL ON routing_t TO app; GRANT ALL ON SEQUENCE routing_t_id_seq TO app; \
                     CREATE SEQUENCE IF NOT EXISTS routing_seq; GRANT ALL ON SEQUENCE routing_seq TO app; \
                     INSERT INTO routing_t (v) VALUES (0); \
                     CREATE OR REPLACE FUNCTION stable_fn() RETURNS int STABLE LANGUAGE sql AS 'SELECT 1'; \
                     CREATE OR REPLACE FUNCTION volatile_fn() RETURNS int VOLATILE LANGUAGE sql AS 'SELECT 2'; \
                     CREATE OR REPLACE FUNCTION writer_fn() RETURNS int LANGUAGE sql \
                       AS 'INSERT INTO routing_t (v) VALUES (9) RETURNING 1'; \
                     CREATE OR REPLACE FUNCTION sneaky_fn() RETURNS bigint STABLE LANGUAGE plpgsql \
                       AS $$ BEGIN RETURN nextval('routing_seq'); END $$",
                );
                c.wait_for_replicas();
            });
            Router::start_weighted(c, [0, 1, 1], &format!("{pool}{NO_LAG_LIMIT}"))
        })
    })
    .as_ref()
}

/// The session-pooling router, for tests that concern one mode only.
fn router() -> Option<&'static Router> {
    router_in(Pooling::Session)
}

/// Runs a routing test (`async fn name(pooling: Pooling)`) once per pooling mode.
macro_rules! in_both_pooling_modes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn session_pooling() {
                    super::$name(super::Pooling::Session).await
                }
                #[tokio::test]
                async fn transaction_pooling() {
                    super::$name(super::Pooling::Transaction).await
                }
            }
        )*
    };
}

in_both_pooling_modes!(
    statements_land_where_the_rules_say,
    transactions_run_on_one_node,
    session_state_follows_the_session,
    prepared_statements_move_between_nodes,
    session_features_pin_to_the_primary,
    write_hidden_in_a_stable_function_is_rerun_on_the_primary,
    read_of_an_unlogged_table_is_rerun_on_the_primary,
    a_compacted_replay_log_reaches_a_connection_that_ran_part_of_it,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    Primary,
    Replica,
}

fn ran(cluster: &Cluster, port: &str, in_recovery: &str) -> Ran {
    let port: u16 = port.parse().unwrap();
    match in_recovery {
        "t" | "true" => {
            assert!(cluster.replica_ports().contains(&port), "{port}");
            Ran::Replica
        }
        _ => {
            assert_eq!(port, cluster.primary_port());
            Ran::Primary
        }
    }
}

/// Runs SQL through the simple protocol and returns where the row carrying
/// `inet_server_port(), pg_is_in_recovery()` (the last row returned) came from.
async fn where_simple(client: &tokio_postgres::Client, sql: &str) -> Ran {
    let cluster = cluster().unwrap();
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = crate::harness::rows(&messages);
    let row = rows.last().unwrap_or_else(|| panic!("{sql}: no row"));
    ran(cluster, row.get(0).unwrap(), row.get(1).unwrap())
}

/// The same through the extended protocol (tokio-postgres prepares and binds).
async fn where_extended(client: &tokio_postgres::Client, sql: &str) -> Ran {
    let cluster = cluster().unwrap();
    let row = client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let port: i32 = row.get(0);
    let rec: bool = row.get(1);
    ran(cluster, &port.to_string(), if rec { "t" } else { "f" })
}

const WHERE: &str = "inet_server_port(), pg_is_in_recovery()";

/// One row per rule: the statement (which reports where it ran) and where it must run, through
/// both the simple and the extended protocol.
async fn statements_land_where_the_rules_say(pooling: Pooling) {
    let Some(router) = router_in(pooling) else {
        return;
    };
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    let cases: Vec<(String, Ran)> = vec![
        (format!("SELECT {WHERE}"), Ran::Replica),
        (format!("select {WHERE} from routing_t limit 1"), Ran::Replica),
        (format!("SELECT {WHERE} FROM (SELECT count(*) FROM routing_t) s"), Ran::Replica),
        (format!("WITH x AS (SELECT 1) SELECT {WHERE} FROM x"), Ran::Replica),
        (format!("SELECT {WHERE} UNION ALL SELECT {WHERE} LIMIT 1"), Ran::Replica),
        (format!("/* pgrouter: replica */ SELECT {WHERE}"), Ran::Replica),
        (format!("/* pgrouter: primary */ SELECT {WHERE}"), Ran::Primary),
        (format!("/*NO LOAD BALANCE*/ SELECT {WHERE}"), Ran::Primary),
        (format!("SELECT {WHERE}, nextval('routing_seq')"), Ran::Primary),
        (format!("SELECT {WHERE}, pg_catalog.NEXTVAL('routing_seq')"), Ran::Primary),
        (format!("SELECT {WHERE}, pg_try_advisory_xact_lock(42)"), Ran::Primary),
        (format!("SELECT {WHERE}, txid_current()"), Ran::Primary),
        (format!("SELECT {WHERE}, set_config('x.y', '1', false)"), Ran::Primary),
        (format!("SELECT {WHERE} FROM routing_t LIMIT 1 FOR UPDATE"), Ran::Primary),
        // User-defined functions: their volatility is looked up in pg_proc once.
        (format!("SELECT {WHERE}, stable_fn()"), Ran::Replica),
        (format!("SELECT {WHERE}, public.STABLE_FN()"), Ran::Replica),
        (format!("SELECT {WHERE}, volatile_fn()"), Ran::Primary),
        (format!("SELECT {WHERE}, writer_fn()"), Ran::Primary),
        (format!("SELECT {WHERE} FROM routing_t LIMIT 1 FOR SHARE"), Ran::Primary),
        (
            format!("WITH i AS (INSERT INTO routing_t (v) VALUES (1) RETURNING id) SELECT {WHERE} FROM i"),
            Ran::Primary,
        ),
        (format!("INSERT INTO routing_t (v) VALUES (2) RETURNING {WHERE}"), Ran::Primary),
        (format!("UPDATE routing_t SET v = v WHERE id = (SELECT min(id) FROM routing_t) RETURNING {WHERE}"), Ran::Primary),
    ];
    for (sql, expected) in &cases {
        assert_eq!(where_simple(&client, sql).await, *expected, "simple: {sql}");
        assert_eq!(
            where_extended(&client, sql).await,
            *expected,
            "extended: {sql}"
        );
    }
    // psql (libpq, simple protocol) sees the same.
    let (ok, out, err) = psql(
        &router.url("app", "app"),
        &["-c", "SELECT pg_is_in_recovery()"],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "t");
}

/// Transactions run on one node: read-write ones on the primary, declared read-only ones on a
/// replica.
async fn transactions_run_on_one_node(pooling: Pooling) {
    let Some(router) = router_in(pooling) else {
        return;
    };
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    let q = format!("SELECT {WHERE}");

    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(where_simple(&client, &q).await, Ran::Primary);
    client
        .batch_execute("INSERT INTO routing_t (v) VALUES (3)")
        .await
        .unwrap();
    assert_eq!(where_extended(&client, &q).await, Ran::Primary);
    client.batch_execute("COMMIT").await.unwrap();

    // BEGIN and more in one simple query: every statement is answered, in one transaction.
    let messages = client
        .simple_query(&format!("BEGIN; SELECT {WHERE}; SELECT 42"))
        .await
        .unwrap();
    let rows = crate::harness::rows(&messages);
    assert_eq!(rows.len(), 2, "both SELECTs answered");
    assert_eq!(rows[1].get(0), Some("42"));
    client.batch_execute("COMMIT").await.unwrap();

    client.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert_eq!(where_simple(&client, &q).await, Ran::Replica);
    assert_eq!(where_extended(&client, &q).await, Ran::Replica);
    client.batch_execute("COMMIT").await.unwrap();

    client
        .batch_execute("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .unwrap();
    assert_eq!(where_simple(&client, &q).await, Ran::Replica);
    client.batch_execute("ROLLBACK").await.unwrap();

    // BEGIN, then SET TRANSACTION READ ONLY as the first statement.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("SET TRANSACTION READ ONLY")
        .await
        .unwrap();
    assert_eq!(where_simple(&client, &q).await, Ran::Replica);
    let ro: String = client
        .query_one("SHOW transaction_read_only", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ro, "on");
    client.batch_execute("COMMIT").await.unwrap();

    // A write inside a read-only transaction fails as PostgreSQL says, not silently elsewhere.
    client.batch_execute("BEGIN READ ONLY").await.unwrap();
    let err = client
        .batch_execute("INSERT INTO routing_t (v) VALUES (4)")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
    );
    client.batch_execute("ROLLBACK").await.unwrap();

    // Session default read-only: plain BEGIN may go to a replica.
    client
        .batch_execute("SET default_transaction_read_only = on")
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(where_simple(&client, &q).await, Ran::Replica);
    client.batch_execute("COMMIT").await.unwrap();
    client
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(where_simple(&client, &q).await, Ran::Primary);
    client.batch_execute("COMMIT").await.unwrap();

    // After the transactions, autocommit reads are back on the replica; the data is there.
    assert_eq!(where_simple(&client, &q).await, Ran::Replica);
}

/// Session settings follow the session to every node, and SET LOCAL stays in its transaction.
async fn session_state_follows_the_session(pooling: Pooling) {
    let Some(router) = router_in(pooling) else {
        return;
    };
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    client
        .batch_execute("SET statement_timeout = '2345ms'; SET application_name = 'routing-test'")
        .await
        .unwrap();
    for sql in [
        "SELECT inet_server_port(), pg_is_in_recovery(), current_setting('statement_timeout'), current_setting('application_name')",
        "/* pgrouter: primary */ SELECT inet_server_port(), pg_is_in_recovery(), current_setting('statement_timeout'), current_setting('application_name')",
    ] {
        let rows = client.simple_query(sql).await.unwrap();
        let row = crate::harness::rows(&rows)[0];
        assert_eq!(row.get(2), Some("2345ms"), "{sql}");
        assert_eq!(row.get(3), Some("routing-test"), "{sql}");
    }
    // Hundreds of SETs (the replay log is compacted) still leave exactly the last value.
    let many: Vec<String> = (0..300)
        .map(|i| format!("SET application_name = 'many-{i}'"))
        .collect();
    client.batch_execute(&many.join("; ")).await.unwrap();
    for sql in [
        "SELECT current_setting('application_name')",
        "/* pgrouter: primary */ SELECT current_setting('application_name')",
    ] {
        let v: String = client.query_one(sql, &[]).await.unwrap().get(0);
        assert_eq!(v, "many-299", "{sql}");
    }
    client
        .batch_execute("RESET statement_timeout")
        .await
        .unwrap();
    let v: String = client
        .query_one("SELECT current_setting('statement_timeout')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "0");

    // SET inside a rolled-back transaction is undone, as in PostgreSQL.
    client
        .batch_execute("BEGIN; SET search_path = nowhere; ROLLBACK")
        .await
        .unwrap();
    let v: String = client
        .query_one("SHOW search_path", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "\"$user\", public");
    client
        .batch_execute("BEGIN; SET LOCAL work_mem = '7MB'; COMMIT")
        .await
        .unwrap();
    let v: String = client.query_one("SHOW work_mem", &[]).await.unwrap().get(0);
    assert_eq!(v, "4MB");
}

/// The replay log is compacted when a parameter is set again; a connection that had run only
/// part of the log then runs the compacted log from its start. A statement it already ran there
/// (a `PREPARE`) must not keep the later entries from running: the read below must see the last
/// `search_path`, on whichever node it runs.
async fn a_compacted_replay_log_reaches_a_connection_that_ran_part_of_it(pooling: Pooling) {
    let Some(router) = router_in(pooling) else {
        return;
    };
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    let show = "SELECT current_setting('search_path')";
    client
        .batch_execute("PREPARE compaction_q AS SELECT 1")
        .await
        .unwrap();
    client.query_one(show, &[]).await.unwrap();
    client
        .batch_execute("SET search_path = first_path")
        .await
        .unwrap();
    let v: String = client.query_one(show, &[]).await.unwrap().get(0);
    assert_eq!(v, "first_path");
    // Set again: the log is compacted to (PREPARE, SET second_path).
    client
        .batch_execute("SET search_path = second_path")
        .await
        .unwrap();
    for sql in [
        show,
        "/* pgrouter: primary */ SELECT current_setting('search_path')",
    ] {
        let v: String = client.query_one(sql, &[]).await.unwrap().get(0);
        assert_eq!(v, "second_path", "{sql}");
    }
    let one: i32 = client
        .query_one("EXECUTE compaction_q", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
}

/// Prepared statements move between nodes: prepared on the primary (inside a transaction), then
/// executed on a replica, and SQL-level PREPARE/EXECUTE routes as the prepared statement.
async fn prepared_statements_move_between_nodes(pooling: Pooling) {
    let Some(router) = router_in(pooling) else {
        return;
    };
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let stmt = client
        .prepare(&format!("SELECT {WHERE}, $1::int"))
        .await
        .unwrap();
    let row = client.query_one(&stmt, &[&1i32]).await.unwrap();
    assert!(
        !row.get::<_, bool>(1),
        "inside the read-write transaction: primary"
    );
    client.batch_execute("COMMIT").await.unwrap();
    for i in 0..5i32 {
        let row = client.query_one(&stmt, &[&i]).await.unwrap();
        assert!(row.get::<_, bool>(1), "autocommit read: replica");
        assert_eq!(row.get::<_, i32>(2), i);
    }
    let write = client
        .prepare(&format!(
            "INSERT INTO routing_t (v) VALUES ($1) RETURNING {WHERE}"
        ))
        .await
        .unwrap();
    let row = client.query_one(&write, &[&5i32]).await.unwrap();
    assert!(!row.get::<_, bool>(1));

    client
        .batch_execute(&format!("PREPARE q AS SELECT {WHERE}"))
        .await
        .unwrap();
    assert_eq!(where_simple(&client, "EXECUTE q").await, Ran::Replica);
    client
        .batch_execute(&format!(
            "PREPARE w AS SELECT {WHERE}, nextval('routing_seq')"
        ))
        .await
        .unwrap();
    assert_eq!(where_simple(&client, "EXECUTE w").await, Ran::Primary);
    client.batch_execute("DEALLOCATE q").await.unwrap();
    assert!(client.simple_query("EXECUTE q").await.is_err());
}

/// Temporary tables, LISTEN and session advisory locks pin the session to the primary.
async fn session_features_pin_to_the_primary(pooling: Pooling) {
    let Some(router) = router_in(pooling) else {
        return;
    };
    let q = format!("SELECT {WHERE}");
    for pin in [
        "CREATE TEMP TABLE pin_t (a int)",
        "LISTEN pin_channel",
        "SELECT pg_advisory_lock(4242)",
        "BEGIN; DECLARE held CURSOR WITH HOLD FOR SELECT 1; COMMIT",
    ] {
        let client = connect(&router.conninfo("app", "app")).await.unwrap();
        assert_eq!(
            where_simple(&client, &q).await,
            Ran::Replica,
            "{pin}: before"
        );
        client.batch_execute(pin).await.unwrap();
        assert_eq!(
            where_simple(&client, &q).await,
            Ran::Primary,
            "{pin}: after"
        );
        assert_eq!(
            where_extended(&client, &q).await,
            Ran::Primary,
            "{pin}: after"
        );
    }
}

/// With load balancing off everything goes to the primary.
#[tokio::test]
async fn load_balance_off_sends_everything_to_the_primary() {
    let Some(cluster) = cluster() else { return };
    let router = Router::start_weighted(cluster, [0, 1, 1], "routing:\n  load_balance: false\n");
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    assert_eq!(
        where_simple(&client, &format!("SELECT {WHERE}")).await,
        Ran::Primary
    );
}

/// psycopg 3 (libpq with server-side binding and automatic prepared statements) sees the same
/// routing. Needs Python's psycopg; `scripts/test.sh` installs it.
#[test]
fn psycopg_sees_the_same_routing() {
    let Some(router) = router() else { return };
    let cluster = cluster().unwrap();
    if !crate::harness::python_has("psycopg") {
        crate::harness::missing(
            "python3 with psycopg 3 is not installed (pip install 'psycopg[binary]'); the psycopg test",
        );
        return;
    }
    let script = crate::harness::repo().join("tests/clients/psycopg_routing.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(router.url("app", "app"))
        .arg(cluster.primary_port().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psycopg checks failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A function that claims to be STABLE but writes: the replica rejects it with 25006 before
/// anything reaches the client, and pgrouter re-runs it on the primary; the client sees a result.
async fn write_hidden_in_a_stable_function_is_rerun_on_the_primary(pooling: Pooling) {
    let Some(router) = router_in(pooling) else {
        return;
    };
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    for _ in 0..2 {
        let sql = format!("SELECT {WHERE}, sneaky_fn()");
        assert_eq!(where_simple(&client, &sql).await, Ran::Primary, "simple");
        assert_eq!(
            where_extended(&client, &sql).await,
            Ran::Primary,
            "extended"
        );
    }
}

/// A read of an UNLOGGED table is refused by a replica (0A000: its contents exist only on the
/// primary): the read is re-run there, through both protocols.
async fn read_of_an_unlogged_table_is_rerun_on_the_primary(pooling: Pooling) {
    let Some(router) = router_in(pooling) else {
        return;
    };
    // One table per mode: the two runs go side by side.
    let table = format!("routing_unlogged_{pooling:?}").to_lowercase();
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; \
             CREATE UNLOGGED TABLE {table} (v int); \
             INSERT INTO {table} VALUES (1), (2)"
        ))
        .await
        .unwrap();
    // The replicas know the table (its definition is logged, its rows are not): otherwise they
    // would answer 42P01, which is replica lag, not what this test is about.
    cluster().unwrap().wait_for_replicas();
    for _ in 0..2 {
        let sql = format!("SELECT {WHERE}, (SELECT sum(v) FROM {table})");
        assert_eq!(where_simple(&client, &sql).await, Ran::Primary, "simple");
        assert_eq!(
            where_extended(&client, &sql).await,
            Ran::Primary,
            "extended"
        );
    }
    let row = client
        .query_one(&format!("SELECT sum(v)::int FROM {table}"), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
}

/// A read whose replica connection is terminated before it answers is re-run on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_whose_replica_connection_breaks_is_rerun() {
    let Some(router) = router() else { return };
    let cluster = cluster().unwrap();
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    // Open the session's replica connection first.
    assert_eq!(
        where_simple(&client, &format!("SELECT {WHERE}")).await,
        Ran::Replica
    );
    let marker = format!("m{}", rand::random::<u32>());
    let sql = format!("SELECT {WHERE}, pg_sleep(2), '{marker}'");
    let task = tokio::spawn(async move { where_simple(&client, &sql).await });
    assert!(
        terminate_when_running(cluster, &[1, 2], &marker),
        "the read was running on a replica"
    );
    let ran = tokio::time::timeout(std::time::Duration::from_secs(20), task)
        .await
        .expect("no hang")
        .unwrap();
    assert_eq!(ran, Ran::Primary);
}

/// Terminates, on any of `nodes`, the backends running a query that contains `marker`, once one
/// shows up (within 10 s). Returns whether one did.
fn terminate_when_running(cluster: &Cluster, nodes: &[usize], marker: &str) -> bool {
    crate::harness::eventually(std::time::Duration::from_secs(10), || {
        nodes.iter().any(|&node| {
            cluster
                .node_sql(
                    node,
                    &format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
                    ),
                )
                .contains('t')
        })
    })
}

/// A read that breaks its server connection everywhere (a query of death) runs at most twice:
/// on the standby, then once on the primary; when that connection breaks too, the client gets
/// the error, and the read is not sent anywhere a third time. A read that was running on the
/// primary runs once more only if it calls nothing but built-ins (it cannot have done
/// anything); with a user-defined function it is not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_breaks_its_connections_runs_at_most_twice() {
    let Some(router) = router() else { return };
    let cluster = cluster().unwrap();
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    assert_eq!(
        where_simple(&client, &format!("SELECT {WHERE}")).await,
        Ran::Replica
    );
    let marker = format!("m{}", rand::random::<u32>());
    let sql = format!("SELECT pg_sleep(2), '{marker}'");
    let task = tokio::spawn(async move { client.simple_query(&sql).await.map(|_| ()) });
    assert!(
        terminate_when_running(cluster, &[1, 2], &marker),
        "the read was running on a standby"
    );
    assert!(
        terminate_when_running(cluster, &[0], &marker),
        "the read was run on the primary after its standby connection broke"
    );
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(20), task)
        .await
        .expect("no hang")
        .unwrap();
    assert!(
        outcome.is_err(),
        "the client gets the error, not a third run"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    for node in 0..3 {
        let running = cluster.node_sql(
            node,
            &format!(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
            ),
        );
        assert_eq!(running, "0", "run again on node {node}");
    }

    // Reads on the primary (read weight only there). One that calls only built-ins is run once
    // more when its connection breaks, and not a third time.
    let primary_reads = Router::start_weighted(cluster, [1, 0, 0], "");
    let client = connect(&primary_reads.conninfo("app", "app"))
        .await
        .unwrap();
    let marker = format!("m{}", rand::random::<u32>());
    let sql = format!("SELECT pg_sleep(2), '{marker}'");
    let task = tokio::spawn(async move { client.simple_query(&sql).await.map(|_| ()) });
    assert!(terminate_when_running(cluster, &[0], &marker));
    assert!(
        terminate_when_running(cluster, &[0], &marker),
        "a built-in read broken on the primary runs once more"
    );
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(20), task)
        .await
        .expect("no hang")
        .unwrap();
    assert!(outcome.is_err(), "not a third time");
    // One that calls a user-defined function (STABLE, but who knows) is not run again at all.
    cluster.superuser_sql(
        "CREATE OR REPLACE FUNCTION stable_nap(float8) RETURNS int LANGUAGE sql STABLE \
         AS 'SELECT 1 FROM pg_sleep($1)'",
    );
    let client = connect(&primary_reads.conninfo("app", "app"))
        .await
        .unwrap();
    let marker = format!("m{}", rand::random::<u32>());
    let sql = format!("SELECT stable_nap(2), '{marker}'");
    let task = tokio::spawn(async move { client.simple_query(&sql).await.map(|_| ()) });
    assert!(terminate_when_running(cluster, &[0], &marker));
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(20), task)
        .await
        .expect("no hang")
        .unwrap();
    assert!(
        outcome.is_err(),
        "a read with a user function broken on the primary is not run again"
    );
}

/// A statement longer than `routing.max_parse_size` is not parsed (it would hold the worker
/// thread): it runs on the primary, and gives the right answer; under the limit the same read
/// goes to a replica.
#[tokio::test]
async fn statements_over_max_parse_size_go_to_the_primary() {
    let Some(cluster) = cluster() else { return };
    let long_read = format!(
        "SELECT {WHERE} FROM (SELECT 1) AS one WHERE 1 IN ({})",
        (0..400)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(long_read.len() > 1024);
    let limited = Router::start(cluster, "routing: {max_parse_size: 1kB}\n");
    let client = connect(&limited.conninfo("app", "app")).await.unwrap();
    assert_eq!(where_simple(&client, &long_read).await, Ran::Primary);
    let default = Router::start_weighted(cluster, [0, 1, 1], NO_LAG_LIMIT);
    let client = connect(&default.conninfo("app", "app")).await.unwrap();
    assert_eq!(where_simple(&client, &long_read).await, Ran::Replica);
}
