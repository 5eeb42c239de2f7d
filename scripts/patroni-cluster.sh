#!/usr/bin/env bash
# patroni-cluster.sh: a 3-node PostgreSQL cluster managed by Patroni, with a single-node etcd as
# its DCS, on loopback, for pgrouter's HA tests. Run with --help for usage.
set -euo pipefail
umask 022

HA_MANAGER=patroni
HA_DEFAULT_BASE_PORT=26432
HA_NODE_DAEMON=patroni
# shellcheck source=scripts/lib/ha-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/ha-common.sh"

# Patroni and etcd read their settings from PATRONI_* / ETCD_* variables too: not from ours.
for _v in ${!PATRONI_@} ${!ETCD_@}; do unset "$_v"; done
unset _v

SCOPE=pgrouter-test
REWIND_PASSWORD=${PGR_REWIND_PASSWORD:-rewinder}
case ${PGR_PATRONI_SYNC_STRICT:-0} in
  1 | true | on) SYNC_STRICT=true ;;
  *) SYNC_STRICT=false ;;
esac

mgr_usage() {
  cat <<EOF
  PGR_REWIND_PASSWORD  password of the pg_rewind role 'rewinder' (default rewinder)
  PGR_PATRONI_SYNC_STRICT=1  synchronous_mode_strict: a primary without a synchronous
                       standby blocks commits instead of acknowledging them unreplicated


Patroni: scope $SCOPE; REST API of pgN on 127.0.0.1:BASE+10+N; etcd (v3 API) clients on
127.0.0.1:BASE+20, peers on BASE+21. ttl 10, loop_wait 2, retry_timeout 4,
primary_start_timeout 0 (a crashed primary fails over instead of being restarted in place),
synchronous_mode on, use_pg_rewind on. kill = SIGKILL of the postmaster (Patroni keeps running,
fails over, then brings the node back as a replica with pg_rewind); stop = stop the node's Patroni
(it stops PostgreSQL; a leader hands over first); start = start the node's Patroni again.
EOF
}

mgr_commands_help() { :; }
mgr_command() { return 1; }

rest_port() { echo $((BASE_PORT + 10 + $(node_index "$1"))); }
rest_url() { printf 'http://127.0.0.1:%s\n' "$(rest_port "$1")"; }
etcd_client_port() { echo $((BASE_PORT + 20)); }
etcd_peer_port() { echo $((BASE_PORT + 21)); }
etcd_url() { printf 'http://127.0.0.1:%s\n' "$(etcd_client_port)"; }
etcd_dir() { printf '%s\n' "$CLUSTER_DIR/etcd"; }
patroni_conf() { printf '%s\n' "$(node_dir "$1")/patroni.yml"; }
patroni_pidfile() { printf '%s\n' "$(node_dir "$1")/patroni.pid"; }

PATRONI_BIN=$(command -v patroni 2>/dev/null) || PATRONI_BIN=""
ETCD_BIN=$(command -v etcd 2>/dev/null) || ETCD_BIN=""
# Patroni's own interpreter (its #! line) has everything the REST queries below need.
PY=(python3)
if [[ -n $PATRONI_BIN ]] && read -r _line <"$PATRONI_BIN" && [[ $_line == '#!'* ]]; then
  read -ra PY <<<"${_line#'#!'}"
fi
unset _line

mgr_packages() {
  [[ -n $PATRONI_BIN ]] || echo patroni
  [[ -n $ETCD_BIN ]] || echo etcd-server
}

mgr_require() {
  [[ -n $PATRONI_BIN ]] || PATRONI_BIN=$(command -v patroni 2>/dev/null) || die "patroni is not installed (run '$PROG deps')"
  [[ -n $ETCD_BIN ]] || ETCD_BIN=$(command -v etcd 2>/dev/null) || die "etcd is not installed (run '$PROG deps')"
}

mgr_ports() {
  local node
  for node in "${HA_NODES[@]}"; do rest_port "$node"; done
  etcd_client_port
  etcd_peer_port
}

# GETs URL (a JSON document; Patroni answers some checks with 503 and a body) and prints the
# Python expression EXPR evaluated over it as d, one line per item if it is a list.
rest_query() { # URL EXPR
  "${PY[@]}" - "$1" "$2" <<'PY'
import json, sys, urllib.error, urllib.request
try:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
            d = json.load(r)
    except urllib.error.HTTPError as e:
        d = json.load(e)
except Exception:
    sys.exit(1)
v = eval(sys.argv[2], {"d": d})
for line in (v if isinstance(v, list) else [v]):
    print(line)
PY
}

