//! Planned switchovers under load, in both pooling modes at once: by hand on a plain streaming
//! cluster with `topology.discovery: sql` (the primary stopped cleanly with `pg_ctl -m fast`, a
//! standby promoted, the other standby re-pointed at it, the old primary rewound with
//! `pg_rewind` and started as a standby of the new one), and by the HA managers
//! (`managers.rs`: `patronictl switchover`, and repmgr's steps).
//!
//! Once the table names the new primary, no write may reach a node the table does not call
//! primary (that answers `25006 cannot execute INSERT in a read-only transaction`).
//!
//! The health-check interval of the `sql` test is long (10 s) on purpose: pgrouter must see the
//! switchover as it happens (the promoted node's `in_hot_standby` push, the old primary's
//! shutdown, refused logins and writes all probe at once), not at the next interval. With polling
//! alone, sessions kept logging in to the old primary, restarted as a standby, for up to one
//! interval.

use super::{missing_writes, ScriptCluster, Workload, HA_TESTS};
use crate::harness::{eventually_async, Router};
use std::time::{Duration, Instant};

const INTERVAL_MS: u64 = 10_000;

/// How soon after the promotion writes must succeed again: well under one interval (a margin
/// over the 1 s goal for a loaded 2-core machine).
const RESUME_WITHIN: Duration = Duration::from_secs(3);

fn router(cluster: &ScriptCluster, mode: &str) -> Router {
    Router::start_in(&cluster.dir, |port| {
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:0\n{}\
             users:\n  - {{name: app, password: app}}\n\
             pool: {{mode: {mode}}}\n\
             health_check: {{interval: {INTERVAL_MS}ms, timeout: 1s, max_failures: 3, min_successes: 1}}\n\
             topology: {{discovery: sql, failover_timeout: 30s}}\n",
            cluster.nodes_yaml(|_| String::new())
        )
    })
}

/// What a switchover looked like through pgrouter.
pub struct SwitchoverReport {
    /// Per router (pooling mode): the first write acknowledged by the new primary, from the
    /// start of the switchover.
    pub first_write_on_new: Vec<(String, Duration)>,
    /// Per router: the longest time between two acknowledged writes.
    pub longest_write_gap: Vec<(String, Duration)>,
}

