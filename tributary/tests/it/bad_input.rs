use std::io::Write;

use crate::{dead_letters, run_ok, table_keys, write_config};

/// Malformed JSON, invalid UTF-8, a 50 MB line, an empty file and a truncated
/// `.gz` each become a dead-letter entry with reason and position, and the
/// good messages around them all reach the table.
#[test]
fn bad_input_becomes_dead_letters_and_ingestion_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (input, table) = (dir.path().join("in"), dir.path().join("table"));
    std::fs::create_dir_all(&input).unwrap();

    let good = |id: &str| format!("{{\"messages\":[{{\"id\":\"{id}\"}}]}}\n");
    let mut mixed = Vec::new();
    mixed.extend_from_slice(good("g1").as_bytes());
    let malformed_at = mixed.len();
    mixed.extend_from_slice(b"{\"messages\": [\n");
    let utf8_at = mixed.len();
    mixed.extend_from_slice(b"{\"messages\":[{\"id\":\"\xff\xfe\"}]}\n");
    let big_at = mixed.len();
    mixed.extend(std::iter::repeat_n(b'x', 50 * 1024 * 1024));
    mixed.push(b'\n');
    mixed.extend_from_slice(good("g2").as_bytes());
    std::fs::write(input.join("mixed.ndjson"), &mixed).unwrap();

    std::fs::write(input.join("empty.ndjson"), b"").unwrap();

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for i in 0..2000 {
        gz.write_all(good(&format!("z{i}")).as_bytes()).unwrap();
    }
    let gz = gz.finish().unwrap();
    std::fs::write(input.join("cut.ndjson.gz"), &gz[..gz.len() * 2 / 3]).unwrap();

    let config = write_config(dir.path(), &input, &table, "");
    run_ok(&["ingest", "--config", config.to_str().unwrap(), "--once"]);
    run_ok(&["compact", "--config", config.to_str().unwrap(), "--once"]);

    let entries = dead_letters(&table);
    let find = |file: &str, reason: &str| {
        entries
            .iter()
            .find(|e| e.0 == file && e.2 == reason)
            .cloned()
    };
    assert_eq!(
        find("mixed.ndjson", "malformed_json").map(|e| e.1),
        Some(malformed_at as u64)
    );
    assert_eq!(
        find("mixed.ndjson", "invalid_utf8").map(|e| e.1),
        Some(utf8_at as u64)
    );
    assert_eq!(
        find("mixed.ndjson", "oversized").map(|e| (e.1, e.4)),
        Some((big_at as u64, 50 * 1024 * 1024))
    );
    assert_eq!(find("empty.ndjson", "empty_file").map(|e| e.1), Some(0));
    assert!(
        find("cut.ndjson.gz", "source").is_some(),
        "truncated gzip recorded: {entries:?}"
    );
    assert_eq!(entries.len(), 5, "{entries:?}");

    let keys = table_keys(&table);
    assert!(keys.contains(&"g1".to_string()) && keys.contains(&"g2".to_string()));
    let from_gz = keys.iter().filter(|k| k.starts_with('z')).count();
    assert!(
        from_gz > 0 && from_gz < 2000,
        "the readable part of the truncated gzip is ingested ({from_gz})"
    );
    // Every gz record before the cut is there, in order, none after a gap.
    assert!((0..from_gz).all(|i| keys.contains(&format!("z{i}"))));

    // `tributary dead-letters` counts and shows what fastavro read above.
    let config = config.to_str().unwrap();
    let run_json_lines = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = run_ok(&[&["dead-letters"], args, &["--config", config]].concat());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let list = &run_json_lines(&["list"])[0];
    assert_eq!(list["letters"], 5, "{list}");
    assert_eq!(list["by_reason"]["malformed_json"], 1, "{list}");
    assert_eq!(list["by_reason"]["oversized"], 1, "{list}");
    assert_eq!(list["by_partition"]["test/mixed.ndjson"], 3, "{list}");
    let by_day = list["by_day"].as_object().unwrap();
    assert_eq!(
        by_day.values().filter_map(|n| n.as_u64()).sum::<u64>(),
        5,
        "{list}"
    );
    let shown = run_json_lines(&["show", "--reason", "malformed_json"]);
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["position"], malformed_at as u64);
    assert_eq!(shown[0]["partition"], "test/mixed.ndjson");
    assert!(
        shown[0]["error"].as_str().unwrap().contains("EOF"),
        "{shown:?}"
    );
    assert!(
        shown[0].get("payload").is_none(),
        "payloads only when asked: {shown:?}"
    );
    let with_payload = run_json_lines(&["show", "--reason", "malformed_json", "--payload"]);
    assert_eq!(
        with_payload[0]["payload"], "{\"messages\": [",
        "{with_payload:?}"
    );
    assert_eq!(run_json_lines(&["show", "--limit", "2"]).len(), 2);
    assert_eq!(
        run_json_lines(&["show", "--partition", "test/empty.ndjson"]).len(),
        1
    );
}
