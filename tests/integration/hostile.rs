//! One hostile client never hurts the others: logins that never finish, floods from one
//! address, repeated encryption requests, user-name probing and password guessing. Raw sockets
//! do the hostile part; real clients (tokio-postgres) must keep working beside them.

use crate::harness::{cluster, connect, Router};
use crate::raw::{message, startup_packet, RawClient};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

/// The salt in the server-first message pgrouter sends to a SCRAM login as `user`.
fn scram_salt(port: u16, user: &str) -> String {
    let mut c = RawClient::connect(port);
    c.send(&startup_packet(
        196_608,
        &[("user", user), ("database", "app")],
    ));
    let (tag, _) = c.read_message().unwrap();
    assert_eq!(tag, b'R', "AuthenticationSASL");
    let first = b"n,,n=,r=abcdefghijklmnop";
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
    body.extend_from_slice(first);
    c.send(&message(b'p', &body));
    let (tag, body) = c.read_message().unwrap();
    assert_eq!(tag, b'R');
    let text = String::from_utf8_lossy(&body[4..]).into_owned();
    text.split(',')
        .find_map(|a| a.strip_prefix("s="))
        .unwrap()
        .to_owned()
}

/// A connection from `source` (a loopback address) to pgrouter, as a blocking socket.
async fn from(source: &str, port: u16) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{source}:0").parse::<SocketAddr>().unwrap())
        .unwrap();
    let stream = socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap()
        .into_std()
        .unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Whether app logs in within 5 s (sessions a test just closed end asynchronously).
async fn app_logs_in_within_5s(router: &Router) -> bool {
    for _ in 0..50 {
        if connect(&router.conninfo("app", "app")).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_logins_do_not_lock_anyone_out() {
    let Some(cluster) = cluster() else { return };
    let router = Router::start(
        cluster,
        "client: {max_pending_logins: 20, max_connections_per_address: 8, \
         max_connections_per_user: 2, auth_failure_delay: 300ms}\n",
    );
    let port = router.port;

    // Unknown users: a salt of their own, stable for the name, unlike a single mock salt.
    let (a, b) = (scram_salt(port, "nobody_a"), scram_salt(port, "nobody_b"));
    assert_ne!(a, b, "two unknown names share a salt");
    assert_eq!(a, scram_salt(port, "nobody_a"), "a name's salt changes");

    // A failed login answers after the delay, with PostgreSQL's error.
    let started = Instant::now();
    let err = connect(&router.conninfo("app", "wrong")).await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "28P01");
    assert!(started.elapsed() >= Duration::from_millis(300), "no delay");

    // One SSLRequest per connection (and one GSSENCRequest), as PostgreSQL.
    for repeated in [SSL_REQUEST, GSSENC_REQUEST] {
        let mut c = RawClient::connect(port);
        c.send(&repeated);
        assert_eq!(c.read_byte(), Some(b'N'));
        c.send(&repeated);
        let (severity, code, text) = c.expect_error();
        assert_eq!((severity.as_str(), code.as_str()), ("FATAL", "0A000"));
        assert!(
            text.starts_with("unsupported frontend protocol 1234.56"),
            "{text}"
        );
    }
    let mut c = RawClient::connect(port);
    c.send(&GSSENC_REQUEST);
    assert_eq!(c.read_byte(), Some(b'N'));
    c.send(&SSL_REQUEST);
    assert_eq!(c.read_byte(), Some(b'N'), "GSS then TLS, as libpq asks");
    drop(c);

    // Half start-ups for app (the start-up packet, then silence) are not counted against app's
    // limit of 2: real logins still work.
    let mut half: Vec<RawClient> = (0..4)
        .map(|_| {
            let mut c = RawClient::connect(port);
            c.send(&startup_packet(
                196_608,
                &[("user", "app"), ("database", "app")],
            ));
            c
        })
        .collect();
    let one = connect(&router.conninfo("app", "app")).await.unwrap();
    let two = connect(&router.conninfo("app", "app")).await.unwrap();
    let err = connect(&router.conninfo("app", "app")).await.unwrap_err();
    assert_eq!(
        err.as_db_error().unwrap().message(),
        "too many connections for role \"app\""
    );
    drop((one, two));
    half.clear();

    // One address may hold 8 connections (silent ones too); others are not affected.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(from("127.0.0.7", port).await);
    }
    let mut sixth = RawClient {
        stream: from("127.0.0.7", port).await,
    };
    let (_, code, text) = sixth.expect_error();
    assert_eq!(
        (code.as_str(), text.as_str()),
        ("53300", "too many connections from host \"127.0.0.7\"")
    );
    // (app's two sessions above end asynchronously: allow pgrouter a moment to see them go.)
    assert!(
        app_logs_in_within_5s(&router).await,
        "another address is not affected"
    );
    drop(silent);

    // Logins in progress are bounded on their own: 20 silent sockets from as many addresses
    // fill them; the next connection is refused at once; when they go, logins work again.
    let mut silent = Vec::new();
    for i in 0..20 {
        silent.push(from(&format!("127.0.1.{}", i + 1), port).await);
    }
    assert!(crate::harness::eventually(Duration::from_secs(5), || {
        let mut probe = RawClient::connect(port);
        probe.send(&startup_packet(
            196_608,
            &[("user", "app"), ("database", "app")],
        ));
        matches!(probe.read_message(), Some((b'E', body)) if String::from_utf8_lossy(&body).contains("sorry, too many clients already"))
    }));
    drop(silent);
    assert!(
        app_logs_in_within_5s(&router).await,
        "logins work again once the silent sockets are gone"
    );
}

