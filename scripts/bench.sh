#!/usr/bin/env bash
# bench.sh: relay-overhead benchmark, pgbench -S directly against the primary
# versus through pgrouter and through PgBouncer, in one interleaved run.
# Run with --help for usage.
set -euo pipefail

PROG=${0##*/}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export PGR_CLUSTER_DIR=/tmp/pgrouter-bench-cluster
export PGR_BASE_PORT=25432
export PGR_REPLICAS=2
DURATION=${PGR_BENCH_SECONDS:-10}
ROUNDS=${PGR_BENCH_ROUNDS:-2}
SCALE=10
ROUTER_PORT=${PGR_BENCH_ROUTER_PORT:-26432}
ADMIN_PORT=29930
PRIMARY_PORT=$PGR_BASE_PORT
BIN=${PGR_BIN:-target/release/pgrouter}
CONFIG=$PGR_CLUSTER_DIR/pgrouter-bench.yaml
ROUTER_LOG=$PGR_CLUSTER_DIR/pgrouter-bench.log
PGB_PORT=${PGR_BENCH_PGBOUNCER_PORT:-26500}
PGB_DIR=$PGR_CLUSTER_DIR/pgbouncer
PGB_INI=$PGB_DIR/pgbouncer.ini
PGB_AUTH=$PGB_DIR/userlist.txt
PGB_LOG=$PGB_DIR/pgbouncer.log
PGB_PIDFILE=$PGB_DIR/pgbouncer.pid
PGB_POOL_SIZE=${PGR_BENCH_POOL_SIZE:-20}
PG_OS_USER=postgres
read -r -a MODES <<<"${PGR_BENCH_MODES:-simple prepared}"
read -r -a CLIENTS <<<"${PGR_BENCH_CLIENTS:-1 8 32}"
read -r -a PGBENCH_ARGS <<<"${PGR_BENCH_PGBENCH_ARGS--S}"
TLS=${PGR_BENCH_TLS:-0}
TLS_DIR=$PGR_CLUSTER_DIR/tls
PGP_PORT=${PGR_BENCH_PGPOOL_PORT:-26600}
PGP_DIR=$PGR_CLUSTER_DIR/pgpool
PGP_CONF=$PGP_DIR/pgpool.conf
PGP_LOG=$PGP_DIR/pgpool.log
PGP_PIDFILE=$PGP_DIR/pgpool.pid
LAT_DIR=$PGR_CLUSTER_DIR/latency
if [[ ${PGR_BENCH_QUICK:-0} == 1 ]]; then
  # Under 3 minutes: one round of select-only simple at 1 and 8 clients, 5 s a run.
  MODES=(simple)
  CLIENTS=(1 8)
  DURATION=${PGR_BENCH_SECONDS:-5}
  ROUNDS=${PGR_BENCH_ROUNDS:-1}
fi

usage() {
  cat <<EOF
Usage: $PROG

Measures pgrouter's relay overhead: pgbench -S (select only) with -M simple and
-M prepared at ${CLIENTS[*]} clients, directly against the primary, through
pgrouter, through PgBouncer (transaction pooling) and through Pgpool-II
(streaming-replication mode with load balancing, what pgrouter users replace),
interleaved, median TPS per cell, each proxy's CPU time per transaction, and
p50/p99 latency from pgbench's per-transaction log. Uses its own dev
cluster ($PGR_CLUSTER_DIR, ports $PGR_BASE_PORT-$((PGR_BASE_PORT + 2))), pgrouter on
127.0.0.1:$ROUTER_PORT and its own PgBouncer on 127.0.0.1:$PGB_PORT (config in
$PGB_DIR). If pgbouncer is missing and we are root, it is installed with
apt-get (the system service is disabled, never started); otherwise the
PgBouncer columns are skipped. PgBouncer 1.18 in transaction mode does not
support protocol-level prepared statements, so -M prepared through it is
expected to fail; that is noted in the table and does not fail the script.
The report is printed and saved to target/bench/relay-<date>.md.

Environment:
  PGR_BENCH_SECONDS        seconds per pgbench run (default 10)
  PGR_BENCH_ROUNDS         rounds (default 2)
  PGR_BENCH_KEEP_CLUSTER=1 leave the bench cluster running afterwards
  PGR_BENCH_PGBOUNCER=0    leave PgBouncer out
  PGR_BENCH_PGPOOL=0       leave Pgpool-II out (installed with apt-get pgpool2 when
                           missing and we are root; its packaged service stays off)
  PGR_BENCH_QUICK=1        one round, -M simple, 1 and 8 clients, 5 s runs: under
                           3 minutes
  PGR_SKIP_BUILD=1         do not run cargo build
  PGR_BIN                  pgrouter binary (default target/release/pgrouter)
  PGR_BENCH_ROUTER_EXTRA   YAML appended to pgrouter's configuration, e.g.
                           'routing: {load_balance: false}' to measure the bare relay
  PGR_BENCH_CLIENTS        client counts (default "1 8 32")
  PGR_BENCH_MODES          query modes (default "simple prepared")
  PGR_BENCH_PGBENCH_ARGS   pgbench script arguments (default "-S"; "" for TPC-B,
                           "-S -C" for a new connection per transaction)
  PGR_BENCH_POOL_SIZE      PgBouncer default_pool_size (default 20)
  PGR_BENCH_TLS=1          clients reach pgrouter and PgBouncer over TLS (a certificate
                           made with openssl, tls.mode / client_tls_sslmode require,
                           pgbench with PGSSLMODE=require); direct stays plain (the
                           bench cluster has no TLS), so compare pgrouter with PgBouncer
  PGR_MAX_CONNECTIONS      the bench cluster's max_connections (default: raised, with
                           ALTER SYSTEM and a restart, to what all targets need at once)

TLS cost (handshakes per second, then select-only at 8 and 32 clients):
  PGR_BENCH_TLS=1 PGR_BENCH_MODES=simple PGR_BENCH_CLIENTS=8 PGR_BENCH_PGBENCH_ARGS="-S -C" $PROG
  PGR_BENCH_TLS=1 PGR_BENCH_MODES=simple PGR_BENCH_CLIENTS="8 32" $PROG

Pooling comparison (the cluster allows 50 connections, 200 clients):
  PGR_MAX_CONNECTIONS=50 PGR_BENCH_CLIENTS=200 PGR_BENCH_PGBENCH_ARGS= \
  PGR_BENCH_POOL_SIZE=40 PGR_BENCH_SECONDS=30 PGR_BENCH_ROUNDS=1 \
  PGR_BENCH_ROUTER_EXTRA='pool: {mode: transaction, max_server_connections: 40}' $PROG
EOF
}

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }

