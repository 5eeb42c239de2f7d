#!/usr/bin/env bash
# repmgr-cluster.sh: a 3-node PostgreSQL cluster managed by repmgr (repmgrd on every node,
# automatic failover) on loopback, for pgrouter's HA tests. Run with --help for usage.
set -euo pipefail
umask 022

HA_MANAGER=repmgr
HA_DEFAULT_BASE_PORT=25432
HA_NODE_DAEMON=repmgrd
# shellcheck source=scripts/lib/ha-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/ha-common.sh"

REPMGR_PASSWORD=${PGR_REPMGR_PASSWORD:-repmgr}

mgr_usage() {
  cat <<EOF
  PGR_REPMGR_PASSWORD  password of the repmgr role (default repmgr)


repmgr: node ids 1-3 (pg0-pg2), priorities 100/90/80, metadata in database repmgr (role
repmgr, superuser, password in CLUSTER_DIR/pgpass); repmgrd on every node retries the primary 3
times 1 s apart, then promotes a standby; the other standby follows it. kill = pg_ctl stop -m
immediate, stop = -m fast (both leave repmgrd running, so stopping the primary fails over);
start = pg_ctl start: an old primary comes back as a primary on the old timeline (repmgr does
not fence it) until 'rejoin' makes it a standby of the current primary.
synchronous_standby_names = 'ANY 1 (*)' on every node.
EOF
}

mgr_commands_help() {
  echo "  rejoin NODE   make a stopped or crashed old primary a standby of the current primary (pg_rewind)"
}

repmgr_conf() { printf '%s\n' "$(node_dir "$1")/repmgr.conf"; }
pgpass_file() { printf '%s\n' "$CLUSTER_DIR/pgpass"; }

# repmgr and its daemons, the standbys' WAL receivers included, find passwords here.
export PGPASSFILE
PGPASSFILE=$(pgpass_file)

mgr_packages() {
  [[ -n $PG_BIN ]] || find_pg_bin
  [[ -n $PG_BIN ]] || return 0
  [[ -x $PG_BIN/repmgr && -x $PG_BIN/repmgrd ]] || echo "postgresql-$(pg_major_of_bin "$PG_BIN")-repmgr"
}

mgr_require() {
  [[ -x $PG_BIN/repmgr && -x $PG_BIN/repmgrd ]] ||
    die "repmgr for PostgreSQL $(pg_major_of_bin "$PG_BIN") is not installed in $PG_BIN (run '$PROG deps')"
}

mgr_ports() { :; }

# Runs repmgr as the PostgreSQL OS user for NODE, output appended to the node's repmgr.log.
repmgr_cmd() { # NODE ARGS...
  local node=$1
  shift
  if ! as_pg "$PG_BIN/repmgr" -f "$(repmgr_conf "$node")" "$@" >>"$(node_dir "$node")/repmgr.log" 2>&1; then
    tail -n 20 "$(node_dir "$node")/repmgr.log" >&2
    return 1
  fi
}

write_repmgr_conf() { # NODE
  local node=$1 i data log conf
  i=$(node_index "$node")
  data=$(node_data "$node")
  log=$(node_log "$node")
  conf=$(repmgr_conf "$node")
  as_pg tee "$conf" >/dev/null <<EOF
# written by repmgr-cluster.sh for $node
node_id=$((i + 1))
node_name='$node'
conninfo='host=127.0.0.1 port=$(node_port "$node") user=repmgr dbname=repmgr connect_timeout=2'
data_directory='$data'
pg_bindir='$PG_BIN'
replication_user='replicator'
passfile='$(pgpass_file)'
use_replication_slots=no
priority=$((100 - 10 * i))
failover='automatic'
promote_command='$PG_BIN/repmgr standby promote -f $conf --log-to-file'
follow_command='$PG_BIN/repmgr standby follow -f $conf --log-to-file --upstream-node-id=%n'
reconnect_attempts=3
reconnect_interval=1
monitor_interval_secs=1
log_level='INFO'
log_file='$(node_dir "$node")/repmgrd.log'
service_start_command='$PG_BIN/pg_ctl -D $data -l $log -w -t 60 start'
service_stop_command='$PG_BIN/pg_ctl -D $data -m fast -w -t 60 stop'
service_restart_command='$PG_BIN/pg_ctl -D $data -l $log -m fast -w -t 60 restart'
service_reload_command='$PG_BIN/pg_ctl -D $data reload'
EOF
}

start_repmgrd() { # NODE
  local dir
  dir=$(node_dir "$1")
  start_daemon "$dir/repmgrd.pid" "$dir/repmgrd.out" "$dir" \
    "$PG_BIN/repmgrd" -f "$(repmgr_conf "$1")" --daemonize=false --no-pid-file
}

