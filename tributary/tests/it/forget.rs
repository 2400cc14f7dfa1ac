//! `tributary forget` on S3 while ingest and a compactor run: subjects and
//! keys whose records sit in compacted files, staged row files and dead
//! letters are erased, an independent scan of every object finds none of
//! them, and every other record is still there.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::compaction::{assert_keys, config, json, records};
use crate::operations::{Processes, wait_for};
use crate::{S3_STORAGE_OPTIONS, run_ok, run_python, s3, table_keys, tributary};

/// Every object under the table that holds one of `identifiers`, read with
/// third-party readers: pyarrow for Parquet (data and checkpoints, every
/// string value, JSON text parsed), fastavro for row files (values and
/// payload bytes), JSON line by line for everything else.
pub(crate) fn objects_holding(table: &Path, identifiers: &[&str]) -> Vec<String> {
    let out = run_python(
        &format!(
            r#"
import sys, os, io, json, boto3, fastavro, pyarrow.parquet as pq
{S3_STORAGE_OPTIONS}
uri, ids = sys.argv[1], set(sys.argv[2:])
bucket, root = uri[len('s3://'):].split('/', 1)
s3 = boto3.client('s3', endpoint_url=os.environ['TRIBUTARY_S3_ENDPOINT'])
def text_holds(s):
    if s in ids:
        return True
    if s[:1] in '{{[':
        try:
            return json_holds(json.loads(s))
        except ValueError:
            return False
    return False
def json_holds(v):
    if isinstance(v, str):
        return text_holds(v)
    if isinstance(v, list):
        return any(json_holds(x) for x in v)
    if isinstance(v, dict):
        return any(text_holds(k) or json_holds(x) for k, x in v.items())
    return False
def py_holds(v):
    if isinstance(v, (bytes, bytearray)):
        return any(i.encode() in v for i in ids)
    if isinstance(v, str):
        return text_holds(v)
    if isinstance(v, list):
        return any(py_holds(x) for x in v)
    if isinstance(v, dict):
        return any(py_holds(x) for x in v.values())
    return False
found = []
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=root + '/'):
    for o in page.get('Contents', []):
        key = o['Key']
        body = s3.get_object(Bucket=bucket, Key=key)['Body'].read()
        if key.endswith('.parquet'):
            rows = pq.read_table(io.BytesIO(body)).to_pylist()
            hit = any(py_holds(v) for r in rows for v in r.values())
        elif key.endswith('.avro'):
            hit = any(py_holds(v) for r in fastavro.reader(io.BytesIO(body)) for v in r.values())
        else:
            hit = False
            for line in body.decode('utf-8', 'replace').splitlines():
                try:
                    hit = hit or json_holds(json.loads(line))
                except ValueError:
                    hit = hit or any(i in line for i in ids)
        if hit:
            found.append(key)
print(json.dumps(found))
"#
        ),
        &[&[table.to_str().unwrap()], identifiers].concat(),
    );
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn forget_erases_subjects_and_keys_everywhere_while_ingest_and_compactor_run() {
    let dir = tempfile::tempdir().unwrap();
    let table = s3::new_table("forget");
    let extra = "[ingest.batch]\nmax_records = 300\nmax_latency_ms = 200\n\n\
                 [compact]\ninterval_ms = 200\n";
    let (config_path, input) = config(dir.path(), &table, extra);
    let config = config_path.to_str().unwrap();
    let mut processes = Processes::default();
    processes.spawn(tributary().args(["ingest", "--config", config]));
    let compactor = processes.spawn(tributary().args(["compact", "--config", config]));

    // Compacted records.
    std::fs::write(input.join("a.ndjson"), records(0, 4_000, None, None)).unwrap();
    wait_for(Duration::from_secs(60), "the first file compacted", || {
        let created = !s3::object_keys(&table, "_delta_log/").is_empty();
        (created && table_keys(&table).len() == 4_000).then_some(())
    });
    // Staged records and a dead letter that names a subject: the compactor
    // is stopped while they arrive.
    compactor.kill().unwrap();
    compactor.wait().unwrap();
    let mut later = records(4_000, 2_000, None, None);
    later.push_str("{\"host\":\"h1\",\"messages\":[{\"user\":\"u007\" this is not JSON\n");
    std::fs::write(input.join("b.ndjson"), later).unwrap();
    wait_for(Duration::from_secs(60), "the second file staged", || {
        let staged = s3::object_keys(&table, "_tributary/staging/");
        let dead = s3::object_keys(&table, "_tributary/dead-letter/");
        (!staged.is_empty() && !dead.is_empty()).then_some(())
    });

    let subjects = dir.path().join("subjects.txt");
    std::fs::write(&subjects, "u007\nu011\n").unwrap();
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "r5\nr6\n\n").unwrap();
    let run = || {
        let out = tributary()
            .args(["forget", "--config", config, "--table", "forget"])
            .args([
                "--subjects",
                subjects.to_str().unwrap(),
                "--keys",
                keys.to_str().unwrap(),
            ])
            .args(["--request-id", "req-1", "--grace-minutes", "0"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "forget failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        json(&out)
    };
    // The first run finds staged rows (the compactor is stopped); the
    // compactor then runs again. A compaction round that started before the
    // request was recorded can commit rows after the table was scanned; the
    // report then says the erasure is incomplete, and a rerun of the same
    // request finishes it.
    let mut reports = vec![run()];
    processes.spawn(tributary().args(["compact", "--config", config]));
    while reports.last().unwrap()["complete"] != true && reports.len() < 4 {
        reports.push(run());
    }
    let first = &reports[0];
    let last = reports.last().unwrap();
    assert_eq!(last["complete"], true, "{reports:?}");
    assert_eq!(
        last["verification"]["objects_with_matches"],
        serde_json::json!([]),
        "{last}"
    );
    assert!(
        last["verification"]["objects_read"].as_u64().unwrap() > 10,
        "{last}"
    );
    assert_eq!(first["subjects_requested"], 2);
    assert_eq!(first["keys_requested"], 2);
    assert!(
        first["table"]["files_rewritten"].as_u64().unwrap() >= 1,
        "{first}"
    );
    assert!(
        first["table"]["rows_erased"].as_u64().unwrap() >= 100,
        "{first}"
    );
    assert!(
        first["dead_letters_erased"].as_u64().unwrap() >= 1,
        "{first}"
    );
    assert!(
        first["log_entries_expired"].as_u64().unwrap() >= 1,
        "{first}"
    );

    // Let the compactor finish the staged rows, then stop everything.
    wait_for(
        Duration::from_secs(60),
        "every staged file compacted",
        || {
            s3::object_keys(&table, "_tributary/staging/")
                .is_empty()
                .then_some(())
        },
    );
    drop(processes);

    let forgotten = |i: u64| i % 41 == 7 || i % 41 == 11 || i == 5 || i == 6;
    let expected: Vec<String> = (0..6_000)
        .filter(|i| !forgotten(*i))
        .map(|i| format!("r{i}"))
        .collect();
    assert_keys(&table, &expected);
    let found = objects_holding(&table, &["u007", "u011", "r5", "r6"]);
    assert_eq!(
        found,
        Vec::<String>::new(),
        "objects still holding an identifier"
    );
    // The identifiers of other subjects are still there (the scan can find).
    assert!(!objects_holding(&table, &["u008"]).is_empty());

    // The complete request moved beside its report (neither holds an
    // identifier: the scan above read them), and a dry run of another
    // request changes nothing and finds nothing.
    let names: HashSet<String> = s3::object_keys(&table, "_tributary/forget/")
        .into_iter()
        .map(|k| k.rsplit('/').next().unwrap().to_string())
        .collect();
    let done: HashSet<String> = ["req-1.done.json", "req-1.report.json"]
        .map(String::from)
        .into();
    assert_eq!(names, done);
    let dry = tributary()
        .args([
            "forget",
            "--config",
            config,
            "--subjects",
            subjects.to_str().unwrap(),
        ])
        .args(["--request-id", "req-2", "--dry-run"])
        .output()
        .unwrap();
    let dry = json(&dry);
    assert_eq!(dry["table"]["files_rewritten"], 0, "{dry}");
    assert_eq!(dry["complete"], true, "{dry}");
    assert!(s3::object_keys(&table, "_tributary/forget/req-2").is_empty());
}

/// Phases of a forget run, in order (see `PAUSE_AFTER_VARIABLE`).
const PHASES: [&str; 7] = [
    "record",
    "table",
    "staged_and_dead_letters",
    "delete_replaced",
    "expire_log",
    "verify",
    "delete_unreferenced",
];

#[test]
fn a_forget_killed_after_any_phase_finishes_when_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let table = s3::new_table("forget-kill");
    let (config_path, input) = config(dir.path(), &table, "[ingest.batch]\nmax_records = 300\n");
    let config = config_path.to_str().unwrap();
    std::fs::write(input.join("a.ndjson"), records(0, 3_000, None, None)).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    let mut later = records(3_000, 1_000, None, None);
    later.push_str("{\"messages\":[{\"user\":\"u007\" not JSON\n");
    std::fs::write(input.join("b.ndjson"), later).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    let subjects = dir.path().join("subjects.txt");
    std::fs::write(&subjects, "u007\n").unwrap();
    let forget = || {
        let mut command = tributary();
        command
            .args([
                "forget",
                "--config",
                config,
                "--subjects",
                subjects.to_str().unwrap(),
            ])
            .args(["--request-id", "killed", "--grace-minutes", "0"]);
        command
    };

    // Each run is killed right after one more phase than the last one got
    // through; each resumes what the previous one left.
    for phase in PHASES {
        let mut child = forget()
            .env("TRIBUTARY_FORGET_PAUSE_AFTER", phase)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let marker = format!("forget paused after phase {phase}");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = Vec::new();
        for line in stderr.lines() {
            let line = line.unwrap();
            let done = line.contains(&marker);
            seen.push(line);
            if done {
                break;
            }
        }
        assert!(
            seen.iter().any(|l| l.contains(&marker)),
            "no pause after {phase}: {seen:?}"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let last = json(&forget().output().unwrap());
    assert_eq!(last["complete"], true, "{last}");

    run_ok(&["compact", "--config", config, "--once"]);
    let expected: Vec<String> = (0..4_000)
        .filter(|i| i % 41 != 7)
        .map(|i| format!("r{i}"))
        .collect();
    assert_keys(&table, &expected);
    assert_eq!(objects_holding(&table, &["u007"]), Vec::<String>::new());
}

#[test]
fn two_forgets_an_optimize_and_a_compactor_at_once_lose_and_resurrect_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let table = s3::new_table("forget-race");
    let extra = "[ingest.batch]\nmax_records = 200\nmax_latency_ms = 200\n\n\
                 [compact]\ninterval_ms = 100\nmax_files_per_commit = 2\nlease_ms = 5000\n";
    let (config_path, input) = config(dir.path(), &table, extra);
    let config = config_path.to_str().unwrap();
    let mut processes = Processes::default();
    processes.spawn(tributary().args(["ingest", "--config", config]));
    processes.spawn(tributary().args(["compact", "--config", config]));
    std::fs::write(input.join("a.ndjson"), records(0, 3_000, None, None)).unwrap();
    wait_for(Duration::from_secs(60), "the first file compacted", || {
        let created = !s3::object_keys(&table, "_delta_log/").is_empty();
        (created && table_keys(&table).len() == 3_000).then_some(())
    });
    // More records keep arriving while two requests and an optimize run.
    std::fs::write(input.join("b.ndjson"), records(3_000, 3_000, None, None)).unwrap();
    let request = |id: &'static str, subject: &'static str| {
        let (config, dir) = (config.to_string(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let subjects = dir.join(format!("{id}.txt"));
            std::fs::write(&subjects, format!("{subject}\n")).unwrap();
            let mut reports = Vec::new();
            while reports
                .last()
                .is_none_or(|r: &serde_json::Value| r["complete"] != true)
            {
                assert!(reports.len() < 5, "{id} never completed: {reports:?}");
                let out = tributary()
                    .args([
                        "forget",
                        "--config",
                        &config,
                        "--subjects",
                        subjects.to_str().unwrap(),
                    ])
                    .args(["--request-id", id, "--grace-minutes", "0"])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{id}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                reports.push(json(&out));
            }
            reports
        })
    };
    let first = request("first", "u003");
    let second = request("second", "u017");
    let optimize = tributary()
        .args(["optimize", "--config", config])
        .output()
        .unwrap();
    assert!(
        optimize.status.success(),
        "{}",
        String::from_utf8_lossy(&optimize.stderr)
    );
    let first = first.join().unwrap();
    let second = second.join().unwrap();
    assert!(
        first[0]["table"]["rows_erased"].as_u64().unwrap() > 0,
        "{first:?}"
    );
    assert!(
        second[0]["table"]["rows_erased"].as_u64().unwrap() > 0,
        "{second:?}"
    );

    let forgotten = |i: u64| i % 41 == 3 || i % 41 == 17;
    let expected: Vec<String> = (0..6_000)
        .filter(|i| !forgotten(*i))
        .map(|i| format!("r{i}"))
        .collect();
    wait_for(Duration::from_secs(60), "every record compacted", || {
        let staged = s3::object_keys(&table, "_tributary/staging/");
        (staged.is_empty() && table_keys(&table).len() == expected.len()).then_some(())
    });
    drop(processes);
    assert_keys(&table, &expected);
    assert_eq!(
        objects_holding(&table, &["u003", "u017"]),
        Vec::<String>::new()
    );
}

#[test]
fn inbox_requests_run_and_leave_the_inbox_once_complete() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let (config_path, input) = config(dir.path(), &table, "");
    let config = config_path.to_str().unwrap();
    std::fs::write(input.join("a.ndjson"), records(0, 1_000, None, None)).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(
        inbox.join("req-a.json"),
        r#"{"subjects": ["u005"], "keys": ["r1"]}"#,
    )
    .unwrap();
    std::fs::write(inbox.join("broken.json"), "not JSON").unwrap();

    let out = tributary()
        .args([
            "forget",
            "--config",
            config,
            "--inbox",
            inbox.to_str().unwrap(),
        ])
        .args(["--grace-minutes", "0"])
        .output()
        .unwrap();
    // The broken request fails the command; the good one still ran.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken"));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["request_id"], "req-a");
    assert_eq!(report["complete"], true, "{report}");
    assert!(
        !inbox.join("req-a.json").exists(),
        "a complete request leaves the inbox"
    );
    assert!(inbox.join("broken.json").exists());
    let expected: Vec<String> = (0..1_000)
        .filter(|i| i % 41 != 5 && *i != 1)
        .map(|i| format!("r{i}"))
        .collect();
    assert_keys(&table, &expected);
}

