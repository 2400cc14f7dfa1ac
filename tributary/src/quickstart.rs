//! `tributary quickstart`: the whole pipeline on one machine with sample data.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use tributary_config::{Config, FilesSourceConfig, FlattenConfig, IngestConfig, LakeConfig};
use tributary_lake::Lake;

use crate::sample::{SplitMix, write_envelopes};

/// Sample input files; the last one is gzip-compressed.
const FILES: u64 = 4;
/// Lines that are not valid messages, added to show dead-lettering.
const BAD_LINES: [&[u8]; 3] = [
    b"{\"service\": \"checkout\", \"messages\": [",
    b"not json at all",
    b"\xff\xfe{}",
];

pub async fn run(dir: &Path, records: u64) -> anyhow::Result<()> {
    let incoming = dir.join("incoming");
    let table = dir.join("table");
    // Only the quickstart's own folders are replaced, never anything else in DIR.
    for owned in [&incoming, &table] {
        if owned.exists() {
            std::fs::remove_dir_all(owned)
                .with_context(|| format!("cannot clear {}", owned.display()))?;
        }
    }
    std::fs::create_dir_all(&incoming)
        .with_context(|| format!("cannot create {}", incoming.display()))?;

    let started = Instant::now();
    let (input_bytes, envelopes) = generate(&incoming, records)?;
    let generated = started.elapsed();

    let mut config = Config {
        lake: LakeConfig {
            table_uri: table.display().to_string(),
            s3: Default::default(),
            subject_columns: vec!["messages_user_id".into(), "messages_user_email".into()],
        },
        ingest: Some(IngestConfig {
            stream: "quickstart".into(),
            files: Some(FilesSourceConfig {
                path: incoming.display().to_string(),
                poll_interval_ms: 100,
                gz_settle_ms: 0,
                format: Default::default(),
            }),
            batch: Default::default(),
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
        }),
        compact: Default::default(),
        service: Default::default(),
    };
    config.validate()?;
    config.complete();
    let lake = Lake::open(&config.lake)?;

    let ingest_started = Instant::now();
    let (_tx, never) = tokio::sync::watch::channel(false);
    let ingest = config.require_ingest()?;
    let telemetry =
        tributary_ingest::IngestTelemetry::register(&prometheus::Registry::new(), &ingest.stream)?;
    tributary_ingest::run(
        ingest,
        &lake,
        tributary_ingest::Mode::Once,
        never,
        telemetry.clone(),
    )
    .await?;
    let ingested = telemetry.snapshot();
    let ingest_time = ingest_started.elapsed();

    let compact_started = Instant::now();
    let compacted = tributary_compactor::compact_until_empty(&config.compact, &lake).await?;
    let compact_time = compact_started.elapsed();
    let total = started.elapsed();

    let (parquet_files, parquet_bytes) = parquet_files(&table)?;
    let table_path = std::fs::canonicalize(&table).unwrap_or(table);
    let per_sec = |n: u64, d: std::time::Duration| (n as f64 / d.as_secs_f64().max(1e-9)) as u64;
    println!("Tributary quickstart");
    println!(
        "  input         {records} log records in {envelopes} envelopes + {} bad lines, {} files, {:.1} MiB (generated in {:.1}s)",
        BAD_LINES.len(),
        FILES,
        mib(input_bytes),
        generated.as_secs_f64()
    );
    println!(
        "  ingest        {} messages -> {} rows in {} row files ({:.1} MiB), {} dead letters, {:.1}s ({} rows/s)",
        ingested.messages,
        ingested.rows,
        ingested.row_files,
        mib(ingested.row_file_bytes),
        ingested.dead_letters,
        ingest_time.as_secs_f64(),
        per_sec(ingested.rows, ingest_time)
    );
    println!(
        "  compact       {} rows -> {} Parquet files ({:.1} MiB), {} commits, {:.1}s ({} rows/s)",
        compacted.rows_written,
        parquet_files,
        mib(parquet_bytes),
        compacted.commits,
        compact_time.as_secs_f64(),
        per_sec(compacted.rows_written, compact_time)
    );
    println!(
        "  table         {} rows, version {}",
        compacted.rows_written,
        compacted
            .table_version
            .map_or("none".to_string(), |v| v.to_string())
    );
    println!(
        "  dead letters  {} (under {}/_tributary/dead-letter/)",
        ingested.dead_letters,
        table_path.display()
    );
    println!(
        "  total         {:.1}s, {} records/s end to end",
        total.as_secs_f64(),
        per_sec(records, total)
    );
    println!("  path          {}", table_path.display());
    println!();
    println!("Read it with Python (pip install deltalake pyarrow):");
    println!(
        "  python3 -c \"import deltalake; print(deltalake.DeltaTable('{}').to_pyarrow_table().num_rows)\"",
        table_path.display()
    );
    Ok(())
}

/// Writes the sample files; returns their total size and the envelope count.
fn generate(incoming: &Path, records: u64) -> anyhow::Result<(u64, u64)> {
    let mut rng = SplitMix::new(0x7472_6962_7574_6172);
    let mut envelopes = 0;
    for i in 0..FILES {
        let share = records / FILES + u64::from(i < records % FILES);
        let gz = i == FILES - 1;
        let name = format!("app-{i}.ndjson{}", if gz { ".gz" } else { "" });
        let path = incoming.join(name);
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut out: Box<dyn Write> = if gz {
            Box::new(flate2::write::GzEncoder::new(
                BufWriter::new(file),
                flate2::Compression::fast(),
            ))
        } else {
            Box::new(BufWriter::new(file))
        };
        envelopes += write_envelopes(&mut out, &mut rng, share, envelopes)?;
        if i == 0 {
            for bad in BAD_LINES {
                out.write_all(bad)?;
                out.write_all(b"\n")?;
            }
        }
        out.flush()?;
        drop(out);
    }
    let bytes = std::fs::read_dir(incoming)?
        .map(|e| Ok(e?.metadata()?.len()))
        .sum::<std::io::Result<u64>>()?;
    Ok((bytes, envelopes))
}

/// Count and total size of the Parquet files under the table.
fn parquet_files(table: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut count, mut bytes) = (0, 0);
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
                count += 1;
                bytes += entry.metadata()?.len();
            }
        }
    }
    Ok((count, bytes))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
