//! Decode + flatten throughput per core of the quickstart's sample stream
//! (envelopes of 7–25 log records), into the Arrow batch that is staged:
//!
//! * `glue_avro_envelopes`: Glue-framed Avro, half by schema version 1 and
//!   half by version 2. `tributary` reads each frame, finds the prepared
//!   schema, decodes with its compiled plan and appends to the batch's Arrow
//!   builders, then finishes the batch (types, keys, dates); the baseline
//!   decodes each frame with apache-avro's generic `from_avro_datum` into a
//!   `Value` tree — decoding only, no flattening, no batch. For comparison,
//!   `arrow-avro Decoder` decodes the same records with arrow-avro's
//!   streaming decoder into nested Arrow arrays (resolved to version 2):
//!   decoding only, no flattening.
//! * `confluent_protobuf_envelopes`: the same envelopes as Protobuf
//!   ([`PROTO`], `trace_id` set where the Avro group writes version 2),
//!   Confluent-framed (magic byte, schema id, message index `[0]` as one
//!   `0` byte). `tributary` decodes each message with the file's compiled
//!   message plan into the builders and finishes the batch; the baseline
//!   decodes each message into a prost-reflect `DynamicMessage` — decoding
//!   only, no flattening, no batch.
//! * `json_lines`: the same records as JSON lines. `tributary` streams each
//!   line into the builders and finishes the batch; the baseline parses each
//!   line into a `serde_json::Value` — parsing only.
//!
//! Run: `cargo bench -p tributary-ingest --bench decode`. Throughput is in
//! flattened log records per second on one thread (= per core).

// A benchmark's set-up either works or the benchmark has nothing to measure.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value as Proto};
use tributary_config::FlattenConfig;
use tributary_decode::flatten::Flattener;
use tributary_decode::wire::{self, SchemaRef};
use tributary_ingest::batch::{BatchSettings, ColumnTypes, Message, SourceItem, build_batch};
use tributary_ingest::schemas::{Schemas, flatten_rules};
use tributary_lake::PartitionId;
use tributary_lake::rowfile::Codec;
use tributary_schema_registry::apache_avro::types::Value as Avro;
use tributary_schema_registry::apache_avro::{Schema, from_avro_datum};
use tributary_schema_registry::client::{Client, ClientOptions};
use tributary_schema_registry::schema::{Definition, Parsed, SchemaType};

// The quickstart's generator, included rather than copied (the binary crate
// has no library target); its unit test is compiled out here.
#[path = "../../tributary/src/sample.rs"]
#[allow(unused_imports, dead_code)]
mod sample;

/// Log records in the benchmark's stream.
const RECORDS: u64 = 200_000;

/// The sample envelope as Protobuf: the Avro schema's version 2 (its
/// `timestamp-millis` a `Timestamp`, its optional `trace_id` a proto3
/// `optional` field).
const PROTO: &str = r#"syntax = "proto3";
package tributary.sample;
import "google/protobuf/timestamp.proto";

message Envelope {
  string service = 1;
  string host = 2;
  string region = 3;
  string batch_id = 4;
  string sent_at = 5;
  repeated Message messages = 6;
}

message Message {
  string id = 1;
  google.protobuf.Timestamp timestamp = 2;
  string level = 3;
  string message = 4;
  User user = 5;
  Http http = 6;
  repeated string tags = 7;
  optional string trace_id = 8;
}

message User { string id = 1; string email = 2; }

message Http {
  string method = 1;
  string path = 2;
  int32 status = 3;
  double latency_ms = 4;
  int64 bytes = 5;
}
"#;

/// The Confluent schema id of [`PROTO`].
const PROTO_ID: u32 = 7;

fn settings(flatten: &FlattenConfig) -> BatchSettings {
    BatchSettings {
        flattener: Flattener::new(flatten),
        key_field: flatten.key_field.clone(),
        event_time_field: flatten.event_time_field.clone(),
        codec: Codec::Zstd,
        dead_letter_max_payload_bytes: 1024,
        max_message_bytes: 1 << 20,
        validate_json: false,
    }
}

/// The batch of `items`, checked to hold every record.
fn batch(settings: &BatchSettings, schemas: &Schemas, items: &[SourceItem]) -> usize {
    let partition = PartitionId::new("bench", "0");
    let mut types = ColumnTypes::default();
    let (batch, dead) =
        build_batch(&partition, settings, schemas, &mut types, items).expect("a batch");
    assert!(dead.is_empty(), "{:?}", dead.first());
    batch.num_rows()
}

