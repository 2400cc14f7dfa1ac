#!/usr/bin/env bash
# Runs every check and test of the workspace, installing what the tests need.
#
#   scripts/test.sh
#
# Build artifacts go where `cargo run --release` (the README's first command)
# put them, so this reuses that build; test tools are cached outside the
# checkout, so a second run is fast and a clean clone reuses them:
#   CARGO_TARGET_DIR   (default ./target; .ci/run sets
#                      ~/.cache/tributary/target)
#   TRIBUTARY_TESTBED  (default ~/.cache/tributary-testbed): the Python
#                      virtualenv with deltalake, pyarrow, fastavro, moto
#                      (the S3 and Glue test server, with boto3), the deploy/
#                      validators (kubernetes-validate, botocore), and the
#                      third-party registry clients and serializers
#                      (confluent-kafka, aws-glue-schema-registry), trustme
#                      (test certificate authorities); the
#                      Kafka-protocol test broker tansu under cargo/bin
#                      (built from crates.io once: 15-35 minutes, in the
#                      background while the workspace builds); kinesalite
#                      (npm; the Kinesis test server) under kinesalite/;
#                      cargo-fuzz under fuzz-tools/.
# Prometheus and promtool come from Debian's prometheus package (apt-get,
# which needs root or sudo; installed once). kinesalite needs Node.js and npm.
# Everything is built once, in the release profile that the quickstart uses.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
TESTBED="${TRIBUTARY_TESTBED:-$HOME/.cache/tributary-testbed}"
mkdir -p "$TESTBED"

# Each step's header shows the seconds since the script started.
step() { printf '\n==> %s (at %ds)\n' "$*" "$SECONDS"; }

# The test broker (tansu 0.6.0; later releases need a newer Rust) takes long
# to build, so it builds in the background while the workspace does, at
# opt-level 1: 13 min and 22 CPU-minutes here, against 31.5 CPU-minutes at
# the release default, and fast enough for the tests. Each Kafka test starts
# its own broker (tributary/tests/it/kafka.rs).
TANSU="$TESTBED/cargo/bin/tansu"
TANSU_PID=""
if [ ! -x "$TANSU" ]; then
  echo "building the test broker tansu 0.6.0 in the background (log: $TESTBED/tansu-install.log)"
  CARGO_TARGET_DIR="$TESTBED/tansu-target" CARGO_INSTALL_ROOT="$TESTBED/cargo" CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
    cargo install tansu --version 0.6.0 --features libsql --locked >"$TESTBED/tansu-install.log" 2>&1 &
  TANSU_PID=$!
fi

step "Prometheus (Debian package)"
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version 2>&1 | head -1

step "Python test tools in $TESTBED/venv"
PY="$TESTBED/venv/bin/python"
PY_PACKAGES=(deltalake==1.6.6 pyarrow==26.0.1 fastavro==1.13.1 backports.zstd==1.8.0
             kubernetes-validate==1.37.0 botocore==1.44.5 boto3==1.44.5 "moto[server]==5.2.5"
             "confluent-kafka[schemaregistry,protobuf]==2.15.1" protobuf==7.36.2
             aws-glue-schema-registry==1.1.3 trustme==1.2.1)
if ! "$PY" -c 'import deltalake, pyarrow, fastavro, backports.zstd, kubernetes_validate, botocore, boto3, moto.server, confluent_kafka.schema_registry.protobuf, aws_schema_registry, trustme' 2>/dev/null; then
  [ -x "$PY" ] || python3 -m venv "$TESTBED/venv"
  "$PY" -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
export TRIBUTARY_PYTHON="$PY"

step "cargo fmt --check"
cargo fmt --all --check

# The release test binaries build now, beside the test broker, not after it.
step "build the tests (release, the quickstart's profile)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --release --no-run
else
  cargo test --workspace --release --no-run --lib --bins --tests
fi

step "cargo clippy"
cargo clippy --workspace --all-targets --release -- -D warnings

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --release --quiet

step "moto server (S3) for the tests"
MOTO_PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$TESTBED/venv/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$TESTBED/moto.log" 2>&1 &
MOTO_PID=$!
trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT
export TRIBUTARY_S3_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
# Test credentials for moto only; the metadata service is never asked.
export AWS_ACCESS_KEY_ID=tributary-test AWS_SECRET_ACCESS_KEY=tributary-test
export AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
for _ in $(seq 50); do
  "$PY" -c "import urllib.request; urllib.request.urlopen('$TRIBUTARY_S3_ENDPOINT')" 2>/dev/null && break
  sleep 0.2
done
echo "moto server at $TRIBUTARY_S3_ENDPOINT (log: $TESTBED/moto.log)"

