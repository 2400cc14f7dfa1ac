//! Retention benchmark (issue 17): expiring the oldest 10 of 100 date
//! partitions of a table, and one tenant's rows in the 10 partitions after
//! them, against a full-table rewrite through the same rewrite code in the
//! same process (the baseline: what a row-by-row delete of the same rows
//! without partition pruning would cost at most).
//!
//! Stages synthetic log rows (100 event dates back from today, 10 tenants),
//! compacts them, then times:
//!
//! * (a) `retention` with `max_age_days = 89`: the 10 oldest partitions
//!   removed in one commit, files deleted at once (no grace), the log
//!   expired;
//! * (b) `retention` with a tenant rule (`tenant = t-3` kept 79 days): the
//!   files of the next 10 partitions rewritten without that tenant's rows;
//! * the baseline: every file of the table read and rewritten (an `Erase`
//!   of one key from each file), not committed.
//!
//! `cargo bench -p tributary-compactor --bench retention`;
//! `TRIBUTARY_BENCH_ROWS` (default 10,000,000) sets the table's size,
//! `TRIBUTARY_BENCH_DIR` keeps the lake in a directory of your choice.
//! Prints a table, then one line of JSON.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deltalake::arrow::array::{ArrayRef, AsArray, Date32Array};
use serde_json::json;
use tributary_compactor::files::TableFile;
use tributary_compactor::retention::{RetentionOptions, RetentionReport, retention};
use tributary_compactor::rewrite::{self, Erase, Erasure, RewriteReport};
use tributary_config::{CompactConfig, LakeConfig, RetentionConfig, TenantRule};
use tributary_lake::Lake;

mod common;

/// Rows per staged row file.
const ROWS_PER_FILE: u64 = 50_000;
/// Event dates, i.e. table partitions.
const DATES: u64 = 100;
/// Tenants (values of the `tenant` column).
const TENANTS: u64 = 10;

fn main() -> anyhow::Result<()> {
    let rows = common::env_number("TRIBUTARY_BENCH_ROWS")?.unwrap_or(10_000_000);
    let (_temp, dir) = common::work_dir()?;
    common::runtime()?.block_on(run(rows, &dir))
}