/// `payloads` as source items at positions 0, 1, ...
fn source_items<P: AsRef<[u8]>>(payloads: &[P]) -> Vec<SourceItem> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| SourceItem::Message(Message::new(i as u64, p.as_ref().to_vec())))
        .collect()
}

/// A registry client that knows only `schemas`.
fn fixed_client(
    flatten: &FlattenConfig,
    schemas: impl IntoIterator<Item = (SchemaRef, SchemaType, String)>,
) -> Client {
    Client::fixed(
        schemas,
        ClientOptions {
            rules: flatten_rules(flatten),
            reader: None,
            capacity: 16,
            unknown_ttl: std::time::Duration::from_secs(1),
            max_backoff: std::time::Duration::from_secs(1),
        },
    )
}

/// A group of [`RECORDS`] records with our decode + flatten of `items`
/// already in it; the caller adds the baselines and finishes it.
fn decode_group<'c>(
    c: &'c mut Criterion,
    name: &str,
    settings: &BatchSettings,
    schemas: &Schemas,
    items: &[SourceItem],
) -> BenchmarkGroup<'c, WallTime> {
    assert_eq!(batch(settings, schemas, items) as u64, RECORDS);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(RECORDS));
    group.sample_size(10);
    group.bench_function("tributary decode+flatten into Arrow", |b| {
        b.iter(|| black_box(batch(settings, schemas, items)))
    });
    group
}

fn decode_flatten(c: &mut Criterion) {
    let flatten = FlattenConfig {
        explode: Some("messages".into()),
        key_field: Some("messages_id".into()),
        event_time_field: Some("messages_timestamp".into()),
        ..Default::default()
    };
    let settings = settings(&flatten);

    let v1 = Definition::parse(SchemaType::Avro, sample::AVRO_SCHEMA_V1).expect("v1 parses");
    let v2 = Definition::parse(SchemaType::Avro, &sample::avro_schema_v2()).expect("v2 parses");
    let ids = [v1.uuid("bench"), v2.uuid("bench")];
    let mut frames = Vec::new();
    sample::avro_envelopes(
        &mut sample::SplitMix::new(11),
        RECORDS,
        0,
        |n| n % 2 == 1,
        |_, v2, avro| {
            frames.push(wire::glue_frame(ids[usize::from(v2)], avro, false));
            Ok(())
        },
    )
    .expect("in memory");
    let items = source_items(&frames);
    let client = fixed_client(
        &flatten,
        [(v1.clone(), ids[0]), (v2.clone(), ids[1])]
            .map(|(d, id)| (SchemaRef::Uuid(id), SchemaType::Avro, d.text().to_string())),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let schemas = runtime.block_on(Schemas::resolve(Some(&client), &items, |_, _, _| {}));
    assert_eq!(arrow_avro_decode(&frames, &ids), frames.len());

    let writers = [
        Schema::parse_str(sample::AVRO_SCHEMA_V1).expect("v1"),
        Schema::parse_str(&sample::avro_schema_v2()).expect("v2"),
    ];
    let mut group = decode_group(c, "glue_avro_envelopes", &settings, &schemas, &items);
    group.bench_function("arrow-avro Decoder, nested, no flattening", |b| {
        b.iter(|| black_box(arrow_avro_decode(&frames, &ids)))
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

    // The same envelopes as Confluent-framed Protobuf, converted from the
    // Avro records.
    let proto = Definition::parse(SchemaType::Protobuf, PROTO).expect("the .proto parses");
    let Parsed::Protobuf(file) = proto.parsed() else {
        panic!("a Protobuf definition")
    };
    let envelope = file
        .parent_pool()
        .get_message_by_name("tributary.sample.Envelope")
        .expect("Envelope");
    let messages: Vec<Vec<u8>> = frames
        .iter()
        .map(|frame| {
            let parsed = wire::parse(frame, 1 << 20).expect("framed");
            let v2 = parsed.schema == Some(SchemaRef::Uuid(ids[1]));
            let value = from_avro_datum(&writers[usize::from(v2)], &mut &parsed.payload[..], None)
                .expect("an Avro record");
            let mut message = vec![0];
            message.extend(PROTO_ID.to_be_bytes());
            // The message index [0]: a count of 0 (the first message type).
            message.push(0);
            message.extend(to_proto(&envelope, &value).encode_to_vec());
            message
        })
        .collect();
    let items = source_items(&messages);
    let client = fixed_client(
        &flatten,
        [(
            SchemaRef::ConfluentId(PROTO_ID),
            SchemaType::Protobuf,
            proto.text().to_string(),
        )],
    );
    let schemas = runtime.block_on(Schemas::resolve(Some(&client), &items, |_, _, _| {}));
    let mut group = decode_group(
        c,
        "confluent_protobuf_envelopes",
        &settings,
        &schemas,
        &items,
    );
    group.bench_function("prost-reflect DynamicMessage decode (baseline)", |b| {
        b.iter(|| {
            for message in &messages {
                let parsed = wire::parse(message, 1 << 20).expect("framed");
                // After the one-byte message index.
                let decoded = DynamicMessage::decode(envelope.clone(), &parsed.payload[1..]);
                black_box(decoded.is_ok());
            }
        })
    });
    group.finish();

    let mut text = Vec::new();
    sample::write_envelopes(&mut text, &mut sample::SplitMix::new(11), RECORDS, 0)
        .expect("in memory");
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let items = source_items(&lines);
    let mut group = decode_group(c, "json_lines", &settings, &Schemas::default(), &items);
    group.bench_function("serde_json Value (baseline)", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(serde_json::from_slice::<serde_json::Value>(line).is_ok());
            }
        })
    });
    group.finish();
}

