//! Field routing (`[[ingest.routing.fields]]`) beyond the kill test of
//! `super`: tombstones, a table joining a route, a new lead, a dead-letter
//! table of its own.

use std::collections::BTreeMap;

use super::{Routed, TOPICS, compact_and_check, lines_of, route, routed_config};
use crate::kafka::{Broker, ingest_once, produce, produce_keyed, wait_produced};
use crate::{dead_letters, envelopes};

/// A Kafka tombstone on a field-routed topic (`tombstones = "delete"`) has
/// no field to route by: it deletes its key from every table of the route,
/// whichever holds the key, in compacted rows and in rows staged in the same
/// batch as the tombstone. The tables' other rows stay.
#[test]
fn kafka_tombstones_on_a_field_routed_topic_delete_their_keys_in_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("web", 1);
    let lake = dir.path().join("lake");
    let config = routed_config(dir.path(), &broker, &lake, &["web"]);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        r#"topics = ["web"]"#,
        "topics = [\"web\"]\ntombstones = \"delete\"",
    );
    std::fs::write(&config, text).unwrap();
    // Record `r<i>` of host `h<i % 3>`: `web_a`, `web_b`, `web_rest`.
    let table = |i: u32| ["web_a", "web_b", "web_rest"][i as usize % 3];
    let record = |i: u32| {
        let value = format!(
            r#"{{"host":"h{}","messages":[{{"id":"r{i}","n":{i},"ts":1795478400000}}]}}"#,
            i % 3
        );
        (format!("r{i}"), Some(value))
    };
    let keyed = |pairs: &[(String, Option<String>)]| {
        let pairs: Vec<(&str, Option<String>)> =
            pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        produce_keyed(dir.path(), &broker, "web", &pairs);
        ingest_once(&config);
    };
    let check = |live: &[u32]| {
        for name in ["web_a", "web_b", "web_rest"] {
            let keys: Vec<String> = live
                .iter()
                .filter(|i| table(**i) == name)
                .map(|i| format!("r{i}"))
                .collect();
            let path = compact_and_check(dir.path(), &lake, name, &keys);
            assert!(dead_letters(&path).is_empty(), "{name}");
        }
    };
    keyed(&(0..60).map(record).collect::<Vec<_>>());
    check(&(0..60).collect::<Vec<_>>());

    // Tombstones of r0–r5 (compacted, two in each table), and r60–r62 with
    // tombstones of r60 and r61 in the same batch.
    let mut pairs: Vec<(String, Option<String>)> =
        (0..6).map(|i| (format!("r{i}"), None)).collect();
    pairs.extend((60..63).map(record));
    pairs.extend((60..62).map(|i| (format!("r{i}"), None)));
    keyed(&pairs);
    check(&(6..60).chain([62]).collect::<Vec<_>>());
}

