//! Read-your-writes by LSN against replicas that replay 2 s late (`recovery_min_apply_delay`):
//! a session never reads older data than it wrote, replicas keep serving reads that depend on no
//! write, a position handed from one session to another (`SHOW pgrouter.last_write_lsn`, then
//! `SET pgrouter.min_lsn` or the start-up parameter) is honoured, and `pgrouter.max_staleness`
//! keeps a session off replicas further behind. Both pooling modes.

use crate::harness::{cluster, connect, first_value, private_cluster, Cluster, Router};
use std::time::Duration;

/// How far behind the replicas replay.
const DELAY: Duration = Duration::from_secs(2);

/// A private cluster whose replicas apply WAL `delay` late, with table `ryw`.
fn delayed_cluster(delay: Duration) -> Option<Cluster> {
    cluster()?;
    let cluster = private_cluster(2, &[])?;
    cluster.superuser_sql("CREATE TABLE ryw (id int); GRANT ALL ON ryw TO PUBLIC");
    cluster.wait_for_replicas();
    for node in 1..=2 {
        cluster.node_sql(
            node,
            &format!(
                "ALTER SYSTEM SET recovery_min_apply_delay = '{}ms'",
                delay.as_millis()
            ),
        );
        cluster.node_sql(node, "SELECT pg_reload_conf()");
    }
    Some(cluster)
}

async fn value(client: &tokio_postgres::Client, sql: &str) -> String {
    first_value(&client.simple_query(sql).await.unwrap()).to_owned()
}

