//! Logins: SCRAM, MD5, trust, wrong passwords, unknown users, refused databases.

use crate::harness::{cluster, connect, psql, shared_router};
use tokio_postgres::error::SqlState;

/// After a SCRAM login a statement bound for the primary runs there as the client's user; the
/// server's parameters reach the client. (A plain read may land on any node: the shared router
/// spreads reads over all three by weight, so the primary is asked for by hint.)
#[tokio::test]
async fn scram_login_and_query_run_on_the_primary() {
    let Some(router) = shared_router() else {
        return;
    };
    let cluster = cluster().unwrap();
    let client = connect(&router.conninfo("app", "app")).await.unwrap();
    let row = client
        .query_one(
            "/* pgrouter: primary */ SELECT inet_server_port(), pg_is_in_recovery(), current_user::text",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), i32::from(cluster.primary_port()));
    assert!(!row.get::<_, bool>(1));
    assert_eq!(row.get::<_, String>(2), "app");
    let version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .unwrap()
        .get(0);
    assert!(version.starts_with("1"), "{version}");
}

#[tokio::test]
async fn md5_login_works() {
    let Some(router) = shared_router() else {
        return;
    };
    let client = connect(&router.conninfo("legacy", "legacy")).await.unwrap();
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "legacy");
}

/// Wrong password and unknown user get the same 28P01 error, in PostgreSQL's words.
#[tokio::test]
async fn wrong_password_and_unknown_user_get_28p01() {
    let Some(router) = shared_router() else {
        return;
    };
    for (user, password) in [("app", "wrong"), ("legacy", "wrong"), ("nobody", "x")] {
        let err = connect(&router.conninfo(user, password)).await.unwrap_err();
        let db = err
            .as_db_error()
            .expect("a server error, not a dropped connection");
        assert_eq!(db.code(), &SqlState::INVALID_PASSWORD, "{user}");
        assert_eq!(
            db.message(),
            format!("password authentication failed for user \"{user}\"")
        );
    }
}

/// psql (libpq) logs in through pgrouter with SCRAM and MD5; with sslmode=prefer it is told
/// `N` and continues in plain text.
#[test]
fn psql_logins() {
    let Some(router) = shared_router() else {
        return;
    };
    let (ok, out, err) = psql(
        &format!("{}?sslmode=prefer", router.url("app", "app")),
        &["-c", "select current_user"],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "app");
    let (ok, out, err) = psql(
        &router.url("legacy", "legacy"),
        &["-c", "select 40+2"],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "42");
    let (ok, _, err) = psql(&router.url("app", "nope"), &["-c", "select 1"], None);
    assert!(!ok);
    assert!(
        err.contains("FATAL:  password authentication failed for user \"app\""),
        "{err}"
    );
}

/// A server-side refusal (here: no such database) reaches the client word for word.
#[tokio::test]
async fn server_refusal_is_forwarded() {
    let Some(router) = shared_router() else {
        return;
    };
    let conninfo = format!(
        "host=127.0.0.1 port={} user=app password=app dbname=no_such_db",
        router.port
    );
    let err = connect(&conninfo).await.unwrap_err();
    let db = err.as_db_error().expect("server error");
    assert_eq!(db.code(), &SqlState::INVALID_CATALOG_NAME);
    assert_eq!(db.message(), "database \"no_such_db\" does not exist");
}

/// Start-up parameters (application_name, options, GUCs) pass through to the server.
#[tokio::test]
async fn startup_parameters_pass_through() {
    let Some(router) = shared_router() else {
        return;
    };
    let conninfo = format!(
        "{} options='-c search_path=pg_catalog -c statement_timeout=1234'",
        router.conninfo("app", "app")
    );
    let client = connect(&conninfo).await.unwrap();
    let row = client
        .query_one(
            "SELECT current_setting('application_name'), current_setting('search_path'), current_setting('statement_timeout')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pgrouter-test");
    assert_eq!(row.get::<_, String>(1), "pg_catalog");
    assert_eq!(row.get::<_, String>(2), "1234ms");
}
