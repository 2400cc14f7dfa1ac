//! Row files → Parquet compaction benchmark (issue 6).
//!
//! Stages a seeded sample stream (the quickstart's generator) as many small
//! row files through the ingest crate, exactly as `tributary ingest` stages
//! them, then times [`tributary_compactor::compact_until_empty`] over them and
//! reports throughput (rows/s, rows/s per core, MB/s in and out), the Parquet
//! files it left and the peak memory of compaction. A baseline in the same
//! process — the same rows encoded with the `parquet` crate's `ArrowWriter`
//! and default properties (no sort, no bloom filters) into memory — turns the
//! figures into ratios, which mean more than absolute numbers on a shared,
//! noisy machine.
//!
//! `cargo bench -p tributary-compactor --bench compaction`; settings come from
//! `TRIBUTARY_BENCH_*` environment variables (see [`Settings::from_env`] and
//! `benches/README.md`). Prints a table, then one line of JSON.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::json;
use tributary_config::{
    BatchConfig, CompactConfig, Config, FilesSourceConfig, FlattenConfig, IngestConfig, LakeConfig,
};
use tributary_lake::Lake;

use crate::common::process::{cpu_time, proc_status_bytes, reset_peak_rss};

// The quickstart's generator, included rather than copied so the benchmark
// and the quickstart always use the same data. The binary crate has no
// library target to import it from. Its unit test is compiled out here (a
// `harness = false` target runs no `#[test]`), leaving that test's import unused.
#[path = "../../tributary/src/sample.rs"]
#[allow(unused_imports, dead_code)]
mod sample;

mod common;

/// The row-count target of issue 6, per core.
const TARGET_ROWS_PER_CORE_SEC: f64 = 500_000.0;
/// Mean log records per envelope of the sample stream (7–25, uniform).
const RECORDS_PER_ENVELOPE: usize = 16;
/// Sample input files, i.e. ingest source partitions (as in the quickstart).
const SOURCE_FILES: u64 = 4;
/// The sample data's subject columns: Parquet files get bloom filters on them.
const SUBJECT_COLUMNS: [&str; 2] = ["messages_user_id", "messages_user_email"];
/// Decimal megabyte: the unit of every MB and MB/s figure.
const MB: f64 = 1_000_000.0;

