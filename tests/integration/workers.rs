//! `worker_threads` above 1: sessions run on worker threads (a runtime each, a session staying
//! on one), in both pooling modes. Every write lands exactly once and is read back inside its
//! transaction, autocommit reads reach the replicas, one node limit holds across the workers'
//! idle lists, the work is done by the worker threads, and a shutdown drains their sessions.

use crate::harness::{cluster, connect, eventually, Router};
use std::time::Duration;

const CLIENTS: i32 = 12;
const ROUNDS: i32 = 25;
const MAX_PER_NODE: u32 = 4;

/// The process's threads named `pgrouter-w<N>`, with the CPU ticks (user + system) each used.
fn worker_threads(pid: u32) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let name = comm.trim().to_owned();
        if !name.starts_with("pgrouter-w") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: utime and stime are the 12th and 13th.
        let ticks = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>())
            .map_or(0, |f| {
                f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                    + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            });
        found.push((name, ticks));
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_worker_threads_keep_their_meaning_in_both_pooling_modes() {
    let Some(cluster) = cluster() else { return };
    for mode in ["session", "transaction"] {
        let app = format!("workers-{mode}");
        let mut router = Router::start(
            cluster,
            &format!(
                "worker_threads: 3\n\
                 pool: {{mode: {mode}, max_server_connections: {MAX_PER_NODE}, checkout_timeout: 30s}}\n"
            ),
        );
        // The port is bound before the workers start: give them a moment.
        let names = || -> Vec<String> {
            worker_threads(router.pid())
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        eventually(Duration::from_secs(5), || names().len() == 3);
        let names = names();
        assert_eq!(
            names,
            ["pgrouter-w0", "pgrouter-w1", "pgrouter-w2"],
            "{mode}: one thread per worker"
        );
        let table = format!("workers_{mode}");
        let conninfo = format!("{} application_name={app}", router.conninfo("app", "app"));
        let setup = connect(&conninfo).await.unwrap();
        setup
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; \
                 CREATE TABLE {table} (client int, n int, PRIMARY KEY (client, n))"
            ))
            .await
            .unwrap();
        drop(setup);

        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (conninfo, table) = (conninfo.clone(), table.clone());
                tokio::spawn(async move {
                    let c = connect(&conninfo).await.unwrap();
                    let mut on_replica = 0;
                    for n in 0..ROUNDS {
                        // A write and a read of it in one transaction: same server, sees it.
                        let tx = format!(
                            "BEGIN; INSERT INTO {table} VALUES ({client}, {n}); \
                             SELECT count(*) FROM {table} WHERE client = {client}; COMMIT"
                        );
                        let rows = c.simple_query(&tx).await.unwrap();
                        let seen = crate::harness::first_value(&rows).to_owned();
                        assert_eq!(seen, (n + 1).to_string(), "client {client} round {n}");
                        // An autocommit read: a replica's job.
                        let row = c
                            .query_one("SELECT pg_is_in_recovery()", &[])
                            .await
                            .unwrap();
                        if row.get::<_, bool>(0) {
                            on_replica += 1;
                        }
                    }
                    on_replica
                })
            })
            .collect();
        // The node limit holds across the workers while they run.
        let mut most = 0u32;
        while clients.iter().any(|c| !c.is_finished()) {
            let used: u32 = cluster
                .superuser_sql(&format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' \
                     AND backend_type = 'client backend'"
                ))
                .parse()
                .unwrap_or(0);
            most = most.max(used);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut replica_reads = 0;
        for c in clients {
            replica_reads += c.await.expect("a client failed");
        }
        assert!(replica_reads > 0, "{mode}: no read reached a replica");
        assert!(
            most <= MAX_PER_NODE,
            "{mode}: {most} server connections on the primary (limit {MAX_PER_NODE})"
        );
        let check = connect(&conninfo).await.unwrap();
        let rows = check
            .simple_query(&format!(
                "SELECT count(*), count(DISTINCT (client, n)) FROM {table}"
            ))
            .await
            .unwrap();
        let written = crate::harness::rows(&rows);
        let expected = (CLIENTS * ROUNDS).to_string();
        assert_eq!(
            (written[0].get(0), written[0].get(1)),
            (Some(expected.as_str()), Some(expected.as_str())),
            "{mode}: every write exactly once"
        );
        check
            .batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
        drop(check);

        // Each worker counts in its own shard; the exposition has them all.
        let (status, metrics) = crate::harness::http(&router.admin_addr(), "GET", "/metrics");
        assert_eq!(status, 200);
        let value = |name: &str| -> u64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} missing:\n{metrics}")) as u64
        };
        let requests = u64::try_from(CLIENTS * ROUNDS * 2).unwrap();
        assert!(
            value("pgrouter_requests_total ") >= requests,
            "{mode}: requests counted on the workers are missing"
        );
        assert!(
            value("pgrouter_request_duration_seconds_count ") >= requests,
            "{mode}: request latencies recorded on the workers are missing"
        );

        // The sessions ran on the workers, not on the main thread.
        let busy = worker_threads(router.pid())
            .into_iter()
            .filter(|(_, ticks)| *ticks > 0)
            .count();
        assert!(busy >= 1, "{mode}: the sessions did not run on the workers");

        // A shutdown waits for the workers' sessions and exits cleanly.
        let idle = connect(&conninfo).await.unwrap();
        idle.batch_execute("SELECT 1").await.unwrap();
        router.signal("TERM");
        let status = router
            .wait_exit(Duration::from_secs(10))
            .expect("pgrouter did not exit after a shutdown request");
        assert!(status.success(), "{mode}: {status:?}");
        assert!(
            !router.log_text().contains("panicked"),
            "{mode}: {}",
            router.log_text()
        );
    }
}
