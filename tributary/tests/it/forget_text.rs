//! `tributary forget` with subjects mentioned inside the message text of
//! other people's rows (`lake.redact_columns`), and `tributary forget
//! --audit`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::compaction::{config, json};
use crate::{S3_STORAGE_OPTIONS, run_ok, run_python, tributary};

/// The subject whose mentions are erased.
const SUBJECT: &str = "p3@ex.org";

/// The message text of record `i`: every fourth names a user (every 164th
/// names `p3@ex.org`), so does every fourth from the second on.
fn msg(i: u64) -> String {
    match i % 4 {
        0 => format!("password reset mail sent to p{}@ex.org.", (i / 4) % 41),
        1 => format!("login from 10.0.{}.{} ok", i % 200, i % 7),
        2 => format!("ticket T-{i} for <p{}@ex.org>", (i * 7) % 41),
        _ => "heartbeat".into(),
    }
}

/// Envelopes of 5 messages: id `r<i>`, user `p<i % 41>@ex.org`, a message.
fn records(first: u64, count: u64) -> String {
    let ids: Vec<u64> = (first..first + count).collect();
    let mut lines = String::new();
    for chunk in ids.chunks(5) {
        let messages: Vec<String> = chunk
            .iter()
            .map(|&i| {
                serde_json::json!({
                    "id": format!("r{i}"),
                    "user": format!("p{}@ex.org", i % 41),
                    "ts": 1_795_478_400_000u64 + (i * 7_919 % 3_000) * 100_000,
                    "n": i,
                    "msg": msg(i),
                })
                .to_string()
            })
            .collect();
        lines.push_str(&format!("{{\"messages\":[{}]}}\n", messages.join(",")));
    }
    lines
}

/// Sets (or removes) `lake.redact_columns = ["messages_msg"]`.
fn set_redact(config: &Path, on: bool) {
    let line = "redact_columns = [\"messages_msg\"]\n";
    let text = std::fs::read_to_string(config).unwrap().replace(line, "");
    let text = if on {
        text.replacen("[lake]\n", &format!("[lake]\n{line}"), 1)
    } else {
        text
    };
    std::fs::write(config, text).unwrap();
}

/// Every (object, column) under the table whose bytes hold `needle`, read
/// with third-party readers: pyarrow for Parquet (every value of every
/// column), fastavro for row files (every value, payload bytes too), the
/// raw bytes of everything else. A plain substring search, no boundaries.
fn substring_scan(table: &Path, needle: &str) -> Vec<(String, String)> {
    let out = run_python(
        &format!(
            r#"
import sys, os, io, json, fastavro, pyarrow.parquet as pq
{S3_STORAGE_OPTIONS}
uri, needle = sys.argv[1], sys.argv[2]
def objects():
    if uri.startswith('s3://'):
        import boto3
        bucket, root = uri[len('s3://'):].split('/', 1)
        s3 = boto3.client('s3', endpoint_url=os.environ['TRIBUTARY_S3_ENDPOINT'])
        for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=root + '/'):
            for o in page.get('Contents', []):
                yield o['Key'][len(root) + 1:], s3.get_object(Bucket=bucket, Key=o['Key'])['Body'].read()
    else:
        for d, _, names in os.walk(uri):
            for n in names:
                p = os.path.join(d, n)
                yield os.path.relpath(p, uri), open(p, 'rb').read()
def holds(v):
    if isinstance(v, (bytes, bytearray)):
        return needle.encode() in v
    if isinstance(v, str):
        return needle in v
    if isinstance(v, list):
        return any(holds(x) for x in v)
    if isinstance(v, dict):
        return any(holds(x) for x in v.values())
    return False
found = []
for key, body in objects():
    if key.endswith('.parquet'):
        t = pq.read_table(io.BytesIO(body))
        found += [[key, c] for c in t.column_names if any(holds(v) for v in t.column(c).to_pylist())]
    elif key.endswith('.avro'):
        rows = list(fastavro.reader(io.BytesIO(body)))
        columns = sorted({{c for r in rows for c, v in r.items() if holds(v)}})
        found += [[key, c] for c in columns]
    elif needle.encode() in body:
        found.append([key, ''])
print(json.dumps(sorted(found)))
"#
        ),
        &[table.to_str().unwrap(), needle],
    );
    serde_json::from_str(out.trim()).unwrap()
}

