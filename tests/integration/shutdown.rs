//! Graceful shutdown: on SIGTERM readiness turns false at once, the listener closes, idle
//! sessions get 57P01, open transactions may finish for up to `shutdown_timeout`, and the process
//! exits 0.

use crate::harness::{cluster, connect, eventually_async, first_value, http, Router};
use std::time::Duration;
use tokio_postgres::NoTls;

/// A client whose connection task's outcome is kept: a FATAL sent while the client is idle ends
/// it with that error.
async fn watched_client(
    conninfo: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await.unwrap();
    (client, tokio::spawn(connection))
}

fn unique() -> i64 {
    i64::from(rand::random::<u32>())
}

async fn committed(table: &str, value: i64) -> i64 {
    let cluster = cluster().unwrap();
    let direct = connect(&format!(
        "host=127.0.0.1 port={} user=app password=app dbname=app",
        cluster.primary_port()
    ))
    .await
    .unwrap();
    let rows = direct
        .simple_query(&format!("SELECT count(*) FROM {table} WHERE x = {value}"))
        .await
        .unwrap();
    first_value(&rows).parse().unwrap()
}

#[tokio::test]
async fn sigterm_lets_open_transactions_finish_then_exits_0() {
    let Some(cluster) = cluster() else { return };
    let mut router = Router::start(cluster, "shutdown_timeout: 20s\n");
    let conninfo = router.conninfo("app", "app");
    let (a, _a_conn) = watched_client(&conninfo).await;
    a.batch_execute("CREATE TABLE IF NOT EXISTS drain_ok (x bigint)")
        .await
        .unwrap();
    let (idle, idle_conn) = watched_client(&conninfo).await;
    idle.simple_query("SELECT 1").await.unwrap();
    let value = unique();
    a.batch_execute("BEGIN").await.unwrap();
    a.batch_execute(&format!("INSERT INTO drain_ok VALUES ({value})"))
        .await
        .unwrap();

    router.signal("TERM");
    let addr = router.admin_addr();
    assert!(
        eventually_async(Duration::from_secs(5), || http(&addr, "GET", "/ready").0
            == 503)
        .await,
        "readiness did not turn false"
    );
    assert_eq!(
        http(&addr, "GET", "/health").0,
        200,
        "still alive while draining"
    );
    // The idle session is told at once, with PostgreSQL's admin-shutdown error.
    let ended = tokio::time::timeout(Duration::from_secs(5), idle_conn)
        .await
        .expect("the idle session was not closed")
        .unwrap();
    let error = ended.expect_err("closed with an error");
    assert_eq!(
        error.as_db_error().map(|e| e.code().code()),
        Some("57P01"),
        "{error:?}"
    );
    // No new clients.
    assert!(
        eventually_async(Duration::from_secs(5), || std::net::TcpStream::connect((
            "127.0.0.1",
            router.port
        ))
        .is_err())
        .await
    );
    // The open transaction goes on and commits; then its session is closed too.
    a.batch_execute(&format!("INSERT INTO drain_ok VALUES ({value})"))
        .await
        .unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    let status = router
        .wait_exit(Duration::from_secs(10))
        .expect("pgrouter did not exit after its last session ended");
    assert!(status.success(), "{status:?}");
    assert_eq!(committed("drain_ok", value).await, 2);
    assert!(router
        .log_text()
        .contains("letting this session's transaction or request finish"));
}

#[tokio::test]
async fn shutdown_timeout_closes_what_is_still_open_and_rolls_it_back() {
    let Some(cluster) = cluster() else { return };
    let mut router = Router::start(cluster, "shutdown_timeout: 1s\n");
    let (a, a_conn) = watched_client(&router.conninfo("app", "app")).await;
    a.batch_execute("CREATE TABLE IF NOT EXISTS drain_late (x bigint)")
        .await
        .unwrap();
    let value = unique();
    a.batch_execute("BEGIN").await.unwrap();
    a.batch_execute(&format!("INSERT INTO drain_late VALUES ({value})"))
        .await
        .unwrap();
    router.signal("TERM");
    let ended = tokio::time::timeout(Duration::from_secs(10), a_conn)
        .await
        .expect("the session outlived shutdown_timeout")
        .unwrap();
    let error = ended.expect_err("closed with an error");
    let db = error.as_db_error().expect("a PostgreSQL error");
    assert_eq!(db.code().code(), "57P01");
    assert!(
        db.detail().unwrap_or_default().contains("shutdown_timeout"),
        "{db:?}"
    );
    let status = router.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        committed("drain_late", value).await,
        0,
        "an unfinished transaction was committed"
    );
}
