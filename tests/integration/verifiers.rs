//! Users configured by what `pg_authid` stores instead of their password: a SCRAM verifier
//! (pgrouter logs in to the servers with the `ClientKey` the client's own SCRAM proof reveals)
//! and an md5 hash. The verifiers and hashes are read from the real cluster; the clients are
//! real (tokio-postgres, psql), in both pooling modes, on the primary and on a replica.

use crate::harness::{cluster, connect, router_config, Router};

fn stored(role: &str) -> String {
    let cluster = cluster().unwrap();
    cluster.superuser_sql(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"
    ))
}

/// The generated configuration with app's and legacy's passwords replaced by what the
/// servers store; the health checks keep a password of their own.
fn config(port: u16, app: &str, legacy: &str, extra: &str) -> String {
    let cluster = cluster().unwrap();
    router_config(
        cluster,
        port,
        [0, 1, 1],
        &format!("health_check: {{user: app, password: app, interval: 200ms}}\n{extra}"),
    )
    .replace(
        "{name: app, password: app, auth: scram-sha-256}",
        &format!("{{name: app, password: '{app}', auth: scram-sha-256}}"),
    )
    .replace(
        "{name: legacy, password: legacy, auth: md5}",
        &format!("{{name: legacy, password: '{legacy}', auth: md5}}"),
    )
}

#[tokio::test]
async fn users_configured_by_verifier_or_md5_hash_log_in_everywhere() {
    let Some(cluster) = cluster() else { return };
    let (verifier, hash) = (stored("app"), stored("legacy"));
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    assert!(hash.starts_with("md5"), "{hash}");
    for pool in ["session", "transaction"] {
        let router = Router::start_in(&cluster.dir, |port| {
            config(port, &verifier, &hash, &format!("pool: {{mode: {pool}}}\n"))
        });
        for (user, password) in [("app", "app"), ("legacy", "legacy")] {
            let client = connect(&router.conninfo(user, password))
                .await
                .unwrap_or_else(|e| panic!("{user} ({pool}): {e}\n{}", router.log_text()));
            // A read-write transaction on the primary, then a read on a replica (weights
            // 0/1/1 keep reads off the primary).
            assert_eq!(
                crate::harness::primary_then_replica(&client).await,
                ("f".into(), "t".into()),
                "{user} ({pool}): the primary, then a replica"
            );
        }
        // A wrong password is still refused in PostgreSQL's words.
        let err = connect(&router.conninfo("app", "wrong")).await.unwrap_err();
        let code = err.as_db_error().map(|e| e.code().code().to_owned());
        assert_eq!(code.as_deref(), Some("28P01"), "{err}");
    }

    // A verifier for the same password with another salt (another role's): the client's login
    // to pgrouter succeeds, the server login cannot, and pgrouter says why without sending a
    // proof the server would reject.
    cluster.superuser_sql(
        "DROP ROLE IF EXISTS other_salt; SET password_encryption = 'scram-sha-256'; \
         CREATE ROLE other_salt PASSWORD 'app'",
    );
    let other = stored("other_salt");
    let router = Router::start_in(&cluster.dir, |port| config(port, &other, &hash, ""));
    let err = connect(&router.conninfo("app", "app")).await.unwrap_err();
    assert!(
        router.log_text().contains("is not the configured one"),
        "{err}\n{}",
        router.log_text()
    );
}
