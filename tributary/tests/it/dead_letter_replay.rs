//! `tributary dead-letters replay` on S3: messages dead-lettered as
//! `unknown_schema` (framed for a schema id the registry does not know yet)
//! are replayed once the schema is registered and land in the table exactly
//! once, through replays killed with SIGKILL after each of their steps; a
//! letter that still fails stays a dead letter with its new reason; a
//! letter an erasure blanked is never replayed; a letter retention drops
//! from a file between a stopped replay and its rerun is not staged, and
//! the rerun stages exactly the other letters decided; a second replay adds
//! nothing; the table's log holds one replay `txn` entry per source
//! partition.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::compaction::{assert_keys, json};
use crate::operations::Processes;
use crate::registry_ingest::{ingest_config, registry_and_input};
use crate::{run_ok, run_python, s3, tributary};

/// Input files (each a source partition, so a dead-letter file each).
const FILES: usize = 4;
/// Envelopes of each kind per file; two records each.
const ENVELOPES: usize = 6;

/// Writes `FILES` length-prefixed inputs: JSON envelopes (keys `j…`),
/// Confluent-framed Avro envelopes for schema id 1 (keys `a…`), and one
/// frame for id 1 whose data does not decode. Prints the Avro schema.
const INPUT_PY: &str = r#"
import io, json, struct, sys, fastavro
SCHEMA = {"type": "record", "name": "Envelope", "fields": [
  {"name": "host", "type": "string"},
  {"name": "messages", "type": {"type": "array", "items": {"type": "record", "name": "Msg", "fields": [
    {"name": "id", "type": "string"},
    {"name": "n", "type": "long"},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}}}]}
parsed = fastavro.parse_schema(SCHEMA)
files, envelopes = int(sys.argv[2]), int(sys.argv[3])
for f in range(files):
    frames = []
    for e in range(envelopes):
        for kind in ("j", "a"):
            msgs = [{"id": f"{kind}{f}-{e}-{i}", "n": i, "ts": 1795478400000 + e * 1000 + i}
                    for i in range(2)]
            envelope = {"host": f"h{f}", "messages": msgs}
            if kind == "j":
                frames.append(json.dumps(envelope).encode())
            else:
                body = io.BytesIO()
                fastavro.schemaless_writer(body, parsed, envelope)
                frames.append(b"\x00" + struct.pack(">I", 1) + body.getvalue())
    frames.append(b"\x00" + struct.pack(">I", 1) + b"\x7f")
    with open(f"{sys.argv[1]}/part-{f}.bin", "wb") as out:
        for frame in frames:
            out.write(struct.pack(">I", len(frame)) + frame)
print(json.dumps(SCHEMA))
"#;

fn keys(kind: &str) -> Vec<String> {
    (0..FILES)
        .flat_map(|f| (0..ENVELOPES).flat_map(move |e| (0..2).map(move |i| (f, e, i))))
        .map(|(f, e, i)| format!("{kind}{f}-{e}-{i}"))
        .collect()
}

/// `tributary dead-letters list`: letters by reason.
fn by_reason(config: &str) -> Value {
    json(&run_ok(&["dead-letters", "list", "--config", config]))["by_reason"].clone()
}

fn replay(config: &str, extra: &[&str]) -> Value {
    let mut args = vec!["dead-letters", "replay", "--config", config];
    args.extend(extra);
    json(&run_ok(&args))
}

/// Starts a replay that pauses after `step` of its `n`th file, waits until
/// it says so, and kills it with SIGKILL.
fn replay_killed_after(config: &str, step: &str, n: u64) {
    let mut child = tributary()
        .args(["dead-letters", "replay", "--config", config])
        .args(["--reason", "unknown_schema"])
        .env("TRIBUTARY_REPLAY_PAUSE_AFTER", format!("{step}:{n}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("replay paused") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(120));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        line.is_ok(),
        "the replay never paused after {step} of file {n}"
    );
}

fn register(port: u16, schema: &str) -> u64 {
    let out = run_python(
        "import sys\n\
         from confluent_kafka.schema_registry import SchemaRegistryClient, Schema\n\
         client = SchemaRegistryClient({'url': sys.argv[1]})\n\
         print(client.register_schema('orders-value', Schema(sys.argv[2], 'AVRO')))",
        &[&format!("http://127.0.0.1:{port}"), schema],
    );
    out.trim().parse().unwrap()
}

#[test]
fn unknown_schema_dead_letters_replay_exactly_once_through_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut processes = Processes::default();
    let (port, input) = registry_and_input(&mut processes, dir.path());
    let schema = run_python(
        INPUT_PY,
        &[
            input.to_str().unwrap(),
            &FILES.to_string(),
            &ENVELOPES.to_string(),
        ],
    );
    let table = s3::new_table("replay");
    let config = ingest_config(
        dir.path(),
        &input,
        &table,
        &format!("[ingest.registry]\nurl = \"http://127.0.0.1:{port}\"\n"),
    );
    let config = config.to_str().unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    let compact = || run_ok(&["compact", "--config", config, "--once"]);
    compact();
    assert_keys(&table, &keys("j"));
    let dead = (FILES * (ENVELOPES + 1)) as u64;
    assert_eq!(
        by_reason(config),
        serde_json::json!({"unknown_schema": dead})
    );

    // Before the schema exists, a replay changes nothing.
    let report = replay(config, &[]);
    assert_eq!(
        (&report["replayed"], &report["files_retired"]),
        (&Value::from(0), &Value::from(0)),
        "{report}"
    );
    assert_eq!(register(port, schema.trim()), 1, "the id the frames name");

    // Erasing a record key that is only in a dead letter blanks that
    // letter's payload: it can never be replayed into the table.
    let erased = dir.path().join("keys.txt");
    std::fs::write(&erased, "a1-0-0\n").unwrap();
    let forget = json(&run_ok(&[
        "forget",
        "--config",
        config,
        "--table",
        "replay",
        "--keys",
        erased.to_str().unwrap(),
        "--request-id",
        "erase-a1",
        "--grace-minutes",
        "0",
    ]));
    assert_eq!(forget["dead_letters_erased"], 1, "{forget}");

    let report = replay(config, &["--reason", "unknown_schema", "--dry-run"]);
    let replayed = (FILES * ENVELOPES - 1) as u64;
    assert_eq!(report["replayed"], replayed, "{report}");
    assert_eq!(report["staged_rows"], replayed * 2);
    assert_eq!(report["not_replayable"], 1);
    assert_eq!(
        report["still_failing"],
        serde_json::json!({"decode": FILES})
    );
    assert_eq!(
        by_reason(config),
        serde_json::json!({"unknown_schema": dead})
    );

    // Killed after deciding file 1 (its remainder written, nothing staged);
    // then after staging file 2 of the next run (the first one finishes
    // file 1); compacted; then killed after staging another file while the
    // next run finds file 2 committed.
    replay_killed_after(config, "decided", 1);
    // Retention drops one decided letter of that file (a tenant rule
    // naming one of its records) before the rerun. Regression: the
    // remainder named the letters to stage by index, so the rerun staged
    // the letters after the dropped one shifted by one (and failed on the
    // frame that does not decode).
    let decided = crate::s3::object_keys(&table, "_tributary/dead-letter/")
        .into_iter()
        .find(|k| k.ends_with(".r1.avro"))
        .expect("the stopped replay wrote a remainder");
    let f = decided
        .split("part-")
        .nth(1)
        .and_then(|rest| rest.chars().next())
        .and_then(|c| c.to_digit(10))
        .unwrap_or_else(|| panic!("no input file in {decided}"));
    let dropped = format!("a{f}-2-");
    let retention_config = dir.path().join("retention.toml");
    std::fs::write(
        &retention_config,
        format!(
            "{}\n[[retention.tenants]]\ncolumn = \"messages_id\"\nvalue = \"{dropped}0\"\n\
             keep_days = 1\n",
            std::fs::read_to_string(config).unwrap()
        ),
    )
    .unwrap();
    let as_of = (chrono::Utc::now().date_naive() + chrono::Days::new(10)).to_string();
    let retention = json(&run_ok(&[
        "retention",
        "--config",
        retention_config.to_str().unwrap(),
        "--as-of",
        &as_of,
    ]));
    assert_eq!(
        retention["row_files"]["dead_letters_expired"], 1,
        "{retention}"
    );
    replay_killed_after(config, "staged", 2);
    compact();
    replay_killed_after(config, "staged", 1);
    let report = replay(config, &["--reason", "unknown_schema"]);
    assert!(
        report["files_already_staged"].as_u64().unwrap() >= 1,
        "{report}"
    );
    compact();
    let mut expected = keys("j");
    expected.extend(
        keys("a")
            .into_iter()
            .filter(|k| !k.starts_with("a1-0-") && !k.starts_with(&dropped)),
    );
    assert_keys(&table, &expected);
    // The frame that does not decode stays, with its new reason, and so
    // does the erased letter; nothing of the replayed letters.
    let left = serde_json::json!({"decode": FILES, "unknown_schema": 1});
    assert_eq!(by_reason(config), left);
    let letters = crate::s3::object_keys(&table, "_tributary/dead-letter/");
    assert!(
        letters.iter().all(|k| k.contains(".r")),
        "only remainders are left: {letters:?}"
    );

    // A second replay adds nothing and rewrites nothing.
    let report = replay(config, &[]);
    assert_eq!(report["replayed"], 0, "{report}");
    assert_eq!(report["remainder_files"], 0, "{report}");
    assert_eq!(
        report["still_failing"],
        serde_json::json!({"decode": FILES})
    );
    assert_eq!(report["not_replayable"], 1);
    compact();
    assert_keys(&table, &expected);
    assert_eq!(by_reason(config), left);
    assert_eq!(
        crate::s3::object_keys(&table, "_tributary/staging/"),
        Vec::<String>::new(),
        "nothing left staged"
    );
    // One replay chain per source partition, whatever number of files
    // and runs: one `txn` entry each in the log.
    let replay_chains: Vec<String> =
        serde_json::from_str::<Vec<String>>(&run_python(TXN_IDS_PY, &[table.to_str().unwrap()]))
            .unwrap()
            .into_iter()
            .filter(|id| id.starts_with("tributary/dead-letter-replay/"))
            .collect();
    assert_eq!(replay_chains.len(), FILES, "{replay_chains:?}");
    drop(processes);
}

/// The app ids of every `txn` action in the table's JSON log entries.
const TXN_IDS_PY: &str = r#"
import boto3, json, os, sys
bucket, root = sys.argv[1][len('s3://'):].split('/', 1)
s3 = boto3.client('s3', endpoint_url=os.environ['TRIBUTARY_S3_ENDPOINT'])
ids = set()
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=root + '/_delta_log/'):
    for o in page.get('Contents', []):
        if o['Key'].endswith('.json'):
            for line in s3.get_object(Bucket=bucket, Key=o['Key'])['Body'].read().decode().splitlines():
                action = json.loads(line)
                if 'txn' in action:
                    ids.add(action['txn']['appId'])
print(json.dumps(sorted(ids)))
"#;
