//! Protobuf and JSON Schema end to end: `confluent-kafka`'s
//! `SchemaRegistryClient` with its `ProtobufSerializer` and `JSONSerializer`
//! against our registry (registering, evolving, and a refused incompatible
//! change), and Glue-framed Protobuf against moto's Glue API; the bytes are
//! ingested and the table read with Python `deltalake`. JSON payloads are
//! also validated against their schema.
//!
//! The `aws-glue-schema-registry` Python package serializes Avro and JSON
//! only, so the Glue frames are built here the way AWS's Java serializer
//! builds them: header, schema version UUID, the message type's index (an
//! unsigned varint), the message.

use std::path::Path;

use serde_json::{Value, json};

use crate::compaction::assert_keys;
use crate::operations::{Processes, free_port};
use crate::registry_ingest::{dead_letters, ingest_and_compact, registry_and_input};
use crate::{run_python, s3};

/// Version 1 of the schema; version 2 adds `region` to the envelope. `Meta`
/// is defined in the file or imported from `meta.proto` (see [`proto`]).
const ENVELOPE_PROTO: &str = r#"
syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
// IMPORT

enum Status { UNKNOWN = 0; LIVE = 1; DRAINING = 2; }

message Envelope {
  string host = 1;
  Status status = 2;
  Meta meta = 3;
  repeated Msg messages = 4;
  // REGION
}

// META

message Msg {
  enum Level { INFO = 0; WARN = 1; }
  string id = 1;
  int64 n = 2;
  google.protobuf.Timestamp ts = 3;
  Level level = 4;
  repeated string tags = 5;
  oneof detail { string text = 6; int64 code = 7; }
}
"#;

const ENVELOPES: u64 = 20;

/// `meta.proto`, which the envelope imports when `Meta` is not inline.
const META_PROTO: &str =
    "syntax = \"proto3\";\npackage shop;\nmessage Meta { string source = 1; }\n";

/// `ENVELOPE_PROTO` in version `version` (1, 2, or 3: `n` becomes a string,
/// which no reader of the earlier versions can read), with `Meta` inline or
/// imported from `meta.proto`.
fn proto(version: u8, inline_meta: bool) -> String {
    let text = if inline_meta {
        ENVELOPE_PROTO.replace("// META", "message Meta { string source = 1; }")
    } else {
        ENVELOPE_PROTO.replace("// IMPORT", "import \"meta.proto\";")
    };
    match version {
        1 => text,
        2 => text.replace("// REGION", "string region = 5;"),
        _ => proto(2, inline_meta).replace("int64 n = 2;", "string n = 2;"),
    }
}

