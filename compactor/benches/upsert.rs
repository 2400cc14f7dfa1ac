//! Upsert mode against insert mode on the same batch (issue 18).
//!
//! Builds a table of `TRIBUTARY_BENCH_ROWS` rows (keys `k<n>`, event times
//! spread over ten days by key) once, then stages batches of
//! `TRIBUTARY_BENCH_BATCH` records, `TRIBUTARY_BENCH_UPDATE_PERCENT` % of
//! which are new versions of existing keys (drawn at random, seeded), the
//! rest new keys, and compacts each into its own copy of the table:
//!
//! * `insert`: the batch with updates spread over the whole table, into an
//!   insert-only table (the baseline);
//! * `upsert spread`: the same batch in upsert mode (ordered by `v`): the
//!   updated keys are in every file;
//! * `upsert newest day`: updates of keys of the newest day only (what a
//!   stream of recent records updates), in upsert mode.
//!
//! Reports, per case, wall and CPU time, files and bytes rewritten, files
//! added, and the ratio to insert, measured in the same process.
//!
//! `cargo bench -p tributary-compactor --bench upsert`; `TRIBUTARY_BENCH_DIR`
//! keeps the data (the base table is reused when it is there). Prints a
//! table, then one line of JSON.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;
use tributary_compactor::CompactionMetrics;
use tributary_config::{
    BatchConfig, CompactConfig, Config, FilesSourceConfig, FlattenConfig, IngestConfig, LakeConfig,
    UpsertConfig,
};
use tributary_lake::Lake;

use crate::common::process::cpu_time;

mod common;

/// Days the event times spread over (partitions of the table).
const DAYS: u64 = 10;
/// 2026-11-20T00:00:00Z in milliseconds.
const DAY0_MS: u64 = 1_795_478_400_000;
/// Records per staged row file.
const BATCH_RECORDS: usize = 50_000;

struct Settings {
    /// `TRIBUTARY_BENCH_ROWS`: rows of the table. Default 1,000,000.
    rows: u64,
    /// `TRIBUTARY_BENCH_BATCH`: records of the batch. Default 100,000.
    batch: u64,
    /// `TRIBUTARY_BENCH_UPDATE_PERCENT`: of those, new versions of existing
    /// keys. Default 10.
    update_percent: u64,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let settings = Settings {
            rows: common::env_number("TRIBUTARY_BENCH_ROWS")?.unwrap_or(1_000_000),
            batch: common::env_number("TRIBUTARY_BENCH_BATCH")?.unwrap_or(100_000),
            update_percent: common::env_number("TRIBUTARY_BENCH_UPDATE_PERCENT")?.unwrap_or(10),
        };
        if settings.rows < DAYS || settings.batch == 0 || settings.update_percent > 100 {
            bail!(
                "TRIBUTARY_BENCH_ROWS must be at least {DAYS}, _BATCH at least 1, _UPDATE_PERCENT at most 100"
            );
        }
        Ok(settings)
    }
}

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    // `TRIBUTARY_BENCH_DIR`: where to build the tables (kept afterwards).
    let (_temp, dir) = common::work_dir()?;
    common::runtime()?.block_on(run(&settings, &dir))
}

/// A SplitMix64 generator: seeded, so every run draws the same keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One record: key `k<n>`, version `v`, an event time on a day picked by
/// the key (so a new version lands in its key's partition), a user and a
/// message.
fn record(out: &mut impl std::io::Write, n: u64, v: u64, rng: &mut Rng) -> std::io::Result<()> {
    let ts = DAY0_MS + (n % DAYS) * 86_400_000 + rng.next() % 86_400_000;
    writeln!(
        out,
        r#"{{"id":"k{n:010}","v":{v},"ts":{ts},"user":"u-{:05}","msg":"request {} served in {} ms"}}"#,
        rng.next() % 50_000,
        rng.next() % 1_000_000,
        rng.next() % 2_000
    )
}

