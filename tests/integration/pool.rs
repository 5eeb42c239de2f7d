//! Server connection pools (session mode): reuse with a reset in between, and a full node.

use crate::harness::{cluster, connect, Router};
use std::time::{Duration, Instant};

/// A connection a client leaves is reset and handed to the next client of the same user,
/// database and start-up parameters: same server process, none of the first client's state.
#[tokio::test]
async fn server_connections_are_reused_after_a_reset() {
    let Some(cluster) = cluster() else {
        return;
    };
    let router = one_connection_router(cluster, "session", "10s");
    let first = connect(&router.conninfo("app", "app")).await.unwrap();
    let pid: i32 = first
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    first
        .batch_execute(
            "SET work_mem = '7MB'; CREATE TEMP TABLE pooled_tmp (x int); PREPARE p AS SELECT 1",
        )
        .await
        .unwrap();
    drop(first);
    // The node allows one connection: the next client waits for this one to come back.
    let second = connect(&router.conninfo("app", "app")).await.unwrap();
    let row = second
        .query_one(
            "SELECT pg_backend_pid(), current_setting('work_mem'), to_regclass('pg_temp.pooled_tmp') IS NULL, \
             (SELECT count(*) FROM pg_prepared_statements WHERE name = 'p')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i32>(0),
        pid,
        "the server connection was reused"
    );
    assert_eq!(row.get::<_, String>(1), "4MB", "SET was reset");
    assert!(row.get::<_, bool>(2), "the temporary table is gone");
    assert_eq!(row.get::<_, i64>(3), 0, "the prepared statement is gone");
}

/// When a node's connections are all in use, a client waits up to `pool.checkout_timeout`, then
/// gets `53300`; one that is still waiting when a connection comes back gets it.
#[tokio::test]
async fn a_full_node_queues_clients_then_answers_53300() {
    let Some(cluster) = cluster() else {
        return;
    };
    let router = one_connection_router(cluster, "session", "1s");
    let holder = connect(&router.conninfo("app", "app")).await.unwrap();
    holder.batch_execute("SELECT 1").await.unwrap();

    let started = Instant::now();
    let refused = connect(&router.conninfo("app", "app"))
        .await
        .expect_err("the node is full");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let db = refused.as_db_error().expect("a PostgreSQL error");
    assert_eq!(db.code().code(), "53300");
    assert!(
        db.message().contains("max_server_connections"),
        "{}",
        db.message()
    );

    // A waiting client gets the connection as soon as the holder leaves.
    let waiter = tokio::spawn({
        let conninfo = router.conninfo("app", "app");
        async move { connect(&conninfo).await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(holder);
    waiter
        .await
        .unwrap()
        .expect("the waiting client got the released connection");
}

/// A cancel request that arrives while its client's statement waits for a server connection
/// cancels it: the statement never runs and the client gets 57014 at once, instead of the
/// cancel being lost and the statement running in full once a connection is free.
#[tokio::test]
async fn a_statement_waiting_for_a_connection_can_be_cancelled() {
    let Some(cluster) = cluster() else {
        return;
    };
    let router = one_connection_router(cluster, "transaction", "20s");
    let holder = connect(&router.conninfo("app", "app")).await.unwrap();
    let waiter = connect(&router.conninfo("app", "app")).await.unwrap();
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let token = waiter.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move {
        let r = waiter.batch_execute("SELECT pg_sleep(30)").await;
        (r, started.elapsed(), waiter)
    });
    // Until the router shows the client waiting for a server connection.
    let waiting = crate::harness::eventually_async(Duration::from_secs(20), || {
        let (_, metrics) = crate::harness::http(&router.admin_addr(), "GET", "/metrics");
        metrics.lines().any(|l| {
            l.starts_with("pgrouter_client_connections{")
                && l.contains("state=\"waiting\"")
                && l.ends_with(" 1")
        })
    })
    .await;
    assert!(waiting, "the statement never waited for a connection");
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    let (result, took, waiter) = tokio::time::timeout(Duration::from_secs(20), sleeper)
        .await
        .expect("the cancelled statement returns")
        .unwrap();
    let err = result.expect_err("the statement was cancelled");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "it ran anyway: {took:?}");
    // The session goes on.
    waiter.batch_execute("SELECT 1").await.unwrap();
}

/// A router whose nodes each allow one server connection, everything on the primary.
fn one_connection_router(
    cluster: &crate::harness::Cluster,
    mode: &str,
    checkout_timeout: &str,
) -> Router {
    Router::start(
        cluster,
        &format!(
            "pool: {{mode: {mode}, max_server_connections: 1, checkout_timeout: {checkout_timeout}}}\n\
             routing: {{load_balance: false}}\n"
        ),
    )
}

async fn show(c: &tokio_postgres::Client) -> String {
    let rows = c.simple_query("SHOW work_mem").await.unwrap();
    crate::harness::first_value(&rows).to_owned()
}

async fn pid(client: &tokio_postgres::Client) -> i32 {
    let rows = client
        .simple_query("SELECT pg_backend_pid()")
        .await
        .unwrap();
    crate::harness::first_value(&rows).parse().unwrap()
}

/// Transaction pooling: two clients take turns on one server connection; a client inside a
/// transaction keeps it until the transaction ends, and the other waits meanwhile.
#[tokio::test]
async fn transaction_mode_shares_one_connection() {
    let Some(cluster) = cluster() else {
        return;
    };
    let router = one_connection_router(cluster, "transaction", "10s");
    let a = connect(&router.conninfo("app", "app")).await.unwrap();
    let b = connect(&router.conninfo("app", "app")).await.unwrap();
    assert_eq!(
        pid(&a).await,
        pid(&b).await,
        "one server connection serves both"
    );

    a.batch_execute("BEGIN").await.unwrap();
    let in_a = pid(&a).await;
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let p = pid(&b).await;
        (p, started.elapsed(), b)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "b must wait while a's transaction holds the connection"
    );
    a.batch_execute("COMMIT").await.unwrap();
    let (in_b, waited, _b) = waiting.await.unwrap();
    assert_eq!(in_a, in_b);
    assert!(waited >= Duration::from_millis(400));
}

