#!/usr/bin/env bash
# Create throughput: 3-member sessiond group vs single node vs Redis+replica with WAIT 1 0; all --fsync always / appendfsync always.
set -u
B=${B:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
D=/tmp/bha; rm -rf $D; mkdir -p $D
pkill -f "sessiond --" ; pkill redis-server; sleep 0.5
LOAD="--threads 1 --workload create --duration ${DUR:-8} --concurrency 50 --connections 8"
# single node
$B/sessiond --listen 127.0.0.1:18000 --data-dir $D/single --fsync always >$D/single.log 2>&1 &
sleep 1
echo "== sessiond single node, fsync always"; $B/sessiond-bench $LOAD --target sessiond://127.0.0.1:18000
pkill -f "sessiond --listen 127.0.0.1:18000"; sleep 0.5
# group
C="1=127.0.0.1:18101,2=127.0.0.1:18102,3=127.0.0.1:18103"
for i in 1 2 3; do $B/sessiond --node-id $i --cluster $C --listen 127.0.0.1:1801$i --data-dir $D/m$i --fsync always >$D/m$i.log 2>&1 & done
sleep 3
echo "== sessiond 3-member group, fsync always (all members on this machine)"; $B/sessiond-bench $LOAD --target sessiond://127.0.0.1:18011,127.0.0.1:18012,127.0.0.1:18013
pkill -f "sessiond --node-id"; sleep 0.5
# redis + replica
redis-server --port 18201 --save '' --appendonly yes --appendfsync always --dir $D --appendfilename p.aof --daemonize yes --logfile $D/r1.log
mkdir -p $D/r2; redis-server --port 18202 --save '' --appendonly yes --appendfsync always --dir $D/r2 --replicaof 127.0.0.1 18201 --daemonize yes --logfile $D/r2.log
sleep 2
echo "== Redis primary + 1 replica, appendfsync always, WAIT 1 0 after each write"; $B/sessiond-bench $LOAD --target redis://127.0.0.1:18201 --redis-wait 1
pkill redis-server
