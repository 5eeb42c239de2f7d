#!/usr/bin/env bash
# dev-cluster.sh: a real PostgreSQL streaming-replication cluster on loopback,
# for developing and testing pgrouter. Run with --help for usage.
set -euo pipefail
umask 022

PROG=${0##*/}
MARKER=.pgrouter-dev-cluster
PG_OS_USER=postgres
MIN_PG_MAJOR=15

usage() {
  cat <<EOF
Usage: $PROG COMMAND [NODE]

A PostgreSQL primary + streaming replicas on 127.0.0.1, for pgrouter.
Nodes are pg0 (initial primary, port BASE), pg1 (BASE+1), pg2 (BASE+2), ...

Commands:
  deps          install PostgreSQL (>= $MIN_PG_MAJOR) with apt-get if it is missing
  up            create the cluster, or start its stopped nodes (idempotent)
  down          stop all nodes (fast shutdown)
  destroy       stop all nodes and delete the cluster directory
  status        one line per node: name port running|stopped role pid
  start NODE    start one node (e.g. pg1)
  stop NODE     stop one node (pg_ctl stop -m fast)
  kill NODE     crash-stop one node (pg_ctl stop -m immediate)
  promote NODE  promote a standby (pg_ctl promote -w)
  follow NODE PRIMARY
                re-point a running standby at PRIMARY (primary_conninfo, reload)
  rewind NODE PRIMARY
                make a cleanly stopped former primary a standby of PRIMARY
                (pg_rewind, standby.signal) and start it: the end of a switchover
  env           print shell export lines (use: eval "\$($PROG env)")

Environment:
  PGR_CLUSTER_DIR      cluster directory      (default /tmp/pgrouter-dev-cluster)
  PGR_BASE_PORT        port of pg0            (default 15432)
  PGR_REPLICAS         number of standbys     (default 2)
  PGR_PG_BIN           PostgreSQL bin dir     (default: newest /usr/lib/postgresql/*/bin)
  PGR_MAX_CONNECTIONS  max_connections        (default 100)
  PGR_FSYNC            fsync on|off           (default on)
  PGR_SSL_DIR          a directory with server.crt, server.key and ca.crt: the
                       cluster gets ssl = on and a TLS-only (hostssl) pg_hba.conf
                       (default: no TLS)
  PGR_APP_PASSWORD, PGR_LEGACY_PASSWORD, PGR_REPLICATOR_PASSWORD
                       role passwords         (defaults app, legacy, replicator)

Roles: postgres (superuser, no password, unix socket only), app (scram-sha-256),
legacy (md5), replicator (replication). Database app is owned by app.
When run as root, PostgreSQL runs as the OS user '$PG_OS_USER'.
EOF
}

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }

# libpq/pg_ctl variables from the caller's environment must not redirect us.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGSERVICEFILE \
  PGOPTIONS PGPASSFILE PGPASSWORD PGSSLMODE PGTARGETSESSIONATTRS PGDATA || true

CLUSTER_DIR=${PGR_CLUSTER_DIR:-/tmp/pgrouter-dev-cluster}
BASE_PORT=${PGR_BASE_PORT:-15432}
REPLICAS=${PGR_REPLICAS:-2}
MAX_CONNECTIONS=${PGR_MAX_CONNECTIONS:-100}
FSYNC=${PGR_FSYNC:-on}
SSL_DIR=${PGR_SSL_DIR:-}
APP_PASSWORD=${PGR_APP_PASSWORD:-app}
LEGACY_PASSWORD=${PGR_LEGACY_PASSWORD:-legacy}
REPLICATOR_PASSWORD=${PGR_REPLICATOR_PASSWORD:-replicator}
STREAM_TIMEOUT=60
PG_BIN=""

validate_settings() {
  case $CLUSTER_DIR in
    /*) ;;
    *) CLUSTER_DIR=$PWD/$CLUSTER_DIR ;;
  esac
  while [[ $CLUSTER_DIR == */ && $CLUSTER_DIR != / ]]; do CLUSTER_DIR=${CLUSTER_DIR%/}; done
  [[ $CLUSTER_DIR != / ]] || die "PGR_CLUSTER_DIR must not be /"
  [[ $BASE_PORT =~ ^[0-9]+$ ]] || die "PGR_BASE_PORT must be a number (got '$BASE_PORT')"
  [[ $REPLICAS =~ ^[0-9]$ ]] || die "PGR_REPLICAS must be 0..9 (got '$REPLICAS')"
  ((BASE_PORT >= 1024 && BASE_PORT + REPLICAS <= 65535)) ||
    die "PGR_BASE_PORT out of range (got $BASE_PORT)"
  [[ $MAX_CONNECTIONS =~ ^[0-9]+$ ]] || die "PGR_MAX_CONNECTIONS must be a number"
  case $FSYNC in
    on | off) ;;
    *) die "PGR_FSYNC must be on or off (got '$FSYNC')" ;;
  esac
}

