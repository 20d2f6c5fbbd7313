#!/usr/bin/env bash
# PromQL latency and memory, Tidewatch vs Prometheus 2.42, on identical data.
#
#   benches/compare-prometheus-query.sh [SERIES] [RUNS]
#
# Loads 4 h (960 scrapes, 15 s apart) of SERIES Kubernetes-like series
# (default 10000) into both receivers with `tidewatch bench remote-write`, in
# the live shape and with the same start time, then times issue 3's queries as
# range queries (4 h, step 60 s) and instant queries: one warm-up, then RUNS
# (default 5) timed requests each; prints medians, the ratio Tidewatch /
# Prometheus, the series returned, whether the two results agree (same label
# sets, values within 1e-9 relative), and each receiver's memory before and
# after the queries (VmRSS, VmHWM).
# Needs: `cargo build --release`, `apt-get install prometheus`, python3.
set -euo pipefail
SERIES=${1:-10000}
RUNS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TIDEWATCH_BIN:-$ROOT/target/release/tidewatch}
PROM=${PROMETHEUS_BIN:-prometheus}
TW_PORT=${TW_PORT:-19472}
PROM_PORT=${PROM_PORT:-19091}
TW_FLUSH=${TW_FLUSH:-1}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

echo "command: $0 $SERIES $RUNS"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"

SCRAPES=960
# Both receivers get the same samples: pin the start, a whole minute.
START_MS=$(( ( $(date +%s) - SCRAPES * 15 ) / 60 * 60 * 1000 ))
END_S=$(( START_MS / 1000 + (SCRAPES - 1) * 15 ))
# Query times 7 s off the 15 s scrape grid: no sample sits on a window edge,
# where Prometheus 2.42 (closed windows) and 3.x (left-open) legitimately differ.
Q_START=$(( START_MS / 1000 + 300 + 7 ))
Q_END=$(( Q_START + (END_S - Q_START) / 60 * 60 ))

"$BIN" server --listen 127.0.0.1:$TW_PORT --data-dir "$WORK/tw" > "$WORK/tw.out" 2> "$WORK/tw.err" &
TW_PID=$!; PIDS+=($TW_PID)
printf 'global:\n  scrape_interval: 15s\n' > "$WORK/prometheus.yml"
"$PROM" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" --web.listen-address=127.0.0.1:$PROM_PORT \
  --web.enable-remote-write-receiver --storage.tsdb.retention.time=30d --query.max-samples=500000000 \
  > "$WORK/prom.log" 2>&1 &
PROM_PID=$!; PIDS+=($PROM_PID)

for target in "tidewatch $TW_PORT $TW_PID" "prometheus $PROM_PORT $PROM_PID"; do
  set -- $target
  "$BIN" bench remote-write --url "http://127.0.0.1:$2/api/v1/write" --wait-for "http://127.0.0.1:$2/-/ready" \
    --series "$SERIES" --scrapes "$SCRAPES" --start-ms "$START_MS" | tail -1 | sed "s/^/load $1: /"
done
if [ "$TW_FLUSH" = 1 ]; then curl -fsS -XPOST "http://127.0.0.1:$TW_PORT/api/v1/admin/flush"; fi
sleep 5

QUERIES=(
  'sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))'
  'histogram_quantile(0.99, sum by (le, namespace) (rate(http_request_duration_seconds_bucket[5m])))'
  'topk(10, sum by (pod) (rate(http_requests_total[5m])))'
  'count by (__name__) ({__name__=~".+"})'
)

mem() { awk -v k="$2" '$1 == k":" {print $2 * 1024}' "/proc/$1/status"; }

