//! End-to-end Kafka ingest: records/s from a tansu broker to staged row files
//! on the local object store, for JSON envelopes and for Glue-framed Avro
//! envelopes (the quickstart's sample stream, 7–25 log records each), beside
//! the in-process figure for decoding, flattening and encoding the same
//! messages into row files (one thread), so it shows where the time goes.
//!
//! ```sh
//! cargo bench -p tributary --bench kafka
//! ```
//!
//! Needs tansu (`TRIBUTARY_TANSU`, default
//! `~/.cache/tributary-testbed/cargo/bin/tansu`, installed by
//! scripts/test.sh). `TRIBUTARY_BENCH_RECORDS` sets the log records per
//! format (default 1,000,000). The messages are produced before ingest
//! starts; the clock runs from starting `tributary ingest` to every row being
//! staged, and the ingest process's CPU time (user + system, from
//! `/proc/<pid>/stat`) is reported per million records because the test
//! broker, not ingest, bounds the rate, with the ingest process's peak RSS
//! (`VmHWM`). `TRIBUTARY_BENCH_PARTITIONS` sets the topic's partitions
//! (default 4).
//!
//! `TRIBUTARY_BENCH_TOPICS=20` measures routing instead (`[ingest.routing]`,
//! JSON envelopes only): the same records and the same number of partitions
//! (the greater of the topics and `TRIBUTARY_BENCH_PARTITIONS`) as 20
//! topics into 20 tables by `template = "${topic}"`, against one topic into
//! one table, one ingest process each, with the same figures; then one
//! `tributary compact --once` over every table of each layout: its time, CPU
//! and peak RSS.
//!
//! `TRIBUTARY_BENCH_FIELD_TABLES=4` measures field routing
//! (`[[ingest.routing.fields]]`): the same JSON envelopes, each given an
//! envelope field `route` with one of 4 values at random, on one topic of
//! `TRIBUTARY_BENCH_PARTITIONS` partitions routed by that field into 4
//! tables (every batch decoded once, split and staged into every table),
//! against the same topic into one table. Both modes also count the row
//! files staged into each table (one PUT each) and their bytes.

// A benchmark's set-up either works or the benchmark has nothing to measure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tributary_config::FlattenConfig;
use tributary_decode::flatten::Flattener;
use tributary_decode::wire::{SchemaRef, glue_frame};
use tributary_ingest::batch::{BatchSettings, ColumnTypes, Message, SourceItem, encode_batch};
use tributary_ingest::schemas::{Schemas, flatten_rules};
use tributary_lake::PartitionId;
use tributary_lake::rowfile::Codec;
use tributary_schema_registry::client::{Client, ClientOptions};
use tributary_schema_registry::schema::SchemaType;
use tributary_schema_registry::server;

// What the process measures of itself, and the quickstart's generator,
// included rather than copied (the binary crate has no library target).
#[path = "../src/process.rs"]
mod process;
#[path = "../src/sample.rs"]
#[allow(unused_imports, dead_code)]
mod sample;

/// The number in environment variable `name` (`_` separators allowed), else
/// `default`.
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name} is a number"))
        })
        .unwrap_or(default)
}

/// The topics' partitions: `TRIBUTARY_BENCH_PARTITIONS`, default 4.
fn partitions() -> usize {
    env_number("TRIBUTARY_BENCH_PARTITIONS", 4) as usize
}
const SUBJECT: &str = "bench-envelope";