/// A table added to a field route later (a new value) gets the topic's
/// records from each partition's resume point on, not its history: the
/// records of that value read before stay in the default table, which goes
/// on getting the values still unlisted.
#[test]
fn kafka_a_table_added_to_a_field_route_gets_records_from_then_on() {
    let both = r#"values = { h0 = "web_a", h1 = "web_b" }"#;
    web_in_two_runs(
        |config| config.replace(both, r#"values = { h0 = "web_a" }"#),
        str::to_string,
        |table, first_run| match (table, first_run) {
            ("web_b", true) => vec!["web_rest"],
            _ => vec![table],
        },
    );
}

/// A field route whose lead changes (a new default table) fills the new
/// lead from `ingest.kafka.start`: the partitions are read again from the
/// start, the new lead gets every unlisted record, and the tables that have
/// the old records skip them.
#[test]
fn kafka_a_new_lead_of_a_field_route_is_filled_from_the_start() {
    web_in_two_runs(
        str::to_string,
        |config| {
            config.replace(
                r#"default_table = "web_rest""#,
                r#"default_table = "web_other""#,
            )
        },
        |table, first_run| match (table, first_run) {
            // The old lead keeps what it got before the change.
            ("web_rest", true) => vec!["web_rest", "web_other"],
            ("web_rest", false) => vec!["web_other"],
            _ => vec![table],
        },
    );
}

/// Two `ingest --once` runs over the field-routed topic `web` (two
/// partitions, 300 records before each), with the configuration of
/// [`routed_config`] changed by `first` for the first and by `second` for
/// the second. Then each table, compacted on its own, holds exactly the
/// records `tables` puts in it: given the table the unchanged route picks
/// for a record and whether the first run read it, the tables that must
/// hold it.
fn web_in_two_runs(
    first: impl Fn(&str) -> String,
    second: impl Fn(&str) -> String,
    tables: impl Fn(&'static str, bool) -> Vec<&'static str>,
) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("web", 2);
    let lake = dir.path().join("lake");
    let config = routed_config(dir.path(), &broker, &lake, &["web"]);
    let text = std::fs::read_to_string(&config).unwrap();
    let web = TOPICS.iter().find(|t| t.name == "web").unwrap();
    let mut keys: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut produced = 0;
    let changes: [&dyn Fn(&str) -> String; 2] = [&first, &second];
    for (run, change) in changes.into_iter().enumerate() {
        std::fs::write(&config, change(&text)).unwrap();
        let (lines, _) = envelopes(run as u64 * 1_000, 300);
        wait_produced(produce(dir.path(), &broker, "web", 2, &lines, 0, produced));
        produced += lines.len();
        ingest_once(&config);
        for line in &lines {
            let Routed::Rows(rows) = route(web, line) else {
                panic!("{line} is routed")
            };
            for (table, key) in rows {
                for table in tables(table, run == 0) {
                    keys.entry(table).or_default().push(key.clone());
                }
            }
        }
    }
    for (table, keys) in &keys {
        compact_and_check(dir.path(), &lake, table, keys);
    }
}

/// A field route whose `dead_letter_table` is a table of its own (no value
/// names it): it gets a file without rows for every batch and the unrouted
/// messages as dead letters, and compacts into a table without rows.
#[test]
fn kafka_a_dead_letter_table_of_its_own_holds_only_the_unrouted_messages() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("api", 2);
    let lake = dir.path().join("lake");
    let config = routed_config(dir.path(), &broker, &lake, &["api"]);
    let text = std::fs::read_to_string(&config).unwrap();
    let lead = r#"dead_letter_table = "api_b""#;
    assert!(text.contains(lead));
    std::fs::write(
        &config,
        text.replace(lead, r#"dead_letter_table = "api_dead""#),
    )
    .unwrap();
    let api = TOPICS.iter().find(|t| t.name == "api").unwrap();
    let lines = lines_of(api, 600);
    wait_produced(produce(dir.path(), &broker, "api", 2, &lines, 0, 0));
    ingest_once(&config);

    let mut keys: BTreeMap<&str, Vec<String>> = BTreeMap::from([("api_dead", Vec::new())]);
    let mut letters = Vec::new();
    for line in &lines {
        match route(api, line) {
            Routed::Rows(rows) => {
                for (table, key) in rows {
                    keys.entry(table).or_default().push(key);
                }
            }
            Routed::DeadLetter(_, reason) => letters.push((reason.to_string(), line.len() as u64)),
        }
    }
    assert!(!letters.is_empty());
    for (table, keys) in &keys {
        let path = compact_and_check(dir.path(), &lake, table, keys);
        let mut got: Vec<(String, u64)> = dead_letters(&path)
            .into_iter()
            .map(|(_, _, reason, _, bytes)| (reason, bytes))
            .collect();
        got.sort();
        let mut expected = match *table {
            "api_dead" => letters.clone(),
            _ => Vec::new(),
        };
        expected.sort();
        assert_eq!(got, expected, "{table}");
    }
}