etcd_healthy() { [[ $(rest_query "$(etcd_url)/health" 'd.get("health")') == true ]]; }

# "role state" of one member, from its own REST API (3.0.2 calls the leader "master").
member_state() { # NODE
  rest_query "$(rest_url "$1")/patroni" 'd.get("role", "-") + " " + d.get("state", "-")'
}

member_running() { [[ $(member_state "$1") == *\ running ]]; }
member_leads() { [[ $(member_state "$1") =~ ^(master|primary)\ running$ ]]; }

# True when GET /cluster (asked of NODE) lists all three members running, one leader (LEADER,
# if given), one synchronous standby, and the leader's PostgreSQL sees both others streaming.
cluster_healthy() { # NODE [LEADER]
  local members leader
  members=$(rest_query "$(rest_url "$1")/cluster" '[m["name"] + " " + m["role"] + " " + m["state"] for m in d["members"]]') ||
    return 1
  [[ $(grep -c ' running$' <<<"$members") == "${#HA_NODES[@]}" ]] || return 1
  [[ $(grep -c ' sync_standby ' <<<"$members") == 1 ]] || return 1
  leader=$(awk '$2 == "leader" { print $1 }' <<<"$members")
  [[ -n $leader && (-z ${2:-} || $leader == "$2") ]] || return 1
  [[ $(node_query "$leader" postgres "select count(*) from pg_stat_replication where state = 'streaming'") == 2 ]]
}

yaml_quote() { # single-quoted YAML scalar
  local q="''"
  printf "'%s'" "${1//\'/$q}"
}

write_patroni_conf() { # NODE
  local node=$1 name value line
  {
    cat <<EOF
# written by patroni-cluster.sh for $node
scope: $SCOPE
name: $node
log:
  level: INFO
restapi:
  listen: 127.0.0.1:$(rest_port "$node")
  connect_address: 127.0.0.1:$(rest_port "$node")
etcd3:
  hosts: 127.0.0.1:$(etcd_client_port)
watchdog:
  mode: 'off'
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    primary_start_timeout: 0
    maximum_lag_on_failover: 1073741824
    synchronous_mode: true
    synchronous_mode_strict: $SYNC_STRICT
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
EOF
    while read -r name value; do echo "        $name: $(yaml_quote "$value")"; done < <(ha_pg_settings)
    cat <<EOF
  initdb:
    - encoding: UTF8
    - no-locale
    - auth-local: trust
    - auth-host: scram-sha-256
  post_bootstrap: $(node_dir "$node")/post-bootstrap.sh
postgresql:
  listen: 127.0.0.1:$(node_port "$node")
  connect_address: 127.0.0.1:$(node_port "$node")
  data_dir: $(node_data "$node")
  bin_dir: $PG_BIN
  pgpass: $(node_dir "$node")/pgpass
  use_unix_socket: true
  authentication:
    superuser:
      username: postgres
    replication:
      username: replicator
      password: $(yaml_quote "$REPLICATOR_PASSWORD")
    rewind:
      username: rewinder
      password: $(yaml_quote "$REWIND_PASSWORD")
  basebackup:
    - checkpoint: fast
  parameters:
    unix_socket_directories: $(yaml_quote "$(node_dir "$node")")
    logging_collector: 'on'
    log_directory: $(yaml_quote "$(node_dir "$node")")
    log_filename: postgres.log
    log_file_mode: '0640'
  pg_hba:
EOF
    while read -r line; do echo "    - $line"; done < <(ha_hba_lines)
  } | write_private_file "$(patroni_conf "$node")"
}

# Patroni runs it once, on the node that bootstraps the cluster, with a superuser conninfo.
write_post_bootstrap() { # NODE
  write_private_file "$(node_dir "$1")/post-bootstrap.sh" <<EOF
#!/bin/sh
# written by patroni-cluster.sh: the roles and database of the test cluster
exec "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "\$1" -f "$CLUSTER_DIR/roles.sql"
EOF
  as_pg chmod 0700 "$(node_dir "$1")/post-bootstrap.sh"
}

start_etcd() {
  local dir peer client
  dir=$(etcd_dir)
  daemon_running "$dir/etcd.pid" && return 0
  as_pg mkdir -p "$dir"
  peer="http://127.0.0.1:$(etcd_peer_port)"
  client=$(etcd_url)
  start_daemon "$dir/etcd.pid" "$dir/etcd.log" "$dir" "$ETCD_BIN" --name pgrouter \
    --data-dir "$dir/data" --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "pgrouter=$peer" --initial-cluster-state new \
    --initial-cluster-token "pgrouter-$BASE_PORT" --logger zap --log-outputs stderr
  if ! poll_until 30 etcd_healthy; then
    tail -n 20 "$dir/etcd.log" >&2
    die "etcd did not become healthy on $client"
  fi
}

