//! `tributary forget --inbox` runs every request in one pass (one planning,
//! one rewrite, one commit, one verification), each with its own ledger
//! entry, report and done file; the verification reads what the pass
//! touched and trusts the planning's proofs for the rest.

use crate::compaction::{assert_keys, config, records};
use crate::forget::objects_holding;
use crate::{S3_STORAGE_OPTIONS, run_ok, run_python, s3, tributary};

/// The latest commit's operation and predicate, read with Python
/// `deltalake` (forget expires the entries before it).
fn latest_commit(table: &std::path::Path) -> (String, String) {
    let out = run_python(
        &format!(
            "import sys, json, deltalake\n{S3_STORAGE_OPTIONS}\n\
             dt = deltalake.DeltaTable(sys.argv[1], storage_options=storage_options(sys.argv[1]))\n\
             h = dt.history(1)[0]\n\
             print(json.dumps([h['operation'], h['operationParameters'].get('predicate', '')]))"
        ),
        &[table.to_str().unwrap()],
    );
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn inbox_requests_share_one_pass_and_each_gets_its_own_report() {
    let dir = tempfile::tempdir().unwrap();
    let table = s3::new_table("forget-batch");
    // Ten table files, each of one compaction round's keys, so statistics
    // and bloom filters rule most files out for a few keys.
    let extra = "[ingest.batch]\nmax_records = 300\n\n[compact]\nmax_files_per_commit = 1\n";
    let (config_path, input) = config(dir.path(), &table, extra);
    let config = config_path.to_str().unwrap();
    std::fs::write(input.join("a.ndjson"), records(0, 3_000, None, None)).unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);

    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("req-a.json"), r#"{"keys": ["r1", "r2"]}"#).unwrap();
    std::fs::write(inbox.join("req-b.json"), r#"{"keys": ["r2500"]}"#).unwrap();
    let out = tributary()
        .args(["forget", "--config", config, "--inbox"])
        .arg(&inbox)
        .args(["--grace-minutes", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reports: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    reports.sort_by_key(|r| r["request_id"].as_str().map(str::to_string));
    assert_eq!(reports.len(), 2, "{reports:?}");
    for (report, id, other, keys) in [
        (&reports[0], "req-a", "req-b", 2),
        (&reports[1], "req-b", "req-a", 1),
    ] {
        assert_eq!(report["request_id"], id, "{report}");
        assert_eq!(report["keys_requested"], keys, "{report}");
        assert_eq!(
            report["batched_with"],
            serde_json::json!([other]),
            "{report}"
        );
        assert_eq!(report["complete"], true, "{report}");
        // One rewrite for both: the files of r1, r2 and r2500.
        assert_eq!(report["table"]["rows_erased"], 3, "{report}");
        let verification = &report["verification"];
        let proven = verification["proven_clean_by_statistics"].as_u64().unwrap()
            + verification["proven_clean_by_bloom_filter"]
                .as_u64()
                .unwrap();
        assert!(proven >= 5, "{report}");
        for phase in ["planning", "rewrite", "staged", "log", "verification"] {
            assert!(report["timings_ms"][phase].is_u64(), "{phase}: {report}");
        }
        for object in [
            format!("_tributary/forget/{id}.done.json"),
            format!("_tributary/forget/{id}.report.json"),
        ] {
            assert_eq!(s3::object_keys(&table, &object).len(), 1, "{object}");
        }
        assert!(!inbox.join(format!("{id}.json")).exists());
    }
    // One commit, naming both, erased the rows of both requests.
    assert_eq!(
        latest_commit(&table),
        ("DELETE".into(), "forget request req-a,req-b".into())
    );

    let expected: Vec<String> = (0..3_000)
        .filter(|i| ![1, 2, 2_500].contains(i))
        .map(|i| format!("r{i}"))
        .collect();
    assert_keys(&table, &expected);
    assert_eq!(
        objects_holding(&table, &["r1", "r2", "r2500"]),
        Vec::<String>::new()
    );
}
