//! The Kafka source against a real Kafka-protocol broker (tansu, installed by
//! scripts/test.sh), with test data produced by `confluent-kafka` (Python,
//! librdkafka 2.x). Each test starts its own broker on a free port with its
//! own SQLite file, so tests run side by side and one can restart its broker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::compaction::assert_keys;
use crate::operations::{Processes, free_port, http_get, wait_for};
use crate::{dead_letters, envelopes, python, run_ok, run_python, table_keys, tributary};

/// A tansu broker serving `127.0.0.1:<port>` from `<dir>/tansu.db`.
pub(crate) struct Broker {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// With SASL authentication required: the address the broker
    /// advertises to clients (a TLS terminator in front of it).
    authenticated: Option<String>,
}

impl Broker {
    pub(crate) fn start(dir: &Path) -> Self {
        let mut broker = Self {
            dir: dir.to_path_buf(),
            port: free_port(),
            child: None,
            authenticated: None,
        };
        broker.restart();
        broker
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Restarts the broker requiring SASL (SCRAM) from every client, and
    /// advertising `advertised` (`host:port`) as its address. Users and
    /// topics must exist before: the tansu CLI cannot authenticate.
    pub(crate) fn require_authentication(&mut self, advertised: String) {
        self.authenticated = Some(advertised);
        self.restart();
    }

    /// Starts the broker (again, on the same port and data).
    fn restart(&mut self) {
        self.stop();
        let url = format!("tcp://{}", self.address());
        let advertised = match &self.authenticated {
            Some(address) => format!("tcp://{address}"),
            None => url.clone(),
        };
        let log = std::fs::File::create(self.dir.join("tansu.log")).unwrap();
        // tansu 0.6.0 joins the storage path onto the working directory, so
        // the SQLite file is named relative to it.
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(self.authenticated.as_ref().map(|_| "--authentication"))
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for(Duration::from_secs(30), "the broker to listen", || {
            std::net::TcpStream::connect(self.address()).ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn create_topic(&self, topic: &str, partitions: u32) {
        self.tansu(&[
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
        ]);
    }

    /// Adds a SCRAM-SHA-512 user.
    pub(crate) fn create_user(&self, name: &str, password: &str) {
        self.tansu(&["user", "create", name, password, "--mechanism", "scram512"]);
    }

    /// Runs a tansu CLI command against this broker.
    fn tansu(&self, args: &[&str]) {
        let output = Command::new(tansu())
            .args(args)
            .args(["--broker", &format!("tcp://{}", self.address())])
            .output()
            .unwrap();
        crate::operations::assert_succeeded(&format!("tansu {}", args.join(" ")), &output);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The tansu binary scripts/test.sh installs.
fn tansu() -> PathBuf {
    let path = std::env::var_os("TRIBUTARY_TANSU")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| Path::new(&h).join(".cache/tributary-testbed/cargo/bin/tansu"))
        })
        .expect("TRIBUTARY_TANSU or HOME must be set");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh, which installs tansu",
        path.display()
    );
    path
}

/// Produces each line of `lines_file` to `topic` with confluent-kafka:
/// message `i` goes to partition `i % partitions` with key `k<i>`, at about
/// `rate` messages a second (0: as fast as it can). Lines `null` are
/// produced without a value; lines starting with `hex:` as those bytes.
/// Fails unless the broker acknowledged every message.
const PRODUCER: &str = r#"
import sys, time
from confluent_kafka import Producer
brokers, topic, partitions, path, rate, first = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]), int(sys.argv[6])
failed = []
def done(err, msg):
    if err is not None:
        failed.append(str(err))
p = Producer({"bootstrap.servers": brokers, "linger.ms": 5, "message.timeout.ms": 120000, "acks": "all"})
start = time.time()
with open(path) as f:
    for i, line in enumerate(f, start=first):
        line = line.rstrip("\n")
        value = None if line == "null" else bytes.fromhex(line[4:]) if line.startswith("hex:") else line.encode()
        while True:
            try:
                p.produce(topic, value=value, key=f"k{i}".encode(), partition=i % partitions, on_delivery=done)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
        if rate > 0:
            ahead = (i - first + 1) / rate - (time.time() - start)
            if ahead > 0:
                time.sleep(ahead)
left = p.flush(120)
assert left == 0 and not failed, f"{left} messages unacknowledged, failures: {failed[:5]}"
print(i - first + 1)
"#;

