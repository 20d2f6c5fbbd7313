#!/usr/bin/env bash
# PromQL latency and memory, Tidewatch vs Prometheus 2.42, on identical data
# (issue 3).
#
#   benches/compare-prometheus-query.sh [SERIES] [RUNS]      # default: 10000 5
#
# Starts both servers, loads 4 h (960 scrapes, 15 s apart) of SERIES
# Kubernetes-like series into each with `tidewatch bench remote-write` (live
# shape, the same pinned --start-ms, so both hold the same samples; Prometheus
# rejects out-of-order backfill), flushes Tidewatch's head into blocks
# (TW_FLUSH=0 to skip), lets both settle, then times issue 3's queries as range
# queries (4 h, step 60 s, from data start + 5 m) and as instant queries at the
# data end: one warm-up, then RUNS timed requests (curl time_total), median.
# Prints per query and mode: both medians, the ratio Tidewatch / Prometheus,
# the series returned by each, and whether the answers agree (same label sets,
# same timestamps, values within 1e-9 relative); then each server's memory:
# VmRSS just before the queries, peak VmHWM during them, and the growth.
# A query a server fails is marked `error` (its error body is printed) and the
# run goes on.
#
# Query times sit 7 s off the 15 s scrape grid: a sample exactly on a window's
# left edge is inside the window in Prometheus 2.42 (closed windows) and
# outside in Prometheus 3.x and Tidewatch (left-open); off the grid both agree.
#
# NATIVE_HISTOGRAMS=1 loads native histograms instead (`--native-histograms`:
# one `http_request_duration_seconds` per pod and route, SERIES of them,
# exponential schema 3, counter resets), starts Prometheus with
# `--enable-feature=native-histograms`, and times native-histogram queries
# (H1..H4 below) the same way; histogram answers must be equal too (schema,
# zero bucket, counts, sum and every bucket, within 1e-9 relative).
#
# Environment: TW_PORT (19472), PROM_PORT (19091), TW_FLUSH (1), SETTLE (5 s),
# QUERY_TIMEOUT (300 s per request), NATIVE_HISTOGRAMS (0), TIDEWATCH_BIN,
# PROMETHEUS_BIN.
# Needs: a release build (`cargo build --release`), `apt-get install prometheus`
# (2.42), curl and python3.
set -euo pipefail
ARGS="$*"
ENV_SET=""   # the overrides given, for the command line printed below
for v in TW_PORT PROM_PORT TW_FLUSH SETTLE QUERY_TIMEOUT NATIVE_HISTOGRAMS TIDEWATCH_BIN PROMETHEUS_BIN; do
  if [ -n "${!v+x}" ]; then ENV_SET+="$v=${!v} "; fi
done
SERIES=${1:-10000}
RUNS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TIDEWATCH_BIN:-$ROOT/target/release/tidewatch}
PROM=${PROMETHEUS_BIN:-prometheus}
TW_PORT=${TW_PORT:-19472}
PROM_PORT=${PROM_PORT:-19091}
TW_FLUSH=${TW_FLUSH:-1}
SETTLE=${SETTLE:-5}
QUERY_TIMEOUT=${QUERY_TIMEOUT:-300}
NATIVE_HISTOGRAMS=${NATIVE_HISTOGRAMS:-0}
LOAD_ARGS=()
PROM_FEATURES=()
if [ "$NATIVE_HISTOGRAMS" = 1 ]; then
  LOAD_ARGS=(--native-histograms)
  PROM_FEATURES=(--enable-feature=native-histograms)
fi
SCRAPES=960

for tool in curl python3 "$PROM" "$BIN"; do
  command -v "$tool" > /dev/null || { echo "missing: $tool (prometheus: apt-get install prometheus; tidewatch: cargo build --release)" >&2; exit 1; }
done
for port in "$TW_PORT" "$PROM_PORT"; do
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; then
    echo "port $port is already in use (set TW_PORT / PROM_PORT)" >&2; exit 1
  fi
done

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local p i
  for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${PIDS[@]}"; do
    for i in $(seq 100); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -9 "$p" 2> /dev/null || true
    wait "$p" 2> /dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "command: ${ENV_SET}benches/compare-prometheus-query.sh${ARGS:+ $ARGS}   (series=$SERIES runs=$RUNS tw_flush=$TW_FLUSH)"
