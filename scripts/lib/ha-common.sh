# shellcheck shell=bash
# lib/ha-common.sh: what repmgr-cluster.sh and patroni-cluster.sh share. Sourced, never run.
#
# The sourcing script sets HA_MANAGER (repmgr | patroni), HA_DEFAULT_BASE_PORT and HA_NODE_DAEMON
# (the per-node manager process: repmgrd | patroni) before sourcing this file, then defines the
# manager hooks and calls ha_main "$@":
#   mgr_usage               manager-specific part of --help
#   mgr_packages            Debian packages the manager needs that are missing (one per line)
#   mgr_require             die unless the manager's programs are installed
#   mgr_ports               extra TCP ports the cluster listens on (one per line)
#   mgr_create              build and start a new cluster in the prepared CLUSTER_DIR
#   mgr_start_existing      start every part of an existing cluster and wait until it is healthy
#   mgr_stop_all            planned stop of everything (managers, PostgreSQL, helpers)
#   mgr_node ACTION NODE    kill | stop | start one node
#   mgr_status_extra NODE   extra status column (may print nothing)
#   mgr_env                 extra export lines
#   mgr_command CMD ARGS    manager-only commands; returns 1 if CMD is unknown
#   mgr_commands_help       help lines for those commands (may print nothing)
#
# Every process a cluster starts can be found again without trusting a pid file: the managers,
# etcd and whatever they spawn carry PGR_HA_TAG=<this cluster's tag> in their environment, and
# the PostgreSQL servers (which overwrite their environment for the process title) are postgres
# processes whose working directory is inside CLUSTER_DIR. destroy uses both.

[[ -n ${HA_MANAGER:-} && -n ${HA_DEFAULT_BASE_PORT:-} && -n ${HA_NODE_DAEMON:-} ]] || {
  echo "ha-common.sh: set HA_MANAGER, HA_DEFAULT_BASE_PORT and HA_NODE_DAEMON before sourcing it" >&2
  exit 1
}

# The PostgreSQL helpers (die, as_pg, find_pg_bin, node_psql, start_node, stop_node, stop_all,
# take_lock, ...) come from dev-cluster.sh, which only defines them when sourced.
# shellcheck source=scripts/dev-cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/../dev-cluster.sh"

# dev-cluster.sh's settings, as the HA clusters use them.
# shellcheck disable=SC2034 # MARKER, REPLICAS and STREAM_TIMEOUT are read by dev-cluster.sh
{
  MARKER=.pgrouter-ha-cluster
  REPLICAS=2
  STREAM_TIMEOUT=${PGR_HA_TIMEOUT:-90}
}
CLUSTER_DIR=${PGR_CLUSTER_DIR:-/tmp/pgrouter-$HA_MANAGER-cluster}
BASE_PORT=${PGR_BASE_PORT:-$HA_DEFAULT_BASE_PORT}
HA_NODES=(pg0 pg1 pg2)
HA_TIMEOUT=${PGR_HA_TIMEOUT:-90}
HA_TAG_VAR=PGR_HA_TAG
HA_TAG=""
HA_QUIET=0
HA_CREATING=0

# Progress messages; 'up' keeps quiet unless PGR_VERBOSE=1.
log() {
  ((HA_QUIET)) && return 0
  printf '%s: %s\n' "$PROG" "$*" >&2
}
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }

lock_file() { printf '%s\n' "$CLUSTER_DIR.lock"; }

# ---------------------------------------------------------------- settings

ha_validate() {
  validate_settings
  ((BASE_PORT + 21 <= 65535)) || die "PGR_BASE_PORT must leave room for BASE+21 (got $BASE_PORT)"
  [[ $HA_TIMEOUT =~ ^[0-9]+$ ]] || die "PGR_HA_TIMEOUT must be a number of seconds"
}

# An existing cluster keeps its base port, binaries and tag; it must be one of ours.
ha_load_settings() {
  have_marker || return 0
  local m
  m=$(marker_value manager)
  [[ $m == "$HA_MANAGER" ]] ||
    die "$CLUSTER_DIR holds a ${m:-unknown} cluster, not a $HA_MANAGER one (use its own script, or another PGR_CLUSTER_DIR)"
  load_cluster_settings
  HA_TAG=$(marker_value tag)
}

