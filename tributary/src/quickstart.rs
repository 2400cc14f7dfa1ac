//! `tributary quickstart`: the whole pipeline on one machine with sample data.
//!
//! A schema registry runs in the process, on a local directory, with two
//! versions of the sample envelope schema (the second adds a field with a
//! default). The generator writes AWS Glue-framed Avro envelopes, half by
//! each version, in length-prefixed files; ingest resolves their schema
//! UUIDs through the registry's REST API like any producer's.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use tributary_config::{
    Config, FileFormat, FilesSourceConfig, FlattenConfig, IngestConfig, LakeConfig,
    RegistryClientConfig,
};
use tributary_decode::wire::glue_frame;
use tributary_lake::Lake;
use tributary_schema_registry::server;
use uuid::Uuid;

use crate::process;
use crate::sample::{self, SplitMix, avro_envelopes};

/// Sample input files; the last one is gzip-compressed.
const FILES: u64 = 4;
/// The registry subject of the sample envelopes.
const SUBJECT: &str = "quickstart-envelope";

pub async fn run(dir: &Path, records: u64) -> anyhow::Result<()> {
    let incoming = dir.join("incoming");
    let table = dir.join("table");
    let registry_dir = dir.join("registry");
    // Only the quickstart's own folders are replaced, never anything else in DIR.
    for owned in [&incoming, &table, &registry_dir] {
        if owned.exists() {
            std::fs::remove_dir_all(owned)
                .with_context(|| format!("cannot clear {}", owned.display()))?;
        }
    }
    for created in [&incoming, &registry_dir] {
        std::fs::create_dir_all(created)
            .with_context(|| format!("cannot create {}", created.display()))?;
    }

    let started = Instant::now();
    let (registry_addr, versions) = server::serve_local(
        &registry_dir,
        "quickstart",
        SUBJECT,
        &[sample::AVRO_SCHEMA_V1.to_string(), sample::avro_schema_v2()],
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot start the schema registry: {e}"))?;
    let versions = [versions[0], versions[1]];
    let (input_bytes, envelopes) = generate(&incoming, records, versions)?;
    let generated = started.elapsed();

    let mut config = Config {
        lake: LakeConfig {
            table_uri: table.display().to_string(),
            s3: Default::default(),
            subject_columns: vec!["messages_user_id".into(), "messages_user_email".into()],
            ..LakeConfig::new("")
        },
        tables: Default::default(),
        ingest: Some(IngestConfig {
            stream: "quickstart".into(),
            files: Some(FilesSourceConfig {
                path: incoming.display().to_string(),
                poll_interval_ms: 100,
                gz_settle_ms: 0,
                format: FileFormat::LengthPrefixed,
            }),
            kafka: None,
            kinesis: None,
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
            registry: Some(RegistryClientConfig {
                url: Some(format!("http://{registry_addr}")),
                token_env: None,
                glue: None,
                reader_schema: None,
                cache_capacity: 100,
                unknown_retry_ms: 30_000,
                request_timeout_ms: 5_000,
                max_backoff_ms: 5_000,
                validate_json: false,
            }),
            routing: None,
        }),
        compact: Default::default(),
        service: Default::default(),
        events: Default::default(),
        retention: tributary_config::RetentionConfig::default(),
    };
    config.validate()?;
    config.complete();
    let lake = Lake::open(&config.lake)?;

    // Each phase's own peak memory (where the kernel lets us reset it).
    let peak_mib = |reset: bool| {
        let peak = process::proc_status_bytes("VmHWM").map_or(0.0, mib);
        if reset {
            process::reset_peak_rss();
        }
        peak
    };
    peak_mib(true);
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
    let ingest_peak = peak_mib(true);

    let compact_started = Instant::now();
    let compacted = tributary_compactor::compact_until_empty(&config.compact, &lake).await?;
    let compact_time = compact_started.elapsed();
    let compact_peak = peak_mib(false);
    let total = started.elapsed();

    let (parquet_files, parquet_bytes) = parquet_files(&table)?;
    let table_path = std::fs::canonicalize(&table).unwrap_or(table);
    let per_sec = |n: u64, d: std::time::Duration| (n as f64 / d.as_secs_f64().max(1e-9)) as u64;
    println!("Tributary quickstart");
    println!(
        "  input         {records} log records in {envelopes} Glue-framed Avro envelopes (schema versions 1 and 2) + {} bad frames, {} files, {:.1} MiB (generated in {:.1}s)",
        BAD_FRAMES,
        FILES,
        mib(input_bytes),
        generated.as_secs_f64()
    );
    println!(
        "  ingest        {} messages -> {} rows in {} row files ({:.1} MiB), {} dead letters, {:.1}s ({} rows/s), peak RSS {:.0} MiB",
        ingested.messages,
        ingested.rows,
        ingested.row_files,
        mib(ingested.row_file_bytes),
        ingested.dead_letters,
        ingest_time.as_secs_f64(),
        per_sec(ingested.rows, ingest_time),
        ingest_peak
    );
    println!(
        "  compact       {} rows -> {} Parquet files ({:.1} MiB), {} commits, {:.1}s ({} rows/s), peak RSS {:.0} MiB",
        compacted.rows_written,
        parquet_files,
        mib(parquet_bytes),
        compacted.commits,
        compact_time.as_secs_f64(),
        per_sec(compacted.rows_written, compact_time),
        compact_peak
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
    println!(
        "  registry      subject {SUBJECT}, versions {} and {} (under {})",
        versions[0],
        versions[1],
        registry_dir.display()
    );
    println!();
    println!("Read it with Python (pip install deltalake pyarrow):");
    println!(
        "  python3 -c \"import deltalake; print(deltalake.DeltaTable('{}').to_pyarrow_table().num_rows)\"",
        table_path.display()
    );
    Ok(())
}

/// Frames that are not valid messages, added to the first file to show
/// dead-lettering: a truncated Glue header, an unknown compression byte, a
/// schema UUID the registry does not know, and a payload that does not
/// match its schema.
const BAD_FRAMES: usize = 4;

fn bad_frames(known: Uuid) -> [Vec<u8>; BAD_FRAMES] {
    let mut compression = glue_frame(known, b"", false);
    compression[1] = 0x09;
    [
        vec![0x03, 0x00, 0x12],
        compression,
        glue_frame(Uuid::from_u128(0x0bad), b"\x02", false),
        glue_frame(known, b"\x7f\x7f", false),
    ]
}

/// Writes the sample files, length-prefixed Glue frames of Avro envelopes:
/// in each file the first half by schema version 1, the second by version
/// 2. Returns their total size and the envelope count.
fn generate(incoming: &Path, records: u64, versions: [Uuid; 2]) -> anyhow::Result<(u64, u64)> {
    let mut rng = SplitMix::new(0x7472_6962_7574_6172);
    let mut envelopes = 0;
    for i in 0..FILES {
        let share = records / FILES + u64::from(i < records % FILES);
        let gz = i == FILES - 1;
        let name = format!("app-{i}.avro{}", if gz { ".gz" } else { "" });
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
        let mut write = |frame: &[u8]| -> std::io::Result<()> {
            out.write_all(&(frame.len() as u32).to_be_bytes())?;
            out.write_all(frame)
        };
        for (half, v2) in [(share / 2, false), (share - share / 2, true)] {
            envelopes += avro_envelopes(
                &mut rng,
                half,
                envelopes,
                |_| v2,
                |_, v2, avro| write(&glue_frame(versions[usize::from(v2)], avro, false)),
            )?;
        }
        if i == 0 {
            for bad in bad_frames(versions[0]) {
                write(&bad)?;
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