/// Every row of the table: key → (user, message, n), read by `deltalake`.
fn table_rows(table: &Path) -> BTreeMap<String, (String, String, u64)> {
    let out = run_python(
        &format!(
            r#"
import sys, json, deltalake
{S3_STORAGE_OPTIONS}
t = deltalake.DeltaTable(sys.argv[1], storage_options=storage_options(sys.argv[1]))
t = t.to_pyarrow_table(columns=['_key', 'messages_user', 'messages_msg', 'messages_n'])
rows = {{k: [u, m, n] for k, u, m, n in zip(*(t.column(c).to_pylist() for c in t.column_names))}}
print(json.dumps(rows))
"#
        ),
        &[table.to_str().unwrap()],
    );
    serde_json::from_str(out.trim()).unwrap()
}

/// A local table under `dir` with `messages_msg` a redact column, holding
/// records 0 to 999: (table, config file, input directory).
fn redacting_table(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let table = dir.join("table");
    let (config_path, input) = config(dir, &table, "");
    set_redact(&config_path, true);
    let config = config_path.to_str().unwrap();
    std::fs::write(input.join("a.ndjson"), records(0, 1_000)).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    (table, config_path, input)
}

fn forget(config: &str, subjects: &Path, extra: &[&str]) -> serde_json::Value {
    let out = tributary()
        .args(["forget", "--config", config, "--subjects"])
        .arg(subjects)
        .args(["--grace-minutes", "0"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "forget failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out)
}

#[test]
fn forget_redacts_mentions_in_text_of_other_rows_in_files_staged_rows_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let table = crate::s3::new_table("forget-text");
    let (config_path, input) = config(dir.path(), &table, "");
    let config = config_path.to_str().unwrap();

    // Files written before the column was configured for redaction have
    // no index; files written after have one.
    std::fs::write(input.join("a.ndjson"), records(0, 1_000)).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    set_redact(&config_path, true);
    std::fs::write(input.join("b.ndjson"), records(1_000, 1_000)).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    // Staged rows, and a dead letter whose raw message mentions the subject.
    let mut staged = records(2_000, 500);
    staged.push_str(&format!(
        "{{\"messages\":[{{\"user\":\"p9@ex.org\",\"msg\":\"to {SUBJECT}\"}} broken\n"
    ));
    std::fs::write(input.join("c.ndjson"), staged).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    assert!(!substring_scan(&table, SUBJECT).is_empty());

    // The index rules files out without reading them: a subject nobody
    // mentions reads only the files written before the index.
    let nobody = dir.path().join("nobody.txt");
    std::fs::write(&nobody, "p999@ex.org\n").unwrap();
    let dry = forget(config, &nobody, &["--dry-run"]);
    let read_without_index = dry["table"]["read_without_index"].as_u64().unwrap();
    assert!(read_without_index >= 1, "{dry}");
    assert_eq!(dry["table"]["files_read"], read_without_index, "{dry}");
    assert!(
        dry["table"]["pruned_by_bloom_filter"].as_u64().unwrap() >= 1,
        "{dry}"
    );

    let subjects = dir.path().join("subjects.txt");
    std::fs::write(&subjects, format!("{SUBJECT}\n")).unwrap();
    let report = forget(config, &subjects, &["--request-id", "text-1"]);
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["residue"], serde_json::json!([]), "{report}");
    assert!(
        report["table"]["values_redacted"].as_u64().unwrap() >= 10,
        "{report}"
    );
    assert!(
        report["row_file_values_redacted"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(
        report["dead_letters_erased"].as_u64().unwrap() >= 1,
        "{report}"
    );

    run_ok(&["compact", "--config", config, "--once"]);
    assert_eq!(
        substring_scan(&table, SUBJECT),
        Vec::<(String, String)>::new(),
        "objects still holding the subject"
    );
    // Every other row is there, with only the subject's address replaced.
    let rows = table_rows(&table);
    let expected: BTreeMap<String, (String, String, u64)> = (0..2_500)
        .filter(|i| i % 41 != 3)
        .map(|i| {
            let user = format!("p{}@ex.org", i % 41);
            let text = msg(i).replace(SUBJECT, "[redacted]");
            (format!("r{i}"), (user, text, i))
        })
        .collect();
    assert_eq!(rows.len(), expected.len());
    let redacted = rows.values().filter(|r| r.1.contains("[redacted]")).count();
    assert!(redacted >= 20, "{redacted} messages redacted");
    assert_eq!(rows, expected);
    // Other people's addresses are still there.
    assert!(!substring_scan(&table, "p4@ex.org").is_empty());
}

#[test]
fn forget_names_a_column_that_mentions_the_subject_but_is_not_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let (config_path, input) = config(dir.path(), &table, "");
    let config = config_path.to_str().unwrap();
    std::fs::write(input.join("a.ndjson"), records(0, 1_000)).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    let subjects = dir.path().join("subjects.txt");
    std::fs::write(&subjects, format!("{SUBJECT}\n")).unwrap();

    let report = forget(config, &subjects, &[]);
    assert_eq!(report["complete"], false, "{report}");
    let residue = report["residue"].as_array().unwrap();
    assert!(!residue.is_empty(), "{report}");
    for r in residue {
        assert_eq!(r["column"], "messages_msg", "{report}");
        assert!(
            r["object"].as_str().unwrap().ends_with(".parquet"),
            "{report}"
        );
    }
    assert!(
        report["verification"]["residue"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["column"] == "messages_msg"),
        "{report}"
    );
    // The subject's own rows are gone; the mentions stay, untouched.
    let rows = table_rows(&table);
    assert!(rows.values().all(|r| r.0 != SUBJECT));
    assert!(rows.values().any(|r| r.1.contains(SUBJECT)));
}

#[test]
fn forget_audit_finds_identifiers_of_completed_requests_left_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (table, config_path, _) = redacting_table(dir.path());
    let config = config_path.to_str().unwrap();
    let audit = || {
        tributary()
            .args(["forget", "--config", config, "--audit"])
            .output()
            .unwrap()
    };
    // Nothing erased yet: nothing to look for.
    let out = audit();
    assert!(out.status.success());
    assert_eq!(json(&out)["ledger_requests"], 0);

    let subjects = dir.path().join("subjects.txt");
    std::fs::write(&subjects, format!("{SUBJECT}\n")).unwrap();
    let report = forget(config, &subjects, &["--request-id", "audited"]);
    assert_eq!(report["complete"], true, "{report}");
    let out = audit();
    let clean = json(&out);
    assert!(out.status.success(), "{clean}");
    assert_eq!(clean["clean"], true, "{clean}");
    assert_eq!(clean["ledger_subjects"], 1, "{clean}");
    assert!(clean["objects_read"].as_u64().unwrap() >= 5, "{clean}");

    // Residue planted where forget never looked: a Parquet file no commit
    // references (a crashed writer's) with the address inside text, and a
    // text object.
    run_python(
        "import os, sys, pyarrow as pa, pyarrow.parquet as pq\n\
         os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True)\n\
         pq.write_table(pa.table({'note': ['ok', 'mail to p3@ex.org.']}), sys.argv[1])",
        &[table
            .join("date=2026-11-24/orphan.parquet")
            .to_str()
            .unwrap()],
    );
    std::fs::write(table.join("_tributary/notes.txt"), "call p3@ex.org today\n").unwrap();
    let out = audit();
    let found = json(&out);
    assert_eq!(out.status.code(), Some(1), "{found}");
    assert_eq!(found["clean"], false, "{found}");
    let residue: Vec<(String, String, String)> = found["residue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["object"].as_str().unwrap().to_string(),
                r["column"].as_str().unwrap().to_string(),
                r["request_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        residue,
        [
            (
                "_tributary/notes.txt".into(),
                String::new(),
                "audited".into()
            ),
            (
                "date=2026-11-24/orphan.parquet".into(),
                "note".into(),
                "audited".into()
            ),
        ]
    );
}

/// `(key, user, message, event time in ms)` of every row of the table (a
/// replay may hold a key twice), read by `deltalake`.
fn all_rows(table: &Path) -> Vec<(String, String, String, i64)> {
    let out = run_python(
        &format!(
            r#"
import sys, json, deltalake
{S3_STORAGE_OPTIONS}
t = deltalake.DeltaTable(sys.argv[1], storage_options=storage_options(sys.argv[1]))
t = t.to_pyarrow_table(columns=['_key', 'messages_user', 'messages_msg', 'messages_ts'])
ts = [int(v.timestamp() * 1000) for v in t.column('messages_ts').to_pylist()]
print(json.dumps(sorted(zip(*(t.column(c).to_pylist() for c in t.column_names[:3]), ts))))
"#
        ),
        &[table.to_str().unwrap()],
    );
    serde_json::from_str(out.trim()).unwrap()
}

/// After a completed forget, the same input sent again (a backfill, a
/// replay) brings back other people's rows that mention the subject in a
/// redact column: compaction redacts the mention by the erasure ledger,
/// while mentions in records from after the request stay. The audit then
/// counts only what is dated at or before the request.
#[test]
fn a_replay_after_a_forget_brings_no_mention_back_and_the_audit_skips_later_records() {
    let dir = tempfile::tempdir().unwrap();
    let (table, config_path, input) = redacting_table(dir.path());
    let config = config_path.to_str().unwrap();
    let subjects = dir.path().join("subjects.txt");
    std::fs::write(&subjects, format!("{SUBJECT}\n")).unwrap();
    let report = forget(config, &subjects, &["--request-id", "replayed"]);
    assert_eq!(report["complete"], true, "{report}");

    // The same input again, under a new name; and, an hour from now,
    // records of other people mentioning the subject and one of the
    // subject, and a dead letter mentioning it.
    let later = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let mut replay = records(0, 1_000);
    for (id, user, msg) in [
        (
            "n1",
            "p4@ex.org",
            format!("password reset mail sent to {SUBJECT}."),
        ),
        ("n2", SUBJECT, "login from 10.0.0.1 ok".to_string()),
    ] {
        replay.push_str(&format!(
            "{}\n",
            serde_json::json!({"messages": [{"id": id, "user": user, "ts": later, "n": 0, "msg": msg}]})
        ));
    }
    replay.push_str(&format!(
        "{{\"messages\":[{{\"msg\":\"to {SUBJECT}\"}} broken\n"
    ));
    std::fs::write(input.join("a-again.ndjson"), replay).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    let out = run_ok(&["compact", "--config", config, "--once"]);
    let compacted = json(&out);
    // The replayed mentions (in other people's rows).
    let mentions = (0..1_000u64)
        .filter(|i| msg(*i).contains(SUBJECT) && i % 41 != 3)
        .count() as u64;
    assert!(mentions >= 10, "{mentions}");
    assert_eq!(compacted["mentions_redacted"], mentions, "{compacted}");

    let rows = all_rows(&table);
    let request_ms = later - 3_600_000;
    let holding: Vec<_> = rows.iter().filter(|r| r.2.contains(SUBJECT)).collect();
    assert!(
        holding.iter().all(|r| r.3 > request_ms),
        "an unredacted mention from before the request: {holding:?}"
    );
    let keys: Vec<&str> = holding.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(keys, ["n1"], "the later mention stays, unredacted");
    assert!(rows.iter().any(|r| r.0 == "n2" && r.1 == SUBJECT));
    // The replayed rows are there twice (the table appends), redacted as
    // forget redacted them the first time; the subject's own rows are not.
    for i in [0u64, 12, 18] {
        let key = format!("r{i}");
        let copies: Vec<_> = rows.iter().filter(|r| r.0 == key).collect();
        assert_eq!(copies.len(), 2, "{key}: {copies:?}");
        let text = msg(i).replace(SUBJECT, "[redacted]");
        assert!(copies.iter().all(|r| r.2 == text), "{key}: {copies:?}");
    }
    assert!(!rows.iter().any(|r| r.1 == SUBJECT && r.0 != "n2"));

    // The audit: the subject in rows, statistics and a dead letter from
    // after the request is not residue.
    let out = tributary()
        .args(["forget", "--config", config, "--audit"])
        .output()
        .unwrap();
    let audit = json(&out);
    assert!(out.status.success(), "{audit}");
    assert_eq!(audit["clean"], true, "{audit}");
    // Without the request's time, the same objects hold it: the table file
    // with `n1` and `n2`, and the dead letter.
    let found = substring_scan(&table, SUBJECT);
    assert!(
        found
            .iter()
            .any(|(o, c)| o.ends_with(".parquet") && c == "messages_msg"),
        "{found:?}"
    );
    assert!(
        found.iter().any(|(o, _)| o.contains("dead-letter")),
        "{found:?}"
    );
}