/// What to run, from `TRIBUTARY_BENCH_*` environment variables.
struct Settings {
    /// `TRIBUTARY_BENCH_ROWS`: log records (rows) to stage. Default 2,000,000.
    rows: u64,
    /// `TRIBUTARY_BENCH_BATCH_ROWS`: rows per staged row file, roughly (ingest
    /// closes batches by message count; an envelope holds 16 rows on average).
    /// Default 10,000.
    batch_rows: usize,
    /// `TRIBUTARY_BENCH_TARGET_FILE_BYTES`: `compact.target_file_bytes`.
    /// Default: the compactor's default.
    target_file_bytes: Option<u64>,
    /// `TRIBUTARY_BENCH_MEMORY_BUDGET_BYTES`: `compact.memory_budget_bytes`.
    /// Default: the compactor's default.
    memory_budget_bytes: Option<u64>,
    /// `TRIBUTARY_BENCH_LEDGER_SUBJECTS`: subjects of a completed erasure
    /// request in the ledger (none of them in the data's subject columns;
    /// one, `origin`, is a word of the sample messages, so that with
    /// `messages_message` a redact column a fifth of the messages are
    /// redacted), so that every row's key and subject columns, and the
    /// spans of its redact columns, are hashed and looked up. The same
    /// staged rows are then also compacted twice without and twice with the
    /// ledger (alternating, in this process) for the ledger's cost as a
    /// ratio. Default 0 (no ledger: rows are not hashed).
    ledger_subjects: u64,
    /// `TRIBUTARY_BENCH_REDACT_COLUMNS`: `lake.redact_columns`, comma
    /// separated (e.g. `messages_message`, whose sample texts hold no
    /// identifier, or `messages_message,messages_user_email,messages_user_id`,
    /// where every row has an e-mail address and an id to index). Default:
    /// none (no free-text index).
    redact_columns: Vec<String>,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        use common::env_number as number;
        let settings = Self {
            rows: number("TRIBUTARY_BENCH_ROWS")?.unwrap_or(2_000_000),
            batch_rows: number("TRIBUTARY_BENCH_BATCH_ROWS")?.unwrap_or(10_000),
            target_file_bytes: number("TRIBUTARY_BENCH_TARGET_FILE_BYTES")?,
            memory_budget_bytes: number("TRIBUTARY_BENCH_MEMORY_BUDGET_BYTES")?,
            ledger_subjects: number("TRIBUTARY_BENCH_LEDGER_SUBJECTS")?.unwrap_or(0),
            redact_columns: std::env::var("TRIBUTARY_BENCH_REDACT_COLUMNS")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect(),
        };
        if settings.rows == 0 || settings.batch_rows == 0 {
            bail!("TRIBUTARY_BENCH_ROWS and TRIBUTARY_BENCH_BATCH_ROWS must be at least 1");
        }
        Ok(settings)
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench` (and any filter); there is nothing to
    // select, so arguments are ignored.
    let settings = Settings::from_env()?;
    // `TRIBUTARY_BENCH_DIR`: where to build the lake (kept afterwards).
    // Default: a temporary directory, removed afterwards.
    let (_temp, dir) = common::work_dir()?;
    let report = common::runtime()?.block_on(run(&settings, &dir))?;
    report.print();
    Ok(())
}

/// Everything measured.
struct Report {
    rows: u64,
    row_files: u64,
    staged_bytes: u64,
    threads: usize,
    compaction: Measured,
    commits: u64,
    parquet_files: u64,
    parquet_bytes: u64,
    parquet_rows: u64,
    bloom_columns: Vec<String>,
    rss_before_bytes: u64,
    peak_rss_bytes: u64,
    peak_rss_is_process_peak: bool,
    baseline: Measured,
    baseline_bytes: u64,
    ledger_subjects: u64,
    redact_columns: Vec<String>,
    /// Compaction of the same staged rows without, then with the ledger
    /// (the sums of two runs each), and the values redacted with it.
    ledger_cost: Option<(Measured, Measured, u64)>,
}

/// Wall-clock and CPU time of one measured phase.
#[derive(Clone, Copy)]
struct Measured {
    wall: Duration,
    cpu: Duration,
}

impl Measured {
    fn per_wall_sec(&self, n: u64) -> f64 {
        n as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    fn per_cpu_sec(&self, n: u64) -> f64 {
        n as f64 / self.cpu.as_secs_f64().max(1e-9)
    }
}

async fn run(settings: &Settings, dir: &Path) -> anyhow::Result<Report> {
    let incoming = dir.join("incoming");
    let table = dir.join("table");
    for owned in [&incoming, &table] {
        if owned.exists() {
            std::fs::remove_dir_all(owned)
                .with_context(|| format!("cannot clear {}", owned.display()))?;
        }
    }
    std::fs::create_dir_all(&incoming)
        .with_context(|| format!("cannot create {}", incoming.display()))?;
    eprintln!(
        "staging {} rows in row files of ~{} rows under {} ...",
        settings.rows,
        settings.batch_rows,
        dir.display()
    );
    generate(&incoming, settings.rows)?;

    let mut compact = CompactConfig::default();
    if let Some(bytes) = settings.memory_budget_bytes {
        compact.memory_budget_bytes = bytes;
    }
    if let Some(bytes) = settings.target_file_bytes {
        compact.target_file_bytes = bytes;
    }
    let mut config = Config {
        lake: LakeConfig {
            table_uri: table.display().to_string(),
            s3: Default::default(),
            subject_columns: SUBJECT_COLUMNS.map(String::from).to_vec(),
            redact_columns: settings.redact_columns.clone(),
            ..LakeConfig::new("")
        },
        tables: Default::default(),
        ingest: Some(IngestConfig {
            stream: "bench".into(),
            files: Some(FilesSourceConfig {
                path: incoming.display().to_string(),
                poll_interval_ms: 100,
                gz_settle_ms: 0,
                format: Default::default(),
            }),
            kafka: None,
            kinesis: None,
            batch: BatchConfig {
                max_records: (settings.batch_rows / RECORDS_PER_ENVELOPE).max(1),
                ..Default::default()
            },
            max_message_bytes: 10 * 1024 * 1024,
            dead_letter_max_payload_bytes: 1024 * 1024,
            compression: Default::default(),
            flatten: FlattenConfig {
                explode: Some("messages".into()),
                key_field: Some("messages_id".into()),
                event_time_field: Some("messages_timestamp".into()),
                ..Default::default()
            },
            registry: None,
            routing: None,
        }),
        compact,
        service: Default::default(),
        events: Default::default(),
        retention: tributary_config::RetentionConfig::default(),
    };
    config.validate()?;
    config.complete();
    let lake = Lake::open(&config.lake)?;

    let (_tx, never) = tokio::sync::watch::channel(false);
    let telemetry =
        tributary_ingest::IngestTelemetry::register(&prometheus::Registry::new(), "bench")?;
    tributary_ingest::run(
        config.require_ingest()?,
        &lake,
        tributary_ingest::Mode::Once,
        never,
        telemetry.clone(),
    )
    .await?;
    let staged = telemetry.snapshot();
    if staged.rows != settings.rows || staged.dead_letters != 0 {
        bail!(
            "staged {} rows with {} dead letters; expected {} rows and none",
            staged.rows,
            staged.dead_letters,
            settings.rows
        );
    }
    // The input files are no longer needed; free the page cache they hold.
    std::fs::remove_dir_all(&incoming)?;
    let ledger_cost = if settings.ledger_subjects > 0 {
        Some(
            ledger_cost(
                settings,
                &config.compact,
                &lake,
                &table,
                &dir.join("staged"),
            )
            .await?,
        )
    } else {
        None
    };

    eprintln!("compacting {} row files ...", staged.row_files);
    let peak_rss_is_process_peak = !reset_peak_rss();
    let rss_before_bytes = proc_status_bytes("VmRSS")?;
    let (compacted, compaction) = measure_async(async {
        tributary_compactor::compact_until_empty(&config.compact, &lake).await
    })
    .await;
    let compacted = compacted?;
    let peak_rss_bytes = proc_status_bytes("VmHWM")?;
    if compacted.rows_written != settings.rows {
        bail!(
            "compaction wrote {} rows of {}",
            compacted.rows_written,
            settings.rows
        );
    }

    let files = parquet_files(&table)?;
    let mut parquet_bytes = 0;
    let mut parquet_rows = 0;
    let mut bloom_columns: Option<Vec<String>> = None;
    for path in &files {
        let (rows, bytes, bloom) = parquet_file_facts(path)?;
        parquet_rows += rows;
        parquet_bytes += bytes;
        // Columns with a bloom filter in every file.
        bloom_columns = Some(match bloom_columns {
            None => bloom,
            Some(seen) => seen.into_iter().filter(|c| bloom.contains(c)).collect(),
        });
    }

    eprintln!("baseline: the same rows through ArrowWriter with default properties ...");
    let mut baseline = Measured {
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
    };
    let mut baseline_bytes = 0;
    for path in &files {
        let batches = read_parquet(path)?;
        let (encoded, took) = measure(|| encode_baseline(&batches));
        baseline_bytes += encoded? as u64;
        baseline.wall += took.wall;
        baseline.cpu += took.cpu;
    }

    Ok(Report {
        rows: settings.rows,
        row_files: staged.row_files,
        staged_bytes: compacted.bytes_compacted,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        compaction,
        commits: compacted.commits,
        parquet_files: files.len() as u64,
        parquet_bytes,
        parquet_rows,
        bloom_columns: bloom_columns.unwrap_or_default(),
        rss_before_bytes,
        peak_rss_bytes,
        peak_rss_is_process_peak,
        baseline,
        baseline_bytes,
        ledger_subjects: settings.ledger_subjects,
        redact_columns: settings.redact_columns.clone(),
        ledger_cost,
    })
}

/// Compacts the staged rows of `table` four times, alternating without and
/// with the erasure ledger (each time from a copy of them), and returns the
/// summed measures without and with it, and the values redacted with it.
/// Leaves the staged rows and the ledger in place for the main run.
async fn ledger_cost(
    settings: &Settings,
    compact: &CompactConfig,
    lake: &Lake,
    table: &Path,
    copy: &Path,
) -> anyhow::Result<(Measured, Measured, u64)> {
    common::copy_dir(table, copy)?;
    let zero = Measured {
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
    };
    let (mut without, mut with, mut redacted) = (zero, zero, 0);
    for ledger in [false, true, false, true] {
        std::fs::remove_dir_all(table)?;
        common::copy_dir(copy, table)?;
        if ledger {
            write_ledger(table, settings.ledger_subjects)?;
        }
        eprintln!(
            "ledger cost: compacting {} the ledger ...",
            if ledger { "with" } else { "without" }
        );
        let (compacted, took) =
            measure_async(tributary_compactor::compact_until_empty(compact, lake)).await;
        let compacted = compacted?;
        if compacted.rows_written != settings.rows {
            bail!(
                "compaction wrote {} rows of {}",
                compacted.rows_written,
                settings.rows
            );
        }
        let sum = if ledger { &mut with } else { &mut without };
        sum.wall += took.wall;
        sum.cpu += took.cpu;
        if ledger {
            redacted = compacted.mentions_redacted;
        }
    }
    std::fs::remove_dir_all(table)?;
    common::copy_dir(copy, table)?;
    std::fs::remove_dir_all(copy)?;
    write_ledger(table, settings.ledger_subjects)?;
    Ok((without, with, redacted))
}

/// Puts a completed erasure request naming `subjects` subjects (none in the
/// data's subject columns; `origin` in its messages) in the table's ledger,
/// as `tributary forget` leaves one.
fn write_ledger(table: &Path, subjects: u64) -> anyhow::Result<()> {
    use tributary_compactor::forget::requests::identifier_hash;
    let ledger = table.join("_tributary/forget");
    std::fs::create_dir_all(&ledger)?;
    let request = json!({
        "id": "bench",
        "created_at_ms": chrono::Utc::now().timestamp_millis(),
        "subject_hashes": (1..subjects)
            .map(|i| identifier_hash(&format!("nobody-{i}")))
            .chain([identifier_hash("origin")])
            .collect::<Vec<_>>(),
        "key_hashes": [identifier_hash("no-such-key")],
        "complete": true,
    });
    std::fs::write(ledger.join("bench.done.json"), request.to_string())?;
    eprintln!("erasure ledger: a completed request of {subjects} subjects");
    Ok(())
}

/// Writes the sample stream, `rows` log records, as `SOURCE_FILES` NDJSON files.
fn generate(incoming: &Path, rows: u64) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut rng = sample::SplitMix::new(0x7472_6962_7574_6172);
    let mut envelopes = 0;
    for i in 0..SOURCE_FILES {
        let share = rows / SOURCE_FILES + u64::from(i < rows % SOURCE_FILES);
        let path = incoming.join(format!("app-{i}.ndjson"));
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        envelopes += sample::write_envelopes(&mut out, &mut rng, share, envelopes)?;
        out.flush()?;
    }
    Ok(())
}

/// The table's Parquet data files (not the Delta log or Tributary's objects).
fn parquet_files(table: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![table.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                if !entry.file_name().to_string_lossy().starts_with('_') {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Rows, size, and the columns with a bloom filter in every row group.
fn parquet_file_facts(path: &Path) -> anyhow::Result<(u64, u64, Vec<String>)> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let bytes = file.metadata()?.len();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}", path.display()))?;
    let metadata = builder.metadata();
    let rows = metadata.file_metadata().num_rows() as u64;
    let mut bloom: Option<Vec<String>> = None;
    for group in metadata.row_groups() {
        let here: Vec<String> = group
            .columns()
            .iter()
            .filter(|c| c.bloom_filter_offset().is_some())
            .map(|c| c.column_path().string())
            .collect();
        bloom = Some(match bloom {
            None => here,
            Some(seen) => seen.into_iter().filter(|c| here.contains(c)).collect(),
        });
    }
    Ok((rows, bytes, bloom.unwrap_or_default()))
}

/// The rows of a table file, without the free-text index (so that the
/// baseline encodes the same columns with and without redact columns).
fn read_parquet(path: &Path) -> anyhow::Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let index = tributary_compactor::text_index::INDEX_COLUMN;
    reader
        .map(|batch| {
            let mut batch = batch?;
            if let Ok(i) = batch.schema().index_of(index) {
                batch.remove_column(i);
            }
            Ok(batch)
        })
        .collect()
}

/// The baseline: `batches` to Parquet in memory with default writer
/// properties. Returns the encoded size.
fn encode_baseline(batches: &[RecordBatch]) -> anyhow::Result<usize> {
    let Some(first) = batches.first() else {
        return Ok(0);
    };
    let mut writer = ArrowWriter::try_new(Vec::new(), first.schema(), None)?;
    for batch in batches {
        writer.write(batch)?;
    }
    Ok(writer.into_inner()?.len())
}

fn measure<T>(f: impl FnOnce() -> T) -> (T, Measured) {
    let (cpu, wall) = (cpu_time(), Instant::now());
    let out = f();
    let measured = Measured {
        wall: wall.elapsed(),
        cpu: cpu_time().saturating_sub(cpu),
    };
    (out, measured)
}

async fn measure_async<T>(f: impl Future<Output = T>) -> (T, Measured) {
    let (cpu, wall) = (cpu_time(), Instant::now());
    let out = f.await;
    let measured = Measured {
        wall: wall.elapsed(),
        cpu: cpu_time().saturating_sub(cpu),
    };
    (out, measured)
}

impl Report {
    fn print(&self) {
        let c = &self.compaction;
        let b = &self.baseline;
        let rows_per_core = c.per_cpu_sec(self.rows);
        let mean_file = self.parquet_bytes as f64 / (self.parquet_files.max(1) as f64);
        let ratio = |x: f64, y: f64| x / y.max(1e-9);
        let mb = |bytes: u64| bytes as f64 / MB;

        println!();
        println!(
            "Compaction: {} rows in {} staged row files ({:.1} MB, ~{} rows each), {} cores",
            thousands(self.rows as f64),
            self.row_files,
            mb(self.staged_bytes),
            self.rows / self.row_files.max(1),
            self.threads
        );
        println!();
        println!(
            "{:<28} {:>14} {:>14} {:>7}",
            "", "compaction", "baseline", "ratio"
        );
        // A figure of compaction, and of the baseline where it has one.
        let line = |name: &str, x: f64, y: Option<f64>, fmt: &dyn Fn(f64) -> String| match y {
            Some(y) => println!(
                "{name:<28} {:>14} {:>14} {:>7.2}",
                fmt(x),
                fmt(y),
                ratio(x, y)
            ),
            None => println!("{name:<28} {:>14} {:>14} {:>7}", fmt(x), "-", "-"),
        };
        let secs = |v: f64| format!("{v:.2}");
        let count = |v: f64| thousands(v);
        let decimal = |v: f64| format!("{v:.1}");
        line(
            "wall time (s)",
            c.wall.as_secs_f64(),
            Some(b.wall.as_secs_f64()),
            &secs,
        );
        line(
            "CPU time (s)",
            c.cpu.as_secs_f64(),
            Some(b.cpu.as_secs_f64()),
            &secs,
        );
        line(
            "rows/s",
            c.per_wall_sec(self.rows),
            Some(b.per_wall_sec(self.rows)),
            &count,
        );
        line(
            "rows/s per core (CPU time)",
            rows_per_core,
            Some(b.per_cpu_sec(self.rows)),
            &count,
        );
        line(
            "MB/s in (staged row files)",
            c.per_wall_sec(self.staged_bytes) / MB,
            None,
            &decimal,
        );
        line(
            "MB/s out (Parquet)",
            c.per_wall_sec(self.parquet_bytes) / MB,
            Some(b.per_wall_sec(self.baseline_bytes) / MB),
            &decimal,
        );
        line(
            "Parquet MB",
            mb(self.parquet_bytes),
            Some(mb(self.baseline_bytes)),
            &decimal,
        );
        println!();
        println!(
            "Table: {} Parquet files, mean {:.1} MB, {} rows, {} commits; bloom filters on: {}",
            self.parquet_files,
            mean_file / MB,
            thousands(self.parquet_rows as f64),
            self.commits,
            if self.bloom_columns.is_empty() {
                "(none)".to_string()
            } else {
                self.bloom_columns.join(", ")
            }
        );
        println!(
            "Peak RSS: {:.1} MB during compaction ({}; {:.1} MB before it)",
            mb(self.peak_rss_bytes),
            if self.peak_rss_is_process_peak {
                "process peak: VmHWM could not be reset"
            } else {
                "VmHWM reset before compaction"
            },
            mb(self.rss_before_bytes)
        );
        println!(
            "Target: {} rows/s per core: {} ({})",
            thousands(TARGET_ROWS_PER_CORE_SEC),
            if rows_per_core >= TARGET_ROWS_PER_CORE_SEC {
                "met"
            } else {
                "NOT met"
            },
            thousands(rows_per_core)
        );
        if let Some((without, with, redacted)) = &self.ledger_cost {
            println!(
                "Erasure ledger ({} subjects; redact columns: {}): the same rows compacted \
                 twice without and twice with it: wall {:.2} s vs {:.2} s (ratio {:.3}), \
                 CPU {:.2} s vs {:.2} s (ratio {:.3}); {} values redacted per run",
                self.ledger_subjects,
                if self.redact_columns.is_empty() {
                    "(none)".to_string()
                } else {
                    self.redact_columns.join(", ")
                },
                without.wall.as_secs_f64(),
                with.wall.as_secs_f64(),
                ratio(with.wall.as_secs_f64(), without.wall.as_secs_f64()),
                without.cpu.as_secs_f64(),
                with.cpu.as_secs_f64(),
                ratio(with.cpu.as_secs_f64(), without.cpu.as_secs_f64()),
                thousands(*redacted as f64),
            );
        }
        println!();
        let ledger_cost = self.ledger_cost.as_ref().map(|(without, with, redacted)| {
            json!({
                "without_wall_secs": without.wall.as_secs_f64(),
                "with_wall_secs": with.wall.as_secs_f64(),
                "without_cpu_secs": without.cpu.as_secs_f64(),
                "with_cpu_secs": with.cpu.as_secs_f64(),
                "ratio_wall": ratio(with.wall.as_secs_f64(), without.wall.as_secs_f64()),
                "ratio_cpu": ratio(with.cpu.as_secs_f64(), without.cpu.as_secs_f64()),
                "values_redacted": redacted,
            })
        });
        let figures = json!({
            "bench": "compaction",
            "rows": self.rows,
            "row_files": self.row_files,
            "staged_bytes": self.staged_bytes,
            "cores": self.threads,
            "compaction_wall_secs": c.wall.as_secs_f64(),
            "compaction_cpu_secs": c.cpu.as_secs_f64(),
            "rows_per_sec": c.per_wall_sec(self.rows).round(),
            "rows_per_core_sec": rows_per_core.round(),
            "staged_mb_per_sec": c.per_wall_sec(self.staged_bytes) / MB,
            "parquet_mb_per_sec": c.per_wall_sec(self.parquet_bytes) / MB,
            "commits": self.commits,
            "parquet_files": self.parquet_files,
            "parquet_bytes": self.parquet_bytes,
            "parquet_rows": self.parquet_rows,
            "mean_file_bytes": mean_file.round(),
            "bloom_filter_columns": self.bloom_columns,
            "rss_before_bytes": self.rss_before_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
            "peak_rss_is_process_peak": self.peak_rss_is_process_peak,
            "baseline_wall_secs": b.wall.as_secs_f64(),
            "baseline_cpu_secs": b.cpu.as_secs_f64(),
            "baseline_rows_per_sec": b.per_wall_sec(self.rows).round(),
            "baseline_rows_per_core_sec": b.per_cpu_sec(self.rows).round(),
            "baseline_parquet_bytes": self.baseline_bytes,
            "ratio_rows_per_sec": ratio(c.per_wall_sec(self.rows), b.per_wall_sec(self.rows)),
            "ratio_rows_per_core_sec": ratio(rows_per_core, b.per_cpu_sec(self.rows)),
            "target_rows_per_core_sec": TARGET_ROWS_PER_CORE_SEC,
            "target_met": rows_per_core >= TARGET_ROWS_PER_CORE_SEC,
            "ledger_subjects": self.ledger_subjects,
            "redact_columns": self.redact_columns,
            "ledger_cost": ledger_cost,
        });
        println!("{figures}");
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}
