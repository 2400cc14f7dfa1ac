//! Several compactors on one table divide the staged source partitions: on
//! S3 (moto), three long-running compactors and an ingest, one compactor
//! killed with SIGKILL midway. Every record lands exactly once, and every
//! compactor did part of the work.

use std::process::Child;
use std::time::Duration;

use crate::operations::{Processes, free_port, http_get, sample, wait_for};
use crate::{envelopes, s3, table_keys, tributary, write_config};

/// Input files (source partitions) per wave.
const FILES_PER_WAVE: u64 = 9;
/// Records per input file.
const RECORDS_PER_FILE: u64 = 60;

fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics")?;
    sample(&body, name)
}

/// Writes wave `wave`'s files and returns their record ids.
fn write_wave(input: &std::path::Path, wave: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for file in 0..FILES_PER_WAVE {
        let first = (wave * FILES_PER_WAVE + file) * RECORDS_PER_FILE;
        let (lines, file_ids) = envelopes(first, RECORDS_PER_FILE);
        std::fs::write(
            input.join(format!("w{wave}-{file}.ndjson")),
            lines.join("\n") + "\n",
        )
        .unwrap();
        ids.extend(file_ids);
    }
    ids
}

#[test]
fn three_compactors_divide_the_work_and_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let table = s3::new_table("scale-out");
    // One staged file per round, so that the work outlasts a round or two
    // and has to be shared; short leases, so that a killed compactor's
    // partitions are taken over within seconds.
    let config = write_config(
        dir.path(),
        &input,
        &table,
        "[compact]\ninterval_ms = 100\nmax_files_per_commit = 1\nlease_ms = 3000\noptimize_min_files = 0\n",
    );
    let config = config.to_str().unwrap();
    let mut processes = Processes::default();
    processes.spawn(tributary().args(["ingest", "--config", config]).env(
        "TRIBUTARY_SERVICE__LISTEN_ADDR",
        format!("127.0.0.1:{}", free_port()),
    ));
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut pids = Vec::new();
    for port in &ports {
        let child: &mut Child =
            processes.spawn(tributary().args(["compact", "--config", config]).env(
                "TRIBUTARY_SERVICE__LISTEN_ADDR",
                format!("127.0.0.1:{port}"),
            ));
        pids.push(child.id());
    }
    // The compactors see each other before there is work.
    for &port in &ports {
        wait_for(Duration::from_secs(60), "three compactors", || {
            (metric(port, "tributary_compactor_compactors")? >= 3.0).then_some(())
        });
    }

    let mut ids = write_wave(&input, 0);
    // Kill the third compactor once it has compacted something.
    let victim = ports[2];
    wait_for(
        Duration::from_secs(120),
        "the third compactor's first commit",
        || (metric(victim, "tributary_compactor_compacted_files_total")? >= 1.0).then_some(()),
    );
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pids[2].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    ids.extend(write_wave(&input, 1));

    // The survivors take over the dead one's partitions once its leases
    // run out, and compact the rest.
    let expected = ids.len() as f64;
    wait_for(
        Duration::from_secs(180),
        "every record in the table",
        || {
            let rows: f64 = ports[..2]
                .iter()
                .map(|&p| metric(p, "tributary_compactor_compacted_rows_total"))
                .sum::<Option<f64>>()?;
            // The killed compactor's rows are in the table too; the key check
            // below counts them.
            (rows > 0.0 && table_keys(&table).len() as f64 >= expected).then_some(())
        },
    );
    for &port in &ports[..2] {
        let files = metric(port, "tributary_compactor_compacted_files_total").unwrap();
        assert!(
            files >= 1.0,
            "compactor on port {port} compacted {files} files"
        );
        assert_eq!(metric(port, "tributary_compactor_compactors"), Some(2.0));
    }

    let mut keys = table_keys(&table);
    keys.sort();
    ids.sort();
    assert_eq!(keys.len(), ids.len(), "no duplicates, none missing");
    assert_eq!(keys, ids);
}
