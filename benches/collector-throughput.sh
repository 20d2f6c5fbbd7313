#!/usr/bin/env bash
# Collector (issue 5): tail → parse → ship throughput per core, and RSS.
#
#   benches/collector-throughput.sh [MIB] [FILES] [IDLE_FILES]   # default: 512 50 200
#
# 1. Throughput: writes MIB MiB of CRI lines (Kubernetes-like: JSON access
#    logs, logfmt, plain text; every 20th line split into P/F pieces) over
#    FILES files laid out like a node (`containers/*.log` symlinks into
#    `pods/`), starts a release server and a release `tidewatch collector`
#    on the same machine, and waits until the collector's own counters say
#    every line was accepted. Reports the collector's MiB/s and lines/s per
#    CPU second (user + system, from /proc), wall time and peak RSS.
# 2. Idle: a fresh collector tails IDLE_FILES files that receive one line per
#    file every few seconds; reports its CPU over 30 s and its RSS.
# Needs: a release build, python3, curl.
set -euo pipefail
MIB=${1:-512}
FILES=${2:-50}
IDLE_FILES=${3:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TIDEWATCH_BIN:-$ROOT/target/release/tidewatch}
PORT=${TW_PORT:-19491}
CPORT=$((PORT + 1))
WORK=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "command: benches/collector-throughput.sh $MIB $FILES $IDLE_FILES"
echo "machine: nproc=$(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tidewatch: $(git -C "$ROOT" log -1 --format=%h 2>/dev/null || echo unknown)"

generate() { # DIR FILES MIB
python3 - "$@" <<'EOF'
import os, random, sys, datetime
root, files, mib = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
os.makedirs(f"{root}/containers", exist_ok=True)
random.seed(7)
per_file = int(mib * 1024 * 1024 / files) if mib > 0 else 0
base = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=30)
lines_total = 0
for f in range(files):
    pod, ns, ctr = f"app-{f}-7d9f8b", "bench", "main"
    d = f"{root}/pods/{ns}_{pod}_uid-{f}/{ctr}"
    os.makedirs(d, exist_ok=True)
    target = f"{d}/0.log"
    os.symlink(target, f"{root}/containers/{pod}_{ns}_{ctr}-{f:064x}.log")
    out, size, i = [], 0, 0
    while size < per_file:
        ts = (base + datetime.timedelta(microseconds=i * 10 + f)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
        kind = i % 3
        if kind == 0:
            msg = '{"ts":"%s","level":"info","method":"GET","path":"/api/v1/items/%d","status":200,"duration_ms":%d,"trace_id":"%016x"}' % (ts, random.randrange(100000), random.randrange(500), random.getrandbits(64))
        elif kind == 1:
            msg = 'level=warn msg="slow query" table=orders rows=%d elapsed=%dms user=u%d' % (random.randrange(10000), random.randrange(5000), random.randrange(1000))
        else:
            msg = "10.0.%d.%d - - GET /static/app.%x.js HTTP/1.1 304 0 Mozilla/5.0" % (random.randrange(255), random.randrange(255), random.getrandbits(32))
        if i % 20 == 0:
            half = len(msg) // 2
            line = f"{ts} stdout P {msg[:half]}\n{ts} stdout F {msg[half:]}\n"
        else:
            line = f"{ts} stdout F {msg}\n"
        out.append(line); size += len(line); i += 1
    with open(target, "w") as fh:
        fh.write("".join(out))
    lines_total += i
print(lines_total)
EOF
}

printf 'logs:\n  limits:\n    ingestion_rate_mb: 1000000\n    ingestion_burst_size_mb: 1000000\n    max_global_streams_per_user: 1000000\n' > "$WORK/server.yml"
"$BIN" server --listen 127.0.0.1:$PORT --data-dir "$WORK/data" --config "$WORK/server.yml" > "$WORK/server.out" 2> "$WORK/server.err" &
PIDS+=($!)

