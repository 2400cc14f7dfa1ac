//! Decode + flatten throughput of Glue-framed Avro envelopes (7–25 log
//! records each, the quickstart's sample stream, half by schema version 1 and
//! half by version 2), per core:
//!
//! * `tributary`: what ingest does per message — read the frame, find the
//!   prepared schema, decode with its compiled plan straight into flat rows,
//!   check the column types;
//! * `apache-avro Value (baseline)`: read the frame and decode with
//!   apache-avro's generic `from_avro_datum` into a `Value` tree — decoding
//!   only, no flattening.
//!
//! Run: `cargo bench -p tributary-ingest --bench decode`. Throughput is in
//! flattened log records per second on one thread (= per core).

// A benchmark's set-up either works or the benchmark has nothing to measure.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tributary_config::FlattenConfig;
use tributary_ingest::batch::{BatchSettings, ColumnTypes, Message, SourceItem, decode};
use tributary_ingest::flatten::Flattener;
use tributary_ingest::schemas::{Schemas, flatten_rules};
use tributary_lake::rowfile::Codec;
use tributary_schema_registry::apache_avro::{Schema, from_avro_datum};
use tributary_schema_registry::avro::Decoded;
use tributary_schema_registry::client::{Client, ClientOptions};
use tributary_schema_registry::schema::{Definition, SchemaType};
use tributary_schema_registry::wire::{self, SchemaRef};

// The quickstart's generator, included rather than copied (the binary crate
// has no library target); its unit test is compiled out here.
#[path = "../../tributary/src/sample.rs"]
#[allow(unused_imports, dead_code)]
mod sample;

/// Log records in the benchmark's stream.
const RECORDS: u64 = 200_000;

fn decode_flatten(c: &mut Criterion) {
    let v1 = Definition::parse(SchemaType::Avro, sample::AVRO_SCHEMA_V1).expect("v1 parses");
    let v2 = Definition::parse(SchemaType::Avro, &sample::avro_schema_v2()).expect("v2 parses");
    let ids = [v1.uuid("bench"), v2.uuid("bench")];
    let mut frames = Vec::new();
    let mut records = 0;
    let mut rng = sample::SplitMix::new(11);
    sample::avro_envelopes(
        &mut rng,
        RECORDS,
        0,
        |n| n % 2 == 1,
        |_, v2, avro| {
            frames.push(wire::glue_frame(ids[usize::from(v2)], avro, false));
            Ok(())
        },
    )
    .expect("in memory");
    let messages: Vec<Message> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| Message::new(i as u64, f.clone()))
        .collect();
    let items: Vec<SourceItem> = messages.iter().cloned().map(SourceItem::Message).collect();

    let flatten = FlattenConfig {
        explode: Some("messages".into()),
        key_field: Some("messages_id".into()),
        event_time_field: Some("messages_timestamp".into()),
        ..Default::default()
    };
    let client = Client::fixed(
        [(v1.clone(), ids[0]), (v2.clone(), ids[1])]
            .map(|(d, id)| (SchemaRef::Uuid(id), SchemaType::Avro, d.text().to_string())),
        ClientOptions {
            rules: flatten_rules(&flatten),
            reader: None,
            capacity: 16,
            unknown_ttl: std::time::Duration::from_secs(1),
            max_backoff: std::time::Duration::from_secs(1),
        },
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let schemas = runtime.block_on(Schemas::resolve(Some(&client), &items, |_, _, _| {}));
    let settings = BatchSettings {
        flattener: Flattener::new(&flatten),
        key_field: flatten.key_field.clone(),
        event_time_field: flatten.event_time_field.clone(),
        codec: Codec::Zstd,
        dead_letter_max_payload_bytes: 1024,
        max_message_bytes: 1 << 20,
    };
    let mut types = ColumnTypes::default();
    let mut decoded = Decoded::default();
    for message in &messages {
        records += decode(&settings, &schemas, &mut decoded, &mut types, message)
            .ok()
            .and_then(|rows| rows.into_rows().ok())
            .expect("sample frames decode")
            .len() as u64;
    }
    assert_eq!(records, RECORDS);

    let writers = [
        Schema::parse_str(sample::AVRO_SCHEMA_V1).expect("v1"),
        Schema::parse_str(&sample::avro_schema_v2()).expect("v2"),
    ];
    let mut group = c.benchmark_group("glue_avro_envelopes");
    group.throughput(Throughput::Elements(records));
    group.sample_size(10);
    group.bench_function("tributary decode+flatten", |b| {
        b.iter(|| {
            let mut rows = 0;
            for message in &messages {
                rows += decode(&settings, &schemas, &mut decoded, &mut types, message)
                    .ok()
                    .and_then(|rows| rows.into_rows().ok())
                    .map_or(0, |rows| rows.len());
            }
            black_box(rows)
        })
    });
    group.bench_function("apache-avro Value (baseline)", |b| {
        b.iter(|| {
            for frame in &frames {
                let parsed = wire::parse(frame, 1 << 20).expect("framed");
                let v2 = parsed.schema == Some(SchemaRef::Uuid(ids[1]));
                let value =
                    from_avro_datum(&writers[usize::from(v2)], &mut &parsed.payload[..], None);
                black_box(value.is_ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, decode_flatten);
criterion_main!(benches);
