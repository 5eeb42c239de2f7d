#!/usr/bin/env bash
# driver-suites.sh: run a driver's own test suite through pgrouter and directly against the
# primary, and list what differs.
#   scripts/driver-suites.sh node-postgres DIR   DIR: a checkout of node-postgres
#   scripts/driver-suites.sh psycopg DIR         DIR: a checkout of psycopg
# Needs the local dev cluster and pgrouter in front of it (./scripts/run-local.sh), or set
# PGR_ROUTER_PORT and PGR_PRIMARY_PORT. The suites are the drivers' own code: this script runs
# them from the checkout you give it and copies nothing of them into this repository. The
# results and the reason for each difference are in docs/routing.md ("Drivers' own test suites").
set -euo pipefail

PROG=${0##*/}
ROUTER_PORT=${PGR_ROUTER_PORT:-6432}
PRIMARY_PORT=${PGR_PRIMARY_PORT:-15432}
WORK=${PGR_SUITE_DIR:-/tmp/pgrouter-driver-suites}

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

[[ $# == 2 ]] || { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
suite=$1
src=$(cd "$2" && pwd) || die "no such directory: $2"
mkdir -p "$WORK"

# node-postgres: every packages/pg/test/integration file, one node process each (its Makefile's
# way), with the connection in PG* variables. The package's dependencies come from npm.
node_postgres() {
  local dir=$WORK/node-postgres
  [[ -d $src/packages/pg/test/integration ]] || die "$src is not a node-postgres checkout"
  rm -rf "$dir" && cp -r "$src/packages/pg" "$dir"
  (cd "$dir" && node -e '
    const p = require("./package.json");
    p.devDependencies = { async: "2.6.4", bluebird: "3.7.2", co: "4.6.0", "pg-copy-streams": "0.3.0" };
    delete p.scripts;
    require("fs").writeFileSync("package.json", JSON.stringify(p, null, 2));' &&
    npm install --no-audit --no-fund --loglevel=error >/dev/null)
  for port in "$PRIMARY_PORT" "$ROUTER_PORT"; do
    : >"$WORK/node-postgres.$port"
    (cd "$dir" && find test/integration -name '*-tests.js' | sort) | while read -r f; do
      rc=0
      (cd "$dir" && PGHOST=127.0.0.1 PGPORT=$port PGUSER=app PGPASSWORD=app PGDATABASE=app \
        timeout 60 node "$f" >"$WORK/last.log" 2>&1) || rc=$?
      printf '%s %s\n' "$rc" "$f" >>"$WORK/node-postgres.$port"
    done
  done
  report node-postgres
}

# psycopg: its pytest suite with --test-dsn (connection pools, CockroachDB, DNS, typing and
# free-threading tests left out: they test no server behaviour).
psycopg() {
  [[ -f $src/tests/conftest.py ]] || die "$src is not a psycopg checkout"
  python3 -m pip install --quiet pytest anyio pproxy pytest-randomly pytest-timeout 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages pytest anyio pproxy pytest-randomly pytest-timeout
  for port in "$PRIMARY_PORT" "$ROUTER_PORT"; do
    # psycopg's conftest refuses to run after an interrupted run until its cache is cleared.
    rm -rf "$src/.pytest_cache"
    (cd "$src" && timeout 1800 python3 -m pytest tests -p no:randomly -q -rfE --tb=no --timeout=60 \
      --test-dsn "host=127.0.0.1 port=$port user=app password=app dbname=app" \
      --ignore=tests/pool --ignore=tests/crdb --ignore=tests/test_dns_srv.py \
      --ignore=tests/test_typing.py --ignore=tests/types --ignore=tests/test_gevent.py \
      --ignore=tests/test_free_threading.py >"$WORK/psycopg.$port.log" 2>&1) || true
    grep -E '^(FAILED|ERROR) ' "$WORK/psycopg.$port.log" | sed 's/ - .*//' | sort -u |
      awk '{print "1 " $2}' >"$WORK/psycopg.$port"
    tail -1 "$WORK/psycopg.$port.log"
  done
  report psycopg
}

report() {
  local name=$1 direct=$WORK/$1.$PRIMARY_PORT routed=$WORK/$1.$ROUTER_PORT
  printf '%s: directly: %s failing; through pgrouter: %s failing\n' "$name" \
    "$(awk '$1 != 0' "$direct" | wc -l)" "$(awk '$1 != 0' "$routed" | wc -l)"
  echo "failing through pgrouter only:"
  comm -13 <(awk '$1 != 0 {print $2}' "$direct" | sort) <(awk '$1 != 0 {print $2}' "$routed" | sort) |
    sed 's/^/  /'
  echo "failing directly only:"
  comm -23 <(awk '$1 != 0 {print $2}' "$direct" | sort) <(awk '$1 != 0 {print $2}' "$routed" | sort) |
    sed 's/^/  /'
}

case $suite in
  node-postgres) node_postgres ;;
  psycopg) psycopg ;;
  *) die "unknown suite: $suite (node-postgres or psycopg)" ;;
esac
