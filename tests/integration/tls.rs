//! TLS towards clients with real certificates made by openssl and real libpq clients (psql):
//! `sslmode=verify-full` against the test's CA, `tls.mode: require`, `min_version`, `hostssl`
//! rules, certificates rotated on `SIGHUP` while a TLS session stays open and clients keep
//! connecting, client certificates, and PostgreSQL 17's direct TLS.

use crate::harness::{cluster, make_certificates, psql, router_config, Certificates, Router};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn url(router: &Router, params: &str) -> String {
    format!("postgres://app:app@localhost:{}/app?{params}", router.port)
}

fn tls_yaml(files: &Path, mode: &str, extra: &str) -> String {
    format!(
        "tls: {{mode: {mode}, cert_file: {}, key_file: {}{extra}}}\n",
        files.join("server.crt").display(),
        files.join("server.key").display()
    )
}

/// The directory pgrouter reads its certificate and key from (rotated by copying over them).
fn install(certs: &Certificates, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(&certs.cert, dir.join("server.crt")).unwrap();
    std::fs::copy(&certs.key, dir.join("server.key")).unwrap();
}

#[tokio::test]
async fn clients_verify_pgrouter_and_tls_can_be_required() {
    let Some(cluster) = cluster() else { return };
    let work = cluster.dir.join(format!("tls-{}", std::process::id()));
    let first = make_certificates(&work, "first");
    let other = make_certificates(&work, "other");
    let files = work.join("in-use");
    install(&first, &files);
    let verify = |ca: &Path| format!("sslmode=verify-full&sslrootcert={}", ca.display());

    // prefer: TLS for those who ask, verified against the test's CA; plain TCP still works.
    let router = Router::start(cluster, &tls_yaml(&files, "prefer", ""));
    let (ok, out, err) = psql(
        &url(&router, &verify(&first.ca)),
        &["-c", "SELECT 1", "-c", "\\conninfo"],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains("SSL connection (protocol: TLSv1.3"), "{out}");
    let (ok, out, err) = psql(
        &url(&router, "sslmode=disable"),
        &["-c", "\\conninfo"],
        None,
    );
    assert!(ok && !out.contains("SSL connection"), "{out}{err}");
    // SCRAM-SHA-256-PLUS: libpq's channel_binding=require binds the login to pgrouter's
    // certificate; without TLS there is nothing to bind to.
    let bound = format!("{}&channel_binding=require", verify(&first.ca));
    let (ok, _, err) = psql(&url(&router, &bound), &["-c", "SELECT 1"], None);
    assert!(ok, "channel binding over TLS: {err}");
    let (ok, _, err) = psql(
        &url(&router, "sslmode=disable&channel_binding=require"),
        &["-c", "SELECT 1"],
        None,
    );
    assert!(!ok && err.contains("channel binding"), "{err}");
    // A client that trusts another CA refuses pgrouter's certificate.
    let (ok, _, err) = psql(&url(&router, &verify(&other.ca)), &["-c", "SELECT 1"], None);
    assert!(!ok && err.contains("certificate verify failed"), "{err}");

    // Under load: clients connecting over TLS in a loop throughout the rotation all succeed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..3)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            let url = url(&router, "sslmode=require");
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match psql(&url, &["-c", "SELECT 1"], None) {
                        (true, _, _) => ok += 1,
                        (false, _, err) => failed.push(err),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    // A TLS session open across a certificate rotation keeps working; new clients get the new one.
    let mut open = Command::new("psql")
        .args(["-X", "-At", &url(&router, &verify(&first.ca))])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = open.stdin.take().unwrap();
    let mut output = BufReader::new(open.stdout.take().unwrap());
    writeln!(input, "SELECT 'before';").unwrap();
    let mut line = String::new();
    output.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "before");
    install(&other, &files);
    router.signal("HUP");
    router
        .expect_log("configuration reloaded", Duration::from_secs(10))
        .await;
    let (ok, _, err) = psql(&url(&router, &verify(&other.ca)), &["-c", "SELECT 1"], None);
    assert!(ok, "the rotated certificate is served: {err}");
    let (ok, _, _) = psql(&url(&router, &verify(&first.ca)), &["-c", "SELECT 1"], None);
    assert!(!ok, "the old certificate is no longer served");
    writeln!(input, "SELECT 'after';").unwrap();
    line.clear();
    output.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "after",
        "the session opened before the rotation goes on"
    );
    drop(input);
    let _ = open.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in load {
        let (ok, failed) = client.join().unwrap();
        assert!(
            ok > 0 && failed.is_empty(),
            "{ok} logins, failures: {failed:?}"
        );
    }
    drop(router);

    // require: a client without TLS is refused, in PostgreSQL's words; TLS 1.3 only.
    install(&first, &files);
    let router = Router::start(
        cluster,
        &tls_yaml(&files, "require", ", min_version: '1.3'"),
    );
    let (ok, _, err) = psql(&url(&router, "sslmode=disable"), &["-c", "SELECT 1"], None);
    assert!(!ok, "plain TCP refused");
    assert!(
        err.contains("no pg_hba.conf entry for host \"127.0.0.1\", user \"app\", database \"app\", no encryption"),
        "{err}"
    );
    let (ok, _, err) = psql(&url(&router, &verify(&first.ca)), &["-c", "SELECT 1"], None);
    assert!(ok, "{err}");
    let (ok, _, _) = psql(
        &url(
            &router,
            &format!("{}&ssl_max_protocol_version=TLSv1.2", verify(&first.ca)),
        ),
        &["-c", "SELECT 1"],
        None,
    );
    assert!(!ok, "TLS 1.2 refused with min_version 1.3");
    drop(router);

    // hostssl rules match TLS clients only.
    let rules = "access:\n  - {type: hostssl, user: app, method: scram-sha-256}\n";
    let router = Router::start_in(&cluster.dir, |port| {
        router_config(
            cluster,
            port,
            [1, 1, 1],
            &format!("{}{rules}", tls_yaml(&files, "prefer", "")),
        )
    });
    let (ok, _, err) = psql(&url(&router, "sslmode=disable"), &["-c", "SELECT 1"], None);
    assert!(!ok && err.contains("no pg_hba.conf entry"), "{err}");
    let (ok, _, err) = psql(&url(&router, "sslmode=require"), &["-c", "SELECT 1"], None);
    assert!(ok, "{err}");
    let _ = std::fs::remove_dir_all(&work);
}