/// pgrouter's established TCP sockets, from `/proc`: (local port, remote port, a timer is
/// armed). An idle connection has a timer only when keepalive is on (`tr` 2 in /proc/net/tcp).
fn sockets_of(pid: u32) -> Vec<(u16, u16, bool)> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let text = target.to_string_lossy().into_owned();
            text.strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    let port =
        |address: &str| u16::from_str_radix(address.rsplit(':').next().unwrap(), 16).unwrap();
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            (f.len() > 9 && f[3] == "01" && inodes.contains(f[9])).then(|| {
                let timer = f[5].split(':').next().unwrap() != "00";
                (port(f[1]), port(f[2]), timer)
            })
        })
        .collect()
}

/// TCP keepalive is on for client and server sockets by default, and off when disabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_on_client_and_server_sockets() {
    let Some(cluster) = cluster() else { return };
    for enabled in [true, false] {
        let router = Router::start(
            cluster,
            &format!("tcp_keepalive: {{enabled: {enabled}, idle: 30s, interval: 5s, count: 3}}\n"),
        );
        let client = connect(&router.conninfo("app", "app")).await.unwrap();
        // A write opens the primary connection; then everything is idle.
        client
            .simple_query("BEGIN; SELECT 1; COMMIT")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sockets = sockets_of(router.pid());
        let to_client: Vec<_> = sockets.iter().filter(|s| s.0 == router.port).collect();
        let to_primary: Vec<_> = sockets
            .iter()
            .filter(|s| s.1 == cluster.primary_port())
            .collect();
        assert!(
            !to_client.is_empty() && !to_primary.is_empty(),
            "{sockets:?}"
        );
        for socket in to_client.iter().chain(&to_primary) {
            assert_eq!(
                socket.2, enabled,
                "keepalive {enabled}: {socket:?} in {sockets:?}"
            );
        }
        drop(client);
    }
}

/// Reads through the next ReadyForQuery; returns the ErrorResponse fields (code, message) seen
/// on the way, if any.
fn until_ready(c: &mut RawClient) -> Option<(String, String)> {
    let mut error = None;
    loop {
        let (tag, body) = c.read_message().expect("an answer");
        match tag {
            b'E' => {
                let fields: std::collections::HashMap<u8, String> = body
                    .split(|b| *b == 0)
                    .filter(|f| !f.is_empty())
                    .map(|f| (f[0], String::from_utf8_lossy(&f[1..]).into_owned()))
                    .collect();
                error = Some((fields[&b'C'].clone(), fields[&b'M'].clone()));
            }
            b'Z' => return error,
            _ => {}
        }
    }
}

