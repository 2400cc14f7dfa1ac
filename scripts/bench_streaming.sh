#!/usr/bin/env bash
# Benchmark: a steady stream into a table kept healthy by the compactor alone.
#
#   scripts/bench_streaming.sh [seconds] [records/s]     (default 180, 3000)
#
# Runs the release `tributary ingest` and `tributary compact` with default
# settings (a files source, a local table) while a writer adds one file of
# JSON envelopes (16 records each, event time now) every second for
# `seconds`; then waits for the backlog to drain and reports, with the
# Python deltalake package: rows, active data files per date partition (max
# and mean), mean file size, and what the compactor's upkeep merged. No
# `tributary optimize` is run. Builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-180}"
RATE="${2:-3000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
TESTBED="${TRIBUTARY_TESTBED:-$HOME/.cache/tributary-testbed}"
PY="${TRIBUTARY_PYTHON:-$TESTBED/venv/bin/python}"

cargo build --release --quiet --bin tributary
BIN="$CARGO_TARGET_DIR/release/tributary"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/in"
cat >"$WORK/tributary.toml" <<EOF
[lake]
table_uri = "$WORK/table"
subject_columns = ["messages_user"]

[ingest]
stream = "bench"

[ingest.files]
path = "$WORK/in"

[ingest.flatten]
explode = "messages"
key_field = "messages_id"
event_time_field = "messages_ts"
EOF
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
COMPACTOR_PORT="$(free_port)"
TRIBUTARY_LOG=warn TRIBUTARY_SERVICE__LISTEN_ADDR="127.0.0.1:$(free_port)" \
  "$BIN" ingest --config "$WORK/tributary.toml" >"$WORK/ingest.log" 2>&1 &
PIDS+=($!)
TRIBUTARY_LOG=warn TRIBUTARY_SERVICE__LISTEN_ADDR="127.0.0.1:$COMPACTOR_PORT" \
  "$BIN" compact --config "$WORK/tributary.toml" >"$WORK/compact.log" 2>&1 &
PIDS+=($!)

echo "streaming $RATE records/s for $SECONDS_TO_RUN s into $WORK/table ..."
"$PY" - "$WORK/in" "$SECONDS_TO_RUN" "$RATE" <<'PYEOF'
import json, os, sys, time
directory, seconds, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
start, n = time.time(), 0
for second in range(seconds):
    now_ms = int(time.time() * 1000)
    lines = []
    for _ in range(rate // 16):
        messages = [{"id": f"r{n + i}", "user": f"u{(n + i) % 50000}", "ts": now_ms,
                     "level": "info", "msg": "request served"} for i in range(16)]
        n += 16
        lines.append(json.dumps({"service": "api", "host": f"h{n % 8}", "messages": messages}))
    tmp = os.path.join(directory, f".{second}.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.rename(tmp, os.path.join(directory, f"{second:05}.ndjson"))
    time.sleep(max(0.0, start + second + 1 - time.time()))
print(n, file=open(os.path.join(directory, "..", "written"), "w"))
PYEOF

WRITTEN="$(cat "$WORK/written")"
echo "wrote $WRITTEN records; waiting for the compactor to catch up ..."
"$PY" - "$WORK/table" "$WRITTEN" "$COMPACTOR_PORT" "$SECONDS_TO_RUN" "$RATE" <<'PYEOF'
import collections, json, os, sys, time, urllib.request, deltalake
table, written, port, seconds, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def metrics():
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return {l.split()[0]: float(l.split()[1]) for l in body.splitlines() if l and not l.startswith("#")}
deadline = time.time() + 300
while time.time() < deadline:
    if metrics().get("tributary_compactor_compacted_rows_total", 0) >= written:
        break
    time.sleep(1)
time.sleep(15)  # the upkeep after the last round
t = deltalake.DeltaTable(table)
files = collections.Counter(u.rsplit("/", 2)[-2] for u in t.file_uris())
sizes = [os.path.getsize(u.removeprefix("file://")) for u in t.file_uris()]
m = metrics()
print(json.dumps({
    "bench": "streaming", "seconds": int(seconds), "records_per_sec": int(rate),
    "rows": t.to_pyarrow_table(columns=["_key"]).num_rows, "written": written,
    "partitions": len(files), "max_files_per_partition": max(files.values()),
    "mean_files_per_partition": sum(files.values()) / len(files),
    "mean_file_bytes": sum(sizes) / len(sizes),
    "upkeep_files_merged": m.get("tributary_compactor_optimized_files_total"),
    "upkeep_files_written": m.get("tributary_compactor_optimize_added_files_total"),
    "compaction_rounds_with_commits": m.get("tributary_compactor_commits_total"),
}), flush=True)
os._exit(0)  # deltalake's threads can abort a normal interpreter exit
PYEOF
