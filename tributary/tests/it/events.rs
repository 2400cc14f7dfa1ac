//! Data availability events: a long-running compactor on S3 (moto) tells a
//! webhook (a Python HTTP server that checks each request's signature with
//! its own HMAC) of every commit that changed data, in order, each once; a
//! webhook that refuses every request for a while neither stops compaction
//! nor loses an event. Events sent to a Kafka topic (tansu) are read back
//! with confluent-kafka. With two streams feeding one table, a date is
//! declared complete exactly when the slower stream passes its end plus
//! the allowed lateness, once, across a `kill -9` of the compactor; a late
//! row announces it again as a correction.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::kafka::Broker;
use crate::operations::{Processes, free_port, http_get, sample, wait_for};
use crate::{S3_STORAGE_OPTIONS, envelopes, python, run_python, s3, tributary, write_config};

const SECRET: &str = "webhook-shared-secret";
const SECRET_VARIABLE: &str = "TRIBUTARY_TEST_WEBHOOK_SECRET";

/// Serves `127.0.0.1:<argv[1]>`: each POST is appended to the file argv[2]
/// as one JSON line (`status` answered, `idempotency_key`, whether the
/// signature is valid under argv[3], and the body), answered 503 while the
/// file argv[4] exists and 200 otherwise.
const WEBHOOK: &str = r#"
import hashlib, hmac, http.server, json, os, sys
port, log, secret, refuse = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), sys.argv[4]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        status = 503 if os.path.exists(refuse) else 200
        with open(log, "a") as f:
            f.write(json.dumps({
                "status": status,
                "idempotency_key": self.headers.get("Idempotency-Key"),
                "signature_valid": hmac.compare_digest(expected, self.headers.get("X-Tributary-Signature", "")),
                "event": json.loads(body),
            }) + "\n")
        self.send_response(status)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

/// Prints the versions of the table's commits that added or removed files,
/// read with Python `deltalake`'s history.
const DATA_VERSIONS: &str = r#"
import sys, deltalake
t = deltalake.DeltaTable(sys.argv[1], storage_options=storage_options(sys.argv[1]))
for commit in t.history():
    if commit["operation"] in ("WRITE", "DELETE", "OPTIMIZE"):
        print(commit["version"])
"#;

