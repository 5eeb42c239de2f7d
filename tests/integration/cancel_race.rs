//! A cancel request reaches PostgreSQL on a connection of its own, and PostgreSQL acts on it a
//! little later: a new process reads it and signals the backend (twice: the process, then its
//! group). Until that has happened the server connection must run nobody's next statement: not
//! another client's (transaction pooling hands the connection on as soon as the cancelled
//! statement ends) and not the same client's. Otherwise the late signal cancels a statement
//! nobody cancelled.
//!
//! A paused postmaster (SIGSTOP) holds a forwarded cancel unprocessed, deterministically, while
//! the statement it was meant for ends by itself; the next statement on that server connection
//! then runs while the cancel is still on its way. A private one-node cluster, so that the
//! pause touches no other test.

use crate::harness::{connect, eventually_async, private_cluster, Cluster, Router};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// One node, one server connection at most (the next statement must get the same one), and
/// health checks that sit out a postmaster paused for a few seconds.
fn config(cluster: &Cluster, port: u16, mode: &str) -> String {
    format!(
        "listen: 127.0.0.1:{port}\n\
         admin_listen: 127.0.0.1:{admin}\n\
         nodes:\n  - {{name: pg0, host: 127.0.0.1, port: {p}}}\n\
         users:\n  - {{name: app, password: app, auth: scram-sha-256}}\n\
         pool: {{mode: {mode}, max_server_connections: 1, connect_timeout: 20s, checkout_timeout: 30s}}\n\
         health_check: {{interval: 1s, timeout: 15s, max_failures: 20}}\n",
        admin = port + 1,
        p = cluster.primary_port(),
    )
}

/// The postmaster of node pg0, paused until dropped.
struct PausedPostmaster(i32);

impl PausedPostmaster {
    fn pause(cluster: &Cluster) -> Self {
        let pidfile = cluster.dir.join("pg0/data/postmaster.pid");
        let text = std::fs::read_to_string(&pidfile).expect("postmaster.pid");
        let pid: i32 = text.lines().next().unwrap().trim().parse().unwrap();
        signal(pid, "STOP");
        PausedPostmaster(pid)
    }
}

impl Drop for PausedPostmaster {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

fn signal(pid: i32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Runs `SELECT pg_sleep(seconds)` in the background.
fn sleep_on(
    client: &std::sync::Arc<tokio_postgres::Client>,
    seconds: f64,
) -> tokio::task::JoinHandle<Result<(), tokio_postgres::Error>> {
    let client = std::sync::Arc::clone(client);
    tokio::spawn(async move {
        client
            .batch_execute(&format!("SELECT pg_sleep({seconds})"))
            .await
    })
}

#[tokio::test]
async fn a_cancel_still_on_its_way_cancels_no_later_statement() {
    let Some(cluster) = private_cluster(0, &[]) else {
        return;
    };
    for mode in ["transaction", "session"] {
        let router = Router::start_in(&cluster.dir, |port| config(&cluster, port, mode));
        let first = std::sync::Arc::new(
            connect(&router.conninfo("app", "app"))
                .await
                .expect("first client"),
        );
        // Transaction pooling: the next statement is another client's, on the same (only)
        // server connection. Session pooling: the same client's next statement.
        let second = if mode == "transaction" {
            std::sync::Arc::new(
                connect(&router.conninfo("app", "app"))
                    .await
                    .expect("second client"),
            )
        } else {
            std::sync::Arc::clone(&first)
        };
        let token = first.cancel_token();

        let cancelled = sleep_on(&first, 2.0);
        // Running on the server before the postmaster pauses (a new server connection could
        // not log in meanwhile).
        let running = eventually_async(Duration::from_secs(20), || {
            cluster.superuser_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE 'SELECT pg_sleep(2)%'",
            ) == "1"
        })
        .await;
        assert!(running, "{mode}: the first statement never started");
        let paused = PausedPostmaster::pause(&cluster);
        // pgrouter forwards the cancel; the paused postmaster leaves it unread.
        let cancel = tokio::spawn(async move { token.cancel_query(NoTls).await });
        let ended = tokio::time::timeout(Duration::from_secs(20), cancelled)
            .await
            .expect("the first statement ends")
            .unwrap();
        assert!(
            ended.is_ok(),
            "{mode}: the cancel cannot have run yet: {ended:?}"
        );

        // The next statement on that server connection, while the cancel is still on its way.
        let next = sleep_on(&second, 1.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(paused);
        let result = tokio::time::timeout(Duration::from_secs(30), next)
            .await
            .expect("the next statement ends")
            .unwrap();
        if let Err(e) = &result {
            assert_ne!(
                e.code(),
                Some(&SqlState::QUERY_CANCELED),
                "{mode}: a cancel meant for the earlier statement cancelled the next one"
            );
        }
        result.unwrap_or_else(|e| panic!("{mode}: the next statement failed: {e}"));
        let _ = cancel.await;
    }
}
