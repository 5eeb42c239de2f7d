#!/usr/bin/env bash
# thread-curve.sh: pgrouter's throughput against worker_threads, beside PgBouncer, in one
# interleaved run: pgbench -S through PgBouncer (transaction pooling, everything to the primary)
# and through one pgrouter per thread count (transaction pooling, reads split over the three
# nodes), at each client count; median TPS, CPU µs per transaction and p50/p99 latency.
#   scripts/thread-curve.sh [PGROUTER_BINARY]          (default target/release/pgrouter)
# Environment: PGR_CURVE_THREADS ("1 2"; an entry N:BINARY runs another build, e.g. to compare
# two), PGR_CURVE_CLIENTS ("8 32 64"), PGR_CURVE_SECONDS (8),
# PGR_CURVE_ROUNDS (2), PGR_CURVE_MODE (simple), PGR_CURVE_JOBS (pgbench threads, nproc / 2),
# PGR_CURVE_POOL_SIZE (server connections per node for both, 20), PGR_CURVE_PGBOUNCER=0 (skip).
# Needs the dev cluster (scripts/dev-cluster.sh up) with pgbench tables
# (PGPASSWORD=app pgbench -i -s 2 -h 127.0.0.1 -p 15432 -U app app). Listens on 127.0.0.1:16700+.
set -euo pipefail
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }
bin=${1:-target/release/pgrouter}
read -r -a threads <<<"${PGR_CURVE_THREADS:-1 2}"
read -r -a clients <<<"${PGR_CURVE_CLIENTS:-8 32 64}"
seconds=${PGR_CURVE_SECONDS:-8} rounds=${PGR_CURVE_ROUNDS:-2} mode=${PGR_CURVE_MODE:-simple}
jobs=${PGR_CURVE_JOBS:-$(($(nproc) / 2 > 0 ? $(nproc) / 2 : 1))}
pool=${PGR_CURVE_POOL_SIZE:-20}
export PGPASSWORD=${PGPASSWORD:-app}
repo=$(cd "$(dirname "$0")/.." && pwd)
primary_port=${PGR_BASE_PORT:-15432}
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -f $work/pgb/pgb.pid ]] && kill "$(cat "$work/pgb/pgb.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$1" && return 0; sleep 0.1; done; return 1; }

declare -A port pid
targets=()
pgb=$(command -v pgbouncer 2>/dev/null || { [[ -x /usr/sbin/pgbouncer ]] && echo /usr/sbin/pgbouncer; } || true)
if [[ ${PGR_CURVE_PGBOUNCER:-1} != 0 && -n $pgb ]]; then
  mkdir -p "$work/pgb"
  verifier=$(psql -X -q -h "${PGR_CLUSTER_DIR:-/tmp/pgrouter-dev-cluster}/pg0" -p "$primary_port" -U postgres \
    -d postgres -Atc "select rolpassword from pg_authid where rolname = 'app'" 2>/dev/null || echo app)
  printf '"app" "%s"\n' "$verifier" >"$work/pgb/auth.txt"
  cat >"$work/pgb/pgb.ini" <<EOF
[databases]
app = host=127.0.0.1 port=$primary_port dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 16700
unix_socket_dir = $work/pgb
pool_mode = transaction
auth_type = scram-sha-256
auth_file = $work/pgb/auth.txt
default_pool_size = $pool
max_client_conn = 2000
logfile = $work/pgb/pgb.log
pidfile = $work/pgb/pgb.pid
ignore_startup_parameters = extra_float_digits
EOF
  chmod 700 "$work/pgb"
  if [[ $EUID -eq 0 ]]; then
    chown -R postgres: "$work/pgb"
    su postgres -s /bin/sh -c "$pgb -d $work/pgb/pgb.ini"
  else
    "$pgb" -d "$work/pgb/pgb.ini"
  fi
  wait_port 16700
  port[pgbouncer]=16700 pid[pgbouncer]=$(cat "$work/pgb/pgb.pid")
  targets+=(pgbouncer)
fi
n=1
for entry in "${threads[@]}"; do
  t=${entry%%:*} b=$bin label="threads=$entry"
  [[ $entry == *:* ]] && b=${entry#*:} label="threads=$t ($(basename "$b"))"
  p=$((16700 + 2 * n)) && n=$((n + 1))
  sed -e "s/^listen: .*/listen: 127.0.0.1:$p/" -e "s/^admin_listen: .*/admin_listen: 127.0.0.1:$((p + 1))/" \
    -e 's/^  mode: session .*/  mode: transaction/' -e "s/^worker_threads: .*/worker_threads: $t/" \
    -e "s/^  max_server_connections: .*/  max_server_connections: $pool/" \
    "$repo/config.example.yaml" >"$work/pgrouter-$n.yaml"
  "$b" --config "$work/pgrouter-$n.yaml" >"$work/pgrouter-$n.log" 2>&1 &
  pids+=($!)
  wait_port "$p" || { tail "$work/pgrouter-$n.log"; exit 1; }
  port[$label]=$p pid[$label]=$!
  targets+=("$label")
done

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
declare -A TPS CPU P50 P99
for round in $(seq "$rounds"); do
  for c in "${clients[@]}"; do
    for target in "${targets[@]}"; do
      j=$((c < jobs ? c : jobs))
      rm -f "$work"/tx*
      t0=$(ticks "${pid[$target]}")
      out=$(pgbench -n -S -M "$mode" -c "$c" -j "$j" -T "$seconds" -l --log-prefix="$work/tx" \
        -h 127.0.0.1 -p "${port[$target]}" -U app app 2>&1) || true
      t1=$(ticks "${pid[$target]}")
      tx=$(grep -oP 'actually processed: \K[0-9]+' <<<"$out" || echo 0)
      tps=$(grep -oP 'tps = \K[0-9.]+' <<<"$out" || echo 0)
      read -r p50 p99 < <(cat "$work"/tx* 2>/dev/null | awk '{ print $3 }' | sort -n | awk '{ v[NR] = $1 } END {
        if (NR) printf "%.3f %.3f\n", v[int((NR - 1) * 0.50) + 1] / 1000, v[int((NR - 1) * 0.99) + 1] / 1000; else print "0 0" }')
      us=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v tx="$tx" 'BEGIN { printf "%.1f", tx ? d / hz * 1e6 / tx : 0 }')
      echo "round $round clients=$c $target tps=$tps cpu_us_per_tx=$us p50=$p50 p99=$p99" >&2
      TPS[$c,$target]+="$tps " CPU[$c,$target]+="$us " P50[$c,$target]+="$p50 " P99[$c,$target]+="$p99 "
    done
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "pgbench -S -M $mode, ${seconds} s runs, median of $rounds rounds, $(nproc) cores, pool $pool per node"
echo
echo "| clients | target | TPS | CPU µs/tx | p50 ms | p99 ms |"
echo "|---:|---|---:|---:|---:|---:|"
for c in "${clients[@]}"; do
  for target in "${targets[@]}"; do
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    echo "| $c | $target | $(median ${TPS[$c,$target]}) | $(median ${CPU[$c,$target]}) | $(median ${P50[$c,$target]}) | $(median ${P99[$c,$target]}) |"
  done
done
