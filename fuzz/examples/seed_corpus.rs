//! Writes the seed corpus: a few valid messages in every framing for the
//! `frame` target, each case's records (bare and Glue-framed) for the
//! `avro` target, batches of JSON lines for the `json` target, and for the
//! `protobuf` target messages of each type encoded by prost-reflect, after
//! each case's message index. Run from `fuzz/` after changing the schemas
//! or framings:
//!
//!   cargo +nightly run --example seed_corpus
//!
//! The files are committed; `scripts/test.sh` only reads them.

use std::fs;
use std::path::Path;

use tributary_decode::apache_avro::{Schema, to_avro_datum};
use tributary_decode::prost_reflect::ReflectMessage;
use tributary_decode::prost_reflect::prost::Message as _;
use tributary_decode::protobuf::Indexing;
use tributary_decode::wire;
use tributary_fuzz::avro::{self, FRAMED};
use tributary_fuzz::protobuf;
use uuid::Uuid;

const ID: Uuid = Uuid::from_bytes([0x5e; 16]);

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in ["frame", "avro", "json", "protobuf"] {
        let dir = root.join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
    }
    let write =
        |target: &str, name: &str, bytes: &[u8]| fs::write(root.join(target).join(name), bytes);

    let record = &avro::cases()[0].sample;
    let mut confluent = vec![0x00, 0, 0, 0, 42];
    confluent.extend_from_slice(record);
    let mut guid = vec![0x01];
    guid.extend_from_slice(ID.as_bytes());
    guid.extend_from_slice(record);
    let mut single = vec![0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8];
    single.extend_from_slice(record);
    let frames: [(&str, Vec<u8>); 9] = [
        ("glue", wire::glue_frame(ID, record, false)),
        ("glue-zlib", wire::glue_frame(ID, record, true)),
        // Inflates to 128 KiB: past the target's cap.
        (
            "glue-zlib-bomb",
            wire::glue_frame(ID, &vec![0; 128 << 10], true),
        ),
        ("confluent", confluent),
        ("confluent-guid", guid),
        ("single-object", single),
        ("json", br#"{"service":"auth","messages":[]}"#.to_vec()),
        // Ends in a 36-byte text UUID (the header form, by length).
        ("text-uuid-header", format!("{{}}{ID}").into_bytes()),
        ("truncated-glue", vec![0x03, 0x05, 1, 2]),
    ];
    for (name, bytes) in &frames {
        write("frame", name, bytes)?;
    }

    let kitchen = Schema::parse_str(avro::KITCHEN).map_err(std::io::Error::other)?;
    for (i, case) in avro::cases().iter().enumerate() {
        let selector = i as u8;
        let mut records = vec![case.sample.clone()];
        if case.name.starts_with("kitchen") {
            for variant in 1..3 {
                let value = avro::kitchen_record(variant);
                records.push(to_avro_datum(&kitchen, value).map_err(std::io::Error::other)?);
            }
        }
        for (n, record) in records.iter().enumerate() {
            let mut bare = vec![selector];
            bare.extend_from_slice(record);
            write("avro", &format!("{}-{n}", case.name), &bare)?;
        }
        let mut framed = vec![selector | FRAMED];
        framed.extend(wire::glue_frame(ID, &case.sample, i % 2 == 1));
        write("avro", &format!("{}-glue", case.name), &framed)?;
    }

    // The `json` target's flattener explodes `messages`, keys rows by `id`,
    // takes the event time from `ts` and declares `n` a long.
    let batches: [(&str, &str); 5] = [
        (
            "envelopes",
            concat!(
                r#"{"service":"auth","ts":"2026-11-29T10:00:00Z","messages":[{"id":"a","n":1,"level":"info"},{"id":"b","n":2,"tags":["x","y"]}]}"#,
                "\n",
                r#"{"service":"api","ts":1764410400000,"messages":[],"http":{"status":200,"ms":1.5}}"#,
            ),
        ),
        (
            "collisions",
            concat!(
                r#"{"a_b":1,"a":{"b":2},"messages":[{"id":"c"}]}"#,
                "\n",
                r#"{"messages":[{"x":1},{"x":{"y":2},"x_y":3},{"x":3}]}"#,
                "\n",
                r#"{"k":1,"k":2}"#,
            ),
        ),
        (
            "widening",
            concat!(
                r#"{"m":1,"n":1,"messages":[{"ts":"2026-11-29"}]}"#,
                "\n",
                r#"{"m":1.5,"n":"one","messages":[{"n":2},{"n":2.5}]}"#,
                "\n",
                r#"{"m":"text","n":null,"messages":[{"ts":true},{"l":[1,null,2.0]}]}"#,
            ),
        ),
        (
            "reserved",
            r#"{"_key":"k","date":"d","_kafka_offset":1,"messages":[{"_position":2}]}"#,
        ),
        ("malformed", "{\"a\":\n[1,2]\n\"text\"\n{\"a\":\"\\ud800\"}"),
    ];
    for (name, lines) in batches {
        write("json", name, lines.as_bytes())?;
    }

    let compiled = protobuf::compiled();
    let sample = |what: &str, variant: u8| protobuf::sample(&compiled.file, what, variant);
    let types = [
        ("empty-event", sample("empty-event", 0)),
        ("tree", sample("tree", 2)),
        ("inner", sample("inner", 1)),
        ("deep", sample("deep", 0)),
        ("item", sample("item", 0)),
        ("counts-entry", sample("counts-entry", 0)),
    ];
    for (i, case) in compiled.cases.iter().enumerate() {
        // Each case gets every message type and three of six full events.
        let events = (0..6u8)
            .filter(|v| usize::from(*v) % 2 == i % 2)
            .map(|v| (format!("event-{v}"), sample("event", v)));
        let all = types
            .iter()
            .map(|(name, m)| (name.to_string(), m.clone()))
            .chain(events);
        for (name, message) in all {
            // Only Glue indexes map entries.
            if message.descriptor().is_map_entry() && case.indexing == Indexing::Confluent {
                continue;
            }
            let mut payload = vec![i as u8];
            payload.extend(compiled.index_prefix(case.indexing, &message.descriptor()));
            payload.extend(message.encode_to_vec());
            write("protobuf", &format!("{}-{name}", case.name), &payload)?;
        }
    }
    // Confluent's long form of the index [0]: a count of 1, then 0.
    let mut payload = vec![0, 2, 0];
    payload.extend(sample("event", 1).encode_to_vec());
    write("protobuf", "confluent-event-long-index", &payload)?;
    Ok(())
}