fn main() {
    let records = env_number("TRIBUTARY_BENCH_RECORDS", 1_000_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let topics = env_number("TRIBUTARY_BENCH_TOPICS", 1) as usize;
    let field_tables = env_number("TRIBUTARY_BENCH_FIELD_TABLES", 1) as usize;
    if topics > 1 {
        routing(dir.path(), records, topics);
        return;
    }
    if field_tables > 1 {
        field_routing(dir.path(), records, field_tables);
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let schemas = [sample::AVRO_SCHEMA_V1.to_string(), sample::avro_schema_v2()];
    let (registry, versions) = runtime
        .block_on(server::serve_local(
            &dir.path().join("registry"),
            "bench",
            SUBJECT,
            &schemas,
        ))
        .expect("the registry starts");
    let broker = Broker::start(dir.path());

    let json = json_messages(records);
    let mut avro = Vec::new();
    sample::avro_envelopes(
        &mut sample::SplitMix::new(1),
        records,
        0,
        |n| n % 2 == 1,
        |_, v2, body| {
            avro.push(glue_frame(versions[usize::from(v2)], body, false));
            Ok(())
        },
    )
    .expect("in memory");

    println!(
        "{records} log records per format, {} partitions, tansu at {}",
        partitions(),
        broker.address
    );
    println!(
        "| format | messages | end to end (records/s) | ingest CPU s per 1M records | ingest peak RSS (MiB) | decode+flatten+encode in process, 1 thread (records/s) | end to end / in process |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (format, messages) in [("JSON", &json), ("Glue Avro", &avro)] {
        let topic = format!("bench-{}", if format == "JSON" { "json" } else { "avro" });
        broker.create_topic(&topic, partitions());
        produce(
            &broker.address,
            std::slice::from_ref(&topic),
            partitions(),
            messages,
        );
        let (elapsed, cpu, peak_mib) = ingest(
            dir.path(),
            &broker.address,
            std::slice::from_ref(&topic),
            None,
            Some(&registry.to_string()),
            records,
        );
        let end_to_end = records as f64 / elapsed.as_secs_f64();
        let in_process = in_process(messages, records, &schemas, &versions, &runtime);
        println!(
            "| {format} | {} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} |",
            messages.len(),
            end_to_end,
            cpu * 1e6 / records as f64,
            peak_mib,
            in_process,
            end_to_end / in_process
        );
    }
}

/// The quickstart's sample stream as JSON envelopes holding `records` log
/// records in all, one message each.
fn json_messages(records: u64) -> Vec<Vec<u8>> {
    let mut json = Vec::new();
    sample::write_envelopes(&mut json, &mut sample::SplitMix::new(1), records, 0)
        .expect("in memory");
    json.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// One way of laying out the same messages: its topics, of `partitions`
/// each, and the `[ingest.routing]` section routing them (none: one table).
struct Layout {
    name: String,
    topics: Vec<String>,
    partitions: usize,
    routing: Option<String>,
}

impl Layout {
    /// One topic of `partitions` into one table: the baseline.
    fn one_table(partitions: usize) -> Self {
        Self {
            name: "1 topic → 1 table".into(),
            topics: vec!["one".into()],
            partitions,
            routing: None,
        }
    }
}

/// Routing: `topics` topics into as many tables against one topic into one
/// table, `records` JSON log records in all, the same partitions in all.
fn routing(dir: &Path, records: u64, topics: usize) {
    let partitions = topics.max(partitions());
    let routed = Layout {
        name: format!("{topics} topics → {topics} tables"),
        topics: (0..topics).map(|i| format!("t{i:02}")).collect(),
        partitions: partitions / topics,
        routing: Some("[ingest.routing]\ntemplate = \"${topic}\"\n".into()),
    };
    let layouts = [Layout::one_table(partitions), routed];
    compare(dir, records, &json_messages(records), &layouts);
}

/// Field routing: one topic whose messages carry an envelope field `route`
/// spreading them evenly (at random) over `tables` values, each routed to
/// its own table by `[[ingest.routing.fields]]`, against the same messages
/// on one topic into one table; the same partitions either way.
fn field_routing(dir: &Path, records: u64, tables: usize) {
    let mut rng = sample::SplitMix::new(2);
    let messages: Vec<Vec<u8>> = json_messages(records)
        .into_iter()
        .map(|message| {
            let route = format!("{{\"route\":\"r{:02}\",", rng.below(tables as u64));
            [route.as_bytes(), &message[1..]].concat()
        })
        .collect();
    let values: Vec<String> = (0..tables)
        .map(|i| format!("r{i:02} = \"t{i:02}\""))
        .collect();
    let routed = Layout {
        name: format!("1 topic → {tables} tables by field"),
        topics: vec!["fields".into()],
        partitions: partitions(),
        // Every value is listed: the lead (`default_table`) is one of the
        // tables and gets its share of the rows.
        routing: Some(format!(
            "[[ingest.routing.fields]]\ntopic = \"fields\"\nfield = \"route\"\n\
             values = {{ {} }}\ndefault_table = \"t00\"\n",
            values.join(", ")
        )),
    };
    let layouts = [Layout::one_table(partitions()), routed];
    compare(dir, records, &messages, &layouts);
}

/// Produces `messages` to each of `layouts` (the first the baseline), runs
/// `tributary ingest` until every row is staged, counts the row files staged
/// into each table, runs `tributary compact --once` over every table, and
/// prints each layout's figures and the second's as ratios of the first's.
fn compare(dir: &Path, records: u64, messages: &[Vec<u8>], layouts: &[Layout; 2]) {
    let broker = Broker::start(dir);
    println!(
        "{records} JSON log records ({} messages), {} partitions in all, tansu at {}",
        messages.len(),
        layouts[0].partitions * layouts[0].topics.len(),
        broker.address
    );
    println!(
        "| layout | end to end (records/s) | ingest CPU s per 1M records | ingest peak RSS (MiB) \
         | staged files per table (min–max) | staged files in all | staged MB \
         | compact --once (s) | compact CPU s | compact peak RSS (MiB) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut figures = Vec::new();
    for layout in layouts {
        let names = &layout.topics;
        for name in names {
            broker.create_topic(name, layout.partitions);
        }
        produce(&broker.address, names, layout.partitions, messages);
        let (elapsed, cpu, peak_mib) = ingest(
            dir,
            &broker.address,
            names,
            layout.routing.as_deref(),
            None,
            records,
        );
        let rate = records as f64 / elapsed.as_secs_f64();
        let cpu = cpu * 1e6 / records as f64;
        let tables = dir.join(format!("table-{}", names[0]));
        let staged = staged_files(&tables);
        let files: Vec<usize> = staged.values().map(|(files, _)| *files).collect();
        let all_files = files.iter().sum::<usize>();
        let mb = staged.values().map(|(_, bytes)| *bytes).sum::<u64>() as f64 / 1e6;
        let per_table = format!(
            "{:.0} ({}–{})",
            all_files as f64 / files.len() as f64,
            files.iter().min().unwrap_or(&0),
            files.iter().max().unwrap_or(&0)
        );
        // The same configuration compacts every table it routed to.
        let (compact_time, compact_cpu, compact_mib) =
            compact_once(&dir.join(format!("{}.toml", names[0])));
        let compact_time = compact_time.as_secs_f64();
        println!(
            "| {} | {rate:.0} | {cpu:.2} | {peak_mib:.0} | {per_table} | {all_files} | {mb:.1} \
             | {compact_time:.1} | {compact_cpu:.1} | {compact_mib:.0} |",
            layout.name
        );
        figures.push([
            rate,
            cpu,
            peak_mib,
            all_files as f64,
            mb,
            compact_time,
            compact_cpu,
            compact_mib,
        ]);
        let _ = std::fs::remove_dir_all(&tables);
    }
    let ratio = |i: usize| figures[1][i] / figures[0][i];
    println!(
        "{} / one table: records/s {:.2}×, CPU per record {:.2}×, ingest peak RSS {:.2}×, \
         staged files {:.2}×, staged bytes {:.2}×, compact time {:.2}×, compact CPU {:.2}×, \
         compact peak RSS {:.2}×",
        layouts[1].name,
        ratio(0),
        ratio(1),
        ratio(2),
        ratio(3),
        ratio(4),
        ratio(5),
        ratio(6),
        ratio(7)
    );
}

/// The row files staged under `root` (one table, or the parent of routed
/// tables), by table (the path from `root` to the table): how many, and
/// their bytes. Each is one create-only PUT.
fn staged_files(root: &Path) -> BTreeMap<String, (usize, u64)> {
    let mut tables = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a table directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let relative = path.strip_prefix(root).expect("under the root");
            let relative = relative.to_string_lossy();
            if let Some((table, _)) = relative.split_once("_tributary/staging/") {
                let counts = tables.entry(table.to_string()).or_insert((0, 0));
                counts.0 += 1;
                counts.1 += path.metadata().expect("a staged file's size").len();
            }
        }
    }
    tables
}

/// Runs `tributary compact --once` with `config`: its wall time, and its CPU
/// seconds and peak RSS (MiB) as last sampled (every 20 ms) before it exited.
fn compact_once(config: &Path) -> (Duration, f64, f64) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["compact", "--once", "--config"])
        .arg(config)
        .env("TRIBUTARY_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("tributary compact starts");
    let pid = child.id();
    let (mut cpu, mut peak) = (0.0, 0.0);
    loop {
        if let Some(status) = child.try_wait().expect("the compactor's status") {
            assert!(status.success(), "compact --once failed: {status}");
            return (started.elapsed(), cpu, peak);
        }
        // The process may exit between the check above and these reads.
        if let Ok(hwm) = process::status_bytes_of(&pid.to_string(), "VmHWM") {
            peak = hwm as f64 / (1024.0 * 1024.0);
            cpu = cpu_seconds(pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tansu broker on a free port, killed when dropped.
struct Broker {
    address: String,
    child: Child,
}

impl Broker {
    fn start(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let url = format!("tcp://{address}");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "tansu did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { address, child }
    }

    fn create_topic(&self, topic: &str, partitions: usize) {
        let status = Command::new(tansu())
            .args([
                "topic",
                "create",
                topic,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://{}", self.address)])
            .status()
            .expect("tansu runs");
        assert!(status.success(), "tansu topic create {topic}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu() -> PathBuf {
    std::env::var_os("TRIBUTARY_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/tributary-testbed/cargo/bin/tansu")
        })
}

/// Produces `messages` round-robin over the topics, and within each topic
/// over its `partitions`, and waits for every acknowledgement.
fn produce(brokers: &str, topics: &[String], partitions: usize, messages: &[Vec<u8>]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .create()
        .expect("a producer");
    for (i, message) in messages.iter().enumerate() {
        let key = i.to_string();
        let topic = &topics[i % topics.len()];
        let partition = (i / topics.len()) % partitions;
        let mut record = BaseRecord::to(topic)
            .payload(message)
            .key(&key)
            .partition(partition as i32);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .expect("every message acknowledged");
}

/// Runs `tributary ingest` on `topics` until `records` rows are staged: the
/// time that took, the process's CPU seconds and its peak RSS in MiB. With
/// `routing` (an `[ingest.routing]` section), the tables are
/// `table-<first topic>/${table}`, else that directory is the one table.
fn ingest(
    dir: &Path,
    brokers: &str,
    topics: &[String],
    routing: Option<&str>,
    registry: Option<&str>,
    records: u64,
) -> (Duration, f64, f64) {
    let topic = &topics[0];
    let table = dir.join(format!("table-{topic}"));
    let config = dir.join(format!("{topic}.toml"));
    let table_uri = match routing {
        Some(_) => format!("{}/${{table}}", table.display()),
        None => table.display().to_string(),
    };
    let routing = routing.unwrap_or_default();
    let registry = registry
        .map(|url| format!("[ingest.registry]\nurl = \"http://{url}\"\n"))
        .unwrap_or_default();
    let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    std::fs::write(
        &config,
        format!(
            r#"
[lake]
table_uri = "{table_uri}"
[ingest]
stream = "bench"
{routing}
[ingest.kafka]
brokers = "{brokers}"
group_id = "bench-{topic}"
topics = [{topics}]
{registry}
[ingest.flatten]
explode = "messages"
key_field = "messages_id"
event_time_field = "messages_timestamp"
"#,
            topics = topics.join(", "),
        ),
    )
    .expect("config written");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["ingest", "--config", config.to_str().expect("UTF-8 path")])
        .env("TRIBUTARY_LOG", "warn")
        .env(
            "TRIBUTARY_SERVICE__LISTEN_ADDR",
            format!("127.0.0.1:{port}"),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("tributary ingest starts");
    // Summed over the `table` label.
    let series = "tributary_ingest_staged_rows_total{";
    loop {
        let staged: u64 = metrics(port)
            .map(|body| {
                body.lines()
                    .filter(|l| l.starts_with(series))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        if staged >= records {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "ingest did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(child.id());
    let peak_mib = process::status_bytes_of(&child.id().to_string(), "VmHWM")
        .expect("the ingest process's VmHWM") as f64
        / (1024.0 * 1024.0);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    (elapsed, cpu, peak_mib)
}

fn metrics(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// User + system CPU seconds of process `pid` so far (Linux `/proc`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name (which may hold spaces) start at 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

/// Records/s of decoding, flattening and encoding `messages` into row files
/// of 10,000 messages, on this thread.
fn in_process(
    messages: &[Vec<u8>],
    records: u64,
    schemas: &[String; 2],
    versions: &[uuid::Uuid],
    runtime: &tokio::runtime::Runtime,
) -> f64 {
    let flatten = FlattenConfig {
        explode: Some("messages".into()),
        key_field: Some("messages_id".into()),
        event_time_field: Some("messages_timestamp".into()),
        ..Default::default()
    };
    let client = Client::fixed(
        versions
            .iter()
            .zip(schemas)
            .map(|(id, text)| (SchemaRef::Uuid(*id), SchemaType::Avro, text.clone())),
        ClientOptions {
            rules: flatten_rules(&flatten),
            reader: None,
            capacity: 16,
            unknown_ttl: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
        },
    );
    let settings = BatchSettings {
        flattener: Flattener::new(&flatten),
        key_field: flatten.key_field.clone(),
        event_time_field: flatten.event_time_field.clone(),
        codec: Codec::Zstd,
        dead_letter_max_payload_bytes: 1024,
        max_message_bytes: 10 << 20,
        validate_json: false,
    };
    let partition = PartitionId::new("bench", "p");
    let mut types = ColumnTypes::default();
    let started = Instant::now();
    let mut rows = 0;
    for (i, chunk) in messages.chunks(10_000).enumerate() {
        let items: Vec<SourceItem> = chunk
            .iter()
            .enumerate()
            .map(|(j, m)| SourceItem::Message(Message::new((i * 10_000 + j) as u64, m.clone())))
            .collect();
        let schemas = runtime.block_on(Schemas::resolve(Some(&client), &items, |_, _, _| {}));
        rows += encode_batch(&partition, &settings, &schemas, &mut types, items)
            .expect("encodes")
            .rows;
    }
    assert_eq!(rows, records, "every record decodes");
    records as f64 / started.elapsed().as_secs_f64()
}
