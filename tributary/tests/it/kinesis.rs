//! The Kinesis source against a real Kinesis server: kinesalite, started by
//! scripts/test.sh, which exports its address as `TRIBUTARY_KINESIS_ENDPOINT`.
//! Streams are created, written, split and merged with boto3.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::compaction::assert_keys;
use crate::{dead_letters, python, run_ok, run_python, table_keys, tributary};

/// The test Kinesis server's endpoint.
fn endpoint() -> String {
    std::env::var("TRIBUTARY_KINESIS_ENDPOINT").expect(
        "TRIBUTARY_KINESIS_ENDPOINT is not set: run scripts/test.sh, which starts kinesalite",
    )
}

/// A stream name no other test (or earlier run) uses.
fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{nanos}")
}

/// Python: a boto3 Kinesis client `k` on the test server, and `put_all`,
/// which puts `(data, partition key)` pairs in order, retrying what the
/// server rejects until every record is in.
const KINESIS_PY: &str = r#"
import boto3, hashlib, json, os, sys, time
k = boto3.client("kinesis", endpoint_url=os.environ["TRIBUTARY_KINESIS_ENDPOINT"],
                 region_name=os.environ.get("AWS_REGION", "us-east-1"))

def put_all(stream, records):
    pending = list(records)
    while pending:
        try:
            r = k.put_records(StreamName=stream,
                              Records=[{"Data": d, "PartitionKey": p} for d, p in pending])
        except Exception:
            time.sleep(0.1)
            continue
        pending = [x for x, res in zip(pending, r["Records"]) if "ErrorCode" in res]
        if pending:
            time.sleep(0.05)

def wait_active(stream):
    while k.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        time.sleep(0.05)
"#;

fn kinesis_python(script: &str, args: &[&str]) -> String {
    run_python(&format!("{KINESIS_PY}\n{script}"), args)
}

fn create_stream(name: &str, shards: u32) {
    kinesis_python(
        "k.create_stream(StreamName=sys.argv[1], ShardCount=int(sys.argv[2]))\nwait_active(sys.argv[1])",
        &[name, &shards.to_string()],
    );
}

/// A configuration reading Kinesis stream `stream_name` into `table`.
fn write_config(
    dir: &Path,
    table: &Path,
    stream_name: &str,
    endpoint: &str,
    extra: &str,
) -> PathBuf {
    let path = dir.join("kinesis.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    write!(
        f,
        r#"
[lake]
table_uri = "{table}"

[ingest]
stream = "test"

[ingest.kinesis]
stream_name = "{stream_name}"
endpoint = "{endpoint}"
region = "us-east-1"
lease_ms = 2000
list_shards_interval_ms = 1000
idle_poll_ms = 200
max_backoff_ms = 1000

[ingest.batch]
max_records = 400
max_latency_ms = 400

[ingest.flatten]
key_field = "id"

{extra}
"#,
        table = table.display(),
    )
    .unwrap();
    path
}

fn spawn_worker(config: &Path, worker: &str) -> Child {
    tributary()
        .args(["ingest", "--config", config.to_str().unwrap()])
        .env("TRIBUTARY_INGEST__KINESIS__WORKER_ID", worker)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn terminate(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "worker exited with {status}");
}