/// The Avro record `value` as a message of type `descriptor`, field by
/// field name: a `timestamp-millis` becomes a `Timestamp`, a union its
/// branch (null: unset).
fn to_proto(descriptor: &MessageDescriptor, value: &Avro) -> DynamicMessage {
    let Avro::Record(fields) = value else {
        panic!("a record: {value:?}")
    };
    let mut message = DynamicMessage::new(descriptor.clone());
    for (name, value) in fields {
        let field = descriptor.get_field_by_name(name).expect("a field by name");
        let value = match value {
            Avro::Union(_, inner) => inner,
            other => other,
        };
        let kind = field.kind();
        let scalar = |value: &Avro| match value {
            Avro::String(s) => Proto::String(s.clone()),
            Avro::Int(n) => Proto::I32(*n),
            Avro::Long(n) => Proto::I64(*n),
            Avro::Double(d) => Proto::F64(*d),
            Avro::Record(_) => {
                Proto::Message(to_proto(kind.as_message().expect("a message field"), value))
            }
            Avro::TimestampMillis(ms) => {
                let mut at = DynamicMessage::new(kind.as_message().expect("a Timestamp").clone());
                at.set_field_by_name("seconds", Proto::I64(ms.div_euclid(1000)));
                at.set_field_by_name(
                    "nanos",
                    Proto::I32((ms.rem_euclid(1000) * 1_000_000) as i32),
                );
                Proto::Message(at)
            }
            other => panic!("no Protobuf value for {other:?}"),
        };
        let value = match value {
            Avro::Null => continue,
            Avro::Array(items) => Proto::List(items.iter().map(scalar).collect()),
            value => scalar(value),
        };
        message.set_field(&field, value);
    }
    message
}

/// Decodes `frames` with arrow-avro's `Decoder`: each message's Glue header
/// replaced by the 5-byte id prefix the decoder requires (schema version 1
/// or 2), read against version 2. Returns the records (envelopes) decoded.
fn arrow_avro_decode(frames: &[Vec<u8>], ids: &[uuid::Uuid; 2]) -> usize {
    use arrow_avro::reader::ReaderBuilder;
    use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    for (id, text) in [
        (1, sample::AVRO_SCHEMA_V1.to_string()),
        (2, sample::avro_schema_v2()),
    ] {
        store
            .set(Fingerprint::Id(id), AvroSchema::new(text))
            .expect("schema stored");
    }
    let mut decoder = ReaderBuilder::new()
        .with_writer_schema_store(store)
        .with_reader_schema(AvroSchema::new(sample::avro_schema_v2()))
        .with_batch_size(8192)
        .build_decoder()
        .expect("a decoder");
    let mut records = 0;
    for frame in frames {
        let parsed = wire::parse(frame, 1 << 20).expect("framed");
        let id: u32 = if parsed.schema == Some(SchemaRef::Uuid(ids[1])) {
            2
        } else {
            1
        };
        let mut prefix = [0u8; 5];
        prefix[1..].copy_from_slice(&id.to_be_bytes());
        for part in [&prefix[..], &parsed.payload[..]] {
            let mut data = part;
            while !data.is_empty() {
                let read = decoder.decode(data).expect("decodes");
                data = &data[read..];
                if decoder.batch_is_full() {
                    records += decoder
                        .flush()
                        .expect("a batch")
                        .map_or(0, |b| b.num_rows());
                } else {
                    assert!(read > 0, "the decoder is stuck");
                }
            }
        }
    }
    records
        + decoder
            .flush()
            .expect("a batch")
            .map_or(0, |b| b.num_rows())
}

criterion_group!(benches, decode_flatten);
criterion_main!(benches);
