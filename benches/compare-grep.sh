#!/usr/bin/env bash
# Logs (issue 4): ingest throughput per core, bytes on disk, and full-text
# search latency against grep and ripgrep over the same raw lines.
#
#   benches/compare-grep.sh [LINES] [STREAMS] [RUNS]     # default: 1000000 1000 5
#
# Starts a release server (ingestion limits raised so nothing is throttled),
# pushes LINES generated Kubernetes lines over STREAMS streams through the
# Loki push API with `tidewatch bench loki-push` (which also writes the same
# lines, newline-terminated, to a raw file), flushes everything into Parquet
# + Tantivy blocks and reports:
#   - ingest: lines/s and MB/s per CPU second of the server, for the push
#     alone and for push + flush (index built);
#   - disk: the log blocks' bytes vs the raw bytes;
#   - search: for a rare term (one UUID), a common term, a phrase, the median
#     of RUNS requests to /api/v1/logs/search (total hit count asked for, 100
#     hits returned; curl's time_total) next to `grep -c` and `rg -c` (fixed strings) over the raw
#     file, with the counts compared (they must be equal);
#   - a regex: a LogQL count, `sum(count_over_time({…} |~ "…" [range]))`
#     over everything, next to `grep -cE` and `rg -c`.
# Needs: a release build, curl, python3, grep; ripgrep if installed.
set -euo pipefail
LINES=${1:-1000000}
STREAMS=${2:-1000}
RUNS=${3:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TIDEWATCH_BIN:-$ROOT/target/release/tidewatch}
PORT=${TW_PORT:-19481}
WORK=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "command: benches/compare-grep.sh $LINES $STREAMS $RUNS"
echo "machine: nproc=$(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tidewatch: $(git -C "$ROOT" log -1 --format=%h 2>/dev/null || echo unknown)"
printf 'logs:\n  limits:\n    ingestion_rate_mb: 1000000\n    ingestion_burst_size_mb: 1000000\n    max_global_streams_per_user: 1000000\n' > "$WORK/config.yml"
"$BIN" server --listen 127.0.0.1:$PORT --data-dir "$WORK/data" --config "$WORK/config.yml" > "$WORK/server.out" 2> "$WORK/server.err" &
PID=$!
cpu() { awk '{print ($14 + $15) / 100}' /proc/$PID/stat; }

"$BIN" bench loki-push --url "http://127.0.0.1:$PORT/loki/api/v1/push" --wait-for "http://127.0.0.1:$PORT/-/ready" \
  --streams "$STREAMS" --lines "$LINES" --receiver-pid $PID --raw-file "$WORK/raw.log" 2>&1 | grep -v '^ ' | sed 's/^/push: /'
