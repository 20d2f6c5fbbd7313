#!/usr/bin/env bash
# End-to-end ingest comparison: Tidewatch and Prometheus 2.42 receive identical
# remote write load from `tidewatch bench remote-write`, in the same run.
#
#   benches/compare-prometheus.sh [SERIES] [SCRAPES] [SHAPE]
#
# SHAPE is `live` (one sample per series per request, Prometheus' own shape) or
# `backfill`. Reports, for each receiver: samples per CPU-second, peak RSS per
# series, and bytes per sample on disk once the data is in blocks (Tidewatch:
# /api/v1/admin/flush; Prometheus: a TSDB snapshot, which writes the head out).
# Needs: `cargo build --release`, and `apt-get install prometheus`.
set -euo pipefail
SERIES=${1:-10000}
SCRAPES=${2:-40}
SHAPE=${3:-live}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TIDEWATCH_BIN:-$ROOT/target/release/tidewatch}
PROM=${PROMETHEUS_BIN:-prometheus}
WORK=$(mktemp -d)
TW_PORT=${TW_PORT:-19470}
PROM_PORT=${PROM_PORT:-19090}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

BACKFILL=()
[ "$SHAPE" = backfill ] && BACKFILL=(--backfill --series-per-request 100)

du_bytes() { du -sb "$1" | cut -f1; }

# Tidewatch
"$BIN" server --listen 127.0.0.1:$TW_PORT --data-dir "$WORK/tw" > "$WORK/tw.out" 2> "$WORK/tw.err" &
TW_PID=$!; PIDS+=($TW_PID)
"$BIN" bench remote-write --url http://127.0.0.1:$TW_PORT/api/v1/write --wait-for http://127.0.0.1:$TW_PORT/-/ready \
  --series "$SERIES" --scrapes "$SCRAPES" --receiver-pid $TW_PID "${BACKFILL[@]}" | sed 's/^/tidewatch   /'
curl -fsS -XPOST http://127.0.0.1:$TW_PORT/api/v1/admin/flush
TW_BLOCKS=$(du_bytes "$WORK/tw/blocks")
kill $TW_PID; wait $TW_PID 2>/dev/null || true

# Prometheus 2.42
printf 'global:\n  scrape_interval: 15s\n' > "$WORK/prometheus.yml"
"$PROM" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" --web.listen-address=127.0.0.1:$PROM_PORT \
  --web.enable-remote-write-receiver --web.enable-admin-api > "$WORK/prom.log" 2>&1 &
PROM_PID=$!; PIDS+=($PROM_PID)
"$BIN" bench remote-write --url http://127.0.0.1:$PROM_PORT/api/v1/write --wait-for http://127.0.0.1:$PROM_PORT/-/ready \
  --series "$SERIES" --scrapes "$SCRAPES" --receiver-pid $PROM_PID "${BACKFILL[@]}" | sed 's/^/prometheus  /'
SNAPSHOT=$(curl -fsS -XPOST http://127.0.0.1:$PROM_PORT/api/v1/admin/tsdb/snapshot | sed -E 's/.*"name":"([^"]+)".*/\1/')
PROM_BLOCKS=$(du_bytes "$WORK/prom/snapshots/$SNAPSHOT")
kill $PROM_PID; wait $PROM_PID 2>/dev/null || true

SAMPLES=$((SERIES * SCRAPES))
awk -v s="$SAMPLES" -v tw="$TW_BLOCKS" -v pr="$PROM_BLOCKS" 'BEGIN {
  printf "disk: samples=%d tidewatch_bytes=%d (%.3f B/sample) prometheus_bytes=%d (%.3f B/sample) ratio=%.3f\n",
    s, tw, tw / s, pr, pr / s, tw / pr }'
