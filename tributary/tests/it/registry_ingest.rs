//! Ingest decoding framed Avro written by third-party serializers:
//! `confluent-kafka`'s `AvroSerializer` against our registry, and the
//! `aws-glue-schema-registry` package's serializer against moto's Glue API
//! (ingest with the Glue backend). Also: a registry outage makes ingest wait,
//! never dead-letter.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::compaction::{assert_keys, json};
use crate::operations::{Processes, free_port, http_get, wait_for};
use crate::registry::start;
use crate::{run_ok, run_python, s3, tributary, write_config};

/// Shared Python: records of two schema versions (v2 adds `level` with a
/// default) as `(schema text, record)` pairs, and a length-prefixed writer.
const RECORDS_PY: &str = r#"
import json, struct, sys
V1 = {"type": "record", "name": "Envelope", "fields": [
  {"name": "host", "type": "string"},
  {"name": "messages", "type": {"type": "array", "items": {"type": "record", "name": "Msg", "fields": [
    {"name": "id", "type": "string"},
    {"name": "n", "type": "long"},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}}}]}
V2 = json.loads(json.dumps(V1))
V2["fields"][1]["type"]["items"]["fields"].append({"name": "level", "type": "string", "default": "INFO"})
def envelopes(count):
    out = []
    for e in range(count):
        version = V1 if e < count // 2 else V2
        msgs = []
        for i in range(e * 3, e * 3 + 3):
            m = {"id": f"r{i}", "n": i, "ts": 1795478400000 + i * 1000}
            if version is V2:
                m["level"] = "WARN"
            msgs.append(m)
        out.append((version, {"host": f"h{e % 2}", "messages": msgs}))
    return out
def write_frames(path, frames):
    with open(path, "wb") as f:
        for frame in frames:
            f.write(struct.pack(">I", len(frame)) + frame)
"#;

const ENVELOPES: u64 = 40;

fn expected_keys() -> Vec<String> {
    (0..ENVELOPES * 3).map(|i| format!("r{i}")).collect()
}

/// A length-prefixed files source reading `input`, plus `registry`.
pub(crate) fn ingest_config(
    dir: &Path,
    input: &Path,
    table: &Path,
    registry: &str,
) -> std::path::PathBuf {
    let path = write_config(dir, input, table, registry);
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[ingest.files]\n",
        "[ingest.files]\nformat = \"length-prefixed\"\n",
        1,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `(reason, error)` of every dead letter of stream `test`, by reason.
pub(crate) fn dead_letters(table: &Path) -> Vec<(String, String)> {
    let mut letters: Vec<_> = crate::dead_letters(table)
        .into_iter()
        .map(|(_, _, reason, error, _)| (reason, error))
        .collect();
    letters.sort();
    letters
}

/// The `level` column by key, via Python `deltalake`.
fn levels(table: &Path) -> Vec<(String, String)> {
    let out = run_python(
        "import sys, json, deltalake\n\
         t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table(columns=['_key', 'messages_level', 'messages_ts'])\n\
         print(json.dumps(sorted(zip(t.column('_key').to_pylist(), t.column('messages_level').to_pylist(), [ts.isoformat() for ts in t.column('messages_ts').to_pylist()]))))",
        &[table.to_str().unwrap()],
    );
    let rows: Vec<(String, Option<String>, String)> = serde_json::from_str(out.trim()).unwrap();
    assert!(
        rows.iter()
            .any(|r| r.0 == "r0" && r.2 == "2026-11-24T00:00:00+00:00"),
        "timestamp-millis becomes a UTC timestamp: {:?}",
        &rows[..1]
    );
    rows.into_iter()
        .map(|(k, l, _)| (k, l.unwrap_or_else(|| "null".into())))
        .collect()
}

/// Ingests the frames in `input` once with the registry section `registry`
/// into `<dir>/table` and compacts; returns the table.
pub(crate) fn ingest_and_compact(dir: &Path, input: &Path, registry: &str) -> PathBuf {
    let table = dir.join("table");
    let config = ingest_config(dir, input, &table, registry);
    let config = config.to_str().unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    table
}

/// A registry serving on a store under `dir` (its port), and an empty input
/// directory for frames.
pub(crate) fn registry_and_input(processes: &mut Processes, dir: &Path) -> (u16, PathBuf) {
    let store = dir.join("registry");
    let port = start(processes, dir, store.to_str().unwrap(), "");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    (port, input)
}

/// Ingests and compacts (see [`ingest_and_compact`]), checks that every
/// record of both schema versions is there (v1 rows have no level), and
/// returns the dead letters.
fn ingest_both_versions(dir: &Path, input: &Path, registry: &str) -> Vec<(String, String)> {
    let table = ingest_and_compact(dir, input, registry);
    assert_keys(&table, &expected_keys());
    assert_two_versions(&table);
    dead_letters(&table)
}

fn assert_two_versions(table: &Path) {
    let levels = levels(table);
    let half = (ENVELOPES / 2 * 3) as usize;
    let v2: Vec<_> = levels.iter().filter(|(_, l)| l == "WARN").collect();
    let v1: Vec<_> = levels.iter().filter(|(_, l)| l == "null").collect();
    assert_eq!((v1.len(), v2.len()), (half, levels.len() - half));
}

#[test]
fn confluent_avro_serializer_bytes_are_ingested() {
    let dir = tempfile::tempdir().unwrap();
    let mut processes = Processes::default();
    let (port, input) = registry_and_input(&mut processes, dir.path());
    let script = format!(
        r#"{RECORDS_PY}
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import SerializationContext, MessageField
client = SchemaRegistryClient({{"url": sys.argv[1]}})
ctx = SerializationContext("orders", MessageField.VALUE)
serializers = {{}}
frames = []
for version, record in envelopes({ENVELOPES}):
    key = json.dumps(version)
    if key not in serializers:
        serializers[key] = AvroSerializer(client, key)
    frames.append(serializers[key](record, ctx))
# A frame naming an id the registry never assigned, and a payload that does
# not match its schema.
frames.append(b"\x00\x00\x0f\x42\x3f" + frames[0][5:])
frames.append(frames[0][:5] + b"\x7f")
write_frames(sys.argv[2], frames)
print(json.dumps([f[:5].hex() for f in frames]))
"#
    );
    let headers: Vec<String> = serde_json::from_str(
        run_python(
            &script,
            &[
                &format!("http://127.0.0.1:{port}"),
                input.join("orders.bin").to_str().unwrap(),
            ],
        )
        .trim(),
    )
    .unwrap();
    assert!(
        headers.iter().all(|h| h.starts_with("00")),
        "Confluent framing: {headers:?}"
    );

    let letters = ingest_both_versions(
        dir.path(),
        &input,
        &format!("[ingest.registry]\nurl = \"http://127.0.0.1:{port}\"\n"),
    );
    let reasons: Vec<&str> = letters.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(reasons, vec!["decode", "unknown_schema"], "{letters:?}");
    assert!(letters[1].1.contains("schema id 999999"), "{letters:?}");
}

#[test]
fn glue_serializer_bytes_are_ingested_through_the_glue_backend() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let registry = format!("it-{}", free_port());
    let script = format!(
        r#"{RECORDS_PY}
import boto3, uuid
from aws_schema_registry import SchemaRegistryClient, DataAndSchema
from aws_schema_registry.avro import AvroSchema
from aws_schema_registry.serde import KafkaSerializer
glue = boto3.client("glue", endpoint_url=sys.argv[1], region_name="us-east-1")
glue.create_registry(RegistryName=sys.argv[2])
serializer = KafkaSerializer(SchemaRegistryClient(glue, registry_name=sys.argv[2]))
frames = [serializer.serialize("orders", DataAndSchema(record, AvroSchema(json.dumps(version))))
          for version, record in envelopes({ENVELOPES})]
# A well-formed frame naming a schema version Glue does not have.
frames.append(frames[0][:2] + uuid.uuid4().bytes + frames[0][18:])
write_frames(sys.argv[3], frames)
print(json.dumps(sorted({{str(uuid.UUID(bytes=f[2:18])) for f in frames[:-1]}})))
"#
    );
    let versions: Vec<String> = serde_json::from_str(
        run_python(
            &script,
            &[
                &s3::endpoint(),
                &registry,
                input.join("orders.bin").to_str().unwrap(),
            ],
        )
        .trim(),
    )
    .unwrap();
    assert_eq!(versions.len(), 2, "two schema versions: {versions:?}");

    let letters = ingest_both_versions(
        dir.path(),
        &input,
        &format!(
            "[ingest.registry.glue]\nregion = \"us-east-1\"\nendpoint = \"{}\"\n",
            s3::endpoint()
        ),
    );
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].0, "unknown_schema");
    assert!(
        letters[0].1.contains("EntityNotFoundException"),
        "{letters:?}"
    );
}

