//! The optional endpoints: `primary_listen` runs every statement on the primary,
//! `read_only_listen` every statement on a replica in read-only transactions (on the primary
//! when reads fall back to it, still read-only), while `listen` keeps splitting.

use crate::harness::{cluster, connect, first_value, rows, Router};
use std::time::Duration;

/// `primary_listen` at `port + 2` and `read_only_listen` at `port + 3` (free in the harness's
/// port block).
fn endpoints(port: u16) -> String {
    format!(
        "primary_listen: 127.0.0.1:{}\nread_only_listen: 127.0.0.1:{}\n",
        port + 2,
        port + 3
    )
}

fn conninfo(port: u16) -> String {
    format!("host=127.0.0.1 port={port} user=app password=app dbname=app")
}

/// Where a statement ran: (port, in recovery).
async fn where_ran(client: &tokio_postgres::Client, sql: &str) -> (u16, bool) {
    let messages = client.simple_query(sql).await.expect("the statement runs");
    let row = rows(&messages)[0];
    (
        row.get(0).and_then(|p| p.parse().ok()).expect("a port"),
        row.get(1) == Some("t"),
    )
}

const WHERE: &str = "SELECT inet_server_port(), pg_is_in_recovery()";

/// Tries a write; it must be refused as a read-only transaction refuses it (`25006`).
async fn assert_write_refused(client: &tokio_postgres::Client, why: &str) {
    let refused = client
        .simple_query("CREATE TABLE endpoint_probe (id int)")
        .await
        .expect_err(why);
    assert_eq!(
        refused.as_db_error().map(|e| e.code().code()),
        Some("25006"),
        "{why}: {refused:?}"
    );
}

/// Runs [`WHERE`] until it lands on a replica (health checks and reloads take effect within
/// seconds); returns where the last one ran.
async fn until_on_replica(client: &tokio_postgres::Client) -> (u16, bool) {
    let mut ran = (0, false);
    for _ in 0..100 {
        ran = where_ran(client, WHERE).await;
        if ran.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ran
}

#[tokio::test]
async fn primary_and_read_only_endpoints_beside_the_splitting_one() {
    let Some(cluster) = cluster() else { return };
    cluster.wait_for_replicas();
    let router = Router::start_in(&cluster.dir, |port| {
        crate::harness::router_config(cluster, port, [0, 1, 1], &endpoints(port))
    });
    let primary = cluster.primary_port();
    let replicas = cluster.replica_ports();

    // The primary endpoint: reads too run on the primary, in and out of transactions.
    let on_primary = connect(&conninfo(router.port + 2)).await.unwrap();
    for sql in [
        WHERE,
        "BEGIN READ ONLY; SELECT inet_server_port(), pg_is_in_recovery(); COMMIT",
    ] {
        for _ in 0..5 {
            assert_eq!(where_ran(&on_primary, sql).await, (primary, false), "{sql}");
        }
    }

    // The read-only endpoint: everything on a replica, writes refused as a standby refuses them.
    let read_only = connect(&conninfo(router.port + 3)).await.unwrap();
    // Replicas pass their first health checks shortly after start-up.
    let ran = until_on_replica(&read_only).await;
    assert!(ran.1 && replicas.contains(&ran.0), "{ran:?}");
    for sql in [
        WHERE,
        "BEGIN; SELECT inet_server_port(), pg_is_in_recovery(); COMMIT",
        // A volatile function would go to the primary on the splitting endpoint.
        "SELECT inet_server_port(), pg_is_in_recovery() FROM (SELECT random()) r",
    ] {
        let (port, in_recovery) = where_ran(&read_only, sql).await;
        assert!(in_recovery && replicas.contains(&port), "{sql}: {port}");
    }
    assert_write_refused(&read_only, "a write on the read-only endpoint").await;
    // The session goes on after the refusal.
    assert!(where_ran(&read_only, WHERE).await.1);

    // The splitting endpoint is unchanged: writes on the primary, reads on replicas.
    let split = connect(&router.conninfo("app", "app")).await.unwrap();
    assert_eq!(
        where_ran(
            &split,
            "BEGIN; SELECT inet_server_port(), pg_is_in_recovery(); COMMIT"
        )
        .await,
        (primary, false)
    );
}

#[tokio::test]
async fn read_only_endpoint_falls_back_to_a_read_only_primary_or_refuses() {
    let Some(cluster) = cluster() else { return };
    cluster.wait_for_replicas();
    let primary = cluster.primary_port();
    // No replica serves reads (weights 0): reads fall back to the primary, still read-only.
    let router = Router::start_in(&cluster.dir, |port| {
        crate::harness::router_config(cluster, port, [0, 0, 0], &endpoints(port))
    });
    let read_only = connect(&conninfo(router.port + 3)).await.unwrap();
    assert_eq!(where_ran(&read_only, WHERE).await, (primary, false));
    let shown = read_only
        .simple_query("SHOW default_transaction_read_only")
        .await
        .unwrap();
    assert_eq!(first_value(&shown), "on");
    assert_write_refused(
        &read_only,
        "a write on the read-only endpoint, even on the primary",
    )
    .await;
    // Once a replica serves reads again (here: a reload gives them weight), the session moves
    // back to one at its next statement.
    std::fs::write(
        router.config_path(),
        crate::harness::router_config(cluster, router.port, [0, 1, 1], &endpoints(router.port)),
    )
    .unwrap();
    router.signal("HUP");
    let ran = until_on_replica(&read_only).await;
    assert!(ran.1, "the read-only session left the primary: {ran:?}");
    drop(router);

    // Without the fallback, the read-only endpoint refuses logins with 57P03 once
    // `topology.failover_timeout` has passed; the other endpoints serve.
    let strict = Router::start_in(&cluster.dir, |port| {
        crate::harness::router_config(
            cluster,
            port,
            [0, 0, 0],
            &format!(
                "{}routing: {{reads_fallback_to_primary: false}}\ntopology: {{failover_timeout: 1s}}\n",
                endpoints(port)
            ),
        )
    });
    let refused = connect(&conninfo(strict.port + 3))
        .await
        .expect_err("no replica serves reads");
    let db = refused.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "57P03", "{db:?}");
    assert!(db.message().contains("no replica is available"), "{db:?}");
    let on_primary = connect(&conninfo(strict.port + 2)).await.unwrap();
    assert_eq!(where_ran(&on_primary, WHERE).await, (primary, false));
}

