//! pgbench through pgrouter: initialisation, then 8 clients for 10 seconds in each query mode with
//! zero failed transactions.

use crate::harness::{cluster, shared_router, Router};
use std::process::Command;
use std::sync::Mutex;

/// pgbench tests share the pgbench tables: one at a time.
static PGBENCH_TABLES: Mutex<()> = Mutex::new(());

fn pgbench(url: &str, args: &[&str]) -> String {
    pgbench_as(url, args, "pgbench")
}

/// pgbench with its server connections named `app_name` (`PGAPPNAME`), so that a test can count
/// them in `pg_stat_activity` apart from other routers' pooled ones.
fn pgbench_as(url: &str, args: &[&str], app_name: &str) -> String {
    let out = Command::new("pgbench")
        .args(args)
        .arg(url)
        .env("PGAPPNAME", app_name)
        .output()
        .expect("pgbench runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

#[test]
fn pgbench_all_query_modes_without_failures() {
    let Some(router) = shared_router() else {
        return;
    };
    let _tables = PGBENCH_TABLES.lock().unwrap_or_else(|e| e.into_inner());
    let url = router.url("app", "app");
    pgbench(&url, &["-i", "-s", "2", "-q"]);
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench(&url, &["-M", mode, "-c", "8", "-j", "2", "-T", "10"]);
        let processed = out
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no transaction count in:\n{out}"));
        assert!(processed > 0, "{out}");
        assert!(
            out.contains("number of failed transactions: 0 (0.000%)"),
            "mode {mode}:\n{out}"
        );
        eprintln!(
            "pgbench -M {mode} -c 8 -T 10 through pgrouter: {processed} transactions, 0 failed"
        );
    }
}

/// Select-only pgbench with 16 clients through a router whose primary has weight 0: the two
/// replicas share the reads (each at least 30%) and the primary serves none.
#[test]
fn pgbench_select_only_spreads_reads_over_the_replicas() {
    let Some(cluster) = cluster() else { return };
    let Some(shared) = shared_router() else {
        return;
    };
    let _tables = PGBENCH_TABLES.lock().unwrap_or_else(|e| e.into_inner());
    pgbench(&shared.url("app", "app"), &["-i", "-s", "2", "-q"]);
    cluster.wait_for_replicas();
    let router = Router::start_weighted(cluster, [0, 1, 1], "");
    let commits = |node: usize| -> i64 {
        cluster
            .node_sql(
                node,
                "SELECT xact_commit FROM pg_stat_database WHERE datname = 'app'",
            )
            .parse()
            .unwrap()
    };
    // Statistics are flushed by backends at most every second: read them after a pause.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let before: Vec<i64> = (0..3).map(commits).collect();
    let out = pgbench(
        &router.url("app", "app"),
        &[
            "-n", "-S", "-M", "prepared", "-c", "16", "-j", "2", "-T", "20",
        ],
    );
    assert!(
        out.contains("number of failed transactions: 0 (0.000%)"),
        "{out}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after: Vec<i64> = (0..3).map(commits).collect();
    let served: Vec<i64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: i64 = served.iter().sum();
    eprintln!("pgbench -S -c 16 through pgrouter: transactions per node {served:?}");
    // The primary only sees pgbench's own start-up chatter, if anything: a handful, not reads.
    assert!(served[0] * 100 < total, "primary served reads: {served:?}");
    for (node, n) in served.iter().enumerate().skip(1) {
        assert!(
            n * 100 >= total * 30,
            "replica pg{node} served {n} of {total}: {served:?}"
        );
    }
}

/// Transaction pooling: 40 pgbench clients, in every query mode (prepared statements included),
/// share 4 server connections per node with no failed transaction; then 20 clients that each
/// connect anew for every transaction (`-C`).
#[test]
fn pgbench_through_transaction_pooling() {
    const APP_NAME: &str = "pgbench-transaction-pooling";
    let Some(cluster) = cluster() else { return };
    let _tables = PGBENCH_TABLES.lock().unwrap_or_else(|e| e.into_inner());
    let router = Router::start(
        cluster,
        "pool: {mode: transaction, max_server_connections: 4, checkout_timeout: 30s}\n",
    );
    let url = router.url("app", "app");
    pgbench(&url, &["-i", "-s", "2", "-q"]);
    for (mode, extra) in [
        ("simple", &[][..]),
        ("extended", &[][..]),
        ("prepared", &[][..]),
        ("simple", &["-C"][..]),
    ] {
        let clients = if extra.is_empty() { "40" } else { "20" };
        let mut args = vec!["-M", mode, "-c", clients, "-j", "2", "-T", "5"];
        args.extend_from_slice(extra);
        // Count this router's server connections while pgbench runs (afterwards they would
        // only be idle in the pool).
        let run = {
            let url = url.clone();
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            std::thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                pgbench_as(&url, &args, APP_NAME)
            })
        };
        let mut most = 0u32;
        while !run.is_finished() {
            let used: u32 = cluster
                .superuser_sql(&format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
                     AND client_port IS NOT NULL AND application_name = '{APP_NAME}'"
                ))
                .parse()
                .unwrap();
            most = most.max(used);
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let out = run.join().unwrap();
        assert!(
            out.contains("number of failed transactions: 0 (0.000%)"),
            "{args:?}:\n{out}"
        );
        assert!(
            most > 0,
            "{args:?}: no server connection seen while pgbench ran"
        );
        assert!(
            most <= 12,
            "{args:?}: at most 4 server connections per node, {most} seen"
        );
        let tps = out
            .lines()
            .find(|l| l.starts_with("tps"))
            .unwrap_or_default()
            .to_owned();
        eprintln!("pgbench {args:?} through transaction pooling: {tps}");
    }
}

