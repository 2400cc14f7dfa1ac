//! Retention on S3 while ingest and a compactor run: partitions past the
//! table-wide age and tenants' rows past their rules leave the table, the
//! staged row files and the dead letters (an independent scan of every
//! object finds none of them), and every other row is still there, exact.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::compaction::{config, json};
use crate::forget::objects_holding;
use crate::operations::{Processes, wait_for};
use crate::{S3_STORAGE_OPTIONS, run_python, s3, tributary};

/// Days of event dates the records span, back from now.
const DAYS: u64 = 30;

/// Record `i`: days before now of its event time, and its tenant.
fn shape(i: u64) -> (u64, &'static str) {
    (
        i % DAYS,
        ["acme", "initech", "globex"][(i / DAYS % 3) as usize],
    )
}

/// Records `first..first + count` as envelope lines of 5 messages, dated
/// The "now" of the records' event times, and today's date: 15 minutes
/// ago, but not before 00:11 UTC today, so that every record (at most ten
/// minutes before it) is dated today even just after midnight.
fn records_now() -> (i64, chrono::NaiveDate) {
    let now = chrono::Utc::now();
    let today = now.date_naive();
    let earliest = today.and_hms_opt(0, 11, 0).unwrap().and_utc();
    let now_ms = (now.timestamp_millis() - 900_000).max(earliest.timestamp_millis());
    (now_ms, today)
}

/// `shape(i).0` days before `now_ms`, with the tenant in `account`.
fn records(first: u64, count: u64, now_ms: i64) -> String {
    let ids: Vec<u64> = (first..first + count).collect();
    let mut lines = String::new();
    for chunk in ids.chunks(5) {
        let messages: Vec<String> = chunk
            .iter()
            .map(|&i| {
                let (days, tenant) = shape(i);
                let ts = now_ms - days as i64 * 86_400_000 - (i % 600) as i64 * 1_000;
                format!(
                    r#"{{"id":"r{i}","user":"u{:03}","account":"{tenant}","ts":{ts}}}"#,
                    i % 41
                )
            })
            .collect();
        lines.push_str(&format!("{{\"messages\":[{}]}}\n", messages.join(",")));
    }
    lines
}

/// Whether record `i` outlives the rules of the test's configuration
/// (table: 20 days; acme: 10; initech, from the rules object: 5) applied
/// `ahead` days from now.
fn kept(i: u64, ahead: u64) -> bool {
    let (days, tenant) = shape(i);
    let keep = match tenant {
        "acme" => 10,
        "initech" => 5,
        _ => 20,
    };
    days + ahead <= keep
}

/// `(key, account, date)` of every row of the table, read with Python
/// `deltalake`.
fn table_rows(table: &Path) -> BTreeSet<(String, String, String)> {
    let out = run_python(
        &format!(
            "import sys, json, deltalake\n{S3_STORAGE_OPTIONS}\n\
             t = deltalake.DeltaTable(sys.argv[1], storage_options=storage_options(sys.argv[1]))\n\
             t = t.to_pyarrow_table(columns=['_key', 'messages_account', 'date'])\n\
             print(json.dumps([[k, a, str(d)] for k, a, d in zip(*(t.column(c).to_pylist() for c in t.column_names))]))"
        ),
        &[table.to_str().unwrap()],
    );
    let rows: Vec<(String, String, String)> = serde_json::from_str(out.trim()).unwrap();
    rows.into_iter().collect()
}

/// The rows of records `ids` that `kept` keeps `ahead` days from now.
fn expected(
    ids: std::ops::Range<u64>,
    ahead: u64,
    today: chrono::NaiveDate,
) -> BTreeSet<(String, String, String)> {
    ids.filter(|&i| kept(i, ahead))
        .map(|i| {
            let (days, tenant) = shape(i);
            let date = today - chrono::Days::new(days);
            (format!("r{i}"), tenant.to_string(), date.to_string())
        })
        .collect()
}

fn put_object(table: &Path, key: &str, body: &str) {
    run_python(
        "import boto3, os, sys\n\
         bucket, root = sys.argv[1][len('s3://'):].split('/', 1)\n\
         boto3.client('s3', endpoint_url=os.environ['TRIBUTARY_S3_ENDPOINT'])\
         .put_object(Bucket=bucket, Key=root + '/' + sys.argv[2], Body=sys.argv[3].encode())",
        &[table.to_str().unwrap(), key, body],
    );
}