echo "machine: nproc=$(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, load average $(cut -d' ' -f1-3 /proc/loadavg)"
TW_COMMIT=$(git -C "$ROOT" log -1 --format=%h 2> /dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2> /dev/null || TW_COMMIT+=" (+ uncommitted changes in the tree)"
echo "tidewatch: $BIN, built $(date -r "$BIN" '+%Y-%m-%d %H:%M'), tree at $TW_COMMIT"
echo "prometheus: $("$PROM" --version 2>&1 | head -1)"

# Both receivers get the same samples: the start is pinned once, a whole minute.
START_MS=$(( ( $(date +%s) - SCRAPES * 15 ) / 60 * 60 * 1000 ))
START_S=$(( START_MS / 1000 ))
END_S=$(( START_S + (SCRAPES - 1) * 15 ))   # the last sample
Q_START=$(( START_S + 300 + 7 ))             # windows full, off the grid
Q_END=$(( END_S + 7 ))                       # "now", 7 s after the last scrape
STEP=60
utc() { date -u -d "@$1" '+%Y-%m-%dT%H:%M:%SZ'; }
echo "data: $SERIES series x $SCRAPES scrapes (15 s) = $(( SERIES * SCRAPES )) samples, $(utc $START_S) .. $(utc $END_S) (--start-ms $START_MS)"
echo "queries: range start=$(utc $Q_START) end=$(utc $Q_END) step=${STEP}s; instant time=$(utc $Q_END)"
echo

# Servers
"$BIN" server --listen 127.0.0.1:$TW_PORT --data-dir "$WORK/tw" > "$WORK/tw.out" 2> "$WORK/tw.err" &
TW_PID=$!; PIDS+=($TW_PID)
printf 'global:\n  scrape_interval: 15s\n' > "$WORK/prometheus.yml"
"$PROM" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" --web.listen-address=127.0.0.1:$PROM_PORT \
  --web.enable-remote-write-receiver --storage.tsdb.retention.time=30d --query.max-samples=500000000 \
  "${PROM_FEATURES[@]}" > "$WORK/prom.log" 2>&1 &
PROM_PID=$!; PIDS+=($PROM_PID)

# load NAME PORT PID: sends the 4 h; a failed request is reported, not fatal.
load() {
  local name=$1 port=$2 pid=$3 rc=0 t0 t1
  t0=$(date +%s.%N)
  "$BIN" bench remote-write --url "http://127.0.0.1:$port/api/v1/write" --wait-for "http://127.0.0.1:$port/-/ready" \
    --series "$SERIES" --scrapes "$SCRAPES" --start-ms "$START_MS" --receiver-pid "$pid" "${LOAD_ARGS[@]}" \
    > "$WORK/load.$name" 2>&1 &
  local lp=$!; PIDS+=($lp)
  wait $lp || rc=$?
  t1=$(date +%s.%N)
  grep -v '^shape=' "$WORK/load.$name" | sed "s/^/load $name: /" || true
  awk -v a="$t0" -v b="$t1" -v n="$name" 'BEGIN { printf "load %s: wall_s=%.1f\n", n, b - a }'
  if ! kill -0 "$pid" 2> /dev/null; then
    echo "load $name: the server exited; its log:" >&2
    tail -20 "$WORK/$name".{err,log} 2> /dev/null >&2 || true
    exit 1
  fi
  [ $rc = 0 ] || echo "load $name: WARNING: the load generator failed (exit $rc); results below may not match"
}
load tidewatch $TW_PORT $TW_PID
if [ "$TW_FLUSH" = 1 ]; then
  t0=$(date +%s.%N)
  if curl -sS --max-time 600 -o "$WORK/flush.out" -w '%{http_code}' -XPOST "http://127.0.0.1:$TW_PORT/api/v1/admin/flush" > "$WORK/flush.code" \
     && [[ $(cat "$WORK/flush.code") == 2* ]]; then
    awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "load tidewatch: flushed the head into blocks in %.1f s\n", b - a }'
  else
    echo "load tidewatch: WARNING: flush failed: HTTP $(cat "$WORK/flush.code" 2> /dev/null) $(head -c 300 "$WORK/flush.out" 2> /dev/null)"
  fi