/// Client certificates (`tls.ca_file`): the `cert` method, by access rule and as a user's own
/// `auth`, admits a client whose certificate chains to the CA and names the user, and refuses
/// one without a certificate, with another name, or from another CA, in PostgreSQL's words.
#[tokio::test]
async fn client_certificates_log_users_in() {
    let Some(cluster) = cluster() else { return };
    let work = cluster
        .dir
        .join(format!("client-certs-{}", std::process::id()));
    let ours = make_certificates(&work, "ours");
    let theirs = make_certificates(&work, "theirs");
    for (dir, stem) in [
        (&ours.dir, "app"),
        (&ours.dir, "legacy"),
        (&ours.dir, "mallory"),
        (&theirs.dir, "app"),
    ] {
        crate::harness::issue_certificate(dir, stem, stem, "extendedKeyUsage=clientAuth\n");
        // libpq uses only a private key file.
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join(format!("{stem}.key"));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let tls = tls_yaml(
        &ours.dir,
        "prefer",
        &format!(", ca_file: {}", ours.ca.display()),
    );
    let url = |router: &Router, user: &str, cert: Option<(&Path, &str)>| match cert {
        Some((dir, stem)) => format!(
            "postgres://{user}@127.0.0.1:{}/app?sslmode=require&sslcert={}&sslkey={}",
            router.port,
            dir.join(format!("{stem}.crt")).display(),
            dir.join(format!("{stem}.key")).display()
        ),
        None => format!(
            "postgres://{user}@127.0.0.1:{}/app?sslmode=require&sslcert=none",
            router.port
        ),
    };
    let run = |url: &str| psql(url, &["-w", "-c", "SELECT current_user"], None);

    // By access rule: app from 127.0.0.1 over TLS by certificate; everyone else by password.
    let rules = "access:\n  - {type: hostssl, user: app, address: 127.0.0.1, method: cert}\n  - {address: all, method: scram-sha-256}\n";
    let router = Router::start(cluster, &format!("{tls}{rules}"));
    let (ok, out, err) = run(&url(&router, "app", Some((&ours.dir, "app"))));
    assert!(
        ok && out.trim() == "app",
        "app by certificate: {err}\n{}",
        router.log_text()
    );
    let (ok, _, err) = run(&url(&router, "app", None));
    assert!(
        !ok && err.contains("connection requires a valid client certificate"),
        "{err}"
    );
    let (ok, _, err) = run(&url(&router, "app", Some((&ours.dir, "mallory"))));
    assert!(
        !ok && err.contains("certificate authentication failed for user \"app\""),
        "{err}"
    );
    // Another CA's certificate fails the handshake itself.
    let (ok, _, err) = run(&url(&router, "app", Some((&theirs.dir, "app"))));
    assert!(
        !ok && !err.contains("connection requires") && !err.contains("authentication failed"),
        "another CA's certificate: {err}"
    );
    // Without TLS the hostssl rule does not match: the next one asks for the password.
    let (ok, out, err) = run(&format!(
        "postgres://app:app@127.0.0.1:{}/app?sslmode=disable",
        router.port
    ));
    assert!(ok && out.trim() == "app", "{err}");

    // `auth: cert` as a user's own method (no access rules): legacy logs in by certificate;
    // pgrouter still logs in to the server with legacy's password.
    let router = Router::start_in(&cluster.dir, |port| {
        router_config(cluster, port, [1, 1, 1], &tls).replace(
            "{name: legacy, password: legacy, auth: md5}",
            "{name: legacy, password: legacy, auth: cert}",
        )
    });
    let (ok, out, err) = run(&url(&router, "legacy", Some((&ours.dir, "legacy"))));
    assert!(
        ok && out.trim() == "legacy",
        "legacy by certificate: {err}\n{}",
        router.log_text()
    );
    let (ok, _, err) = run(&format!(
        "postgres://legacy:legacy@127.0.0.1:{}/app?sslmode=disable",
        router.port
    ));
    assert!(
        !ok && err.contains("connection requires a valid client certificate"),
        "{err}"
    );
}

/// PostgreSQL 17's direct TLS: libpq's `sslnegotiation=direct` (psycopg's bundled libpq) starts
/// with the handshake and ALPN `postgresql`; a handshake without ALPN gets PostgreSQL's error;
/// with TLS off the connection is closed.
#[tokio::test]
async fn direct_tls_as_postgresql_17() {
    let Some(cluster) = cluster() else { return };
    let libpq = Command::new("python3")
        .args(["-c", "import psycopg; print(psycopg.pq.version())"])
        .output();
    let version: u32 = libpq
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0);
    if version < 170_000 {
        crate::harness::missing(
            "psycopg with libpq 17 or later (pip install 'psycopg[binary]'); the direct TLS test",
        );
        return;
    }
    let work = cluster
        .dir
        .join(format!("direct-tls-{}", std::process::id()));
    let certs = make_certificates(&work, "direct");
    let connect = |port: u16| {
        Command::new("python3")
            .args([
                "-c",
                "import psycopg, sys\n\
                 with psycopg.connect(sys.argv[1]) as c:\n    \
                 print(c.execute('select current_user').fetchone()[0], c.pgconn.ssl_in_use)",
                &format!(
                    "host=localhost port={port} user=app password=app dbname=app \
                     sslmode=verify-full sslrootcert={} sslnegotiation=direct",
                    certs.ca.display()
                ),
            ])
            .output()
            .unwrap()
    };
    let router = Router::start(cluster, &tls_yaml(&certs.dir, "require", ""));
    let out = connect(router.port);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "app True",
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        router.log_text()
    );
    // A TLS client that offers no ALPN: PostgreSQL's refusal, inside TLS.
    let out = Command::new("timeout")
        .args([
            "10", "openssl", "s_client", "-quiet", "-ign_eof", "-connect",
        ])
        .arg(format!("127.0.0.1:{}", router.port))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(
            "received direct SSL connection request without ALPN protocol negotiation extension"
        ),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // TLS off: nothing to answer the handshake with.
    let plain = Router::start(cluster, "");
    let out = connect(plain.port);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `admin.https`: the admin port also speaks https with `tls:`'s certificate (curl verifies it
/// against the test's CA); `/metrics` and `/nodes` are served over https only, the probes over
/// both.
#[tokio::test]
async fn admin_port_over_https() {
    let Some(cluster) = cluster() else { return };
    if Command::new("curl").arg("--version").output().is_err() {
        crate::harness::missing("curl; the admin https test");
        return;
    }
    let work = cluster
        .dir
        .join(format!("admin-https-{}", std::process::id()));
    let certs = make_certificates(&work, "admin");
    let router = Router::start_in(&cluster.dir, |port| {
        router_config(
            cluster,
            port,
            [1, 1, 1],
            &tls_yaml(&certs.dir, "prefer", ""),
        )
        .replace(
            "admin: {users: [boss]}",
            "admin: {users: [boss], https: true}",
        )
    });
    let port = router.port + 1;
    let curl = |url: String| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&certs.ca)
            .arg(url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(format!("https://localhost:{port}/metrics")), "200");
    assert_eq!(curl(format!("https://localhost:{port}/nodes")), "200");
    assert_eq!(curl(format!("https://localhost:{port}/health")), "200");
    assert_eq!(curl(format!("http://localhost:{port}/metrics")), "403");
    assert_eq!(curl(format!("http://localhost:{port}/health")), "200");
}
