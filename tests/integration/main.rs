//! End-to-end tests: the real `pgrouter` binary in front of a real PostgreSQL primary and two
//! streaming replicas (started once per test run by `scripts/dev-cluster.sh`), driven by real
//! clients: tokio-postgres, psql and pgbench.
//!
//! PostgreSQL missing: outside CI the tests print a loud warning and pass vacuously; with
//! `PGR_REQUIRE_POSTGRES=1` (set by `scripts/test.sh` in CI) they fail instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod hostile;

mod access;
mod admin;
mod auth_query;
mod bad_input;
mod cancel_race;
mod cli;
mod deploy;
mod drivers;
mod endpoints;
mod ha;
mod login;
mod memory;
mod package;
mod peers;
mod pgbench;
mod pgbouncer_compat;
mod pgpool;
mod pool;
mod raw;
mod read_your_writes;
mod relay;
mod reload;
mod routing;
mod server_tls;
mod shutdown;
mod tls;
mod verifiers;
mod workers;