start_patroni() { # NODE
  local dir
  dir=$(node_dir "$1")
  start_daemon "$(patroni_pidfile "$1")" "$dir/patroni.log" "$dir" "$PATRONI_BIN" "$(patroni_conf "$1")"
}

patroni_log_tail() { # NODE
  printf -- '--- last lines of %s ---\n' "$(node_dir "$1")/patroni.log" >&2
  tail -n 25 "$(node_dir "$1")/patroni.log" >&2 || true
  show_log_tail "$1"
}

wait_member() { # NODE TEST WHAT
  if ! poll_until "$HA_TIMEOUT" "$2" "$1"; then
    patroni_log_tail "$1"
    die "timed out after ${HA_TIMEOUT}s waiting for $3"
  fi
}

wait_cluster_healthy() { # [LEADER]
  local want=${1:-}
  log "waiting for 3 running members${want:+ with $want leading}, a synchronous standby and 2 streaming replicas"
  if ! poll_until "$HA_TIMEOUT" cluster_healthy "${HA_NODES[0]}" "$want" &&
    ! poll_until 1 cluster_healthy "${HA_NODES[1]}" "$want"; then
    local node
    for node in "${HA_NODES[@]}"; do patroni_log_tail "$node"; done
    die "timed out after ${HA_TIMEOUT}s waiting for the Patroni cluster to be healthy"
  fi
}

mgr_create() {
  local node
  start_etcd
  write_roles_sql "$CLUSTER_DIR/roles.sql"
  for node in "${HA_NODES[@]}"; do
    make_node_dir "$node"
    write_patroni_conf "$node"
    write_post_bootstrap "$node"
  done
  log "starting Patroni on pg0 (bootstrap)"
  start_patroni pg0
  wait_member pg0 member_leads "pg0 to bootstrap and lead"
  log "starting Patroni on pg1 and pg2"
  start_patroni pg1
  start_patroni pg2
  wait_cluster_healthy pg0
}

mgr_start_existing() {
  local node
  start_etcd
  for node in "${HA_NODES[@]}"; do start_patroni "$node"; done
  wait_cluster_healthy
}

mgr_stop_all() {
  local node primary
  local -a replicas=()
  primary=$(current_primary 2>/dev/null) || primary=""
  for node in "${HA_NODES[@]}"; do
    [[ $node == "$primary" ]] || replicas+=("$(patroni_pidfile "$node")")
  done
  # Replicas first, so that the leader does not hand over to one of them on its way out.
  stop_daemons 60 "${replicas[@]}"
  [[ -z $primary ]] || stop_daemons 60 "$(patroni_pidfile "$primary")"
  stop_all fast || die "some nodes failed to stop"
  stop_daemons 10 "$(etcd_dir)/etcd.pid"
}

mgr_node() { # ACTION NODE
  local action=$1 node=$2
  case $action in
    kill)
      local pid
      node_running "$node" || die "$node's PostgreSQL is not running"
      pid=$(node_pid "$node") || die "$node has no postmaster.pid"
      log "killing the postmaster of $node (pid $pid) with SIGKILL"
      kill -KILL "$pid"
      ;;
    stop)
      log "stopping Patroni (and PostgreSQL) on $node"
      stop_daemons 60 "$(patroni_pidfile "$node")"
      if node_running "$node"; then stop_node "$node" fast; fi
      ;;
    start)
      daemon_running "$(etcd_dir)/etcd.pid" || start_etcd
      if daemon_running "$(patroni_pidfile "$node")"; then
        log "Patroni on $node is already running"
      else
        log "starting Patroni on $node"
        start_patroni "$node"
      fi
      wait_member "$node" member_running "$node to be running"
      ;;
  esac
}

mgr_status_extra() { rest_url "$1"; }

mgr_env() {
  local node urls=""
  for node in "${HA_NODES[@]}"; do urls+="${urls:+,}$(rest_url "$node")"; done
  printf 'export PGR_PATRONI_URLS=%s\n' "$(shell_quote "$urls")"
  printf 'export PGR_PATRONI_SCOPE=%s\n' "$SCOPE"
  printf 'export PGR_ETCD_URL=%s\n' "$(shell_quote "$(etcd_url)")"
}

ha_main "$@"