RAW=$(stat -c %s "$WORK/raw.log")
c0=$(cpu); t0=$(date +%s.%N)
curl -sS -XPOST "http://127.0.0.1:$PORT/api/v1/admin/flush" > /dev/null
c1=$(cpu); t1=$(date +%s.%N)
TOTAL_CPU=$c1
PEAK=$(awk '/^VmHWM/ {print $2 * 1024}' /proc/$PID/status)
awk -v c="$(echo "$c1 - $c0" | bc)" -v w="$(echo "$t1 - $t0" | bc)" -v p="$PEAK" 'BEGIN { printf "flush: wall_s=%.1f cpu_s=%.1f peak_rss_bytes (push and flush)=%d\n", w, c, p }'
awk -v n="$LINES" -v b="$RAW" -v c="$TOTAL_CPU" 'BEGIN { printf "ingest with index: lines_per_cpu_s=%.0f mb_per_cpu_s=%.1f (server CPU for push + flush: %.1f s)\n", n / c, b / c / 1e6, c }'
BLOCKS=$(du -sb "$WORK/data/logs" | cut -f1)
PARQUET=$(find "$WORK/data/logs" -name '*.parquet' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
INDEX=$(find "$WORK/data/logs" -path '*/index/*' -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
awk -v d="$BLOCKS" -v p="$PARQUET" -v i="$INDEX" -v r="$RAW" 'BEGIN { printf "disk: raw=%d B, on disk=%d B (%.1f%% of raw; parquet %.1f%%, index %.1f%%)\n", r, d, 100 * d / r, 100 * p / r, 100 * i / r }'

# The index by Tantivy file kind (.term dictionary, .idx postings, .pos
# positions, .fast fast fields, .store, .fieldnorm), to see what to trim.
find "$WORK/data/logs" -path '*/index/*' -type f -printf '%f %s\n' \
  | awk -v r="$RAW" '{n = split($1, a, "."); s[a[n]] += $2} END {for (e in s) printf "  index .%s: %.1f%% of raw\n", e, 100 * s[e] / r}' | sort
RARE=$(sed -n "$((LINES * 7 / 9))p" "$WORK/raw.log" | grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}' | head -1)
END_NS=$(date +%s%N)
median() { sort -g | awk '{x[NR] = $1} END {print x[int((NR + 1) / 2)]}'; }
# Output goes to a file: GNU grep stops at the first match when it sees /dev/null.
timeit() { local s e; s=$(date +%s%N); "$@" > "$WORK/out"; e=$(date +%s%N); echo "($e - $s) / 1000000" | bc -l; }
search() { curl -sS -G --data-urlencode "q=$1" --data-urlencode start=0 --data-urlencode "end=$END_NS" --data-urlencode limit=100 "http://127.0.0.1:$PORT/api/v1/logs/search"; }
# A request's latency as curl measures it (connect to last byte): what a
# long-lived client sees, without curl's own process start-up (several ms),
# which `timeit` would add. grep and rg are timed as processes.
request_ms() { curl -sS -o /dev/null -w '%{time_total}' "$@" | awk '{print $1 * 1000}'; }
search_ms() { request_ms -G --data-urlencode "q=$1" --data-urlencode start=0 --data-urlencode "end=$END_NS" --data-urlencode limit=100 "http://127.0.0.1:$PORT/api/v1/logs/search"; }
printf '%-28s %10s %12s %10s %12s %10s %8s %8s\n' query hits search_ms grep_hits grep_ms rg_ms vs_grep vs_rg
# One row: NAME HITS MS GREP_MODE PATTERN — Tidewatch's count and median
# time next to grep/rg over the raw file (GREP_MODE: -F fixed, -E regex).
row() {
  local name=$1 hits=$2 ts=$3 mode=$4 pattern=$5 gh tg tr rg_mode
  if [ "$mode" = -F ]; then rg_mode=-F; else rg_mode=-e; fi
  gh=$(grep -c "$mode" -- "$pattern" "$WORK/raw.log" || true)
  tg=$(for i in $(seq "$RUNS"); do timeit grep -c "$mode" -- "$pattern" "$WORK/raw.log"; done | median)
  if command -v rg > /dev/null; then
    tr=$(for i in $(seq "$RUNS"); do timeit rg -c "$rg_mode" "$pattern" "$WORK/raw.log"; done | median)
  else tr=nan; fi
  [ "$hits" = "$gh" ] || echo "MISMATCH: $name: tidewatch $hits vs grep $gh"
  awk -v n="$name" -v h="$hits" -v s="$ts" -v gh="$gh" -v g="$tg" -v r="$tr" 'BEGIN { printf "%-28s %10d %12.1f %10d %12.1f %10.1f %7.1fx %7.1fx\n", n, h, s, gh, g, r, g / s, r / s }'
}
for pair in "rare term|$RARE|$RARE" "common term|GET|GET" "phrase|\"request served\"|request served"; do
  IFS='|' read -r name q fixed <<< "$pair"
  hits=$(search "$q" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["total"])')
  row "$name" "$hits" "$(for i in $(seq "$RUNS"); do search_ms "$q"; done | median)" -F "$fixed"
done
# A regex has no index to lean on: LogQL counts it over every line.
REGEX='status=5[0-9][0-9]'
HOURS=$(( LINES / 3600000 + 2 ))
LOGQL="sum(count_over_time({namespace=~\".+\"} |~ \"$REGEX\" [${HOURS}h]))"
logql() { curl -sS -G --data-urlencode "query=$LOGQL" --data-urlencode "time=$END_NS" "http://127.0.0.1:$PORT/loki/api/v1/query"; }
logql_ms() { request_ms -G --data-urlencode "query=$LOGQL" --data-urlencode "time=$END_NS" "http://127.0.0.1:$PORT/loki/api/v1/query"; }
hits=$(logql | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
row "regex (LogQL count)" "$hits" "$(for i in $(seq "$RUNS"); do logql_ms; done | median)" -E "$REGEX"
