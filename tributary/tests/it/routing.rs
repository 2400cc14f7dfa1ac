//! Routing Kafka topics to tables (`[ingest.routing]`) on a real broker
//! (tansu): one ingest process feeds a table per topic, each with its own
//! schema, position chains and dead letters; `kill -9` and `--once` keep
//! every table exact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::compaction::assert_keys;
use crate::kafka::{Broker, SMALL_BATCHES, ingest_once, produce, signal, wait_produced};
use crate::operations::{Processes, wait_for};
use crate::{dead_letters, envelopes, run_ok, run_python, tributary};

/// One routed topic: its partitions, the table it goes to and the first
/// record number of its data (so that key sets are disjoint).
struct Topic {
    name: &'static str,
    partitions: u32,
    table: &'static str,
    first: u64,
}

const TOPICS: [Topic; 5] = [
    // `${topic}`.
    Topic {
        name: "orders",
        partitions: 3,
        table: "orders",
        first: 0,
    },
    Topic {
        name: "clicks",
        partitions: 2,
        table: "clicks",
        first: 100_000,
    },
    Topic {
        name: "payments",
        partitions: 2,
        table: "payments",
        first: 200_000,
    },
    // `topics = { "legacy-audit" = "audit" }`.
    Topic {
        name: "legacy-audit",
        partitions: 1,
        table: "audit",
        first: 300_000,
    },
    // `patterns = [{ pattern = "^metrics\\.", table = "metrics" }]`.
    Topic {
        name: "metrics.cpu",
        partitions: 2,
        table: "metrics",
        first: 400_000,
    },
];