/// Writes the descriptor set of `text` (imports, `meta.proto` among them,
/// included) for Python.
fn descriptor_set(dir: &Path, version: u8, text: &str) -> String {
    let src = dir.join(format!("v{version}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("envelope.proto"), text).unwrap();
    std::fs::write(src.join("meta.proto"), META_PROTO).unwrap();
    let mut compiler = protox::Compiler::new([&src]).unwrap();
    compiler.include_imports(true);
    compiler.open_file("envelope.proto").unwrap();
    let out = dir.join(format!("v{version}.pb"));
    std::fs::write(&out, compiler.encode_file_descriptor_set()).unwrap();
    out.to_str().unwrap().to_string()
}

/// Python: `classes(path)` loads a descriptor set and returns its message
/// classes by name; `envelopes(classes_v1, classes_v2)` builds the test
/// envelopes (the second half in version 2); `write_frames` writes
/// length-prefixed frames.
const ENVELOPES_PY: &str = r#"
import json, struct, sys
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
def classes(path):
    pool = descriptor_pool.DescriptorPool()
    for f in descriptor_pb2.FileDescriptorSet.FromString(open(path, "rb").read()).file:
        pool.Add(f)
    return lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
def envelopes(v1, v2, count):
    out = []
    for e in range(count):
        cls = v1 if e < count // 2 else v2
        env = cls("shop.Envelope")(host=f"h{e % 2}", status=e % 3)
        if e % 4:
            env.meta.source = f"s{e}"
        if cls is v2:
            env.region = "eu"
        for i in range(e * 3, e * 3 + 3):
            m = env.messages.add(id=f"r{i}", n=i, level=i % 2, tags=[f"t{i}", "x"])
            m.ts.FromSeconds(1795478400 + i)
            if i % 2:
                m.code = i
            else:
                m.text = f"hello {i}"
        out.append(env)
    return out
def write_frames(path, frames):
    with open(path, "wb") as f:
        for frame in frames:
            f.write(struct.pack(">I", len(frame)) + frame)
"#;

/// The table's rows by key, as Python `deltalake` reads them.
fn rows(table: &Path) -> Vec<Value> {
    let out = run_python(
        "import sys, json, deltalake\n\
         t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table()\n\
         rows = t.to_pylist()\n\
         for r in rows:\n\
         \x20   r['messages_ts'] = r['messages_ts'].isoformat()\n\
         print(json.dumps(sorted(rows, key=lambda r: int(r['_key'][1:])), default=str))",
        &[table.to_str().unwrap()],
    );
    serde_json::from_str(out.trim()).unwrap()
}

/// Every record of both versions is in the table with the values the
/// flattening rules give it.
fn assert_rows(table: &Path) {
    let keys: Vec<String> = (0..ENVELOPES * 3).map(|i| format!("r{i}")).collect();
    assert_keys(table, &keys);
    let rows = rows(table);
    let pick = |row: &Value| {
        let fields = [
            "_key",
            "host",
            "status",
            "meta_source",
            "region",
            "messages_n",
            "messages_ts",
            "messages_level",
            "messages_tags",
            "messages_text",
            "messages_code",
        ];
        Value::Object(
            fields
                .iter()
                .map(|f| (f.to_string(), row.get(*f).cloned().unwrap_or(Value::Null)))
                .collect(),
        )
    };
    // Envelope 0 (version 1, no meta): record r1 has a code, r0 a text.
    assert_eq!(
        pick(&rows[1]),
        json!({"_key": "r1", "host": "h0", "status": "UNKNOWN", "meta_source": null,
               "region": null, "messages_n": 1, "messages_ts": "2026-11-24T00:00:01+00:00",
               "messages_level": "WARN", "messages_tags": ["t1", "x"], "messages_text": null,
               "messages_code": 1})
    );
    // The last envelope (19, version 2): r59.
    let last = ENVELOPES * 3 - 1;
    assert_eq!(
        pick(&rows[last as usize]),
        json!({"_key": format!("r{last}"), "host": "h1", "status": "LIVE",
               "meta_source": "s19", "region": "eu", "messages_n": last,
               "messages_ts": format!("2026-11-24T00:00:{last}+00:00"),
               "messages_level": "WARN", "messages_tags": [format!("t{last}"), "x"],
               "messages_text": null, "messages_code": last})
    );
    assert_eq!(rows[2]["messages_text"], "hello 2");
    let regions = rows.iter().filter(|r| r["region"] == "eu").count() as u64;
    assert_eq!(regions, ENVELOPES / 2 * 3, "version 2 rows have a region");
}

/// Ingests and compacts the frames in `input`, checks the rows, and returns
/// the dead letters.
fn ingest(dir: &Path, input: &Path, registry: &str) -> Vec<(String, String)> {
    let table = ingest_and_compact(dir, input, registry);
    assert_rows(&table);
    dead_letters(&table)
}

#[test]
fn confluent_protobuf_serializer_bytes_are_ingested() {
    let dir = tempfile::tempdir().unwrap();
    let mut processes = Processes::default();
    let (port, input) = registry_and_input(&mut processes, dir.path());
    // `meta.proto` is imported: the serializer registers it as subject
    // `meta.proto` and the envelope's versions reference it.
    let sets: Vec<String> = (1..=3)
        .map(|v| descriptor_set(dir.path(), v, &proto(v, false)))
        .collect();
    let script = format!(
        r#"{ENVELOPES_PY}
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import SerializationContext, MessageField
client = SchemaRegistryClient({{"url": sys.argv[1]}})
ctx = SerializationContext("orders", MessageField.VALUE)
v1, v2, v3 = (classes(p) for p in sys.argv[2:5])
serializers = {{}}
frames = []
for env in envelopes(v1, v2, {ENVELOPES}):
    cls = type(env)
    if cls not in serializers:
        serializers[cls] = ProtobufSerializer(cls, client, {{"use.deprecated.format": False}})
    frames.append(serializers[cls](env, ctx))
# Version 3 changes a field's type: the registry refuses it.
try:
    ProtobufSerializer(v3("shop.Envelope"), client, {{"use.deprecated.format": False}})(v3("shop.Envelope")(), ctx)
    refused = None
except SchemaRegistryError as e:
    refused = [e.http_status_code, e.error_message]
versions = client.get_versions("orders-value")
latest = client.get_latest_version("orders-value")
references = [[r.name, r.subject, r.version] for r in latest.schema.references]
# A frame naming an id the registry never assigned, and a truncated message.
frames.append(b"\x00\x00\x0f\x42\x3f" + frames[0][5:])
frames.append(frames[0][:-3])
write_frames(sys.argv[5], frames)
print(json.dumps({{"versions": versions, "refused": refused, "references": references,
                  "headers": sorted({{f[:6].hex() for f in frames[:-2]}})}}))
"#
    );
    let answer: Value = serde_json::from_str(
        run_python(
            &script,
            &[
                &format!("http://127.0.0.1:{port}"),
                &sets[0],
                &sets[1],
                &sets[2],
                input.join("orders.bin").to_str().unwrap(),
            ],
        )
        .trim(),
    )
    .unwrap();
    assert_eq!(answer["versions"], json!([1, 2]), "{answer}");
    assert_eq!(
        answer["references"],
        json!([["meta.proto", "meta.proto", 1]]),
        "{answer}"
    );
    assert_eq!(answer["refused"][0], 409, "{answer}");
    let refusal = answer["refused"][1].as_str().unwrap();
    assert!(refusal.contains("int64 to string"), "{refusal}");
    // Confluent framing, two schema ids, message index [0] (one 0 byte).
    let headers = answer["headers"].as_array().unwrap();
    assert_eq!(headers.len(), 2, "{answer}");
    assert!(
        headers
            .iter()
            .all(|h| h.as_str().unwrap().starts_with("00") && h.as_str().unwrap().ends_with("00")),
        "{answer}"
    );

    let letters = ingest(
        dir.path(),
        &input,
        &format!("[ingest.registry]\nurl = \"http://127.0.0.1:{port}\"\n"),
    );
    let reasons: Vec<&str> = letters.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(reasons, vec!["decode", "unknown_schema"], "{letters:?}");
    assert!(letters[0].1.contains("ends early"), "{letters:?}");
}

#[test]
fn glue_framed_protobuf_is_ingested_through_the_glue_backend() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let registry = format!("it-{}", free_port());
    // Glue has no schema references: `Meta` is inline.
    let sets: Vec<String> = (1..=2)
        .map(|v| descriptor_set(dir.path(), v, &proto(v, true)))
        .collect();
    let script = format!(
        r#"{ENVELOPES_PY}
import boto3, uuid
glue = boto3.client("glue", endpoint_url=sys.argv[1], region_name="us-east-1")
glue.create_registry(RegistryName=sys.argv[2])
v1, v2 = classes(sys.argv[3]), classes(sys.argv[4])
created = glue.create_schema(RegistryId={{"RegistryName": sys.argv[2]}}, SchemaName="orders",
                             DataFormat="PROTOBUF", Compatibility="BACKWARD",
                             SchemaDefinition=sys.argv[5])
second = glue.register_schema_version(SchemaId={{"RegistryName": sys.argv[2], "SchemaName": "orders"}},
                                      SchemaDefinition=sys.argv[6])
ids = {{v1: uuid.UUID(created["SchemaVersionId"]), v2: uuid.UUID(second["SchemaVersionId"])}}
# Messages sorted by full name: shop.Envelope is index 0 (one varint byte).
frames = [b"\x03\x00" + ids[v1 if i < {ENVELOPES} // 2 else v2].bytes + b"\x00" + env.SerializeToString()
          for i, env in enumerate(envelopes(v1, v2, {ENVELOPES}))]
# A message index past the schema's message types.
frames.append(frames[0][:18] + b"\x09" + frames[0][19:])
write_frames(sys.argv[7], frames)
print(json.dumps(sorted(str(i) for i in ids.values())))
"#
    );
    let (v1, v2) = (proto(1, true), proto(2, true));
    let versions: Vec<String> = serde_json::from_str(
        run_python(
            &script,
            &[
                &s3::endpoint(),
                &registry,
                &sets[0],
                &sets[1],
                &v1,
                &v2,
                input.join("orders.bin").to_str().unwrap(),
            ],
        )
        .trim(),
    )
    .unwrap();
    assert_eq!(versions.len(), 2, "{versions:?}");

    let letters = ingest(
        dir.path(),
        &input,
        &format!(
            "[ingest.registry.glue]\nregion = \"us-east-1\"\nendpoint = \"{}\"\n",
            s3::endpoint()
        ),
    );
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].0, "decode");
    assert!(letters[0].1.contains("message index 9"), "{letters:?}");
}

