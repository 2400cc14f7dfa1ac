#!/usr/bin/env bash
# Benchmark: one backlog compacted by 1 and by 2 compactor processes.
#
#   scripts/bench_scale_out.sh [records]      (default 2000000)
#
# Writes `records` JSON log records (16 per envelope) in 4 files, stages them
# with `tributary ingest --once` (batches of 1,000 envelopes: many row files
# in 4 source partitions), copies the lake, and times `tributary compact
# --once` on one copy with one process and on the other with two processes
# started together (each compacts its share of the source partitions and
# waits for the other's; the time is until both exit). Prints both wall
# times, their ratio, and what each process compacted. Builds the release
# binary.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS="${1:-2000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
TESTBED="${TRIBUTARY_TESTBED:-$HOME/.cache/tributary-testbed}"
PY="${TRIBUTARY_PYTHON:-$TESTBED/venv/bin/python}"

cargo build --release --quiet --bin tributary
BIN="$CARGO_TARGET_DIR/release/tributary"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/in"

"$PY" - "$WORK/in" "$RECORDS" <<'PYEOF'
import json, os, sys
directory, records = sys.argv[1], int(sys.argv[2])
files = [open(os.path.join(directory, f"part-{i}.ndjson"), "w") for i in range(4)]
base_ms = 1_795_478_400_000
for n in range(0, records, 16):
    messages = [{"id": f"r{i}", "user": f"u{i % 100000}", "ts": base_ms + i * 250,
                 "level": "info", "msg": f"request {i} served"} for i in range(n, min(n + 16, records))]
    files[(n // 16) % 4].write(json.dumps({"service": "api", "messages": messages}) + "\n")
for f in files:
    f.close()
PYEOF

config() {
  cat <<EOF
[lake]
table_uri = "$1"
subject_columns = ["messages_user"]

[ingest]
stream = "bench"

[ingest.files]
path = "$WORK/in"

[ingest.batch]
max_records = 1000

[ingest.flatten]
explode = "messages"
key_field = "messages_id"
event_time_field = "messages_ts"
EOF
}
config "$WORK/one" >"$WORK/one.toml"
config "$WORK/two" >"$WORK/two.toml"
echo "staging $RECORDS records ..."
TRIBUTARY_LOG=warn "$BIN" ingest --config "$WORK/one.toml" --once >/dev/null
cp -r "$WORK/one" "$WORK/two"
staged="$(find "$WORK/one/_tributary/staging" -name '*.avro' | wc -l)"

export MALLOC_ARENA_MAX=2 TRIBUTARY_LOG=warn TRIBUTARY_SERVICE__LISTEN_ADDR=127.0.0.1:0
start="$EPOCHREALTIME"
"$BIN" compact --config "$WORK/one.toml" --once >"$WORK/one.json"
one="$start $EPOCHREALTIME"
start="$EPOCHREALTIME"
"$BIN" compact --config "$WORK/two.toml" --once >"$WORK/two-a.json" &
a=$!
"$BIN" compact --config "$WORK/two.toml" --once >"$WORK/two-b.json" &
b=$!
wait "$a" "$b"
two="$start $EPOCHREALTIME"

"$PY" - "$WORK" "$RECORDS" "$staged" "$one" "$two" <<'PYEOF'
import json, os, sys, deltalake
work, records, staged = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
span = lambda text: float(text.split()[1]) - float(text.split()[0])
one, two = span(sys.argv[4]), span(sys.argv[5])
report = lambda name: json.load(open(os.path.join(work, name)))
rows = lambda table: deltalake.DeltaTable(os.path.join(work, table)).to_pyarrow_table(columns=["_key"]).num_rows
print(json.dumps({
    "bench": "scale_out", "records": records, "staged_row_files": staged,
    "one_compactor_secs": round(one, 2), "two_compactors_secs": round(two, 2),
    "speedup": round(one / two, 2),
    "files_compacted_by_each_of_two": [report("two-a.json")["files_compacted"], report("two-b.json")["files_compacted"]],
    "rows": [rows("one"), rows("two")],
}), flush=True)
os._exit(0)
PYEOF