/// The routing configuration of the test: the `[ingest.routing]` above,
/// and `payments` with its own flattening, which declares
/// `messages_amount` a double.
fn routed_config(dir: &Path, broker: &Broker, lake: &Path, topics: &[&str]) -> PathBuf {
    let path = dir.join("routed.toml");
    let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    std::fs::write(
        &path,
        format!(
            r#"
[lake]
table_uri = "{lake}/${{table}}"

[tables.payments.flatten]
explode = "messages"
key_field = "messages_id"
event_time_field = "messages_ts"
infer_undeclared = true
[tables.payments.flatten.schema]
messages_amount = "double"

[ingest]
stream = "test"

[ingest.routing]
template = "${{topic}}"
topics = {{ "legacy-audit" = "audit" }}
patterns = [{{ pattern = "^metrics\\.", table = "metrics" }}]
max_tables = 10

[ingest.kafka]
brokers = "{brokers}"
group_id = "tributary-routing"
topics = [{topics}]

[ingest.kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
"topic.metadata.refresh.interval.ms" = "2000"

[ingest.batch]
{SMALL_BATCHES}

[ingest.flatten]
explode = "messages"
key_field = "messages_id"
event_time_field = "messages_ts"
"#,
            lake = lake.display(),
            brokers = broker.address(),
            topics = topics.join(", "),
        ),
    )
    .unwrap();
    path
}

/// A single-table configuration for compacting `table` on its own, so this
/// test does not depend on how `compact` serves a routed configuration.
fn table_config(dir: &Path, table: &Path) -> PathBuf {
    let name = table.file_name().unwrap().to_str().unwrap();
    let path = dir.join(format!("compact-{name}.toml"));
    std::fs::write(
        &path,
        format!("[lake]\ntable_uri = \"{}\"\n", table.display()),
    )
    .unwrap();
    path
}

/// Test data of `topic`: envelopes whose records of `orders` and `payments`
/// have an integer `amount` (inferred as a long in `orders`, declared a
/// double in `payments`).
fn lines_of(topic: &Topic, records: u64) -> (Vec<String>, Vec<String>) {
    let (lines, ids) = envelopes(topic.first, records);
    let lines = match topic.name {
        "orders" | "payments" => lines
            .into_iter()
            .map(|l| l.replace(r#""n":"#, r#""amount":7,"n":"#))
            .collect(),
        _ => lines,
    };
    (lines, ids)
}

/// Column name → Arrow type of the table at `table`, read with Python
/// `deltalake`.
fn schema(table: &Path) -> BTreeMap<String, String> {
    let out = run_python(
        "import sys, json, deltalake\n\
         t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table()\n\
         print(json.dumps({f.name: str(f.type) for f in t.schema}))",
        &[table.to_str().unwrap()],
    );
    serde_json::from_str(out.trim()).unwrap()
}

/// Five topics into five tables (three by `${topic}`, one by an explicit
/// map, one by a pattern) from one ingest process that is killed with
/// `kill -9` twice while the producers write, restarted, stopped, and then
/// finished by an `ingest --once` over records produced after it stopped.
/// Each table, compacted on its own, holds exactly its topic's records,
/// with its own schema; a poison message is a dead letter of its own table
/// only.
#[test]
fn kafka_topics_routed_to_tables_survive_kill_9_and_hold_exactly_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    for topic in &TOPICS {
        broker.create_topic(topic.name, topic.partitions);
    }
    let lake = dir.path().join("lake");
    let names: Vec<&str> = TOPICS.iter().map(|t| t.name).collect();
    let config = routed_config(dir.path(), &broker, &lake, &names);

    // Each topic: 4,000 records while ingest runs (about 13 s at 60
    // envelopes a second), then 500 more for the bounded run at the end.
    let mut expected: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut producers = Vec::new();
    let mut later = Vec::new();
    for topic in &TOPICS {
        let (mut lines, ids) = lines_of(topic, 4_500);
        let split = lines.len() - 100;
        let tail = lines.split_off(split);
        if topic.name == "clicks" {
            // A poison message: a dead letter of `clicks`, in the middle.
            lines.insert(lines.len() / 2, "not json".to_string());
        }
        let first_tail = lines.len();
        producers.push(produce(
            dir.path(),
            &broker,
            topic.name,
            topic.partitions,
            &lines,
            60,
            0,
        ));
        later.push((topic, tail, first_tail));
        expected.insert(topic.table, ids);
    }

    let mut processes = Processes::default();
    let spawn = |processes: &mut Processes| {
        processes
            .spawn(
                tributary()
                    .args(["ingest", "--config", config.to_str().unwrap()])
                    .stderr(Stdio::null()),
            )
            .id()
    };
    for _ in 0..2 {
        let pid = spawn(&mut processes);
        std::thread::sleep(Duration::from_secs(4));
        processes.kill9(pid);
    }
    // Restarted, it runs until the producers are done, then stops on
    // SIGTERM (staging what it has read).
    let mut last = tributary()
        .args(["ingest", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for producer in producers {
        wait_produced(producer);
    }
    std::thread::sleep(Duration::from_secs(3));
    signal(last.id(), "TERM");
    let status = wait_for(Duration::from_secs(60), "ingest to stop on SIGTERM", || {
        last.try_wait().unwrap()
    });
    assert!(status.success(), "ingest stopped by SIGTERM exits 0");

    for (topic, tail, first) in &later {
        wait_produced(produce(
            dir.path(),
            &broker,
            topic.name,
            topic.partitions,
            tail,
            0,
            *first,
        ));
    }
    ingest_once(&config);

    for topic in &TOPICS {
        let table = lake.join(topic.table);
        let compact = table_config(dir.path(), &table);
        run_ok(&["compact", "--config", compact.to_str().unwrap(), "--once"]);
        assert_keys(&table, &expected[topic.table]);
        let letters = dead_letters(&table);
        if topic.name == "clicks" {
            assert_eq!(letters.len(), 1, "{letters:?}");
            assert_eq!(letters[0].2, "malformed_json", "{letters:?}");
        } else {
            assert!(letters.is_empty(), "{}: {letters:?}", topic.table);
        }
    }
    // Each table has its own schema.
    let amount = |table: &str| schema(&lake.join(table)).get("messages_amount").cloned();
    assert_eq!(amount("payments").as_deref(), Some("double"));
    assert_eq!(amount("orders").as_deref(), Some("int64"));
    for table in ["clicks", "audit", "metrics"] {
        assert_eq!(amount(table), None, "{table} has no amount column");
    }
    assert!(
        std::fs::read_dir(&lake).unwrap().count() == TOPICS.len(),
        "one table per route, nothing else under the lake"
    );
}

/// A topic that matches no route stops ingest with an error naming the topic
/// and `ingest.routing`, at the start for a listed topic and at assignment
/// for one found by `topic_pattern`; its messages stay in Kafka, and once
/// a route covers it they all reach its table.
#[test]
fn kafka_topic_without_a_route_stops_ingest_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("r.a", 1);
    broker.create_topic("r.b", 1);
    let lake = dir.path().join("lake");
    let (a, a_keys) = envelopes(0, 200);
    let (b, b_keys) = envelopes(1_000, 200);
    wait_produced(produce(dir.path(), &broker, "r.a", 1, &a, 0, 0));
    wait_produced(produce(dir.path(), &broker, "r.b", 1, &b, 0, 0));

    let config = routed_config(dir.path(), &broker, &lake, &["r.a", "r.b"]);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("template = \"${topic}\"\n", "")
        .replace(
            r#"topics = { "legacy-audit" = "audit" }"#,
            r#"topics = { "r.a" = "a" }"#,
        );
    std::fs::write(&config, &text).unwrap();
    // Following (not `--once`, which could end before a pattern's second
    // topic is assigned): it must stop by itself, with an error.
    let failed = |config: &Path| {
        let mut child = tributary()
            .args(["ingest", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_for(Duration::from_secs(60), "ingest to stop", || {
            child.try_wait().unwrap()
        });
        assert!(!status.success(), "ingest exits with an error");
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        stderr
    };
    // A listed topic: before joining the group.
    let error = failed(&config);
    assert!(
        error.contains("topic `r.b`") && error.contains("ingest.routing"),
        "{error}"
    );
    // A topic found by a pattern: at its assignment.
    let pattern = text.replace(r#"topics = ["r.a", "r.b"]"#, r#"topic_pattern = "^r\\.""#);
    std::fs::write(&config, &pattern).unwrap();
    let error = failed(&config);
    assert!(
        error.contains("topic `r.b`") && error.contains("ingest.routing"),
        "{error}"
    );

    // Routed, every message of both topics reaches its table.
    std::fs::write(
        &config,
        pattern.replace(
            r#"topics = { "r.a" = "a" }"#,
            r#"topics = { "r.a" = "a", "r.b" = "b" }"#,
        ),
    )
    .unwrap();
    ingest_once(&config);
    for (table, keys) in [("a", &a_keys), ("b", &b_keys)] {
        let table = lake.join(table);
        let compact = table_config(dir.path(), &table);
        run_ok(&["compact", "--config", compact.to_str().unwrap(), "--once"]);
        assert_keys(&table, keys);
    }
}
