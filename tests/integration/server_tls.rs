//! TLS towards the servers: a cluster of the test's own with `ssl = on` and a `hostssl`-only
//! `pg_hba.conf` (so nothing reaches it without TLS), certificates made by openssl, and psql
//! through pgrouter. Each `server_tls.mode` is tried where it must work and where it must
//! refuse; where a statement ran and whether its connection was on TLS is read from the
//! servers (`pg_stat_ssl`).

use crate::harness::{issue_certificate, make_certificates, private_cluster, psql, Router};
use std::path::Path;
use std::time::Duration;

/// What the server says about the connection that ran the query: `in_recovery|ssl`. (The
/// running query finds itself by its text: `pg_backend_pid()` would send it to the primary.)
const WHERE_AND_HOW: &str = "SELECT pg_is_in_recovery(), s.ssl FROM pg_stat_ssl s \
     JOIN pg_stat_activity a USING (pid) WHERE a.state = 'active' AND a.query LIKE '%where-and-how%'";

fn config(port: u16, host: &str, base_port: u16, mode: &str, server_tls: &str) -> String {
    format!(
        "listen: 127.0.0.1:{port}\n\
         admin_listen: 127.0.0.1:{admin}\n\
         read_only_listen: 127.0.0.1:{read_only}\n\
         nodes:\n  - {{name: pg0, host: {host}, port: {base_port}}}\n  - {{name: pg1, host: {host}, port: {replica}}}\n\
         users:\n  - {{name: app, password: app}}\n  - {{name: certuser, auth: trust}}\n\
         pool: {{mode: {mode}}}\n\
         health_check: {{interval: 200ms}}\n\
         topology: {{failover_timeout: 2s}}\n\
         server_tls: {server_tls}\n",
        admin = port + 1,
        read_only = port + 3,
        replica = base_port + 1,
    )
}

fn start(dir: &Path, host: &str, base_port: u16, mode: &str, server_tls: &str) -> Router {
    let host = host.to_owned();
    let (mode, server_tls) = (mode.to_owned(), server_tls.to_owned());
    Router::start_in(dir, move |port| {
        config(port, &host, base_port, &mode, &server_tls)
    })
}

fn url(router: &Router, user: &str) -> String {
    format!(
        "postgres://{user}:app@127.0.0.1:{}/app?sslmode=disable",
        router.port
    )
}

/// The `read_only_listen` endpoint: every statement on a replica.
fn replica_url(router: &Router, user: &str) -> String {
    format!(
        "postgres://{user}:app@127.0.0.1:{}/app?sslmode=disable",
        router.port + 3
    )
}

/// A read-write transaction on the primary and, once the replica is seen healthy, a query on
/// it: both on TLS.
fn assert_routed_over_tls(router: &Router, user: &str) {
    let in_transaction = format!("BEGIN; {WHERE_AND_HOW}; COMMIT");
    let (ok, out, err) = psql(&url(router, user), &["-c", &in_transaction], None);
    assert!(ok, "{err}\n{}", router.log_text());
    assert_eq!(
        out.trim(),
        "BEGIN\nf|t\nCOMMIT",
        "a read-write transaction's connection"
    );
    let on_replica = crate::harness::eventually(Duration::from_secs(15), || {
        let (ok, out, _) = psql(&replica_url(router, user), &["-c", WHERE_AND_HOW], None);
        ok && out.trim() == "t|t"
    });
    assert!(
        on_replica,
        "reads never reached the replica over TLS:\n{}",
        router.log_text()
    );
}

fn assert_refused(router: &Router, log_needle: &str) {
    let (ok, _, err) = psql(&url(router, "app"), &["-c", "SELECT 1"], None);
    assert!(!ok, "the login went through:\n{}", router.log_text());
    assert!(
        crate::harness::eventually(Duration::from_secs(5), || router
            .log_text()
            .contains(log_needle)),
        "{log_needle:?} not in the log; psql said {err}:\n{}",
        router.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_reached_only_over_verified_tls() {
    let Some(shared) = crate::harness::cluster() else {
        return;
    };
    let work = shared.dir.join("server-tls");
    std::fs::create_dir_all(&work).unwrap();
    // The servers' certificate names `localhost` only: verify-full through 127.0.0.1 must fail.
    let certs = make_certificates(&work, "servers");
    issue_certificate(
        &certs.dir,
        "server",
        "localhost",
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    // pgrouter's client certificate for a role the servers admit by certificate alone.
    issue_certificate(
        &certs.dir,
        "certuser",
        "certuser",
        "extendedKeyUsage=clientAuth\n",
    );
    let stranger = make_certificates(&work, "stranger");
    let Some(cluster) = private_cluster(1, &[("PGR_SSL_DIR", certs.dir.as_os_str())]) else {
        return;
    };
    // `cert` for certuser, ahead of the cluster's own hostssl lines, on both nodes.
    cluster.superuser_sql("CREATE ROLE certuser LOGIN");
    for node in 0..2 {
        let hba = std::path::PathBuf::from(cluster.node_sql(node, "SHOW hba_file"));
        let lines = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(
            &hba,
            format!("hostssl all certuser 127.0.0.1/32 cert\n{lines}"),
        )
        .unwrap();
        assert_eq!(cluster.node_sql(node, "SELECT pg_reload_conf()"), "t");
    }
    let base = cluster.base_port;
    let ca = certs.ca.display().to_string();
    let crt = certs.dir.join("certuser.crt").display().to_string();
    let key = certs.dir.join("certuser.key").display().to_string();

    for mode in ["session", "transaction"] {
        let full = start(
            &work,
            "localhost",
            base,
            mode,
            &format!("{{mode: verify-full, ca_file: {ca}, cert_file: {crt}, key_file: {key}}}"),
        );
        assert_routed_over_tls(&full, "app");
        assert_routed_over_tls(&full, "certuser");
    }
    // verify-ca checks the chain, not the name; prefer (the default) takes the TLS offered.
    let chain_only = start(
        &work,
        "127.0.0.1",
        base,
        "transaction",
        &format!("{{mode: verify-ca, ca_file: {ca}}}"),
    );
    assert_routed_over_tls(&chain_only, "app");
    let default = start(&work, "127.0.0.1", base, "session", "{}");
    assert_routed_over_tls(&default, "app");

    // Refusals: the wrong name, the wrong CA, no TLS at all (the servers' own refusal), and a
    // `cert` login without a client certificate.
    let wrong_name = start(
        &work,
        "127.0.0.1",
        base,
        "session",
        &format!("{{mode: verify-full, ca_file: {ca}}}"),
    );
    assert_refused(&wrong_name, "certificate not valid for name \"127.0.0.1\"");
    let wrong_ca = start(
        &work,
        "localhost",
        base,
        "session",
        &format!("{{mode: verify-ca, ca_file: {}}}", stranger.ca.display()),
    );
    assert_refused(&wrong_ca, "invalid peer certificate");
    let plain = start(&work, "localhost", base, "session", "{mode: disable}");
    assert_refused(&plain, "no encryption");
    let (ok, _, err) = psql(&url(&default, "certuser"), &["-c", "SELECT 1"], None);
    assert!(
        !ok && err.contains("certificate"),
        "certuser without a certificate: {err}"
    );
}
