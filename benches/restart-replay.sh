#!/usr/bin/env bash
# Restart time: load SERIES series × SCRAPES samples (15 s apart, ending now) into
# a fresh server, SIGKILL it, restart, and time until it answers /-/ready (the
# listener opens only after every tenant's WAL is replayed).
#
#   benches/restart-replay.sh [SERIES] [SCRAPES]     # default: 100000 × 480 (2 h)
set -euo pipefail
SERIES=${1:-100000}
SCRAPES=${2:-480}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TIDEWATCH_BIN:-$ROOT/target/release/tidewatch}
WORK=$(mktemp -d)
PORT=${TW_PORT:-19473}
trap 'pkill -f "listen 127.0.0.1:$PORT" 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$BIN" server --listen 127.0.0.1:$PORT --data-dir "$WORK/d" > "$WORK/out" 2> "$WORK/err" &
PID=$!
"$BIN" bench remote-write --url http://127.0.0.1:$PORT/api/v1/write --wait-for http://127.0.0.1:$PORT/-/ready \
  --series "$SERIES" --scrapes "$SCRAPES" --backfill --series-per-request 500 | tail -1
kill -9 $PID; wait $PID 2>/dev/null || true
echo "wal_bytes=$(du -sb "$WORK/d/wal" | cut -f1)"
START=$(date +%s.%N)
"$BIN" server --listen 127.0.0.1:$PORT --data-dir "$WORK/d" > "$WORK/out2" 2> "$WORK/err2" &
until curl -fsS http://127.0.0.1:$PORT/-/ready > /dev/null 2>&1; do sleep 0.05; done
END=$(date +%s.%N)
awk -v s="$START" -v e="$END" 'BEGIN { printf "restart_to_ready_s=%.2f\n", e - s }'
grep -o 'replayed WAL.*' "$WORK/err2" | sed 's/\x1b\[[0-9;]*m//g' | head -3