step "kinesalite (Kinesis) for the tests"
# kinesalite from npm (Node 20), cached in $TESTBED/kinesalite. In memory, with
# stream changes (create, split, merge) applied at once.
KINESALITE_VERSION=3.3.3
KINESALITE="$TESTBED/kinesalite/node_modules/.bin/kinesalite"
if ! grep -q "\"version\": \"$KINESALITE_VERSION\"" "$TESTBED/kinesalite/node_modules/kinesalite/package.json" 2>/dev/null; then
  npm install --silent --no-audit --no-fund --prefix "$TESTBED/kinesalite" "kinesalite@$KINESALITE_VERSION" >/dev/null
fi
KINESIS_PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$KINESALITE" --port "$KINESIS_PORT" --createStreamMs 0 --deleteStreamMs 0 --updateStreamMs 0 \
  --shardLimit 1000 >"$TESTBED/kinesalite.log" 2>&1 &
KINESIS_PID=$!
trap 'kill "$MOTO_PID" "$KINESIS_PID" 2>/dev/null || true' EXIT
export TRIBUTARY_KINESIS_ENDPOINT="http://127.0.0.1:$KINESIS_PORT"
for _ in $(seq 50); do
  "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $KINESIS_PORT), 1)" 2>/dev/null && break
  sleep 0.2
done
echo "kinesalite $KINESALITE_VERSION at $TRIBUTARY_KINESIS_ENDPOINT (log: $TESTBED/kinesalite.log)"

# Tests whose names say `kafka` need the test broker; the others, the doc
# tests and the fuzz targets run first, while it may still be building.
step "tests that need no Kafka broker"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --release --no-fail-fast -E 'not test(/kafka/)'
else
  cargo test --workspace --release --no-fail-fast --lib --bins --tests -- --skip kafka
fi

step "doc tests"
cargo test --workspace --release --doc

# cargo-fuzz targets (fuzz/, its own workspace), each run for a short time
# from its committed seeds and recorded regressions plus a corpus cached
# outside the checkout. cargo-fuzz is installed under $TESTBED/fuzz-tools
# (not beside tansu: cargo locks an install root for a whole install, and
# tansu may still be building); the nightly, sanitized build goes to its own
# target directory.
FUZZ_SECONDS="${TRIBUTARY_FUZZ_SECONDS:-30}"
step "fuzz targets, ${FUZZ_SECONDS}s each (TRIBUTARY_FUZZ_SECONDS; 0 skips)"
if [ "$FUZZ_SECONDS" -gt 0 ]; then
  rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
  export PATH="$TESTBED/fuzz-tools/bin:$PATH"
  if ! cargo fuzz --version >/dev/null 2>&1; then
    # Built in a temporary directory, not in $CARGO_TARGET_DIR.
    env -u CARGO_TARGET_DIR CARGO_INSTALL_ROOT="$TESTBED/fuzz-tools" cargo install cargo-fuzz --locked --quiet
  fi
  FUZZ_CACHE="$HOME/.cache/tributary"
  for target in frame avro json protobuf; do
    inputs=("$FUZZ_CACHE/fuzz-corpus/$target" "corpus/$target")
    if [ -d "fuzz/regressions/$target" ]; then inputs+=("regressions/$target"); fi
    mkdir -p "$FUZZ_CACHE/fuzz-corpus/$target"
    log="$FUZZ_CACHE/fuzz-$target.log"
    if ! (cd fuzz && cargo +nightly fuzz run --target-dir "$FUZZ_CACHE/fuzz-target" "$target" "${inputs[@]}" \
            -- -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1) >"$log" 2>&1; then
      # The panic or sanitizer report, else the log's end (libFuzzer's dump
      # of the input can be long).
      report='panicked at|ERROR: (libFuzzer|AddressSanitizer)|^error'
      if grep -q -E "$report" "$log"; then grep -E -A3 "$report" "$log" | head -n 40 || true; else tail -n 40 "$log"; fi
      echo "fuzz target $target failed; the input is under fuzz/artifacts/$target/ (log: $log)"
      exit 1
    fi
    echo "$target: $(grep -E '^Done ' "$log"), $(grep -oE 'average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$') exec/s"
  done
fi
step "test broker (tansu)"
if [ -n "$TANSU_PID" ]; then
  if ! wait "$TANSU_PID"; then
    tail -n 40 "$TESTBED/tansu-install.log"
    echo "cargo install tansu failed (log: $TESTBED/tansu-install.log)"
    exit 1
  fi
  rm -rf "$TESTBED/tansu-target"
fi
export TRIBUTARY_TANSU="$TANSU"
"$TANSU" --version

step "tests against the Kafka broker"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --release --no-fail-fast -E 'test(/kafka/)'
else
  cargo test --workspace --release --no-fail-fast --lib --bins --tests -- kafka
fi

step "every check passed"