is_root() { [[ $EUID -eq 0 ]]; }

# Run a command as the unprivileged PostgreSQL OS user (or as ourselves).
# fd 9 (our lock) is closed so that servers started by pg_ctl never inherit it.
as_pg() {
  if is_root; then
    (cd / && runuser -u "$PG_OS_USER" -- "$@" 9<&-)
  else
    "$@" 9<&-
  fi
}

# ---------------------------------------------------------------- PostgreSQL

pg_major_of_bin() { # BINDIR -> major version, or nothing
  local out
  out=$("$1/pg_ctl" --version 2>/dev/null) || return 0
  if [[ $out =~ \)\ ([0-9]+) ]]; then
    printf '%s\n' "${BASH_REMATCH[1]}"
  fi
}

bin_complete() { # BINDIR -> true if it has every tool we use
  local t
  for t in initdb pg_ctl pg_basebackup postgres psql pg_isready pgbench; do
    [[ -x $1/$t ]] || return 1
  done
}

# Sets PG_BIN, or leaves it empty and puts the reason in PG_BIN_PROBLEM.
PG_BIN_PROBLEM=""
find_pg_bin() {
  PG_BIN="" PG_BIN_PROBLEM=""
  local d v best="" best_v=-1 major
  if [[ -n ${PGR_PG_BIN:-} ]]; then
    d=${PGR_PG_BIN%/}
    bin_complete "$d" || die "PGR_PG_BIN=$d lacks one of initdb pg_ctl pg_basebackup postgres psql pg_isready pgbench"
    major=$(pg_major_of_bin "$d")
    [[ -n $major ]] || die "cannot get the PostgreSQL version of $d/pg_ctl"
    ((major >= MIN_PG_MAJOR)) || die "PGR_PG_BIN=$d is PostgreSQL $major; need >= $MIN_PG_MAJOR"
    PG_BIN=$d
    return 0
  fi
  # An existing cluster must keep using the binaries it was created with.
  if [[ -f $CLUSTER_DIR/$MARKER ]]; then
    d=$(marker_value pg_bin)
    if [[ -n $d ]] && bin_complete "$d"; then
      PG_BIN=$d
      return 0
    fi
  fi
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x $d/pg_ctl ]] || continue
    v=${d%/bin}
    v=${v##*/}
    [[ $v =~ ^[0-9]+$ ]] || continue
    if ((v > best_v)); then best_v=$v best=$d; fi
  done
  if [[ -z $best ]] && command -v pg_ctl >/dev/null 2>&1; then
    best=$(dirname "$(command -v pg_ctl)")
  fi
  if [[ -z $best ]]; then
    PG_BIN_PROBLEM="no PostgreSQL installation found (looked in /usr/lib/postgresql/*/bin and PATH)"
    return 0
  fi
  major=$(pg_major_of_bin "$best")
  if [[ -z $major ]] || ((major < MIN_PG_MAJOR)); then
    PG_BIN_PROBLEM="newest PostgreSQL found is ${major:-unknown} ($best); need >= $MIN_PG_MAJOR"
    return 0
  fi
  if ! bin_complete "$best"; then
    PG_BIN_PROBLEM="$best lacks one of initdb pg_ctl pg_basebackup postgres psql pg_isready pgbench"
    return 0
  fi
  PG_BIN=$best
}

ensure_os_user() {
  is_root || return 0
  if ! getent passwd "$PG_OS_USER" >/dev/null; then
    log "creating OS user $PG_OS_USER"
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash "$PG_OS_USER"
  fi
}

