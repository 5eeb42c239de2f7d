//! Access rules (`access:`, like pg_hba.conf) with clients connecting from several loopback
//! addresses (127.0.0.2, …): first match wins, PostgreSQL's own refusals, the method a rule
//! requires, and a reload that changes the rules for the next login.

use crate::harness::{cluster, first_value, router_config, Router};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpSocket;

/// Logs in to `router` from `source` (a loopback address) as `user`/`password` (no password:
/// `None`), and returns the server's `current_user`, or the error.
async fn login_from(
    router: &Router,
    source: &str,
    user: &str,
    password: Option<&str>,
) -> Result<String, tokio_postgres::Error> {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{source}:0").parse::<SocketAddr>().unwrap())
        .unwrap();
    let stream = socket
        .connect(format!("127.0.0.1:{}", router.port).parse().unwrap())
        .await
        .unwrap();
    let mut config = tokio_postgres::Config::new();
    config.user(user).dbname("app");
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = tokio::time::timeout(
        Duration::from_secs(20),
        config.connect_raw(stream, tokio_postgres::NoTls),
    )
    .await
    .expect("a login through pgrouter hung")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let rows = client.simple_query("SELECT current_user").await?;
    Ok(first_value(&rows).to_owned())
}

fn refusal(result: Result<String, tokio_postgres::Error>) -> (String, String) {
    let error = result.expect_err("refused");
    let db = error.as_db_error().expect("PostgreSQL's error");
    (db.code().code().to_owned(), db.message().to_owned())
}

const RULES: &str = "access:
  - {address: 127.0.0.2, method: reject}
  - {user: legacy, database: app, address: 127.0.0.3, method: md5}
  - {user: app, address: 127.0.0.4/32, method: trust}
  - {user: 'app,boss', address: 127.0.0.0/8, method: scram-sha-256}
";

#[tokio::test]
async fn access_rules_decide_who_logs_in_from_where() {
    let Some(cluster) = cluster() else { return };
    let router = Router::start(cluster, RULES);
    let logged_in_as = |user: &str| user.to_owned();

    // A rejected address, whoever it is.
    assert_eq!(
        refusal(login_from(&router, "127.0.0.2", "app", Some("app")).await),
        (
            "28000".into(),
            "pg_hba.conf rejects connection for host \"127.0.0.2\", user \"app\", database \"app\", no encryption".into()
        )
    );
    // A user only allowed from another address: no entry, in PostgreSQL's words.
    assert_eq!(
        refusal(login_from(&router, "127.0.0.5", "legacy", Some("legacy")).await),
        (
            "28000".into(),
            "no pg_hba.conf entry for host \"127.0.0.5\", user \"legacy\", database \"app\", no encryption".into()
        )
    );
    assert_eq!(
        login_from(&router, "127.0.0.3", "legacy", Some("legacy"))
            .await
            .unwrap(),
        logged_in_as("legacy")
    );
    // trust from one address: no password asked; the server login still uses the configured one.
    assert_eq!(
        login_from(&router, "127.0.0.4", "app", None).await.unwrap(),
        logged_in_as("app")
    );
    // The same user elsewhere must prove it (SCRAM); a wrong password fails as PostgreSQL's does.
    assert_eq!(
        login_from(&router, "127.0.0.1", "app", Some("app"))
            .await
            .unwrap(),
        logged_in_as("app")
    );
    let (code, _) = refusal(login_from(&router, "127.0.0.6", "app", Some("wrong")).await);
    assert_eq!(code, "28P01");
    // rawtest (auth: trust in users) is listed by no rule: refused.
    let (code, message) = refusal(login_from(&router, "127.0.0.1", "rawtest", None).await);
    assert_eq!(code, "28000", "{message}");

    // A reload changes the rules for the next login: 127.0.0.2 is let in.
    let config = router.config_path();
    let text = router_config(
        cluster,
        router.port,
        [1, 1, 1],
        &RULES.replace("  - {address: 127.0.0.2, method: reject}\n", ""),
    );
    std::fs::write(&config, text).unwrap();
    router.signal("HUP");
    router
        .expect_log("configuration reloaded", Duration::from_secs(10))
        .await;
    assert_eq!(
        login_from(&router, "127.0.0.2", "app", Some("app"))
            .await
            .unwrap(),
        logged_in_as("app")
    );
}

