#!/bin/bash
# Instruction counts of one daemon run under callgrind (repeatable whatever
# else the machine does): a one-worker daemon loaded with 100k requests at
# concurrency 16, pipeline 16, then SIGINT.
# usage: benches/callgrind.sh BIN WORKLOAD OUT [DAEMON FLAGS...]
#   WORKLOAD: create | get (10,000 preloaded sessions) | ...
#   no DAEMON FLAGS: --in-memory; with flags (e.g. --events-retention 0), a
#   fresh data dir is used.
set -u
BIN=$1; W=$2; OUT=$3; shift 3
BENCH=${BENCH:-$(dirname "$BIN")/sessiond-bench}
PORT=$((18600 + RANDOM % 300))
if [ $# -eq 0 ]; then STORE="--in-memory"; D=""; else D=$(mktemp -d); STORE="--data-dir $D"; fi
valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BIN" --listen 127.0.0.1:$PORT $STORE \
  --worker-threads 1 "$@" >/dev/null 2>"$OUT.stderr" &
VP=$!
for _ in $(seq 1 200); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.3; done
"$BENCH" --target sessiond://127.0.0.1:$PORT --threads 1 --workload "$W" --keyspace 10000 \
  --requests 100000 --concurrency 16 --pipeline 16 2>&1 | tail -1
kill -INT $VP; wait $VP
[ -n "$D" ] && rm -rf "$D"
grep -h "summary" "$OUT" | head -1
