#!/usr/bin/env bash
# cpu-compare.sh: two pgrouter binaries, interleaved, through transaction pooling: pgbench -S
# at 8 and 32 clients, simple and prepared; prints tps and pgrouter's CPU µs per transaction.
#   scripts/cpu-compare.sh BEFORE_BINARY AFTER_BINARY [ROUNDS]
# Needs the dev cluster (scripts/dev-cluster.sh up) with pgbench tables
# (PGPASSWORD=app pgbench -i -s 2 -h 127.0.0.1 -p 15432 -U app app). Listens on 127.0.0.1:16632.
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
before=$1 after=$2 rounds=${3:-3}
export PGPASSWORD=${PGPASSWORD:-app}
cfg=$(mktemp --suffix .yaml)
trap 'rm -f "$cfg"' EXIT
sed -e 's/^listen: .*/listen: 127.0.0.1:16632/' -e 's/^admin_listen: .*/admin_listen: 127.0.0.1:19960/' \
    -e 's/^  mode: session .*/  mode: transaction/' "$(dirname "$0")/../config.example.yaml" > "$cfg"
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
for round in $(seq "$rounds"); do
  for mode in simple prepared; do
    for clients in 8 32; do
      for which in before after; do
        bin=$before; [[ $which == after ]] && bin=$after
        "$bin" --config "$cfg" >/dev/null 2>&1 &
        pid=$!
        for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 16632 && break; sleep 0.1; done
        sleep 1
        pgbench -n -S -M "$mode" -h 127.0.0.1 -p 16632 -U app -c "$clients" -j 2 -T 2 app >/dev/null 2>&1 || true
        t0=$(ticks "$pid")
        out=$(pgbench -n -S -M "$mode" -h 127.0.0.1 -p 16632 -U app -c "$clients" -j 2 -T 8 app 2>&1)
        t1=$(ticks "$pid")
        tx=$(grep -oP 'actually processed: \K[0-9]+' <<<"$out" || echo 0)
        tps=$(grep -oP 'tps = \K[0-9.]+' <<<"$out" || echo 0)
        us=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v tx="$tx" 'BEGIN { printf "%.1f", tx ? d / hz * 1e6 / tx : 0 }')
        echo "round $round $mode clients=$clients $which tps=$tps cpu_us_per_tx=$us"
        kill "$pid"; wait "$pid" 2>/dev/null || true
      done
    done
  done
done
