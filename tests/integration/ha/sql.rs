//! `topology.discovery: sql` on a plain streaming cluster: replicas stopped, paused, lagging and
//! back; then the primary killed and a standby promoted by hand (`pg_ctl promote`), and the old
//! primary restarted unrewound (a false primary).

use super::{assert_failover_outcome, FailoverTimes, ScriptCluster, Workload, HA_TESTS};
use crate::harness::{connect, eventually_async, Router};
use std::process::Command;
use std::time::{Duration, Instant};

const INTERVAL_MS: u64 = 500;
const TIMEOUT_MS: u64 = 1000;
const MAX_FAILURES: u64 = 3;

fn superuser(cluster: &ScriptCluster, node: usize, sql: &str) -> String {
    crate::harness::Cluster {
        dir: cluster.dir.clone(),
        base_port: cluster.base_port,
    }
    .node_sql(node, sql)
}

/// Sends a signal to a node's postmaster and every process it started.
fn signal_node(cluster: &ScriptCluster, node: usize, signal: &str) {
    let pidfile = cluster.dir.join(format!("pg{node}/data/postmaster.pid"));
    let pid = std::fs::read_to_string(pidfile).unwrap();
    let postmaster = pid.lines().next().unwrap().trim().to_owned();
    let children = || -> Vec<String> {
        let out = Command::new("pgrep")
            .args(["-P", &postmaster])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let kill = |pids: &[String]| {
        // A child may exit between pgrep and kill: kill's status is not asserted per pid.
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .args(pids)
            .status()
            .unwrap();
    };
    kill(std::slice::from_ref(&postmaster));
    // A backend the postmaster forked just before it was stopped (a health check reconnecting,
    // a pooled connection opening) is not in an earlier list: list the children again until
    // every one has had the signal. The stopped postmaster forks no more, so this ends.
    let mut signalled = Vec::new();
    for _ in 0..10 {
        let fresh: Vec<String> = children()
            .into_iter()
            .filter(|p| !signalled.contains(p))
            .collect();
        if fresh.is_empty() {
            break;
        }
        kill(&fresh);
        signalled.extend(fresh);
    }
}

/// The port a fresh session's read lands on.
async fn fresh_read_port(router: &Router) -> u16 {
    super::read_ports(router, 1).await[0]
}

/// Whether a run of fresh sessions (one per reader in the rotation, and some) avoids `port`.
async fn fresh_reads_avoid(router: &Router, port: u16) -> bool {
    for _ in 0..6 {
        if fresh_read_port(router).await == port {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_discovery_follows_replicas_and_a_manual_failover() {
    let _one = HA_TESTS.lock().await;
    let Some(cluster) = ScriptCluster::up("scripts/dev-cluster.sh", "sql", 3, &[]) else {
        return;
    };
    // Acknowledged commits must be on pg1 (promoted later): wait for it synchronously.
    superuser(
        &cluster,
        0,
        "ALTER SYSTEM SET synchronous_standby_names = 'pg1'",
    );
    superuser(&cluster, 0, "SELECT pg_reload_conf()");
    let router = Router::start_in(&cluster.dir, |port| {
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:0\n{}\
             users:\n  - {{name: app, password: app}}\n\
             health_check: {{interval: {INTERVAL_MS}ms, timeout: {TIMEOUT_MS}ms, max_failures: {MAX_FAILURES}, min_successes: 2}}\n\
             routing: {{max_replica_lag_bytes: 1MB, max_replica_lag: 0s}}\n\
             topology: {{discovery: sql, failover_timeout: 30s}}\n",
            cluster.nodes_yaml(|_| String::new())
        )
    });
    let conninfo = router.conninfo("app", "app");
    let [p0, p1, p2] = [cluster.port(0), cluster.port(1), cluster.port(2)];
    router
        .expect_log(
            "topology change: primary: none -> pg0",
            Duration::from_secs(10),
        )
        .await;

    // --- A replica stopped under read load: reads go on without errors; it comes back. ---
    let load = Workload::start(&conninfo, 3).await;
    load.wait_for(10, 30).await;
    cluster.node("stop", "pg2");
    assert!(
        fresh_reads_avoid(&router, p2).await || {
            tokio::time::sleep(Duration::from_secs(2)).await;
            fresh_reads_avoid(&router, p2).await
        }
    );
    cluster.node("start", "pg2");
    assert!(
        super::reads_reach(&router, p2, 50, 1).await,
        "pg2 did not return to rotation:\n{}",
        router.log_text()
    );
    let (writer, readers) = load.finish().await;
    for r in &readers {
        assert!(
            r.errors.is_empty(),
            "a reader saw errors while a replica stopped: {:?}",
            r.errors
        );
    }
    assert!(
        writer.errors.is_empty(),
        "writes failed while a replica stopped: {:?}",
        writer.errors
    );

    // --- A replica frozen with SIGSTOP: its health checks time out and reads move away. ---
    let idle: Vec<_> = {
        // Sessions that read from pg2 and then sit idle.
        let mut on_p2 = Vec::new();
        for _ in 0..9 {
            let c = connect(&conninfo).await.unwrap();
            let rows = c.simple_query("SELECT inet_server_port()").await.unwrap();
            if crate::harness::rows(&rows)[0].get(0) == Some(p2.to_string().as_str()) {
                on_p2.push(c);
            }
        }
        on_p2
    };
    assert!(!idle.is_empty(), "no session was given pg2 for reads");
    let went_down = "node pg2: replica up -> unknown down";
    let came_back = "node pg2: unknown down -> replica up";
    let downs = router.log_text().matches(went_down).count();
    signal_node(&cluster, 2, "STOP");
    let frozen_at = Instant::now();
    let window = Duration::from_millis(TIMEOUT_MS * MAX_FAILURES + INTERVAL_MS * 2);
    let moved = eventually_async(Duration::from_secs(20), || {
        router.log_text().matches(went_down).count() > downs
    })
    .await;
    let detected = frozen_at.elapsed();
    assert!(
        moved,
        "a frozen replica was not marked down:\n{}",
        router.log_text()
    );
    eprintln!("frozen replica marked down after {detected:?} (timeout x max_failures = {window:?} + one interval)");
    for c in &idle {
        let rows = tokio::time::timeout(
            Duration::from_secs(10),
            c.simple_query("SELECT inet_server_port()"),
        )
        .await
        .expect("an idle session's next read went to the frozen replica")
        .unwrap();
        assert_ne!(
            crate::harness::rows(&rows)[0].get(0),
            Some(p2.to_string().as_str())
        );
    }
    assert!(fresh_reads_avoid(&router, p2).await);
    signal_node(&cluster, 2, "CONT");
    drop(idle);

    // --- A lagging replica leaves rotation past the threshold and returns after catching up. ---
    let backs = downs + 1;
    assert!(
        eventually_async(Duration::from_secs(20), || router
            .log_text()
            .matches(came_back)
            .count()
            > backs)
        .await
    );
    superuser(&cluster, 2, "SELECT pg_wal_replay_pause()");
    let writer = connect(&conninfo).await.unwrap();
    writer
        .batch_execute(
            "CREATE TABLE lag_filler AS SELECT g, md5(g::text) AS m FROM generate_series(1, 60000) g",
        )
        .await
        .unwrap();
    router
        .expect_log(
            "node pg2: replica up -> replica lagging",
            Duration::from_secs(20),
        )
        .await;
    assert!(
        fresh_reads_avoid(&router, p2).await,
        "reads still reach a lagging replica"
    );
    superuser(&cluster, 2, "SELECT pg_wal_replay_resume()");
    router
        .expect_log(
            "node pg2: replica lagging -> replica up",
            Duration::from_secs(20),
        )
        .await;

    // --- The primary killed, pg1 promoted by hand: writes resume, nothing acknowledged is lost. ---
    let load = Workload::start(&conninfo, 2).await;
    load.wait_for(20, 20).await;
    let kill_started = Instant::now();
    cluster.node("kill", "pg0");
    // Requests answered before the kill command returned may have run on pg0.
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.node("promote", "pg1");
    let promoted_at = Instant::now();
    assert!(
        eventually_async(Duration::from_secs(30), || router
            .log_text()
            .contains("topology change: primary: pg0 -> pg1")
            || router
                .log_text()
                .contains("topology change: primary: none -> pg1"))
        .await,
        "{}",
        router.log_text()
    );
    // Writes resume on the new primary.
    load.wait_for(20, 20).await;
    let (writer, readers) = load.finish().await;
    let times = FailoverTimes {
        kill_started,
        killed_at,
        promoted_at,
    };
    let interval = Duration::from_millis(INTERVAL_MS);
    let (gap, after) = assert_failover_outcome(&writer, &readers, &times, p0, p1, interval).await;
    eprintln!(
        "sql failover: write gap {gap:?} from the kill, {after:?} after pg_ctl promote returned"
    );

    // --- The old primary restarted without rewind: a false primary, never used. ---
    cluster.node("start", "pg0");
    router
        .expect_log("false primary", Duration::from_secs(20))
        .await;
    let c = connect(&conninfo).await.unwrap();
    for i in 0..10 {
        let rows = c
            .simple_query(&format!(
                "INSERT INTO ha_counter VALUES ({}) RETURNING inet_server_port()",
                1_000_000 + i
            ))
            .await
            .unwrap();
        assert_eq!(
            crate::harness::rows(&rows)[0].get(0),
            Some(p1.to_string().as_str())
        );
        assert_ne!(
            fresh_read_port(&router).await,
            p0,
            "a read reached the false primary"
        );
    }

    // --- No primary at all: writes fail after topology.failover_timeout, the session stays. ---
    let impatient = Router::start_in(&cluster.dir, |port| {
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:0\n{}\
             users:\n  - {{name: app, password: app}}\n\
             health_check: {{interval: {INTERVAL_MS}ms, timeout: {TIMEOUT_MS}ms}}\n\
             topology: {{failover_timeout: 2s}}\n",
            cluster.nodes_yaml(|_| String::new())
        )
    });
    let session = connect(&impatient.conninfo("app", "app")).await.unwrap();
    session.simple_query("SELECT 1").await.unwrap();
    cluster.node("kill", "pg1");
    let started = Instant::now();
    let error = session
        .simple_query("INSERT INTO ha_counter VALUES (-1)")
        .await
        .expect_err("no primary");
    assert_eq!(
        error.as_db_error().map(|e| e.code().code()),
        Some("57P03"),
        "{error:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it waited for a failover first"
    );
    // Reads still work on the surviving replica, on the same client connection.
    let rows = session
        .simple_query("SELECT inet_server_port()")
        .await
        .unwrap();
    assert_eq!(
        crate::harness::rows(&rows)[0].get(0),
        Some(p2.to_string().as_str())
    );
    // Bounded: a login that hangs fails the test instead of the whole run.
    let login = tokio::time::timeout(
        Duration::from_secs(30),
        connect(&impatient.conninfo("app", "app")),
    )
    .await
    .expect("a login without a primary must not hang")
    .expect_err("no login without a primary");
    assert_eq!(
        login.as_db_error().map(|e| e.code().code()),
        Some("57P03"),
        "{login:?}"
    );
}