/// Two workers on a 4-shard stream while a producer writes; one is killed
/// with SIGKILL; a shard is split and two are merged mid-stream; a third
/// worker joins; a compactor runs alongside. Every record is in the table
/// exactly once, and every closed shard was read to its end.
#[test]
fn workers_share_shards_through_kill_split_merge_and_join() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let stream = unique("reshard");
    create_stream(&stream, 4);
    let config = write_config(dir.path(), &table, &stream, &endpoint(), "");

    let (batches, per_batch) = (150u64, 80u64);
    let expected: Vec<String> = (0..batches * per_batch).map(|n| format!("k{n}")).collect();
    let producer_script = format!(
        "{KINESIS_PY}\n\
         stream, batches, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n\
         for b in range(batches):\n\
         \x20   put_all(stream, [(json.dumps({{'id': f'k{{n}}', 'n': n}}).encode(), f'p{{n % 97}}')\n\
         \x20                    for n in range(b * per, (b + 1) * per)])\n\
         \x20   time.sleep(0.05)\n"
    );
    let mut producer = Command::new(python())
        .arg("-c")
        .arg(&producer_script)
        .args([&stream, &batches.to_string(), &per_batch.to_string()])
        .spawn()
        .unwrap();

    let mut a = spawn_worker(&config, "worker-a");
    let b = spawn_worker(&config, "worker-b");
    std::thread::sleep(Duration::from_millis(2500));
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();

    // Split shard 0 at the middle of its hash range, then merge shards 2 and 3.
    kinesis_python(
        "s = sys.argv[1]\n\
         shard = k.list_shards(StreamName=s)['Shards'][0]\n\
         r = shard['HashKeyRange']\n\
         mid = (int(r['StartingHashKey']) + int(r['EndingHashKey'])) // 2\n\
         k.split_shard(StreamName=s, ShardToSplit=shard['ShardId'], NewStartingHashKey=str(mid))\n\
         wait_active(s)\n\
         time.sleep(1)\n\
         k.merge_shards(StreamName=s, ShardToMerge='shardId-000000000002', AdjacentShardToMerge='shardId-000000000003')\n\
         wait_active(s)",
        &[&stream],
    );
    let c = spawn_worker(&config, "worker-c");
    assert!(producer.wait().unwrap().success(), "the producer failed");

    // A compactor runs alongside until every record is in the table.
    let config_arg = config.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        run_ok(&["compact", "--config", config_arg, "--once"]);
        let count = if table.join("_delta_log").exists() {
            table_keys(&table).len()
        } else {
            0
        };
        if count >= expected.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {count} of {} records arrived",
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    terminate(b);
    terminate(c);
    run_ok(&["compact", "--config", config_arg, "--once"]);
    assert_keys(&table, &expected);

    // The closed shards (the split parent, the merged pair) were read to
    // SHARD_END, and their children were read too.
    for shard in [
        "shardId-000000000000",
        "shardId-000000000002",
        "shardId-000000000003",
    ] {
        assert!(
            table
                .join(format!("_tributary/kinesis/test/finished/{shard}.json"))
                .exists(),
            "{shard} not finished"
        );
    }
    let shards: HashSet<String> = run_python(
        "import sys, deltalake\n\
         t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table(columns=['_kinesis_shard'])\n\
         print('\\n'.join(sorted(set(t.column('_kinesis_shard').to_pylist()))))",
        &[table.to_str().unwrap()],
    )
    .lines()
    .map(str::to_string)
    .collect();
    for child in [
        "shardId-000000000004",
        "shardId-000000000005",
        "shardId-000000000006",
    ] {
        assert!(
            shards.contains(child),
            "no rows from child {child}: {shards:?}"
        );
    }
}

/// KPL-aggregated records (built here to the KPL format: magic, protobuf,
/// MD5), plain records among them, and one aggregate with a broken MD5: every
/// user record is in the table once, with its index in the aggregate; the
/// broken aggregate is a dead letter; a second run adds nothing.
#[test]
fn kpl_aggregated_records_are_ingested_once() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let stream = unique("kpl");
    create_stream(&stream, 2);
    let out = kinesis_python(
        r#"
def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7f) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)

def field(number, data):
    return varint(number << 3 | 2) + varint(len(data)) + data

def aggregate(records):
    keys = []
    body = b""
    for key, _ in records:
        if key not in keys:
            keys.append(key)
            body += field(1, key.encode())
    for key, data in records:
        record = varint(1 << 3) + varint(keys.index(key)) + field(3, data)
        body += field(3, record)
    return b"\xf3\x89\x9a\xc2" + body + hashlib.md5(body).digest()

stream = sys.argv[1]
ids, records = [], []
for a in range(40):
    users = []
    for i in range(25):
        ids.append(f"a{a}-{i}")
        users.append((f"pk{i % 3}", json.dumps({"id": f"a{a}-{i}", "agg": a, "sub": i}).encode()))
    records.append((aggregate(users), f"agg{a}"))
    if a % 4 == 0:
        ids.append(f"plain{a}")
        records.append((json.dumps({"id": f"plain{a}", "agg": -1, "sub": 0}).encode(), f"plain{a}"))
broken = bytearray(aggregate([("x", b'{"id":"lost"}')]))
broken[-1] ^= 0xFF
records.append((bytes(broken), "broken"))
put_all(stream, records)
print(json.dumps(ids))
"#,
        &[&stream],
    );
    let expected: Vec<String> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(expected.len(), 40 * 25 + 10);
    let config = write_config(dir.path(), &table, &stream, &endpoint(), "");
    let config = config.to_str().unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    assert_keys(&table, &expected);

    // Each user record knows its index in its aggregate.
    let mismatched = run_python(
        "import sys, deltalake\n\
         t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table(columns=['sub', '_kinesis_subsequence'])\n\
         print(sum(1 for s, k in zip(t.column('sub').to_pylist(), t.column('_kinesis_subsequence').to_pylist()) if s != k))",
        &[table.to_str().unwrap()],
    );
    assert_eq!(mismatched.trim(), "0");

    let letters = dead_letters(&table);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].2, "framing");
    assert!(letters[0].3.contains("MD5"), "{}", letters[0].3);
}

