//! `topology.discovery: repmgr` and `patroni` against the real HA managers: the primary's
//! PostgreSQL is crashed while a client writes a counter and others read; the manager promotes a
//! standby and pgrouter follows.

use super::switchover::{roles_swapped, switchover_under_load};
use super::{
    assert_failover_outcome, read_ports, reads_reach, FailoverTimes, ScriptCluster, Workload,
    HA_TESTS,
};
use crate::harness::{connect, eventually_async, Router};
use std::time::{Duration, Instant};

const INTERVAL_MS: u64 = 500;

/// Whether the HA manager's programs are installed; without them the test is skipped outside CI
/// (`scripts/test.sh` installs them) and fails in CI.
fn manager_installed(manager: &str) -> bool {
    let found = match manager {
        "repmgr" => std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| d.flatten().any(|e| e.path().join("bin/repmgrd").exists()))
            .unwrap_or(false),
        _ => ["patroni", "etcd", "curl"].iter().all(|p| {
            std::process::Command::new("which")
                .arg(p)
                .output()
                .is_ok_and(|o| o.status.success())
        }),
    };
    if !found {
        crate::harness::missing(&format!(
            "{manager} is not installed: run scripts/ha-cluster.sh {manager} deps; the {manager} failover test"
        ));
    }
    found
}

