//! The relay after login: extended protocol, pipelining, COPY, LISTEN/NOTIFY, FunctionCall, cancel,
//! large results, and what happens when one side goes away.

use crate::harness::{cluster, connect, eventually_async, psql, shared_router, temp_file};
use crate::raw::RawClient;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls};

/// Many extended-protocol queries pipelined on one connection, prepared statements reused, and
/// a failed transaction rolled back: all answered in order.
#[tokio::test]
async fn pipelined_extended_queries_and_transactions() {
    let Some(router) = shared_router() else {
        return;
    };
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    let stmt = client.prepare("SELECT $1::int * 2").await.unwrap();
    let futures = (0..200i32).map(|i| {
        let client = &client;
        let stmt = &stmt;
        async move {
            client
                .query_one(stmt, &[&i])
                .await
                .map(|r| (i, r.get::<_, i32>(0)))
        }
    });
    let results = futures_util::future::try_join_all(futures).await.unwrap();
    assert!(results.iter().all(|(i, d)| *d == i * 2));

    client
        .batch_execute("CREATE TEMP TABLE tx_test(v int)")
        .await
        .unwrap();
    client
        .batch_execute("BEGIN; INSERT INTO tx_test VALUES (1)")
        .await
        .unwrap();
    let err = client.batch_execute("SELECT 1/0").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    let err = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    client.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM tx_test", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// COPY FROM STDIN and COPY TO STDOUT, with tokio-postgres and with psql's \copy.
#[tokio::test]
async fn copy_in_and_out() {
    let Some(router) = shared_router() else {
        return;
    };
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    client
        .batch_execute("DROP TABLE IF EXISTS copy_test; CREATE TABLE copy_test(id int, name text)")
        .await
        .unwrap();
    let sink = client.copy_in("COPY copy_test FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in 0..10 {
        let mut data = String::new();
        for i in 0..1000 {
            data.push_str(&format!("{}\tname-{}\n", chunk * 1000 + i, i));
        }
        sink.send(bytes::Bytes::from(data)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 10_000);
    // The reads below may run on a replica: let it replay the rows first.
    cluster().unwrap().wait_for_replicas();

    let stream = client
        .copy_out("COPY (SELECT * FROM copy_test ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let text: Vec<u8> = chunks.concat();
    assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 10_000);
    assert!(text.starts_with(b"0\tname-0\n"));

    // psql: \copy in from stdin and out to stdout.
    let url = router.url("app", "app");
    let (ok, out, err) = psql(
        &url,
        &["-c", "\\copy copy_test from stdin"],
        Some(b"20001\tfrom-psql\n20002\tfrom-psql\n\\.\n"),
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "COPY 2");
    cluster().unwrap().wait_for_replicas();
    let (ok, out, err) = psql(
        &url,
        &[
            "-c",
            "\\copy (select name from copy_test where id > 20000 order by id) to stdout",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out, "from-psql\nfrom-psql\n");
}

/// A COPY the client aborts with CopyFail leaves the session usable.
#[tokio::test]
async fn copy_fail_keeps_session_usable() {
    let Some(router) = shared_router() else {
        return;
    };
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    client
        .batch_execute("CREATE TEMP TABLE copy_fail(v int)")
        .await
        .unwrap();
    {
        let sink = client
            .copy_in::<_, bytes::Bytes>("COPY copy_fail FROM STDIN")
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(b"1\n")).await.unwrap();
        // Dropping the sink unfinished sends CopyFail.
    }
    let n: i64 = client
        .query_one("SELECT count(*) FROM copy_fail", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// NOTIFY from one client reaches a LISTENing client as a NotificationResponse.
#[tokio::test]
async fn listen_notify() {
    let Some(router) = shared_router() else {
        return;
    };
    let (listener, mut connection) = tokio_postgres::connect(&router.conninfo("app", "app"), NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx
                    .send((n.channel().to_string(), n.payload().to_string()))
                    .await;
            }
        }
    });
    listener
        .batch_execute("LISTEN pgrouter_test")
        .await
        .unwrap();
    let notifier = connect(&router.conninfo("app", "app")).await.unwrap();
    notifier
        .batch_execute("NOTIFY pgrouter_test, 'hello through pgrouter'")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("notification arrives")
        .unwrap();
    assert_eq!(
        got,
        ("pgrouter_test".into(), "hello through pgrouter".into())
    );
}

/// A CancelRequest sent with pgrouter's key cancels the statement on the server; other sessions
/// are not disturbed while it runs.
#[tokio::test]
async fn cancel_a_running_query() {
    let Some(router) = shared_router() else {
        return;
    };
    let cluster = cluster().unwrap();
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    let token = client.cancel_token();
    let marker = format!("cancel_me_{}", rand::random::<u32>());
    let sql = format!("SELECT pg_sleep(60), '{marker}'");
    let sleeper = tokio::spawn(async move { client.batch_execute(&sql).await });
    // Wait until the statement runs on its server (a read: any of the three nodes).
    let running =
        eventually_async(Duration::from_secs(20), || cluster.runs_statement(&marker)).await;
    assert!(running, "the statement never started");

    let other = connect(&router.conninfo("app", "app")).await.unwrap();
    let one: i32 = other.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    token.cancel_query(NoTls).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), sleeper)
        .await
        .expect("cancelled query returns")
        .unwrap();
    assert_eq!(result.unwrap_err().code(), Some(&SqlState::QUERY_CANCELED));
}