/// `client.idle_timeout`, `idle_transaction_timeout` (the transaction is rolled back) and
/// `query_timeout` (the request is cancelled on the server, the session goes on), in both
/// pooling modes; waiting for a slow server is not idleness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_query_timeouts() {
    let Some(cluster) = cluster() else { return };
    cluster.superuser_sql(
        "CREATE TABLE IF NOT EXISTS idle_tx_probe(v text); GRANT ALL ON idle_tx_probe TO rawtest",
    );
    for pool in ["session", "transaction"] {
        let router = Router::start(
            cluster,
            &format!(
                "pool: {{mode: {pool}}}\nclient: {{idle_timeout: 1s, idle_transaction_timeout: 1s, query_timeout: 1s}}\n"
            ),
        );
        // Idle outside a transaction.
        let mut c = RawClient::login(router.port, "rawtest");
        c.send_query("SELECT 1");
        assert_eq!(until_ready(&mut c), None);
        let started = Instant::now();
        let (severity, code, text) = c.expect_error();
        assert_eq!(
            (severity.as_str(), code.as_str(), text.as_str()),
            (
                "FATAL",
                "57P05",
                "terminating connection due to idle-session timeout"
            ),
            "{pool}"
        );
        assert!(started.elapsed() >= Duration::from_millis(900));

        // Idle inside a transaction: closed, and what it wrote is rolled back.
        let marker = format!("{pool}-{}", rand::random::<u32>());
        let mut c = RawClient::login(router.port, "rawtest");
        c.send_query(&format!(
            "BEGIN; INSERT INTO idle_tx_probe VALUES ('{marker}')"
        ));
        assert_eq!(until_ready(&mut c), None);
        let (severity, code, text) = c.expect_error();
        assert_eq!(
            (severity.as_str(), code.as_str(), text.as_str()),
            (
                "FATAL",
                "25P03",
                "terminating connection due to idle-in-transaction timeout"
            ),
            "{pool}"
        );
        // No server backend is left holding the transaction, and the row never commits.
        assert!(
            crate::harness::eventually(Duration::from_secs(5), || cluster.superuser_sql(&format!(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE state LIKE 'idle in transaction%' AND query LIKE '%{marker}%'"
            )) == "0"),
            "{pool}: the transaction is still open on the server"
        );
        assert_eq!(
            cluster.superuser_sql(&format!(
                "SELECT count(*) FROM idle_tx_probe WHERE v = '{marker}'"
            )),
            "0"
        );

        // A request the server does not finish in time is cancelled; the session goes on.
        let mut c = RawClient::login(router.port, "rawtest");
        let started = Instant::now();
        c.send_query("SELECT pg_sleep(10)");
        let error = until_ready(&mut c);
        assert_eq!(
            error.as_ref().map(|(code, _)| code.as_str()),
            Some("57014"),
            "{pool}: {error:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(8), "not cancelled");
        c.send_query("SELECT 2");
        assert_eq!(until_ready(&mut c), None, "{pool}: the session goes on");
    }

    // Only an idle timeout: a query that keeps the server busy longer is not idleness.
    let router = Router::start(cluster, "client: {idle_timeout: 1s}\n");
    let mut c = RawClient::login(router.port, "rawtest");
    c.send_query("SELECT pg_sleep(1.5)");
    assert_eq!(until_ready(&mut c), None);
}

/// A message header announcing a large message costs nothing until its bytes arrive: a hundred
/// clients each announcing 60 MB and sending nothing more leave pgrouter's memory, virtual
/// included, where it was (each used to reserve the whole message at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_message_sizes_are_not_reserved() {
    let Some(cluster) = cluster() else { return };
    // Transaction pooling: a hundred idle logins hold no server connection.
    let router = Router::start(cluster, "pool: {mode: transaction}\n");
    let before = router.virtual_kib();
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut c = RawClient::login(router.port, "rawtest");
        let mut announce = vec![b'Q'];
        announce.extend_from_slice(&(60_i32 << 20).to_be_bytes());
        announce.extend_from_slice(b"SELECT ");
        c.send(&announce);
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = router.virtual_kib().saturating_sub(before);
    assert!(
        grown < 512 * 1024,
        "virtual memory grew by {} MiB for 100 announced messages",
        grown / 1024
    );
    // The others are served meanwhile.
    assert!(connect(&router.conninfo("app", "app")).await.is_ok());
    drop(clients);
}

