//! Observability and administration: `/metrics` scraped during real traffic (and checked by
//! promtool and a real Prometheus server), `/health`, `/ready`, `/nodes`, the SQL admin console
//! through psql, and configuration reloads (console `RELOAD` and `SIGHUP`).

use crate::harness::{
    cluster, connect, eventually_async, first_value, http, psql, router_config, Router,
    ADMIN_PASSWORD,
};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A tool from the `prometheus` package: required in CI, skipped (loudly) elsewhere.
fn tool(name: &str) -> bool {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        crate::harness::missing(&format!(
            "{name} is not installed (Debian package `prometheus`; scripts/test.sh installs it)"
        ));
    }
    found
}

/// The value of one series (`name{labels}` exactly as exposed), or 0 when absent.
fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Every `pgrouter_…` metric name mentioned in a text.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.match_indices("pgrouter_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| n.len() > "pgrouter_".len())
        .collect()
}

fn scrape(router: &Router) -> String {
    let (status, body) = http(&router.admin_addr(), "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

fn console(router: &Router, sql: &str) -> (bool, String, String) {
    let url = format!(
        "postgres://boss:{ADMIN_PASSWORD}@127.0.0.1:{}/pgrouter",
        router.port
    );
    psql(&url, &["-c", sql], None)
}

#[tokio::test]
async fn metrics_count_where_statements_ran() {
    let Some(cluster) = cluster() else { return };
    // Reads go to pg1 only: its counter must move, the others' must not.
    let router = Router::start_weighted(cluster, [0, 1, 0], "");
    let [p1, _] = cluster.replica_ports();
    let p0 = cluster.primary_port();
    let before = scrape(&router);
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    for _ in 0..20 {
        let rows = client
            .simple_query("SELECT inet_server_port()")
            .await
            .unwrap();
        assert_eq!(first_value(&rows), p1.to_string());
    }
    for _ in 0..5 {
        let rows = client
            .simple_query("/* pgrouter: primary */ SELECT inet_server_port()")
            .await
            .unwrap();
        assert_eq!(first_value(&rows), p0.to_string());
    }
    for step in ["BEGIN", "SELECT 1", "COMMIT"] {
        client.simple_query(step).await.unwrap();
    }
    client
        .simple_query("SELECT * FROM no_such_table")
        .await
        .expect_err("undefined table");
    // The error can reach the client before its ReadyForQuery (PostgreSQL flushes an error at
    // once): a query that completes makes sure the session is idle before the scrape.
    client.simple_query("SELECT 1").await.unwrap();
    let after = scrape(&router);
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert!(
        delta(r#"pgrouter_statements_total{node="pg1",decision="read"}"#) >= 20.0,
        "{after}"
    );
    // The one read on the primary is the SELECT inside the read-write transaction.
    assert_eq!(
        delta(r#"pgrouter_statements_total{node="pg0",decision="read"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"pgrouter_statements_total{node="pg2",decision="read"}"#),
        0.0
    );
    assert!(delta(r#"pgrouter_statements_total{node="pg0",decision="primary"}"#) >= 5.0);
    assert!(delta(r#"pgrouter_statements_by_rule_total{rule="hint-primary"}"#) >= 5.0);
    assert_eq!(delta(r#"pgrouter_errors_total{class="42"}"#), 1.0);
    assert!(delta("pgrouter_request_duration_seconds_count") >= 27.0);
    assert_eq!(delta("pgrouter_transaction_duration_seconds_count"), 1.0);
    assert!(delta("pgrouter_client_received_bytes_total") > 0.0);
    assert!(
        sample(
            &after,
            r#"pgrouter_client_connections{user="app",database="app",state="idle"}"#
        ) >= 1.0,
        "{after}"
    );
    assert!(
        sample(
            &after,
            r#"pgrouter_server_connections{node="pg1",user="app",database="app",state="active"}"#
        ) >= 1.0
    );
    assert_eq!(
        sample(&after, r#"pgrouter_node_role{node="pg0",role="primary"}"#),
        1.0
    );
    assert_eq!(sample(&after, r#"pgrouter_node_up{node="pg2"}"#), 1.0);
    assert_eq!(sample(&after, "pgrouter_primary_known"), 1.0);
    assert!(after.contains(r#"pgrouter_build_info{version=""#));
    assert!(after.contains("# TYPE pgrouter_request_duration_seconds histogram"));
    assert!(after.contains(r#"pgrouter_health_check_duration_seconds_bucket{node="pg0",le="#));
    assert!(
        !after.contains("no_such_table"),
        "SQL text never becomes a label"
    );
    // The shipped dashboard and alert rules use only metrics pgrouter exports.
    for file in ["grafana-dashboard.json", "pgrouter-alerts.yml"] {
        let text =
            std::fs::read_to_string(crate::harness::repo().join("docs/monitoring").join(file))
                .unwrap();
        for name in metric_names(&text) {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| after.contains(&format!("# TYPE {b} histogram")))
                .unwrap_or(&name);
            assert!(
                after.contains(&format!("# TYPE {base} ")),
                "{file} uses {name}, which pgrouter does not export"
            );
        }
    }

    if tool("promtool") {
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            check
                .stdin
                .take()
                .unwrap()
                .write_all(after.as_bytes())
                .unwrap();
        }
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn health_ready_and_nodes_endpoints() {
    let Some(cluster) = cluster() else { return };
    let router = Router::start(cluster, "");
    let addr = router.admin_addr();
    assert_eq!(http(&addr, "GET", "/health"), (200, "ok\n".into()));
    assert!(
        eventually_async(Duration::from_secs(10), || http(&addr, "GET", "/ready").0
            == 200)
        .await
    );
    let (status, body) = http(&addr, "GET", "/nodes");
    assert_eq!(status, 200);
    let table: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(table["primary"], 0);
    assert_eq!(table["nodes"][0]["name"], "pg0");
    assert_eq!(table["nodes"][0]["role"], "primary");
    assert_eq!(table["nodes"][1]["role"], "replica");
    assert_eq!(table["nodes"][1]["state"], "up");
    assert!(table["nodes"][1]["lag_bytes"].is_u64());
    assert_eq!(http(&addr, "GET", "/nope").0, 404);
    assert_eq!(http(&addr, "POST", "/metrics").0, 405);
    assert_eq!(http(&addr, "HEAD", "/health"), (200, String::new()));
    // `pgrouter health`, the container HEALTHCHECK (no shell or curl in the image).
    let health = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pgrouter"))
            .arg("health")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(health(&["--admin", &addr]).status.success());
    assert!(health(&["--admin", &addr, "--ready"]).status.success());
    let started = std::time::Instant::now();
    assert!(health(&["--admin", &addr, "--wait", "300ms"])
        .status
        .success());
    assert!(started.elapsed() >= Duration::from_millis(300));
    let config = router.config_path();
    assert!(health(&["--config", config.to_str().unwrap()])
        .status
        .success());
    let closed = format!("127.0.0.1:{}", crate::harness::free_port_block(1));
    let out = health(&["--admin", &closed]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/health on"));
}

/// Stops a process when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_pgrouter() {
    let Some(cluster) = cluster() else { return };
    if !tool("prometheus") {
        return;
    }
    let router = Router::start(cluster, "");
    let port = crate::harness::free_port_block(1);
    let dir = router.dir.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: pgrouter\n    static_configs:\n      - targets: ['{}']\n",
            router.admin_addr()
        ),
    )
    .unwrap();
    let rules = crate::harness::repo().join("docs/monitoring/pgrouter-alerts.yml");
    let _prometheus = Reaped(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let query = "/api/v1/query?query=pgrouter_node_up%7Bnode%3D%22pg0%22%7D";
    let prometheus = format!("127.0.0.1:{port}");
    let answered = eventually_async(Duration::from_secs(60), || {
        std::net::TcpStream::connect(&prometheus).is_ok() && {
            let (status, body) = http(&prometheus, "GET", query);
            status == 200 && body.contains(r#""node":"pg0""#) && body.contains(r#","1"]"#)
        }
    })
    .await;
    assert!(
        answered,
        "Prometheus did not answer pgrouter_node_up{{node=\"pg0\"}} = 1:\n{}\n{}",
        http(&prometheus, "GET", query).1,
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
    // The shipped alert rules load into this Prometheus version too.
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn admin_console_answers_operators() {
    let Some(cluster) = cluster() else { return };
    let router = Router::start_weighted(cluster, [0, 1, 1], "");
    let [p1, p2] = cluster.replica_ports();
    router
        .expect_log("topology change: node pg2", Duration::from_secs(10))
        .await;

    let (ok, out, err) = console(&router, "SHOW NODES");
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(
        &rows[0][..5],
        [
            "pg0",
            "127.0.0.1",
            &cluster.primary_port().to_string(),
            "up",
            "primary"
        ]
    );
    assert_eq!(&rows[1][3..6], ["up", "replica", "1"]);
    // The console's own client is listed, as is an application client and its server connection.
    let app = connect(&router.conninfo("app", "app")).await.unwrap();
    app.simple_query("SELECT 1").await.unwrap();
    for command in [
        "SHOW POOLS",
        "SHOW CLIENTS",
        "SHOW SERVERS",
        "SHOW STATS",
        "SHOW DATABASES",
        "SHOW LISTS",
        "SHOW COUNTERS",
        "SHOW VERSION",
        "SHOW HELP",
    ] {
        let (ok, out, err) = console(&router, command);
        assert!(ok && !out.is_empty(), "{command}: {err}");
    }
    // PgBouncer's columns first (type, user, database, state, ...), pgrouter's after them.
    let (_, clients, _) = console(&router, "SHOW CLIENTS");
    assert!(
        clients.lines().any(|l| l.starts_with("C|app|app|active|")
            && l.contains("|pgrouter-test|")
            && l.ends_with("|split")),
        "{clients}"
    );
    assert!(
        clients
            .lines()
            .any(|l| l.starts_with("C|boss|pgrouter|active|") && l.contains("|psql|")),
        "{clients}"
    );
    let (_, servers, _) = console(&router, "SHOW SERVERS");
    assert!(
        servers.lines().any(|l| l.starts_with("S|app|app|")),
        "{servers}"
    );
    let (_, stats, _) = console(&router, "SHOW STATS");
    assert!(stats.lines().any(|l| l.starts_with("app|")), "{stats}");
    let (_, counters, _) = console(&router, "SHOW COUNTERS");
    assert!(
        counters.lines().any(|l| l.starts_with("statements.pg")),
        "{counters}"
    );
    let (_, version, _) = console(&router, "SHOW VERSION");
    assert!(version.starts_with("pgrouter "), "{version}");

    let (ok, config, _) = console(&router, "SHOW CONFIG");
    assert!(ok);
    assert!(config.contains("admin.users[0]|boss"), "{config}");
    assert!(config.contains("|********"));
    assert!(
        !config.contains(ADMIN_PASSWORD),
        "a secret in SHOW CONFIG:\n{config}"
    );

    let (ok, _, err) = console(&router, "SHOW EVERYTHING");
    assert!(!ok);
    assert!(
        err.contains("unknown admin console command") && err.contains("DISABLE NODE"),
        "{err}"
    );
    let (ok, _, err) = console(&router, "DISABLE NODE nosuch");
    assert!(!ok && err.contains("no node named"), "{err}");

    // Anyone else is refused with 28000, before any password exchange.
    let refused = connect(&format!(
        "host=127.0.0.1 port={} user=app password=app dbname=pgrouter",
        router.port
    ))
    .await
    .expect_err("not an admin");
    assert_eq!(
        refused.as_db_error().map(|e| e.code().code()),
        Some("28000")
    );
    let (ok, _, err) = psql(
        &router.url("app", "app").replace("/app", "/pgrouter"),
        &["-c", "SHOW NODES"],
        None,
    );
    assert!(
        !ok && err.contains("may not use the pgrouter admin console"),
        "{err}"
    );

    // DISABLE NODE: reads drain away from pg1 without a client error; ENABLE brings them back.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let conninfo = router.conninfo("app", "app");
            let stop = std::sync::Arc::clone(&stop);
            tokio::spawn(async move {
                let c = connect(&conninfo).await.unwrap();
                let mut ports = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let rows = c.simple_query("SELECT inet_server_port()").await.unwrap();
                    ports.push(first_value(&rows).parse::<u16>().unwrap());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                ports
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, _, err) = console(&router, "DISABLE NODE pg1");
    assert!(ok, "{err}");
    let (_, nodes, _) = console(&router, "SHOW NODES");
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("pg1|") && l.contains("|disabled|")),
        "{nodes}"
    );
    let fresh = connect(&router.conninfo("app", "app")).await.unwrap();
    for _ in 0..10 {
        let rows = fresh
            .simple_query("SELECT inet_server_port()")
            .await
            .unwrap();
        assert_eq!(
            first_value(&rows),
            p2.to_string(),
            "a read reached a disabled node"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        let ports = r
            .await
            .expect("a reader saw an error while a node was disabled");
        assert!(!ports.is_empty());
        assert_eq!(
            ports.last(),
            Some(&p2),
            "an existing session still reads from pg1"
        );
    }
    let (ok, _, err) = console(&router, "ENABLE NODE pg1");
    assert!(ok, "{err}");
    let mut back = false;
    for _ in 0..20 {
        let c = connect(&router.conninfo("app", "app")).await.unwrap();
        let rows = c.simple_query("SELECT inet_server_port()").await.unwrap();
        if first_value(&rows) == p1.to_string() {
            back = true;
            break;
        }
    }
    assert!(back, "reads did not return to pg1");

    // RELOAD applies a new weight; an invalid file is refused and the old configuration stays.
    let config_path = router.config_path();
    std::fs::write(
        &config_path,
        router_config(cluster, router.port, [0, 1, 3], ""),
    )
    .unwrap();
    let (ok, out, err) = console(&router, "RELOAD");
    assert!(ok, "{err}");
    assert!(out.contains("nodes[pg2].weight: 1 -> 3"), "{out}");
    let addr = router.admin_addr();
    assert!(
        eventually_async(Duration::from_secs(10), || http(&addr, "GET", "/nodes")
            .1
            .contains(r#""weight": 3"#))
        .await
    );
    std::fs::write(&config_path, "nodes: [oops\n").unwrap();
    let (ok, _, err) = console(&router, "RELOAD");
    assert!(!ok && err.contains("configuration not reloaded"), "{err}");
    let (_, config, _) = console(&router, "SHOW CONFIG");
    assert!(config.contains("nodes[2].weight|3"), "{config}");
    app.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn sighup_reloads_passwords_and_weights_without_dropping_clients() {
    let Some(cluster) = cluster() else { return };
    cluster.superuser_sql(
        "DROP ROLE IF EXISTS rotating; CREATE ROLE rotating LOGIN PASSWORD 'first'; \
         GRANT CONNECT ON DATABASE app TO rotating",
    );
    cluster.wait_for_replicas();
    let user = |password: &str| format!("  - {{name: rotating, password: {password}}}\n");
    // The extra user goes at the end of `users` (the generated configuration's last section
    // before `admin` is the users list, so it is appended as a flow entry there).
    let config_for = |port: u16, weight: u32, password: &str| {
        router_config(cluster, port, [1, weight, 1], "").replace(
            "  - {name: boss,",
            &format!("{}  - {{name: boss,", user(password)),
        )
    };
    let router = Router::start_in(&cluster.dir, |port| config_for(port, 1, "first"));
    let conninfo = |password: &str| {
        format!(
            "host=127.0.0.1 port={} user=rotating password={password} dbname=app",
            router.port
        )
    };
    let kept = connect(&conninfo("first")).await.unwrap();
    kept.simple_query("SELECT 1").await.unwrap();

    cluster.superuser_sql("ALTER ROLE rotating PASSWORD 'second'");
    cluster.wait_for_replicas();
    std::fs::write(router.config_path(), config_for(router.port, 5, "second")).unwrap();
    router.signal("HUP");
    router
        .expect_log(
            "configuration reloaded: users[rotating]: password changed",
            Duration::from_secs(10),
        )
        .await;
    // The connected client keeps working, on new server connections too.
    for _ in 0..5 {
        kept.simple_query("SELECT inet_server_port()")
            .await
            .unwrap();
    }
    let old = connect(&conninfo("first")).await.expect_err("old password");
    assert_eq!(old.as_db_error().map(|e| e.code().code()), Some("28P01"));
    let new = connect(&conninfo("second")).await.unwrap();
    new.simple_query("SELECT 1").await.unwrap();
    let addr = router.admin_addr();
    assert!(
        eventually_async(Duration::from_secs(10), || http(&addr, "GET", "/nodes")
            .1
            .contains(r#""weight": 5"#))
        .await
    );

    // An invalid file is rejected whole; the configuration in force keeps serving.
    std::fs::write(router.config_path(), "listen: [\n").unwrap();
    router.signal("HUP");
    router
        .expect_log("configuration not reloaded", Duration::from_secs(10))
        .await;
    let again = connect(&conninfo("second")).await.unwrap();
    again.simple_query("SELECT 1").await.unwrap();
    kept.simple_query("SELECT 1").await.unwrap();
    assert!(http(&addr, "GET", "/nodes").1.contains(r#""weight": 5"#));
}

/// The admin port under abuse: hundreds of sockets that send nothing, or half a request, never
/// make `/health` wait (they are dropped after a short header timeout); `/metrics` and `/nodes`
/// require `admin.http_auth` when it is set (the probes never do); and user or database names
/// a client sends before authenticating never become metric label values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_resists_slow_clients_and_guards_metrics() {
    use crate::harness::http_with;
    use std::io::{Read, Write};
    let Some(cluster) = cluster() else { return };
    let router = Router::start_in(&cluster.dir, |port| {
        router_config(cluster, port, [1, 1, 1], "").replace(
            "admin: {users: [boss]}",
            "admin: {users: [boss], http_auth: {bearer_token: s3cret-token, username: prom, password: prom-pw}}",
        )
    });
    let admin = router.admin_addr();

    // 300 slow sockets: silence, or a request line without its end.
    let mut slow: Vec<std::net::TcpStream> = (0..300)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(&admin).unwrap();
            if i % 2 == 0 {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
            }
            s
        })
        .collect();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let (status, body) = http(&admin, "GET", "/health");
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "/health waited {:?} behind slow clients",
            started.elapsed()
        );
    }
    // They are closed after the header timeout (2 s), not held.
    let first = &mut slow[0];
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 16];
    assert!(matches!(first.read(&mut b), Ok(0) | Err(_)));
    slow.clear();

    // Authentication for /metrics and /nodes only.
    assert_eq!(http(&admin, "GET", "/metrics").0, 401);
    assert_eq!(http(&admin, "GET", "/nodes").0, 401);
    assert_eq!(http(&admin, "GET", "/ready").0, 200);
    assert_eq!(
        http_with(&admin, "GET", "/metrics", "Authorization: Bearer wrong\r\n").0,
        401
    );
    let bearer = "Authorization: Bearer s3cret-token\r\n";
    assert_eq!(http_with(&admin, "GET", "/nodes", bearer).0, 200);
    let basic = "Authorization: Basic cHJvbTpwcm9tLXB3\r\n"; // prom:prom-pw
    assert_eq!(http_with(&admin, "GET", "/metrics", basic).0, 200);

    // Names sent before authentication are not label values.
    let made_up = format!("made_up_{}", rand::random::<u32>());
    let mut half = crate::raw::RawClient::connect(router.port);
    half.send(&crate::raw::startup_packet(
        196_608,
        &[("user", &made_up), ("database", &made_up)],
    ));
    let client = crate::harness::connect(&router.conninfo("app", "app"))
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let metrics = crate::harness::eventually(Duration::from_secs(10), || {
        let (_, body) = http_with(&admin, "GET", "/metrics", bearer);
        body.contains("user=\"(unauthenticated)\"") && body.contains("user=\"app\"")
    });
    assert!(
        metrics,
        "clients logging in are counted under (unauthenticated)"
    );
    let (_, body) = http_with(&admin, "GET", "/metrics", bearer);
    assert!(
        !body.contains(&made_up),
        "a made-up name became a label value"
    );
    drop(half);
}