fn config(table: &Path, incoming: &Path, stream: &str, upsert: bool) -> anyhow::Result<Config> {
    let mut config = Config {
        lake: LakeConfig {
            subject_columns: vec!["user".into()],
            upsert: upsert.then(|| UpsertConfig {
                order_by: "v".into(),
            }),
            ..LakeConfig::new(table.display().to_string())
        },
        tables: Default::default(),
        ingest: Some(IngestConfig {
            stream: stream.into(),
            files: Some(FilesSourceConfig {
                path: incoming.display().to_string(),
                poll_interval_ms: 100,
                gz_settle_ms: 0,
                format: Default::default(),
            }),
            kafka: None,
            kinesis: None,
            batch: BatchConfig {
                max_records: BATCH_RECORDS,
                ..Default::default()
            },
            max_message_bytes: 1024 * 1024,
            dead_letter_max_payload_bytes: 1024 * 1024,
            compression: Default::default(),
            flatten: FlattenConfig {
                key_field: Some("id".into()),
                event_time_field: Some("ts".into()),
                ..Default::default()
            },
            registry: None,
            routing: None,
        }),
        compact: CompactConfig::default(),
        service: Default::default(),
        events: Default::default(),
        retention: tributary_config::RetentionConfig::default(),
    };
    config.validate()?;
    config.complete();
    Ok(config)
}

/// Stages the files of `incoming` into the table of `config`.
async fn stage(config: &Config, lake: &Lake) -> anyhow::Result<u64> {
    let (_tx, never) = tokio::sync::watch::channel(false);
    let telemetry =
        tributary_ingest::IngestTelemetry::register(&prometheus::Registry::new(), "bench")?;
    tributary_ingest::run(
        config.require_ingest()?,
        lake,
        tributary_ingest::Mode::Once,
        never,
        telemetry.clone(),
    )
    .await?;
    Ok(telemetry.snapshot().rows)
}

/// What one mode did with the batch.
struct Run {
    wall: Duration,
    cpu: Duration,
    metrics: CompactionMetrics,
    bytes_rewritten: u64,
}