/// Writes `lines` to a file in `dir` and starts the producer on it; message
/// numbers (and keys) start at `first`.
pub(crate) fn produce(
    dir: &Path,
    broker: &Broker,
    topic: &str,
    partitions: u32,
    lines: &[String],
    rate: u32,
    first: usize,
) -> Child {
    let path = dir.join(format!("produce-{topic}-{first}.txt"));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    Command::new(python())
        .arg("-c")
        .arg(PRODUCER)
        .args([&broker.address(), topic, &partitions.to_string()])
        .arg(&path)
        .args([rate.to_string(), first.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

pub(crate) fn wait_produced(child: Child) {
    let output = child.wait_with_output().unwrap();
    crate::operations::assert_succeeded("the producer", &output);
}

/// A configuration reading `topic` into the local table `table`, with a
/// short session timeout so rebalances are quick; `ingest` holds more keys
/// of `[ingest]`, `batch` those of `[ingest.batch]`.
pub(crate) fn config(
    dir: &Path,
    broker: &Broker,
    topic: &str,
    table: &Path,
    ingest: &str,
    batch: &str,
) -> PathBuf {
    let path = dir.join("kafka.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[lake]
table_uri = "{table}"

[ingest]
stream = "test"
{ingest}

[ingest.kafka]
brokers = "{brokers}"
group_id = "tributary-test"
topics = ["{topic}"]

[ingest.kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
"topic.metadata.refresh.interval.ms" = "2000"

[ingest.batch]
{batch}

[ingest.flatten]
explode = "messages"
key_field = "messages_id"
event_time_field = "messages_ts"
"#,
            table = table.display(),
            brokers = broker.address(),
        ),
    )
    .unwrap();
    path
}

/// `[ingest.batch]` keys for batches of at most 200 messages or 300 ms.
pub(crate) const SMALL_BATCHES: &str = "max_records = 200\nmax_latency_ms = 300";

fn ingest(processes: &mut Processes, config: &Path) -> u32 {
    processes
        .spawn(tributary().args(["ingest", "--config", config.to_str().unwrap()]))
        .id()
}

pub(crate) fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Compacts until the table holds `expected.len()` keys (ingest processes
/// may still be staging), for at most `limit`.
pub(crate) fn compact_until_complete(
    config: &Path,
    table: &Path,
    expected: &[String],
    limit: Duration,
) {
    let config = config.to_str().unwrap();
    wait_for(limit, "every record to reach the table", || {
        run_ok(&["compact", "--config", config, "--once"]);
        let keys = if table.join("_delta_log").exists() {
            table_keys(table).len()
        } else {
            0
        };
        (keys >= expected.len()).then_some(())
    });
}

/// Three ingest processes share a 6-partition topic while a producer
/// writes; one is killed with SIGKILL, another is frozen (SIGSTOP) past its
/// session timeout so the group moves on without it and then thawed — a
/// zombie that may still write — and a fourth joins. After compaction every
/// record is in the table exactly once.
#[test]
fn group_members_killed_frozen_and_joining_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("events", 6);
    let table = dir.path().join("table");
    let config = config(dir.path(), &broker, "events", &table, "", SMALL_BATCHES);
    let (lines, expected) = envelopes(0, 60_000);
    let producer = produce(dir.path(), &broker, "events", 6, &lines, 500, 0);

    let mut processes = Processes::default();
    let pids: Vec<u32> = (0..3).map(|_| ingest(&mut processes, &config)).collect();
    std::thread::sleep(Duration::from_secs(4));
    signal(pids[0], "KILL");
    std::thread::sleep(Duration::from_secs(2));
    signal(pids[1], "STOP");
    // Past the 6 s session timeout: the group rebalances without it.
    std::thread::sleep(Duration::from_secs(10));
    signal(pids[1], "CONT");
    ingest(&mut processes, &config);
    wait_produced(producer);

    compact_until_complete(&config, &table, &expected, Duration::from_secs(120));
    drop(processes);
    run_ok(&["compact", "--config", config.to_str().unwrap(), "--once"]);
    assert_keys(&table, &expected);
}

/// The broker is stopped and restarted mid-stream: ingest waits for it and
/// goes on; nothing is lost or duplicated.
#[test]
fn a_broker_restart_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    broker.create_topic("events", 3);
    let table = dir.path().join("table");
    let config = config(dir.path(), &broker, "events", &table, "", SMALL_BATCHES);
    let (lines, expected) = envelopes(0, 20_000);
    let (before, after) = lines.split_at(lines.len() / 2);

    let mut processes = Processes::default();
    ingest(&mut processes, &config);
    wait_produced(produce(dir.path(), &broker, "events", 3, before, 2_000, 0));
    std::thread::sleep(Duration::from_secs(1));
    broker.stop();
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    wait_produced(produce(
        dir.path(),
        &broker,
        "events",
        3,
        after,
        2_000,
        before.len(),
    ));

    compact_until_complete(&config, &table, &expected, Duration::from_secs(120));
    drop(processes);
    run_ok(&["compact", "--config", config.to_str().unwrap(), "--once"]);
    assert_keys(&table, &expected);
}

/// Undecodable bytes, a message without a value and an oversized message
/// become dead letters with their partition, offset and reason; the records
/// around them are ingested, with the Kafka metadata columns.
#[test]
fn poison_messages_are_dead_lettered_with_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("mixed", 2);
    let table = dir.path().join("table");
    let config = config(
        dir.path(),
        &broker,
        "mixed",
        &table,
        "max_message_bytes = 2000",
        SMALL_BATCHES,
    );
    let (mut lines, expected) = envelopes(0, 200);
    // Message i goes to partition i % 2 at offset i / 2.
    lines[3] = "hex:fffe00".into(); // partition 1, offset 1: not UTF-8 / no framing
    lines[4] = "null".into(); // partition 0, offset 2: a tombstone
    lines[7] = format!("{{\"pad\":\"{}\"}}", "x".repeat(3000)); // partition 1, offset 3
    lines[10] = "{\"messages\": [".into(); // partition 0, offset 5: malformed JSON
    let lost: Vec<String> = [3, 4, 7, 10]
        .iter()
        .flat_map(|&i| envelope_ids(&envelopes(0, 200).0[i]))
        .collect();
    let expected: Vec<String> = expected.into_iter().filter(|k| !lost.contains(k)).collect();

    let mut processes = Processes::default();
    ingest(&mut processes, &config);
    wait_produced(produce(dir.path(), &broker, "mixed", 2, &lines, 0, 0));
    compact_until_complete(&config, &table, &expected, Duration::from_secs(60));
    drop(processes);
    assert_keys(&table, &expected);

    let letters: Vec<(String, u64, String)> = dead_letters(&table)
        .into_iter()
        .map(|(partition, position, reason, _, _)| (partition, position, reason))
        .collect();
    let letter = |p: &str, o: u64, r: &str| (p.to_string(), o, r.to_string());
    assert_eq!(
        letters,
        vec![
            letter("mixed-0", 2, "no_value"),
            letter("mixed-0", 5, "malformed_json"),
            letter("mixed-1", 1, "framing"),
            letter("mixed-1", 3, "oversized"),
        ]
    );

    // The metadata columns of the record with id r0 (message 0: partition 0,
    // offset 0, key k0); the broker's timestamp is a UTC timestamp column.
    let row = run_python(
        "import sys, json, deltalake\n\
         t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table()\n\
         rows = [r for r in t.to_pylist() if r['_key'] == 'r0']\n\
         r = rows[0]\n\
         print(json.dumps([r['_kafka_topic'], r['_kafka_partition'], r['_kafka_offset'], r['_kafka_key'], str(t.schema.field('_kafka_timestamp').type), r['_kafka_timestamp'].year > 2020]))",
        &[table.to_str().unwrap()],
    );
    assert_eq!(
        row.trim(),
        r#"["mixed", 0, 0, "k0", "timestamp[us, tz=UTC]", true]"#
    );
}

/// The ids in one envelope line.
fn envelope_ids(line: &str) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    value["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// The lag gauge counts what is produced and not yet staged; SIGTERM stages
/// the buffered batch, commits the offsets for lag tools and exits 0.
#[test]
fn lag_is_a_metric_and_sigterm_stages_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("lagging", 1);
    let table = dir.path().join("table");
    // Batches that never close by themselves: everything read stays buffered.
    let config = config(
        dir.path(),
        &broker,
        "lagging",
        &table,
        "",
        "max_records = 1000000\nmax_latency_ms = 600000",
    );
    let (lines, expected) = envelopes(0, 500);
    wait_produced(produce(dir.path(), &broker, "lagging", 1, &lines, 0, 0));

    let port = free_port();
    let mut ingest = tributary()
        .args(["ingest", "--config", config.to_str().unwrap()])
        .env(
            "TRIBUTARY_SERVICE__LISTEN_ADDR",
            format!("127.0.0.1:{port}"),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let series = r#"tributary_ingest_kafka_lag_records{partition="lagging-0",stream="test"}"#;
    let lag = format!("{series} {}", lines.len());
    wait_for(Duration::from_secs(30), &lag, || {
        let (_, body) = http_get(port, "/metrics")?;
        body.lines().any(|l| l == lag).then_some(())
    });

    signal(ingest.id(), "TERM");
    let status = ingest.wait().unwrap();
    assert!(status.success(), "ingest exited with {status}");
    run_ok(&["compact", "--config", config.to_str().unwrap(), "--once"]);
    assert_keys(&table, &expected);
    // Lag tools see the group at the end of the partition.
    let committed = run_python(
        "import sys\n\
         from confluent_kafka import Consumer, TopicPartition\n\
         c = Consumer({'bootstrap.servers': sys.argv[1], 'group.id': 'tributary-test'})\n\
         print(c.committed([TopicPartition('lagging', 0)], timeout=30)[0].offset)",
        &[&broker.address()],
    );
    assert_eq!(committed.trim(), lines.len().to_string());
}

/// Runs `ingest --once` and waits for it to exit 0, for at most a minute.
pub(crate) fn ingest_once(config: &Path) {
    let mut child = tributary()
        .args(["ingest", "--once", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(Duration::from_secs(60), "ingest --once to exit", || {
        child.try_wait().unwrap()
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "ingest --once failed: {stderr}");
}

/// `ingest --once` on Kafka: it stages every record produced before it
/// started and exits 0, while a producer goes on writing; what it left is
/// staged by the next `--once`, and a run with nothing new adds nothing.
#[test]
fn bounded_kafka_runs_stage_what_was_there_and_leave_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("events", 3);
    let table = dir.path().join("table");
    let config = config(dir.path(), &broker, "events", &table, "", SMALL_BATCHES);
    let (lines, expected) = envelopes(0, 6_000);
    // Envelopes hold several records: split at an envelope.
    let (before, after) = lines.split_at(lines.len() / 2);
    let before_keys: usize = before.iter().map(|l| envelope_ids(l).len()).sum();

    wait_produced(produce(dir.path(), &broker, "events", 3, before, 0, 0));
    let producing = produce(dir.path(), &broker, "events", 3, after, 1_000, before.len());
    ingest_once(&config);
    run_ok(&["compact", "--config", config.to_str().unwrap(), "--once"]);
    // Every record produced before it, once; perhaps some produced while
    // its group joined (the end offsets are read at assignment).
    let first = table_keys(&table);
    let unique: std::collections::HashSet<&String> = first.iter().collect();
    assert_eq!(unique.len(), first.len(), "duplicate keys in the table");
    assert!(expected[..before_keys].iter().all(|k| unique.contains(k)));
    assert!(unique.iter().all(|k| expected.contains(k)));
    assert!(
        first.len() < expected.len(),
        "the records produced after it started are left: {} staged",
        first.len()
    );

    wait_produced(producing);
    ingest_once(&config);
    run_ok(&["compact", "--config", config.to_str().unwrap(), "--once"]);
    assert_keys(&table, &expected);
    ingest_once(&config);
    run_ok(&["compact", "--config", config.to_str().unwrap(), "--once"]);
    assert_keys(&table, &expected);
}

/// Produces the `[key, value]` pairs of the JSON file argv[3] to topic
/// argv[2] at brokers argv[1]: key and value are text, `null` for none, or
/// `hex:…` bytes; partition argv[4] for all.
const KEYED_PRODUCER: &str = r#"
import json, sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1], "acks": "all"})
def data(x):
    return None if x is None else bytes.fromhex(x[4:]) if x.startswith("hex:") else x.encode()
for key, value in json.load(open(sys.argv[3])):
    p.produce(sys.argv[2], key=data(key), value=data(value), partition=int(sys.argv[4]))
assert p.flush(60) == 0
"#;

pub(crate) fn produce_keyed(
    dir: &Path,
    broker: &Broker,
    topic: &str,
    pairs: &[(&str, Option<String>)],
) {
    let path = dir.join("keyed.json");
    std::fs::write(&path, serde_json::to_string(pairs).unwrap()).unwrap();
    run_python(
        KEYED_PRODUCER,
        &[&broker.address(), topic, path.to_str().unwrap(), "0"],
    );
}

/// `tombstones = "delete"`: a message with a key and no value deletes that
/// record key from the table (compacted rounds before) and from the rows
/// staged with it; a tombstone whose key is not UTF-8 is a dead letter.
#[test]
fn kafka_tombstones_delete_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("events", 1);
    let table = dir.path().join("table");
    let config = config(dir.path(), &broker, "events", &table, "", SMALL_BATCHES);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "topics = [\"events\"]",
        "topics = [\"events\"]\ntombstones = \"delete\"",
    );
    std::fs::write(&config, text).unwrap();
    let record = |i: u32| {
        let value =
            format!(r#"{{"host":"h","messages":[{{"id":"r{i}","n":{i},"ts":1795478400000}}]}}"#);
        (format!("r{i}"), Some(value))
    };
    let records: Vec<(String, Option<String>)> = (0..100).map(record).collect();
    let pairs: Vec<(&str, Option<String>)> = records
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    produce_keyed(dir.path(), &broker, "events", &pairs);
    ingest_once(&config);
    run_ok(&["compact", "--config", config.to_str().unwrap(), "--once"]);
    let all: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    assert_keys(&table, &all);

    // Tombstones for r0–r9 (compacted before), a new r100 and its tombstone
    // in the same batch, and a tombstone with a key that is not text.
    let new = record(100);
    let mut pairs: Vec<(&str, Option<String>)> =
        all[..10].iter().map(|k| (k.as_str(), None)).collect();
    pairs.push((new.0.as_str(), new.1.clone()));
    pairs.push((new.0.as_str(), None));
    pairs.push(("hex:ff00", None));
    produce_keyed(dir.path(), &broker, "events", &pairs);
    ingest_once(&config);
    run_ok(&["compact", "--config", config.to_str().unwrap(), "--once"]);
    assert_keys(&table, &all[10..]);
    let letters = dead_letters(&table);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].2, "no_value");
    assert!(letters[0].3.contains("no UTF-8 key"), "{letters:?}");
}