/// Logs `rawtest` in with the raw protocol; returns the client and the process id pgrouter gave
/// it in `BackendKeyData`.
fn raw_login(port: u16) -> (RawClient, i32) {
    let (c, pid, _) = RawClient::login_with_key(port, "rawtest");
    (c, pid)
}

/// Runs `sql` and returns the sender process ids of the notifications that arrive with its
/// answer.
fn notifications_with(c: &mut RawClient, sql: &str) -> Vec<i32> {
    c.send_query(sql);
    let mut pids = Vec::new();
    loop {
        let (tag, body) = c.read_message().expect("an answer");
        match tag {
            b'A' => pids.push(i32::from_be_bytes(body[..4].try_into().unwrap())),
            b'E' => panic!("{sql}: {}", String::from_utf8_lossy(&body)),
            b'Z' => return pids,
            _ => {}
        }
    }
}

/// A notification a session sends itself carries, as its sender, the process id the session
/// was given (`BackendKeyData`, what drivers report as the backend pid), as it would straight
/// from PostgreSQL: "skip my own notifications" works. Another session's keeps the server's
/// process id. Both pooling modes.
#[tokio::test]
async fn a_sessions_own_notifications_carry_its_process_id() {
    let Some(cluster) = cluster() else { return };
    for mode in ["session", "transaction"] {
        let router = crate::harness::Router::start(cluster, &format!("pool: {{mode: {mode}}}\n"));
        let (mut listener, own_pid) = raw_login(router.port);
        assert!(notifications_with(&mut listener, "LISTEN own_pid").is_empty());
        assert_eq!(
            notifications_with(&mut listener, "NOTIFY own_pid, 'mine'"),
            vec![own_pid],
            "{mode}: its own notification"
        );
        let (mut other, other_pid) = raw_login(router.port);
        assert!(notifications_with(&mut other, "NOTIFY own_pid, 'theirs'").is_empty());
        let theirs = notifications_with(&mut listener, "SELECT 1");
        assert_eq!(theirs.len(), 1, "{mode}: {theirs:?}");
        assert_ne!(theirs[0], own_pid, "{mode}");
        assert_ne!(theirs[0], other_pid, "{mode}: the server's process id");
    }
}

/// psql's \lo_import / \lo_export use the FunctionCall message (libpq's fast-path interface).
#[test]
fn function_call_via_large_objects() {
    let Some(router) = shared_router() else {
        return;
    };
    let input = temp_file(router, "lo-in.bin");
    let output = temp_file(router, "lo-out.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    let url = router.url("app", "app");
    let (ok, out, err) = psql(
        &url,
        &["-c", &format!("\\lo_import {}", input.display())],
        None,
    );
    assert!(ok, "{err}");
    let oid = out
        .trim()
        .strip_prefix("lo_import ")
        .expect(&out)
        .to_string();
    let (ok, _, err) = psql(
        &url,
        &["-c", &format!("\\lo_export {oid} {}", output.display())],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&output).unwrap(), data);
    let (ok, _, err) = psql(&url, &["-c", &format!("\\lo_unlink {oid}")], None);
    assert!(ok, "{err}");
}