# synchronous_standby_names on every node, so that a promoted standby is synchronous too.
enable_sync_replication() {
  local node
  for node in "${HA_NODES[@]}"; do
    printf '%s\n' "# written by repmgr-cluster.sh" "synchronous_standby_names = 'ANY 1 (*)'" |
      as_pg tee "$(node_data "$node")/pgrouter-sync.conf" >/dev/null
    node_query "$node" postgres 'select pg_reload_conf()' >/dev/null
  done
}

# "name:running:repmgrd" for every node repmgr knows, from 'repmgr service status --csv'
# (columns: id, name, type, postgres running, repmgrd running, pid, paused, priority, ...).
repmgr_service_status() { # NODE (where to ask)
  as_pg "$PG_BIN/repmgr" -f "$(repmgr_conf "$1")" service status --csv 2>/dev/null |
    awk -F, '{ print $2 ":" $4 ":" $5 }'
}

# True when repmgr sees all three nodes, PostgreSQL and repmgrd running on each, and
# 'repmgr cluster show' is clean.
repmgr_healthy() { # NODE (where to ask)
  local st
  st=$(repmgr_service_status "$1") || return 1
  [[ $(grep -c ':1:1$' <<<"$st") == "${#HA_NODES[@]}" ]] || return 1
  as_pg "$PG_BIN/repmgr" -f "$(repmgr_conf "$1")" cluster show >/dev/null 2>&1
}

init_repmgr_primary() {
  local node=pg0 data
  data=$(node_data "$node")
  make_node_dir "$node"
  if ! as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --no-locale >"$(node_dir "$node")/initdb.log" 2>&1; then
    tail -n 20 "$(node_dir "$node")/initdb.log" >&2
    die "initdb failed"
  fi
  {
    echo
    echo "# ---- pgrouter repmgr test cluster (repmgr-cluster.sh) ----"
    echo "listen_addresses = '127.0.0.1'"
    echo "shared_preload_libraries = 'repmgr'"
    local name value
    while read -r name value; do echo "$name = '$value'"; done < <(ha_pg_settings)
    echo "include_if_exists = 'pgrouter-node.conf'"
    echo "include_if_exists = 'pgrouter-sync.conf'"
  } | as_pg tee -a "$data/postgresql.conf" >/dev/null
  ha_hba_lines | as_pg tee "$data/pg_hba.conf" >/dev/null
  write_node_conf "$node"
  start_node "$node"
  write_roles_sql "$CLUSTER_DIR/roles.sql"
  node_psql "$node" -d postgres -f "$CLUSTER_DIR/roles.sql" >/dev/null
  # repmgr's own writes (metadata, events) must not wait for a synchronous standby: during a
  # failover the new primary updates them before the other standby follows it.
  node_psql "$node" -d postgres -v pw="$REPMGR_PASSWORD" >/dev/null <<'SQL'
SET password_encryption = 'scram-sha-256';
CREATE ROLE repmgr SUPERUSER LOGIN PASSWORD :'pw';
ALTER ROLE repmgr SET synchronous_commit = 'local';
CREATE DATABASE repmgr OWNER repmgr;
SQL
  repmgr_cmd "$node" primary register || die "repmgr primary register failed"
  # pgrouter's health checks log in as app and read repmgr.nodes / repmgr.show_nodes.
  node_psql "$node" -d repmgr >/dev/null <<'SQL'
GRANT USAGE ON SCHEMA repmgr TO app;
GRANT SELECT ON ALL TABLES IN SCHEMA repmgr TO app;
SQL
}

clone_standby() { # NODE
  local node=$1
  make_node_dir "$node"
  log "cloning $node from pg0"
  repmgr_cmd "$node" -h 127.0.0.1 -p "$(node_port pg0)" -U repmgr -d repmgr standby clone --fast-checkpoint ||
    die "repmgr standby clone $node failed"
  write_node_conf "$node"
  start_node "$node"
}

mgr_create() {
  local node
  printf '127.0.0.1:*:*:repmgr:%s\n127.0.0.1:*:*:replicator:%s\n' "$REPMGR_PASSWORD" "$REPLICATOR_PASSWORD" |
    write_private_file "$(pgpass_file)"
  for node in "${HA_NODES[@]}"; do
    make_node_dir "$node"
    write_repmgr_conf "$node"
  done
  init_repmgr_primary
  for node in pg1 pg2; do clone_standby "$node"; done
  for node in pg1 pg2; do
    repmgr_cmd "$node" standby register --wait-sync=30 || die "repmgr standby register $node failed"
  done
  wait_streaming_on_primary pg0 pg1 pg2
  # Synchronous only now: until the standbys streamed, commits had nobody to wait for.
  enable_sync_replication
  for node in "${HA_NODES[@]}"; do start_repmgrd "$node"; done
  wait_until "$HA_TIMEOUT" "repmgrd on every node and a clean 'repmgr cluster show'" repmgr_healthy pg0
}

