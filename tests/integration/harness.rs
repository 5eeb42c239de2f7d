//! Test harness: one real cluster per test run, routers started as real processes.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The running test cluster.
#[derive(Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pub base_port: u16,
}

impl Cluster {
    pub fn primary_port(&self) -> u16 {
        self.base_port
    }

    pub fn replica_ports(&self) -> [u16; 2] {
        [self.base_port + 1, self.base_port + 2]
    }

    /// Unix socket directory of node `pgN`, for superuser connections.
    pub fn socket_dir(&self, node: usize) -> PathBuf {
        self.dir.join(format!("pg{node}"))
    }

    /// Whether a statement containing `marker` is running (state `active`) on one of the three
    /// nodes: a test waits for it before cancelling it.
    pub fn runs_statement(&self, marker: &str) -> bool {
        (0..3).any(|node| {
            self.node_sql(
                node,
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                     AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
                ),
            ) == "1"
        })
    }

    /// Runs SQL as the superuser on the primary with psql, returning its unaligned output.
    pub fn superuser_sql(&self, sql: &str) -> String {
        self.node_sql(0, sql)
    }

    /// Runs SQL as the superuser on node `pgN` (0 = the initial primary).
    pub fn node_sql(&self, node: usize, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                "app",
            ])
            .arg("-h")
            .arg(self.socket_dir(node))
            .arg("-p")
            .arg((self.base_port + node as u16).to_string())
            .arg("-c")
            .arg(sql)
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "superuser psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until both standbys have replayed everything the primary wrote so far.
    pub fn wait_for_replicas(&self) {
        let lsn = self.superuser_sql("SELECT pg_current_wal_lsn()");
        let caught_up = eventually(Duration::from_secs(30), || {
            self.superuser_sql(&format!(
                "SELECT count(*) FROM pg_stat_replication WHERE replay_lsn >= '{lsn}'"
            )) == "2"
        });
        assert!(caught_up, "standbys did not catch up with the primary");
    }
}

pub fn postgres_available() -> bool {
    let has_bin = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().any(|e| e.path().join("bin/initdb").exists()))
        .unwrap_or(false);
    let has_clients = ["psql", "pgbench"].iter().all(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    has_bin && has_clients
}

/// Reports a missing tool or component: in CI (`CI` or `PGR_REQUIRE_POSTGRES` set, as CI
/// services and scripts/test.sh do) the test fails with `what`; elsewhere it prints a loud
/// warning and the caller skips.
pub fn missing(what: &str) {
    let required = ["PGR_REQUIRE_POSTGRES", "CI"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty() && x != "0" && x != "false"));
    assert!(!required, "{what}");
    eprintln!("\n!!!!!!!! SKIPPING: {what} !!!!!!!!\n");
}

/// True when python3 can import every module named (`"psycopg, asyncpg"`): the client scripts'
/// drivers.
pub fn python_has(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The cluster for this test run, started on first use. `None` (with a loud warning) when
/// PostgreSQL is not installed and `PGR_REQUIRE_POSTGRES` is not set.
pub fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER.get_or_init(start_cluster).as_ref()
}

fn start_cluster() -> Option<Cluster> {
    if !postgres_available() {
        missing(
            "PostgreSQL (server binaries, psql, pgbench) is not installed: run \
             `scripts/dev-cluster.sh deps` or `scripts/test.sh`; the real-PostgreSQL tests",
        );
        return None;
    }
    let cluster = cluster_up(2, &[]);
    // A role that pgrouter lets in without a password (auth: trust) for raw-protocol tests.
    cluster.superuser_sql(
        "CREATE ROLE rawtest LOGIN PASSWORD 'raw'; GRANT ALL ON DATABASE app TO rawtest; \
         GRANT ALL ON SCHEMA public TO rawtest",
    );
    Some(cluster)
}