/// The erasure ledger against a replay of the whole topic: after a forget
/// of two record keys completes, a second stream reads the topic again from
/// the start into the same table (as a reprocessing job would, with its own
/// position chain, so exactly-once does not skip the old records). The
/// erased keys' records do not come back; a record of one of them produced
/// after the request does land; every other record lands again.
#[test]
fn kafka_replay_after_a_forget_brings_no_erased_record_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("events", 2);
    let table = dir.path().join("table");
    let config = config(dir.path(), &broker, "events", &table, "", SMALL_BATCHES);
    let (lines, expected) = envelopes(0, 300);
    wait_produced(produce(dir.path(), &broker, "events", 2, &lines, 0, 0));
    ingest_once(&config);
    run_ok(&["compact", "--config", config.to_str().unwrap(), "--once"]);
    assert_keys(&table, &expected);

    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "r5\nr17\n").unwrap();
    let out = run_ok(&[
        "forget",
        "--config",
        config.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
        "--grace-minutes",
        "0",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["complete"], true, "{report}");

    // A record of `r5` from an hour after the request.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 3_600_000;
    let new = format!(r#"{{"host":"h9","messages":[{{"id":"r5","n":5,"ts":{later}}}]}}"#);
    wait_produced(produce(
        dir.path(),
        &broker,
        "events",
        2,
        &[new],
        0,
        lines.len(),
    ));
    let replay = dir.path().join("replay.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &replay,
        text.replace(r#"stream = "test""#, r#"stream = "replay""#)
            .replace("tributary-test", "tributary-replay"),
    )
    .unwrap();
    ingest_once(&replay);
    run_ok(&["compact", "--config", replay.to_str().unwrap(), "--once"]);

    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for key in table_keys(&table) {
        *counts.entry(key).or_default() += 1;
    }
    assert_eq!(counts.get("r17"), None, "an erased record came back");
    assert_eq!(counts.get("r5"), Some(&1), "only r5's later record");
    for key in expected.iter().filter(|k| *k != "r5" && *k != "r17") {
        assert_eq!(
            counts.get(key),
            Some(&2),
            "{key}: the first run's and the replay's"
        );
    }
}