cmd_deps() {
  find_pg_bin
  if [[ -z $PG_BIN ]]; then
    local pkgs="postgresql postgresql-contrib postgresql-client"
    if ! is_root; then
      die "$PG_BIN_PROBLEM. Install PostgreSQL >= $MIN_PG_MAJOR server and client tools, e.g.:
  sudo apt-get update && sudo apt-get install -y $pkgs
or point PGR_PG_BIN at a bin directory containing initdb, pg_ctl, pg_basebackup, psql, pg_isready, pgbench."
    fi
    command -v apt-get >/dev/null 2>&1 ||
      die "$PG_BIN_PROBLEM, and apt-get is not available: install PostgreSQL >= $MIN_PG_MAJOR ($pkgs) by hand or set PGR_PG_BIN"
    log "$PG_BIN_PROBLEM; installing $pkgs with apt-get"
    apt-get update
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive apt-get install -y $pkgs
    find_pg_bin
    [[ -n $PG_BIN ]] || die "after installing: $PG_BIN_PROBLEM"
  fi
  ensure_os_user
  log "using PostgreSQL $(pg_major_of_bin "$PG_BIN") from $PG_BIN"
}

require_pg_bin() {
  find_pg_bin
  [[ -n $PG_BIN ]] || die "$PG_BIN_PROBLEM (run '$PROG deps')"
  if is_root && ! getent passwd "$PG_OS_USER" >/dev/null; then
    die "OS user $PG_OS_USER does not exist (run '$PROG deps')"
  fi
}

# ---------------------------------------------------------------- cluster layout

marker_value() { # KEY -> value stored in the marker file
  sed -n "s/^$1=//p" "$CLUSTER_DIR/$MARKER" 2>/dev/null | head -n 1
}

have_marker() { [[ -f $CLUSTER_DIR/$MARKER ]]; }

# An existing cluster keeps the base port it was created with.
load_cluster_settings() {
  have_marker || return 0
  local p
  p=$(marker_value base_port)
  [[ $p =~ ^[0-9]+$ ]] || return 0
  if [[ -n ${PGR_BASE_PORT:-} && $PGR_BASE_PORT != "$p" ]]; then
    die "the cluster in $CLUSTER_DIR was created with PGR_BASE_PORT=$p, not $PGR_BASE_PORT (destroy it first)"
  fi
  BASE_PORT=$p
}

node_index() { # NODE -> N (validates the name)
  [[ $1 =~ ^pg([0-9])$ ]] || die "bad node name '$1' (expected pg0, pg1, ...)"
  printf '%s\n' "${BASH_REMATCH[1]}"
}
node_port() { echo $((BASE_PORT + $(node_index "$1"))); }
node_dir() { printf '%s\n' "$CLUSTER_DIR/$1"; }
node_data() { printf '%s\n' "$CLUSTER_DIR/$1/data"; }
node_log() { printf '%s\n' "$CLUSTER_DIR/$1/postgres.log"; }
node_exists() { [[ -f $CLUSTER_DIR/$1/data/PG_VERSION ]]; }
node_ready() { [[ -f $CLUSTER_DIR/$1/.ready ]]; }

existing_nodes() { # nodes with a data directory, in order
  local i
  for ((i = 0; i <= 9; i++)); do
    if node_exists "pg$i"; then echo "pg$i"; fi
  done
}

configured_nodes() {
  local i
  for ((i = 0; i <= REPLICAS; i++)); do echo "pg$i"; done
}

node_running() {
  node_exists "$1" || return 1
  as_pg "$PG_BIN/pg_ctl" -D "$(node_data "$1")" status >/dev/null 2>&1
}

node_pid() {
  local pidfile
  pidfile=$(node_data "$1")/postmaster.pid
  [[ -r $pidfile ]] && head -n 1 "$pidfile"
}

# psql as the superuser over the node's unix socket.
node_psql() { # NODE [psql args...]
  local node=$1
  shift
  as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$(node_dir "$node")" \
    -p "$(node_port "$node")" -U postgres "$@"
}

node_query() { # NODE DB SQL -> unaligned tuples-only output
  node_psql "$1" -d "$2" -Atc "$3"
}

node_role() { # -> primary | standby | unknown
  local r
  r=$(node_query "$1" postgres 'select pg_is_in_recovery()' 2>/dev/null) || r=""
  case $r in
    f) echo primary ;;
    t) echo standby ;;
    *) echo unknown ;;
  esac
}

show_log_tail() {
  local f
  f=$(node_log "$1")
  if [[ -r $f ]]; then
    printf -- '--- last lines of %s ---\n' "$f" >&2
    tail -n 25 "$f" >&2
    printf -- '---\n' >&2
  fi
}

