#!/usr/bin/env bash
# Regenerates model/src/histogram_bounds.rs from Prometheus' own bucket bounds.
#
#   benches/prometheus-bucket-bounds.sh
#
# Prometheus computes exponential bucket bounds from a table of mantissas
# that are not all correctly rounded; Tidewatch prints and interpolates with
# the same values. For each schema 0..8 this starts Prometheus 2.42
# (`--enable-feature=native-histograms`), remote-writes native histograms of
# that schema with `tidewatch bench remote-write --native-histograms`, reads
# them back through `/api/v1/query`, takes the mantissa of every bucket bound
# printed (Prometheus prints the shortest decimal that round-trips, so the
# double is exact) and writes the table, failing if a schema's table is not
# complete or a mantissa comes back with two values.
# Needs: a release build, `apt-get install prometheus`, curl, python3.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TIDEWATCH_BIN:-$ROOT/target/release/tidewatch}
PORT=${PROM_PORT:-19600}
WORK=$(mktemp -d)
trap 'kill $PROM 2> /dev/null || true; rm -rf "$WORK"' EXIT
PROM=
for schema in 0 1 2 3 4 5 6 7 8; do
  printf 'global:\n  scrape_interval: 15s\n' > "$WORK/prometheus.yml"
  rm -rf "$WORK/data"
  prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" --web.listen-address=127.0.0.1:$PORT \
    --web.enable-remote-write-receiver --enable-feature=native-histograms > "$WORK/prometheus.log" 2>&1 &
  PROM=$!
  start_ms=$(( ( $(date +%s) - 200 * 15 ) * 1000 ))
  "$BIN" bench remote-write --url "http://127.0.0.1:$PORT/api/v1/write" --wait-for "http://127.0.0.1:$PORT/-/ready" \
    --series 400 --scrapes 200 --start-ms "$start_ms" --native-histograms --histogram-schema "$schema" > "$WORK/load.$schema" 2>&1
  curl -sS --data-urlencode query=http_request_duration_seconds --data-urlencode "time=$(( start_ms / 1000 + 199 * 15 ))" \
    "http://127.0.0.1:$PORT/api/v1/query" > "$WORK/schema$schema.json"
  kill $PROM; wait $PROM 2> /dev/null || true; PROM=
done
python3 - "$WORK" "$ROOT/model/src/histogram_bounds.rs" <<'PY'
import json, math, sys
work, out_path = sys.argv[1], sys.argv[2]
tables = []
for schema in range(9):
    steps = 1 << schema
    found = {}
    for series in json.load(open(f"{work}/schema{schema}.json"))["data"]["result"]:
        for bucket in series["histogram"][1]["buckets"]:
            for text in bucket[1:3]:
                value = abs(float(text))
                if value == 0 or math.isinf(value) or value == sys.float_info.max:
                    continue
                mantissa, _ = math.frexp(value)
                index = round((math.log2(mantissa) + 1) * steps) % steps
                if found.setdefault(index, mantissa) != mantissa:
                    sys.exit(f"schema {schema}: two mantissas for index {index}")
    missing = [i for i in range(steps) if i not in found]
    if missing:
        sys.exit(f"schema {schema}: no bucket bound seen for indexes {missing[:8]}: send more data")
    tables.append([found[i] for i in range(steps)])
lines = """//! Mantissas of exponential bucket bounds, `2^(i/2^schema - 1)` for `i` in
//! `[0, 2^schema)`, schemas 0 to 8, exactly as Prometheus computes them.
//!
//! Prometheus' values are not all the correctly rounded ones: two thirds are
//! one to four ulps off (2^-0.5 is 0.7071067811865475 there, correctly
//! rounded 0.7071067811865476). Bucket bounds reach clients (the query API
//! prints them) and every interpolation inside a bucket, so ours are
//! Prometheus' to the bit. They were read back from Prometheus' own query API
//! by `benches/prometheus-bucket-bounds.sh`, which writes this file: the
//! mantissa of every bucket bound it printed for native histograms of each
//! schema. The test in `histogram.rs` checks each against the formula.

// Written out as digits on purpose: the table is generated data.
#[allow(clippy::approx_constant, clippy::excessive_precision)]
pub(crate) const BOUND_FRACTIONS: [&[f64]; 9] = [""".split("\n")
for table in tables:
    if len(table) <= 4:
        lines.append("    &[" + ", ".join(repr(v) for v in table) + "],")
    else:
        lines.append("    &[")
        lines.extend(f"        {v!r}," for v in table)
        lines.append("    ],")
lines.append("];")
open(out_path, "w").write("\n".join(lines) + "\n")
print(f"wrote {out_path}: {sum(map(len, tables))} mantissas")
PY
