//! The driver conformance matrix: real drivers (libpq through psycopg's binding, psycopg 3 in
//! three binding modes, asyncpg with and without its statement cache) run one scenario
//! (`tests/clients/conformance.py`) through pgrouter in session and in transaction pooling, and
//! with a client encoding that is not UTF-8. The scenario checks, from the servers, where
//! statements ran, that every acknowledged write is there exactly once, and that session state
//! follows the session. `scripts/test.sh` installs the drivers from PyPI.

use crate::harness::{cluster, missing, python_has, repo, Cluster, Router};
use std::process::Command;
use std::sync::Once;

/// Every driver of the matrix, as `conformance.py --list` names them: Python's (libpq itself,
/// psycopg, asyncpg) and the programs in `tests/clients/<language>/` (node-postgres, postgres.js,
/// pgjdbc, PHP, Ruby, Go), which `conformance.py` runs and checks.
fn drivers() -> Vec<String> {
    let out = Command::new("python3")
        .arg(repo().join("tests/clients/conformance.py"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(out.status.success(), "conformance.py --list failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `conformance.py`'s exit status when a driver or its toolchain is not installed.
const MISSING: i32 = 3;

fn drivers_installed() -> bool {
    if python_has("psycopg, asyncpg") {
        return true;
    }
    missing(
        "python3 with psycopg 3 and asyncpg is not installed (pip install 'psycopg[binary]' asyncpg); the driver conformance tests",
    );
    false
}

/// A role `app` may `SET ROLE` to, made once per cluster.
fn conformance_role(cluster: &Cluster) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        cluster.superuser_sql(
            "DO $$ BEGIN \
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'conformance_reader') THEN \
                 CREATE ROLE conformance_reader NOLOGIN; \
               END IF; \
             END $$; \
             GRANT conformance_reader TO app; \
             GRANT ALL ON SCHEMA public TO conformance_reader",
        );
    });
}

/// Runs a client script; returns its combined output when it failed. A driver that is not
/// installed is reported through `harness::missing` (a failure in CI, a loud skip elsewhere).
fn run_script(script: &str, args: &[String]) -> Option<String> {
    let out = Command::new("python3")
        .arg(repo().join("tests/clients").join(script))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(MISSING) {
        missing(&format!("{}: the driver conformance test", text.trim()));
        return None;
    }
    (!out.status.success()).then_some(text)
}

/// Runs every driver through a router in `mode` with `worker_threads`; fails with every failing
/// driver's output.
fn matrix(mode: &str, encoding: Option<&str>, worker_threads: u16) {
    let Some(cluster) = cluster() else { return };
    if !drivers_installed() {
        return;
    }
    conformance_role(cluster);
    // Reads only on the replicas, so that a read and a write never land on one server by chance.
    // The drivers' scripts check that a read right after a write lands on a replica: with
    // read-your-writes (the default) it does once the replica has replayed the write, which a
    // busy test machine may take longer than the default 50 ms to do.
    let router = Router::start_weighted(
        cluster,
        [0, 1, 1],
        &format!(
            "worker_threads: {worker_threads}\npool: {{mode: {mode}}}\nrouting: {{read_your_writes_wait: 5s}}\n"
        ),
    );
    let direct = format!(
        "postgres://app:app@127.0.0.1:{}/app",
        cluster.primary_port()
    );
    let mut failures = Vec::new();
    for driver in drivers() {
        let table = format!(
            "conformance_{mode}_{}_{}_w{worker_threads}",
            driver.replace('-', "_"),
            encoding.unwrap_or("utf8").to_ascii_lowercase()
        );
        let mut args = vec![
            driver.clone(),
            router.url("app", "app"),
            direct.clone(),
            cluster.primary_port().to_string(),
            table,
        ];
        args.extend(encoding.map(str::to_owned));
        if let Some(output) = run_script("conformance.py", &args) {
            failures.push(format!("--- {driver} ({mode}) ---\n{output}"));
        }
    }
    // A write is never sent to a replica first (it would be refused there and re-run).
    let rerun = router.log_text().contains("re-running it on the primary");
    assert!(
        failures.is_empty() && !rerun,
        "driver conformance failed in {mode} pooling:\n{}{}",
        failures.join("\n"),
        if rerun {
            "\na statement was refused by a replica and re-run on the primary"
        } else {
            ""
        }
    );
}

#[test]
fn drivers_in_session_pooling() {
    matrix("session", None, 1);
}

#[test]
fn drivers_in_transaction_pooling() {
    matrix("transaction", None, 1);
}

/// Session workers (`worker_threads` above 1): every driver's sessions on two threads.
#[test]
fn drivers_on_worker_threads_in_transaction_pooling() {
    matrix("transaction", None, 2);
}

#[test]
fn drivers_with_latin1_in_session_pooling() {
    matrix("session", Some("LATIN1"), 1);
}

#[test]
fn drivers_with_latin1_in_transaction_pooling() {
    matrix("transaction", Some("LATIN1"), 1);
}

/// Transaction pooling through one server connection: what client A leaves on it (settings made
/// with `set_config`, named and unnamed prepared statements) never reaches client B.
#[test]
fn pooled_connections_carry_nothing_between_clients() {
    let Some(cluster) = cluster() else { return };
    if !drivers_installed() {
        return;
    }
    let router = Router::start(
        cluster,
        "pool: {mode: transaction, max_server_connections: 1, checkout_timeout: 10s}\n\
         routing: {load_balance: false}\n",
    );
    if let Some(output) = run_script("pool_isolation.py", &[router.url("app", "app")]) {
        panic!("pool isolation failed:\n{output}");
    }
}