/// Runs `switch` (a planned switchover to node `new`, returning once the new primary accepts
/// writes) while a writer and two readers run through each router, then checks what they saw:
/// no write refused as read-only (none reached a standby), none acknowledged by a standby or,
/// after the switch, by anything but the new primary, none lost, and writes resumed within
/// [`RESUME_WITHIN`] of the promotion. `settled` is given what each router logged since the
/// switchover began, until it finds the new roles there.
pub async fn switchover_under_load(
    cluster: &ScriptCluster,
    routers: &[(&str, &Router)],
    old: usize,
    new: usize,
    switch: impl FnOnce(),
    settled: impl Fn(&str) -> bool,
) -> SwitchoverReport {
    let mut loads = Vec::new();
    for (i, (_, r)) in routers.iter().enumerate() {
        let first = 1 + 1_000_000 * (i as i64 + 1) + 10_000_000 * new as i64;
        loads.push(Workload::start_at(&r.conninfo("app", "app"), 2, first).await);
    }
    for load in &loads {
        load.wait_for(20, 20).await;
    }
    let log_before: Vec<usize> = routers.iter().map(|(_, r)| r.log_text().len()).collect();
    let started = Instant::now();
    switch();
    let promoted_at = Instant::now();
    for ((mode, r), from) in routers.iter().zip(log_before) {
        assert!(
            eventually_async(Duration::from_secs(60), || settled(
                r.log_text().get(from..).unwrap_or_default()
            ))
            .await,
            "{mode} pooling: the router did not follow the switchover:\n{}",
            r.log_text()
        );
    }
    // Writes go on after the old primary is back as a standby: a session or pooled connection
    // still on it would now get 25006.
    for load in &loads {
        load.wait_for(30, 30).await;
    }
    let (p_old, p_new) = (cluster.port(old), cluster.port(new));
    let mut report = SwitchoverReport {
        first_write_on_new: Vec::new(),
        longest_write_gap: Vec::new(),
    };
    for ((mode, _), load) in routers.iter().zip(loads) {
        let (writer, readers) = load.finish().await;
        let since = |at: Instant| at.saturating_duration_since(started);
        let read_only: Vec<_> = writer
            .errors
            .iter()
            .filter(|(_, e)| e.starts_with("25006"))
            .map(|(at, e)| (since(*at), e.clone()))
            .collect();
        eprintln!(
            "{mode} pooling: writer errors after the switchover began: {:?}",
            writer
                .errors
                .iter()
                .filter(|(at, _)| *at > started)
                .map(|(at, e)| (since(*at), e))
                .collect::<Vec<_>>()
        );
        assert!(
            read_only.is_empty(),
            "{mode} pooling: writes reached a standby during the switchover: {read_only:?}"
        );
        assert_eq!(writer.writes_on_standby, 0);
        let resumed = writer
            .acked
            .iter()
            .map(|(_, at, _)| *at)
            .find(|at| *at > promoted_at)
            .map(|at| at - promoted_at);
        assert!(
            resumed.is_some_and(|r| r < RESUME_WITHIN),
            "{mode} pooling: writes resumed {resumed:?} after the promotion"
        );
        let after: Vec<_> = writer
            .acked
            .iter()
            .filter(|(_, at, _)| *at > promoted_at)
            .collect();
        assert!(
            after.iter().all(|(_, _, port)| *port == p_new),
            "{mode} pooling: a write after the promotion ran elsewhere than pg{new}"
        );
        let missing = missing_writes(p_new, &writer.acked).await;
        assert!(
            missing.is_empty(),
            "{mode} pooling: lost writes {missing:?}"
        );
        for r in &readers {
            assert!(
                r.reads
                    .iter()
                    .all(|(at, port, in_recovery)| *at < promoted_at
                        || *port != p_old
                        || *in_recovery),
                "{mode} pooling: a read ran on pg{old} as a primary after the promotion"
            );
        }
        let first_on_new = writer
            .acked
            .iter()
            .find(|(_, at, port)| *at > started && *port == p_new)
            .map(|(_, at, _)| since(*at))
            .unwrap_or_default();
        let gap = writer
            .acked
            .windows(2)
            .map(|w| w[1].1 - w[0].1)
            .max()
            .unwrap_or_default();
        report
            .first_write_on_new
            .push((mode.to_string(), first_on_new));
        report.longest_write_gap.push((mode.to_string(), gap));
    }
    report
}