fi
load prometheus $PROM_PORT $PROM_PID
sleep "$SETTLE"
# What Prometheus holds: blocks compacted out of its head during the load, rejected samples.
curl -s "http://127.0.0.1:$PROM_PORT/metrics" | awk '
  /^prometheus_tsdb_(blocks_loaded|head_series|head_samples_appended_total|out_of_bound_samples_total|out_of_order_samples_total|too_old_samples_total|compactions_total) / ||
  /^prometheus_tsdb_(head_samples_appended_total|out_of_bound_samples_total|out_of_order_samples_total|too_old_samples_total)\{/ {
    name = $1; sub(/\{.*/, "", name); sub(/^prometheus_tsdb_/, "", name); v[name] += $2 }
  END { printf "prometheus tsdb:"; for (k in v) printf " %s=%d", k, v[k]; print "" }'

QUERIES=(
  'sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))'
  'histogram_quantile(0.99, sum by (le, namespace) (rate(http_request_duration_seconds_bucket[5m])))'
  'topk(10, sum by (pod) (rate(http_requests_total[5m])))'
  'count by (__name__) ({__name__=~".+"})'
)
QUERY_NAMES=(Q1 Q2 Q3 Q4)
if [ "$NATIVE_HISTOGRAMS" = 1 ]; then
  QUERIES=(
    'histogram_quantile(0.99, sum by (namespace) (rate(http_request_duration_seconds[5m])))'
    'sum by (route) (rate(http_request_duration_seconds[5m]))'
    'histogram_count(sum by (namespace, route) (rate(http_request_duration_seconds[5m])))'
    'histogram_fraction(0, 0.1, sum by (namespace) (rate(http_request_duration_seconds[5m])))'
  )
  QUERY_NAMES=(H1 H2 H3 H4)
fi

mem() { awk -v k="$2" '$1 == k":" {printf "%d\n", $2 * 1024}' "/proc/$1/status"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# request PORT MODE QUERY OUT: one request; prints "HTTP_CODE SECONDS", fails if the
# answer is not "status":"success".
request() {
  local port=$1 mode=$2 query=$3 out=$4 path args w
  if [ "$mode" = range ]; then
    path=query_range; args=(--data-urlencode "start=$Q_START" --data-urlencode "end=$Q_END" --data-urlencode "step=$STEP")
  else
    path=query; args=(--data-urlencode "time=$Q_END")
  fi
  w=$(curl -s --max-time "$QUERY_TIMEOUT" -o "$out" -w '%{http_code} %{time_total}' \
        --data-urlencode "query=$query" "${args[@]}" "http://127.0.0.1:$port/api/v1/$path") || { echo "curl-exit-$? ${w:-}"; return 1; }
  echo "$w"
  grep -qE '"status" *: *"success"' "$out"
}

# cell NAME PORT MODE QUERY: warm-up + RUNS timed requests; prints the median seconds,
# or `error` (the failing answer goes to $WORK/NAME.err). Leaves the last answer in $WORK/NAME.json.
cell() {
  local name=$1 port=$2 mode=$3 query=$4 times=() w
  rm -f "$WORK/$name.err" "$WORK/$name.json"
  for i in $(seq 0 "$RUNS"); do
    if ! w=$(request "$port" "$mode" "$query" "$WORK/$name.json"); then
      { echo "HTTP ${w%% *} (request $i of $RUNS, 0 = warm-up): $(head -c 400 "$WORK/$name.json" 2> /dev/null)"; } > "$WORK/$name.err"
      echo error; return
    fi
    [ "$i" = 0 ] || times+=("${w#* }")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk '{ x[NR] = $1 } END { m = NR % 2 ? x[(NR + 1) / 2] : (x[NR / 2] + x[NR / 2 + 1]) / 2; printf "%.4f\n", m }'
}

# compare TW_JSON PROM_JSON: "tw_series prom_series verdict".
compare() {
  python3 - "$1" "$2" <<'PY'
import json, math, sys
def load(path):
    try:
        body = json.load(open(path))
    except Exception:
        return None
    return body["data"] if body.get("status") == "success" else None
def histogram(h):
    # Prometheus' JSON: count, sum and [boundary rule, lower, upper, count] per bucket.
    buckets = tuple((int(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in h.get("buckets", []))
    return (float(h["count"]), float(h["sum"]), buckets)
def points(data):
    out = {}
    for r in data["result"]:
        key = tuple(sorted(r["metric"].items()))
        floats = r.get("values") or ([r["value"]] if "value" in r else [])
        hists = r.get("histograms") or ([r["histogram"]] if "histogram" in r else [])
        series = [(float(t), float(v)) for t, v in floats] + [(float(t), histogram(h)) for t, h in hists]
        out[key] = sorted(series, key=lambda p: p[0])
    return out
def close(a, b):
    if isinstance(a, tuple) or isinstance(b, tuple):
        if not (isinstance(a, tuple) and isinstance(b, tuple)) or len(a) != len(b):
            return False
        return all(close(x, y) for x, y in zip(a, b))
    if math.isnan(a) and math.isnan(b):
        return True
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))
tw, pr = load(sys.argv[1]), load(sys.argv[2])
a = points(tw) if tw else None
b = points(pr) if pr else None
n = lambda x: str(len(x)) if x is not None else "-"
if a is None or b is None:
    verdict = "-"
elif tw["resultType"] != pr["resultType"]:
    verdict = f"MISMATCH type {tw['resultType']} vs {pr['resultType']}"
elif a.keys() != b.keys():
    only_tw, only_pr = len(a.keys() - b.keys()), len(b.keys() - a.keys())
    example = next(iter(b.keys() - a.keys()), None) or next(iter(a.keys() - b.keys()))
    verdict = f"MISMATCH labels: {only_tw} only in tidewatch, {only_pr} only in prometheus, e.g. {dict(example)}"
else:
    verdict = "match"
    for k in sorted(a):
        ta, tb = [t for t, _ in a[k]], [t for t, _ in b[k]]
        if ta != tb:
            verdict = f"MISMATCH timestamps ({len(ta)} vs {len(tb)} points) {dict(k)}"
            break
        bad = [(t, va, vb) for (t, va), (_, vb) in zip(a[k], b[k]) if not close(va, vb)]
        if bad:
            t, va, vb = bad[0]
            verdict = f"MISMATCH values ({len(bad)} points) {dict(k)} at {t:.0f}: {va!r} vs {vb!r}"
            break
print(n(a), n(b), verdict)
PY
}

echo
for i in "${!QUERIES[@]}"; do echo "${QUERY_NAMES[$i]}: ${QUERIES[$i]}"; done
echo
FMT='%-4s %-8s %12s %12s %8s %15s  %s\n'
printf "$FMT" query mode tidewatch_s prometheus_s tw/prom "series tw/prom" result
# Peak RSS from here on is the queries': writing 5 to clear_refs resets VmHWM to VmRSS.
HWM_RESET=yes
for p in $TW_PID $PROM_PID; do echo 5 > /proc/$p/clear_refs 2> /dev/null || HWM_RESET=no; done
TW_RSS_BEFORE=$(mem $TW_PID VmRSS); PROM_RSS_BEFORE=$(mem $PROM_PID VmRSS)
ERRORS=0; MISMATCHES=0
for i in "${!QUERIES[@]}"; do
  query=${QUERIES[$i]}
  for mode in range instant; do
    tw=$(cell tidewatch $TW_PORT $mode "$query")
    pr=$(cell prometheus $PROM_PORT $mode "$query")
    ratio=$(awk -v a="$tw" -v b="$pr" 'BEGIN { if (a == "error" || b == "error" || b + 0 <= 0) print "-"; else printf "%.3f\n", a / b }')
    read -r n_tw n_pr verdict < <(compare "$WORK/tidewatch.json" "$WORK/prometheus.json")
    [ -f "$WORK/tidewatch.err" ] && n_tw=error
    [ -f "$WORK/prometheus.err" ] && n_pr=error
    [ "$tw" = error ] || [ "$pr" = error ] && verdict="- (error)" && ERRORS=$((ERRORS + 1))
    [[ $verdict == MISMATCH* ]] && MISMATCHES=$((MISMATCHES + 1))
    printf "$FMT" "${QUERY_NAMES[$i]}" "$mode" "$tw" "$pr" "$ratio" "$n_tw/$n_pr" "$verdict"
    for s in tidewatch prometheus; do
      [ -f "$WORK/$s.err" ] && echo "       $s error: $(tr -d '\n' < "$WORK/$s.err")"
    done
  done
done

echo
TW_HWM=$(mem $TW_PID VmHWM); PROM_HWM=$(mem $PROM_PID VmHWM)
echo "memory (VmRSS before the queries, VmHWM peak $( [ $HWM_RESET = yes ] && echo 'during the queries' || echo 'since start: clear_refs failed'), growth = peak - before):"
printf '  %-11s before=%-12s peak=%-12s growth=%-12s after=%s\n' \
  tidewatch "$(mib "$TW_RSS_BEFORE")" "$(mib "$TW_HWM")" "$(mib $((TW_HWM - TW_RSS_BEFORE)))" "$(mib "$(mem $TW_PID VmRSS)")" \
  prometheus "$(mib "$PROM_RSS_BEFORE")" "$(mib "$PROM_HWM")" "$(mib $((PROM_HWM - PROM_RSS_BEFORE)))" "$(mib "$(mem $PROM_PID VmRSS)")"
awk -v t="$TW_HWM" -v p="$PROM_HWM" 'BEGIN { printf "  peak ratio tw/prom=%.3f\n", t / p }'
echo "cells with an error: $ERRORS; results that differ: $MISMATCHES"