/// Whether a read lands on a node other than the primary (port `p0`) within `tries` reads,
/// 100 ms apart.
async fn reads_on_a_replica(client: &tokio_postgres::Client, p0: &str, tries: u32) -> bool {
    for _ in 0..tries {
        if value(client, "SELECT inet_server_port()").await != p0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Reads go to the replicas only; lag never excludes them (the delay would): what decides is
/// read-your-writes alone.
fn config(mode: &str, extra: &str) -> String {
    format!(
        "pool: {{mode: {mode}}}\nrouting:\n  max_replica_lag: 0s\n  max_replica_lag_bytes: 0\n  read_your_writes_wait: 100ms\n{extra}"
    )
}

#[tokio::test]
async fn reads_never_miss_the_sessions_own_writes() {
    let Some(cluster) = delayed_cluster(DELAY) else {
        return;
    };
    let p0 = cluster.primary_port().to_string();
    let mut id = 0;
    for mode in ["session", "transaction"] {
        let router = Router::start_weighted(&cluster, [0, 1, 1], &config(mode, ""));
        let client = connect(&router.conninfo("app", "app")).await.unwrap();
        assert!(
            reads_on_a_replica(&client, &p0, 50).await,
            "{mode}: a session that wrote nothing reads on a replica"
        );
        for _ in 0..3 {
            id += 1;
            client
                .simple_query(&format!("INSERT INTO ryw VALUES ({id})"))
                .await
                .unwrap();
            assert_eq!(
                value(
                    &client,
                    &format!("SELECT count(*) FROM ryw WHERE id = {id}")
                )
                .await,
                "1",
                "{mode}: the row just written is read back"
            );
            assert_eq!(
                value(&client, "SELECT inet_server_port()").await,
                p0,
                "{mode}: the replicas are {DELAY:?} behind: the read ran on the primary"
            );
        }
        // In a transaction that commits, and through the extended protocol.
        id += 1;
        client
            .batch_execute(&format!("BEGIN; INSERT INTO ryw VALUES ({id}); COMMIT"))
            .await
            .unwrap();
        let n: i64 = client
            .query_one("SELECT count(*) FROM ryw WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{mode}: after a commit, extended protocol");
        // Once the replicas have replayed it, the session reads there again.
        tokio::time::sleep(DELAY + Duration::from_secs(1)).await;
        assert!(
            reads_on_a_replica(&client, &p0, 30).await,
            "{mode}: reads return to the replicas once they have the write"
        );

        // Without it, the same pattern reads stale data: what the feature prevents.
        let off = Router::start_weighted(
            &cluster,
            [0, 1, 1],
            &config(mode, "  read_your_writes: off\n"),
        );
        let stale = connect(&off.conninfo("app", "app")).await.unwrap();
        id += 1;
        stale
            .simple_query(&format!("INSERT INTO ryw VALUES ({id})"))
            .await
            .unwrap();
        assert_eq!(
            value(&stale, &format!("SELECT count(*) FROM ryw WHERE id = {id}")).await,
            "0",
            "{mode}: with read_your_writes off a replica {DELAY:?} behind answers"
        );
        tokio::time::sleep(DELAY + Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_write_position_travels_between_sessions_and_instances() {
    let Some(cluster) = delayed_cluster(DELAY) else {
        return;
    };
    for (n, mode) in ["session", "transaction"].into_iter().enumerate() {
        let writer_router = Router::start_weighted(&cluster, [0, 1, 1], &config(mode, ""));
        // Another instance: the token works across instances.
        let reader_router = Router::start_weighted(&cluster, [0, 1, 1], &config(mode, ""));
        let writer = connect(&writer_router.conninfo("app", "app"))
            .await
            .unwrap();
        let id = 1000 + n as i32;
        writer
            .simple_query(&format!("INSERT INTO ryw VALUES ({id})"))
            .await
            .unwrap();
        let token = value(&writer, "SHOW pgrouter.last_write_lsn").await;
        assert!(token.contains('/'), "{mode}: an LSN: {token}");

        let reader = connect(&reader_router.conninfo("app", "app"))
            .await
            .unwrap();
        let query = format!("SELECT count(*) FROM ryw WHERE id = {id}");
        reader
            .simple_query(&format!("SET pgrouter.min_lsn = '{token}'"))
            .await
            .unwrap();
        assert_eq!(value(&reader, "SHOW pgrouter.min_lsn").await, token);
        assert_eq!(
            value(&reader, &query).await,
            "1",
            "{mode}: SET pgrouter.min_lsn"
        );
        let by_startup = connect(&format!(
            "{} options='-c pgrouter.min_lsn={token}'",
            reader_router.conninfo("app", "app")
        ))
        .await
        .unwrap();
        assert_eq!(
            value(&by_startup, &query).await,
            "1",
            "{mode}: start-up parameter"
        );
        let bad = reader
            .simple_query("SET pgrouter.min_lsn = 'yesterday'")
            .await
            .unwrap_err();
        assert_eq!(bad.code().map(|c| c.code()), Some("22023"), "{bad:?}");
        // Prepared (extended protocol), a server would take it as a setting of its own and
        // pgrouter would not see it: refused instead of silently ignored.
        let prepared = reader
            .execute(&format!("SET pgrouter.min_lsn = '{token}'"), &[])
            .await
            .unwrap_err();
        assert_eq!(
            prepared.code().map(|c| c.code()),
            Some("0A000"),
            "{prepared:?}"
        );
        assert_eq!(
            value(&reader, &query).await,
            "1",
            "{mode}: the session goes on"
        );

        tokio::time::sleep(DELAY).await;
    }
}

/// `pgrouter.max_staleness`: a bounded session reads only where the primary's position of that
/// long ago has been replayed; replicas 5 s late do not have a write of 3.5 s ago, so a session
/// bounded to 1 s reads on the primary, an unbounded one on a replica.
#[tokio::test]
async fn staleness_is_bounded_per_session() {
    let delay = Duration::from_secs(5);
    let Some(cluster) = delayed_cluster(delay) else {
        return;
    };
    let p0 = cluster.primary_port().to_string();
    for mode in ["session", "transaction"] {
        let router = Router::start_weighted(&cluster, [0, 1, 1], &config(mode, ""));
        let writer = connect(&router.conninfo("app", "app")).await.unwrap();
        writer
            .simple_query("INSERT INTO ryw VALUES (-1)")
            .await
            .unwrap();
        // The position is taken from a health check (each second) once a second: after 1 s of
        // bound, 1 s of recording and 1 s of checking, the write is older than the bound.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let bounded = connect(&router.conninfo("app", "app")).await.unwrap();
        bounded
            .simple_query("SET pgrouter.max_staleness = '1s'")
            .await
            .unwrap();
        assert_eq!(value(&bounded, "SHOW pgrouter.max_staleness").await, "1s");
        assert_eq!(
            value(&bounded, "SELECT count(*) FROM ryw WHERE id = -1").await,
            "1",
            "{mode}: the bounded session sees the write of 3.5 s ago"
        );
        assert_eq!(
            value(&bounded, "SELECT inet_server_port()").await,
            p0,
            "{mode}"
        );
        let unbounded = connect(&router.conninfo("app", "app")).await.unwrap();
        assert_ne!(
            value(&unbounded, "SELECT inet_server_port()").await,
            p0,
            "{mode}"
        );
        assert_eq!(
            value(&unbounded, "SELECT count(*) FROM ryw WHERE id = -1").await,
            "0",
            "{mode}: an unbounded session may read the 5 s old state"
        );
        writer.simple_query("DELETE FROM ryw").await.unwrap();
        tokio::time::sleep(delay + Duration::from_secs(1)).await;
    }
}