/// Session settings and prepared statements follow each client across the shared connection;
/// neither leaks to the other client.
#[tokio::test]
async fn transaction_mode_keeps_each_clients_session() {
    let Some(cluster) = cluster() else {
        return;
    };
    let router = one_connection_router(cluster, "transaction", "10s");
    let (a, mut notifications) = connect_listening(&router.conninfo("app", "app")).await;
    let b = connect(&router.conninfo("app", "app")).await.unwrap();
    a.batch_execute("SET work_mem = '7MB'").await.unwrap();
    assert_eq!(show(&b).await, "4MB", "a's SET does not leak to b");
    assert_eq!(show(&a).await, "7MB", "a keeps its SET");

    // Same statement name, different definitions, on the one connection.
    let sa = a.prepare("SELECT $1::int + 1").await.unwrap();
    let sb = b.prepare("SELECT $1::int * 10").await.unwrap();
    for i in 0..5 {
        let ra: i32 = a.query_one(&sa, &[&i]).await.unwrap().get(0);
        let rb: i32 = b.query_one(&sb, &[&i]).await.unwrap().get(0);
        assert_eq!((ra, rb), (i + 1, i * 10));
    }
    // LISTEN keeps the connection for that client (pinned) and notifications arrive, also while
    // the client is idle between transactions.
    a.batch_execute("LISTEN pool_chan").await.unwrap();
    assert_eq!(show(&a).await, "7MB");
    cluster.superuser_sql("NOTIFY pool_chan, 'to a'");
    let got = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
        .await
        .expect("the notification reaches the listening client")
        .unwrap();
    assert_eq!(got, "to a");
    assert_eq!(show(&a).await, "7MB");
}

/// A client whose notifications are passed on through the returned channel (payloads).
async fn connect_listening(
    conninfo: &str,
) -> (tokio_postgres::Client, tokio::sync::mpsc::Receiver<String>) {
    let (client, mut connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures_util::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_owned()).await;
            }
        }
    });
    (client, rx)
}

/// Client limits answer as PostgreSQL does: `53300` naming the role (or `sorry, too many clients
/// already` for the overall limit); a freed slot admits the next client.
#[tokio::test]
async fn client_limits_refuse_with_53300() {
    let Some(cluster) = cluster() else {
        return;
    };
    let router = Router::start(
        cluster,
        "client: {max_connections: 3, max_connections_per_user: 1}\n",
    );
    let first = connect(&router.conninfo("app", "app")).await.unwrap();
    let refused = connect(&router.conninfo("app", "app")).await.unwrap_err();
    let db = refused.as_db_error().expect("a PostgreSQL error");
    assert_eq!(
        (db.code().code(), db.message()),
        ("53300", "too many connections for role \"app\"")
    );
    let _legacy = connect(&router.conninfo("legacy", "legacy")).await.unwrap();
    let _raw = connect(&router.conninfo("rawtest", "raw")).await.unwrap();
    let refused = connect(&router.conninfo("legacy", "legacy"))
        .await
        .unwrap_err();
    assert_eq!(
        refused.as_db_error().map(|e| e.message()),
        Some("sorry, too many clients already")
    );
    drop(first);
    let mut admitted = false;
    for _ in 0..50 {
        if connect(&router.conninfo("app", "app")).await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted, "the freed slot admits the next client");
}