/// Session workers (`worker_threads: 3`) in transaction pooling with 3 server connections,
/// fewer than the workers want: connections are taken over between workers' idle lists all
/// along. TPC-B in every query mode (prepared statements travel with their connection) has no
/// failed transaction, and every update is there exactly once: the accounts' balances add up to
/// the history's deltas. On a cluster of its own: its WAL would put the shared replicas behind
/// other tests' reads.
#[test]
fn pgbench_through_worker_threads() {
    let Some(cluster) = crate::harness::private_cluster(0, &[]) else {
        return;
    };
    let router = Router::start_in(&cluster.dir, |port| {
        format!(
            "listen: 127.0.0.1:{port}\n\
             admin_listen: 127.0.0.1:{admin}\n\
             nodes:\n  - {{name: pg0, host: 127.0.0.1, port: {p}}}\n\
             users:\n  - {{name: app, password: app, auth: scram-sha-256}}\n\
             worker_threads: 3\n\
             pool: {{mode: transaction, max_server_connections: 3, checkout_timeout: 30s}}\n",
            admin = port + 1,
            p = cluster.primary_port(),
        )
    });
    let url = router.url("app", "app");
    pgbench(&url, &["-i", "-s", "1", "-q"]);
    for mode in ["simple", "extended", "prepared"] {
        // `-n`: no vacuum before the run, which would also empty the history.
        let out = pgbench(&url, &["-n", "-M", mode, "-c", "12", "-j", "2", "-T", "3"]);
        assert!(
            out.contains("number of failed transactions: 0 (0.000%)"),
            "{mode}:\n{out}"
        );
    }
    assert!(
        router
            .log_text()
            .contains("idle server connection taken over from another worker"),
        "no connection changed workers: the test does not exercise that"
    );
    let sums = cluster.superuser_sql(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(delta) FROM pgbench_history), \
         (SELECT sum(tbalance) FROM pgbench_tellers), (SELECT sum(bbalance) FROM pgbench_branches), \
         (SELECT count(*) FROM pgbench_history)",
    );
    let sums: Vec<&str> = sums.split('|').collect();
    assert!(
        sums.iter().take(4).all(|s| *s == sums[0]) && sums[4] != "0",
        "balances and history disagree (accounts, history, tellers, branches, rows): {sums:?}"
    );
}
