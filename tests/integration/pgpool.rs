//! Coming from Pgpool-II: its `SHOW POOL_*` commands answered by pgrouter on every client
//! connection, with the columns a real Pgpool-II (Debian's `pgpool2`, started here in front of
//! the same cluster) answers with, in both pooling modes and inside transactions.

use crate::harness::{cluster, connect, free_port_block, missing, Cluster, Router};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::SimpleQueryMessage;

/// Pgpool-II's commands, as a monitoring script types them.
const COMMANDS: [&str; 6] = [
    "SHOW POOL_NODES",
    "SHOW POOL_VERSION",
    "SHOW POOL_POOLS",
    "SHOW POOL_PROCESSES",
    "SHOW POOL_HEALTH_CHECK_STATS",
    "SHOW POOL_BACKEND_STATS",
];

/// Debian's `pgpool` binary: required in CI (scripts/test.sh installs `pgpool2`), skipped loudly
/// elsewhere.
pub(crate) fn pgpool_binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/pgpool", "/usr/bin/pgpool"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        missing("pgpool is not installed (Debian package `pgpool2`; scripts/test.sh installs it)");
    }
    found
}

/// A real Pgpool-II in streaming-replication mode with load balancing in front of the test
/// cluster, stopped when dropped.
struct Pgpool {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Pgpool {
    fn start(binary: &Path, cluster: &Cluster) -> Pgpool {
        let port = free_port_block(1);
        let dir = cluster.dir.join(format!("pgpool-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let mut conf = format!(
            "backend_clustering_mode = 'streaming_replication'\n\
             listen_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{d}'\npcp_listen_addresses = ''\npcp_socket_dir = '{d}'\n\
             num_init_children = 4\nmax_pool = 1\nload_balance_mode = on\n\
             sr_check_period = 0\nhealth_check_period = 0\nfailover_on_backend_error = off\n\
             enable_pool_hba = off\npool_passwd = '{d}/pool_passwd'\n\
             pid_file_name = '{d}/pgpool.pid'\nlogdir = '{d}'\n"
        );
        let ports = [cluster.primary_port()]
            .into_iter()
            .chain(cluster.replica_ports());
        for (i, p) in ports.enumerate() {
            conf.push_str(&format!(
                "backend_hostname{i} = '127.0.0.1'\nbackend_port{i} = {p}\nbackend_weight{i} = 1\n\
                 backend_flag{i} = 'DISALLOW_TO_FAILOVER'\n"
            ));
        }
        std::fs::write(dir.join("pgpool.conf"), conf).unwrap();
        // Pgpool-II answers SCRAM itself and logs in to the servers with the password.
        std::fs::write(dir.join("pool_passwd"), "app:TEXTapp\n").unwrap();
        std::fs::write(dir.join("pcp.conf"), "").unwrap();
        // As root (CI), Pgpool-II runs as the PostgreSQL OS user, as the cluster does.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        let mut command = if root {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success());
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(binary);
            c
        } else {
            Command::new(binary)
        };
        let child = command
            .arg("-n")
            .arg("-f")
            .arg(dir.join("pgpool.conf"))
            .arg("-F")
            .arg(dir.join("pcp.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("pgpool starts");
        let pgpool = Pgpool { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pgpool.accepts_queries() {
            assert!(
                Instant::now() < deadline,
                "Pgpool-II did not start: {}",
                std::fs::read_to_string(pgpool.dir.join("stderr.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        pgpool
    }

    fn url(&self) -> String {
        format!("postgres://app:app@127.0.0.1:{}/app", self.port)
    }

    fn accepts_queries(&self) -> bool {
        crate::harness::psql(&self.url(), &["-c", "SELECT 1"], None).0
    }
}

impl Drop for Pgpool {
    fn drop(&mut self) {
        // runuser passes SIGTERM on to pgpool, which stops its children (`-n`: no daemon).
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// The header line psql prints for `sql` (column names joined by `|`).
fn columns_via_psql(url: &str, sql: &str) -> String {
    crate::harness::psql_columns(url, sql).join("|")
}

/// Column names and rows of a simple query.
async fn result(client: &tokio_postgres::Client, sql: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in client.simple_query(sql).await.unwrap() {
        match m {
            SimpleQueryMessage::RowDescription(c) => {
                columns = c.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(r) => rows.push(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or_default().to_owned())
                    .collect(),
            ),
            _ => {}
        }
    }
    (columns, rows)
}

#[tokio::test]
async fn pgpool_show_commands_answer_with_pgpool_columns() {
    let Some(cluster) = cluster() else { return };
    let Some(binary) = pgpool_binary() else {
        return;
    };
    let pgpool = Pgpool::start(&binary, cluster);
    let expected: Vec<String> = COMMANDS
        .iter()
        .map(|c| columns_via_psql(&pgpool.url(), c))
        .collect();
    drop(pgpool);
    for mode in ["session", "transaction"] {
        let router = Router::start(cluster, &format!("pool: {{mode: {mode}}}\n"));
        let url = router.url("app", "app");
        for (command, expected) in COMMANDS.iter().zip(&expected) {
            assert_eq!(
                &columns_via_psql(&url, command),
                expected,
                "{command}, {mode} pooling: pgrouter's columns differ from Pgpool-II's"
            );
        }
        let client = connect(&router.conninfo("app", "app")).await.unwrap();
        for _ in 0..6 {
            client.simple_query("SELECT 1").await.unwrap();
        }
        let (columns, nodes) = result(&client, "show pool_nodes;").await;
        let column = |name: &str| columns.iter().position(|c| c == name).unwrap();
        let ports: Vec<String> = nodes.iter().map(|r| r[column("port")].clone()).collect();
        let expected_ports: Vec<String> = [cluster.primary_port()]
            .into_iter()
            .chain(cluster.replica_ports())
            .map(|p| p.to_string())
            .collect();
        assert_eq!(ports, expected_ports, "{mode}");
        let roles: Vec<&str> = nodes.iter().map(|r| r[column("role")].as_str()).collect();
        assert_eq!(roles, ["primary", "standby", "standby"], "{mode}");
        assert!(
            nodes.iter().all(|r| r[column("status")] == "up"),
            "{nodes:?}"
        );
        let selects: u64 = nodes
            .iter()
            .map(|r| r[column("select_cnt")].parse::<u64>().unwrap())
            .sum();
        assert!(selects >= 6, "the six reads are counted: {nodes:?}");
        let (_, version) = result(&client, "SHOW POOL_VERSION").await;
        assert!(version[0][0].ends_with("(pgrouter)"), "{version:?}");
        let (columns, processes) = result(&client, "SHOW POOL_PROCESSES").await;
        let user = columns.iter().position(|c| c == "username").unwrap();
        assert!(processes.iter().any(|r| r[user] == "app"), "{processes:?}");

        // Inside a transaction: answered without touching it (a server would have failed it).
        let table = format!("pgpool_show_{mode}");
        client
            .simple_query(&format!("CREATE TABLE IF NOT EXISTS {table} (x int)"))
            .await
            .unwrap();
        client.simple_query("BEGIN").await.unwrap();
        client
            .simple_query(&format!("INSERT INTO {table} VALUES (1)"))
            .await
            .unwrap();
        let rows = result(&client, "SHOW POOL_BACKEND_STATS").await.1;
        assert_eq!(rows.len(), 3, "{mode}");
        let seen = client
            .simple_query(&format!("SELECT count(*) FROM {table}"))
            .await
            .unwrap();
        assert_eq!(
            crate::harness::first_value(&seen),
            "1",
            "{mode}: the transaction goes on"
        );
        client.simple_query("ROLLBACK").await.unwrap();
        client
            .simple_query(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
    }
}

/// Debian's packaged pgpool.conf with the backends an operator adds (`backend_*`, as the file's
/// own commented examples write them), imported with its packaged pool_hba.conf and a
/// pool_passwd, runs as is: reads on the replicas, a function listed by a regular expression in
/// `write_function_list` on the primary, and the report names what was not carried over.
#[tokio::test]
async fn import_pgpool_turns_the_debian_config_into_a_running_router() {
    let Some(cluster) = cluster() else { return };
    if pgpool_binary().is_none() {
        return;
    }
    let packaged =
        std::fs::read_to_string("/etc/pgpool2/pgpool.conf").expect("Debian's pgpool.conf");
    let hba = Path::new("/etc/pgpool2/pool_hba.conf");
    let dir = cluster.dir.join(format!("import-{}", free_port_block(1)));
    std::fs::create_dir_all(&dir).unwrap();
    let [r1, r2] = cluster.replica_ports();
    let conf = dir.join("pgpool.conf");
    std::fs::write(
        &conf,
        format!(
            "{packaged}\nlisten_addresses = '127.0.0.1'\nport = 9999\n\
             backend_hostname0 = '127.0.0.1'\nbackend_port0 = {p0}\nbackend_weight0 = 0\nbackend_flag0 = 'ALLOW_TO_FAILOVER'\n\
             backend_hostname1 = '127.0.0.1'\nbackend_port1 = {r1}\nbackend_weight1 = 1\n\
             backend_hostname2 = '127.0.0.1'\nbackend_port2 = {r2}\nbackend_weight2 = 1\n\
             load_balance_mode = on\nnum_init_children = 16\nhealth_check_period = 1\n\
             health_check_user = 'app'\nhealth_check_password = 'app'\n\
             write_function_list = 'nextval,setval,audit_.*'\nmemory_cache_enabled = on\n",
            p0 = cluster.primary_port()
        ),
    )
    .unwrap();
    // app's password encrypted by Pgpool-II's own pg_enc: pgrouter logs in to the servers with
    // it, so the queries below only work if it was decrypted right.
    let key = dir.join("pgpoolkey");
    std::fs::write(&key, "a key for the test\n").unwrap();
    let encrypted = Command::new("/usr/sbin/pg_enc")
        .arg("-k")
        .arg(&key)
        .arg("app")
        .output()
        .expect("pg_enc (Debian's pgpool2) runs");
    let encrypted = String::from_utf8_lossy(&encrypted.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("pool_passwd string: ").map(str::to_owned))
        .expect("pg_enc prints the pool_passwd string");
    // legacy's md5 hash, as pool_passwd and pg_authid keep it: md5(password || user).
    let md5 = Command::new("sh")
        .args(["-c", "printf legacylegacy | md5sum"])
        .output()
        .unwrap();
    let md5 = String::from_utf8_lossy(&md5.stdout)[..32].to_owned();
    let passwd = dir.join("pool_passwd");
    std::fs::write(
        &passwd,
        format!("app:{encrypted}\nlegacy:md5{md5}\nold:SHA256notaform\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pgrouter"))
        .arg("import-pgpool")
        .arg(&conf)
        .arg("--pool-hba")
        .arg(hba)
        .arg("--pool-passwd")
        .arg(&passwd)
        .arg("--pgpool-key")
        .arg(&key)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{report}");
    let yaml = String::from_utf8(out.stdout).unwrap();
    for line in [
        "backend_hostname1: mapped",
        "write_function_list: mapped",
        "backend_flag0: not needed",
        "memory_cache_enabled: UNSUPPORTED",
        "(legacy): mapped",
        "(app): mapped",
        "pool_hba.conf:",
    ] {
        assert!(
            report.contains(line),
            "{line:?} not in the report:\n{report}"
        );
    }
    let router = Router::start_in(&dir, |port| {
        yaml.replace(
            "listen: 127.0.0.1:9999",
            &format!(
                "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{}",
                port + 1
            ),
        )
    });
    // Debian's pool_hba.conf trusts 127.0.0.1: no password needed.
    let client = connect(&format!(
        "host=127.0.0.1 port={} user=app dbname=app",
        router.port
    ))
    .await
    .unwrap();
    let ran_on = |rows: Vec<SimpleQueryMessage>| crate::harness::first_value(&rows).to_owned();
    let mut on_replica = false;
    for _ in 0..50 {
        let port = ran_on(
            client
                .simple_query("SELECT inet_server_port()")
                .await
                .unwrap(),
        );
        if port == r1.to_string() || port == r2.to_string() {
            on_replica = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(on_replica, "reads reach the replicas");
    // legacy logs in (trusted by Debian's pool_hba.conf); pgrouter answers the servers' md5
    // requests with the imported hash.
    let legacy = connect(&format!(
        "host=127.0.0.1 port={} user=legacy dbname=app",
        router.port
    ))
    .await
    .unwrap();
    legacy.simple_query("SELECT 1").await.unwrap();
    cluster.superuser_sql(
        "CREATE OR REPLACE FUNCTION audit_probe() RETURNS int LANGUAGE sql IMMUTABLE \
         AS 'SELECT inet_server_port()'; GRANT EXECUTE ON FUNCTION audit_probe() TO PUBLIC",
    );
    cluster.wait_for_replicas();
    for _ in 0..5 {
        let port = ran_on(client.simple_query("SELECT audit_probe()").await.unwrap());
        assert_eq!(
            port,
            cluster.primary_port().to_string(),
            "a function matching write_function_list's audit_.* runs on the primary"
        );
    }
}

/// `Parse`/`Bind`/`Execute` bodies for the unnamed statement and portal.
fn extended(sql: Option<&str>, describe: bool) -> Vec<u8> {
    use crate::raw::message;
    let mut out = Vec::new();
    if let Some(sql) = sql {
        out.extend(message(b'P', format!("\0{sql}\0\0\0").as_bytes()));
    }
    out.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    if describe {
        out.extend(message(b'D', b"P\0"));
    }
    out.extend(message(b'E', b"\0\0\0\0\0"));
    out.extend(message(b'S', b""));
    out
}

/// The messages up to `ReadyForQuery`: their tags, and the first data row's first value.
fn answers(c: &mut crate::raw::RawClient) -> (Vec<u8>, Option<String>) {
    let mut tags = Vec::new();
    let mut first = None;
    loop {
        let (tag, body) = c.read_message().expect("an answer");
        tags.push(tag);
        if tag == b'D' && first.is_none() {
            let len = i32::from_be_bytes(body[2..6].try_into().unwrap()) as usize;
            first = Some(String::from_utf8_lossy(&body[6..6 + len]).into_owned());
        }
        if tag == b'Z' {
            return (tags, first);
        }
    }
}

#[tokio::test]
async fn pgpool_commands_through_the_extended_protocol() {
    let Some(cluster) = cluster() else { return };
    for mode in ["session", "transaction"] {
        let router = Router::start(cluster, &format!("pool: {{mode: {mode}}}\n"));
        // tokio-postgres prepares named statements.
        let client = connect(&router.conninfo("app", "app")).await.unwrap();
        let nodes = client.query("SHOW POOL_NODES", &[]).await.unwrap();
        assert_eq!(nodes.len(), 3, "{mode}");
        let roles: Vec<String> = nodes.iter().map(|r| r.get("role")).collect();
        assert_eq!(roles, ["primary", "standby", "standby"], "{mode}");
        let version = client.prepare("SHOW POOL_VERSION").await.unwrap();
        for _ in 0..2 {
            let row = client.query_one(&version, &[]).await.unwrap();
            assert!(row.get::<_, String>(0).ends_with("(pgrouter)"), "{mode}");
        }
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(
            one, 1,
            "{mode}: ordinary statements still reach the servers"
        );
        // Inside a transaction that wrote: answered, and the transaction goes on.
        let table = format!("pgpool_ext_{mode}");
        client
            .batch_execute(&format!("CREATE TABLE IF NOT EXISTS {table} (x int)"))
            .await
            .unwrap();
        let mut client = client;
        let tx = client.transaction().await.unwrap();
        tx.execute(&format!("INSERT INTO {table} VALUES (1)"), &[])
            .await
            .unwrap();
        assert_eq!(
            tx.query("SHOW POOL_BACKEND_STATS", &[])
                .await
                .unwrap()
                .len(),
            3
        );
        let seen: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(seen, 1, "{mode}: the transaction goes on");
        tx.rollback().await.unwrap();
        client
            .batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();

        // The unnamed statement: once pgrouter answered one, a Bind without a Parse runs it
        // again; one pgrouter cannot answer (mixed result formats) reaches the server, where it
        // must fail, never run the statement the server had before.
        let mut raw = crate::raw::RawClient::login(router.port, "rawtest");
        raw.send(&extended(Some("SELECT 42"), false));
        assert_eq!(answers(&mut raw).1.as_deref(), Some("42"), "{mode}");
        raw.send(&extended(Some("SHOW POOL_VERSION"), true));
        let (tags, first) = answers(&mut raw);
        assert_eq!(tags, b"12TDCZ", "{mode}");
        assert!(first.unwrap().ends_with("(pgrouter)"), "{mode}");
        raw.send(&extended(None, false));
        let (tags, first) = answers(&mut raw);
        assert_eq!(tags, b"2DCZ", "{mode}");
        assert!(first.unwrap().ends_with("(pgrouter)"), "{mode}");
        let mut mixed = crate::raw::message(b'B', b"\0\0\0\0\0\0\0\x02\0\0\0\x01");
        mixed.extend(crate::raw::message(b'E', b"\0\0\0\0\0"));
        mixed.extend(crate::raw::message(b'S', b""));
        raw.send(&mixed);
        let (tags, first) = answers(&mut raw);
        assert_eq!(tags.first(), Some(&b'E'), "{mode}: {tags:?} {first:?}");
        assert_ne!(
            first.as_deref(),
            Some("42"),
            "{mode}: the old statement ran"
        );
        raw.send(&extended(Some("SELECT 43"), false));
        assert_eq!(answers(&mut raw).1.as_deref(), Some("43"), "{mode}");

        // psycopg 3 runs a query unnamed, then, from its sixth run, as a named prepared
        // statement.
        if crate::harness::python_has("psycopg") {
            let script = format!(
                "import psycopg\n\
                 c = psycopg.connect('host=127.0.0.1 port={} user=app password=app dbname=app', autocommit=True)\n\
                 for i in range(8):\n    rows = c.execute('SHOW POOL_NODES').fetchall()\n    assert len(rows) == 3, rows\n\
                 assert c.execute('SELECT 1').fetchone()[0] == 1\n\
                 t = psycopg.connect('host=127.0.0.1 port={} user=app password=app dbname=app')\n\
                 for i in range(8):\n    assert len(t.execute('SHOW POOL_PROCESSES').fetchall()) >= 1\n\
                 assert t.info.transaction_status == 2, t.info.transaction_status\n\
                 assert t.execute('SELECT 2').fetchone()[0] == 2\nt.commit()\nprint('ok')\n",
                router.port, router.port
            );
            let out = Command::new("python3")
                .args(["-c", &script])
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("ok"),
                "{mode}: psycopg: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            missing("psycopg is not installed (scripts/test.sh installs it from PyPI)");
        }
    }
}

/// Where `sql` ran: the server's port.
async fn port_of(client: &tokio_postgres::Client, sql: &str) -> u16 {
    let rows = client.simple_query(sql).await.unwrap();
    crate::harness::first_value(&rows).parse().unwrap()
}

/// Pgpool-II's routing options pgrouter has: `disable_load_balance_on_write = always`
/// (`routing.reads_after_write: primary`), `primary_routing_query_pattern_list`
/// (`primary_query_patterns`) and the `:primary` entries of the redirect preference lists
/// (`primary_databases`, `primary_applications`). Reads go to replicas only (weights 0/1/1),
/// so a read on the primary is the option's doing.
#[tokio::test]
async fn pgpool_routing_options() {
    let Some(cluster) = cluster() else { return };
    let p0 = cluster.primary_port();
    for mode in ["session", "transaction"] {
        let extra = format!(
            "pool: {{mode: {mode}}}\nrouting:\n  reads_after_write: primary\n  \
             primary_query_patterns: ['.*no load balance.*']\n  primary_applications: ['report.*']\n"
        );
        let router = crate::harness::Router::start_weighted(cluster, [0, 1, 1], &extra);
        let client = connect(&router.conninfo("app", "app")).await.unwrap();
        let read = "SELECT inet_server_port()";
        let mut on_replica = false;
        for _ in 0..50 {
            if port_of(&client, read).await != p0 {
                on_replica = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(on_replica, "{mode}: reads reach a replica");
        assert_eq!(
            port_of(
                &client,
                "SELECT inet_server_port() -- No Load Balance, please"
            )
            .await,
            p0,
            "{mode}: a read matching primary_query_patterns"
        );
        assert_ne!(
            port_of(&client, read).await,
            p0,
            "{mode}: others still balanced"
        );
        let table = format!("reads_after_write_{mode}");
        client
            .simple_query(&format!("CREATE TABLE IF NOT EXISTS {table} (x int)"))
            .await
            .unwrap();
        client
            .simple_query(&format!("INSERT INTO {table} VALUES (1)"))
            .await
            .unwrap();
        for _ in 0..5 {
            assert_eq!(
                port_of(&client, read).await,
                p0,
                "{mode}: reads after a write"
            );
        }
        let seen = client
            .simple_query(&format!("SELECT count(*) FROM {table}"))
            .await
            .unwrap();
        assert_eq!(
            crate::harness::first_value(&seen),
            "1",
            "{mode}: the write is read back"
        );
        // Another session has written nothing: balanced.
        let other = connect(&router.conninfo("app", "app")).await.unwrap();
        assert_ne!(
            port_of(&other, read).await,
            p0,
            "{mode}: a session that did not write"
        );
        // An application matching primary_applications runs everything on the primary.
        let report = connect(&format!(
            "host=127.0.0.1 port={} user=app password=app dbname=app application_name=reporting-job",
            router.port
        ))
        .await
        .unwrap();
        for _ in 0..5 {
            assert_eq!(
                port_of(&report, read).await,
                p0,
                "{mode}: primary_applications"
            );
        }
        client
            .simple_query(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
    }
}