/// A JSON Schema for the envelopes of [`crate::envelopes`], closed (no other
/// properties); version 2 adds an optional `region`, version 3 makes `n` a
/// string.
const ENVELOPE_JSON_SCHEMA_PY: &str = r#"
V1 = {"type": "object", "additionalProperties": False, "required": ["host", "messages"],
      "properties": {"host": {"type": "string"},
                     "messages": {"type": "array", "items": {"type": "object",
                         "required": ["id", "n", "ts"],
                         "properties": {"id": {"type": "string"}, "n": {"type": "integer"},
                                        "ts": {"type": "integer"},
                                        "tags": {"type": "array", "items": {"type": "string"}}}}}}}
V2 = json.loads(json.dumps(V1))
V2["properties"]["region"] = {"type": "string"}
V3 = json.loads(json.dumps(V2))
V3["properties"]["messages"]["items"]["properties"]["n"] = {"type": "string"}
"#;

#[test]
fn confluent_json_serializer_bytes_are_ingested_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let mut processes = Processes::default();
    let (port, input) = registry_and_input(&mut processes, dir.path());
    let (lines, ids) = crate::envelopes(0, 60);
    let script = format!(
        r#"import json, struct, sys
{ENVELOPE_JSON_SCHEMA_PY}
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import SerializationContext, MessageField
client = SchemaRegistryClient({{"url": sys.argv[1]}})
ctx = SerializationContext("logs", MessageField.VALUE)
v1, v2 = (JSONSerializer(json.dumps(v), client) for v in (V1, V2))
frames = []
for i, line in enumerate(sys.argv[3:]):
    envelope = json.loads(line)
    if i % 2:
        envelope["region"] = "eu"
    frames.append((v2 if i % 2 else v1)(envelope, ctx))
try:
    JSONSerializer(json.dumps(V3), client)({{"host": "h", "messages": []}}, ctx)
    refused = None
except SchemaRegistryError as e:
    refused = [e.http_status_code, e.error_message]
# Payloads the schema does not accept, framed as valid ones: `n` as text,
# and a property the closed schema does not have.
frames.append(frames[0][:5] + json.dumps({{"host": "h", "messages": [{{"id": "bad1", "n": "7", "ts": 1}}]}}).encode())
frames.append(frames[0][:5] + json.dumps({{"host": "h", "extra": 1, "messages": []}}).encode())
with open(sys.argv[2], "wb") as f:
    for frame in frames:
        f.write(struct.pack(">I", len(frame)) + frame)
print(json.dumps({{"versions": client.get_versions("logs-value"), "refused": refused}}))
"#
    );
    let mut args = vec![
        format!("http://127.0.0.1:{port}"),
        input.join("logs.bin").to_str().unwrap().to_string(),
    ];
    args.extend(lines);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let answer: Value = serde_json::from_str(run_python(&script, &args).trim()).unwrap();
    assert_eq!(answer["versions"], json!([1, 2]), "{answer}");
    assert_eq!(answer["refused"][0], 409, "{answer}");
    let refusal = answer["refused"][1].as_str().unwrap();
    assert!(
        refusal.contains("/n") && refusal.contains("string"),
        "{refusal}"
    );

    let registry =
        format!("[ingest.registry]\nurl = \"http://127.0.0.1:{port}\"\nvalidate_json = true\n");
    let table = ingest_and_compact(dir.path(), &input, &registry);
    assert_keys(&table, &ids);
    let letters = dead_letters(&table);
    let reasons: Vec<&str> = letters.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(reasons, vec!["validation", "validation"], "{letters:?}");
    let errors: Vec<&str> = letters.iter().map(|(_, e)| e.as_str()).collect();
    assert!(
        errors.iter().any(|e| e.contains("/messages/0/n")),
        "the error names the location: {errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("extra")), "{errors:?}");
    let regions = run_python(
        "import sys, deltalake\n\
         t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table(columns=['region'])\n\
         print(sum(1 for r in t.column('region').to_pylist() if r == 'eu'))",
        &[table.to_str().unwrap()],
    );
    assert!(
        regions.trim().parse::<u64>().unwrap() > 0,
        "version 2 rows: {regions}"
    );
}
