//! Routing Kafka topics to tables (`[ingest.routing]`) on a real broker
//! (tansu): one ingest process feeds a table per topic, or per value of a
//! field (`[[ingest.routing.fields]]`), each table with its own schema,
//! position chains and dead letters; `kill -9` and `--once` keep every table
//! exact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::compaction::assert_keys;
use crate::kafka::{Broker, SMALL_BATCHES, ingest_once, produce, signal, wait_produced};
use crate::operations::{Processes, wait_for};
use crate::{dead_letters, envelopes, run_ok, run_python, tributary};

mod fields;

/// One routed topic: its partitions, the table it goes to (for a field
/// route: its lead, the table of its dead letters) and the first record
/// number of its data (so that key sets are disjoint).
struct Topic {
    name: &'static str,
    partitions: u32,
    table: &'static str,
    first: u64,
}

const TOPICS: [Topic; 7] = [
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
    // `[[ingest.routing.fields]]` by the envelope's `host`: h0 → `web_a`,
    // h1 → `web_b`, other values → `web_rest` (the default table and lead).
    Topic {
        name: "web",
        partitions: 3,
        table: "web_rest",
        first: 500_000,
    },
    // By each record's `kind` (`messages_kind`): a → `api_a`, b → `api_b`
    // (also the dead-letter table and lead); a message with a record of
    // another kind is a dead letter `unrouted`.
    Topic {
        name: "api",
        partitions: 2,
        table: "api_b",
        first: 600_000,
    },
];