/// A pooled connection that the server closed while it sat idle (here `pg_terminate_backend`)
/// is never handed to a client: the next client gets a live one.
#[tokio::test]
async fn a_connection_killed_in_the_pool_is_not_handed_out() {
    let Some(cluster) = cluster() else {
        return;
    };
    let router = one_connection_router(cluster, "session", "10s");
    let first = connect(&router.conninfo("app", "app")).await.unwrap();
    let killed = pid(&first).await;
    drop(first);
    // Wait until it is back in the pool (idle after its reset), then kill it there.
    let idle_in_pool = crate::harness::eventually_async(Duration::from_secs(10), || {
        cluster.superuser_sql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = {killed} AND state = 'idle' AND query = 'DISCARD ALL'"
        )) == "1"
    })
    .await;
    assert!(idle_in_pool);
    cluster.superuser_sql(&format!("SELECT pg_terminate_backend({killed})"));
    assert!(
        crate::harness::eventually_async(Duration::from_secs(10), || cluster.superuser_sql(
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {killed}")
        ) == "0")
        .await
    );
    let next = connect(&router.conninfo("app", "app")).await.unwrap();
    let fresh = pid(&next).await;
    assert_ne!(fresh, killed);
    next.batch_execute("SELECT 1").await.unwrap();
}

/// A client that leaves in the middle of a transaction leaves nothing open on the server, in
/// either mode: its connection is closed (rolling the transaction back), not pooled.
#[tokio::test]
async fn a_client_leaving_mid_transaction_leaves_no_transaction_open() {
    let Some(cluster) = cluster() else {
        return;
    };
    for mode in ["session", "transaction"] {
        let router = Router::start(
            cluster,
            &format!("pool: {{mode: {mode}}}\nrouting: {{load_balance: false}}\n"),
        );
        let app = format!("midtx-{mode}-{}", rand::random::<u32>());
        let client = connect(&format!(
            "host=127.0.0.1 port={} user=app password=app dbname=app application_name={app}",
            router.port
        ))
        .await
        .unwrap();
        client
            .batch_execute("BEGIN; CREATE TEMP TABLE IF NOT EXISTS midtx (x int); SELECT 1")
            .await
            .unwrap();
        drop(client);
        let gone = crate::harness::eventually_async(Duration::from_secs(10), || {
            cluster.superuser_sql(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' \
                 AND state LIKE 'idle in transaction%'"
            )) == "0"
        })
        .await;
        assert!(gone, "{mode} mode: a transaction was left open");
    }
}

/// Transaction pooling: settings to replay past 1 MiB (a thousand different parameters, 1 kB
/// each) stop the replay log from growing; the session keeps its server connection instead. Its
/// settings all hold, and the other client, which shared the one connection before, now waits
/// and gets 53300.
#[tokio::test]
async fn a_replay_log_past_its_bound_pins_the_session() {
    let Some(cluster) = cluster() else {
        return;
    };
    let router = one_connection_router(cluster, "transaction", "1s");
    let a = connect(&router.conninfo("app", "app")).await.unwrap();
    let b = connect(&router.conninfo("app", "app")).await.unwrap();
    let value = "v".repeat(1000);
    let set = |i: usize| format!("SET app.p{i} = '{value}'");
    // Below the bound: the connection is shared between transactions.
    a.batch_execute(&set(0)).await.unwrap();
    assert!(b.simple_query("SELECT 1").await.is_ok());
    // Past it, in requests below routing.max_parse_size (each is classified and recorded).
    for chunk in (1..1100).collect::<Vec<_>>().chunks(200) {
        let batch: Vec<String> = chunk.iter().map(|&i| set(i)).collect();
        a.batch_execute(&batch.join("; ")).await.unwrap();
    }
    for i in [0, 555, 1099] {
        let v: String = a
            .query_one(&format!("SELECT current_setting('app.p{i}')"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, value, "app.p{i}");
    }
    let error = b.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(
        error.code().map(|c| c.code()),
        Some("53300"),
        "the pinned session keeps the only connection: {error}"
    );
}
