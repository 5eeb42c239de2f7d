//! Coming from PgBouncer: the admin console's `SHOW POOLS/STATS/CLIENTS/SERVERS/DATABASES/LISTS`
//! start with the columns a real PgBouncer (Debian's, started here in front of the same cluster)
//! answers with, and Debian's prometheus-pgbouncer-exporter scrapes pgrouter unchanged, through
//! PgBouncer's console database name `pgbouncer`.

use crate::harness::{
    cluster, connect, free_port_block, missing, psql_columns, Cluster, Router, ADMIN_PASSWORD,
};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const COMMANDS: [&str; 6] = [
    "SHOW POOLS",
    "SHOW STATS",
    "SHOW CLIENTS",
    "SHOW SERVERS",
    "SHOW DATABASES",
    "SHOW LISTS",
];

/// A program from a Debian package: required in CI (scripts/test.sh installs it), skipped
/// loudly elsewhere.
fn installed(path: &str, package: &str) -> Option<PathBuf> {
    let path = PathBuf::from(path);
    if path.exists() {
        return Some(path);
    }
    missing(&format!(
        "{} is not installed (Debian package `{package}`; scripts/test.sh installs it)",
        path.display()
    ));
    None
}

/// Runs as the PostgreSQL OS user when root (PgBouncer refuses to run as root).
fn as_postgres(program: &std::path::Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// A real PgBouncer in front of the cluster's primary; its console user `app` (trust).
fn start_pgbouncer(binary: &std::path::Path, cluster: &Cluster) -> (Process, u16) {
    let port = free_port_block(1);
    let dir = cluster.dir.join(format!("pgbouncer-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pgbouncer.ini"),
        format!(
            "[databases]\napp = host=127.0.0.1 port={} dbname=app\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {d}/users.txt\nadmin_users = app\npool_mode = transaction\n",
            cluster.primary_port(),
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("users.txt"), "\"app\" \"app\"\n").unwrap();
    let _ = Command::new("chown")
        .args(["-R", "postgres:"])
        .arg(&dir)
        .status();
    let child = as_postgres(binary)
        .arg(dir.join("pgbouncer.ini"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .expect("pgbouncer starts");
    let process = Process(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "PgBouncer did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (process, port)
}

#[tokio::test]
async fn pgbouncer_columns_and_exporter() {
    let Some(cluster) = cluster() else { return };
    let Some(pgbouncer) = installed("/usr/sbin/pgbouncer", "pgbouncer") else {
        return;
    };
    let Some(exporter) = installed(
        "/usr/bin/prometheus-pgbouncer-exporter",
        "prometheus-pgbouncer-exporter",
    ) else {
        return;
    };
    let (bouncer, port) = start_pgbouncer(&pgbouncer, cluster);
    let bouncer_url = format!("postgres://app@127.0.0.1:{port}/pgbouncer");
    let expected: Vec<Vec<String>> = COMMANDS
        .iter()
        .map(|c| psql_columns(&bouncer_url, c))
        .collect();
    drop(bouncer);

    let router = Router::start(cluster, "pool: {mode: transaction}\n");
    let app = connect(&router.conninfo("app", "app")).await.unwrap();
    for _ in 0..5 {
        app.simple_query("SELECT 1").await.unwrap();
    }
    // Both console database names: pgrouter's and PgBouncer's.
    for database in ["pgrouter", "pgbouncer"] {
        let url = format!(
            "postgres://boss:{ADMIN_PASSWORD}@127.0.0.1:{}/{database}",
            router.port
        );
        for (command, expected) in COMMANDS.iter().zip(&expected) {
            let ours = psql_columns(&url, command);
            assert!(
                ours.len() >= expected.len() && ours[..expected.len()] == expected[..],
                "{command} on {database}: PgBouncer's columns {expected:?} must come first, got {ours:?}"
            );
        }
    }
    // Anyone not an admin reaches a server database called pgbouncer, not the console.
    let not_admin = connect(&format!(
        "host=127.0.0.1 port={} user=app password=app dbname=pgbouncer",
        router.port
    ))
    .await
    .expect_err("no such database on the servers");
    assert_eq!(
        not_admin.as_db_error().map(|e| e.code().code()),
        Some("3D000"),
        "{not_admin:?}"
    );

    // Debian's exporter, unchanged: it logs in to database pgbouncer (password from PGPASSWORD).
    let metrics_port = free_port_block(1);
    let child = Command::new(&exporter)
        .args(["--host", "127.0.0.1", "--port", &metrics_port.to_string()])
        .args([
            "--pgbouncer-host",
            "127.0.0.1",
            "--pgbouncer-port",
            &router.port.to_string(),
        ])
        .args(["--pgbouncer-user", "boss"])
        .env("PGPASSWORD", ADMIN_PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(router.dir.join("exporter.log")).unwrap())
        .spawn()
        .expect("the exporter starts");
    let _exporter = Process(child);
    let mut body = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_err() {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let (status, text) =
            crate::harness::http(&format!("127.0.0.1:{metrics_port}"), "GET", "/metrics");
        if status == 200 && text.contains("pgbouncer_requests_total") {
            body = text;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(router.dir.join("exporter.log")).unwrap_or_default();
    let value = |series: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} not scraped:\n{body}\nexporter log:\n{log}"))
    };
    assert!(value("pgbouncer_requests_total{database=\"app\"}") >= 5.0);
    assert!(value("pgbouncer_received_bytes_total{database=\"app\"}") > 0.0);
    assert_eq!(
        value("pgbouncer_active_clients{database=\"app\",user=\"app\"}"),
        1.0
    );
    assert_eq!(
        value("pgbouncer_waiting_clients{database=\"app\",user=\"app\"}"),
        0.0
    );
    assert_eq!(value("pgbouncer_pool_size{database=\"app\"}"), 40.0);
    assert!(value("pgbouncer_used_clients") >= 1.0);
    assert!(value("pgbouncer_pools") >= 1.0);
}