/// A 100 MB result streams through while the router's memory stays flat, even when the client
/// reads slowly (backpressure instead of buffering).
#[test]
fn large_result_streams_with_flat_memory() {
    let Some(router) = shared_router() else {
        return;
    };
    let mut client = RawClient::login(router.port, "rawtest");
    let baseline = router.rss_kib();
    client.send_query("SELECT repeat('x', 1000) FROM generate_series(1, 100000)");
    // Read nothing for a while: the server is held back, pgrouter must not buffer the result.
    std::thread::sleep(Duration::from_millis(1500));
    let stalled = router.rss_kib();
    let mut peak = stalled;
    let mut rows = 0u64;
    let mut bytes = 0u64;
    loop {
        let (tag, body) = client.read_message().expect("result continues");
        bytes += body.len() as u64 + 5;
        match tag {
            b'D' => {
                rows += 1;
                if rows % 10_000 == 0 {
                    peak = peak.max(router.rss_kib());
                    // Read slowly for part of the result.
                    if rows < 50_000 {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            b'Z' => break,
            b'E' => panic!("error: {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
    assert_eq!(rows, 100_000);
    assert!(bytes > 100_000_000);
    eprintln!(
        "large result: {} MB relayed; router RSS baseline {baseline} KiB, while stalled {stalled} KiB, peak {peak} KiB",
        bytes / 1_000_000
    );
    assert!(
        peak.saturating_sub(baseline) < 16 * 1024,
        "router RSS grew from {baseline} KiB to {peak} KiB while relaying"
    );
}

/// A server connection terminated by an administrator in the middle of a transaction: the client's
/// next request fails with an ERROR (08006, or the server's 57P01 downgraded; the transaction is
/// gone, as after a server restart), never a hang, and the client connection stays usable.
#[tokio::test]
async fn server_connection_killed_mid_transaction_fails_the_transaction_not_the_client() {
    let Some(router) = shared_router() else {
        return;
    };
    let cluster = cluster().unwrap();
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let row = client
        .query_one("SELECT pg_backend_pid(), pg_is_in_recovery()", &[])
        .await
        .unwrap();
    assert!(
        !row.get::<_, bool>(1),
        "a read-write transaction runs on the primary"
    );
    let pid: i32 = row.get(0);
    cluster.superuser_sql(&format!("SELECT pg_terminate_backend({pid}, 5000)"));
    let result = tokio::time::timeout(Duration::from_secs(10), client.batch_execute("SELECT 1"))
        .await
        .expect("no hang");
    let error = result.expect_err("the transaction is gone");
    // pgrouter's 08006 when it saw the connection end before the request, or the server's own
    // FATAL 57P01 relayed as an ERROR when the request reached the dying connection first
    // (docs/operations.md): either way an ERROR, and the client keeps its connection.
    let db = error.as_db_error().expect("a PostgreSQL error");
    assert!(
        ["08006", "57P01"].contains(&db.code().code()),
        "as after a server restart: {error:?}"
    );
    assert_eq!(db.severity(), "ERROR", "{error:?}");
    // The client connection stays usable: the next statement runs on a new server connection.
    assert!(!client.is_closed());
    let row = client
        .query_one("SELECT pg_backend_pid(), pg_is_in_recovery()", &[])
        .await
        .unwrap();
    assert_ne!(row.get::<_, i32>(0), pid);
    client.batch_execute("ROLLBACK").await.unwrap();
}

/// The server ends a connection that sits idle in a transaction (`idle_in_transaction_session_timeout`,
/// here set by the client itself) and says why first, in a FATAL error. The client's next request
/// gets that reason (25P03, not a generic 08006), as an ERROR since pgrouter keeps the client,
/// whose connection stays usable. Both pooling modes.
#[tokio::test]
async fn a_server_ending_an_idle_transaction_reports_its_reason() {
    let Some(cluster) = cluster() else { return };
    for mode in ["session", "transaction"] {
        let router = crate::harness::Router::start(cluster, &format!("pool: {{mode: {mode}}}\n"));
        let client = connect(&router.conninfo("app", "app")).await.unwrap();
        client
            .batch_execute("SET idle_in_transaction_session_timeout = '200ms'; BEGIN; SELECT 1")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let error = tokio::time::timeout(Duration::from_secs(10), client.batch_execute("SELECT 1"))
            .await
            .expect("no hang")
            .expect_err("the transaction is gone");
        let db = error.as_db_error().expect("a PostgreSQL error");
        assert_eq!(
            db.code(),
            &SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
            "{mode}: the server's reason: {error:?}"
        );
        assert_eq!(db.severity(), "ERROR", "{mode}: {error:?}");
        assert!(
            db.message().contains("idle-in-transaction timeout"),
            "{mode}: {error:?}"
        );
        // The client learnt its transaction ended; the session goes on.
        client.batch_execute("ROLLBACK").await.unwrap();
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    }
}

/// An idle server connection that goes away is reopened on the next request, with the session's
/// settings replayed: the client notices nothing.
#[tokio::test]
async fn idle_server_connection_killed_is_reopened_transparently() {
    let Some(router) = shared_router() else {
        return;
    };
    let cluster = cluster().unwrap();
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    client
        .batch_execute("SET statement_timeout = '4321ms'")
        .await
        .unwrap();
    // Simple protocol: no prepared statement whose background Close could still be in flight.
    let rows = client
        .simple_query("/* pgrouter: primary */ SELECT pg_backend_pid()")
        .await
        .unwrap();
    let pid: i32 = crate::harness::rows(&rows)[0]
        .get(0)
        .unwrap()
        .parse()
        .unwrap();
    cluster.superuser_sql(&format!("SELECT pg_terminate_backend({pid})"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let row = client
        .query_one(
            "/* pgrouter: primary */ SELECT pg_backend_pid(), current_setting('statement_timeout')",
            &[],
        )
        .await
        .unwrap();
    assert_ne!(row.get::<_, i32>(0), pid);
    assert_eq!(row.get::<_, String>(1), "4321ms");
}

/// A client that goes away releases its server connection.
#[tokio::test]
async fn client_disconnect_releases_the_server_connection() {
    let Some(router) = shared_router() else {
        return;
    };
    let cluster = cluster().unwrap();
    let app = format!("release-{}", rand::random::<u32>());
    let conninfo = format!(
        "host=127.0.0.1 port={} user=app password=app dbname=app application_name={app}",
        router.port
    );
    let count = || {
        cluster
            .superuser_sql(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
            ))
            .parse::<i64>()
            .unwrap()
    };
    let client = connect(&conninfo).await.unwrap();
    client.batch_execute("BEGIN; SELECT 1").await.unwrap();
    assert_eq!(count(), 1);
    drop(client);
    assert!(
        eventually_async(Duration::from_secs(10), || count() == 0).await,
        "server connection still open after the client left: {}",
        cluster.superuser_sql(&format!("SELECT state, query, backend_start FROM pg_stat_activity WHERE application_name = '{app}'"))
    );
}

/// One extended-protocol segment on the primary that DEALLOCATEs a statement the primary
/// connection never held (pgrouter prepares it there first, in a request of its own) and runs
/// another it must prepare there invisibly: the client sees exactly PostgreSQL's replies, no
/// `ParseComplete` of pgrouter's own. (The first injected request's `ParseComplete` used to use
/// up the count meant for the second, which then reached the client.)
#[test]
fn injected_prepares_stay_invisible_in_one_segment() {
    use crate::raw::{message, RawClient};
    let Some(cluster) = cluster() else {
        return;
    };
    let router = crate::harness::Router::start_weighted(cluster, [0, 1, 1], "");
    let mut c = RawClient::login(router.port, "rawtest");
    let cstr = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    };
    let parse = |name: &str, sql: &str| {
        let mut body = cstr(name);
        body.extend(cstr(sql));
        body.extend(0i16.to_be_bytes());
        message(b'P', &body)
    };
    let bind = |statement: &str| {
        let mut body = cstr("");
        body.extend(cstr(statement));
        body.extend([0, 0, 0, 0, 0, 0]);
        message(b'B', &body)
    };
    let execute = || {
        let mut body = cstr("");
        body.extend(0i32.to_be_bytes());
        message(b'E', &body)
    };
    let sync = || message(b'S', &[]);
    let tags_until_ready = |c: &mut RawClient| {
        let mut tags = Vec::new();
        loop {
            let (tag, body) = c.read_message().expect("an answer");
            tags.push(tag);
            if tag == b'E' {
                panic!("error: {}", String::from_utf8_lossy(&body));
            }
            if tag == b'Z' {
                return tags;
            }
        }
    };
    // Two reads, prepared and run: they live on the replica connection only.
    for name in ["a", "b"] {
        c.send(&[parse(name, "SELECT pg_is_in_recovery()"), sync()].concat());
        assert_eq!(tags_until_ready(&mut c), b"1Z");
        c.send(&[bind(name), execute(), sync()].concat());
        assert_eq!(tags_until_ready(&mut c), b"2DCZ");
    }
    // The session's current connection becomes the primary.
    c.send_query("/* pgrouter: primary */ SELECT 1");
    assert_eq!(tags_until_ready(&mut c), b"TDCZ");
    c.send(
        &[
            parse("", "DEALLOCATE a"),
            bind(""),
            execute(),
            bind("b"),
            execute(),
            sync(),
        ]
        .concat(),
    );
    assert_eq!(
        String::from_utf8(tags_until_ready(&mut c)).unwrap(),
        "12C2DCZ",
        "PostgreSQL's replies, nothing of pgrouter's own"
    );
    // The session goes on; a is gone, b works.
    c.send(&[bind("b"), execute(), sync()].concat());
    assert_eq!(tags_until_ready(&mut c), b"2DCZ");
}