#[test]
fn retention_expires_partitions_and_tenants_everywhere_while_ingest_and_compactor_run() {
    let dir = tempfile::tempdir().unwrap();
    let table = s3::new_table("retention");
    let (now_ms, today) = records_now();
    let extra = "[ingest.batch]\nmax_records = 300\nmax_latency_ms = 200\n\n\
                 [compact]\ninterval_ms = 200\n\n\
                 [retention]\nmax_age_days = 20\ninterval_ms = 500\ngrace_ms = 0\n\
                 [[retention.tenants]]\ncolumn = \"messages_account\"\nvalue = \"acme\"\nkeep_days = 10\n";
    let (config_path, input) = config(dir.path(), &table, extra);
    let config = config_path.to_str().unwrap();
    let mut processes = Processes::default();
    processes.spawn(tributary().args(["ingest", "--config", config]));
    let compactor = processes.spawn(tributary().args(["compact", "--config", config]));
    // A rule added while the compactor runs: read at its next run.
    put_object(
        &table,
        "_tributary/retention/rules.json",
        r#"{"tenants": [{"column": "messages_account", "value": "initech", "keep_days": 5}]}"#,
    );

    // The compactor applies the rules on its schedule, as of today.
    std::fs::write(input.join("a.ndjson"), records(0, 3_000, now_ms)).unwrap();
    let first = expected(0..3_000, 0, today);
    wait_for(
        Duration::from_secs(120),
        "the compactor's retention",
        || {
            let created = !s3::object_keys(&table, "_delta_log/").is_empty();
            (created && table_rows(&table) == first).then_some(())
        },
    );

    // Staged rows and dead letters (one names the tenant initech): the
    // compactor is stopped while they arrive.
    compactor.kill().unwrap();
    compactor.wait().unwrap();
    let mut later = records(3_000, 1_500, now_ms);
    later.push_str("{\"messages\":[{\"id\":\"x1\",\"account\":\"initech\" not JSON\n");
    later.push_str("{\"messages\":[{\"id\":\"x2\",\"account\":\"globex\" not JSON\n");
    std::fs::write(input.join("b.ndjson"), later).unwrap();
    wait_for(Duration::from_secs(60), "the second file staged", || {
        let staged = s3::object_keys(&table, "_tributary/staging/");
        let dead = s3::object_keys(&table, "_tributary/dead-letter/");
        (!staged.is_empty() && !dead.is_empty()).then_some(())
    });

    // `tributary retention` as of 6 days from now: the table-wide age and
    // acme's rule reach 6 days further back, every initech row and the
    // dead letter naming initech (written today) have expired.
    let as_of = (today + chrono::Days::new(6)).to_string();
    let run = |dry_run: bool| {
        let mut command = tributary();
        command.args(["retention", "--config", config, "--as-of", &as_of]);
        command.args(["--grace-minutes", "0"]);
        if dry_run {
            command.arg("--dry-run");
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "retention failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("retention: table done"),
            "no progress on stderr"
        );
        json(&out)
    };
    let dry = run(true);
    assert_eq!(dry["dry_run"], true);
    let report = run(false);
    for (what, value) in [
        ("partitions removed", &report["table"]["partitions_removed"]),
        (
            "table files rewritten",
            &report["table"]["tenants"]["files_rewritten"],
        ),
        ("staged rows", &report["row_files"]["staged_rows_expired"]),
        ("log entries", &report["log_entries_expired"]),
        ("objects deleted", &report["objects_deleted"]),
    ] {
        let n = value
            .as_array()
            .map_or_else(|| value.as_u64().unwrap(), |a| a.len() as u64);
        assert!(n >= 1, "{what}: {report}");
    }
    assert_eq!(report["row_files"]["dead_letters_expired"], 1, "{report}");
    // The dry run counted what the run then did.
    assert_eq!(
        dry["table"]["partitions_removed"], report["table"]["partitions_removed"],
        "{dry}\n{report}"
    );
    assert_eq!(
        dry["rows_expired"], report["rows_expired"],
        "{dry}\n{report}"
    );
    assert_eq!(
        report["oldest_event_date"],
        (today - chrono::Days::new(14)).to_string()
    );
    for phase in ["rules", "table", "staged_and_dead_letters", "expire_log"] {
        assert!(report["timings_ms"][phase].is_u64(), "{report}");
    }

    // The compactor compacts what is left staged.
    processes.spawn(tributary().args(["compact", "--config", config]));
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

    let mut all = expected(0..3_000, 6, today);
    all.extend(expected(3_000..4_500, 6, today));
    assert_eq!(table_rows(&table), all);

    // No object holds an expired row: initech (every row and the dead
    // letter naming it), and keys of every kind of expired row.
    let expired_keys: Vec<String> = (0..4_500)
        .filter(|&i| !kept(i, 6))
        .step_by(37)
        .map(|i| format!("r{i}"))
        .collect();
    let mut identifiers: Vec<&str> = expired_keys.iter().map(String::as_str).collect();
    identifiers.push("initech");
    let found: Vec<String> = objects_holding(&table, &identifiers)
        .into_iter()
        .filter(|k| !k.ends_with("_tributary/retention/rules.json"))
        .collect();
    assert_eq!(found, Vec::<String>::new(), "objects holding expired rows");
    // The scan finds what is kept: a kept key, and the other dead letter.
    assert!(!objects_holding(&table, &["r0"]).is_empty());
    let letters = objects_holding(&table, &["globex"]);
    assert!(
        letters
            .iter()
            .any(|k| k.contains("_tributary/dead-letter/")),
        "{letters:?}"
    );
}