/// A private directory for a Unix-domain socket.
fn socket_dir(cluster: &crate::harness::Cluster) -> std::path::PathBuf {
    let dir = cluster
        .dir
        .join(format!("sock-{}", crate::harness::free_port_block(1)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn unix_socket_clients_split_reads_and_follow_local_rules() {
    let Some(cluster) = cluster() else { return };
    let dir = socket_dir(cluster);
    let socket = dir.join(".s.PGSQL.6432");
    // A socket file left by a process that is gone is replaced, not an error.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let p0 = cluster.primary_port();
    for mode in ["session", "transaction"] {
        let extra = format!(
            "unix_socket_dir: {}\nunix_socket_port: 6432\npool: {{mode: {mode}}}\n\
             access:\n  - {{type: local, user: legacy, method: reject}}\n  - {{type: local, database: app, method: trust}}\n  - {{type: host, method: scram-sha-256}}\n",
            dir.display()
        );
        let mut router = Router::start_weighted(cluster, [0, 1, 1], &extra);
        // libpq's way to a socket: the directory as the host.
        let local = format!("host={} port=6432 user=app dbname=app", dir.display());
        let client = connect(&local).await.unwrap_or_else(|e| {
            panic!("{mode}: a socket client logs in by the local rule (trust): {e}")
        });
        let (port, replica) = until_on_replica(&client).await;
        assert!(replica && port != p0, "{mode}: a read runs on a replica");
        client.simple_query("BEGIN").await.unwrap();
        let (port, replica) = where_ran(&client, WHERE).await;
        client.simple_query("COMMIT").await.unwrap();
        assert_eq!(
            (port, replica),
            (p0, false),
            "{mode}: a transaction runs on the primary"
        );
        let (ok, out, err) = crate::harness::psql(
            &format!(
                "postgresql:///app?host={}&port=6432&user=app",
                dir.display()
            ),
            &["-c", "SELECT pg_is_in_recovery()"],
            None,
        );
        assert!(
            ok && out.trim() == "t",
            "{mode}: psql through the socket: {out} {err}"
        );
        let refused = connect(&format!(
            "host={} port=6432 user=legacy password=legacy dbname=app",
            dir.display()
        ))
        .await
        .expect_err("the local reject rule applies");
        let db = refused.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "28000", "{refused:?}");
        assert!(
            db.message().contains("host \"[local]\""),
            "{}",
            db.message()
        );
        // TCP clients do not get the local lines: no password, no login.
        assert!(
            connect(&router.conninfo("app", "wrong")).await.is_err(),
            "{mode}: a TCP client is not trusted by a local rule"
        );
        let (ok, clients, err) = crate::harness::psql(
            &format!(
                "postgres://boss:{}@127.0.0.1:{}/pgrouter",
                crate::harness::ADMIN_PASSWORD,
                router.port
            ),
            &["-c", "SHOW CLIENTS"],
            None,
        );
        assert!(ok && clients.contains("[local]"), "{clients} {err}");
        drop(client);
        router.signal("TERM");
        assert!(router.wait_exit(Duration::from_secs(20)).is_some());
        assert!(
            !socket.exists(),
            "{mode}: the socket is removed at shutdown"
        );
    }
}

#[tokio::test]
async fn a_unix_socket_in_use_is_not_taken_over() {
    let Some(cluster) = cluster() else { return };
    let dir = socket_dir(cluster);
    let extra = format!("unix_socket_dir: {}\n", dir.display());
    let first = Router::start(cluster, &extra);
    // The second router listens on other TCP ports but names the same socket.
    let port = crate::harness::free_port_block(2);
    let config = first.dir.join("second.yaml");
    std::fs::write(
        &config,
        std::fs::read_to_string(first.config_path())
            .unwrap()
            .replace(
                &format!("127.0.0.1:{}\n", first.port),
                &format!("127.0.0.1:{port}\n"),
            )
            .replace(
                &format!("127.0.0.1:{}\n", first.port + 1),
                &format!("127.0.0.1:{}\n", port + 1),
            )
            + &format!("unix_socket_port: {}\n", first.port),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgrouter"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second router must not start: {stderr}"
    );
    assert!(stderr.contains("another server is listening"), "{stderr}");
    // The first one still serves its socket clients.
    let local = format!(
        "host={} port={} user=app password=app dbname=app",
        dir.display(),
        first.port
    );
    let client = connect(&local).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
}
