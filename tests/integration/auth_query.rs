//! `auth_query`: users that are not in the configuration are looked up on the primary. Roles are
//! created, changed and dropped on the real cluster while pgrouter runs; the look-up runs as a
//! non-superuser through a SECURITY DEFINER function (the documented way) and as a superuser
//! with the default query on `pg_shadow`.

use crate::harness::{cluster, connect, router_config, Router};
use std::time::Duration;

/// The function the documentation recommends, and a role that may only call it.
const LOOKUP_FUNCTION: &str = "\
    DROP ROLE IF EXISTS aq_lookup; CREATE ROLE aq_lookup LOGIN PASSWORD 'lookup-pw'; \
    CREATE SCHEMA IF NOT EXISTS pgrouter_auth; \
    CREATE OR REPLACE FUNCTION pgrouter_auth.lookup(name text) \
      RETURNS TABLE (usename name, passwd text, valid_until double precision) \
      LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS \
      $$ SELECT rolname, rolpassword, extract(epoch FROM rolvaliduntil)::float8 \
         FROM pg_authid WHERE rolname = name AND rolcanlogin $$; \
    REVOKE ALL ON FUNCTION pgrouter_auth.lookup(text) FROM PUBLIC; \
    GRANT USAGE ON SCHEMA pgrouter_auth TO aq_lookup; \
    GRANT EXECUTE ON FUNCTION pgrouter_auth.lookup(text) TO aq_lookup";

fn sqlstate(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .map(|e| e.code().code().to_owned())
        .unwrap_or_else(|| format!("not a server error: {err}"))
}

#[tokio::test]
async fn users_looked_up_on_the_primary_while_pgrouter_runs() {
    let Some(cluster) = cluster() else { return };
    cluster.superuser_sql(LOOKUP_FUNCTION);
    // The cluster asks every role but legacy for SCRAM; an md5-stored password needs md5.
    for node in 0..3 {
        let hba = std::path::PathBuf::from(cluster.node_sql(node, "SHOW hba_file"));
        let lines = std::fs::read_to_string(&hba).unwrap();
        if !lines.contains("aq_md5") {
            std::fs::write(&hba, format!("host all aq_md5 127.0.0.1/32 md5\n{lines}")).unwrap();
            assert_eq!(cluster.node_sql(node, "SELECT pg_reload_conf()"), "t");
        }
    }
    cluster.superuser_sql(
        "DROP ROLE IF EXISTS aq_super; CREATE ROLE aq_super LOGIN SUPERUSER PASSWORD 'super-pw'",
    );
    let configs = [
        (
            "a SECURITY DEFINER function",
            "auth_query: {user: aq_lookup, password: lookup-pw, database: app, \
             query: 'SELECT * FROM pgrouter_auth.lookup($1)', cache_lifetime: 1s}\n",
        ),
        (
            "the default query on pg_shadow",
            "auth_query: {user: aq_super, password: super-pw, cache_lifetime: 1s}\n",
        ),
    ];
    for (how, auth_query) in configs {
        for pool in ["session", "transaction"] {
            let extra = format!("{auth_query}pool: {{mode: {pool}}}\n");
            let router = Router::start_in(&cluster.dir, |port| {
                router_config(cluster, port, [0, 1, 1], &extra)
            });
            let what = format!("{how}, {pool} pooling");
            // Created while pgrouter runs: SCRAM (the servers get the key the client's proof
            // reveals) and md5 (the hash answers the servers).
            cluster.superuser_sql(
                "DROP ROLE IF EXISTS aq_scram, aq_md5, aq_expired; \
                 SET password_encryption = 'scram-sha-256'; \
                 CREATE ROLE aq_scram LOGIN PASSWORD 'scram-pw'; \
                 CREATE ROLE aq_expired LOGIN PASSWORD 'old-pw' VALID UNTIL '2001-01-01'; \
                 SET password_encryption = 'md5'; \
                 CREATE ROLE aq_md5 LOGIN PASSWORD 'md5-pw'",
            );
            cluster.wait_for_replicas();
            for (user, password) in [("aq_scram", "scram-pw"), ("aq_md5", "md5-pw")] {
                let client = connect(&router.conninfo(user, password))
                    .await
                    .unwrap_or_else(|e| panic!("{user} ({what}): {e}\n{}", router.log_text()));
                assert_eq!(
                    crate::harness::primary_then_replica(&client).await,
                    ("f".into(), "t".into()),
                    "{user} ({what}): the primary, then a replica"
                );
            }
            // Refused as PostgreSQL refuses: a wrong password, an expired one, no such role.
            for (user, password) in [
                ("aq_scram", "wrong"),
                ("aq_md5", "wrong"),
                ("aq_expired", "old-pw"),
                ("aq_nobody", "x"),
            ] {
                let err = connect(&router.conninfo(user, password)).await.unwrap_err();
                assert_eq!(sqlstate(&err), "28P01", "{user} ({what}): {err}");
            }
            // Dropped while pgrouter runs: refused once the cache lifetime (1s) has passed.
            cluster.superuser_sql("DROP ROLE aq_scram");
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let err = connect(&router.conninfo("aq_scram", "scram-pw"))
                .await
                .unwrap_err();
            assert_eq!(sqlstate(&err), "28P01", "dropped aq_scram ({what}): {err}");
        }
    }

    // A look-up that cannot run (the look-up role's password is wrong) fails the login like a
    // wrong password; the reason is in the log.
    let router = Router::start_in(&cluster.dir, |port| {
        router_config(
            cluster,
            port,
            [1, 1, 1],
            "auth_query: {user: aq_lookup, password: not-it, query: 'SELECT * FROM pgrouter_auth.lookup($1)'}\n",
        )
    });
    cluster.superuser_sql(
        "DROP ROLE IF EXISTS aq_scram; SET password_encryption = 'scram-sha-256'; \
         CREATE ROLE aq_scram LOGIN PASSWORD 'scram-pw'",
    );
    let err = connect(&router.conninfo("aq_scram", "scram-pw"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28P01", "{err}");
    router
        .expect_log("auth_query look-up failed", Duration::from_secs(5))
        .await;
    // Listed users never depend on the look-up.
    assert!(connect(&router.conninfo("app", "app")).await.is_ok());
}