# time_query PORT MODE QUERY OUT: prints the median seconds of RUNS requests.
time_query() {
  local port=$1 mode=$2 query=$3 out=$4 args
  if [ "$mode" = range ]; then
    args=(--data-urlencode "query=$query" --data-urlencode "start=$Q_START" --data-urlencode "end=$Q_END" --data-urlencode "step=60")
    path=query_range
  else
    args=(--data-urlencode "query=$query" --data-urlencode "time=$Q_END")
    path=query
  fi
  curl -s -o "$out" "${args[@]}" "http://127.0.0.1:$port/api/v1/$path" || true
  for _ in $(seq "$RUNS"); do
    curl -s -o "$out" -w '%{time_total}\n' "${args[@]}" "http://127.0.0.1:$port/api/v1/$path" || echo error
  done | python3 -c 'import sys, statistics; xs=[float(l) for l in sys.stdin if l.strip() != "error"]; print(f"{statistics.median(xs):.4f}" if xs else "error")'
}

# compare TW_JSON PROM_JSON: series count of Tidewatch's answer and whether it matches Prometheus'.
compare() {
  python3 - "$1" "$2" <<'PY'
import json, math, sys
def load(path):
    try:
        body = json.load(open(path))
    except Exception as e:
        return None, f"unreadable: {e}"
    if body.get("status") != "success":
        return None, body.get("error", "error")
    return body["data"], None
def points(data):
    out = {}
    for r in data["result"]:
        key = tuple(sorted(r["metric"].items()))
        values = r.get("values") or [r["value"]]
        out[key] = [(float(t), float(v)) for t, v in values]
    return out
def close(a, b):
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))
tw, tw_err = load(sys.argv[1])
pr, pr_err = load(sys.argv[2])
if tw_err or pr_err:
    print(f"- error: tidewatch={tw_err} prometheus={pr_err}")
    sys.exit()
a, b = points(tw), points(pr)
verdict = "match"
if a.keys() != b.keys():
    verdict = f"MISMATCH labels ({len(a)} vs {len(b)})"
else:
    for k in a:
        if len(a[k]) != len(b[k]) or any(ta != tb or not close(va, vb) for (ta, va), (tb, vb) in zip(a[k], b[k])):
            verdict = f"MISMATCH values {dict(k)}"
            break
print(f"{len(a)} {verdict}")
PY
}

echo
for i in "${!QUERIES[@]}"; do echo "Q$((i + 1)): ${QUERIES[$i]}"; done
printf '\n%-6s %-8s %-10s %-10s %-7s %s\n' query mode tidewatch prometheus ratio "series result"
# Peak RSS from here on is the queries' (writing 5 to clear_refs resets VmHWM).
echo 5 > /proc/$TW_PID/clear_refs 2>/dev/null || true
echo 5 > /proc/$PROM_PID/clear_refs 2>/dev/null || true
TW_RSS_BEFORE=$(mem $TW_PID VmRSS); PROM_RSS_BEFORE=$(mem $PROM_PID VmRSS)
for i in "${!QUERIES[@]}"; do
  query=${QUERIES[$i]}
  for mode in range instant; do
    tw=$(time_query $TW_PORT $mode "$query" "$WORK/tw.json")
    pr=$(time_query $PROM_PORT $mode "$query" "$WORK/prom.json")
    ratio=$(python3 -c "import sys; a, b = sys.argv[1:]; print(f'{float(a)/float(b):.3f}' if 'error' not in (a, b) and float(b) > 0 else '-')" "$tw" "$pr")
    verdict=$(compare "$WORK/tw.json" "$WORK/prom.json")
    printf '%-6s %-8s %-10s %-10s %-7s %s\n' "Q$((i + 1))" "$mode" "$tw" "$pr" "$ratio" "$verdict"
  done
done
echo
echo "memory (bytes): tidewatch rss_before=$TW_RSS_BEFORE peak=$(mem $TW_PID VmHWM) rss_after=$(mem $TW_PID VmRSS)"
echo "memory (bytes): prometheus rss_before=$PROM_RSS_BEFORE peak=$(mem $PROM_PID VmHWM) rss_after=$(mem $PROM_PID VmRSS)"