/// The bounded mixed run: pgbench at 16 clients through pgrouter while a few hundred hostile
/// connections churn beside it (silent sockets, half start-ups, garbage, wrong passwords, slow
/// admin requests). pgbench has no failure, `/health` answers every time, and pgrouter's
/// resident memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_beside_hostile_clients() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let Some(cluster) = cluster() else { return };
    cluster.superuser_sql(
        "CREATE TABLE IF NOT EXISTS hostile_probe(v int); GRANT ALL ON hostile_probe TO app",
    );
    let router = Router::start(cluster, "pool: {mode: transaction}\n");
    let (port, admin) = (router.port, router.admin_addr());
    let stop = Arc::new(AtomicBool::new(false));
    let hostile: Vec<_> = (0..4)
        .map(|kind| {
            let stop = Arc::clone(&stop);
            let admin = admin.clone();
            std::thread::spawn(move || {
                let mut held: Vec<std::net::TcpStream> = Vec::new();
                let mut opened = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let target = if kind == 3 { admin.as_str() } else { "" };
                    let stream = if kind == 3 {
                        std::net::TcpStream::connect(target)
                    } else {
                        std::net::TcpStream::connect(("127.0.0.1", port))
                    };
                    let Ok(mut s) = stream else { continue };
                    let _ = match kind {
                        // A silent socket.
                        0 => Ok(()),
                        // Half a start-up for a made-up user, then silence.
                        1 => s.write_all(&startup_packet(
                            196_608,
                            &[("user", &format!("u{opened}")), ("database", "app")],
                        )),
                        // Garbage.
                        2 => s.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(64)),
                        // Half an admin request.
                        _ => s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
                    };
                    opened += 1;
                    held.push(s);
                    // A few hundred open at once, churned.
                    if held.len() > 75 {
                        held.drain(..25);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                opened
            })
        })
        .collect();
    let guessing = {
        let stop = Arc::clone(&stop);
        let conninfo = router.conninfo("app", "not-the-password");
        tokio::spawn(async move {
            let mut tries = 0u32;
            while !stop.load(Ordering::Relaxed) {
                assert!(connect(&conninfo).await.is_err());
                tries += 1;
            }
            tries
        })
    };
    let script = router.dir.join("hostile-bench.sql");
    std::fs::write(
        &script,
        "SELECT 1;\nBEGIN;\nINSERT INTO hostile_probe VALUES (:client_id);\nSELECT count(*) FROM hostile_probe WHERE v = :client_id;\nCOMMIT;\n",
    )
    .unwrap();
    let bench = std::process::Command::new("pgbench")
        .args(["-n", "-c", "16", "-j", "2", "-T", "15", "-f"])
        .arg(&script)
        .arg(router.url("app", "app"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pgbench runs");
    let mut max_rss = 0;
    let mut health_checks = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let asked = Instant::now();
        let (status, _) = crate::harness::http(&admin, "GET", "/health");
        assert_eq!(status, 200, "/health under load");
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "/health took {:?}",
            asked.elapsed()
        );
        health_checks += 1;
        max_rss = max_rss.max(router.rss_kib());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let out = bench.wait_with_output().unwrap();
    stop.store(true, Ordering::Relaxed);
    let opened: u32 = hostile.into_iter().map(|h| h.join().unwrap()).sum();
    let tries = guessing.await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("number of failed transactions: 0 (0.000%)"),
        "{text}"
    );
    assert!(
        max_rss < 256 * 1024,
        "pgrouter's RSS reached {} MiB",
        max_rss / 1024
    );
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps"))
        .unwrap_or("tps = ?")
        .to_owned();
    eprintln!(
        "mixed run: pgbench -c 16 -T 15: {tps}, 0 failed; {opened} hostile connections, \
         {tries} wrong-password logins, {health_checks} /health answers, max RSS {} MiB",
        max_rss / 1024
    );
}

/// The next answer through ReadyForQuery carries ERROR 54000 (program_limit_exceeded).
fn expect_program_limit(c: &mut RawClient, pool: &str) {
    let error = until_ready(c);
    assert_eq!(
        error.as_ref().map(|(code, _)| code.as_str()),
        Some("54000"),
        "{pool}: {error:?}"
    );
}

fn parse_message(name: &str, sql: &str) -> Vec<u8> {
    let mut body = name.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(sql.as_bytes());
    body.push(0);
    body.extend_from_slice(&0i16.to_be_bytes());
    message(b'P', &body)
}

