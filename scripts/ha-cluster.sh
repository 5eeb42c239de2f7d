#!/usr/bin/env bash
# ha-cluster.sh: a 3-node PostgreSQL cluster under a real HA manager (repmgr with repmgrd, or
# Patroni with a single-node etcd) on loopback, for pgrouter's failover tests.
set -euo pipefail
umask 022

HA_PROG=${0##*/}

ha_usage() {
  cat <<EOF
Usage: $HA_PROG repmgr|patroni COMMAND [NODE]

Three nodes pg0 (initial primary), pg1, pg2 on 127.0.0.1 ports BASE..BASE+2, with synchronous
replication, under repmgr (repmgrd on every node, automatic failover) or Patroni (REST API on
BASE+10+i, etcd on BASE+20/BASE+21).

Commands:
  deps          install PostgreSQL and the HA manager with apt-get if missing
  up            create and start the cluster; waits until both standbys stream
  sync-standby  Patroni: print the name of the synchronous standby (the only node a switchover
                may go to in synchronous mode)
  status        one line per node: name port running|stopped primary|standby [REST URL]
  primary       print the name of the node that is out of recovery
  kill NODE     crash the node's PostgreSQL (repmgr: pg_ctl -m immediate; Patroni: SIGKILL of
                the postmaster, Patroni keeps running and fails over)
  stop NODE     stop the node (Patroni: its Patroni and PostgreSQL)
  start NODE    start it again
  switchover NODE
                a planned switchover to standby NODE: Patroni: patronictl switchover;
                repmgr: repmgrd paused, the primary stopped cleanly, NODE promoted, the other
                standby following it, the old primary rejoined with pg_rewind (what
                'repmgr standby switchover' does over SSH), repmgrd resumed
  destroy       stop every process the cluster started and delete its directory

Environment: PGR_CLUSTER_DIR (default /tmp/pgrouter-MANAGER-cluster), PGR_BASE_PORT (default
25432 for repmgr, 26432 for Patroni). PGR_PATRONI_TLS_DIR (Patroni, at 'up'): a directory with
server.crt, server.key, ca.crt, client.crt and client.key; Patroni's REST API then speaks https
only and requires a client certificate signed by ca.crt (restapi.verify_client: required). Roles as in dev-cluster.sh: app/app (scram-sha-256, owns
database app, pg_monitor), legacy/legacy (md5), replicator, and postgres (superuser, unix socket
in the node's directory, no password).
EOF
}

# The PostgreSQL helpers (as_pg, find_pg_bin, log, die, …) come from dev-cluster.sh.
# shellcheck source=scripts/dev-cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/dev-cluster.sh"
# shellcheck disable=SC2034 # PROG is read by dev-cluster.sh's log and die
PROG=$HA_PROG

MANAGER=${1:-}
case $MANAGER in
  repmgr | patroni) shift ;;
  -h | --help | help | "")
    ha_usage
    exit 0
    ;;
  *) die "first argument must be repmgr or patroni (got '$MANAGER')" ;;