port_in_use() {
  local port=$1
  if command -v ss >/dev/null 2>&1; then
    [[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]]
    return
  fi
  # shellcheck disable=SC2016 # $1 is expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$port" 2>/dev/null
}

check_port_free() { # NODE
  local port
  port=$(node_port "$1")
  if port_in_use "$port"; then
    local what="another process"
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 >/dev/null 2>&1; then
      what="a PostgreSQL server that is not part of this cluster"
    fi
    die "port $port (needed for $1) is already in use by $what; stop it or choose another PGR_BASE_PORT"
  fi
}

start_node() { # NODE
  local node=$1
  check_port_free "$node"
  log "starting $node on port $(node_port "$node")"
  if ! as_pg "$PG_BIN/pg_ctl" -D "$(node_data "$node")" -l "$(node_log "$node")" -w -t 60 start >/dev/null; then
    show_log_tail "$node"
    die "$node failed to start"
  fi
}

stop_node() { # NODE MODE
  log "stopping $1 (-m $2)"
  # A node frozen with SIGSTOP (tests do that) cannot shut down: let it run first.
  local pid
  pid=$(head -n 1 "$(node_data "$1")/postmaster.pid" 2>/dev/null) || pid=""
  if [[ $pid =~ ^[0-9]+$ ]]; then
    pkill -CONT -P "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
  fi
  if ! as_pg "$PG_BIN/pg_ctl" -D "$(node_data "$1")" -m "$2" -w -t 60 stop >/dev/null; then
    show_log_tail "$1"
    die "$1 failed to stop"
  fi
}

# ---------------------------------------------------------------- creation

check_dir_access() {
  is_root || return 0
  local anc=$CLUSTER_DIR
  while [[ ! -e $anc ]]; do anc=$(dirname "$anc"); done
  if ! as_pg test -d "$anc" -a -x "$anc"; then
    die "OS user $PG_OS_USER cannot reach $anc (a parent directory is not traversable, e.g. /root is mode 0700); choose a PGR_CLUSTER_DIR under /tmp"
  fi
}

prepare_cluster_dir() {
  if [[ -e $CLUSTER_DIR ]]; then
    [[ -d $CLUSTER_DIR ]] || die "$CLUSTER_DIR exists and is not a directory"
    if ! have_marker && [[ -n $(ls -A "$CLUSTER_DIR") ]]; then
      die "$CLUSTER_DIR exists, is not empty and is not a pgrouter dev cluster (no $MARKER); refusing to use it"
    fi
  fi
  check_dir_access
  mkdir -p "$CLUSTER_DIR"
  if is_root; then chown "$PG_OS_USER:" "$CLUSTER_DIR"; fi
  chmod 0755 "$CLUSTER_DIR"
  if is_root && ! as_pg test -w "$CLUSTER_DIR"; then
    die "OS user $PG_OS_USER cannot write to $CLUSTER_DIR"
  fi
  printf '%s\n' \
    "# pgrouter dev cluster made by scripts/dev-cluster.sh; 'dev-cluster.sh destroy' deletes this directory" \
    "base_port=$BASE_PORT" "pg_bin=$PG_BIN" "created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" |
    as_pg tee "$CLUSTER_DIR/$MARKER" >/dev/null
}

make_node_dir() { # NODE
  as_pg mkdir -p "$(node_dir "$1")"
  as_pg chmod 0755 "$(node_dir "$1")"
}

# Per-node settings live in an included file so that a base backup can
# simply overwrite them.
write_node_conf() { # NODE
  printf '%s\n' \
    "# written by dev-cluster.sh for $1" \
    "port = $(node_port "$1")" \
    "unix_socket_directories = '$(node_dir "$1")'" \
    "cluster_name = '$1'" |
    as_pg tee "$(node_data "$1")/pgrouter-node.conf" >/dev/null
}