#[test]
fn a_registry_outage_makes_ingest_wait_and_never_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("registry").display().to_string();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let table = dir.path().join("table");

    // Register the schema and frame the records, then stop the registry.
    let mut registry = Processes::default();
    let port = start(&mut registry, dir.path(), &store, "");
    let script = format!(
        r#"{RECORDS_PY}
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import SerializationContext, MessageField
client = SchemaRegistryClient({{"url": sys.argv[1]}})
ctx = SerializationContext("orders", MessageField.VALUE)
serializer = AvroSerializer(client, json.dumps(V1))
write_frames(sys.argv[2], [serializer({{"host": "h", "messages": [{{"id": f"r{{i}}", "n": i, "ts": 0}}]}}, ctx) for i in range(50)])
"#
    );
    run_python(
        &script,
        &[
            &format!("http://127.0.0.1:{port}"),
            input.join("orders.bin").to_str().unwrap(),
        ],
    );
    drop(registry);

    let config = ingest_config(
        dir.path(),
        &input,
        &table,
        &format!(
            "[ingest.registry]\nurl = \"http://127.0.0.1:{port}\"\nmax_backoff_ms = 300\nrequest_timeout_ms = 500\n"
        ),
    );
    let metrics_port = free_port();
    let mut ingest = Processes::default();
    ingest.spawn(
        tributary()
            .args(["ingest", "--config", config.to_str().unwrap()])
            .env(
                "TRIBUTARY_SERVICE__LISTEN_ADDR",
                format!("127.0.0.1:{metrics_port}"),
            ),
    );
    // While the registry is down, ingest retries and stages nothing.
    let retries = wait_for(Duration::from_secs(30), "registry retries", || {
        let metrics = http_get(metrics_port, "/metrics")?.1;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("tributary_ingest_registry_unavailable_total"))?;
        let n: f64 = line.rsplit(' ').next()?.parse().ok()?;
        (n >= 3.0).then_some(n)
    });
    assert!(retries >= 3.0);
    assert!(
        !table.join("_tributary/staging").exists()
            || s3::object_keys(&table, "_tributary/staging").is_empty(),
        "nothing is staged while the registry is down"
    );

    // The registry comes back on the same port: everything is staged, and
    // nothing was dead-lettered.
    let mut registry = Processes::default();
    let config_path = dir.path().join(format!("registry-{port}.toml"));
    registry.spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(["registry", "serve", "--config"])
            .arg(&config_path)
            .env(
                "TRIBUTARY_REGISTRY__LISTEN_ADDR",
                format!("127.0.0.1:{port}"),
            ),
    );
    wait_for(
        Duration::from_secs(60),
        "rows staged after the outage",
        || {
            let snapshot = http_get(metrics_port, "/metrics")?.1;
            snapshot
                .lines()
                .any(|l| l.starts_with("tributary_ingest_staged_rows_total") && l.ends_with(" 50"))
                .then_some(())
        },
    );
    drop(ingest);
    let out = run_ok(&["compact", "--config", config.to_str().unwrap(), "--once"]);
    assert_eq!(json(&out)["rows_written"], Value::from(50));
    assert!(dead_letters(&table).is_empty());
}