/// Rows that arrive late for a date the rules have expired never reach the
/// table: compaction drops them (counted as expired at `late_staged`), with
/// no retention run. The long-running compactor runs retention as its own
/// task beside compaction, and stops both cleanly on SIGTERM.
#[test]
fn the_compactor_drops_rows_staged_late_for_expired_dates_and_runs_retention_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let (now_ms, today) = records_now();
    let extra = "[compact]\ninterval_ms = 200\n\n\
                 [retention]\nmax_age_days = 20\ninterval_ms = 300\ngrace_ms = 0\n\
                 [[retention.tenants]]\ncolumn = \"messages_account\"\nvalue = \"acme\"\nkeep_days = 10\n";
    let (config_path, input) = config(dir.path(), &table, extra);
    let config = config_path.to_str().unwrap();
    // Table: 20 days; acme: 10 (no rules object here).
    let keeps = |i: u64| {
        let (days, tenant) = shape(i);
        days <= if tenant == "acme" { 10 } else { 20 }
    };
    let rows_of = |ids: std::ops::Range<u64>| -> BTreeSet<(String, String, String)> {
        ids.filter(|&i| keeps(i))
            .map(|i| {
                let (days, tenant) = shape(i);
                let date = today - chrono::Days::new(days);
                (format!("r{i}"), tenant.to_string(), date.to_string())
            })
            .collect()
    };

    std::fs::write(input.join("a.ndjson"), records(0, 900, now_ms)).unwrap();
    crate::run_ok(&["ingest", "--config", config, "--once"]);
    let compacted = json(&crate::run_ok(&["compact", "--config", config, "--once"]));
    let late = (0..900).filter(|&i| !keeps(i)).count() as u64;
    assert!(late >= 100, "{late}");
    assert_eq!(compacted["rows_expired_late"], late, "{compacted}");
    assert_eq!(table_rows(&table), rows_of(0..900));

    // The long-running compactor: more late rows, and retention on its
    // schedule beside compaction.
    let port = crate::operations::free_port();
    let mut processes = Processes::default();
    let compactor = processes.spawn(tributary().args(["compact", "--config", config]).env(
        "TRIBUTARY_SERVICE__LISTEN_ADDR",
        format!("127.0.0.1:{port}"),
    ));
    let pid = compactor.id().to_string();
    std::fs::write(input.join("b.ndjson"), records(900, 900, now_ms)).unwrap();
    crate::run_ok(&["ingest", "--config", config, "--once"]);
    let late_b = (900..1_800).filter(|&i| !keeps(i)).count() as f64;
    wait_for(
        Duration::from_secs(60),
        "late rows dropped and a retention run",
        || {
            let (_, body) = crate::operations::http_get(port, "/metrics")?;
            let sample = |name| crate::operations::sample(&body, name);
            // Dropped at compaction (`place="late_staged"`), or by the
            // retention task when its run reaches the staged file first
            // (`place="staged"`): the two run side by side.
            let dropped = sample("tributary_compactor_retention_expired_rows_total")?;
            let oldest = sample("tributary_compactor_retention_oldest_event_date_seconds")?;
            (dropped >= late_b && oldest > 0.0).then_some(dropped)
        },
    );
    let mut all = rows_of(0..900);
    all.extend(rows_of(900..1_800));
    wait_for(Duration::from_secs(30), "every row compacted", || {
        (table_rows(&table) == all).then_some(())
    });

    let signalled = std::time::Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = compactor.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "compactor exit status after SIGTERM"
    );
    assert!(signalled.elapsed() < Duration::from_secs(10));
    // The compactor's retention left its lease free: a run now goes ahead,
    // and finds nothing left to expire.
    let out = tributary()
        .args(["retention", "--config", config, "--grace-minutes", "0"])
        .output()
        .unwrap();
    let report = json(&out);
    assert!(out.status.success(), "{report}");
    assert_eq!(report["rows_expired"], 0, "{report}");
    assert_eq!(table_rows(&table), all);
}