async fn run(settings: &Settings, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let base = dir.join("base");
    let mut rng = Rng(0x7570_7365_7274);
    if !base.join("_delta_log").exists() {
        let incoming = dir.join("incoming-base");
        std::fs::create_dir_all(&incoming)?;
        eprintln!(
            "building a table of {} rows under {} ...",
            settings.rows,
            dir.display()
        );
        let mut out = std::io::BufWriter::new(std::fs::File::create(incoming.join("base.ndjson"))?);
        for n in 0..settings.rows {
            record(&mut out, n, 1, &mut rng)?;
        }
        out.flush()?;
        drop(out);
        let config = config(&base, &incoming, "base", false)?;
        let lake = Lake::open(&config.lake)?;
        let staged = stage(&config, &lake).await?;
        if staged != settings.rows {
            bail!("staged {staged} rows of {}", settings.rows);
        }
        tributary_compactor::compact_until_empty(&config.compact, &lake).await?;
        std::fs::remove_dir_all(&incoming)?;
    }
    let updates = settings.batch * settings.update_percent / 100;
    // Distinct existing keys, so each update replaces one row: drawn from
    // the whole table, or from the keys of the newest day (`n % DAYS`).
    let mut rng = Rng(0x6472_6177);
    let spread = draw(&mut rng, updates.min(settings.rows), |r| r % settings.rows);
    let newest_keys = settings.rows / DAYS;
    let newest = draw(&mut rng, updates.min(newest_keys), |r| {
        (r % newest_keys) * DAYS + DAYS - 1
    });
    let mut runs = Vec::new();
    for (case, updated, upsert) in [
        ("insert", &spread, false),
        ("upsert spread", &spread, true),
        ("upsert newest day", &newest, true),
    ] {
        let incoming = dir.join("incoming-batch");
        std::fs::create_dir_all(&incoming)?;
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(incoming.join("batch.ndjson"))?);
        let new_keys = settings.rows..settings.rows + settings.batch - updated.len() as u64;
        // The same seed for every case: the new keys' records are the same.
        let mut rng = Rng(0x0062_6174_6368);
        for n in updated.iter().copied().chain(new_keys) {
            record(&mut out, n, 2, &mut rng)?;
        }
        out.flush()?;
        drop(out);
        let table = dir.join(format!("table-{}", case.replace(' ', "-")));
        if table.exists() {
            std::fs::remove_dir_all(&table)?;
        }
        common::copy_dir(&base, &table)?;
        let config = config(&table, &incoming, "batch", upsert)?;
        let lake = Lake::open(&config.lake)?;
        if upsert {
            // The base was built insert-only (its keys are unique): mark the
            // copy as an upsert table, as if it had been created as one.
            let table = lake.load_table().await?.context("no base table")?;
            table
                .set_tbl_properties()
                .with_properties(HashMap::from([(
                    tributary_compactor::UPSERT_ORDER_PROPERTY.to_string(),
                    "v".to_string(),
                )]))
                .with_raise_if_not_exists(false)
                .await?;
        }
        let staged = stage(&config, &lake).await?;
        std::fs::remove_dir_all(&incoming)?;
        if staged != settings.batch {
            bail!("staged {staged} records of {}", settings.batch);
        }
        let before = lake
            .load_table()
            .await?
            .and_then(|t| t.version())
            .context("no base table version")?;
        eprintln!("compacting the batch into the {case} table ...");
        let (cpu, wall) = (cpu_time(), Instant::now());
        let metrics = tributary_compactor::compact_until_empty(&config.compact, &lake).await?;
        let (wall, cpu) = (wall.elapsed(), cpu_time().saturating_sub(cpu));
        let bytes_rewritten = removed_bytes(&table, before)?;
        if upsert && metrics.rows_upserted != updated.len() as u64 {
            bail!(
                "{case}: upserted {} rows, expected {}",
                metrics.rows_upserted,
                updated.len()
            );
        }
        std::fs::remove_dir_all(&table)?;
        runs.push((
            case,
            Run {
                wall,
                cpu,
                metrics,
                bytes_rewritten,
            },
        ));
    }

    println!(
        "{} table rows, a batch of {} records of which {} update existing keys",
        settings.rows, settings.batch, updates
    );
    println!(
        "| case | wall s | CPU s | files rewritten | MB rewritten | files added | rows upserted | wall / insert |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let insert_wall = runs[0].1.wall.as_secs_f64().max(1e-9);
    for (case, run) in &runs {
        println!(
            "| {case} | {:.2} | {:.2} | {} | {:.1} | {} | {} | {:.2} |",
            run.wall.as_secs_f64(),
            run.cpu.as_secs_f64(),
            run.metrics.table_files_rewritten,
            run.bytes_rewritten as f64 / 1e6,
            run.metrics.parquet_files,
            run.metrics.rows_upserted,
            run.wall.as_secs_f64() / insert_wall,
        );
    }
    let report = |run: &Run| {
        json!({
            "wall_s": run.wall.as_secs_f64(),
            "cpu_s": run.cpu.as_secs_f64(),
            "files_rewritten": run.metrics.table_files_rewritten,
            "bytes_rewritten": run.bytes_rewritten,
            "files_added": run.metrics.parquet_files,
            "rows_upserted": run.metrics.rows_upserted,
            "files_probed": run.metrics.upsert_files_probed,
            "row_groups_read": run.metrics.upsert_row_groups_read,
            "table_files": run.metrics.table_files,
            "wall_over_insert": run.wall.as_secs_f64() / insert_wall,
        })
    };
    let cases: serde_json::Map<String, serde_json::Value> = runs
        .iter()
        .map(|(case, run)| (case.replace(' ', "_"), report(run)))
        .collect();
    println!(
        "{}",
        json!({
            "rows": settings.rows,
            "batch": settings.batch,
            "updates": updates,
            "cases": cases,
        })
    );
    Ok(())
}

/// `count` distinct keys, each `key(random number)`.
fn draw(rng: &mut Rng, count: u64, key: impl Fn(u64) -> u64) -> Vec<u64> {
    let mut drawn = std::collections::BTreeSet::new();
    while (drawn.len() as u64) < count {
        drawn.insert(key(rng.next()));
    }
    drawn.into_iter().collect()
}

/// Bytes of the files the commits after `version` removed.
fn removed_bytes(table: &Path, version: u64) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for v in version + 1.. {
        let log = table.join("_delta_log").join(format!("{v:020}.json"));
        let Ok(text) = std::fs::read_to_string(&log) else {
            break;
        };
        for line in text.lines() {
            let action: serde_json::Value = serde_json::from_str(line)?;
            bytes += action["remove"]["size"].as_u64().unwrap_or(0);
        }
    }
    Ok(bytes)
}