#[test]
fn the_oldest_unfinished_erasure_request_has_an_age_gauge() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let table = dir.path().join("table");
    let config = crate::write_config(dir.path(), &input, &table, "");
    // A request recorded two days ago that never completed (its forget run
    // died), beside a complete one.
    let ledger = table.join("_tributary/forget");
    std::fs::create_dir_all(&ledger).unwrap();
    let two_days_ago = now_ms() - 2 * 86_400_000;
    for (id, complete) in [("stuck", false), ("finished", true)] {
        let request = serde_json::json!({
            "id": id, "created_at_ms": two_days_ago - 1000, "subject_hashes": ["00"],
            "key_hashes": [], "complete": complete,
        });
        std::fs::write(ledger.join(format!("{id}.json")), request.to_string()).unwrap();
    }
    let port = crate::operations::free_port();
    let mut processes = Processes::default();
    processes.spawn(
        tributary()
            .args(["compact", "--config", config.to_str().unwrap()])
            .env(
                "TRIBUTARY_SERVICE__LISTEN_ADDR",
                format!("127.0.0.1:{port}"),
            ),
    );
    let (unfinished, age) = wait_for(Duration::from_secs(30), "the erasure gauges", || {
        let (_, body) = crate::operations::http_get(port, "/metrics")?;
        let sample = |name| crate::operations::sample(&body, name);
        let unfinished = sample("tributary_compactor_erasure_requests_unfinished")?;
        let age = sample("tributary_compactor_oldest_erasure_request_age_seconds")?;
        (age > 0.0).then_some((unfinished, age))
    });
    assert_eq!(unfinished, 1.0);
    assert!(
        (2.0 * 86_400.0..2.0 * 86_400.0 + 120.0).contains(&age),
        "two days and a second, give or take the test's run: {age}"
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// After a request completes, its subjects' and keys' records sent again (a
/// replay from the source, a backfill) never reach the table, while a
/// record of the same subject from after the request does.
#[test]
fn a_replay_after_a_completed_request_brings_nothing_back() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let (config_path, input) = config(dir.path(), &table, "");
    let config = config_path.to_str().unwrap();
    std::fs::write(input.join("a.ndjson"), records(0, 1_000, None, None)).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    let (subjects, keys) = (dir.path().join("subjects.txt"), dir.path().join("keys.txt"));
    std::fs::write(&subjects, "u005\n").unwrap();
    std::fs::write(&keys, "r1\n").unwrap();
    let out = run_ok(&[
        "forget",
        "--config",
        config,
        "--subjects",
        subjects.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
        "--grace-minutes",
        "0",
    ]);
    assert_eq!(json(&out)["complete"], true);

    // The replay: every record of `u005` and `r1` again, as sent before; and
    // a new record of `u005` an hour from now.
    let replayed: String = records(0, 1_000, None, None)
        .lines()
        .map(|line| {
            let mut envelope: serde_json::Value = serde_json::from_str(line).unwrap();
            let messages = envelope["messages"].as_array_mut().unwrap();
            messages.retain(|m| m["user"] == "u005" || m["id"] == "r1");
            format!("{envelope}\n")
        })
        .filter(|line| !line.contains("\"messages\":[]"))
        .collect();
    assert!(replayed.lines().count() > 10);
    let later = now_ms() + 3_600_000;
    let new = format!(
        "{{\"host\":\"h9\",\"messages\":[{{\"id\":\"r5000\",\"user\":\"u005\",\"ts\":{later},\"n\":1}}]}}\n"
    );
    std::fs::write(input.join("b.ndjson"), replayed + &new).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    let mut expected: Vec<String> = (0..1_000)
        .filter(|i| i % 41 != 5 && *i != 1)
        .map(|i| format!("r{i}"))
        .collect();
    expected.push("r5000".into());
    assert_keys(&table, &expected);
}
