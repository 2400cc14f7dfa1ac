//! Erasure benchmark (issue 7): `tributary forget` on a table of many files.
//!
//! Stages synthetic log rows (unique keys, a million users) as row files,
//! compacts them into a table of at least 200 Parquet files, then times:
//!
//! * (a) forgetting 1,000 record keys taken from 10 of the table's files:
//!   how many files are read and rewritten, and the time;
//! * (b) forgetting 100 subjects spread over the whole table;
//! * the baseline: a forget that must rewrite every file (one key from each),
//!   i.e. a full-table rewrite through the same code, in the same process.
//!
//! `cargo bench -p tributary-compactor --bench forget`; `TRIBUTARY_BENCH_ROWS`
//! (default 10,000,000) sets the table's size, `TRIBUTARY_BENCH_DIR` keeps the
//! lake in a directory of your choice. Prints a table, then one line of JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deltalake::arrow::array::{ArrayRef, AsArray, Int64Array, StringArray};
use deltalake::arrow::record_batch::RecordBatch;
use object_store::path::Path;
use serde_json::json;
use tributary_compactor::files::TableFile;
use tributary_compactor::forget::{ForgetInput, ForgetOptions, ForgetReport, forget};
use tributary_config::{CompactConfig, LakeConfig};
use tributary_lake::rowfile::{self, Codec};
use tributary_lake::{Lake, PartitionId, chain};

use crate::process::{proc_status_bytes, reset_peak_rss};

#[path = "../../tributary/src/process.rs"]
mod process;

/// Rows per staged row file.
const ROWS_PER_FILE: u64 = 50_000;
/// Event dates, i.e. table partitions.
const DATES: u64 = 10;
/// Distinct users (subjects).
const USERS: u64 = 1_000_000;
/// Table files wanted at least; each compaction round writes one per date.
const MIN_TABLE_FILES: u64 = 200;