/// `client.max_prepared_statements`: a session may hold so many named statements; one more
/// fails with 54000 and the session goes on (closing one makes room); inside a transaction the
/// session ends instead, its transaction rolled back. In both pooling modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_per_session_are_bounded() {
    let Some(cluster) = cluster() else { return };
    for pool in ["session", "transaction"] {
        let router = Router::start(
            cluster,
            &format!("pool: {{mode: {pool}}}\nclient: {{max_prepared_statements: 3}}\n"),
        );
        let mut c = RawClient::login(router.port, "rawtest");
        for i in 0..3 {
            c.send(&parse_message(&format!("s{i}"), "SELECT 1"));
        }
        c.send(&message(b'S', &[]));
        assert_eq!(until_ready(&mut c), None, "{pool}: three fit");
        c.send(&parse_message("s3", "SELECT 1"));
        c.send(&message(b'S', &[]));
        expect_program_limit(&mut c, pool);
        // Re-preparing a held name is not a new statement; closing one makes room.
        let mut close = b"S".to_vec();
        close.extend_from_slice(b"s0\0");
        c.send(&message(b'C', &close));
        c.send(&parse_message("s3", "SELECT 1"));
        c.send(&message(b'S', &[]));
        assert_eq!(until_ready(&mut c), None, "{pool}: room after a Close");
        c.send_query("SELECT 1");
        assert_eq!(until_ready(&mut c), None, "{pool}: the session goes on");
        // SQL PREPARE counts too, with the protocol-level statements: s1..s3 are held.
        let mut d = RawClient::login(router.port, "rawtest");
        d.send(&parse_message("p_proto", "SELECT 1"));
        d.send(&message(b'S', &[]));
        assert_eq!(until_ready(&mut d), None);
        for i in 0..2 {
            d.send_query(&format!("PREPARE p{i} AS SELECT {i}"));
            assert_eq!(until_ready(&mut d), None, "{pool}: p{i} fits");
        }
        d.send_query("PREPARE p2 AS SELECT 2");
        expect_program_limit(&mut d, pool);
        d.send_query("DEALLOCATE p0; PREPARE p2 AS SELECT 2");
        assert_eq!(until_ready(&mut d), None, "{pool}: room after DEALLOCATE");
        d.send_query("EXECUTE p2");
        assert_eq!(until_ready(&mut d), None, "{pool}: the session goes on");
        // Inside a transaction: the session ends.
        c.send_query("BEGIN");
        assert_eq!(until_ready(&mut c), None);
        c.send(&parse_message("s4", "SELECT 1"));
        c.send(&message(b'S', &[]));
        let (severity, code, _) = c.expect_error();
        assert_eq!(
            (severity.as_str(), code.as_str()),
            ("FATAL", "54000"),
            "{pool}"
        );
    }
}

/// `client.max_prepared_statement_memory`: the definitions pgrouter keeps for one session are
/// bounded in bytes too; a `Parse` past it fails with 54000, and closing a statement makes room.
/// In both pooling modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_memory_per_session_is_bounded() {
    let Some(cluster) = cluster() else { return };
    for pool in ["session", "transaction"] {
        let router = Router::start(
            cluster,
            &format!("pool: {{mode: {pool}}}\nclient: {{max_prepared_statement_memory: 2kB}}\n"),
        );
        let mut c = RawClient::login(router.port, "rawtest");
        // About 1 kB each: two fit, a third does not.
        let sql = format!("SELECT 1 /* {} */", "x".repeat(900));
        for name in ["m0", "m1"] {
            c.send(&parse_message(name, &sql));
            c.send(&message(b'S', &[]));
            assert_eq!(until_ready(&mut c), None, "{pool}: {name} fits");
        }
        c.send(&parse_message("m2", &sql));
        c.send(&message(b'S', &[]));
        expect_program_limit(&mut c, pool);
        c.send(&message(b'C', b"Sm0\0"));
        c.send(&message(b'S', &[]));
        assert_eq!(until_ready(&mut c), None);
        c.send(&parse_message("m2", &sql));
        c.send(&message(b'S', &[]));
        assert_eq!(until_ready(&mut c), None, "{pool}: room after a Close");
    }
}