/// `pgrouter check` refuses `trust` for the admin console's users and warns about `trust` beyond
/// loopback.
#[test]
fn check_refuses_trust_for_admin_users_and_warns_beyond_loopback() {
    let dir = std::env::temp_dir().join(format!("pgrouter-access-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |rules: &str| {
        let path = dir.join("pgrouter.yaml");
        std::fs::write(
            &path,
            format!(
                "nodes:\n  - {{name: pg0, host: 127.0.0.1}}\nusers:\n  - {{name: app, password: app}}\n  - {{name: boss, password: b}}\nadmin: {{users: [boss]}}\n{rules}"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgrouter"))
            .arg("--config")
            .arg(&path)
            .arg("check")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = check("access:\n  - {address: all, method: trust}\n");
    assert!(!ok, "trust for everyone includes the admin users");
    assert!(
        stderr.contains("access[0].method: trust is not allowed for the admin console's users"),
        "{stderr}"
    );
    let (ok, stderr) =
        check("access:\n  - {user: app, database: app, address: 10.0.0.0/8, method: trust}\n");
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("warning: access[0]: trust from 10.0.0.0/8"),
        "{stderr}"
    );
    let (ok, stderr) = check("access:\n  - {user: app, address: 127.0.0.1, method: trust}\n  - {method: scram-sha-256}\n");
    assert!(ok && !stderr.contains("warning"), "{stderr}");
    let (ok, stderr) = check("access:\n  - {address: 10.0.0.0/40, method: md5}\n");
    assert!(!ok && stderr.contains("access[0].address"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fake PostgreSQL server that asks every connection for a cleartext password
/// (`AuthenticationCleartextPassword`) and records what comes back: the password, or nothing.
struct CleartextAsker {
    port: u16,
    passwords: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Connections accepted.
    asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CleartextAsker {
    async fn start() -> CleartextAsker {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let passwords = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (p, a) = (passwords.clone(), asked.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let p = p.clone();
                a.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut len = [0u8; 4];
                    if socket.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut startup =
                        vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
                    if socket.read_exact(&mut startup).await.is_err() {
                        return;
                    }
                    // An SSLRequest (server_tls.mode prefer, the default): no TLS here, as a
                    // server with ssl = off answers; the start-up message follows.
                    if startup == [0x04, 0xd2, 0x16, 0x2f] {
                        if socket.write_all(b"N").await.is_err()
                            || socket.read_exact(&mut len).await.is_err()
                        {
                            return;
                        }
                        startup = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
                        if socket.read_exact(&mut startup).await.is_err() {
                            return;
                        }
                    }
                    // AuthenticationCleartextPassword.
                    let _ = socket.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await;
                    let mut reply = Vec::new();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        socket.read_to_end(&mut reply),
                    )
                    .await;
                    if reply.first() == Some(&b'p') && reply.len() > 5 {
                        let text = String::from_utf8_lossy(&reply[5..])
                            .trim_end_matches('\0')
                            .to_owned();
                        p.lock().unwrap().push(text);
                    }
                });
            }
        });
        CleartextAsker {
            port,
            passwords,
            asked,
        }
    }
}

/// A server asking for a cleartext password over a connection without TLS gets nothing, from the
/// health checks or from client sessions, unless `server_tls.allow_cleartext_password` is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_asking_for_a_cleartext_password_gets_nothing() {
    use std::sync::atomic::Ordering;
    let Some(cluster) = cluster() else { return };
    // `require` against a server without TLS: no connection at all, whatever else is allowed.
    for (allowed, server_tls, refusal) in [
        (
            false,
            "{allow_cleartext_password: false}",
            "server_tls.allow_cleartext_password is off",
        ),
        (true, "{allow_cleartext_password: true}", ""),
        (
            false,
            "{mode: require, allow_cleartext_password: true}",
            "the server does not support TLS, and server_tls.mode is require",
        ),
    ] {
        let fake = CleartextAsker::start().await;
        let router = Router::start_in(&cluster.dir, |port| {
            format!(
                "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:0\n\
                 nodes:\n  - {{name: fake, host: 127.0.0.1, port: {}}}\n\
                 users:\n  - {{name: app, password: s3cret-app}}\n\
                 health_check: {{interval: 200ms, timeout: 1s}}\n\
                 topology: {{failover_timeout: 1s}}\n\
                 server_tls: {server_tls}\n",
                fake.port
            )
        });
        // A client session: pgrouter authenticates it, then tries the server for it.
        let _ = crate::harness::connect(&router.conninfo("app", "s3cret-app")).await;
        assert!(
            crate::harness::eventually_async(Duration::from_secs(10), || fake
                .asked
                .load(Ordering::Relaxed)
                >= 3)
            .await,
            "pgrouter never reached the fake server"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let passwords = fake.passwords.lock().unwrap().clone();
        if allowed {
            assert!(
                passwords.iter().any(|p| p == "s3cret-app"),
                "allowed: the password is sent ({passwords:?})"
            );
        } else {
            assert!(
                passwords.is_empty(),
                "a password crossed in clear: {passwords:?}"
            );
            assert!(router.log_text().contains(refusal), "{}", router.log_text());
        }
    }
}