mgr_start_existing() {
  local node primary
  for node in "${HA_NODES[@]}"; do
    node_running "$node" || start_node "$node"
  done
  primary=$(current_primary 2>/dev/null) || die "no node is a primary"
  # An old primary that was never rejoined comes up as a second primary: make it a standby.
  for node in "${HA_NODES[@]}"; do
    [[ $node != "$primary" && $(node_role "$node") == primary ]] && rejoin_node "$node"
  done
  for node in "${HA_NODES[@]}"; do start_repmgrd "$node"; done
  local -a standbys=()
  for node in "${HA_NODES[@]}"; do [[ $node == "$primary" ]] || standbys+=("$node"); done
  wait_streaming_on_primary "$primary" "${standbys[@]}"
  wait_until "$HA_TIMEOUT" "repmgrd on every node and a clean 'repmgr cluster show'" repmgr_healthy "$primary"
}

mgr_stop_all() {
  local node
  local -a pidfiles=()
  for node in "${HA_NODES[@]}"; do pidfiles+=("$(node_dir "$node")/repmgrd.pid"); done
  stop_daemons 10 "${pidfiles[@]}"
  stop_all fast || die "some nodes failed to stop"
}

mgr_node() { # ACTION NODE
  local action=$1 node=$2
  case $action in
    kill | stop)
      local mode=fast
      [[ $action == kill ]] && mode=immediate
      if node_running "$node"; then stop_node "$node" "$mode"; else log "$node is not running"; fi
      ;;
    start)
      if node_running "$node"; then log "$node is already running"; else start_node "$node"; fi
      start_repmgrd "$node"
      ;;
  esac
}

# Turns NODE (an old primary, or a standby of a dead primary) into a standby of the current
# primary: clean shutdown (single-user recovery if it crashed), repmgr node rejoin with pg_rewind.
rejoin_node() { # NODE
  local node=$1 primary data
  primary=$(current_primary 2>/dev/null) || die "no running primary to rejoin"
  [[ $primary != "$node" ]] || die "$node is the current primary"
  data=$(node_data "$node")
  if node_running "$node"; then stop_node "$node" fast; fi
  write_node_conf "$node" # in case an earlier, failed rewind replaced it
  if LC_ALL=C as_pg "$PG_BIN/pg_controldata" "$data" | grep -q '^Database cluster state: *in production'; then
    log "$node was not shut down cleanly; running crash recovery in single-user mode"
    as_pg "$PG_BIN/postgres" --single -D "$data" postgres </dev/null >>"$(node_log "$node")" 2>&1 ||
      die "single-user recovery of $node failed"
  fi
  # pg_rewind reads the source's timeline from its control file, which a promoted standby
  # updates only at its next checkpoint (a slow, spread one after promotion): force it now.
  node_query "$primary" postgres 'checkpoint' >/dev/null || die "checkpoint on $primary failed"
  log "rejoining $node to $primary"
  # pg_rewind copies the primary's configuration files: keep the node's own port and socket.
  repmgr_cmd "$node" node rejoin --force-rewind --config-files=pgrouter-node.conf \
    --config-archive-dir="$(node_dir "$node")" \
    -d "host=127.0.0.1 port=$(node_port "$primary") user=repmgr dbname=repmgr connect_timeout=2" ||
    die "repmgr node rejoin $node failed"
  wait_streaming_on_primary "$primary" "$node"
  start_repmgrd "$node"
}

mgr_command() { # CMD ARGS...
  case $1 in
    rejoin)
      (($# == 2)) || die "usage: $PROG rejoin NODE"
      require_pg_bin
      mgr_require
      have_marker || die "no $HA_MANAGER cluster in $CLUSTER_DIR"
      ha_lock
      ha_require_node "$2"
      rejoin_node "$2"
      ;;
    *) return 1 ;;
  esac
}

mgr_status_extra() { :; }

mgr_env() {
  local node confs=""
  for node in "${HA_NODES[@]}"; do confs+="${confs:+,}$(repmgr_conf "$node")"; done
  printf 'export PGR_REPMGR_CONFS=%s\n' "$(shell_quote "$confs")"
  printf 'export PGR_REPMGR_PASSFILE=%s\n' "$(shell_quote "$(pgpass_file)")"
}

ha_main "$@"
