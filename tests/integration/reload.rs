//! Live changes of the node list on `SIGHUP`: a node re-addressed, added and removed while
//! clients stay connected. Clients see no error; an open transaction finishes where it started;
//! reads follow the new list once its nodes pass their health checks.

use crate::harness::{
    cluster, connect, eventually_async, first_value, http, router_config, Router,
};
use std::time::Duration;

/// The generated test configuration with `nodes` (name, port, read weight) instead of the
/// three default ones.
fn config_with_nodes(
    cluster: &crate::harness::Cluster,
    port: u16,
    nodes: &[(&str, u16, u32)],
) -> String {
    let base = router_config(cluster, port, [1, 1, 1], "");
    let (head, rest) = base.split_once("nodes:\n").expect("a nodes section");
    let (_, tail) = rest.split_once("users:\n").expect("a users section");
    let list: String = nodes
        .iter()
        .map(|(name, port, weight)| {
            format!("  - {{name: {name}, host: 127.0.0.1, port: {port}, weight: {weight}}}\n")
        })
        .collect();
    format!("{head}nodes:\n{list}users:\n{tail}")
}

async fn server_port(client: &tokio_postgres::Client) -> u16 {
    let rows = client
        .simple_query("SELECT inet_server_port()")
        .await
        .expect("a read succeeds through every reload");
    first_value(&rows).parse().expect("a port")
}

/// Reads through `client` until a read lands on `port` (health checks take effect within
/// seconds); returns where the last read ran. Every read must succeed.
async fn reads_until(client: &tokio_postgres::Client, port: u16) -> u16 {
    let mut last = 0;
    for _ in 0..150 {
        last = server_port(client).await;
        if last == port {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// Connects fresh clients until one reads from `port` (reads are spread by weight).
async fn some_client_reads_from(conninfo: &str, port: u16) -> bool {
    for _ in 0..40 {
        let client = connect(conninfo).await.expect("login");
        if server_port(&client).await == port {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn sighup_readdresses_adds_and_removes_nodes_without_client_errors() {
    let Some(cluster) = cluster() else { return };
    cluster.wait_for_replicas();
    let primary = cluster.primary_port();
    let [r1, r2] = cluster.replica_ports();
    let router = Router::start_in(&cluster.dir, |port| {
        config_with_nodes(cluster, port, &[("pg0", primary, 0), ("pg1", r1, 1)])
    });
    let reload = |nodes: &[(&str, u16, u32)]| {
        std::fs::write(
            router.config_path(),
            config_with_nodes(cluster, router.port, nodes),
        )
        .unwrap();
        router.signal("HUP");
    };
    let conninfo = router.conninfo("app", "app");
    let kept = connect(&conninfo).await.unwrap();
    // The replica passes its first health checks shortly after start-up.
    assert_eq!(reads_until(&kept, r1).await, r1, "reads start on pg1");
    let in_tx = connect(&conninfo).await.unwrap();
    in_tx.simple_query("BEGIN READ ONLY").await.unwrap();
    assert_eq!(server_port(&in_tx).await, r1);

    // 1. pg1 moves to the other replica's address.
    reload(&[("pg0", primary, 0), ("pg1", r2, 1)]);
    router
        .expect_log(
            &format!("configuration reloaded: nodes[pg1].port: {r1} -> {r2}"),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        server_port(&in_tx).await,
        r1,
        "an open transaction finishes on the connection it started on"
    );
    in_tx.simple_query("COMMIT").await.unwrap();
    for client in [&kept, &in_tx] {
        assert_eq!(
            reads_until(client, r2).await,
            r2,
            "a connected session follows pg1 to its new address"
        );
    }
    assert!(some_client_reads_from(&conninfo, r2).await);

    // 2. pg2 is added at the first replica's address.
    reload(&[("pg0", primary, 0), ("pg1", r2, 1), ("pg2", r1, 1)]);
    router
        .expect_log(
            &format!("configuration reloaded: nodes[pg2]: added (127.0.0.1:{r1})"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        some_client_reads_from(&conninfo, r1).await,
        "new clients read from the added node"
    );

    // 3. pg1 is removed: it leaves the routing table at once, and sessions reading from it move
    //    to pg2 at their next statement.
    reload(&[("pg0", primary, 0), ("pg2", r1, 1)]);
    router
        .expect_log(
            "configuration reloaded: nodes[pg1]: removed",
            Duration::from_secs(10),
        )
        .await;
    let addr = router.admin_addr();
    assert!(
        eventually_async(Duration::from_secs(10), || {
            let nodes = http(&addr, "GET", "/nodes").1;
            nodes.matches(r#""state": "removed""#).count() == 2
        })
        .await,
        "the old pg1 slots show as removed: {}",
        http(&addr, "GET", "/nodes").1
    );
    for _ in 0..10 {
        assert_eq!(server_port(&kept).await, r1, "reads now land on pg2 only");
    }
    for _ in 0..5 {
        let fresh = connect(&conninfo).await.unwrap();
        assert_eq!(server_port(&fresh).await, r1);
    }
    // Transactions and writes still go to the primary.
    let rows = kept
        .simple_query("BEGIN; SELECT inet_server_port(); COMMIT")
        .await
        .unwrap();
    assert_eq!(first_value(&rows).parse::<u16>().unwrap(), primary);

    // The console and the metrics show the configured nodes; counters of pg1 stay.
    let url = format!(
        "postgres://boss:{}@127.0.0.1:{}/pgrouter",
        crate::harness::ADMIN_PASSWORD,
        router.port
    );
    let (ok, nodes, err) = crate::harness::psql(&url, &["-Atc", "SHOW NODES"], None);
    assert!(ok, "{err}");
    let names: Vec<&str> = nodes.lines().filter_map(|l| l.split('|').next()).collect();
    assert_eq!(names, vec!["pg0", "pg2"], "{nodes}");
    let metrics = http(&addr, "GET", "/metrics").1;
    assert!(
        metrics.contains(r#"pgrouter_node_up{node="pg2"} 1"#),
        "{metrics}"
    );
    let pg1_reads = metrics
        .lines()
        .find(|l| l.starts_with(r#"pgrouter_statements_total{node="pg1",decision="read"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(pg1_reads > 0.0, "pg1's read counter is kept: {metrics}");
}