async fn run(rows: u64, dir: &std::path::Path) -> anyhow::Result<()> {
    let lake = Lake::open(&LakeConfig {
        table_uri: dir.join("table").display().to_string(),
        subject_columns: vec!["user_id".into()],
        ..LakeConfig::new("")
    })?;
    let today = chrono::Utc::now().date_naive();
    let staged_files = rows.div_ceil(ROWS_PER_FILE);
    let mut config = CompactConfig {
        // Two rounds: two files per partition.
        max_files_per_commit: staged_files.div_ceil(2) as usize,
        sort_columns: Some(vec!["user_id".into()]),
        ..CompactConfig::default()
    };
    eprintln!("staging {rows} rows in {staged_files} row files, compacting ...");
    let started = Instant::now();
    stage(&lake, rows, today).await?;
    let compacted = tributary_compactor::compact_until_empty(&config, &lake).await?;
    eprintln!(
        "table: {} files, {:.1} MB, built in {:.0} s",
        compacted.table_files,
        compacted.table_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    config.checkpoint_interval = u64::MAX;

    // (a) The 10 oldest partitions.
    config.retention = RetentionConfig {
        max_age_days: Some(89),
        ..RetentionConfig::default()
    };
    let (a, a_time) = timed(&config, &lake, today).await?;
    // (b) One tenant's rows in the next 10 partitions.
    config.retention = RetentionConfig {
        tenants: vec![TenantRule {
            column: "tenant".into(),
            value: "t-3".into(),
            keep_days: 79,
        }],
        ..RetentionConfig::default()
    };
    let (b, b_time) = timed(&config, &lake, today).await?;

    // Baseline: every file of the table read and rewritten.
    eprintln!("full rewrite ...");
    let table = lake.load_table().await?.context("no table")?;
    let state = table.snapshot()?;
    let mut keys = HashSet::new();
    for file in state.log_data().iter() {
        let mut rows = TableFile::open(&lake, file.object_store_path(), file.size() as u64)
            .await?
            .rows(Default::default())?;
        let batch = rows.next().await?.context("an empty table file")?;
        let key = batch.column_by_name("_key").context("no _key")?;
        keys.insert(key.as_string::<i32>().value(0).to_string());
    }
    let every_key = [Erase {
        column: "_key".into(),
        values: keys,
    }];
    let erase = Erasure {
        rows: &every_key,
        text: None,
    };
    let mut full = RewriteReport::default();
    let started = Instant::now();
    let candidates = rewrite::candidates(state, erase, &mut full);
    rewrite::rewrite(
        &lake,
        state,
        candidates,
        erase,
        Some(config.target_file_bytes),
        &mut full,
        None,
    )
    .await?;
    let full_time = started.elapsed();

    println!(
        "\nRetention: table of {rows} rows in {} files ({:.1} MB), {DATES} date partitions\n",
        compacted.table_files,
        compacted.table_bytes as f64 / 1e6
    );
    println!(
        "{:<34}{:>14}{:>14}{:>14}",
        "", "(a) 10 dates", "(b) tenant", "full rewrite"
    );
    let mb = |bytes: u64| format!("{:.1}", bytes as f64 / 1e6);
    let rows_line = |name: &str, a: String, b: String, full: String| {
        println!("{name:<34}{a:>14}{b:>14}{full:>14}");
    };
    rows_line(
        "partitions removed",
        a.table.partitions_removed.len().to_string(),
        b.table.partitions_removed.len().to_string(),
        "-".into(),
    );
    rows_line(
        "files removed / rewritten",
        (a.table.files_removed + a.table.tenants.files_rewritten).to_string(),
        (b.table.files_removed + b.table.tenants.files_rewritten).to_string(),
        full.files_rewritten.to_string(),
    );
    rows_line(
        "rows expired",
        a.rows_expired.to_string(),
        b.rows_expired.to_string(),
        "-".into(),
    );
    rows_line(
        "MB touched",
        mb(a.bytes_touched),
        mb(b.bytes_touched),
        mb(full.bytes_rewritten),
    );
    rows_line(
        "log entries expired",
        a.log_entries_expired.to_string(),
        b.log_entries_expired.to_string(),
        "-".into(),
    );
    let secs = |d: Duration| d.as_secs_f64();
    rows_line(
        "wall time (s)",
        format!("{:.2}", secs(a_time)),
        format!("{:.2}", secs(b_time)),
        format!("{:.2}", secs(full_time)),
    );
    rows_line(
        "time ÷ full rewrite",
        format!("{:.3}", secs(a_time) / secs(full_time)),
        format!("{:.3}", secs(b_time) / secs(full_time)),
        "1".into(),
    );
    println!(
        "\n{}",
        json!({
            "bench": "retention", "rows": rows, "table_files": compacted.table_files,
            "table_bytes": compacted.table_bytes,
            "partitions": {"secs": secs(a_time), "report": a},
            "tenant": {"secs": secs(b_time), "report": b},
            "full_rewrite": {"secs": secs(full_time), "report": full},
        })
    );
    Ok(())
}

/// One retention run as of `today`, no grace period; its report and time.
async fn timed(
    config: &CompactConfig,
    lake: &Lake,
    today: chrono::NaiveDate,
) -> anyhow::Result<(RetentionReport, Duration)> {
    eprintln!("retention ...");
    let options = RetentionOptions {
        dry_run: false,
        grace: Duration::ZERO,
        today,
        show_progress: false,
        lease_wait: Duration::ZERO,
    };
    let started = Instant::now();
    let report = retention(config, lake, &options).await?;
    Ok((report, started.elapsed()))
}

/// Stages `rows` synthetic rows as row files of one source partition, dated
/// over the `DATES` days up to `today`. (The forget benchmark's generator
/// has 10 dates and no tenant column.)
async fn stage(lake: &Lake, rows: u64, today: chrono::NaiveDate) -> anyhow::Result<()> {
    const MESSAGES: [&str; 4] = ["request served", "cache miss", "slow upstream", "retrying"];
    common::stage_rows(lake, (0, rows), ROWS_PER_FILE, |rows| {
        vec![
            (
                "date",
                Arc::new(Date32Array::from_iter_values(rows.mixed.iter().map(|m| {
                    let date = today - chrono::Days::new(m % DATES);
                    (date - chrono::NaiveDate::default()).num_days() as i32
                }))) as ArrayRef,
            ),
            (
                "user_id",
                rows.text(|_, m| format!("u-{:07}", m % 1_000_000)),
            ),
            ("tenant", rows.text(|n, _| format!("t-{}", n % TENANTS))),
            (
                "message",
                rows.text(|_, m| MESSAGES[(m % 4) as usize].into()),
            ),
        ]
    })
    .await
}
