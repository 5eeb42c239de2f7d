#!/usr/bin/env bash
# run-local.sh: start the local dev cluster and pgrouter in front of it.
#   scripts/run-local.sh          build and (re)start pgrouter on 127.0.0.1:6432
#   scripts/run-local.sh stop     stop pgrouter and the dev cluster
set -euo pipefail

PROG=${0##*/}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# config.example.yaml expects the default cluster ports (15432-15434).
export PGR_CLUSTER_DIR=${PGR_CLUSTER_DIR:-/tmp/pgrouter-dev-cluster}
export PGR_BASE_PORT=15432
export PGR_REPLICAS=2
CONFIG=config.example.yaml
LISTEN_PORT=6432
BIN=${PGR_BIN:-target/release/pgrouter}
LOG=$PGR_CLUSTER_DIR/pgrouter.log
PIDFILE=$PGR_CLUSTER_DIR/pgrouter.pid
URL="postgres://app:app@127.0.0.1:$LISTEN_PORT/app"

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }

usage() {
  cat <<EOF
Usage: $PROG [start|stop]

start (default): scripts/dev-cluster.sh up, cargo build --release, then run
  $BIN --config $CONFIG in the background (log: $LOG)
  and check that psql "$URL" works.
stop: stop pgrouter and the dev cluster (data is kept; use
  scripts/dev-cluster.sh destroy to delete it).

Environment: PGR_CLUSTER_DIR (default /tmp/pgrouter-dev-cluster),
PGR_SKIP_BUILD=1 to skip cargo build, PGR_BIN to run another binary.
EOF
}

# PID of our running pgrouter, from the pid file (checks its command line).
running_pid() {
  local pid
  [[ -r $PIDFILE ]] || return 1
  pid=$(<"$PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  local cmdline
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *" --config $CONFIG"* ]] || return 1
  printf '%s\n' "$pid"
}

stop_pgrouter() {
  local pid i
  if pid=$(running_pid); then
    log "stopping pgrouter (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pgrouter did not exit after 10s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$PIDFILE"
}

port_in_use() {
  if command -v ss >/dev/null 2>&1; then
    [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]
    return
  fi
  # shellcheck disable=SC2016 # $1 is expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

show_log() {
  if [[ -r $LOG ]]; then
    printf -- '--- last lines of %s ---\n' "$LOG" >&2
    tail -n 40 "$LOG" >&2
    printf -- '---\n' >&2
  fi
}

cmd_stop() {
  stop_pgrouter
  scripts/dev-cluster.sh down
  log "stopped pgrouter and the dev cluster"
}

cmd_start() {
  command -v cargo >/dev/null 2>&1 || [[ -n ${PGR_SKIP_BUILD:-} ]] ||
    die "cargo not found: install Rust with rustup (https://rustup.rs):
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"
  [[ -f $CONFIG ]] || die "$ROOT/$CONFIG not found"

  scripts/dev-cluster.sh up
  eval "$(scripts/dev-cluster.sh env)"
  local pg_isready=$PGR_PG_BIN/pg_isready psql=$PGR_PG_BIN/psql

  if [[ -z ${PGR_SKIP_BUILD:-} ]]; then
    local -a locked=()
    [[ -f Cargo.lock ]] && locked=(--locked)
    log "cargo build --release ${locked[*]}"
    cargo build --release "${locked[@]}"
  fi
  [[ -x $BIN ]] || die "$BIN not found or not executable"

  stop_pgrouter
  if port_in_use "$LISTEN_PORT"; then
    die "port $LISTEN_PORT is already in use by another process (not the pgrouter from $PIDFILE)"
  fi

  log "starting $BIN --config $CONFIG (log: $LOG)"
  nohup "$BIN" --config "$CONFIG" >"$LOG" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$PIDFILE"

  local deadline=$((SECONDS + 30))
  until "$pg_isready" -q -h 127.0.0.1 -p "$LISTEN_PORT" -U app -d app -t 2; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_log
      rm -f "$PIDFILE"
      die "pgrouter exited during start-up"
    fi
    if ((SECONDS >= deadline)); then
      show_log
      die "pgrouter did not accept connections on 127.0.0.1:$LISTEN_PORT within 30s (still running as pid $pid; '$PROG stop' stops it)"
    fi
    sleep 0.2
  done

  local out
  if ! out=$("$psql" -X "$URL" -Atc "select 'pgrouter works: ' || version()" 2>&1); then
    printf '%s\n' "$out" >&2
    show_log
    die "a query through pgrouter failed"
  fi
  printf '%s\n' "$out"
  cat <<EOF

pgrouter is running (pid $pid) on 127.0.0.1:$LISTEN_PORT in front of the dev cluster.
  connect:  psql "$URL"
            psql "postgres://legacy:legacy@127.0.0.1:$LISTEN_PORT/app"   (md5 user)
  log:      $LOG
  cluster:  scripts/dev-cluster.sh status
  stop:     scripts/run-local.sh stop
EOF
}

case ${1:-start} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