LINES=$(generate "$WORK/node" "$FILES" "$MIB")
BYTES=$(du -sbL "$WORK/node/pods" | cut -f1)
echo "input: $FILES files, $LINES lines, $BYTES bytes"
printf 'metrics: { enabled: false }\nlogs: { poll_interval: 100ms }\n' > "$WORK/collector.yml"
until curl -sf "http://127.0.0.1:$PORT/-/ready" > /dev/null; do sleep 0.1; done

t0=$(date +%s.%N)
"$BIN" collector --server "http://127.0.0.1:$PORT" --log-glob "$WORK/node/containers/*.log" --state-dir "$WORK/state" \
  --node bench --listen 127.0.0.1:$CPORT --config "$WORK/collector.yml" > "$WORK/collector.out" 2> "$WORK/collector.err" &
CPID=$!; PIDS+=($CPID)
sent() { curl -sf "http://127.0.0.1:$CPORT/metrics" 2>/dev/null | awk '/^tidewatch_collector_items_sent_total\{kind="logs"\}/ {print $2}'; }
# Every physical line is one entry except the P pieces (one per 20 lines).
EXPECTED=$(python3 -c "print($LINES)")
while true; do
  n=$(sent || echo 0); n=${n:-0}
  if [ "${n%.*}" -ge "$EXPECTED" ]; then break; fi
  sleep 0.2
done
t1=$(date +%s.%N)
read -r CPU RSS HWM < <(awk '{printf "%.2f ", ($14 + $15) / 100}' /proc/$CPID/stat; awk '/VmRSS/ {r=$2} /VmHWM/ {h=$2} END {print r, h}' /proc/$CPID/status)
awk -v b="$BYTES" -v n="$LINES" -v c="$CPU" -v w="$(echo "$t1 - $t0" | bc)" -v r="$RSS" -v h="$HWM" 'BEGIN {
  printf "throughput: %.1f MiB/s and %.0f lines/s per collector CPU second (cpu_s=%.2f, wall_s=%.1f, wall MiB/s=%.1f); RSS %.1f MB, peak %.1f MB\n",
    b / 1048576 / c, n / c, c, w, b / 1048576 / w, r / 1024, h / 1024 }'
kill $CPID; wait $CPID 2>/dev/null || true

# Idle tailing of many files.
generate "$WORK/idle" "$IDLE_FILES" 0 > /dev/null
"$BIN" collector --server "http://127.0.0.1:$PORT" --log-glob "$WORK/idle/containers/*.log" --state-dir "$WORK/idle-state" \
  --node bench --config "$WORK/collector.yml" > /dev/null 2> "$WORK/idle.err" &
IPID=$!; PIDS+=($IPID)
python3 - "$WORK/idle" 30 <<'EOF' &
import glob, sys, time, datetime
root, seconds = sys.argv[1], float(sys.argv[2])
files = sorted(glob.glob(f"{root}/pods/*/*/0.log"))
end = time.time() + seconds + 5
while time.time() < end:
    ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    for f in files:
        with open(f, "a") as fh:
            fh.write(f"{ts} stdout F heartbeat from {f}\n")
    time.sleep(5)
EOF
PIDS+=($!)
sleep 5
c0=$(awk '{print ($14 + $15) / 100}' /proc/$IPID/stat)
sleep 30
c1=$(awk '{print ($14 + $15) / 100}' /proc/$IPID/stat)
read -r RSS HWM < <(awk '/VmRSS/ {r=$2} /VmHWM/ {h=$2} END {print r, h}' /proc/$IPID/status)
awk -v c="$(echo "$c1 - $c0" | bc)" -v r="$RSS" -v h="$HWM" -v f="$IDLE_FILES" 'BEGIN {
  printf "idle: %d files, CPU %.2f%% of one core over 30 s, RSS %.1f MB (peak %.1f MB)\n", f, 100 * c / 30, r / 1024, h / 1024 }'
