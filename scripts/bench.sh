#!/usr/bin/env bash
# bench.sh: relay-overhead benchmark, pgbench -S directly against the primary
# versus through pgrouter, in one interleaved run. Run with --help for usage.
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
ROUTER_PORT=26432
ADMIN_PORT=29930
PRIMARY_PORT=$PGR_BASE_PORT
BIN=${PGR_BIN:-target/release/pgrouter}
CONFIG=$PGR_CLUSTER_DIR/pgrouter-bench.yaml
ROUTER_LOG=$PGR_CLUSTER_DIR/pgrouter-bench.log
MODES=(simple prepared)
CLIENTS=(1 8)

usage() {
  cat <<EOF
Usage: $PROG

Measures pgrouter's relay overhead: pgbench -S (select only) with -M simple and
-M prepared at 1 and 8 clients, directly against the primary and through
pgrouter, interleaved, median TPS per cell, plus pgrouter CPU time per
transaction. Uses its own dev cluster ($PGR_CLUSTER_DIR, ports
$PGR_BASE_PORT-$((PGR_BASE_PORT + 2))) and pgrouter on 127.0.0.1:$ROUTER_PORT.
The report is printed and saved to target/bench/relay-<date>.md.

Environment:
  PGR_BENCH_SECONDS        seconds per pgbench run (default 10)
  PGR_BENCH_ROUNDS         rounds (default 2)
  PGR_BENCH_KEEP_CLUSTER=1 leave the bench cluster running afterwards
  PGR_SKIP_BUILD=1         do not run cargo build
  PGR_BIN                  pgrouter binary (default target/release/pgrouter)
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
EOF

ROUTER_PID=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
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

CLK_TCK=$(getconf CLK_TCK)

cpu_ticks() { # PID -> utime + stime of the whole process, in clock ticks
  local stat rest
  stat=$(<"/proc/$1/stat")
  rest=${stat##*) } # fields from 3 (state) on; comm may contain spaces
  local -a f
  read -r -a f <<<"$rest"
  echo $((f[11] + f[12]))
}

# ---------------------------------------------------------------- matrix

declare -A TPS CPU FAILS
any_failure=0

pgbench_cmd() { # TARGET MODE CLIENTS -> the command line, one word per line
  local port=$PRIMARY_PORT jobs=$(($3 < 2 ? $3 : 2))
  [[ $1 == pgrouter ]] && port=$ROUTER_PORT
  printf '%s\n' "$PGBENCH" -n -S -M "$2" -c "$3" -j "$jobs" -T "$DURATION" \
    -h 127.0.0.1 -p "$port" -U app app
}

run_one() { # ROUND TARGET MODE CLIENTS
  local round=$1 target=$2 mode=$3 clients=$4 key="$3,$4,$2"
  local -a cmd
  mapfile -t cmd < <(pgbench_cmd "$target" "$mode" "$clients")
  local out rc=0 t0=0 t1=0
  [[ $target == pgrouter ]] && t0=$(cpu_ticks "$ROUTER_PID")
  out=$("${cmd[@]}" 2>&1) || rc=$?
  [[ $target == pgrouter ]] && t1=$(cpu_ticks "$ROUTER_PID")

  local tps txs failed
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' <<<"$out" | head -n 1)
  txs=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out" | head -n 1)
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out" | head -n 1)
  local note=""
  if ((rc != 0)) || [[ -z $tps ]]; then
    note="pgbench exit $rc"
  elif [[ -n $failed && $failed != 0 ]]; then
    note="$failed failed tx"
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
  if [[ $target == pgrouter && ${txs:-0} -gt 0 ]]; then
    local us
    us=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$txs" 'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
    CPU[$key]+="$us "
    msg+=", pgrouter CPU $us µs/tx"
  fi
  log "$msg"
  if ! kill -0 "$ROUTER_PID" 2>/dev/null; then
    tail -n 40 "$ROUTER_LOG" >&2
    die "pgrouter died during the benchmark (log: $ROUTER_LOG)"
  fi
}

total=$((ROUNDS * ${#MODES[@]} * ${#CLIENTS[@]} * 2))
log "running $total pgbench runs of ${DURATION}s (~$((total * DURATION / 60 + 1)) min)"
for ((round = 1; round <= ROUNDS; round++)); do
  if ((round % 2 == 1)); then order=(direct pgrouter); else order=(pgrouter direct); fi
  for mode in "${MODES[@]}"; do
    for clients in "${CLIENTS[@]}"; do
      for target in "${order[@]}"; do
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

{
  echo "# pgrouter relay overhead ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "pgbench -S (select only), scale $SCALE, ${DURATION}s per run, $ROUNDS rounds interleaved"
  echo "(direct and pgrouter alternate within each round); TPS excludes connection time,"
  echo "each cell is the median over the rounds. CPU = pgrouter utime+stime / transactions."
  echo
  echo "| workload | clients | direct TPS | pgrouter TPS | ratio | pgrouter CPU µs/tx | notes |"
  echo "|---|---:|---:|---:|---:|---:|---|"
  for mode in "${MODES[@]}"; do
    for clients in "${CLIENTS[@]}"; do
      # shellcheck disable=SC2086 # the stored values are space-separated lists
      {
        d=$(median ${TPS[$mode,$clients,direct]})
        r=$(median ${TPS[$mode,$clients,pgrouter]})
        c=$(median ${CPU[$mode,$clients,pgrouter]:-})
        [[ -n $c ]] && c=$(printf '%.1f' "$c")
      }
      ratio=$(awk -v d="$d" -v r="$r" 'BEGIN { if (d > 0) printf "%.2f", r / d; else print "n/a" }')
      notes="${FAILS[$mode,$clients,direct]:+direct: ${FAILS[$mode,$clients,direct]}}"
      if [[ -n ${FAILS[$mode,$clients,pgrouter]:-} ]]; then
        notes+="${notes:+; }pgrouter: ${FAILS[$mode,$clients,pgrouter]}"
      fi
      [[ -n $notes ]] && notes="**FAILED** $notes"
      printf '| -S -M %s | %s | %.0f | %.0f | %s | %s | %s |\n' \
        "$mode" "$clients" "$d" "$r" "$ratio" "${c:-n/a}" "$notes"
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
  echo "- cluster: $PGR_CLUSTER_DIR (primary 127.0.0.1:$PRIMARY_PORT, 2 streaming standbys), pgrouter 127.0.0.1:$ROUTER_PORT"
  echo
  echo "## Commands"
  echo
  echo '```'
  echo "PGPASSWORD=app $PGBENCH -i -s $SCALE -q -h 127.0.0.1 -p $PRIMARY_PORT -U app app   # once, if pgbench_accounts is missing"
  for mode in "${MODES[@]}"; do
    for clients in "${CLIENTS[@]}"; do
      for target in direct pgrouter; do
        mapfile -t cmd < <(pgbench_cmd "$target" "$mode" "$clients")
        echo "PGPASSWORD=app ${cmd[*]}   # $target"
      done
    done
  done
  echo '```'
  if ((any_failure)); then
    echo
    echo "**Some runs had failures; see the notes column.**"
  fi
} | tee "$report"
log "report saved to $report"
exit "$any_failure"