ha_complete() { have_marker && [[ -f $CLUSTER_DIR/.complete ]]; }

ha_require_tools() {
  require_pg_bin
  mgr_require
}

# Creates CLUSTER_DIR (owned by the PostgreSQL OS user) with its marker file and a fresh tag.
ha_prepare_dir() {
  if [[ -e $CLUSTER_DIR ]] && ! have_marker; then
    [[ -d $CLUSTER_DIR ]] || die "$CLUSTER_DIR exists and is not a directory"
    [[ -z $(ls -A "$CLUSTER_DIR") ]] ||
      die "$CLUSTER_DIR is not empty and has no $MARKER: not a pgrouter HA cluster, refusing to use it"
  fi
  check_dir_access
  mkdir -p "$CLUSTER_DIR"
  chmod 0755 "$CLUSTER_DIR"
  if is_root; then chown "$PG_OS_USER:" "$CLUSTER_DIR"; fi
  HA_TAG="$CLUSTER_DIR@$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')"
  {
    echo "# pgrouter $HA_MANAGER test cluster (scripts/$HA_MANAGER-cluster.sh); its 'destroy' deletes this directory"
    echo "manager=$HA_MANAGER"
    echo "base_port=$BASE_PORT"
    echo "pg_bin=$PG_BIN"
    echo "tag=$HA_TAG"
    echo "created=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } | as_pg tee "$CLUSTER_DIR/$MARKER" >/dev/null
}

# Quotes a string as an SQL literal.
sql_literal() {
  local q="''"
  printf "'%s'" "${1//\'/$q}"
}

# A private file (0600, owned by the PostgreSQL OS user) with the given content on stdin.
write_private_file() { # PATH
  # shellcheck disable=SC2016 # expanded by the inner shell
  as_pg bash -c 'umask 077 && cat >"$1"' _ "$1"
}

# The roles and the app database, as dev-cluster.sh makes them. 'replicator' may exist already
# (Patroni creates it). Runs as a superuser, outside a transaction.
write_roles_sql() { # FILE
  write_private_file "$1" <<EOF
SET password_encryption = 'scram-sha-256';
CREATE ROLE app LOGIN PASSWORD $(sql_literal "$APP_PASSWORD");
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator') AS need_replicator \\gset
\\if :need_replicator
CREATE ROLE replicator REPLICATION LOGIN PASSWORD $(sql_literal "$REPLICATOR_PASSWORD");
\\endif
SET password_encryption = 'md5';
CREATE ROLE legacy LOGIN PASSWORD $(sql_literal "$LEGACY_PASSWORD");
RESET password_encryption;
CREATE DATABASE app OWNER app;
\\connect app
GRANT ALL ON SCHEMA public TO app, legacy;
GRANT app TO legacy;
-- health checks log in as app: replication views and pg_is_in_recovery()
GRANT pg_monitor TO app;
GRANT EXECUTE ON FUNCTION pg_is_in_recovery() TO app;
EOF
}

# pg_hba.conf lines for both managers: superuser over the socket only, passwords over TCP.
ha_hba_lines() {
  printf '%s\n' \
    "local all all trust" \
    "local replication all trust" \
    "host replication replicator 127.0.0.1/32 scram-sha-256" \
    "host all legacy 127.0.0.1/32 md5" \
    "host all all 127.0.0.1/32 scram-sha-256"
}

# PostgreSQL settings shared by every node of both managers, as "name value" lines.
ha_pg_settings() {
  printf '%s\n' \
    "wal_level replica" \
    "hot_standby on" \
    "hot_standby_feedback on" \
    "wal_log_hints on" \
    "max_wal_senders 10" \
    "max_replication_slots 10" \
    "wal_keep_size 128MB" \
    "wal_retrieve_retry_interval 1s" \
    "max_connections $MAX_CONNECTIONS" \
    "shared_buffers 32MB" \
    "password_encryption scram-sha-256" \
    "synchronous_commit on" \
    "fsync $FSYNC"
}

# ---------------------------------------------------------------- processes

pidfile_pid() { # FILE -> the pid it holds
  local p=""
  [[ -r $1 ]] && read -r p <"$1" 2>/dev/null
  [[ $p =~ ^[0-9]+$ ]] && printf '%s\n' "$p"
}

# True if PID is alive and was started by this cluster (it carries the tag).
pid_is_ours() { # PID
  [[ -n $HA_TAG ]] || return 1
  grep -qzxF -- "$HA_TAG_VAR=$HA_TAG" "/proc/$1/environ" 2>/dev/null
}

daemon_running() { # PIDFILE
  local pid
  pid=$(pidfile_pid "$1") && pid_is_ours "$pid"
}

# Starts CMD as the PostgreSQL OS user, in WORKDIR, in a session of its own (so that it and its
# children form one process group), tagged, output appended to LOG, its pid in PIDFILE.
start_daemon() { # PIDFILE LOG WORKDIR CMD...
  local pidfile=$1 logfile=$2 dir=$3
  shift 3
  daemon_running "$pidfile" && return 0
  # shellcheck disable=SC2016 # expanded by the inner shell
  as_pg env "$HA_TAG_VAR=$HA_TAG" bash -c 'cd -- "$1" || exit 1
pidfile=$2 logfile=$3
shift 3
setsid "$@" </dev/null >>"$logfile" 2>&1 &
echo "$!" >"$pidfile"' _ "$dir" "$pidfile" "$logfile" "$@"
}

# Polls COMMAND every 0.2 s for up to SECONDS; fails if it never succeeded.
poll_until() { # SECONDS COMMAND...
  local deadline=$((SECONDS + $1))
  shift
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

wait_until() { # SECONDS WHAT COMMAND...
  local limit=$1 what=$2
  shift 2
  poll_until "$limit" "$@" || die "timed out after ${limit}s waiting for $what"
}

pid_gone() { ! pid_is_ours "$1"; }

pids_gone() { # PID...
  local pid
  for pid in "$@"; do pid_is_ours "$pid" && return 1; done
  return 0
}

# SIGTERM to the daemons (all at once); SIGKILL to the process group of any that is still there
# after SECONDS.
stop_daemons() { # SECONDS PIDFILE...
  local limit=$1 f pid
  shift
  local -a pids=()
  for f in "$@"; do
    pid=$(pidfile_pid "$f") || continue
    pid_is_ours "$pid" || continue
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  if ((${#pids[@]})) && ! poll_until "$limit" pids_gone "${pids[@]}"; then
    for f in "$@"; do
      pid=$(pidfile_pid "$f") || continue
      pid_is_ours "$pid" || continue
      warn "pid $pid ($f) ignored SIGTERM for $limit s; killing it"
      kill_daemon "$f"
    done
  fi
  rm -f -- "$@"
}

# SIGKILL to the daemon's process group (itself and any command it is running).
kill_daemon() { # PIDFILE
  local pid
  pid=$(pidfile_pid "$1") || return 0
  if pid_is_ours "$pid"; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    poll_until 5 pid_gone "$pid" || true
  fi
}

# Our own shell and its ancestors: never touched by the sweep below.
own_pids() {
  local pid=$BASHPID ppid
  echo $$
  while [[ $pid =~ ^[0-9]+$ && $pid -gt 1 ]]; do
    echo "$pid"
    ppid=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || break
    pid=$ppid
  done
}

glob_escape() { printf '%s\n' "$1" | sed 's/[][*?\\]/\\&/g'; }

# Every live process this cluster started (see the top of this file), one "pid kind" a line,
# kind = postgres | tagged.
cluster_processes() {
  local pattern pid exe
  local -A own=()
  for pid in $(own_pids); do own[$pid]=1; done
  pattern="$(glob_escape "$CLUSTER_DIR")/*"
  # PostgreSQL servers: a postgres binary working in one of our data directories.
  while read -r pid; do
    [[ $pid =~ ^[0-9]+$ && -z ${own[$pid]:-} ]] || continue
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
    if [[ ${exe##*/} == postgres ]]; then echo "$pid postgres"; fi
  done < <(find /proc -mindepth 2 -maxdepth 2 -name cwd -lname "$pattern" -printf '%h\n' 2>/dev/null | cut -d/ -f3)
  [[ -n $HA_TAG ]] || return 0
  while read -r pid; do
    if [[ -n $pid && -z ${own[$pid]:-} ]]; then echo "$pid tagged"; fi
  done < <(grep -lzxF -- "$HA_TAG_VAR=$HA_TAG" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3)
}

# Kills whatever cluster_processes still finds: postgres first with SIGQUIT (immediate shutdown,
# the postmaster takes its children down), then everything with SIGKILL.
sweep_processes() {
  local deadline=$((SECONDS + 15)) quit_until=$((SECONDS + 3)) pid kind list
  while :; do
    list=$(cluster_processes)
    [[ -z $list ]] && return 0
    if ((SECONDS >= deadline)); then
      warn "processes still running after SIGKILL: $(tr '\n' ' ' <<<"$list")"
      return 1
    fi
    while read -r pid kind; do
      if [[ $kind == postgres ]] && ((SECONDS < quit_until)); then
        kill -QUIT "$pid" 2>/dev/null || true
      else
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done <<<"$list"
    sleep 0.3
  done
}

# Stops every process of the cluster without ceremony: the node managers first (so that nothing
# restarts PostgreSQL), then PostgreSQL (immediate), then the other daemons (etcd), then a sweep.
kill_everything() {
  [[ -d $CLUSTER_DIR ]] || return 0
  local node f
  for node in "${HA_NODES[@]}"; do kill_daemon "$(node_dir "$node")/$HA_NODE_DAEMON.pid"; done
  if [[ -n $PG_BIN ]]; then
    for node in "${HA_NODES[@]}"; do
      [[ -f $(node_data "$node")/postmaster.pid ]] || continue
      as_pg "$PG_BIN/pg_ctl" -D "$(node_data "$node")" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
    done
  fi
  for f in "$CLUSTER_DIR"/*/*.pid; do
    [[ -f $f ]] && kill_daemon "$f"
  done
  sweep_processes
}

# ---------------------------------------------------------------- nodes

ha_node_state() { # NODE -> running | stopped
  if node_running "$1"; then echo running; else echo stopped; fi
}

# "role timeline" of a running node: "primary 00000002" or "standby -"; fails if it does not answer.
node_role_timeline() { # NODE
  node_query "$1" postgres "select case when pg_is_in_recovery() then 'standby -'
    else 'primary ' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) end" 2>/dev/null
}

# The node that is out of recovery; if several are (a restarted old primary that nobody
# rejoined), the one on the newest timeline.
current_primary() {
  local node rt best="" best_tl="" others=()
  for node in "${HA_NODES[@]}"; do
    node_exists "$node" || continue
    rt=$(node_role_timeline "$node") || continue
    [[ $rt == primary\ * ]] || continue
    if [[ -z $best || ${rt#primary } > $best_tl ]]; then
      [[ -n $best ]] && others+=("$best")
      best=$node best_tl=${rt#primary }
    else
      others+=("$node")
    fi
  done
  [[ -n $best ]] || return 1
  ((${#others[@]} == 0)) ||
    warn "also out of recovery, on an older timeline: ${others[*]} (split brain: not rejoined yet)"
  printf '%s\n' "$best"
}

ha_require_node() { # NODE
  local n
  n=$(node_index "$1")
  ((n < ${#HA_NODES[@]})) || die "no node $1 (nodes: ${HA_NODES[*]})"
  node_exists "$1" || die "node $1 does not exist in $CLUSTER_DIR"
}

# ---------------------------------------------------------------- commands

ha_deps() {
  cmd_deps
  local pkgs
  pkgs=$(mgr_packages | tr '\n' ' ')
  if [[ -n ${pkgs// /} ]]; then
    is_root || die "missing packages: $pkgs(install them with: sudo apt-get install -y $pkgs)"
    command -v apt-get >/dev/null 2>&1 || die "missing packages: $pkgs(and apt-get is not available)"
    log "installing $pkgs with apt-get"
    apt-get update -qq
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
  fi
  mgr_require
  log "$HA_MANAGER is installed"
}

# EXIT trap while the lock is held: a failed creation leaves no process behind (its logs stay).
# shellcheck disable=SC2317 # invoked by the EXIT trap
ha_exit_trap() {
  local rc=$?
  if ((HA_CREATING)); then
    HA_CREATING=0
    warn "creating the cluster failed; stopping what it started (logs stay in $CLUSTER_DIR; 'destroy' removes it)"
    kill_everything || true
  fi
  drop_stray_lock
  return $rc
}

ha_lock() {
  take_lock
  trap ha_exit_trap EXIT
}

ha_up() {
  [[ ${PGR_VERBOSE:-0} == 1 ]] || HA_QUIET=1
  ha_require_tools
  ha_lock
  ha_load_settings
  find_pg_bin
  local t0=$SECONDS node port
  if ha_complete; then
    mgr_start_existing
  else
    if have_marker; then
      log "found an incomplete cluster in $CLUSTER_DIR; recreating it"
      kill_everything || die "could not stop the processes of the incomplete cluster"
      find "$CLUSTER_DIR" -mindepth 1 -maxdepth 1 ! -name "$MARKER" -exec rm -rf {} +
    fi
    for node in "${HA_NODES[@]}"; do check_port_free "$node"; done
    for port in $(mgr_ports); do
      if port_in_use "$port"; then die "port $port is already in use; stop its owner or choose another PGR_BASE_PORT"; fi
    done
    ha_prepare_dir
    HA_CREATING=1
    mgr_create
    as_pg touch "$CLUSTER_DIR/.complete"
    HA_CREATING=0
  fi
  local primary
  primary=$(current_primary) || die "the cluster has no primary"
  echo "$HA_MANAGER cluster ready in $((SECONDS - t0))s: primary $primary on 127.0.0.1:$(node_port "$primary"), nodes pg0-pg2 on ports $BASE_PORT-$((BASE_PORT + 2)), directory $CLUSTER_DIR"
}

ha_status() {
  have_marker || {
    echo "no $HA_MANAGER cluster in $CLUSTER_DIR"
    return 1
  }
  local node state role
  for node in "${HA_NODES[@]}"; do
    state=$(ha_node_state "$node")
    role=-
    if [[ $state == running ]]; then
      role=$(node_role_timeline "$node") && role=${role%% *} || role=unknown
    fi
    printf '%-4s %-6s %-8s %-8s %s\n' "$node" "$(node_port "$node")" "$state" "$role" "$(mgr_status_extra "$node")"
  done
}

ha_primary() {
  current_primary || die "no running node is out of recovery"
}

ha_down() {
  have_marker || {
    log "no $HA_MANAGER cluster in $CLUSTER_DIR"
    return 0
  }
  ha_lock
  mgr_stop_all
  sweep_processes || die "some processes did not stop"
}

ha_destroy() {
  if [[ ! -e $CLUSTER_DIR ]]; then
    log "nothing to destroy: $CLUSTER_DIR does not exist"
    rm -f -- "$(lock_file)"
    return 0
  fi
  have_marker || die "$CLUSTER_DIR has no $MARKER file: not a pgrouter HA cluster, refusing to delete it"
  ha_lock
  kill_everything || die "could not stop every process; not deleting $CLUSTER_DIR"
  [[ -f $CLUSTER_DIR/$MARKER && $CLUSTER_DIR != / ]] || die "marker vanished; not deleting"
  rm -rf -- "$CLUSTER_DIR"
  rm -f -- "$(lock_file)"
  log "destroyed $CLUSTER_DIR"
}

ha_env() {
  local node ports="" replica_ports="" primary=pg0
  if have_marker && [[ -n $PG_BIN ]]; then primary=$(current_primary 2>/dev/null) || primary=pg0; fi
  for node in "${HA_NODES[@]}"; do
    ports+="${ports:+,}$(node_port "$node")"
    [[ $node == "$primary" ]] || replica_ports+="${replica_ports:+,}$(node_port "$node")"
  done
  printf 'export PGR_HA_MANAGER=%s\n' "$HA_MANAGER"
  printf 'export PGR_CLUSTER_DIR=%s\n' "$(shell_quote "$CLUSTER_DIR")"
  printf 'export PGR_BASE_PORT=%s\n' "$BASE_PORT"
  printf 'export PGR_NODE_PORTS=%s\n' "$(shell_quote "$ports")"
  printf 'export PGR_PRIMARY_PORT=%s\n' "$(node_port "$primary")"
  printf 'export PGR_REPLICA_PORTS=%s\n' "$(shell_quote "$replica_ports")"
  printf 'export PGR_PG_BIN=%s\n' "$(shell_quote "$PG_BIN")"
  mgr_env
  printf '# superuser: psql -h %s -p %s -U postgres app\n' "$(shell_quote "$CLUSTER_DIR/$primary")" "$(node_port "$primary")"
}

ha_node_cmd() { # ACTION NODE
  have_marker || die "no $HA_MANAGER cluster in $CLUSTER_DIR (run '$PROG up')"
  ha_lock
  ha_require_node "$2"
  mgr_node "$1" "$2"
}

ha_usage() {
  cat <<EOF
Usage: $PROG COMMAND [NODE]

A 3-node PostgreSQL cluster on 127.0.0.1 under $HA_MANAGER, for pgrouter's failover tests.
Nodes pg0 (initial primary, port BASE), pg1 (BASE+1), pg2 (BASE+2); synchronous replication:
a commit acknowledged by the primary is on at least one standby.

Commands:
  deps          install PostgreSQL and $HA_MANAGER with apt-get if they are missing
  up            create and start the cluster (or start a stopped one); waits until it is healthy
  status        one line per node: name port running|stopped primary|standby|- [extra]
  primary       print the node that is out of recovery (the newest timeline if several are)
  kill NODE     crash the node's PostgreSQL
  stop NODE     planned stop of the node
  start NODE    start the node again
EOF
  mgr_commands_help
  cat <<EOF
  down          stop every process of the cluster (planned)
  destroy       kill every process of the cluster and delete its directory
  env           print shell export lines (use: eval "\$($PROG env)")

Environment:
  PGR_CLUSTER_DIR   cluster directory   (default /tmp/pgrouter-$HA_MANAGER-cluster)
  PGR_BASE_PORT     port of pg0         (default $HA_DEFAULT_BASE_PORT)
  PGR_PG_BIN        PostgreSQL bin dir  (default: newest /usr/lib/postgresql/*/bin)
  PGR_APP_PASSWORD, PGR_LEGACY_PASSWORD, PGR_REPLICATOR_PASSWORD
                    role passwords      (defaults app, legacy, replicator)
  PGR_HA_TIMEOUT    seconds to wait for each step of 'up' (default 90)
  PGR_VERBOSE=1     progress messages from 'up'
EOF
  mgr_usage
  cat <<EOF

Roles: postgres (superuser, no password, Unix socket in the node's directory only), app
(scram-sha-256, owns database app), legacy (md5), replicator (replication).
When run as root, PostgreSQL and $HA_MANAGER run as the OS user '$PG_OS_USER'.
EOF
}

ha_main() {
  local cmd=${1:-}
  case $cmd in
    -h | --help | help)
      ha_usage
      return 0
      ;;
    "")
      ha_usage >&2
      return 2
      ;;
  esac
  shift
  ha_validate
  case $cmd in
    deps) ha_deps ;;
    up) ha_up ;;
    env)
      ha_load_settings
      find_pg_bin
      ha_env
      ;;
    down | destroy)
      ha_load_settings
      find_pg_bin
      "ha_$cmd"
      ;;
    status | primary)
      ha_load_settings
      require_pg_bin
      "ha_$cmd"
      ;;
    kill | stop | start)
      (($# == 1)) || die "usage: $PROG $cmd NODE"
      ha_load_settings
      ha_require_tools
      ha_node_cmd "$cmd" "$1"
      ;;
    *)
      ha_load_settings
      find_pg_bin
      mgr_command "$cmd" "$@" || die "unknown command '$cmd' (see $PROG --help)"
      ;;
  esac
}
