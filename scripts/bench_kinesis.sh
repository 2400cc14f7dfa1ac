#!/usr/bin/env bash
# Benchmark: records/s from a Kinesis server (kinesalite) to staged row files.
#
#   scripts/bench_kinesis.sh [records]      (default 200000)
#
# Puts `records` JSON log records (about 200 bytes each, 4 shards) twice: as
# plain records, and KPL-aggregated (100 user records per Kinesis record);
# then times `tributary ingest --once` on each stream (wall clock, and the
# ingest process's own CPU seconds from /usr/bin/time) into a local table.
# Uses $TRIBUTARY_KINESIS_ENDPOINT if set, else starts kinesalite from
# $TRIBUTARY_TESTBED (installed by scripts/test.sh). Builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS="${1:-200000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
TESTBED="${TRIBUTARY_TESTBED:-$HOME/.cache/tributary-testbed}"
PY="${TRIBUTARY_PYTHON:-$TESTBED/venv/bin/python}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-tributary-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-tributary-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}" AWS_EC2_METADATA_DISABLED=true

cargo build --release --quiet --bin tributary
BIN="$CARGO_TARGET_DIR/release/tributary"
WORK="$(mktemp -d)"
cleanup() { [ -n "${KL_PID:-}" ] && kill "$KL_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
if [ -z "${TRIBUTARY_KINESIS_ENDPOINT:-}" ]; then
  PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  "$TESTBED/kinesalite/node_modules/.bin/kinesalite" --port "$PORT" --createStreamMs 0 >"$WORK/kinesalite.log" 2>&1 &
  KL_PID=$!
  export TRIBUTARY_KINESIS_ENDPOINT="http://127.0.0.1:$PORT"
  sleep 1
fi

SUFFIX="$(date +%s)"
"$PY" - "$RECORDS" "$SUFFIX" <<'PYEOF'
import boto3, hashlib, json, os, sys, time
records, suffix = int(sys.argv[1]), sys.argv[2]
k = boto3.client("kinesis", endpoint_url=os.environ["TRIBUTARY_KINESIS_ENDPOINT"], region_name=os.environ["AWS_REGION"])
def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7f) | 0x80); v >>= 7
    out.append(v)
    return bytes(out)
def field(n, data):
    return varint(n << 3 | 2) + varint(len(data)) + data
def aggregate(users):
    body = field(1, b"pk")
    for data in users:
        body += field(3, varint(1 << 3) + varint(0) + field(3, data))
    return b"\xf3\x89\x9a\xc2" + body + hashlib.md5(body).digest()
def put_all(stream, recs):
    chunks, chunk, size = [], [], 0
    for rec in recs:  # at most 500 records and 4 MB per call
        if chunk and (len(chunk) == 500 or size + len(rec[0]) > 4_000_000):
            chunks.append(chunk); chunk, size = [], 0
        chunk.append(rec); size += len(rec[0])
    chunks.append(chunk)
    for pending in chunks:
        while pending:
            r = k.put_records(StreamName=stream, Records=[{"Data": d, "PartitionKey": p} for d, p in pending])
            pending = [x for x, res in zip(pending, r["Records"]) if "ErrorCode" in res]
def record(n):
    return json.dumps({"id": f"r{n}", "host": f"web-{n % 17}", "level": ["info", "warn", "error"][n % 3],
                       "ts": 1795478400000 + n, "user_id": f"u{n % 1000}",
                       "message": f"GET /api/v1/items/{n} 200 in {n % 97} ms from 10.0.{n % 256}.{n % 199}"}).encode()
for name in (f"bench-plain-{suffix}", f"bench-kpl-{suffix}"):
    k.create_stream(StreamName=name, ShardCount=4)
    while k.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        time.sleep(0.1)
t = time.time()
put_all(f"bench-plain-{suffix}", [(record(n), f"p{n}") for n in range(records)])
put_all(f"bench-kpl-{suffix}", [(aggregate([record(n) for n in range(b, min(b + 100, records))]), f"p{b}")
                                for b in range(0, records, 100)])
print(f"produced {records} records twice in {time.time() - t:.1f}s", file=sys.stderr)
PYEOF

for kind in plain kpl; do
  rm -rf "$WORK/table"
  cat >"$WORK/$kind.toml" <<TOML
[lake]
table_uri = "$WORK/table"
[ingest]
stream = "bench"
[ingest.kinesis]
stream_name = "bench-$kind-$SUFFIX"
endpoint = "$TRIBUTARY_KINESIS_ENDPOINT"
min_poll_interval_ms = 200
[ingest.batch]
max_records = 50000
[ingest.flatten]
key_field = "id"
event_time_field = "ts"
TOML
  /usr/bin/time -f "%e %U %S" -o "$WORK/time" "$BIN" ingest --config "$WORK/$kind.toml" --once >/dev/null 2>"$WORK/ingest.log" \
    || { cat "$WORK/ingest.log"; exit 1; }
  read -r wall user sys <"$WORK/time"
  files=$(find "$WORK/table/_tributary/staging" -name '*.avro' | wc -l)
  "$PY" -c "
r, w, cpu = $RECORDS, $wall, $user + $sys
print(f'$kind: {r} records in {w:.2f}s = {r / w:,.0f} records/s; ingest CPU {cpu:.2f}s = {cpu / r * 1e6:.1f} CPU-s per million records; $files row files')"
done