init_primary() {
  local node=pg0 data hba
  data=$(node_data "$node")
  make_node_dir "$node"
  log "initdb $node"
  local -a sync_opt=()
  [[ $FSYNC == off ]] && sync_opt=(--no-sync)
  if ! as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --no-locale "${sync_opt[@]}" \
    >"$(node_dir "$node")/initdb.log" 2>&1; then
    tail -n 25 "$(node_dir "$node")/initdb.log" >&2
    die "initdb failed"
  fi
  cat <<EOF | as_pg tee -a "$data/postgresql.conf" >/dev/null

# ---- pgrouter dev cluster (dev-cluster.sh) ----
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
hot_standby_feedback = on
wal_log_hints = on
wal_keep_size = '256MB'
max_connections = $MAX_CONNECTIONS
shared_buffers = '64MB'
password_encryption = 'scram-sha-256'
logging_collector = off
fsync = $FSYNC
include_if_exists = 'pgrouter-node.conf'
EOF
  local host_type=host
  if [[ -n $SSL_DIR ]]; then
    # The key must belong to the server's OS user and be private; copies in the cluster
    # directory keep the caller's files as they are. Replicas share them (same paths).
    local file
    as_pg mkdir -p "$CLUSTER_DIR/ssl"
    for file in server.crt server.key ca.crt; do
      [[ -r $SSL_DIR/$file ]] || die "PGR_SSL_DIR: $SSL_DIR/$file is missing"
      as_pg tee "$CLUSTER_DIR/ssl/$file" <"$SSL_DIR/$file" >/dev/null
    done
    as_pg chmod 600 "$CLUSTER_DIR/ssl/server.key"
    printf '%s\n' "ssl = on" \
      "ssl_cert_file = '$CLUSTER_DIR/ssl/server.crt'" \
      "ssl_key_file = '$CLUSTER_DIR/ssl/server.key'" \
      "ssl_ca_file = '$CLUSTER_DIR/ssl/ca.crt'" |
      as_pg tee -a "$data/postgresql.conf" >/dev/null
    host_type=hostssl
  fi
  write_node_conf "$node"
  hba="# pg_hba.conf written by dev-cluster.sh
# TYPE  DATABASE     USER        ADDRESS        METHOD
local   all          all                        trust
local   replication  all                        trust"
  local addr
  for addr in 127.0.0.1/32 ::1/128; do
    hba+="
$host_type    replication  replicator  $addr  scram-sha-256
$host_type    all          legacy      $addr  md5
$host_type    all          all         $addr  scram-sha-256"
  done
  printf '%s\n' "$hba" | as_pg tee "$data/pg_hba.conf" >/dev/null
  start_node "$node"
  log "creating roles and database app"
  node_psql "$node" -d postgres \
    -v app_pw="$APP_PASSWORD" -v legacy_pw="$LEGACY_PASSWORD" -v repl_pw="$REPLICATOR_PASSWORD" <<'SQL'
SET password_encryption = 'scram-sha-256';
CREATE ROLE app LOGIN PASSWORD :'app_pw';
CREATE ROLE replicator REPLICATION LOGIN PASSWORD :'repl_pw';
SET password_encryption = 'md5';
CREATE ROLE legacy LOGIN PASSWORD :'legacy_pw';
RESET password_encryption;
CREATE DATABASE app OWNER app;
\connect app
GRANT ALL ON SCHEMA public TO app, legacy;
GRANT app TO legacy;
GRANT pg_monitor TO app; -- health checks read replication status (pg_stat_wal_receiver)
SQL
  as_pg touch "$(node_dir "$node")/.ready"
}

create_replica() { # NODE PRIMARY_NODE
  local node=$1 primary=$2 slot="${1}_slot"
  check_port_free "$node"
  make_node_dir "$node"
  # A slot left over from an earlier, interrupted attempt would make -C fail.
  node_query "$primary" postgres \
    "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = '$slot' and not active" >/dev/null
  log "pg_basebackup $node from $primary"
  local -a sync_opt=()
  [[ $FSYNC == off ]] && sync_opt=(--no-sync)
  if ! PGPASSWORD=$REPLICATOR_PASSWORD as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 \
    -p "$(node_port "$primary")" -U replicator -D "$(node_data "$node")" -R -X stream \
    -C -S "$slot" -c fast "${sync_opt[@]}" >"$(node_dir "$node")/basebackup.log" 2>&1; then
    tail -n 25 "$(node_dir "$node")/basebackup.log" >&2
    die "pg_basebackup for $node failed"
  fi
  write_node_conf "$node"
  start_node "$node"
  as_pg touch "$(node_dir "$node")/.ready"
}