case ${1:-} in
  "") ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac

[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "PGR_BENCH_SECONDS must be a positive integer"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "PGR_BENCH_ROUNDS must be a positive integer"
[[ $TLS == 0 || $TLS == 1 ]] || die "PGR_BENCH_TLS must be 0 or 1"

port_in_use() {
  if command -v ss >/dev/null 2>&1; then
    [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]
    return
  fi
  # shellcheck disable=SC2016 # $1 is expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# ---------------------------------------------------------------- set-up

if [[ -z ${PGR_SKIP_BUILD:-} ]]; then
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs)"
fi

find_sbin() { # NAME -> path of a binary Debian puts in /usr/sbin (often not on a user's PATH)
  local p
  p=$(command -v "$1" 2>/dev/null) || p=/usr/sbin/$1
  [[ -x $p ]] || return 1
  printf '%s\n' "$p"
}

apt_install() { # PACKAGE SERVICE: as root, apt-get install PACKAGE; its packaged SERVICE stays off
  [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1 || return 0
  log "installing $1: apt-get install -y $1"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "$1" >&2; then
    log "apt-get install failed; retrying after apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$1" >&2 || true
  fi
  # We only ever run our own instance.
  systemctl disable --now "$2" 2>/dev/null || true
}

# PGB_SKIP: why the PgBouncer columns are empty ("" = PgBouncer takes part).
PGB_SKIP=""
PGB_BIN=""
if [[ ${PGR_BENCH_PGBOUNCER:-1} == 0 ]]; then
  PGB_SKIP="disabled (PGR_BENCH_PGBOUNCER=0)"
elif ! PGB_BIN=$(find_sbin pgbouncer); then
  apt_install pgbouncer pgbouncer
  if ! PGB_BIN=$(find_sbin pgbouncer); then
    PGB_BIN=""
    PGB_SKIP="skipped: pgbouncer is not installed (as root the script installs Debian's pgbouncer)"
  fi
fi
[[ -n $PGB_SKIP ]] && log "PgBouncer $PGB_SKIP"

# PGP_SKIP: why the Pgpool-II columns are empty ("" = Pgpool-II takes part).
PGP_SKIP=""
PGP_BIN=""
if [[ ${PGR_BENCH_PGPOOL:-1} == 0 ]]; then
  PGP_SKIP="disabled (PGR_BENCH_PGPOOL=0)"
elif ((TLS)); then
  PGP_SKIP="skipped with PGR_BENCH_TLS=1 (not configured for TLS here)"
elif ! PGP_BIN=$(find_sbin pgpool); then
  apt_install pgpool2 pgpool2
  if ! PGP_BIN=$(find_sbin pgpool); then
    PGP_BIN=""
    PGP_SKIP="skipped: pgpool is not installed (as root the script installs Debian's pgpool2)"
  fi
fi
[[ -n $PGP_SKIP ]] && log "Pgpool-II $PGP_SKIP"

scripts/dev-cluster.sh up >&2
eval "$(scripts/dev-cluster.sh env)"
PGBENCH=$PGR_PG_BIN/pgbench
PSQL=$PGR_PG_BIN/psql
PG_ISREADY=$PGR_PG_BIN/pg_isready
export PGPASSWORD=app

if [[ -z ${PGR_SKIP_BUILD:-} ]]; then
  locked=()
  [[ -f Cargo.lock ]] && locked=(--locked)
  log "cargo build --release ${locked[*]}"
  cargo build --release "${locked[@]}" >&2
fi
[[ -x $BIN ]] || die "$BIN not found or not executable"

app_query() { # PORT SQL
  "$PSQL" -X -q -h 127.0.0.1 -p "$1" -U app -d app -v ON_ERROR_STOP=1 -Atc "$2"
}

# Room for every target's server connections at once: pgrouter's pool (40 per node by default),
# PgBouncer's, one Pgpool-II child per client (each connected to every node) and the largest
# direct run. A cluster made with fewer (an older bench cluster) is raised and restarted, unless
# PGR_MAX_CONNECTIONS was given.
max_clients=0
for c in "${CLIENTS[@]}"; do ((c > max_clients)) && max_clients=$c; done
want_connections=$((2 * max_clients + PGB_POOL_SIZE + 60))
have_connections=$(app_query "$PRIMARY_PORT" "show max_connections")
if [[ -z ${PGR_MAX_CONNECTIONS:-} ]] && ((have_connections < want_connections)); then
  log "raising max_connections from $have_connections to $want_connections (ALTER SYSTEM, restart)"
  for ((i = PGR_REPLICAS; i >= 0; i--)); do # standbys first: theirs may not be below the primary's
    "$PSQL" -X -q -h "$PGR_CLUSTER_DIR/pg$i" -p $((PGR_BASE_PORT + i)) -U postgres -d postgres \
      -c "alter system set max_connections = $want_connections" >&2
    scripts/dev-cluster.sh stop "pg$i" >&2
    scripts/dev-cluster.sh start "pg$i" >&2
  done
fi

if [[ $(app_query "$PRIMARY_PORT" "select to_regclass('public.pgbench_accounts') is not null") != t ]]; then
  log "initializing: pgbench -i -s $SCALE (as app on the primary)"
  "$PGBENCH" -i -s "$SCALE" -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U app app >&2
fi

# Reads through pgrouter may go to the standbys: wait until they have replayed
# everything the primary has written.
target_lsn=$(app_query "$PRIMARY_PORT" "select pg_current_wal_lsn()")
deadline=$((SECONDS + 120))
for ((i = 1; i <= PGR_REPLICAS; i++)); do
  port=$((PGR_BASE_PORT + i))
  until [[ $(app_query "$port" "select pg_last_wal_replay_lsn() >= '$target_lsn'::pg_lsn") == t ]]; do
    ((SECONDS < deadline)) || die "standby on port $port did not catch up to $target_lsn within 120s"
    sleep 0.2
  done
done

# ---------------------------------------------------------------- pgrouter

for p in "$ROUTER_PORT" "$ADMIN_PORT"; do
  port_in_use "$p" && die "port $p is already in use (a pgrouter left from an earlier run?)"
done
if [[ -z $PGB_SKIP ]] && port_in_use "$PGB_PORT"; then
  die "port $PGB_PORT is already in use (a PgBouncer left from an earlier run? see $PGB_PIDFILE)"
fi

TLS_YAML=""
if ((TLS)); then
  command -v openssl >/dev/null 2>&1 || die "PGR_BENCH_TLS=1 needs openssl"
  mkdir -p "$TLS_DIR"
  if [[ ! -s $TLS_DIR/server.crt ]]; then
    log "making a TLS certificate in $TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
      -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.crt" 2>/dev/null
    chmod 600 "$TLS_DIR/server.key"
  fi
  TLS_YAML="tls: {mode: require, cert_file: $TLS_DIR/server.crt, key_file: $TLS_DIR/server.key}"
fi

cat >"$CONFIG" <<EOF
listen: 127.0.0.1:$ROUTER_PORT
admin_listen: 127.0.0.1:$ADMIN_PORT
nodes:
  - name: pg0
    host: 127.0.0.1
    port: $PGR_BASE_PORT
  - name: pg1
    host: 127.0.0.1
    port: $((PGR_BASE_PORT + 1))
  - name: pg2
    host: 127.0.0.1
    port: $((PGR_BASE_PORT + 2))
users:
  - name: app
    password: app
    auth: scram-sha-256
$TLS_YAML
${PGR_BENCH_ROUTER_EXTRA:-}
EOF
# The same pooling as PgBouncer's (transaction pooling, PGB_POOL_SIZE connections per node)
# unless PGR_BENCH_ROUTER_EXTRA sets its own.
if ! grep -q '^pool:' <<<"${PGR_BENCH_ROUTER_EXTRA:-}"; then
  echo "pool: {mode: transaction, max_server_connections: $PGB_POOL_SIZE}" >>"$CONFIG"
fi

ROUTER_PID=""
PGB_PID=""
PGB_STARTED=0

is_our_pgbouncer() { # PID -> true if it is a live pgbouncer process
  [[ $1 =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$1/comm" 2>/dev/null) == pgbouncer ]]
}

# Stops the PgBouncer this run started (pid from its pidfile), never any other.
# shellcheck disable=SC2317 # also invoked by the EXIT trap
stop_pgbouncer() {
  ((PGB_STARTED)) || return 0
  local pid=$PGB_PID i
  [[ -n $pid ]] || pid=$(cat "$PGB_PIDFILE" 2>/dev/null || true)
  if is_our_pgbouncer "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true # SIGTERM: immediate shutdown
    for ((i = 0; i < 50; i++)); do
      is_our_pgbouncer "$pid" || break
      sleep 0.1
    done
    is_our_pgbouncer "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  PGB_STARTED=0
}

pgp_pid() { # -> the pid in Pgpool-II's pidfile when it is a live pgpool (the file ends in a NUL)
  local pid
  pid=$(tr -dc '0-9' <"$PGP_PIDFILE" 2>/dev/null || true)
  [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == pgpool ]] && printf '%s\n' "$pid"
}

# Stops the Pgpool-II this run started (pid from its pidfile), never any other.
# shellcheck disable=SC2317 # invoked by the EXIT trap
stop_pgpool() {
  local pid
  pid=$(pgp_pid || true)
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PGP_PIDFILE"
}

cleanup() {
  stop_pgbouncer || true
  stop_pgpool || true
  if [[ -n $ROUTER_PID ]] && kill -0 "$ROUTER_PID" 2>/dev/null; then
    kill -TERM "$ROUTER_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do
      kill -0 "$ROUTER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$ROUTER_PID" 2>/dev/null || true
  fi
  if [[ -z ${PGR_BENCH_KEEP_CLUSTER:-} ]]; then
    scripts/dev-cluster.sh down >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting $BIN --config $CONFIG (log: $ROUTER_LOG)"
"$BIN" --config "$CONFIG" >"$ROUTER_LOG" 2>&1 </dev/null &
ROUTER_PID=$!
deadline=$((SECONDS + 30))
until "$PG_ISREADY" -q -h 127.0.0.1 -p "$ROUTER_PORT" -U app -d app -t 2; do
  if ! kill -0 "$ROUTER_PID" 2>/dev/null || ((SECONDS >= deadline)); then
    tail -n 40 "$ROUTER_LOG" >&2
    die "pgrouter did not start (log: $ROUTER_LOG)"
  fi
  sleep 0.2
done
app_query "$ROUTER_PORT" "select 1" >/dev/null || {
  tail -n 40 "$ROUTER_LOG" >&2
  die "a query through pgrouter failed"
}

# ---------------------------------------------------------------- PgBouncer

as_pg() { # run as the PostgreSQL OS user when we are root (PgBouncer refuses root)
  if [[ $EUID -eq 0 ]]; then
    (cd / && runuser -u "$PG_OS_USER" -- "$@")
  else
    "$@"
  fi
}

pgb_start_cmd() { # -> how PgBouncer is started, for the log and the report
  if [[ $EUID -eq 0 ]]; then
    printf 'runuser -u %s -- %s -d %s\n' "$PG_OS_USER" "$PGB_BIN" "$PGB_INI"
  else
    printf '%s -d %s\n' "$PGB_BIN" "$PGB_INI"
  fi
}

any_failure=0
pgb_fail() { # MESSAGE: PgBouncer could not be set up; report without it, exit 1
  log "PgBouncer: $*"
  [[ -f $PGB_LOG ]] && tail -n 20 "$PGB_LOG" >&2
  [[ -s $PGB_DIR/start.out ]] && cat "$PGB_DIR/start.out" >&2
  stop_pgbouncer
  PGB_SKIP="**FAILED**: $* (log: $PGB_LOG)"
  any_failure=1
}

if [[ -z $PGB_SKIP ]]; then
  mkdir -p "$PGB_DIR"
  rm -f "$PGB_PIDFILE" "$PGB_LOG" "$PGB_DIR/start.out"
  cat >"$PGB_INI" <<EOF
[databases]
app = host=127.0.0.1 port=$PRIMARY_PORT dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir = $PGB_DIR
pool_mode = transaction
auth_type = scram-sha-256
auth_file = $PGB_AUTH
default_pool_size = $PGB_POOL_SIZE
max_client_conn = 1000
logfile = $PGB_LOG
pidfile = $PGB_PIDFILE
ignore_startup_parameters = extra_float_digits
EOF
  if ((TLS)); then
    cp "$TLS_DIR/server.crt" "$TLS_DIR/server.key" "$PGB_DIR/"
    printf '%s\n' "client_tls_sslmode = require" \
      "client_tls_cert_file = $PGB_DIR/server.crt" "client_tls_key_file = $PGB_DIR/server.key" >>"$PGB_INI"
  fi
  # The SCRAM verifier as the servers store it: PgBouncer then checks logins without deriving
  # a key from a plaintext password on every login (and logs in to the server with the
  # client's proof), as pgrouter derives its verifier once per process.
  verifier=$("$PSQL" -X -q -h "$PGR_CLUSTER_DIR/pg0" -p "$PRIMARY_PORT" -U postgres -d postgres -Atc \
    "select rolpassword from pg_authid where rolname = 'app'" 2>/dev/null || true)
  if [[ $verifier == SCRAM-SHA-256\$* ]]; then
    printf '"app" "%s"\n' "$verifier" >"$PGB_AUTH"
  else
    log "could not read app's SCRAM verifier; PgBouncer gets the plaintext password"
    printf '"app" "app"\n' >"$PGB_AUTH"
  fi
  chmod 0700 "$PGB_DIR"
  chmod 0600 "$PGB_INI" "$PGB_AUTH"
  ((TLS)) && chmod 0600 "$PGB_DIR/server.key"
  [[ $EUID -eq 0 ]] && chown -R "$PG_OS_USER:" "$PGB_DIR"

  log "starting $(pgb_start_cmd) (log: $PGB_LOG)"
  PGB_STARTED=1
  if ! as_pg "$PGB_BIN" -d "$PGB_INI" </dev/null >"$PGB_DIR/start.out" 2>&1; then
    pgb_fail "pgbouncer -d $PGB_INI failed"
  else
    deadline=$((SECONDS + 30))
    until "$PG_ISREADY" -q -h 127.0.0.1 -p "$PGB_PORT" -U app -d app -t 2; do
      if ((SECONDS >= deadline)); then
        pgb_fail "PgBouncer did not become ready on 127.0.0.1:$PGB_PORT"
        break
      fi
      sleep 0.2
    done
  fi
  if [[ -z $PGB_SKIP ]]; then
    PGB_PID=$(cat "$PGB_PIDFILE" 2>/dev/null || true)
    if ! is_our_pgbouncer "$PGB_PID"; then
      pgb_fail "no live pgbouncer behind $PGB_PIDFILE"
    elif ! app_query "$PGB_PORT" "select 1" >/dev/null; then
      pgb_fail "a query through PgBouncer failed"
    fi
  fi
fi
PGB_VERSION=""
[[ -n $PGB_BIN ]] && PGB_VERSION=$("$PGB_BIN" --version 2>/dev/null | head -n 1 || true)

# ---------------------------------------------------------------- Pgpool-II

pgp_start_cmd() { # -> how Pgpool-II is started, for the log and the report
  local prefix=""
  [[ $EUID -eq 0 ]] && prefix="runuser -u $PG_OS_USER -- "
  printf '%s%s -n -f %s -F %s/pcp.conf\n' "$prefix" "$PGP_BIN" "$PGP_CONF" "$PGP_DIR"
}

pgp_fail() { # MESSAGE: Pgpool-II could not be set up; report without it, exit 1
  log "Pgpool-II: $*"
  [[ -f $PGP_LOG ]] && tail -n 20 "$PGP_LOG" >&2
  stop_pgpool
  PGP_SKIP="**FAILED**: $* (log: $PGP_LOG)"
  any_failure=1
}

PGP_PID=""
if [[ -z $PGP_SKIP ]]; then
  port_in_use "$PGP_PORT" && die "port $PGP_PORT is already in use (a Pgpool-II left from an earlier run? see $PGP_PIDFILE)"
  mkdir -p "$PGP_DIR"
  rm -f "$PGP_PIDFILE" "$PGP_LOG"
  # One child per client (a child serves one client at a time), reads balanced over the three
  # nodes with pgrouter's weights (1 each), nothing Pgpool-II would fail over on its own.
  {
    printf '%s\n' \
      "backend_clustering_mode = 'streaming_replication'" \
      "listen_addresses = '127.0.0.1'" \
      "port = $PGP_PORT" \
      "unix_socket_directories = '$PGP_DIR'" \
      "pcp_listen_addresses = ''" \
      "pcp_socket_dir = '$PGP_DIR'" \
      "num_init_children = $((max_clients + 2))" \
      "max_pool = 1" \
      "child_life_time = 0" \
      "load_balance_mode = on" \
      "sr_check_period = 0" \
      "sr_check_user = 'app'" \
      "sr_check_password = 'app'" \
      "health_check_period = 0" \
      "failover_on_backend_error = off" \
      "enable_pool_hba = off" \
      "pool_passwd = '$PGP_DIR/pool_passwd'" \
      "pid_file_name = '$PGP_PIDFILE'" \
      "logdir = '$PGP_DIR'" \
      "log_min_messages = warning"
    for ((i = 0; i <= PGR_REPLICAS; i++)); do
      printf "backend_hostname%d = '127.0.0.1'\nbackend_port%d = %d\nbackend_weight%d = 1\nbackend_flag%d = 'DISALLOW_TO_FAILOVER'\n" \
        "$i" "$i" $((PGR_BASE_PORT + i)) "$i" "$i"
    done
  } >"$PGP_CONF"
  # Pgpool-II needs the password itself to answer SCRAM and log in to the servers.
  printf 'app:TEXTapp\n' >"$PGP_DIR/pool_passwd"
  : >"$PGP_DIR/pcp.conf"
  chmod 0700 "$PGP_DIR"
  chmod 0600 "$PGP_CONF" "$PGP_DIR/pool_passwd"
  [[ $EUID -eq 0 ]] && chown -R "$PG_OS_USER:" "$PGP_DIR"
  log "starting $(pgp_start_cmd) (log: $PGP_LOG)"
  as_pg "$PGP_BIN" -n -f "$PGP_CONF" -F "$PGP_DIR/pcp.conf" </dev/null >"$PGP_LOG" 2>&1 &
  deadline=$((SECONDS + 30))
  until "$PG_ISREADY" -q -h 127.0.0.1 -p "$PGP_PORT" -U app -d app -t 2; do
    if ((SECONDS >= deadline)); then
      pgp_fail "Pgpool-II did not become ready on 127.0.0.1:$PGP_PORT"
      break
    fi
    sleep 0.2
  done
  if [[ -z $PGP_SKIP ]]; then
    PGP_PID=$(pgp_pid || true)
    if [[ -z $PGP_PID ]]; then
      pgp_fail "no live pgpool behind $PGP_PIDFILE"
    elif ! app_query "$PGP_PORT" "select 1" >/dev/null; then
      pgp_fail "a query through Pgpool-II failed"
    fi
  fi
fi
PGP_VERSION=""
[[ -n $PGP_BIN ]] && PGP_VERSION=$("$PGP_BIN" --version 2>&1 | head -n 1 || true)

TARGETS=(direct pgrouter)
[[ -z $PGB_SKIP ]] && TARGETS+=(pgbouncer)
[[ -z $PGP_SKIP ]] && TARGETS+=(pgpool)

CLK_TCK=$(getconf CLK_TCK)

cpu_ticks() { # PID -> utime + stime of the whole process, in clock ticks
  local stat rest
  stat=$(<"/proc/$1/stat")
  rest=${stat##*) } # fields from 3 (state) on; comm may contain spaces
  local -a f
  read -r -a f <<<"$rest"
  echo $((f[11] + f[12]))
}

tree_cpu_ticks() { # PID -> cpu_ticks of the process and its children (Pgpool-II forks one per client)
  local total p
  total=$(cpu_ticks "$1")
  for p in $(pgrep -P "$1" 2>/dev/null); do
    total=$((total + $(cpu_ticks "$p" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# ---------------------------------------------------------------- matrix

declare -A TPS CPU FAILS EXPECTED P50 P99
PGB_PREPARED_NOTE="fails (no prepared statements in transaction mode)"

pgbench_cmd() { # TARGET MODE CLIENTS -> the command line, one word per line
  local port=$PRIMARY_PORT jobs=$(($3 < 2 ? $3 : 2)) tls=()
  [[ $1 == pgrouter ]] && port=$ROUTER_PORT
  [[ $1 == pgbouncer ]] && port=$PGB_PORT
  [[ $1 == pgpool ]] && port=$PGP_PORT
  ((TLS)) && [[ $1 != direct ]] && tls=(env PGSSLMODE=require)
  printf '%s\n' "${tls[@]}" "$PGBENCH" -n "${PGBENCH_ARGS[@]}" -M "$2" -c "$3" -j "$jobs" -T "$DURATION" \
    -l --log-prefix="$LAT_DIR/tx" -h 127.0.0.1 -p "$port" -U app app
}

run_one() { # ROUND TARGET MODE CLIENTS
  local round=$1 target=$2 mode=$3 clients=$4 key="$3,$4,$2"
  local -a cmd
  mapfile -t cmd < <(pgbench_cmd "$target" "$mode" "$clients")
  local out rc=0 t0=0 t1=0 pid=""
  case $target in
    pgrouter) pid=$ROUTER_PID ;;
    pgbouncer) pid=$PGB_PID ;;
    pgpool) pid=$PGP_PID ;;
  esac
  rm -rf "$LAT_DIR" && mkdir -p "$LAT_DIR"
  [[ -n $pid ]] && t0=$(tree_cpu_ticks "$pid")
  out=$("${cmd[@]}" 2>&1) || rc=$?
  if [[ -n $pid ]]; then t1=$(tree_cpu_ticks "$pid" 2>/dev/null) || t1=$t0; fi
  # Per-transaction latencies (µs, third field of pgbench's log): p50 and p99, in ms.
  local lat
  lat=$(cat "$LAT_DIR"/tx* 2>/dev/null | awk '{ print $3 }' | sort -n | awk '{ v[NR] = $1 } END {
    if (NR) printf "%.3f %.3f", v[int((NR - 1) * 0.50) + 1] / 1000, v[int((NR - 1) * 0.99) + 1] / 1000 }')
  if [[ -n $lat ]]; then
    P50[$key]+="${lat% *} "
    P99[$key]+="${lat#* } "
  fi

  local tps txs failed
  tps=$(sed -n 's/^tps = \([0-9.]*\) (\(without initial connection\|including reconnection\) time.*/\1/p' <<<"$out" | head -n 1)
  txs=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out" | head -n 1)
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out" | head -n 1)
  local note=""
  if ((rc != 0)) || [[ -z $tps ]]; then
    note="pgbench exit $rc"
  elif [[ -n $failed && $failed != 0 ]]; then
    note="$failed failed tx"
  fi
  if [[ -n $note && $target == pgbouncer && $mode == prepared ]] &&
    grep -q 'prepared statement' <<<"$out"; then
    # Expected: PgBouncer 1.18 transaction pooling loses named prepared statements.
    EXPECTED[$key]=1
    log "round $round $mode c=$clients $target: $PGB_PREPARED_NOTE ($note)"
    printf '%s\n' "$out" | grep -m 3 'prepared statement' >&2 || true
    return 0
  fi
  if [[ -n $note ]]; then
    any_failure=1
    FAILS[$key]+="${FAILS[$key]:+; }round $round: $note"
    log "round $round $mode c=$clients $target: FAILED ($note)"
    printf '%s\n' "$out" | tail -n 15 >&2
  fi
  [[ -n $tps ]] || tps=0
  TPS[$key]+="$tps "
  local msg
  msg="round $round $mode c=$clients $target: $(printf '%.0f' "$tps") tps"
  if [[ -n $pid && ${txs:-0} -gt 0 ]]; then
    local us
    us=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$txs" 'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
    CPU[$key]+="$us "
    msg+=", $target CPU $us µs/tx"
  fi
  log "$msg"
  if ! kill -0 "$ROUTER_PID" 2>/dev/null; then
    tail -n 40 "$ROUTER_LOG" >&2
    die "pgrouter died during the benchmark (log: $ROUTER_LOG)"
  fi
  if [[ $target == pgbouncer ]] && ! is_our_pgbouncer "$PGB_PID"; then
    pgb_fail "PgBouncer died during the benchmark"
    PGB_PID=""
  fi
  if [[ $target == pgpool ]] && ! kill -0 "$PGP_PID" 2>/dev/null; then
    pgp_fail "Pgpool-II died during the benchmark"
    PGP_PID=""
  fi
}

total=$((ROUNDS * ${#MODES[@]} * ${#CLIENTS[@]} * ${#TARGETS[@]}))
log "running $total pgbench runs of ${DURATION}s (~$((total * DURATION / 60 + 1)) min)"
for ((round = 1; round <= ROUNDS; round++)); do
  # Odd rounds run the targets in order, even rounds in reverse.
  order=()
  for target in "${TARGETS[@]}"; do
    if ((round % 2 == 1)); then order+=("$target"); else order=("$target" "${order[@]}"); fi
  done
  for mode in "${MODES[@]}"; do
    for clients in "${CLIENTS[@]}"; do
      for target in "${order[@]}"; do
        # PgBouncer may have been dropped mid-run (pgb_fail).
        [[ $target == pgbouncer && -n $PGB_SKIP ]] && continue
        [[ $target == pgpool && -n $PGP_SKIP ]] && continue
        run_one "$round" "$target" "$mode" "$clients"
      done
    done
  done
done

median() { # numbers... -> median (mean of the middle two for an even count)
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print ""; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ---------------------------------------------------------------- report

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
[[ -n $cpu_model ]] || cpu_model=unknown
pg_version=$(app_query "$PRIMARY_PORT" "select version()")
commit=$(git rev-parse --short HEAD 2>/dev/null || echo "no commit yet")
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then commit+=" (dirty)"; fi
stamp=$(date -u +%Y%m%d-%H%M%S)
mkdir -p target/bench
report=target/bench/relay-$stamp.md

fmt_tps() { # TPS-or-empty -> integer, or n/a
  if [[ -n $1 ]]; then printf '%.0f' "$1"; else printf 'n/a'; fi
}
fmt_ratio() { # BASE VALUE -> VALUE/BASE with 2 decimals, or n/a
  awk -v d="${1:-0}" -v r="$2" 'BEGIN { if (d > 0 && r != "") printf "%.2f", r / d; else print "n/a" }'
}
fmt_cpu() { # CPU-or-empty -> 1 decimal, or n/a
  if [[ -n $1 ]]; then printf '%.1f' "$1"; else printf 'n/a'; fi
}

{
  echo "# pgrouter relay overhead$( ((TLS)) && echo ", clients over TLS") ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "pgbench ${PGBENCH_ARGS[*]:-(TPC-B)} (-S: select only; -C: a new connection per transaction), scale $SCALE, ${DURATION}s per run, $ROUNDS rounds interleaved"
  echo "(direct and every proxy take turns within each round, the order reversed in even rounds);"
  echo "TPS excludes connection time, each cell is the median over the rounds."
  echo "ratio = TPS / direct TPS. CPU = the proxy's utime+stime / transactions (from /proc/PID/stat)."
  echo "PgBouncer: pool_mode=transaction, default_pool_size=$PGB_POOL_SIZE, all queries to the primary;"
  echo "pgrouter: pool.mode=transaction, max_server_connections=$PGB_POOL_SIZE per node (unless"
  echo "PGR_BENCH_ROUTER_EXTRA sets pool:), and it may send these reads to the standbys (all nodes share this machine's CPUs), and so may"
  echo "Pgpool-II (streaming_replication mode, load_balance_mode on, weights 1/1/1 as pgrouter's; one"
  echo "child process per client, their CPU summed). Latency: the p50 and p99 of every transaction"
  echo "of a run (pgbench -l), in ms, each the median over the rounds."
  if ((TLS)); then
    echo "TLS: clients reach pgrouter and PgBouncer with PGSSLMODE=require (RSA 2048 certificate;"
    echo "tls.mode: require / client_tls_sslmode = require); direct is plain TCP (no TLS on the servers)."
  fi
  if [[ -n $PGB_SKIP ]]; then
    echo
    echo "PgBouncer columns: $PGB_SKIP."
  fi
  if [[ -n $PGP_SKIP ]]; then
    echo
    echo "Pgpool-II columns: $PGP_SKIP."
  fi
  echo
  echo "| workload | clients | direct TPS | pgrouter TPS | pgrouter ratio | PgBouncer TPS | PgBouncer ratio | Pgpool-II TPS | Pgpool-II ratio | pgrouter CPU µs/tx | PgBouncer CPU µs/tx | Pgpool-II CPU µs/tx | notes |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  for mode in "${MODES[@]}"; do
    for clients in "${CLIENTS[@]}"; do
      # shellcheck disable=SC2086 # the stored values are space-separated lists
      {
        d=$(median ${TPS[$mode,$clients,direct]:-})
        r=$(median ${TPS[$mode,$clients,pgrouter]:-})
        b=$(median ${TPS[$mode,$clients,pgbouncer]:-})
        rc=$(median ${CPU[$mode,$clients,pgrouter]:-})
        bc=$(median ${CPU[$mode,$clients,pgbouncer]:-})
        pp=$(median ${TPS[$mode,$clients,pgpool]:-})
        pc=$(median ${CPU[$mode,$clients,pgpool]:-})
      }
      b_tps=$(fmt_tps "$b") b_ratio=$(fmt_ratio "$d" "$b") b_cpu=$(fmt_cpu "$bc")
      if [[ -n ${EXPECTED[$mode,$clients,pgbouncer]:-} ]]; then
        b_tps=$PGB_PREPARED_NOTE b_ratio=n/a b_cpu=n/a
      elif [[ -n $PGB_SKIP && -z $b ]]; then
        b_tps=skipped
      fi
      notes=""
      for target in direct pgrouter pgbouncer pgpool; do
        if [[ -n ${FAILS[$mode,$clients,$target]:-} ]]; then
          notes+="${notes:+; }$target: ${FAILS[$mode,$clients,$target]}"
        fi
      done
      [[ -n $notes ]] && notes="**FAILED** $notes"
      if [[ $mode == prepared && -n $b && -z ${EXPECTED[$mode,$clients,pgbouncer]:-} ]]; then
        notes+="${notes:+; }PgBouncer passed only because each client kept one server connection (transaction mode has no prepared-statement support)"
      fi
      p_tps=$(fmt_tps "$pp")
      [[ -n $PGP_SKIP && -z $pp ]] && p_tps=skipped
      printf '| %s -M %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "${PGBENCH_ARGS[*]:-tpcb}" "$mode" "$clients" "$(fmt_tps "$d")" "$(fmt_tps "$r")" "$(fmt_ratio "$d" "$r")" \
        "$b_tps" "$b_ratio" "$p_tps" "$(fmt_ratio "$d" "$pp")" "$(fmt_cpu "$rc")" "$b_cpu" "$(fmt_cpu "$pc")" "$notes"
    done
  done
  echo
  echo "Latency, p50 / p99 in ms (median over the rounds):"
  echo
  echo "| workload | clients | direct | pgrouter | PgBouncer | Pgpool-II |"
  echo "|---|---:|---:|---:|---:|---:|"
  for mode in "${MODES[@]}"; do
    for clients in "${CLIENTS[@]}"; do
      row="| ${PGBENCH_ARGS[*]:-tpcb} -M $mode | $clients"
      for target in direct pgrouter pgbouncer pgpool; do
        # shellcheck disable=SC2086 # space-separated lists
        p50=$(median ${P50[$mode,$clients,$target]:-}) p99=$(median ${P99[$mode,$clients,$target]:-})
        if [[ -n $p50 && -z ${EXPECTED[$mode,$clients,$target]:-} ]]; then
          row+=" | $p50 / $p99"
        else
          row+=" | n/a"
        fi
      done
      echo "$row |"
    done
  done
  echo
  echo "## Machine"
  echo
  echo "- CPUs (nproc): $(nproc)"
  echo "- CPU model: $cpu_model"
  echo "- PostgreSQL: $pg_version"
  echo "- pgrouter commit: $commit"
  echo "- pgrouter binary: $BIN"
  echo "- PgBouncer: ${PGB_VERSION:-not available}${PGB_BIN:+ ($PGB_BIN)}"
  echo "- Pgpool-II: ${PGP_VERSION:-not available}${PGP_BIN:+ ($PGP_BIN)}, 127.0.0.1:$PGP_PORT"
  echo "- cluster: $PGR_CLUSTER_DIR (primary 127.0.0.1:$PRIMARY_PORT, 2 streaming standbys), pgrouter 127.0.0.1:$ROUTER_PORT, PgBouncer 127.0.0.1:$PGB_PORT"
  echo
  echo "## Commands"
  echo
  echo '```'
  echo "PGPASSWORD=app $PGBENCH -i -s $SCALE -q -h 127.0.0.1 -p $PRIMARY_PORT -U app app   # once, if pgbench_accounts is missing"
  if [[ -n $PGB_BIN && -f $PGB_INI ]]; then
    echo "$(pgb_start_cmd)   # PgBouncer; $PGB_AUTH holds \"app\" and app's SCRAM verifier from pg_authid"
  fi
  for mode in "${MODES[@]}"; do
    for clients in "${CLIENTS[@]}"; do
      for target in "${TARGETS[@]}"; do
        mapfile -t cmd < <(pgbench_cmd "$target" "$mode" "$clients")
        echo "PGPASSWORD=app ${cmd[*]}   # $target"
      done
    done
  done
  echo '```'
  if [[ -n $PGB_BIN && -f $PGB_INI ]]; then
    echo
    echo "PgBouncer config ($PGB_INI):"
    echo
    echo '```ini'
    cat "$PGB_INI"
    echo '```'
  fi
  if [[ -n $PGP_BIN && -f $PGP_CONF ]]; then
    echo
    echo "Pgpool-II, started with \`$(pgp_start_cmd)\`, config ($PGP_CONF; pool_passwd holds app's password as TEXT):"
    echo
    echo '```ini'
    cat "$PGP_CONF"
    echo '```'
  fi
  if ((any_failure)); then
    echo
    echo "**Some runs had failures; see the notes column.**"
  fi
} | tee "$report"

# ---------------------------------------------------------------- chart

# TPS and p99 latency against clients, per target and query mode, as a PNG beside the report
# (gnuplot; as root the script installs Debian's gnuplot-nox when it is missing).
command -v gnuplot >/dev/null 2>&1 || apt_install gnuplot-nox gnuplot-nox
if command -v gnuplot >/dev/null 2>&1 && ((${#CLIENTS[@]} > 1)); then
  chart=${report%.md}.png
  plot="set terminal png size $((560 * ${#MODES[@]})),760 font ',10'
set output '$chart'
set multiplot layout 2,${#MODES[@]} title 'pgbench ${PGBENCH_ARGS[*]:-TPC-B}, $(date -u '+%Y-%m-%d'), $(nproc) CPUs'
set logscale x 2
set xlabel 'clients'
set key top left
set grid"
  for row in tps p99; do
    for mode in "${MODES[@]}"; do
      data=${report%.md}-$mode.dat
      {
        echo "clients direct pgrouter PgBouncer Pgpool-II"
        for clients in "${CLIENTS[@]}"; do
          line=$clients
          for target in direct pgrouter pgbouncer pgpool; do
            # shellcheck disable=SC2086 # space-separated lists
            if [[ $row == tps ]]; then v=$(median ${TPS[$mode,$clients,$target]:-}); else v=$(median ${P99[$mode,$clients,$target]:-}); fi
            [[ -n ${EXPECTED[$mode,$clients,$target]:-} || -z $v || $v == 0 ]] && v=NaN
            line+=" $v"
          done
          echo "$line"
        done
      } >"$data.$row"
      label="TPS"
      [[ $row == p99 ]] && label="p99 latency, ms"
      plot+="
set title '$label, -M $mode'
set ylabel '$label'
plot for [i=2:5] '$data.$row' using 1:i with linespoints lw 2 title columnheader(i)"
    done
  done
  plot+="
unset multiplot"
  if gnuplot <<<"$plot" 2>/dev/null; then
    log "chart saved to $chart"
  else
    log "gnuplot failed; no chart"
  fi
fi
log "report saved to $report"
exit "$any_failure"