/// A cluster of one test's own (the shared one stays as it is): a primary and `replicas`
/// standbys, with `env` passed to dev-cluster.sh (e.g. `PGR_SSL_DIR`). Torn down when the test
/// process exits. `None` without PostgreSQL, as [`cluster`].
pub fn private_cluster(replicas: u16, env: &[(&str, &std::ffi::OsStr)]) -> Option<Cluster> {
    cluster()?;
    Some(cluster_up(replicas, env))
}

/// `dev-cluster.sh up` on free ports with `replicas` standbys and `env`; torn down at exit. A
/// port taken between choosing it and the server binding it (other tests run meanwhile) is
/// retried on other ports.
fn cluster_up(replicas: u16, env: &[(&str, &std::ffi::OsStr)]) -> Cluster {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let base_port = free_port_block(replicas + 1);
        let dir =
            std::env::temp_dir().join(format!("pgrouter-test-{}-{base_port}", std::process::id()));
        let cluster = Cluster { dir, base_port };
        let script = |command: &str| {
            Command::new("bash")
                .arg(repo().join("scripts/dev-cluster.sh"))
                .arg(command)
                .env("PGR_CLUSTER_DIR", &cluster.dir)
                .env("PGR_BASE_PORT", base_port.to_string())
                .env("PGR_REPLICAS", replicas.to_string())
                .envs(env.iter().copied())
                .output()
                .expect("dev-cluster.sh runs")
        };
        let out = script("up");
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() && text.contains("Address already in use") && attempt < 3 {
            script("destroy");
            continue;
        }
        assert!(out.status.success(), "dev-cluster.sh up failed:\n{text}");
        destroy_at_exit("scripts/dev-cluster.sh", &[], &cluster.dir, base_port);
        return cluster;
    }
}

/// Stops the routers and tears a cluster down (with `script destroy`) when this test process
/// exits, however it exits.
pub fn destroy_at_exit(script: &str, args: &[&str], dir: &std::path::Path, base_port: u16) {
    // Paths reach the watcher through its environment, so that its own command line does not
    // match the pkill pattern (pkill -f would otherwise kill the watcher itself).
    let watcher = "while kill -0 \"$PGR_WATCH_PID\" 2>/dev/null; do sleep 1; done; \
                   pkill -f -- \"--config $PGR_CLUSTER_DIR/\"; \
                   bash \"$PGR_CLUSTER_SCRIPT\" $PGR_CLUSTER_ARGS destroy >/dev/null 2>&1";
    // Deliberately detached and never waited for: it outlives this process to clean up after it.
    #[allow(clippy::zombie_processes)]
    Command::new("setsid")
        .args(["bash", "-c", watcher])
        .env("PGR_WATCH_PID", std::process::id().to_string())
        .env("PGR_CLUSTER_DIR", dir)
        .env("PGR_BASE_PORT", base_port.to_string())
        .env("PGR_CLUSTER_SCRIPT", repo().join(script))
        .env("PGR_CLUSTER_ARGS", args.join(" "))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("teardown watcher starts");
}

/// A block of `n` consecutive free ports on 127.0.0.1.
pub fn free_port_block(n: u16) -> u16 {
    loop {
        // Below Linux's ephemeral range (32768-60999): a port found free here is not taken a
        // moment later as the source port of some outgoing connection.
        let base: u16 = 20_000 + rand::random::<u16>() % 12_000;
        if (0..n)
            .all(|i| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, base + i)).is_ok())
        {
            return base;
        }
    }
}

/// A pgrouter process.
pub struct Router {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    log: PathBuf,
}

/// The password of `boss`, the admin console user of the generated configuration (a role that
/// does not exist in PostgreSQL: the console never logs in to a server).
pub const ADMIN_PASSWORD: &str = "b0ss-s3cret";