esac
CMD=${1:-}
[[ -n $CMD ]] || die "a command is required (see $HA_PROG --help)"
shift
CLUSTER_DIR=${PGR_CLUSTER_DIR:-/tmp/pgrouter-$MANAGER-cluster}
if [[ $MANAGER == repmgr ]]; then BASE_PORT=${PGR_BASE_PORT:-25432}; else BASE_PORT=${PGR_BASE_PORT:-26432}; fi
[[ $CLUSTER_DIR == /* && $CLUSTER_DIR != / ]] || die "PGR_CLUSTER_DIR must be an absolute path"
[[ $BASE_PORT =~ ^[0-9]+$ ]] || die "PGR_BASE_PORT must be a number"
NODES=(pg0 pg1 pg2)
SCOPE=pgrouter-test

rest_port() { echo $((BASE_PORT + 10 + $(node_index "$1"))); }
etcd_client_port() { echo $((BASE_PORT + 20)); }
etcd_peer_port() { echo $((BASE_PORT + 21)); }
pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2 i
  shift 2
  for ((i = 0; i < limit * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "timed out after ${limit}s waiting for $what"
}

node_in_recovery() { # NODE -> t | f (fails when the node does not answer)
  as_pg "$PG_BIN/psql" -X -At -h "$(node_dir "$1")" -p "$(node_port "$1")" -U postgres -d postgres \
    -c 'select pg_is_in_recovery()' 2>/dev/null
}

standbys_streaming() { # PRIMARY -> true when both other nodes stream from it
  local n
  n=$(as_pg "$PG_BIN/psql" -X -At -h "$(node_dir "$1")" -p "$(node_port "$1")" -U postgres \
    -d postgres -c "select count(*) from pg_stat_replication where state = 'streaming'" 2>/dev/null) || return 1
  [[ $n == 2 ]]
}

# Roles and databases, as dev-cluster.sh makes them, plus the repmgr role for repmgr.
ROLES_SQL="SET password_encryption = 'scram-sha-256';
CREATE ROLE app LOGIN PASSWORD 'app';
DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator') THEN
  CREATE ROLE replicator REPLICATION LOGIN PASSWORD 'replicator'; END IF; END\$\$;
SET password_encryption = 'md5';
CREATE ROLE legacy LOGIN PASSWORD 'legacy';
RESET password_encryption;
CREATE DATABASE app OWNER app;
\\connect app
GRANT ALL ON SCHEMA public TO app, legacy;
GRANT app TO legacy;
GRANT pg_monitor TO app;"

HBA_LINES="local all all trust
local replication all trust
host replication replicator 127.0.0.1/32 scram-sha-256
host replication repmgr 127.0.0.1/32 trust
host repmgr repmgr 127.0.0.1/32 trust
host all legacy 127.0.0.1/32 md5
host all all 127.0.0.1/32 scram-sha-256"

# ------------------------------------------------------------------ repmgr

repmgr_conf() { echo "$(node_dir "$1")/repmgr.conf"; }

write_repmgr_conf() { # NODE
  local node=$1 id conf
  id=$(($(node_index "$node") + 1))
  conf=$(repmgr_conf "$node")
  cat <<EOF | as_pg tee "$conf" >/dev/null
node_id=$id
node_name='$node'
conninfo='host=127.0.0.1 port=$(node_port "$node") user=repmgr dbname=repmgr connect_timeout=2'
data_directory='$(node_data "$node")'
pg_bindir='$PG_BIN'
use_replication_slots=no
failover='automatic'
priority=100
promote_command='$PG_BIN/repmgr standby promote -f $conf --log-to-file'
follow_command='$PG_BIN/repmgr standby follow -f $conf --log-to-file --upstream-node-id=%n'
reconnect_attempts=3
reconnect_interval=1
monitor_interval_secs=1
standby_disconnect_on_failover=false
log_file='$(node_dir "$node")/repmgrd.log'
repmgrd_pid_file='$(node_dir "$node")/repmgrd.pid'
service_start_command='$PG_BIN/pg_ctl -D $(node_data "$node") -l $(node_log "$node") -w start'
service_stop_command='$PG_BIN/pg_ctl -D $(node_data "$node") -m fast -w stop'
service_restart_command='$PG_BIN/pg_ctl -D $(node_data "$node") -l $(node_log "$node") -m fast -w restart'
service_promote_command='$PG_BIN/pg_ctl -D $(node_data "$node") -w promote'
EOF
}

repmgr_up() {
  local node data
  make_node_dir pg0
  data=$(node_data pg0)
  as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --no-locale --data-checksums >"$(node_dir pg0)/initdb.log" 2>&1 || die "initdb failed"
  cat <<EOF | as_pg tee -a "$data/postgresql.conf" >/dev/null
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 10
hot_standby = on
wal_keep_size = '256MB'
shared_buffers = '32MB'
max_connections = 100
shared_preload_libraries = 'repmgr'
wal_log_hints = on
include_if_exists = 'pgrouter-node.conf'
EOF
  printf '%s\n' "$HBA_LINES" | as_pg tee "$data/pg_hba.conf" >/dev/null
  write_node_conf pg0
  start_node pg0
  node_psql pg0 -d postgres -q <<<"$ROLES_SQL
\\connect postgres
CREATE ROLE repmgr SUPERUSER REPLICATION LOGIN;
CREATE DATABASE repmgr OWNER repmgr;" >/dev/null
  for node in "${NODES[@]}"; do
    make_node_dir "$node"
    write_repmgr_conf "$node"
  done
  as_pg "$PG_BIN/repmgr" -f "$(repmgr_conf pg0)" primary register >>"$(node_dir pg0)/repmgr.log" 2>&1 ||
    die "repmgr primary register failed (see $(node_dir pg0)/repmgr.log)"
  node_psql pg0 -d repmgr -q -c "GRANT USAGE ON SCHEMA repmgr TO app; GRANT SELECT ON ALL TABLES IN SCHEMA repmgr TO app" >/dev/null
  for node in pg1 pg2; do
    as_pg "$PG_BIN/repmgr" -h 127.0.0.1 -p "$(node_port pg0)" -U repmgr -d repmgr \
      -f "$(repmgr_conf "$node")" standby clone --fast-checkpoint >>"$(node_dir "$node")/repmgr.log" 2>&1 ||
      die "repmgr standby clone $node failed (see $(node_dir "$node")/repmgr.log)"
    write_node_conf "$node"
    start_node "$node"
    as_pg "$PG_BIN/repmgr" -f "$(repmgr_conf "$node")" standby register --wait-sync=30 \
      >>"$(node_dir "$node")/repmgr.log" 2>&1 || die "repmgr standby register $node failed"
  done
  wait_for 60 "both standbys to stream" standbys_streaming pg0
  # Synchronous only now: the commits above had no standby to wait for. Every node gets it, so
  # a promoted standby stays synchronous too.
  for node in "${NODES[@]}"; do
    echo "synchronous_standby_names = 'ANY 1 (pg0, pg1, pg2)'" |
      as_pg tee -a "$(node_data "$node")/pgrouter-node.conf" >/dev/null
    node_psql "$node" -d postgres -c 'select pg_reload_conf()' >/dev/null
  done
  for node in "${NODES[@]}"; do start_repmgrd "$node"; done
}

start_repmgrd() { # NODE
  pid_alive "$(node_dir "$1")/repmgrd.pid" && return 0
  as_pg "$PG_BIN/repmgrd" -f "$(repmgr_conf "$1")" >>"$(node_dir "$1")/repmgrd.out" 2>&1 ||
    die "repmgrd on $1 did not start"
  wait_for 10 "repmgrd on $1" pid_alive "$(node_dir "$1")/repmgrd.pid"
}

# ------------------------------------------------------------------ Patroni

patroni_conf() { echo "$(node_dir "$1")/patroni.yml"; }
patroni_pid() { echo "$(node_dir "$1")/patroni.pid"; }

rest_tls_conf() { # restapi TLS lines (and patronictl's), when 'up' was given certificates
  local dir
  dir=$(rest_tls_dir)
  [[ -d $dir ]] || return 0
  printf '%s\n' "  certfile: $dir/server.crt" "  keyfile: $dir/server.key" \
    "  cafile: $dir/ca.crt" "  verify_client: required" \
    "ctl:" "  certfile: $dir/client.crt" "  keyfile: $dir/client.key" "  cacert: $dir/ca.crt"
}

write_patroni_conf() { # NODE
  local node=$1 hba="" line
  while IFS= read -r line; do hba+="    - $line"$'\n'; done <<<"$HBA_LINES"
  cat <<EOF | as_pg tee "$(patroni_conf "$node")" >/dev/null
scope: $SCOPE
name: $node
log:
  level: INFO
restapi:
  listen: 127.0.0.1:$(rest_port "$node")
  connect_address: 127.0.0.1:$(rest_port "$node")
$(rest_tls_conf)
etcd3:
  hosts: 127.0.0.1:$(etcd_client_port)
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    primary_start_timeout: 0
    maximum_lag_on_failover: 104857600
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_level: replica
        hot_standby: 'on'
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 256MB
        wal_log_hints: 'on'
        max_connections: 100
  initdb:
    - encoding: UTF8
    - no-locale
    - data-checksums
  post_bootstrap: $CLUSTER_DIR/post_bootstrap.sh
postgresql:
  listen: 127.0.0.1:$(node_port "$node")
  connect_address: 127.0.0.1:$(node_port "$node")
  data_dir: $(node_data "$node")
  bin_dir: $PG_BIN
  pgpass: $(node_dir "$node")/pgpass
  use_unix_socket: true
  basebackup:
    - checkpoint: fast
  authentication:
    superuser: {username: postgres, password: postgres}
    replication: {username: replicator, password: replicator}
    rewind: {username: postgres, password: postgres}
  parameters:
    unix_socket_directories: '$(node_dir "$node")'
    shared_buffers: 32MB
    password_encryption: scram-sha-256
  pg_hba:
$hba
EOF
}

start_etcd() {
  local dir=$CLUSTER_DIR/etcd
  pid_alive "$dir/etcd.pid" && return 0
  as_pg mkdir -p "$dir"
  local peer client
  peer="http://127.0.0.1:$(etcd_peer_port)"
  client="http://127.0.0.1:$(etcd_client_port)"
  # shellcheck disable=SC2016 # expanded by the inner shell
  as_pg bash -c 'nohup "$@" >>"'"$dir"'/etcd.log" 2>&1 & echo $! >"'"$dir"'/etcd.pid"' _ \
    etcd --name e0 --data-dir "$dir/data" --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" --initial-cluster "e0=$peer"
  wait_for 20 "etcd" curl -sf "$client/health"
}

start_patroni() { # NODE
  pid_alive "$(patroni_pid "$1")" && return 0
  # shellcheck disable=SC2016 # expanded by the inner shell
  as_pg bash -c 'nohup patroni "$1" >>"$2" 2>&1 & echo $! >"$3"' _ \
    "$(patroni_conf "$1")" "$(node_dir "$1")/patroni.log" "$(patroni_pid "$1")"
}

# Patroni's REST API over https with a client certificate once 'up' stored them here.
rest_tls_dir() { echo "$CLUSTER_DIR/restapi-tls"; }
rest_url() { # NODE -> the API's base URL
  local scheme=http
  [[ -d $(rest_tls_dir) ]] && scheme=https
  echo "$scheme://127.0.0.1:$(rest_port "$1")"
}
rest_get() { # NODE PATH
  local tls=() dir
  dir=$(rest_tls_dir)
  [[ -d $dir ]] && tls=(--cacert "$dir/ca.crt" --cert "$dir/client.crt" --key "$dir/client.key")
  curl -sf "${tls[@]}" "$(rest_url "$1")$2"
}

rest_role() { # NODE -> the role in GET /patroni, or fails
  rest_get "$1" /patroni | python3 -c 'import json,sys; print(json.load(sys.stdin)["role"])'
}

patroni_is_leader() { [[ $(rest_role "$1") =~ ^(master|primary)$ ]]; }

has_sync_standby() { # true once Patroni named a synchronous standby (failover needs one)
  rest_get pg0 /cluster |
    python3 -c 'import json,sys; sys.exit(0 if any(m.get("role") == "sync_standby" for m in json.load(sys.stdin)["members"]) else 1)'
}

patroni_up() {
  local node file
  if [[ -n ${PGR_PATRONI_TLS_DIR:-} ]]; then
    as_pg mkdir -p "$(rest_tls_dir)"
    for file in server.crt server.key ca.crt client.crt client.key; do
      [[ -r $PGR_PATRONI_TLS_DIR/$file ]] || die "PGR_PATRONI_TLS_DIR: $PGR_PATRONI_TLS_DIR/$file is missing"
      as_pg tee "$(rest_tls_dir)/$file" <"$PGR_PATRONI_TLS_DIR/$file" >/dev/null
    done
    as_pg chmod 600 "$(rest_tls_dir)/server.key" "$(rest_tls_dir)/client.key"
  fi
  start_etcd
  # shellcheck disable=SC2016 # "$1" belongs to the generated script
  printf '#!/bin/sh\nset -e\npsql -X -q "$1" <<'"'"'SQL'"'"'\n%s\nSQL\n' "$ROLES_SQL" |
    as_pg tee "$CLUSTER_DIR/post_bootstrap.sh" >/dev/null
  chmod 755 "$CLUSTER_DIR/post_bootstrap.sh"
  for node in "${NODES[@]}"; do
    make_node_dir "$node"
    write_patroni_conf "$node"
  done
  start_patroni pg0
  wait_for 60 "pg0 to lead" patroni_is_leader pg0
  start_patroni pg1
  start_patroni pg2
  wait_for 90 "both standbys to stream" standbys_streaming pg0
  wait_for 30 "Patroni to name a synchronous standby" has_sync_standby
}

# ------------------------------------------------------------------ commands

kill_pidfile() { # FILE SIGNAL
  if pid_alive "$1"; then kill "-$2" "$(cat "$1")" 2>/dev/null || true; fi
}

postmaster_pid() { head -n 1 "$(node_data "$1")/postmaster.pid" 2>/dev/null; }

cmd_ha_node() { # ACTION NODE
  local action=$1 node=$2
  node_index "$node" >/dev/null
  case $MANAGER/$action in
    repmgr/kill) stop_node "$node" immediate ;;
    repmgr/stop) stop_node "$node" fast ;;
    repmgr/start) start_node "$node" ;;
    patroni/kill)
      local pid
      pid=$(postmaster_pid "$node") || die "$node is not running"
      kill -KILL "$pid"
      ;;
    patroni/stop)
      kill_pidfile "$(patroni_pid "$node")" TERM
      wait_for 30 "Patroni on $node to stop" bash -c "! kill -0 \$(cat '$(patroni_pid "$node")') 2>/dev/null"
      ;;
    patroni/start) start_patroni "$node" ;;
  esac
}

cmd_ha_sync_standby() {
  [[ $MANAGER == patroni ]] || die "sync-standby is for Patroni"
  rest_get pg0 /cluster |
    python3 -c 'import json,sys; print(next(m["name"] for m in json.load(sys.stdin)["members"] if m.get("role") == "sync_standby"))'
}

cmd_ha_switchover() { # NODE
  local node=$1 old other
  node_index "$node" >/dev/null
  old=$(cmd_ha_primary)
  [[ $old != "$node" ]] || die "$node is already the primary"
  case $MANAGER in
    patroni)
      as_pg patronictl -c "$(patroni_conf "$node")" switchover --leader "$old" --candidate "$node" --force \
        >>"$(node_dir "$node")/patronictl.log" 2>&1 || die "patronictl switchover failed (see $(node_dir "$node")/patronictl.log)"
      wait_for 60 "$node to lead" patroni_is_leader "$node"
      ;;
    repmgr)
      local repmgr=$PG_BIN/repmgr id
      id=$(($(node_index "$node") + 1))
      # A node that is down cannot be paused; the others are (repmgr then exits non-zero).
      as_pg "$repmgr" -f "$(repmgr_conf "$old")" service pause >>"$(node_dir "$old")/repmgr.log" 2>&1 ||
        log "repmgr service pause did not reach every node"
      stop_node "$old" fast
      as_pg "$repmgr" -f "$(repmgr_conf "$node")" standby promote >>"$(node_dir "$node")/repmgr.log" 2>&1 ||
        die "repmgr standby promote $node failed (see $(node_dir "$node")/repmgr.log)"
      for other in "${NODES[@]}"; do
        [[ $other == "$old" || $other == "$node" ]] && continue
        node_in_recovery "$other" >/dev/null 2>&1 || continue # not running
        as_pg "$repmgr" -f "$(repmgr_conf "$other")" standby follow --upstream-node-id="$id" \
          >>"$(node_dir "$other")/repmgr.log" 2>&1 || die "repmgr standby follow on $other failed"
      done
      # pg_rewind copies the source's files; the node's own port and socket directory stay.
      as_pg mkdir -p "$(node_dir "$old")/config-archive"
      as_pg "$repmgr" -f "$(repmgr_conf "$old")" node rejoin --force-rewind \
        --config-files=pgrouter-node.conf --config-archive-dir="$(node_dir "$old")/config-archive" \
        -d "host=127.0.0.1 port=$(node_port "$node") user=repmgr dbname=repmgr" \
        >>"$(node_dir "$old")/repmgr.log" 2>&1 || die "repmgr node rejoin $old failed (see $(node_dir "$old")/repmgr.log)"
      as_pg "$repmgr" -f "$(repmgr_conf "$node")" service unpause >>"$(node_dir "$node")/repmgr.log" 2>&1 ||
        log "repmgr service unpause did not reach every node"
      ;;
  esac
}

cmd_ha_status() {
  local node state role extra
  for node in "${NODES[@]}"; do
    role=$(node_in_recovery "$node") && state=running || state=stopped
    case $role in t) role=standby ;; f) role=primary ;; *) role=- ;; esac
    extra=""
    [[ $MANAGER == patroni ]] && extra=$(rest_url "$node")
    printf '%-4s %-6s %-8s %-8s %s\n' "$node" "$(node_port "$node")" "$state" "$role" "$extra"
  done
}

cmd_ha_primary() {
  local node
  for node in "${NODES[@]}"; do
    if [[ $(node_in_recovery "$node") == f ]]; then
      echo "$node"
      return 0
    fi
  done
  die "no node is out of recovery"
}

cmd_ha_destroy() {
  local node pidfile
  for pidfile in "$CLUSTER_DIR"/pg?/repmgrd.pid "$CLUSTER_DIR"/pg?/patroni.pid; do
    [[ -f $pidfile ]] && kill_pidfile "$pidfile" KILL
  done
  for node in "${NODES[@]}"; do
    [[ -f $(node_data "$node")/postmaster.pid ]] || continue
    as_pg "$PG_BIN/pg_ctl" -D "$(node_data "$node")" -m immediate -w stop >/dev/null 2>&1 || true
  done
  [[ -f $CLUSTER_DIR/etcd/etcd.pid ]] && kill_pidfile "$CLUSTER_DIR/etcd/etcd.pid" KILL
  # Anything left that was started from the cluster directory (a restarted postmaster, a repmgr
  # follow in progress).
  pkill -KILL -f -- "$CLUSTER_DIR/" 2>/dev/null || true
  local i
  for ((i = 0; i < 50; i++)); do
    pgrep -f -- "$CLUSTER_DIR/" >/dev/null || break
    sleep 0.1
  done
  rm -rf -- "$CLUSTER_DIR"
}

cmd_ha_deps() {
  cmd_deps
  local major pkgs=""
  major=$(pg_major_of_bin "$PG_BIN")
  if [[ $MANAGER == repmgr ]]; then
    [[ -x $PG_BIN/repmgr ]] || pkgs="postgresql-$major-repmgr"
  else
    command -v patroni >/dev/null || pkgs="patroni"
    command -v etcd >/dev/null || pkgs+=" etcd-server"
    command -v curl >/dev/null || pkgs+=" curl"
  fi
  if [[ -n ${pkgs// /} ]]; then
    is_root || die "install $pkgs (apt-get) first"
    log "installing $pkgs with apt-get"
    apt-get update -qq
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive apt-get install -y $pkgs >/dev/null
  fi
}

find_pg_bin
case $CMD in
  deps) cmd_ha_deps ;;
  up)
    [[ -n $PG_BIN ]] || die "$PG_BIN_PROBLEM"
    [[ ! -e $CLUSTER_DIR ]] || die "$CLUSTER_DIR exists: run '$HA_PROG $MANAGER destroy' first"
    ensure_os_user
    as_pg true 2>/dev/null || true
    mkdir -p "$CLUSTER_DIR"
    is_root && chown "$PG_OS_USER" "$CLUSTER_DIR"
    "${MANAGER}_up"
    log "$MANAGER cluster ready: primary pg0 on 127.0.0.1:$BASE_PORT"
    ;;
  status) cmd_ha_status ;;
  primary) cmd_ha_primary ;;
  sync-standby) cmd_ha_sync_standby ;;
  kill | stop | start)
    [[ -n ${1:-} ]] || die "$CMD needs a node name"
    cmd_ha_node "$CMD" "$1"
    ;;
  switchover)
    [[ -n ${1:-} ]] || die "switchover needs the name of the new primary"
    cmd_ha_switchover "$1"
    ;;
  destroy) cmd_ha_destroy ;;
  *) die "unknown command '$CMD' (see $HA_PROG --help)" ;;
esac
