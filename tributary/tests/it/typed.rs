//! Typed columns and record-level dead letters, end to end: what ingest and
//! the compactor write, read back by Python `deltalake`, `pyarrow` and
//! `fastavro`.

use crate::compaction::assert_keys;
use crate::operations::Processes;
use crate::registry::start;
use crate::registry_ingest::ingest_config;
use crate::{run_ok, run_python, write_config};

/// Avro `timestamp-micros`, `date`, `decimal`, `bytes` and `fixed` fields
/// (written by confluent-kafka's `AvroSerializer` against our registry) land
/// as Delta `timestamp`, `date`, `decimal(p,s)` and `binary` columns with
/// their values, and the event time gives a `date` partition.
#[test]
fn avro_logical_types_land_as_delta_types() {
    let dir = tempfile::tempdir().unwrap();
    let mut processes = Processes::default();
    let store = dir.path().join("registry");
    let port = start(&mut processes, dir.path(), store.to_str().unwrap(), "");
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let script = r#"
import decimal, struct, sys
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import SerializationContext, MessageField
SCHEMA = """{"type": "record", "name": "Envelope", "fields": [
  {"name": "host", "type": "string"},
  {"name": "messages", "type": {"type": "array", "items": {"type": "record", "name": "Msg", "fields": [
    {"name": "id", "type": "string"},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
    {"name": "raw", "type": "bytes"},
    {"name": "tag", "type": {"type": "fixed", "name": "Tag", "size": 4}}]}}}]}"""
client = SchemaRegistryClient({"url": sys.argv[1]})
serialize = AvroSerializer(client, SCHEMA)
ctx = SerializationContext("typed", MessageField.VALUE)
import datetime
utc = datetime.timezone.utc
frames = []
for e in range(4):
    msgs = [{"id": f"r{i}", "ts": datetime.datetime(2026, 11, 20 + i % 3, 12, 0, 0, 123456, tzinfo=utc),
             "day": datetime.date(2026, 1, 1 + i), "price": decimal.Decimal(f"{i}.25").quantize(decimal.Decimal("0.01")),
             "raw": bytes([i, 255]), "tag": b"t" + bytes([i, 0, 1])}
            for i in range(e * 2, e * 2 + 2)]
    frames.append(serialize({"host": "h", "messages": msgs}, ctx))
with open(sys.argv[2], "wb") as f:
    for frame in frames:
        f.write(struct.pack(">I", len(frame)) + frame)
"#;
    run_python(
        script,
        &[
            &format!("http://127.0.0.1:{port}"),
            input.join("typed.bin").to_str().unwrap(),
        ],
    );
    let table = dir.path().join("table");
    let config = ingest_config(
        dir.path(),
        &input,
        &table,
        &format!("[ingest.registry]\nurl = \"http://127.0.0.1:{port}\"\n"),
    );
    let config = config.to_str().unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    assert_keys(&table, &(0..8).map(|i| format!("r{i}")).collect::<Vec<_>>());

    let out = run_python(
        "import sys, json, deltalake\n\
         dt = deltalake.DeltaTable(sys.argv[1])\n\
         delta = {f['name']: f['type'] for f in json.loads(dt.schema().to_json())['fields']}\n\
         t = dt.to_pyarrow_table().sort_by('_key')\n\
         row = {c: t.column(c)[1].as_py() for c in t.schema.names}\n\
         print(json.dumps({'delta': delta, 'arrow': {f.name: str(f.type) for f in t.schema},\n\
           'row': {k: (v.hex() if isinstance(v, bytes) else str(v)) for k, v in row.items()}}))",
        &[table.to_str().unwrap()],
    );
    let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let delta = &got["delta"];
    assert_eq!(delta["messages_ts"], "timestamp", "{delta}");
    assert_eq!(delta["messages_day"], "date", "{delta}");
    assert_eq!(delta["messages_price"], "decimal(10,2)", "{delta}");
    assert_eq!(delta["messages_raw"], "binary", "{delta}");
    assert_eq!(delta["messages_tag"], "binary", "{delta}");
    assert_eq!(delta["date"], "date", "{delta}");
    assert_eq!(got["arrow"]["messages_ts"], "timestamp[us, tz=UTC]");
    let row = &got["row"];
    assert_eq!(row["_key"], "r1");
    assert_eq!(row["messages_ts"], "2026-11-21 12:00:00.123456+00:00");
    assert_eq!(row["date"], "2026-11-21");
    assert_eq!(row["messages_day"], "2026-01-02");
    assert_eq!(row["messages_price"], "1.25");
    assert_eq!(row["messages_raw"], "01ff");
    assert_eq!(row["messages_tag"], "74010001");
}

/// An element of an envelope whose fields collide, or whose value a declared
/// column rejects, is a dead letter of its own (position and element index);
/// the envelope's other elements reach the table, and no record is in both.
#[test]
fn a_bad_element_is_a_dead_letter_and_its_siblings_reach_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (input, table) = (dir.path().join("in"), dir.path().join("table"));
    std::fs::create_dir_all(&input).unwrap();
    let lines = [
        r#"{"host":"h","messages":[{"id":"k1","n":1},{"id":"k2","a_b":1,"a":{"b":2}},{"id":"k3","n":3}]}"#,
        r#"{"host":"h","messages":[{"id":"k4","n":4}]}"#,
        r#"{"host":"h","messages":[{"id":"k5","n":"five"},{"id":"k6"}]}"#,
        r#"{"host_x":1,"host":{"x":2},"messages":[{"id":"k7"}]}"#,
    ];
    let mut text = String::new();
    let mut positions = Vec::new();
    for line in lines {
        positions.push(text.len() as u64);
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(input.join("mixed.ndjson"), &text).unwrap();
    let config = write_config(
        dir.path(),
        &input,
        &table,
        "[ingest.flatten.schema]\nmessages_n = \"long\"\n",
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[ingest.flatten]\n",
        "[ingest.flatten]\ninfer_undeclared = true\n",
    );
    std::fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);

    assert_keys(&table, &["k1", "k3", "k4", "k6"].map(String::from));
    let out = run_python(
        "import sys, os, json, fastavro\n\
         out = []\n\
         for root, _, files in os.walk(sys.argv[1]):\n\
         \x20   for f in files:\n\
         \x20       for r in fastavro.reader(open(os.path.join(root, f), 'rb')):\n\
         \x20           out.append([r['_position'], r['element'], r['reason']])\n\
         print(json.dumps(sorted(out, key=str)))",
        &[table.join("_tributary/dead-letter").to_str().unwrap()],
    );
    let mut letters: Vec<(u64, Option<u64>, String)> = serde_json::from_str(out.trim()).unwrap();
    letters.sort();
    assert_eq!(
        letters,
        vec![
            (positions[0], Some(1), "flatten".to_string()),
            (positions[2], Some(0), "schema".to_string()),
            // A collision in the envelope rejects the whole message.
            (positions[3], None, "flatten".to_string()),
        ]
    );
}