/// Where one message of a topic goes.
enum Routed {
    /// Each record's key with its table.
    Rows(Vec<(&'static str, String)>),
    /// The whole message: a dead letter of this table, with this reason.
    DeadLetter(&'static str, &'static str),
}

/// Where the `[ingest.routing]` of [`routed_config`] sends `line`, one
/// message of `topic`.
fn route(topic: &Topic, line: &str) -> Routed {
    if line == "null" {
        return Routed::DeadLetter(topic.table, "no_value");
    }
    let Ok(envelope) = serde_json::from_str::<serde_json::Value>(line) else {
        return Routed::DeadLetter(topic.table, "malformed_json");
    };
    let records = envelope["messages"].as_array().unwrap();
    let key = |r: &serde_json::Value| r["id"].as_str().unwrap().to_string();
    let rows = match topic.name {
        "web" => {
            let table = match envelope["host"].as_str().unwrap() {
                "h0" => "web_a",
                "h1" => "web_b",
                _ => "web_rest",
            };
            records.iter().map(|r| (table, key(r))).collect()
        }
        "api" => {
            let tables: Option<Vec<_>> = records
                .iter()
                .map(|r| match r["kind"].as_str().unwrap() {
                    "a" => Some(("api_a", key(r))),
                    "b" => Some(("api_b", key(r))),
                    _ => None,
                })
                .collect();
            match tables {
                Some(rows) => rows,
                None => return Routed::DeadLetter(topic.table, "unrouted"),
            }
        }
        _ => records.iter().map(|r| (topic.table, key(r))).collect(),
    };
    Routed::Rows(rows)
}

/// The routing configuration of the test: the `[ingest.routing]` above
/// (`web` and `api` routed by a field), and `payments` with its own
/// flattening, which declares `messages_amount` a double.
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
max_tables = 12

[[ingest.routing.fields]]
topic = "web"
field = "host"
values = {{ h0 = "web_a", h1 = "web_b" }}
default_table = "web_rest"

[[ingest.routing.fields]]
topic = "api"
field = "messages_kind"
values = {{ a = "api_a", b = "api_b" }}
unlisted = "dead-letter"
dead_letter_table = "api_b"

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

/// Compacts the table `name` under `lake` on its own and checks that it
/// holds exactly `keys`; returns its path.
fn compact_and_check(dir: &Path, lake: &Path, name: &str, keys: &[String]) -> PathBuf {
    let table = lake.join(name);
    let compact = table_config(dir, &table);
    run_ok(&["compact", "--config", compact.to_str().unwrap(), "--once"]);
    assert_keys(&table, keys);
    table
}

/// Test data of `topic`: envelopes whose records of `orders` and `payments`
/// have an integer `amount` (inferred as a long in `orders`, declared a
/// double in `payments`), whose records of host h0 in `web` have a `region`
/// (a column of `web_a` only), and whose records in `api` have a `kind`:
/// `x` (unlisted) for every twentieth, else `a` or `b`.
fn lines_of(topic: &Topic, records: u64) -> Vec<String> {
    let (lines, _) = envelopes(topic.first, records);
    let add = |line: String, field: &str| line.replace(r#""n":"#, &format!("{field},\"n\":"));
    match topic.name {
        "orders" | "payments" => lines.into_iter().map(|l| add(l, r#""amount":7"#)).collect(),
        "web" => lines
            .into_iter()
            .map(|l| match l.starts_with(r#"{"host":"h0""#) {
                true => add(l, r#""region":"eu""#),
                false => l,
            })
            .collect(),
        "api" => lines
            .into_iter()
            .map(|l| {
                let mut envelope: serde_json::Value = serde_json::from_str(&l).unwrap();
                for record in envelope["messages"].as_array_mut().unwrap() {
                    let n = record["n"].as_u64().unwrap();
                    let kind = match (n % 20, n % 2) {
                        (19, _) => "x",
                        (_, 0) => "a",
                        _ => "b",
                    };
                    record["kind"] = kind.into();
                }
                envelope.to_string()
            })
            .collect(),
        _ => lines,
    }
}

/// How many files are staged in the tables under `lake` (no compactor runs
/// before the end of the test, so the count only grows).
fn staged_files(lake: &Path) -> usize {
    let count = |dir: &Path| std::fs::read_dir(dir).map_or(0, Iterator::count);
    let Ok(tables) = std::fs::read_dir(lake) else {
        return 0;
    };
    tables
        .flatten()
        .filter_map(|table| std::fs::read_dir(table.path().join("_tributary/staging/test")).ok())
        .flat_map(|partitions| partitions.flatten())
        .map(|partition| count(&partition.path()))
        .sum()
}

/// Leaves partitions of a field-routed `topic` as a `kill -9` inside the
/// fan-out of their newest batch would: on partition 0 the batch is staged
/// in every table but the lead (`tables`' last), whose dead letters of it
/// are staged but not its row file; on partition 1 only in the first table.
/// Only where the batch's files have the same name (the same first
/// position) in every table: a kill may have left a partition otherwise
/// already. Returns how many partitions it changed.
fn cut_fan_out(lake: &Path, topic: &str, tables: &[&str]) -> usize {
    let dir = |kind: &str, table: &str, partition: u32| {
        lake.join(table)
            .join(format!("_tributary/{kind}/test/{topic}-{partition}"))
    };
    let newest = |table: &str, partition: u32| {
        let files = std::fs::read_dir(dir("staging", table, partition)).ok()?;
        files
            .flatten()
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".avro"))
            .max()
    };
    let mut cut = 0;
    for (partition, staged) in [(0, tables.len() - 1), (1, 1)] {
        let Some(name) = newest(tables[0], partition) else {
            continue;
        };
        if tables
            .iter()
            .any(|t| newest(t, partition).as_ref() != Some(&name))
        {
            continue;
        }
        let lead = tables.len() - 1;
        for (i, table) in tables.iter().enumerate().skip(staged) {
            std::fs::remove_file(dir("staging", table, partition).join(&name)).unwrap();
            // The lead's dead letters are staged just before its row file.
            let letters = dir("dead-letter", table, partition).join(&name);
            if i == lead && staged < lead && letters.exists() {
                std::fs::remove_file(letters).unwrap();
            }
        }
        cut += 1;
    }
    cut
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

/// Seven topics into ten tables from one ingest process: five topics each
/// into one table (three by `${topic}`, one by an explicit map, one by a
/// pattern) and two routed per row by a field: `web` into three tables
/// (unlisted values into its default table), `api` into two (a message with
/// an unlisted value is a dead letter `unrouted`). The process is killed
/// with `kill -9` three times while it stages, restarted, stopped, left as
/// if killed inside the fan-out of a batch, and then finished by an
/// `ingest --once` over records produced after it stopped. Each table, compacted on its own, holds exactly its records,
/// with its own schema, and exactly its dead letters: a poison message and
/// a tombstone are dead letters of their topic's table only (for `web`, of
/// its lead).
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

    // Each topic: about 4,000 records while ingest runs (about 30 s at 30
    // envelopes a second), then 500 more for the bounded run at the end.
    // Table → its keys, and → its dead letters' (reason, payload bytes).
    let mut keys: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut letters: BTreeMap<&str, Vec<(String, u64)>> = BTreeMap::new();
    let mut producers = Vec::new();
    let mut later = Vec::new();
    for topic in &TOPICS {
        let mut lines = lines_of(topic, 4_500);
        let split = lines.len() - 100;
        let tail = lines.split_off(split);
        if matches!(topic.name, "clicks" | "web") {
            // A poison message and a tombstone (no value), in the middle.
            lines.insert(lines.len() / 2, "not json".to_string());
            lines.insert(lines.len() / 3, "null".to_string());
        }
        for line in lines.iter().chain(&tail) {
            match route(topic, line) {
                Routed::Rows(rows) => {
                    for (table, key) in rows {
                        keys.entry(table).or_default().push(key);
                    }
                }
                Routed::DeadLetter(table, reason) => {
                    let bytes = if line == "null" { 0 } else { line.len() as u64 };
                    letters
                        .entry(table)
                        .or_default()
                        .push((reason.to_string(), bytes));
                }
            }
        }
        let first_tail = lines.len();
        producers.push(produce(
            dir.path(),
            &broker,
            topic.name,
            topic.partitions,
            &lines,
            30,
            0,
        ));
        later.push((topic, tail, first_tail));
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
    // Three times: an ingest process is killed with `kill -9` once it is
    // staging (a restart first waits out the killed member's 6 s session),
    // a little later each time, so that the kills land inside the fan-out
    // of a field route's batch to its tables.
    for delay in [50, 200, 350] {
        let before = staged_files(&lake);
        let pid = spawn(&mut processes);
        wait_for(Duration::from_secs(60), "ingest to stage a batch", || {
            (staged_files(&lake) > before).then_some(())
        });
        std::thread::sleep(Duration::from_millis(delay));
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

    // Crash points inside the fan-out of a batch, which a kill rarely hits
    // on a local disk: `web` staged in `web_a` and `web_b` but not yet in
    // its lead, and in `web_a` only; `api` in `api_a` only. The next run
    // must stage each of those batches in the tables that lack it.
    let cut = cut_fan_out(&lake, "web", &["web_a", "web_b", "web_rest"])
        + cut_fan_out(&lake, "api", &["api_a", "api_b"]);
    assert!(cut >= 3, "only {cut} partitions left mid fan-out");

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

    let tables: Vec<&str> = keys.keys().copied().collect();
    assert_eq!(tables.len(), 10, "{tables:?}");
    for table in &tables {
        let path = compact_and_check(dir.path(), &lake, table, &keys[table]);
        // A message's dead letter may be recorded twice when a crash came
        // between the lead's dead letters and its row file and the re-read
        // batched differently (`tributary_lake::chain::stage_dead_letters`);
        // both copies are the same dead letter.
        let mut by_position: BTreeMap<(String, u64), (String, u64)> = BTreeMap::new();
        for (partition, position, reason, _, bytes) in dead_letters(&path) {
            let letter = (reason, bytes);
            let first = by_position
                .entry((partition, position))
                .or_insert(letter.clone());
            assert_eq!(*first, letter, "{table}: two dead letters of one message");
        }
        let mut got: Vec<(String, u64)> = by_position.into_values().collect();
        got.sort();
        let mut expected = letters.remove(table).unwrap_or_default();
        expected.sort();
        assert_eq!(
            got, expected,
            "{table}: dead letters (reason, payload bytes)"
        );
    }
    assert!(letters.is_empty(), "dead letters of no table: {letters:?}");

    // Each table has its own schema: `amount` a long or a double where the
    // topic has it, `region` only in `web_a` (only h0's records have it,
    // though one decode feeds all of `web`'s tables), `kind` in `api`'s.
    for table in &tables {
        let schema = schema(&lake.join(table));
        let amount = schema.get("messages_amount").map(String::as_str);
        let expected = match *table {
            "payments" => Some("double"),
            "orders" => Some("int64"),
            _ => None,
        };
        assert_eq!(amount, expected, "{table}: {schema:?}");
        let has = |column: &str| schema.contains_key(column);
        assert_eq!(
            has("messages_region"),
            *table == "web_a",
            "{table}: {schema:?}"
        );
        assert_eq!(
            has("messages_kind"),
            table.starts_with("api_"),
            "{table}: {schema:?}"
        );
    }
    assert!(
        std::fs::read_dir(&lake).unwrap().count() == tables.len(),
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
        compact_and_check(dir.path(), &lake, table, keys);
    }
}