/// The generated configuration: the three nodes with the given read weights, the test users, and
/// `extra` YAML appended.
pub fn router_config(cluster: &Cluster, port: u16, weights: [u32; 3], extra: &str) -> String {
    let [r1, r2] = cluster.replica_ports();
    let [w0, w1, w2] = weights;
    format!(
        "listen: 127.0.0.1:{port}\n\
         admin_listen: 127.0.0.1:{admin}\n\
         nodes:\n  - {{name: pg0, host: 127.0.0.1, port: {p}, weight: {w0}}}\n  - {{name: pg1, host: 127.0.0.1, port: {r1}, weight: {w1}}}\n  - {{name: pg2, host: 127.0.0.1, port: {r2}, weight: {w2}}}\n\
         users:\n  - {{name: app, password: app, auth: scram-sha-256}}\n  - {{name: legacy, password: legacy, auth: md5}}\n  - {{name: rawtest, password: raw, auth: trust}}\n  - {{name: boss, password: {ADMIN_PASSWORD}}}\n\
         admin: {{users: [boss]}}\n{extra}",
        p = cluster.primary_port(),
        admin = port + 1,
    )
}

impl Router {
    /// Starts the real binary with the default test configuration plus `extra` YAML.
    pub fn start(cluster: &Cluster, extra: &str) -> Router {
        Router::start_weighted(cluster, [1, 1, 1], extra)
    }

    /// Starts the real binary with the given node weights (primary first).
    pub fn start_weighted(cluster: &Cluster, weights: [u32; 3], extra: &str) -> Router {
        Router::start_in(&cluster.dir, |port| {
            router_config(cluster, port, weights, extra)
        })
    }