fn main() -> anyhow::Result<()> {
    let rows: u64 = std::env::var("TRIBUTARY_BENCH_ROWS")
        .ok()
        .map(|v| v.replace('_', "").parse())
        .transpose()
        .context("TRIBUTARY_BENCH_ROWS must be a number")?
        .unwrap_or(10_000_000);
    let temp = tempfile::tempdir()?;
    let dir = std::env::var_os("TRIBUTARY_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(rows, &dir))
}

async fn run(rows: u64, dir: &std::path::Path) -> anyhow::Result<()> {
    let lake = Lake::open(&LakeConfig {
        table_uri: dir.join("table").display().to_string(),
        s3: Default::default(),
        subject_columns: vec!["user_id".into(), "user_email".into()],
        ..LakeConfig::new("")
    })?;
    let staged_files = rows.div_ceil(ROWS_PER_FILE);
    let mut config = CompactConfig {
        max_files_per_commit: (staged_files * DATES / MIN_TABLE_FILES).max(1) as usize,
        sort_columns: Some(vec!["user_id".into(), "ts".into()]),
        ..CompactConfig::default()
    };
    eprintln!("staging {rows} rows in {staged_files} row files, compacting ...");
    let started = Instant::now();
    stage(&lake, rows).await?;
    let compacted = tributary_compactor::compact_until_empty(&config, &lake).await?;
    eprintln!(
        "table: {} files, {:.1} MB, built in {:.0} s",
        compacted.table_files,
        compacted.table_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    config.checkpoint_interval = u64::MAX;

    // (a) 1,000 keys from 10 files.
    let files = table_files(&lake).await?;
    let mut keys = Vec::new();
    for (path, size) in files.iter().step_by((files.len() / 10).max(1)).take(10) {
        keys.extend(first_keys(&lake, path, *size, 100).await?);
    }
    let (a, a_time, a_rss) = timed(
        &config,
        &lake,
        "keys",
        ForgetInput {
            subjects: vec![],
            keys,
        },
    )
    .await?;

    // (b) 100 subjects spread over the table.
    let subjects = (0..100).map(|u| format!("u-{u:07}")).collect();
    let (b, b_time, b_rss) = timed(
        &config,
        &lake,
        "subjects",
        ForgetInput {
            subjects,
            keys: vec![],
        },
    )
    .await?;

    // Baseline: a forget that rewrites every file.
    let files = table_files(&lake).await?;
    let mut keys = Vec::new();
    for (path, size) in &files {
        keys.extend(first_keys(&lake, path, *size, 1).await?);
    }
    let (full, full_time, full_rss) = timed(
        &config,
        &lake,
        "full",
        ForgetInput {
            subjects: vec![],
            keys,
        },
    )
    .await?;

    println!(
        "\nForget: table of {rows} rows in {} files ({:.1} MB)\n",
        compacted.table_files,
        compacted.table_bytes as f64 / 1e6
    );
    println!(
        "{:<34}{:>12}{:>12}{:>14}",
        "", "(a) keys", "(b) subj.", "full rewrite"
    );
    let line = |name: &str, f: &dyn Fn(&ForgetReport) -> String| {
        println!("{name:<34}{:>12}{:>12}{:>14}", f(&a), f(&b), f(&full));
    };
    line("identifiers", &|r| {
        (r.keys_requested + r.subjects_requested).to_string()
    });
    line("files pruned by statistics", &|r| {
        r.table.pruned_by_statistics.to_string()
    });
    line("files pruned by bloom filter", &|r| {
        r.table.pruned_by_bloom_filter.to_string()
    });
    line("files read", &|r| r.table.files_read.to_string());
    line("files rewritten", &|r| r.table.files_rewritten.to_string());
    line("rows erased", &|r| r.table.rows_erased.to_string());
    line("MB rewritten", &|r| {
        format!("{:.1}", r.table.bytes_rewritten as f64 / 1e6)
    });
    line("verification MB read", &|r| {
        format!("{:.1}", r.verification.bytes_read as f64 / 1e6)
    });
    line("complete", &|r| r.complete.to_string());
    println!(
        "{:<34}{:>12.1}{:>12.1}{:>14.1}",
        "wall time (s)",
        a_time.as_secs_f64(),
        b_time.as_secs_f64(),
        full_time.as_secs_f64()
    );
    println!(
        "{:<34}{:>12.2}{:>12.2}{:>14.2}",
        "time ÷ full rewrite",
        a_time.as_secs_f64() / full_time.as_secs_f64(),
        b_time.as_secs_f64() / full_time.as_secs_f64(),
        1.0
    );
    println!(
        "{:<34}{:>12.0}{:>12.0}{:>14.0}",
        "peak RSS (MB)",
        a_rss / 1e6,
        b_rss / 1e6,
        full_rss / 1e6
    );
    println!(
        "\n{}",
        json!({
            "bench": "forget", "rows": rows, "table_files": compacted.table_files,
            "table_bytes": compacted.table_bytes,
            "keys": {"secs": a_time.as_secs_f64(), "peak_rss_bytes": a_rss, "report": a},
            "subjects": {"secs": b_time.as_secs_f64(), "peak_rss_bytes": b_rss, "report": b},
            "full_rewrite": {"secs": full_time.as_secs_f64(), "peak_rss_bytes": full_rss, "report": full},
        })
    );
    Ok(())
}

/// Runs one request; returns its report, wall time and peak RSS.
async fn timed(
    config: &CompactConfig,
    lake: &Lake,
    id: &str,
    input: ForgetInput,
) -> anyhow::Result<(ForgetReport, Duration, f64)> {
    eprintln!("forget {id} ...");
    reset_peak_rss();
    let options = ForgetOptions {
        request_id: id.into(),
        dry_run: false,
        grace: Duration::ZERO,
    };
    let started = Instant::now();
    let report = forget(config, lake, &input, &options).await?;
    let elapsed = started.elapsed();
    Ok((report, elapsed, proc_status_bytes("VmHWM")? as f64))
}

/// The table's data files and their sizes.
async fn table_files(lake: &Lake) -> anyhow::Result<Vec<(Path, u64)>> {
    let table = lake.load_table().await?.context("no table")?;
    let state = table.snapshot()?;
    Ok(state
        .log_data()
        .iter()
        .map(|f| (f.object_store_path(), f.size().max(0) as u64))
        .collect())
}

/// The first `n` keys of a table file.
async fn first_keys(lake: &Lake, path: &Path, size: u64, n: usize) -> anyhow::Result<Vec<String>> {
    let mut rows = TableFile::open(lake, path.clone(), size)
        .await?
        .rows(Default::default())?;
    let batch = rows.next().await?.context("an empty table file")?;
    let keys = batch
        .column_by_name("_key")
        .context("no _key")?
        .as_string::<i32>();
    Ok(keys.iter().flatten().take(n).map(str::to_string).collect())
}

/// Stages `rows` synthetic rows as row files of one source partition.
async fn stage(lake: &Lake, rows: u64) -> anyhow::Result<()> {
    let partition = PartitionId::new("bench", "synthetic");
    const LEVELS: [&str; 4] = ["DEBUG", "INFO", "WARN", "ERROR"];
    const MESSAGES: [&str; 4] = ["request served", "cache miss", "slow upstream", "retrying"];
    let mut first = 0;
    while first < rows {
        let last = (first + ROWS_PER_FILE).min(rows) - 1;
        // A cheap mix so users and dates are spread, not in runs.
        let mixed: Vec<u64> = (first..=last)
            .map(|n| n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20)
            .collect();
        let text = |f: &dyn Fn(u64, u64) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(
                (first..=last).zip(&mixed).map(|(n, m)| f(n, *m)),
            ))
        };
        let batch = RecordBatch::try_from_iter([
            ("_key", text(&|n, _| format!("k{n:012}"))),
            (
                "_position",
                Arc::new(Int64Array::from_iter_values(
                    (first..=last).map(|n| n as i64),
                )) as ArrayRef,
            ),
            (
                "date",
                text(&|_, m| format!("2026-11-{:02}", 10 + m % DATES)),
            ),
            ("user_id", text(&|_, m| format!("u-{:07}", m % USERS))),
            (
                "user_email",
                text(&|_, m| format!("user{}@example.com", m % USERS)),
            ),
            ("level", text(&|n, _| LEVELS[(n % 4) as usize].into())),
            ("message", text(&|_, m| MESSAGES[(m % 4) as usize].into())),
            (
                "ts",
                Arc::new(Int64Array::from_iter_values(
                    mixed
                        .iter()
                        .map(|m| 1_795_000_000_000 + (m % 86_400_000) as i64),
                )) as ArrayRef,
            ),
        ])?;
        let file = rowfile::write(
            &batch,
            Codec::Zstd,
            chain::file_metadata(&partition, first, last),
        )?;
        chain::stage(lake.store().as_ref(), &partition, first, file).await?;
        first = last + 1;
    }
    Ok(())
}