/// Every request the webhook received (its whole lines: the last may be
/// being written).
fn requests(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn data_versions(table: &Path) -> Vec<u64> {
    let mut versions: Vec<u64> = run_python(
        &format!("{S3_STORAGE_OPTIONS}\n{DATA_VERSIONS}"),
        &[table.to_str().unwrap()],
    )
    .lines()
    .map(|l| l.parse().unwrap())
    .collect();
    versions.sort_unstable();
    versions
}

#[test]
fn every_data_commit_reaches_the_webhook_once_even_after_it_refused_for_a_while() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let table = s3::new_table("events");
    let hook_port = free_port();
    let config = write_config(
        dir.path(),
        &input,
        &table,
        &format!(
            "[compact]\ninterval_ms = 100\noptimize_min_files = 3\n\n\
             [events]\npoll_interval_ms = 100\nmax_backoff_ms = 1000\n\n\
             [[events.sinks]]\nname = \"pipelines\"\n\
             [events.sinks.webhook]\nurl = \"http://127.0.0.1:{hook_port}/events\"\n\
             secret_env = \"{SECRET_VARIABLE}\"\n"
        ),
    );
    let config = config.to_str().unwrap();
    let log = dir.path().join("webhook.jsonl");
    let refuse = dir.path().join("refuse");
    std::fs::write(&refuse, "").unwrap();

    let mut processes = Processes::default();
    start_webhook(&mut processes, hook_port, &log, &refuse);
    let compactor_port = free_port();
    let compactor = start_compactor(&mut processes, config, compactor_port);
    let metric = |name: &str| {
        let (_, body) = http_get(compactor_port, "/metrics")?;
        sample(&body, name)
    };

    // While the webhook refuses, files keep arriving and compaction goes on.
    let mut ids = Vec::new();
    for wave in 0..4u64 {
        let (lines, wave_ids) = envelopes(wave * 100, 100);
        std::fs::write(
            input.join(format!("{wave}.ndjson")),
            lines.join("\n") + "\n",
        )
        .unwrap();
        ids.extend(wave_ids);
        run_ok_env(&["ingest", "--config", config, "--once"]);
        let rows = ids.len() as f64;
        wait_for(
            Duration::from_secs(60),
            "the wave's rows in the table",
            || (metric("tributary_compactor_compacted_rows_total")? >= rows).then_some(()),
        );
    }
    wait_for(Duration::from_secs(30), "a pending event", || {
        let pending = metric(r#"tributary_compactor_events_pending{sink="pipelines"}"#)?;
        (pending >= 1.0).then_some(())
    });
    // The refused deliveries are retried (with backoff: on a fast run the
    // waves are in before the second attempt).
    wait_for(
        Duration::from_secs(30),
        "a refused delivery retried",
        || {
            let failures =
                metric(r#"tributary_compactor_event_delivery_failures_total{sink="pipelines"}"#)?;
            (failures >= 2.0).then_some(())
        },
    );
    let refused = requests(&log);
    assert!(!refused.is_empty() && refused.iter().all(|r| r["status"] == 503));

    // Back up: everything is delivered, in order, once (the table may still
    // get an optimize commit, so compare until both sides agree).
    std::fs::remove_file(&refuse).unwrap();
    let (expected, delivered) = wait_for(Duration::from_secs(60), "every event delivered", || {
        let expected = data_versions(&table);
        let delivered = accepted(&log);
        let count = metric(
            r#"tributary_compactor_events_delivered_total{kind="commit",sink="pipelines"}"#,
        )?;
        (versions_of(&delivered) == expected && count == expected.len() as f64)
            .then_some((expected, delivered))
    });
    assert!(
        expected.len() >= 4,
        "one commit per wave at least: {expected:?}"
    );
    let mut compacted_rows = 0;
    for request in &delivered {
        let event = &request["event"];
        assert_eq!(request["signature_valid"], true, "{request}");
        assert_eq!(request["idempotency_key"], event["id"]);
        assert_eq!(event["kind"], "commit");
        assert_eq!(
            event["id"].as_str().unwrap(),
            format!("{}@{}", table.display(), event["version"])
        );
        let operation = event["operation"].as_str().unwrap();
        assert!(["compaction", "optimize"].contains(&operation), "{event}");
        let added: u64 = event["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["rows_added"].as_u64().unwrap())
            .sum();
        if operation == "compaction" {
            compacted_rows += added;
            assert!(
                !event["watermarks"].as_object().unwrap().is_empty(),
                "a compaction sets watermarks: {event}"
            );
        } else {
            let removed: u64 = event["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["rows_removed"].as_u64().unwrap())
                .sum();
            assert_eq!(added, removed, "optimize keeps the rows: {event}");
        }
    }
    assert_eq!(compacted_rows, ids.len() as u64);

    // `events list` agrees: nothing pending, the cursor past the newest version.
    let listing: serde_json::Value =
        serde_json::from_slice(&run_ok_env(&["events", "list", "--config", config]).stdout)
            .unwrap();
    let latest = listing["latest_version"].as_u64().unwrap();
    assert_eq!(listing["sinks"][0]["next_version"], latest + 1);
    let listed: Vec<u64> = listing["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["pending_for"], serde_json::json!([]));
            e["version"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(listed, expected);

    // A compactor killed while the webhook refuses: its successor delivers
    // what was left from the saved cursor. The cursor is first rewound to
    // the first data commit, as if deliveries had not been recorded: those
    // are delivered again, identical to the first time.
    std::fs::write(&refuse, "").unwrap();
    let (lines, wave_ids) = envelopes(400, 100);
    std::fs::write(input.join("4.ndjson"), lines.join("\n") + "\n").unwrap();
    run_ok_env(&["ingest", "--config", config, "--once"]);
    let rows = (ids.len() + wave_ids.len()) as f64;
    wait_for(
        Duration::from_secs(60),
        "the last wave's rows in the table",
        || (metric("tributary_compactor_compacted_rows_total")? >= rows).then_some(()),
    );
    wait_for(Duration::from_secs(30), "a refused delivery", || {
        requests(&log)
            .last()
            .is_some_and(|r| r["status"] == 503)
            .then_some(())
    });
    processes.kill9(compactor);
    let before_restart = accepted(&log);
    run_python(
        &format!("{S3_STORAGE_OPTIONS}\n{REWIND}"),
        &[table.to_str().unwrap(), &expected[0].to_string()],
    );
    std::fs::remove_file(&refuse).unwrap();
    start_compactor(&mut processes, config, compactor_port);
    let (expected, delivered) =
        wait_for(Duration::from_secs(60), "the successor to deliver", || {
            let expected = data_versions(&table);
            let again = accepted(&log).split_off(before_restart.len());
            (versions_of(&again) == expected).then_some((expected, again))
        });
    assert!(
        expected.len() > before_restart.len(),
        "the last wave's commit is new"
    );
    for (first, again) in before_restart.iter().zip(&delivered) {
        assert_eq!(
            first["event"], again["event"],
            "a redelivery is identical to the first delivery"
        );
    }
}

/// Sets the delivery cursor of sink `pipelines` of table argv[1] (on the
/// test S3 server) to version argv[2].
const REWIND: &str = r#"
import boto3, json, os, sys, time
bucket, root = sys.argv[1][len("s3://"):].split("/", 1)
s3 = boto3.client("s3", endpoint_url=os.environ["TRIBUTARY_S3_ENDPOINT"])
cursor = {"next_version": int(sys.argv[2]), "updated_at_ms": int(time.time() * 1000)}
s3.put_object(Bucket=bucket, Key=f"{root}/_tributary/events/sinks/pipelines/cursor.json", Body=json.dumps(cursor))
"#;

/// The requests the webhook accepted (answered 200), in the order received.
fn accepted(log: &Path) -> Vec<serde_json::Value> {
    requests(log)
        .into_iter()
        .filter(|r| r["status"] == 200)
        .collect()
}

/// The versions of the events of `requests`.
fn versions_of(requests: &[serde_json::Value]) -> Vec<u64> {
    requests
        .iter()
        .map(|r| r["event"]["version"].as_u64().unwrap())
        .collect()
}

/// Starts the [`WEBHOOK`] test server on `port`, logging to `log` and
/// refusing while `refuse` exists.
fn start_webhook(processes: &mut Processes, port: u16, log: &Path, refuse: &Path) {
    processes.spawn(
        Command::new(python())
            .arg("-c")
            .arg(WEBHOOK)
            .arg(port.to_string())
            .arg(log)
            .arg(SECRET)
            .arg(refuse),
    );
}

/// Starts the long-running compactor serving metrics on `port`; its pid.
fn start_compactor(processes: &mut Processes, config: &str, port: u16) -> u32 {
    processes
        .spawn(
            tributary()
                .args(["compact", "--config", config])
                .env(SECRET_VARIABLE, SECRET)
                .env(
                    "TRIBUTARY_SERVICE__LISTEN_ADDR",
                    format!("127.0.0.1:{port}"),
                ),
        )
        .id()
}

/// Reads `argv[3]` messages of topic `argv[2]` from the brokers `argv[1]`
/// (waiting at most a minute) and prints them as a JSON list of `{key,
/// event}`.
const CONSUMER: &str = r#"
import json, sys, time
from confluent_kafka import Consumer
consumer = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "events-check", "auto.offset.reset": "earliest"})
consumer.subscribe([sys.argv[2]])
want, got, deadline = int(sys.argv[3]), [], time.time() + 60
while len(got) < want and time.time() < deadline:
    message = consumer.poll(1.0)
    if message is None or message.error():
        continue
    got.append({"key": message.key().decode(), "event": json.loads(message.value())})
consumer.close()
print(json.dumps(got))
"#;

/// A sink on a Kafka topic, starting at the oldest log entry: every data
/// commit arrives as one message keyed by the event's id, in order.
#[test]
fn events_reach_a_kafka_topic_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let table = dir.path().join("table");
    let broker = Broker::start(dir.path());
    broker.create_topic("tributary-events", 1);
    let config = write_config(
        dir.path(),
        &input,
        &table,
        &format!(
            "[compact]\ninterval_ms = 100\n\n\
             [events]\npoll_interval_ms = 100\n\n\
             [[events.sinks]]\nname = \"bus\"\nstart = \"earliest\"\n\
             [events.sinks.kafka]\nbrokers = \"{}\"\ntopic = \"tributary-events\"\n",
            broker.address()
        ),
    );
    let config = config.to_str().unwrap();
    for wave in 0..3u64 {
        let (lines, _) = envelopes(wave * 50, 50);
        std::fs::write(
            input.join(format!("{wave}.ndjson")),
            lines.join("\n") + "\n",
        )
        .unwrap();
        run_ok_env(&["ingest", "--config", config, "--once"]);
        run_ok_env(&["compact", "--config", config, "--once"]);
    }
    let expected = data_versions(&table);
    assert!(expected.len() >= 3, "{expected:?}");

    let port = free_port();
    let mut processes = Processes::default();
    start_compactor(&mut processes, config, port);
    wait_for(Duration::from_secs(60), "the sink to catch up", || {
        let (_, body) = http_get(port, "/metrics")?;
        (sample(&body, r#"tributary_compactor_events_pending{sink="bus"}"#)? == 0.0).then_some(())
    });
    let messages: Vec<serde_json::Value> = serde_json::from_str(&run_python(
        CONSUMER,
        &[
            &broker.address(),
            "tributary-events",
            &expected.len().to_string(),
        ],
    ))
    .unwrap();
    let versions: Vec<u64> = messages
        .iter()
        .map(|m| {
            assert_eq!(m["key"], m["event"]["id"]);
            m["event"]["version"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(versions, expected);
}

/// Runs tributary with the webhook secret set; fails unless it exits 0.
fn run_ok_env(args: &[&str]) -> std::process::Output {
    let output = tributary()
        .args(args)
        .env(SECRET_VARIABLE, SECRET)
        .output()
        .unwrap();
    crate::operations::assert_succeeded(&format!("tributary {}", args.join(" ")), &output);
    output
}

/// Prints `<version> <operation>` for each commit of table argv[1], read
/// with Python `deltalake`'s history.
const OPERATIONS: &str = r#"
import sys, deltalake
t = deltalake.DeltaTable(sys.argv[1], storage_options=storage_options(sys.argv[1]))
for commit in t.history():
    print(commit["version"], commit["operation"])
"#;

/// Prints the completeness state of table argv[1] (on the test S3 server),
/// or deletes it with argv[2] = `delete`.
const COMPLETENESS_STATE: &str = r#"
import boto3, os, sys
bucket, root = sys.argv[1][len("s3://"):].split("/", 1)
s3 = boto3.client("s3", endpoint_url=os.environ["TRIBUTARY_S3_ENDPOINT"])
key = f"{root}/_tributary/events/completeness.json"
if sys.argv[2:] == ["delete"]:
    s3.delete_object(Bucket=bucket, Key=key)
else:
    print(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())
"#;

/// Appends one envelope per `(id, event time)` to `file`.
fn append_rows(file: &Path, rows: &[(&str, &str)]) {
    use std::io::Write;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    for (id, time) in rows {
        let ms = chrono::DateTime::parse_from_rfc3339(time)
            .unwrap()
            .timestamp_millis();
        writeln!(
            out,
            r#"{{"host":"h","messages":[{{"id":"{id}","n":1,"ts":{ms}}}]}}"#
        )
        .unwrap();
    }
}

/// The `partition_complete` events the webhook accepted, in order.
fn completions(log: &Path) -> Vec<serde_json::Value> {
    accepted(log)
        .into_iter()
        .map(|r| r["event"].clone())
        .filter(|e| e["kind"] == "partition_complete")
        .collect()
}

#[test]
fn a_date_completes_when_the_last_of_two_streams_passes_it_once_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let table = s3::new_table("complete");
    let hook_port = free_port();
    let extra = format!(
        "[compact]\ninterval_ms = 100\n\n\
         [events]\npoll_interval_ms = 100\nmax_backoff_ms = 1000\n\n\
         [events.completeness]\nallowed_lateness_ms = 3600000\nidle_after_ms = 3600000\n\n\
         [[events.sinks]]\nname = \"pipelines\"\nstart = \"earliest\"\n\
         [events.sinks.webhook]\nurl = \"http://127.0.0.1:{hook_port}/events\"\n\
         secret_env = \"{SECRET_VARIABLE}\"\n"
    );
    // Two streams, each one growing file: a source partition each.
    let streams: Vec<(std::path::PathBuf, String)> = ["a", "b"]
        .iter()
        .map(|stream| {
            let home = dir.path().join(stream);
            let input = home.join("in");
            std::fs::create_dir_all(&input).unwrap();
            let config = write_config(&home, &input, &table, &extra);
            let text = std::fs::read_to_string(&config)
                .unwrap()
                .replace("stream = \"test\"", &format!("stream = \"{stream}\""));
            std::fs::write(&config, text).unwrap();
            (
                input.join("log.ndjson"),
                config.to_str().unwrap().to_string(),
            )
        })
        .collect();
    let ingest = |stream: usize, rows: &[(&str, &str)]| {
        append_rows(&streams[stream].0, rows);
        run_ok_env(&["ingest", "--config", &streams[stream].1, "--once"]);
    };
    let config = streams[0].1.as_str();
    let log = dir.path().join("webhook.jsonl");
    let refuse = dir.path().join("refuse");

    let mut processes = Processes::default();
    start_webhook(&mut processes, hook_port, &log, &refuse);
    let compactor_port = free_port();
    let compactor = start_compactor(&mut processes, config, compactor_port);
    let compacted = |rows: f64| {
        wait_for(Duration::from_secs(60), "rows in the table", || {
            let (_, body) = http_get(compactor_port, "/metrics")?;
            (sample(&body, "tributary_compactor_compacted_rows_total")? >= rows).then_some(())
        });
    };
    let commits = || {
        run_python(
            &format!("{S3_STORAGE_OPTIONS}\n{OPERATIONS}"),
            &[table.to_str().unwrap()],
        )
    };
    // The sink's cursor, and the completeness tracker's fold, past the
    // newest version (`events list`; the tracker's state).
    let all_delivered = |what: &str| {
        wait_for(Duration::from_secs(60), what, || {
            let listing = run_ok_env(&["events", "list", "--config", config]).stdout;
            let listing: serde_json::Value = serde_json::from_slice(&listing).ok()?;
            let latest = listing["latest_version"].as_u64()?;
            let state = run_python(COMPLETENESS_STATE, &[table.to_str().unwrap()]);
            let folded: serde_json::Value = serde_json::from_str(&state).ok()?;
            (listing["sinks"][0]["next_version"].as_u64()? == latest + 1
                && folded["next_version"].as_u64()? == latest + 1)
                .then_some(())
        });
    };

    // Both streams are in 2026-11-20; b only 30 minutes past its end,
    // less than the hour of lateness allowed.
    ingest(
        0,
        &[
            ("a1", "2026-11-20T10:00:00Z"),
            ("a2", "2026-11-20T23:00:00Z"),
        ],
    );
    ingest(
        1,
        &[
            ("b1", "2026-11-20T12:00:00Z"),
            ("b2", "2026-11-21T00:30:00Z"),
        ],
    );
    compacted(4.0);
    // a moves on; b has not: still nothing.
    ingest(0, &[("a3", "2026-11-21T05:00:00Z")]);
    compacted(5.0);
    all_delivered("the commits so far delivered");
    assert_eq!(completions(&log), Vec::<serde_json::Value>::new());

    // b reaches the end of the 20th plus the lateness: complete. The
    // webhook refuses, and the compactor is killed once the decision is
    // committed; its successor delivers it, once.
    std::fs::write(&refuse, "").unwrap();
    ingest(1, &[("b3", "2026-11-21T01:00:00Z")]);
    wait_for(Duration::from_secs(60), "the completeness commit", || {
        commits()
            .lines()
            .any(|l| l.ends_with("STREAMING UPDATE"))
            .then_some(())
    });
    processes.kill9(compactor);
    // As if it had died before writing its fold: its successor folds the
    // log again and finds the decision there.
    run_python(COMPLETENESS_STATE, &[table.to_str().unwrap(), "delete"]);
    std::fs::remove_file(&refuse).unwrap();
    start_compactor(&mut processes, config, compactor_port);
    all_delivered("the completion delivered");
    let completed = completions(&log);
    assert_eq!(completed.len(), 1, "{completed:?}");
    // (Read now: a history read while a commit is written may number it
    // wrongly.)
    let history = commits();
    let decided: Vec<&str> = history
        .lines()
        .filter(|l| l.ends_with("STREAMING UPDATE"))
        .collect();
    assert_eq!(decided.len(), 1, "decided once: {history}");
    let version: u64 = decided[0].split(' ').next().unwrap().parse().unwrap();
    let (_, metrics) = http_get(compactor_port, "/metrics").unwrap();
    assert_eq!(
        sample(
            &metrics,
            "tributary_compactor_complete_until_timestamp_seconds"
        ),
        Some(
            chrono::DateTime::parse_from_rfc3339("2026-11-21T00:00:00Z")
                .unwrap()
                .timestamp() as f64
        )
    );
    let event = &completed[0];
    assert_eq!(
        event["id"].as_str().unwrap(),
        format!("{}@{version}/date=2026-11-20", table.display()),
        "{event}\n{history}"
    );
    assert_eq!(
        event["completed"],
        serde_json::json!({
            "values": {"date": "2026-11-20"},
            "start": "2026-11-20T00:00:00Z",
            "end": "2026-11-21T00:00:00Z",
            "rows": 3,
            "correction": false,
        })
    );

    // A late row for the 20th: the date is announced again, as a correction.
    ingest(1, &[("b4", "2026-11-20T23:59:00Z")]);
    let correction = wait_for(Duration::from_secs(60), "the correction", || {
        completions(&log).get(1).cloned()
    });
    assert_eq!(correction["completed"]["values"]["date"], "2026-11-20");
    assert_eq!(correction["completed"]["correction"], true);
    assert_eq!(correction["completed"]["late_rows"], 1);
    assert_eq!(correction["completed"]["rows"], 4);
    // The 21st is not complete: b is at 01:00 on it.
    all_delivered("everything delivered");
    assert_eq!(completions(&log).len(), 2, "{:?}", completions(&log));
    // Every data commit was announced too (some twice, across the kill),
    // each request under its event's idempotency key.
    let mut announced: Vec<u64> = accepted(&log)
        .iter()
        .filter(|r| {
            assert_eq!(r["idempotency_key"], r["event"]["id"], "{r}");
            r["event"]["kind"] == "commit"
        })
        .map(|r| r["event"]["version"].as_u64().unwrap())
        .collect();
    announced.dedup();
    assert_eq!(announced, data_versions(&table));
}

/// Creates event bus argv[1] on moto with two rules on source `tributary`,
/// `detail-type` `commit` and `partition_complete`, each targeting an SQS
/// queue of its name; prints the queues' URLs as JSON.
const EVENT_BUS: &str = r#"
import boto3, json, os, sys
endpoint = os.environ["TRIBUTARY_S3_ENDPOINT"]
client = lambda service: boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")
events, sqs = client("events"), client("sqs")
events.create_event_bus(Name=sys.argv[1])
queues = {}
for kind in ("commit", "partition_complete"):
    url = sqs.create_queue(QueueName=f"{sys.argv[1]}-{kind}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = {"source": ["tributary"], "detail-type": [kind]}
    events.put_rule(Name=kind, EventBusName=sys.argv[1], EventPattern=json.dumps(pattern))
    events.put_targets(Rule=kind, EventBusName=sys.argv[1], Targets=[{"Id": kind, "Arn": arn}])
    queues[kind] = url
print(json.dumps(queues))
"#;

/// Receives up to argv[2] messages from SQS queue argv[1] (waiting at most
/// argv[3] seconds) and prints their bodies as a JSON list.
const RECEIVE: &str = r#"
import boto3, json, os, sys, time
sqs = boto3.client("sqs", endpoint_url=os.environ["TRIBUTARY_S3_ENDPOINT"], region_name="us-east-1")
want, got, deadline = int(sys.argv[2]), [], time.time() + float(sys.argv[3])
while len(got) < want and time.time() < deadline:
    for m in sqs.receive_message(QueueUrl=sys.argv[1], MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
        got.append(json.loads(m["Body"]))
        sqs.delete_message(QueueUrl=sys.argv[1], ReceiptHandle=m["ReceiptHandle"])
print(json.dumps(got))
"#;

/// A sink on an EventBridge bus (moto), signed through the AWS credential
/// chain: rules route commit events and partition-complete events (every
/// source idle after a second, so every day to yesterday completes) to two
/// SQS queues, as a rule starting a downstream job would.
#[test]
fn events_reach_an_eventbridge_bus_and_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let table = dir.path().join("table");
    let bus = format!("lake-{}", std::process::id());
    let queues: serde_json::Value = serde_json::from_str(&run_python(EVENT_BUS, &[&bus])).unwrap();
    let config = write_config(
        dir.path(),
        &input,
        &table,
        &format!(
            "[compact]\ninterval_ms = 100\n\n\
             [events]\npoll_interval_ms = 100\n\n\
             [events.completeness]\nallowed_lateness_ms = 0\nidle_after_ms = 1000\n\n\
             [[events.sinks]]\nname = \"bus\"\nstart = \"earliest\"\n\
             [events.sinks.eventbridge]\nbus = \"{bus}\"\nendpoint = \"{}\"\n",
            s3::endpoint()
        ),
    );
    let config = config.to_str().unwrap();
    // 100 records 1,000 s apart: two dates.
    let (lines, _) = envelopes(0, 100);
    std::fs::write(input.join("0.ndjson"), lines.join("\n") + "\n").unwrap();
    run_ok_env(&["ingest", "--config", config, "--once"]);
    run_ok_env(&["compact", "--config", config, "--once"]);
    let expected = data_versions(&table);

    let mut processes = Processes::default();
    start_compactor(&mut processes, config, free_port());
    let receive = |kind: &str, count: usize, seconds: u32| -> Vec<serde_json::Value> {
        let queue = queues[kind].as_str().unwrap();
        let args = [queue, &count.to_string(), &seconds.to_string()];
        serde_json::from_str(&run_python(RECEIVE, &args)).unwrap()
    };
    let commits = receive("commit", expected.len(), 60);
    let versions: Vec<u64> = commits
        .iter()
        .map(|m| {
            assert_eq!(m["source"], "tributary");
            assert_eq!(m["detail"]["kind"], "commit");
            m["detail"]["version"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(versions, expected);
    // Every source idle: every date from the first record's to yesterday
    // (UTC) is complete, with its rows (none after the records' dates).
    let mut expected_days: Vec<(String, u64)> = Vec::new();
    for i in 0..100u64 {
        let time =
            chrono::DateTime::from_timestamp_millis(1_795_478_400_000 + i as i64 * 1_000_000);
        let date = time.unwrap().date_naive().to_string();
        match expected_days.last_mut() {
            Some((last, rows)) if *last == date => *rows += 1,
            _ => expected_days.push((date, 1)),
        }
    }
    let yesterday = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    let mut next = expected_days
        .last()
        .unwrap()
        .0
        .parse::<chrono::NaiveDate>()
        .unwrap();
    while next < yesterday {
        next = next + chrono::Days::new(1);
        expected_days.push((next.to_string(), 0));
    }
    let completed = receive("partition_complete", expected_days.len(), 60);
    let days: Vec<(String, u64)> = completed
        .iter()
        .map(|m| {
            let completed = &m["detail"]["completed"];
            assert_eq!(completed["correction"], false);
            (
                completed["values"]["date"].as_str().unwrap().to_string(),
                completed["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(days, expected_days);
    // And nothing more: each date once.
    let more = receive("partition_complete", 1, 3);
    assert_eq!(more, Vec::<serde_json::Value>::new());
}
