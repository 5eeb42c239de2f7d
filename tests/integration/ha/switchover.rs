//! A planned switchover on a plain streaming cluster with `topology.discovery: sql`, the way an
//! operator does it by hand: the primary stopped cleanly (`pg_ctl -m fast`), a standby promoted,
//! the other standby re-pointed at it, the old primary rewound (`pg_rewind`) and started as a
//! standby of the new one. Writers and readers run through pgrouter in both pooling modes.
//!
//! Once the table names the new primary, no write may reach a node the table does not call
//! primary (that answers `25006 cannot execute INSERT in a read-only transaction`).
//!
//! The health-check interval is long (10 s) on purpose: pgrouter must see the switchover as it
//! happens (the promoted node's `in_hot_standby` push, the old primary's shutdown, refused logins
//! and writes all probe at once), not at the next interval. With polling alone, sessions kept
//! logging in to the old primary, restarted as a standby, for up to one interval.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_with_rewind_moves_every_write_to_the_new_primary() {
    let _one = HA_TESTS.lock().await;
    let Some(cluster) = ScriptCluster::up("scripts/dev-cluster.sh", "switchover", 3, &[]) else {
        return;
    };
    let routers = [router(&cluster, "session"), router(&cluster, "transaction")];
    for r in &routers {
        r.expect_log(
            "topology change: primary: none -> pg0",
            Duration::from_secs(20),
        )
        .await;
    }
    let mut loads = Vec::new();
    for (i, r) in routers.iter().enumerate() {
        let first = 1 + 1_000_000 * i as i64;
        loads.push(Workload::start_at(&r.conninfo("app", "app"), 2, first).await);
    }
    for load in &loads {
        load.wait_for(20, 20).await;
    }

    cluster.node("stop", "pg0");
    cluster.node("promote", "pg1");
    let promoted_at = Instant::now();
    let (ok, out) = cluster.run(&["follow", "pg2", "pg1"]);
    assert!(ok, "follow failed:\n{out}");
    let (ok, out) = cluster.run(&["rewind", "pg0", "pg1"]);
    assert!(ok, "rewind failed:\n{out}");
    let rewound_at = Instant::now();

    // Both routers name pg1 and see pg0 back as a replica.
    for r in &routers {
        assert!(
            eventually_async(Duration::from_secs(30), || {
                let log = r.log_text();
                log.lines()
                    .any(|l| l.contains("topology change: primary:") && l.contains("-> pg1"))
                    && log
                        .lines()
                        .any(|l| l.contains("node pg0:") && l.contains("-> replica up"))
            })
            .await,
            "{}",
            r.log_text()
        );
    }
    let settled_at = Instant::now();
    // Writes go on after pg0 is back as a standby: a session or pooled connection still on it
    // would now get 25006.
    for load in &loads {
        load.wait_for(30, 30).await;
    }
    let (p0, p1) = (cluster.port(0), cluster.port(1));
    for (mode, load) in ["session", "transaction"].iter().zip(loads) {
        let (writer, readers) = load.finish().await;
        let read_only: Vec<_> = writer
            .errors
            .iter()
            .filter(|(_, e)| e.starts_with("25006"))
            .map(|(at, e)| (at.saturating_duration_since(promoted_at), e.clone()))
            .collect();
        eprintln!(
            "{mode} pooling: promotion +{:?} rewound, +{:?} table settled; writer errors: {:?}",
            rewound_at - promoted_at,
            settled_at - promoted_at,
            writer
                .errors
                .iter()
                .map(|(at, e)| (at.saturating_duration_since(promoted_at), e))
                .collect::<Vec<_>>()
        );
        assert!(
            read_only.is_empty(),
            "{mode} pooling: writes reached a standby after the switchover: {read_only:?}"
        );
        assert_eq!(writer.writes_on_standby, 0);
        let resumed = writer
            .acked
            .iter()
            .map(|(_, at, _)| *at)
            .find(|at| *at > promoted_at)
            .map(|at| at - promoted_at);
        eprintln!("{mode} pooling: first write {resumed:?} after the promotion");
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
            !after.is_empty(),
            "{mode} pooling: no write after the switchover"
        );
        assert!(
            after.iter().all(|(_, _, port)| *port == p1),
            "{mode} pooling: a write after the promotion ran elsewhere than pg1"
        );
        let missing = missing_writes(p1, &writer.acked).await;
        assert!(
            missing.is_empty(),
            "{mode} pooling: lost writes {missing:?}"
        );
        for r in &readers {
            assert!(
                r.reads
                    .iter()
                    .all(|(at, port, in_recovery)| *at < promoted_at
                        || *port != p0
                        || *in_recovery),
                "{mode} pooling: a read ran on pg0 as a primary after the promotion"
            );
        }
    }
}