/// The throttling proxy (scripts/kinesis_throttle_proxy.py) in front of
/// kinesalite, stopped when dropped.
struct ThrottleProxy {
    child: Child,
    _stdin: ChildStdin,
    port: u16,
}

impl ThrottleProxy {
    fn start(args: &[&str]) -> Self {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kinesis_throttle_proxy.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(["--upstream", &endpoint(), "--exit-on-stdin-eof"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap();
        ThrottleProxy {
            _stdin: child.stdin.take().unwrap(),
            child,
            port,
        }
    }

    fn counts(&self) -> serde_json::Value {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .write_all(b"GET /__faults HTTP/1.0\r\nHost: proxy\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(body).unwrap()
    }
}

impl Drop for ThrottleProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GetRecords above the read limit (a proxy allows 3 calls per second in
/// all, throttles a fifth of the rest at random and fails some with 500)
/// slows ingestion down, and loses and duplicates nothing.
#[test]
fn throttling_slows_ingestion_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let stream = unique("throttle");
    create_stream(&stream, 2);
    let out = kinesis_python(
        "stream = sys.argv[1]\n\
         ids = [f't{n}' for n in range(3000)]\n\
         for b in range(0, 3000, 500):\n\
         \x20   put_all(stream, [(json.dumps({'id': i}).encode(), i) for i in ids[b:b + 500]])\n\
         print(json.dumps(ids))",
        &[&stream],
    );
    let expected: Vec<String> = serde_json::from_str(out.trim()).unwrap();
    let proxy = ThrottleProxy::start(&[
        "--seed",
        "7",
        "--get-records-per-second",
        "3",
        "--throttle-rate",
        "0.2",
        "--error-rate",
        "0.05",
    ]);
    let proxy_endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let config = write_config(dir.path(), &table, &stream, &proxy_endpoint, "");
    let config = config.to_str().unwrap();
    // Small GetRecords answers: many calls, so the limits bite.
    let started = Instant::now();
    let out = tributary()
        .args(["ingest", "--config", config, "--once"])
        .env("TRIBUTARY_INGEST__KINESIS__MAX_RECORDS_PER_CALL", "100")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = started.elapsed();
    run_ok(&["compact", "--config", config, "--once"]);
    assert_keys(&table, &expected);
    let counts = proxy.counts();
    let refused = counts["rate_limited"].as_u64().unwrap() + counts["throttled"].as_u64().unwrap();
    assert!(refused >= 5, "the proxy throttled too little: {counts}");
    // 30 answers of 100 records at 3 calls per second take 10 s at least.
    assert!(
        took >= Duration::from_secs(8),
        "took only {took:?}: {counts}"
    );
    let keys = table_keys(&table);
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), expected.len());
}

/// `ingest --once` on Kinesis: it stages every record that arrived before
/// it started and exits 0, while a producer goes on writing; records that
/// arrived after it started are left for the next `--once`.
#[test]
fn bounded_kinesis_runs_stage_what_arrived_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let stream = unique("bounded");
    create_stream(&stream, 2);
    let put = r#"
stream, first, count, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
for start in range(first, first + count, 50):
    put_all(stream, [(json.dumps({"id": f"b{i}"}).encode(), f"pk{i}") for i in range(start, min(start + 50, first + count))])
    time.sleep(pause)
"#;
    kinesis_python(put, &[&stream, "0", "1000", "0"]);
    let expected: Vec<String> = (0..2000).map(|i| format!("b{i}")).collect();
    // Arrival times are in milliseconds: let the clock move past the last.
    std::thread::sleep(Duration::from_millis(50));
    let config = write_config(dir.path(), &table, &stream, &endpoint(), "");
    let config = config.to_str().unwrap();
    let mut producer = Command::new(python())
        .arg("-c")
        .arg(format!("{KINESIS_PY}\n{put}"))
        .args([&stream, "1000", "1000", "0.05"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    let first = table_keys(&table);
    let unique_keys: HashSet<&String> = first.iter().collect();
    assert_eq!(
        unique_keys.len(),
        first.len(),
        "duplicate keys in the table"
    );
    assert!(expected[..1000].iter().all(|k| unique_keys.contains(k)));
    assert!(
        first.len() < expected.len(),
        "records that arrived after it started are left: {} staged",
        first.len()
    );

    assert!(producer.wait().unwrap().success());
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);
    assert_keys(&table, &expected);
}