    /// Starts the real binary in a new directory under `parent` with the configuration that
    /// `config_for(port)` writes.
    pub fn start_in(parent: &std::path::Path, config_for: impl FnOnce(u16) -> String) -> Router {
        // The port after the client port is free for `admin_listen` (the generated
        // configuration puts it there); the two after that for `primary_listen` and
        // `read_only_listen`, when a test wants them.
        let port = free_port_block(4);
        let dir = parent.join(format!("router-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("pgrouter.yaml");
        std::fs::write(&config, config_for(port)).unwrap();
        let log = dir.join("pgrouter.log");
        let child = Command::new(env!("CARGO_BIN_EXE_pgrouter"))
            .arg("--config")
            .arg(&config)
            .arg("--log-level")
            .arg("debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("pgrouter starts");
        let router = Router {
            child,
            port,
            dir,
            log,
        };
        router.wait_ready();
        router
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pgrouter did not start listening:\n{}", self.log_text());
    }

    /// Waits up to `limit` for `needle` to appear in the router's log; fails the test with the
    /// log otherwise.
    pub async fn expect_log(&self, needle: &str, limit: Duration) {
        let found = eventually_async(limit, || self.log_text().contains(needle)).await;
        assert!(
            found,
            "{needle:?} not in the log within {limit:?}:\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin HTTP address of a router started with the generated configuration.
    pub fn admin_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port + 1)
    }

    /// The configuration file (tests rewrite it before a reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("pgrouter.yaml")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Virtual memory (`VmSize`), in KiB: what was allocated, touched or not.
    pub fn virtual_kib(&self) -> u64 {
        self.status_kib("VmSize:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// Waits up to `limit` for the process to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Sends a signal (`TERM`, `HUP`, …) to the process.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn url(&self, user: &str, password: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/app", self.port)
    }

    /// tokio-postgres connection string.
    pub fn conninfo(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname=app application_name=pgrouter-test",
            self.port
        )
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // A failing test shows what the router said (its notable lines; the log file has
            // the debug ones too, but a CI run keeps only the output).
            let text = self.log_text();
            let notable: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE "))
                .collect();
            let tail = &notable[notable.len().saturating_sub(150)..];
            eprintln!(
                "--- pgrouter log ({}), last {} notable lines ---\n{}",
                self.log.display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// The shared router most tests use (default configuration).
pub fn shared_router() -> Option<&'static Router> {
    static ROUTER: OnceLock<Option<Router>> = OnceLock::new();
    ROUTER
        .get_or_init(|| cluster().map(|c| Router::start(c, "")))
        .as_ref()
}

/// Connects with tokio-postgres; the connection task runs on the current runtime.
pub async fn connect(conninfo: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A plain HTTP/1.1 request; returns the status code and the body.
pub fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    http_with(addr, method, path, "")
}

/// [`http`] with extra header lines (each ending in `\r\n`).
pub fn http_with(addr: &str, method: &str, path: &str, headers: &str) -> (u16, String) {
    use std::io::Read;
    let mut stream = TcpStream::connect(addr).expect("admin endpoint reachable");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Runs psql against a URL with extra arguments; returns (success, stdout, stderr).
pub fn psql(url: &str, args: &[&str], stdin: Option<&[u8]>) -> (bool, String, String) {
    let mut child = Command::new("psql")
        .arg("-X")
        .arg("-At")
        .arg(url)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql runs");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            input.write_all(data).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Like [`eventually`], but yields to the async runtime between polls (so connection tasks on a
/// current-thread test runtime keep running).
pub async fn eventually_async(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The data rows of a simple-protocol result.
pub fn rows(
    messages: &[tokio_postgres::SimpleQueryMessage],
) -> Vec<&tokio_postgres::SimpleQueryRow> {
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// The first column of the first row of a simple-protocol result.
pub fn first_value(messages: &[tokio_postgres::SimpleQueryMessage]) -> &str {
    rows(messages)[0].get(0).expect("a non-NULL value")
}

/// Path helper for temporary files of one test.
pub fn temp_file(router: &Router, name: &str) -> PathBuf {
    router.dir.join(name)
}

/// Runs openssl in `dir` (test certificates), which must succeed.
pub fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and, signed by it, a server certificate for `localhost` and 127.0.0.1, in `dir/name`.
pub struct Certificates {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_certificates(dir: &std::path::Path, name: &str) -> Certificates {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let subject = format!("/CN=pgrouter test CA {name}");
    openssl(
        &dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", &subject,
        ],
    );
    issue_certificate(
        &dir,
        "server",
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    Certificates {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        dir,
    }
}

/// Signs `stem.crt` (key `stem.key`, common name `cn`) with the CA in `dir`; `ext`: extra
/// X.509 extension lines.
pub fn issue_certificate(dir: &std::path::Path, stem: &str, cn: &str, ext: &str) {
    let (key, csr, crt, cnf) = (
        format!("{stem}.key"),
        format!("{stem}.csr"),
        format!("{stem}.crt"),
        format!("{stem}.cnf"),
    );
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
            &subject,
        ],
    );
    std::fs::write(
        dir.join(&cnf),
        format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n{ext}"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &cnf,
        ],
    );
}

/// Where `client`'s statements run, from the servers: `pg_is_in_recovery()` in a read-write
/// transaction (the primary: "f"), then as a plain read until one reaches a replica ("t"; up to
/// 5 s). Routers under test give the primary read weight 0 for the second to be certain.
pub async fn primary_then_replica(client: &tokio_postgres::Client) -> (String, String) {
    let rows = client
        .simple_query("BEGIN; SELECT pg_is_in_recovery(); COMMIT")
        .await
        .unwrap();
    let primary = first_value(&rows).to_owned();
    let mut replica = String::new();
    for _ in 0..50 {
        let rows = client
            .simple_query("SELECT pg_is_in_recovery()")
            .await
            .unwrap();
        replica = first_value(&rows).to_owned();
        if replica == "t" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (primary, replica)
}

/// The column names psql prints for `sql` at `url` (its header line, split at `|`).
pub fn psql_columns(url: &str, sql: &str) -> Vec<String> {
    let out = Command::new("psql")
        .args(["-X", "-A", "-c", sql, url])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{sql} at {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .split('|')
        .map(str::to_owned)
        .collect()
}
