#!/bin/bash
# Create throughput with the events feed off, and on with 0, 1 and 10
# subscribers, alternating round by round (BENCHMARKS.md, "Session events").
# usage: benches/events.sh ROUNDS [BIN_DIR (default target/release)]
set -u
ROUNDS=${1:-4}
B=${2:-target/release}
for r in $(seq 1 "$ROUNDS"); do
  for cfg in "off 0" "on 0" "on 1" "on 10"; do
    set -- $cfg
    D=$(mktemp -d); PORT=$((19000 + RANDOM % 1000))
    EXTRA=""; [ "$1" = off ] && EXTRA="--events-retention 0"
    "$B/sessiond" --listen 127.0.0.1:$PORT --data-dir "$D" --worker-threads 1 $EXTRA >/dev/null 2>&1 &
    P=$!
    for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
    OUT=$("$B/sessiond-bench" --threads 1 --target sessiond://127.0.0.1:$PORT --workload create \
      --duration 5 --concurrency 16 --pipeline 16 --subscribers "$2" 2>&1)
    echo "round $r feed=$1 subs=$2: $(echo "$OUT" | grep -o '= [0-9]* ops/s.*p99 [0-9]*' | head -1) | $(echo "$OUT" | grep received)"
    kill -INT $P; wait $P; rm -rf "$D"
  done
done