/// Polls the standbys directly until one of them is out of recovery: when the HA manager's
/// promotion took effect, as seen from outside pgrouter.
async fn promoted(cluster: &ScriptCluster) -> (usize, Instant) {
    let deadline = Instant::now() + Duration::from_secs(60);
    // A standby may be restarted by its HA manager meanwhile: (re)connect as needed.
    let mut clients: Vec<(usize, Option<tokio_postgres::Client>)> = vec![(1, None), (2, None)];
    while Instant::now() < deadline {
        for (node, slot) in &mut clients {
            if slot.as_ref().is_none_or(|c| c.is_closed()) {
                let conninfo = format!(
                    "host=127.0.0.1 port={} user=app password=app dbname=app connect_timeout=2",
                    cluster.port(*node)
                );
                *slot = connect(&conninfo).await.ok();
            }
            let Some(c) = slot else { continue };
            if let Ok(rows) = c.simple_query("SELECT pg_is_in_recovery()").await {
                if crate::harness::rows(&rows)[0].get(0) == Some("f") {
                    return (*node, Instant::now());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for node in 0..3 {
        let log = std::fs::read_to_string(cluster.dir.join(format!("pg{node}/patroni.log")))
            .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(25).collect();
        eprintln!(
            "--- pg{node}/patroni.log (last lines, newest first)\n{}",
            tail.join("\n")
        );
    }
    panic!("no standby was promoted within 60 s");
}

/// Kills the primary under load and checks what clients saw. Returns (gap from the kill to the
/// first acknowledged write, gap from the promotion to it).
async fn failover_under_load(cluster: &ScriptCluster, router: &Router) -> (Duration, Duration) {
    let conninfo = router.conninfo("app", "app");
    router
        .expect_log(
            "topology change: primary: none -> pg0",
            Duration::from_secs(20),
        )
        .await;
    let load = Workload::start(&conninfo, 2).await;
    load.wait_for(20, 20).await;
    let kill_started = Instant::now();
    cluster.node("kill", "pg0");
    let killed_at = Instant::now();
    let (new_primary, promoted_at) = promoted(cluster).await;
    let new_port = cluster.port(new_primary);
    let followed = format!("-> pg{new_primary}");
    assert!(
        eventually_async(Duration::from_secs(30), || {
            router
                .log_text()
                .lines()
                .any(|l| l.contains("topology change: primary:") && l.contains(&followed))
        })
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
    assert_failover_outcome(
        &writer,
        &readers,
        &times,
        cluster.port(0),
        new_port,
        interval,
    )
    .await
}

fn router_for(
    cluster: &ScriptCluster,
    discovery: &str,
    mode: &str,
    per_node: impl Fn(usize) -> String,
) -> Router {
    Router::start_in(&cluster.dir, |port| {
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:0\n{}\
             users:\n  - {{name: app, password: app}}\n\
             pool: {{mode: {mode}}}\n\
             health_check: {{interval: {INTERVAL_MS}ms, timeout: 1s, max_failures: 3, min_successes: 2}}\n\
             topology: {{discovery: {discovery}, failover_timeout: 60s}}\n",
            cluster.nodes_yaml(per_node)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repmgr_failover_is_followed() {
    let _one = HA_TESTS.lock().await;
    if !manager_installed("repmgr") {
        return;
    }
    let Some(cluster) = ScriptCluster::up("scripts/ha-cluster.sh", "repmgr", 3, &["repmgr"]) else {
        return;
    };
    let router = router_for(&cluster, "repmgr", "session", |_| String::new());
    let (gap, after) = failover_under_load(&cluster, &router).await;
    eprintln!("repmgr failover: write gap {gap:?} from the kill, {after:?} after the promotion");
    // repmgr leaves the dead primary's row as an inactive primary.
    assert!(
        router.log_text().contains("repmgr primary"),
        "{}",
        router.log_text()
    );
}

/// A planned switchover under repmgr (pg0 to pg1: repmgrd paused, pg0 stopped cleanly, pg1
/// promoted, pg2 following it, pg0 rejoined with pg_rewind), in both pooling modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repmgr_switchover_is_followed() {
    let _one = HA_TESTS.lock().await;
    if !manager_installed("repmgr") {
        return;
    }
    let Some(cluster) =
        ScriptCluster::up("scripts/ha-cluster.sh", "repmgr-switchover", 3, &["repmgr"])
    else {
        return;
    };
    // repmgr.nodes lists pg2, which this router's configuration does not: it is found and read.
    let partial = router_without_pg2(&cluster, "repmgr", |_| String::new(), "");
    partial
        .expect_log(
            "lists a member that is not configured",
            Duration::from_secs(20),
        )
        .await;
    let p2 = cluster.port(2);
    assert!(
        reads_reach(&partial, p2, 20, 6).await,
        "no read reached pg2, found in repmgr.nodes:\n{}",
        partial.log_text()
    );
    drop(partial);

    let (old, new) = (0, 1);
    let session = router_for(&cluster, "repmgr", "session", |_| String::new());
    let transaction = router_for(&cluster, "repmgr", "transaction", |_| String::new());
    for r in [&session, &transaction] {
        r.expect_log("primary: none -> pg0", Duration::from_secs(20))
            .await;
    }
    manager_switchover("repmgr", &cluster, [&session, &transaction], old, new).await;
    // repmgr's own record of the promotion reaches the log (read by the probes at their next
    // interval; 30 s leaves room for a machine busy with other tests).
    session
        .expect_log("event=standby_promote", Duration::from_secs(30))
        .await;
}

/// `ha-cluster.sh MANAGER switchover pgNEW` under load through a session-pooling and a
/// transaction-pooling router (see `switchover_under_load`).
async fn manager_switchover(
    manager: &str,
    cluster: &ScriptCluster,
    [session, transaction]: [&Router; 2],
    old: usize,
    new: usize,
) {
    let routers = [("session", session), ("transaction", transaction)];
    let report = switchover_under_load(
        cluster,
        &routers,
        old,
        new,
        || cluster.node("switchover", &format!("pg{new}")),
        |log| roles_swapped(log, old, new),
    )
    .await;
    eprintln!(
        "{manager} switchover: first write on the new primary {:?} after it began; longest write gap {:?}",
        report.first_write_on_new, report.longest_write_gap
    );
}

/// The node out of recovery now, as the cluster script sees it.
fn primary_now(cluster: &ScriptCluster) -> usize {
    let (ok, out) = cluster.run(&["primary"]);
    assert!(ok, "{out}");
    out.lines()
        .find_map(|l| l.trim().strip_prefix("pg").and_then(|n| n.parse().ok()))
        .expect("a primary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_failover_is_followed() {
    let _one = HA_TESTS.lock().await;
    if !manager_installed("patroni") {
        return;
    }
    let Some(cluster) = ScriptCluster::up("scripts/ha-cluster.sh", "patroni", 22, &["patroni"])
    else {
        return;
    };
    let base = cluster.base_port;
    let patroni_url = |i: usize| {
        format!(
            ", patroni_url: \"http://127.0.0.1:{}\"",
            base + 10 + i as u16
        )
    };
    let router = router_for(&cluster, "patroni", "session", patroni_url);
    let (gap, after) = failover_under_load(&cluster, &router).await;
    eprintln!("patroni failover: write gap {gap:?} from the kill, {after:?} after the promotion");
    // Patroni rewinds the old primary and brings it back as a replica: it returns to rotation.
    assert!(
        eventually_async(Duration::from_secs(60), || router.log_text().lines().any(
            |l| l.contains("node pg0:") && l.ends_with("-> replica up (streaming replica)")
                || l.contains("node pg0:") && l.contains("-> replica up (streaming replica) ")
        ))
        .await,
        "{}",
        router.log_text()
    );

    // --- Then a planned switchover (patronictl switchover) to the synchronous standby (the only
    // candidate in synchronous mode), in both pooling modes. ---
    let old = primary_now(&cluster);
    let new = {
        let found =
            eventually_async(Duration::from_secs(30), || cluster.run(&["sync-standby"]).0).await;
        assert!(found, "Patroni named no synchronous standby");
        let (_, out) = cluster.run(&["sync-standby"]);
        out.trim()
            .trim_start_matches("pg")
            .parse::<usize>()
            .expect("a node name")
    };
    let transaction = router_for(&cluster, "patroni", "transaction", patroni_url);
    transaction
        .expect_log(
            &format!("primary: none -> pg{old}"),
            Duration::from_secs(20),
        )
        .await;
    manager_switchover("patroni", &cluster, [&router, &transaction], old, new).await;
}

/// A router that knows only pg0 and pg1, with `topology.discover_members` on.
fn router_without_pg2(
    cluster: &ScriptCluster,
    discovery: &str,
    per_node: impl Fn(usize) -> String,
    topology_extra: &str,
) -> Router {
    Router::start_in(&cluster.dir, |port| {
        let mut nodes = String::from("nodes:\n");
        for i in 0..2 {
            nodes.push_str(&format!(
                "  - {{name: pg{i}, host: 127.0.0.1, port: {}{}}}\n",
                cluster.port(i),
                per_node(i)
            ));
        }
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:0\n{nodes}\
             users:\n  - {{name: app, password: app}}\n\
             health_check: {{interval: {INTERVAL_MS}ms, timeout: 1s, max_failures: 3, min_successes: 2}}\n\
             topology:\n  discovery: {discovery}\n  discover_members: true\n{topology_extra}"
        )
    })
}

/// Patroni's member list and tags, read from Patroni's REST API over https with a client
/// certificate (`restapi.verify_client: required`): a member missing from the configuration is
/// found from `GET /cluster` and serves reads; a replica tagged `noloadbalance` (Patroni
/// reloaded) serves none. A router without the client certificate gets nothing from the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_members_and_tags_are_followed_over_https() {
    let _one = HA_TESTS.lock().await;
    if !manager_installed("patroni") {
        return;
    }
    let work = std::env::temp_dir().join(format!("pgrouter-patroni-tls-{}", std::process::id()));
    let certs = crate::harness::make_certificates(&work, "restapi");
    crate::harness::issue_certificate(
        &certs.dir,
        "client",
        "pgrouter",
        "extendedKeyUsage=clientAuth\n",
    );
    let Some(cluster) = ScriptCluster::up_with(
        "scripts/ha-cluster.sh",
        "patroni-members",
        22,
        &["patroni"],
        &[("PGR_PATRONI_TLS_DIR", certs.dir.as_os_str())],
    ) else {
        return;
    };
    let base = cluster.base_port;
    let api = |client_certificate: bool| {
        let cert = if client_certificate {
            format!(
                ", cert_file: {}, key_file: {}",
                certs.dir.join("client.crt").display(),
                certs.dir.join("client.key").display()
            )
        } else {
            String::new()
        };
        format!(
            "  patroni: {{ca_file: {}{cert}, username: patroni, password: not-needed-for-get}}\n",
            certs.ca.display()
        )
    };
    let per_node = |i: usize| {
        format!(
            ", patroni_url: \"https://127.0.0.1:{}\"",
            base + 10 + i as u16
        )
    };
    let router = router_without_pg2(&cluster, "patroni", per_node, &api(true));
    let refused = router_without_pg2(&cluster, "patroni", per_node, &api(false));
    router
        .expect_log(
            "lists a member that is not configured",
            Duration::from_secs(20),
        )
        .await;
    // "node pg2: unknown down -> replica up", or "node pg2 added at …: replica up" when it was
    // found before the first table.
    assert!(
        eventually_async(Duration::from_secs(20), || router
            .log_text()
            .lines()
            .any(|l| l.contains("node pg2") && l.contains("replica up")))
        .await,
        "{}",
        router.log_text()
    );
    let p2 = cluster.port(2);
    assert!(
        reads_reach(&router, p2, 10, 6).await,
        "no read reached the discovered member pg2:\n{}",
        router.log_text()
    );

    // Tag pg1 noloadbalance: Patroni applies tags on reload (SIGHUP).
    let conf = cluster.dir.join("pg1/patroni.yml");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("tags:\n  noloadbalance: true\n");
    std::fs::write(&conf, text).unwrap();
    let pid = std::fs::read_to_string(cluster.dir.join("pg1/patroni.pid")).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
    router
        .expect_log("Patroni tag noloadbalance", Duration::from_secs(20))
        .await;
    let p1 = cluster.port(1);
    let ports = read_ports(&router, 12).await;
    assert!(
        !ports.contains(&p1),
        "reads reached pg1, tagged noloadbalance: {ports:?}"
    );
    // Without a client certificate Patroni ends every handshake: no member list, no tags.
    let log = refused.log_text();
    assert!(
        log.contains("Patroni REST API did not answer") && !log.contains("lists a member"),
        "{log}"
    );
}