# Wait until the primary reports every replica as streaming.
wait_streaming_on_primary() { # PRIMARY NODES...
  local primary=$1
  shift
  (($# > 0)) || return 0
  local deadline=$((SECONDS + STREAM_TIMEOUT)) streaming node missing
  log "waiting for replication (${*}) to be streaming"
  while :; do
    streaming=$(node_query "$primary" postgres \
      "select application_name from pg_stat_replication where state = 'streaming'" 2>/dev/null) || streaming=""
    missing=()
    for node in "$@"; do
      grep -qx "$node" <<<"$streaming" || missing+=("$node")
    done
    ((${#missing[@]} == 0)) && return 0
    if ((SECONDS >= deadline)); then
      for node in "${missing[@]}"; do show_log_tail "$node"; done
      die "replicas not streaming after ${STREAM_TIMEOUT}s: ${missing[*]}"
    fi
    sleep 0.2
  done
}

# Wait until each given standby's WAL receiver is streaming (from whichever
# primary it follows).
wait_standbys_streaming() { # NODES...
  (($# > 0)) || return 0
  local deadline=$((SECONDS + STREAM_TIMEOUT)) node st missing
  log "waiting for standbys (${*}) to be streaming"
  while :; do
    missing=()
    for node in "$@"; do
      st=$(node_query "$node" postgres "select status from pg_stat_wal_receiver" 2>/dev/null) || st=""
      [[ $st == streaming ]] || missing+=("$node")
    done
    ((${#missing[@]} == 0)) && return 0
    if ((SECONDS >= deadline)); then
      for node in "${missing[@]}"; do show_log_tail "$node"; done
      die "standbys not streaming after ${STREAM_TIMEOUT}s: ${missing[*]} (is their primary running?)"
    fi
    sleep 0.2
  done
}

stop_all() { # MODE; stops standbys first, tolerating failures
  local node mode=$1 rc=0
  local -a nodes
  mapfile -t nodes < <(existing_nodes)
  local i
  for ((i = ${#nodes[@]} - 1; i >= 0; i--)); do
    node=${nodes[i]}
    if node_running "$node"; then
      (stop_node "$node" "$mode") || rc=1
    fi
  done
  return $rc
}

# ---------------------------------------------------------------- commands

lock_file() { printf '%s\n' "$CLUSTER_DIR.dev-cluster.lock"; }

# Serialise commands that change the cluster (e.g. concurrent 'up' calls).
take_lock() {
  command -v flock >/dev/null 2>&1 || return 0
  local lock
  lock=$(lock_file)
  : >>"$lock" 2>/dev/null || true
  [[ -r $lock ]] || return 0
  exec 9<"$lock"
  flock -w 600 9 || die "timed out waiting for the lock $lock"
  trap drop_stray_lock EXIT
}

# Do not leave a lock file behind for a cluster that does not exist.
# shellcheck disable=SC2317 # invoked by the EXIT trap
drop_stray_lock() {
  if ! have_marker; then rm -f -- "$(lock_file)" 2>/dev/null || true; fi
}

cmd_up() {
  cmd_deps
  take_lock
  load_cluster_settings
  find_pg_bin
  local t0=$SECONDS node primary="" fresh=0
  local -a standbys=() new_replicas=()

  if have_marker && node_ready pg0; then
    # Existing cluster: start whatever is stopped, add missing replicas.
    for node in $(existing_nodes); do
      if node_ready "$node" && ! node_running "$node"; then start_node "$node"; fi
    done
    for node in $(existing_nodes); do
      node_running "$node" || continue
      case $(node_role "$node") in
        primary) [[ -z $primary ]] && primary=$node ;;
        standby) standbys+=("$node") ;;
      esac
    done
    for node in $(configured_nodes); do
      [[ $node == pg0 ]] && continue
      node_ready "$node" && continue
      [[ -n $primary ]] || die "cannot create $node: no running primary"
      if node_running "$node"; then stop_node "$node" immediate; fi
      as_pg rm -rf "$(node_dir "$node")"
      create_replica "$node" "$primary"
      new_replicas+=("$node")
    done
    wait_streaming_on_primary "$primary" "${new_replicas[@]}"
    wait_standbys_streaming "${standbys[@]}"
  else
    if have_marker; then
      log "found an incomplete cluster in $CLUSTER_DIR; recreating it"
      stop_all immediate || true
      find "$CLUSTER_DIR" -mindepth 1 -maxdepth 1 ! -name "$MARKER" -exec rm -rf {} +
    fi
    for node in $(configured_nodes); do check_port_free "$node"; done
    fresh=1
    prepare_cluster_dir
    init_primary
    primary=pg0
    for node in $(configured_nodes); do
      [[ $node == pg0 ]] && continue
      create_replica "$node" pg0
      new_replicas+=("$node")
    done
    wait_streaming_on_primary pg0 "${new_replicas[@]}"
  fi

  local primaries=0
  for node in $(existing_nodes); do
    [[ $(node_role "$node") == primary ]] && primaries=$((primaries + 1))
  done
  ((primaries <= 1)) || log "warning: $primaries nodes are primaries (a standby was promoted earlier)"

  local verb="is up"
  ((fresh)) && verb="created in $((SECONDS - t0))s"
  echo "pgrouter dev cluster $verb: $CLUSTER_DIR (PostgreSQL $(pg_major_of_bin "$PG_BIN"), $PG_BIN)"
  cmd_status
  cat <<EOF
users:   app/$APP_PASSWORD (scram-sha-256), legacy/$LEGACY_PASSWORD (md5), replicator/$REPLICATOR_PASSWORD (replication)
         postgres: superuser, no password, unix socket only
connect: psql "postgres://app:$APP_PASSWORD@127.0.0.1:$BASE_PORT/app"
         psql -h $CLUSTER_DIR/pg0 -p $BASE_PORT -U postgres app
EOF
}

cmd_status() {
  have_marker || {
    echo "no dev cluster in $CLUSTER_DIR"
    return 1
  }
  local node state role pid
  for node in $(existing_nodes); do
    if node_running "$node"; then
      state=running
      role=$(node_role "$node")
      pid=$(node_pid "$node") || pid=-
    else
      state=stopped role=- pid=-
    fi
    printf '%-4s %-6s %-8s %-8s %s\n' "$node" "$(node_port "$node")" "$state" "$role" "${pid:--}"
  done
}

require_cluster() {
  have_marker || die "no dev cluster in $CLUSTER_DIR (run '$PROG up')"
}

require_node() { # NODE
  node_index "$1" >/dev/null
  node_exists "$1" || die "node $1 does not exist in $CLUSTER_DIR"
}

cmd_node() { # start|stop|kill|promote NODE
  local action=$1 node=$2
  require_cluster
  take_lock
  require_node "$node"
  case $action in
    start)
      if node_running "$node"; then
        log "$node is already running"
      else
        start_node "$node"
      fi
      ;;
    stop | kill)
      local mode=fast
      [[ $action == kill ]] && mode=immediate
      if node_running "$node"; then
        stop_node "$node" "$mode"
      else
        log "$node is not running"
      fi
      ;;
    promote)
      node_running "$node" || die "$node is not running"
      log "promoting $node"
      as_pg "$PG_BIN/pg_ctl" -D "$(node_data "$node")" -w -t 60 promote >/dev/null ||
        die "promoting $node failed"
      ;;
  esac
}

# Streams NODE from PRIMARY over TCP as replicator, without a slot (a slot made on the old
# primary does not exist on the new one; wal_keep_size keeps the WAL instead).
point_at() { # NODE PRIMARY
  local auto
  auto="$(node_data "$1")/postgresql.auto.conf"
  as_pg sed -i -e '/^primary_conninfo/d' -e '/^primary_slot_name/d' "$auto"
  printf "primary_conninfo = 'host=127.0.0.1 port=%s user=replicator password=%s application_name=%s'\n" \
    "$(node_port "$2")" "$REPLICATOR_PASSWORD" "$1" | as_pg tee -a "$auto" >/dev/null
  as_pg touch "$(node_data "$1")/standby.signal"
}

cmd_follow() { # NODE PRIMARY
  local node=$1 primary=$2
  require_cluster
  take_lock
  require_node "$node"
  require_node "$primary"
  node_running "$node" || die "$node is not running"
  log "re-pointing $node at $primary"
  point_at "$node" "$primary"
  as_pg "$PG_BIN/pg_ctl" -D "$(node_data "$node")" reload >/dev/null || die "reloading $node failed"
}

cmd_rewind() { # NODE PRIMARY
  local node=$1 primary=$2
  require_cluster
  take_lock
  require_node "$node"
  require_node "$primary"
  node_running "$node" && die "$node is running; stop it cleanly first (stop $node)"
  log "pg_rewind $node from $primary"
  if ! as_pg "$PG_BIN/pg_rewind" -D "$(node_data "$node")" \
    --source-server="host=$(node_dir "$primary") port=$(node_port "$primary") user=postgres dbname=postgres" \
    >"$(node_dir "$node")/rewind.log" 2>&1; then
    tail -n 25 "$(node_dir "$node")/rewind.log" >&2
    die "pg_rewind of $node failed"
  fi
  # pg_rewind copied the source's configuration files, its port among them.
  write_node_conf "$node"
  point_at "$node" "$primary"
  start_node "$node"
}

cmd_down() {
  if ! have_marker; then
    log "no dev cluster in $CLUSTER_DIR"
    return 0
  fi
  take_lock
  stop_all fast || die "some nodes failed to stop"
}

cmd_destroy() {
  if [[ ! -e $CLUSTER_DIR ]]; then
    log "nothing to destroy: $CLUSTER_DIR does not exist"
    return 0
  fi
  have_marker || die "$CLUSTER_DIR has no $MARKER file: not a pgrouter dev cluster, refusing to delete it"
  take_lock
  if ! stop_all fast; then
    log "fast shutdown failed; using immediate"
    stop_all immediate || die "could not stop all nodes; not deleting $CLUSTER_DIR"
  fi
  # Re-check the marker right before deleting.
  [[ -f $CLUSTER_DIR/$MARKER && $CLUSTER_DIR != / ]] || die "marker vanished; not deleting"
  rm -rf -- "$CLUSTER_DIR"
  rm -f -- "$(lock_file)"
  log "destroyed $CLUSTER_DIR"
}

shell_quote() { # single-quote a string for the shell
  local q="'\\''"
  printf "'%s'" "${1//\'/$q}"
}

cmd_env() {
  local ports="" i
  for ((i = 1; i <= REPLICAS; i++)); do
    ports+="${ports:+,}$((BASE_PORT + i))"
  done
  if have_marker; then
    ports=""
    local node
    for node in $(existing_nodes); do
      [[ $node == pg0 ]] && continue
      ports+="${ports:+,}$(node_port "$node")"
    done
  fi
  find_pg_bin
  printf 'export PGR_CLUSTER_DIR=%s\n' "$(shell_quote "$CLUSTER_DIR")"
  printf 'export PGR_BASE_PORT=%s\n' "$BASE_PORT"
  printf 'export PGR_PRIMARY_PORT=%s\n' "$BASE_PORT"
  printf 'export PGR_REPLICA_PORTS=%s\n' "$(shell_quote "$ports")"
  printf 'export PGR_PG_BIN=%s\n' "$(shell_quote "$PG_BIN")"
  printf '# superuser: psql -h %s -p %s -U postgres app\n' "$(shell_quote "$CLUSTER_DIR/pg0")" "$BASE_PORT"
}

main() {
  local cmd=${1:-}
  case $cmd in
    -h | --help | help)
      usage
      return 0
      ;;
    "")
      usage >&2
      return 2
      ;;
  esac
  shift
  validate_settings
  case $cmd in
    deps | up | down | destroy | status | env)
      (($# == 0)) || die "'$cmd' takes no arguments"
      ;;
    start | stop | kill | promote)
      (($# == 1)) || die "usage: $PROG $cmd NODE"
      ;;
    follow | rewind)
      (($# == 2)) || die "usage: $PROG $cmd NODE PRIMARY"
      ;;
    *)
      die "unknown command '$cmd' (see $PROG --help)"
      ;;
  esac
  case $cmd in
    deps) cmd_deps ;;
    up) cmd_up ;;
    env)
      load_cluster_settings
      cmd_env
      ;;
    *)
      load_cluster_settings
      if [[ $cmd == destroy || $cmd == down ]] && ! have_marker; then
        PG_BIN=""
      else
        require_pg_bin
      fi
      case $cmd in
        down) cmd_down ;;
        destroy) cmd_destroy ;;
        status) cmd_status ;;
        start | stop | kill | promote) cmd_node "$cmd" "$1" ;;
        follow) cmd_follow "$1" "$2" ;;
        rewind) cmd_rewind "$1" "$2" ;;
      esac
      ;;
  esac
}

# Sourced by ha-cluster.sh for its helpers: then define only. "exit" on the same
# line: bash must not read past this line, even if the file is edited while it runs.
[[ ${BASH_SOURCE[0]} != "$0" ]] || { main "$@"; exit $?; }