/// Whether a router's log shows node `new` made primary and node `old` back as a replica.
pub fn roles_swapped(log: &str, old: usize, new: usize) -> bool {
    let (to_new, old_node) = (format!("-> pg{new}"), format!("node pg{old}:"));
    log.lines()
        .any(|l| l.contains("topology change: primary:") && l.contains(&to_new))
        && log
            .lines()
            .any(|l| l.contains(&old_node) && l.contains("-> replica up"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_with_rewind_moves_every_write_to_the_new_primary() {
    let _one = HA_TESTS.lock().await;
    let Some(cluster) = ScriptCluster::up("scripts/dev-cluster.sh", "switchover", 3, &[]) else {
        return;
    };
    let (session, transaction) = (router(&cluster, "session"), router(&cluster, "transaction"));
    for r in [&session, &transaction] {
        r.expect_log(
            "topology change: primary: none -> pg0",
            Duration::from_secs(20),
        )
        .await;
    }
    let report = switchover_under_load(
        &cluster,
        &[("session", &session), ("transaction", &transaction)],
        0,
        1,
        || {
            cluster.node("stop", "pg0");
            cluster.node("promote", "pg1");
            for args in [["follow", "pg2", "pg1"], ["rewind", "pg0", "pg1"]] {
                let (ok, out) = cluster.run(&args);
                assert!(ok, "{args:?} failed:\n{out}");
            }
        },
        |log| roles_swapped(log, 0, 1),
    )
    .await;
    eprintln!(
        "sql switchover (interval {INTERVAL_MS} ms): first write on the new primary {:?} after the stop; longest write gap {:?}",
        report.first_write_on_new, report.longest_write_gap
    );
}

/// A transaction open on the primary when the table stops calling it primary while it is still
/// up (a standby promoted beside it, the moment a switchover or split brain makes): its next
/// statement fails once with `08006`, nothing more reaches the old node (its transaction is rolled
/// back there), `ROLLBACK` succeeds, and the session's next write runs on the new primary. In both
/// pooling modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_on_a_primary_that_lost_its_role_fails_once() {
    let _one = HA_TESTS.lock().await;
    let Some(cluster) = ScriptCluster::up("scripts/dev-cluster.sh", "moved-tx", 3, &[]) else {
        return;
    };
    let routers = [router(&cluster, "session"), router(&cluster, "transaction")];
    let mut sessions = Vec::new();
    for (i, r) in routers.iter().enumerate() {
        r.expect_log(
            "topology change: primary: none -> pg0",
            Duration::from_secs(20),
        )
        .await;
        let c = crate::harness::connect(&r.conninfo("app", "app"))
            .await
            .unwrap();
        // Created on its own: statements before a BEGIN in one query join its transaction.
        c.batch_execute("CREATE TABLE IF NOT EXISTS moved_tx (v int)")
            .await
            .unwrap();
        c.batch_execute(&format!("BEGIN; INSERT INTO moved_tx VALUES ({i})"))
            .await
            .unwrap();
        sessions.push(c);
    }
    let (p0, p1) = (cluster.port(0), cluster.port(1));
    // The table has reached pg1 before it is promoted (the sessions write there afterwards).
    let standby = crate::harness::connect(&format!(
        "host=127.0.0.1 port={p1} user=app password=app dbname=app"
    ))
    .await
    .unwrap();
    assert!(wait_for_table(&standby).await, "moved_tx did not reach pg1");
    // pg1 promoted while pg0 keeps running: pg0 becomes a false primary (older timeline).
    cluster.node("promote", "pg1");
    for r in &routers {
        assert!(
            eventually_async(Duration::from_secs(30), || r
                .log_text()
                .lines()
                .any(|l| l.contains("topology change: primary:") && l.contains("-> pg1")))
            .await,
            "{}",
            r.log_text()
        );
    }
    for (i, c) in sessions.iter().enumerate() {
        let error = c
            .simple_query(&format!("INSERT INTO moved_tx VALUES ({i})"))
            .await
            .expect_err("the transaction's node lost its role");
        let db = error.as_db_error().expect("an error from pgrouter");
        assert_eq!(db.code().code(), "08006", "{db:?}");
        assert!(db.message().contains("the primary changed"), "{db:?}");
        c.simple_query("ROLLBACK").await.unwrap();
        let rows = c
            .simple_query("INSERT INTO moved_tx VALUES (100) RETURNING inet_server_port()")
            .await
            .unwrap();
        assert_eq!(
            crate::harness::first_value(&rows),
            p1.to_string(),
            "the next write runs on the new primary"
        );
    }
    // Nothing of the abandoned transactions committed on the old primary.
    let direct = crate::harness::connect(&format!(
        "host=127.0.0.1 port={p0} user=app password=app dbname=app"
    ))
    .await
    .unwrap();
    let rows = direct
        .simple_query("SELECT count(*) FROM moved_tx")
        .await
        .unwrap();
    assert_eq!(crate::harness::first_value(&rows), "0");
}

/// Waits until `moved_tx` exists on the node `c` is connected to.
async fn wait_for_table(c: &tokio_postgres::Client) -> bool {
    for _ in 0..100 {
        let rows = c
            .simple_query("SELECT to_regclass('moved_tx') IS NOT NULL")
            .await
            .unwrap();
        if crate::harness::first_value(&rows) == "t" {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
