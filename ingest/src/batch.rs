//! Turning a batch of raw messages into one row file (and its dead letters).

use std::sync::Arc;

use bytes::Bytes;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use tributary_config::{FlattenConfig, IngestConfig};
use tributary_decode::builder::{BatchBuilder, Outcome};
pub use tributary_decode::columns::ColumnTypes;
use tributary_decode::flatten::Flattener;
use tributary_decode::protobuf::Indexing;
use tributary_decode::wire::Framing;
use tributary_decode::{Decoder, Format, Reason, Rejection, Val, wire};
use tributary_lake::PartitionId;
use tributary_lake::chain::{file_metadata, first_event_time_metadata};
use tributary_lake::dead_letter::{self, DeadLetter};
use tributary_lake::rowfile::{self, Codec};
use tributary_schema_registry::client::{Decoding, describe};

use crate::schemas::Schemas;

/// The metadata columns a source adds to each row of a message, and their
/// values.
pub type SourceColumns = Vec<(Arc<str>, Val<'static>)>;

/// A message read from a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its position in the source partition (a byte offset for files).
    pub position: u64,
    /// Its bytes.
    pub payload: Vec<u8>,
    /// Metadata columns the source adds to each of the message's rows
    /// (`_kafka_offset`, …; see [`ColumnTypes::fix_source_column`]). Empty
    /// for files.
    pub columns: SourceColumns,
    /// The value of a Kafka `__value_schema_id` header: it names the schema
    /// and the whole payload is the data.
    pub schema_header: Option<Vec<u8>>,
}

impl Message {
    /// A message without source columns or schema header.
    pub fn new(position: u64, payload: Vec<u8>) -> Self {
        Self {
            position,
            payload,
            columns: Vec::new(),
            schema_header: None,
        }
    }

    /// The message's framing: the schema it names (by header or by a prefix
    /// of the payload) and its data.
    pub fn frame(&self, max_payload_bytes: u64) -> Result<wire::Frame<'_>, wire::FrameError> {
        wire::parse_with_header(
            &self.payload,
            self.schema_header.as_deref(),
            max_payload_bytes,
        )
    }

    /// The schema the message names, if any and if its framing is readable.
    pub fn schema(&self) -> Option<wire::SchemaRef> {
        match &self.schema_header {
            None => wire::schema_of(&self.payload),
            Some(_) => self.frame(u64::MAX).ok()?.schema,
        }
    }
}

/// What a source partition yields: a message, or a position it could not
/// read a message from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceItem {
    /// A message to decode.
    Message(Message),
    /// A message (or the rest of the partition) that cannot be read.
    Bad(DeadLetter),
}

impl SourceItem {
    /// The dead letter of a message of `payload` bytes at `position` that is
    /// longer than `max_message_bytes`, keeping at most
    /// `dead_letter_max_payload_bytes` of it.
    pub fn oversized(
        position: u64,
        payload: &[u8],
        max_message_bytes: u64,
        dead_letter_max_payload_bytes: u64,
    ) -> Self {
        SourceItem::Bad(DeadLetter::new(
            position,
            Reason::Oversized,
            format!(
                "message of {} bytes exceeds ingest.max_message_bytes ({max_message_bytes})",
                payload.len()
            ),
            payload,
            dead_letter_max_payload_bytes,
        ))
    }

    /// The item's position.
    pub fn position(&self) -> u64 {
        match self {
            SourceItem::Message(m) => m.position,
            SourceItem::Bad(d) => d.position,
        }
    }
}

/// Settings a batch needs, prepared once per partition.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// The flattener.
    pub flattener: Flattener,
    /// Column holding the record key.
    pub key_field: Option<String>,
    /// Column holding the event time.
    pub event_time_field: Option<String>,
    /// Row-file codec.
    pub codec: Codec,
    /// Most payload bytes kept in a dead letter.
    pub dead_letter_max_payload_bytes: u64,
    /// Most bytes a compressed frame may inflate to.
    pub max_message_bytes: u64,
    /// Whether JSON payloads are checked against their JSON Schema.
    pub validate_json: bool,
}

impl BatchSettings {
    /// Settings from configuration.
    pub fn from_config(config: &IngestConfig) -> Self {
        Self::for_table(config, &config.flatten)
    }

    /// Settings from configuration, flattening by `flatten` (a routed
    /// table's own `[tables.NAME.flatten]`).
    pub fn for_table(config: &IngestConfig, flatten: &FlattenConfig) -> Self {
        Self {
            flattener: Flattener::new(flatten),
            key_field: flatten.key_field.clone(),
            event_time_field: flatten.event_time_field.clone(),
            codec: match config.compression {
                tributary_config::RowFileCompression::Zstd => Codec::Zstd,
                tributary_config::RowFileCompression::Deflate => Codec::Deflate,
            },
            dead_letter_max_payload_bytes: config.dead_letter_max_payload_bytes,
            max_message_bytes: config.max_message_bytes,
            validate_json: config.registry.as_ref().is_some_and(|r| r.validate_json),
        }
    }
}

/// A batch ready to stage.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// First position covered.
    pub first: u64,
    /// Last position covered.
    pub last: u64,
    /// Messages in the batch (good and bad).
    pub messages: u64,
    /// Message bytes in the batch.
    pub message_bytes: u64,
    /// Rows in the row file.
    pub rows: u64,
    /// The row file.
    pub row_file: Bytes,
    /// Dead letters, by reason.
    pub dead_letters: Vec<DeadLetter>,
    /// The dead-letter file, if there are dead letters.
    pub dead_letter_file: Option<Bytes>,
}

/// Decodes, flattens and encodes `items` (in position order, not empty) as one
/// batch of `partition`, with the schemas their frames name already in
/// `schemas`. Bad messages become dead letters; only a failure to encode (a
/// bug, not bad input) is an error.
pub fn encode_batch(
    partition: &PartitionId,
    settings: &BatchSettings,
    schemas: &Schemas,
    types: &mut ColumnTypes,
    items: Vec<SourceItem>,
) -> tributary_lake::Result<EncodedBatch> {
    encode_batch_with_source(partition, settings, schemas, types, items, Vec::new())
}

/// [`encode_batch`], with the source's own positions of the batch
/// (`source`: metadata keys starting with
/// [`META_SOURCE_PREFIX`](tributary_lake::chain::META_SOURCE_PREFIX)) in the
/// row file's header, for sources whose positions do not fit a `u64`.
pub fn encode_batch_with_source(
    partition: &PartitionId,
    settings: &BatchSettings,
    schemas: &Schemas,
    types: &mut ColumnTypes,
    items: Vec<SourceItem>,
    source: Vec<(String, String)>,
) -> tributary_lake::Result<EncodedBatch> {
    let first = items.first().map_or(0, SourceItem::position);
    let last = items.last().map_or(0, SourceItem::position);
    let (batch, dead_letters) = build_batch(partition, settings, schemas, types, &items)
        .map_err(|source| batch_error(partition, source))?;
    let part = Part {
        first,
        last,
        rows: batch,
        dead_letters,
    };
    encode_part(partition, settings, part, &items, source)
}

/// A batch of `partition` that could not be built (a bug, not bad input).
pub(crate) fn batch_error(partition: &PartitionId, source: ArrowError) -> tributary_lake::Error {
    tributary_lake::Error::RowFile {
        path: format!("<batch of {partition}>"),
        source,
    }
}

/// Rows and dead letters of a partition's messages `[first, last]`, to be
/// staged as one row file.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) rows: RecordBatch,
    pub(crate) dead_letters: Vec<DeadLetter>,
}

/// Encodes `part`, whose messages are `items`, as a row file (and a
/// dead-letter file when it has dead letters), with `source` in the row
/// file's header.
pub(crate) fn encode_part(
    partition: &PartitionId,
    settings: &BatchSettings,
    part: Part,
    items: &[SourceItem],
    source: Vec<(String, String)>,
) -> tributary_lake::Result<EncodedBatch> {
    let Part {
        first,
        last,
        rows,
        dead_letters,
    } = part;
    let message_bytes = items
        .iter()
        .map(|item| match item {
            SourceItem::Message(m) => m.payload.len() as u64,
            SourceItem::Bad(d) => d.payload_bytes,
        })
        .sum();
    let metadata = file_metadata(partition, first, last)
        .into_iter()
        .chain([first_event_time_metadata(
            &rows,
            settings.event_time_field.as_deref(),
        )])
        .map(|(k, v)| (k.to_string(), v))
        .chain(source);
    let row_file = rowfile::write(&rows, settings.codec, metadata)?;
    let dead_letter_file = if dead_letters.is_empty() {
        None
    } else {
        Some(dead_letter::encode(
            partition,
            first,
            last,
            &dead_letters,
            settings.codec,
        )?)
    };
    Ok(EncodedBatch {
        first,
        last,
        messages: items.len() as u64,
        message_bytes,
        rows: rows.num_rows() as u64,
        row_file,
        dead_letters,
        dead_letter_file,
    })
}

/// Decodes and flattens `items` into the Arrow batch that is staged, and the
/// dead letters of the messages (and explode-path elements) that could not
/// become rows.
pub fn build_batch(
    partition: &PartitionId,
    settings: &BatchSettings,
    schemas: &Schemas,
    types: &mut ColumnTypes,
    items: &[SourceItem],
) -> Result<(RecordBatch, Vec<DeadLetter>), ArrowError> {
    let mut builder = BatchBuilder::new(
        settings.key_field.clone(),
        settings.event_time_field.clone(),
    )
    .with_capacity(items.len());
    let mut dead_letters = Vec::new();
    let mut decoder = Decoder::new(&settings.flattener, types);
    for item in items {
        let message = match item {
            SourceItem::Bad(letter) => {
                dead_letters.push(letter.clone());
                continue;
            }
            SourceItem::Message(message) => message,
        };
        let letter = |(reason, error): Rejection| {
            DeadLetter::new(
                message.position,
                reason,
                error,
                &message.payload,
                settings.dead_letter_max_payload_bytes,
            )
            .with_schema_header(message.schema_header.clone())
        };
        match decode_message(&mut decoder, &mut builder, message, settings, schemas) {
            Err(rejection) => dead_letters.push(letter(rejection)),
            Ok(Outcome::Rows) => {}
            Ok(Outcome::Rejected(rejection)) => dead_letters.push(letter(rejection)),
            Ok(Outcome::Elements(rejected)) => dead_letters.extend(
                rejected
                    .into_iter()
                    .map(|(i, rejection)| letter(rejection).for_element(u64::from(i))),
            ),
        }
    }
    Ok((builder.finish(&partition.to_string(), types)?, dead_letters))
}

/// Decodes and flattens one message into `builder` (begun and ended here),
/// with its source columns. A message whose framing or data is bad is
/// aborted (none of its rows are in) and its rejection returned.
pub(crate) fn decode_message(
    decoder: &mut Decoder<'_>,
    builder: &mut BatchBuilder,
    message: &Message,
    settings: &BatchSettings,
    schemas: &Schemas,
) -> Result<Outcome, Rejection> {
    builder.begin_message(message.position);
    // source → decode: the framing names the schema, which says how
    // the data decodes into the builder.
    let decoded = message
        .frame(settings.max_message_bytes)
        .map_err(|e| (Reason::Framing, e.to_string()))
        .and_then(|frame| {
            let format = format(&frame, schemas, settings.validate_json)?;
            decoder
                .decode(format, &frame.payload, builder)
                .map_err(|(reason, error)| match (format, frame.schema) {
                    (
                        Format::Avro(_) | Format::Protobuf(..) | Format::ValidatedJson(_),
                        Some(r),
                    ) => (reason, format!("{}: {error}", describe(r))),
                    _ => (reason, error),
                })
        });
    if let Err(rejection) = decoded {
        builder.abort_message();
        return Err(rejection);
    }
    for (name, value) in &message.columns {
        builder.put_source(name, value.clone(), decoder.types());
    }
    Ok(builder.end_message())
}

/// The format of a message's data, as its framing and schema say (JSON
/// with a JSON Schema is validated when `validate_json` is on).
fn format<'s>(
    frame: &wire::Frame<'_>,
    schemas: &'s Schemas,
    validate_json: bool,
) -> Result<Format<'s>, Rejection> {
    let Some(reference) = frame.schema else {
        return Ok(Format::Json);
    };
    let prepared = schemas
        .get(reference)
        .map_err(|e| (Reason::UnknownSchema, e))?;
    match &prepared.decoding {
        Decoding::Avro(Err(e)) => Err((Reason::Flatten, format!("{}: {e}", describe(reference)))),
        Decoding::Avro(Ok(plan)) => Ok(Format::Avro(plan)),
        Decoding::Protobuf(plan) => match frame.framing {
            Framing::Glue => Ok(Format::Protobuf(plan, Indexing::Glue)),
            Framing::Confluent => Ok(Format::Protobuf(plan, Indexing::Confluent)),
            other => Err((
                Reason::Framing,
                format!(
                    "{other:?} framing cannot carry Protobuf ({})",
                    describe(reference)
                ),
            )),
        },
        Decoding::Json(Ok(validator)) if validate_json => Ok(Format::ValidatedJson(validator)),
        Decoding::Json(Err(e)) if validate_json => Err((
            Reason::Validation,
            format!("{} cannot validate payloads: {e}", describe(reference)),
        )),
        _ => Ok(Format::Json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::{Date32Type, TimestampMicrosecondType};
    use proptest::prelude::*;
    use tributary_config::FlattenConfig;
    use tributary_decode::wire::SchemaRef;
    use tributary_lake::chain::META_LAST_POSITION;
    use tributary_lake::rowfile::{ColumnType, RowFile};
    use tributary_schema_registry::apache_avro::types::Value as AvroValue;
    use tributary_schema_registry::apache_avro::{Schema as AvroSchema, to_avro_datum};
    use tributary_schema_registry::client::{Client, ClientOptions};
    use tributary_schema_registry::schema::SchemaType;

    fn settings() -> BatchSettings {
        BatchSettings {
            flattener: Flattener::new(&FlattenConfig {
                explode: Some("messages".into()),
                ..Default::default()
            }),
            key_field: Some("messages_id".into()),
            event_time_field: Some("messages_ts".into()),
            codec: Codec::Zstd,
            dead_letter_max_payload_bytes: 4,
            max_message_bytes: 1 << 20,
            validate_json: false,
        }
    }

    fn msg(position: u64, text: &[u8]) -> SourceItem {
        SourceItem::Message(Message::new(position, text.to_vec()))
    }

    #[test]
    fn batch_rows_types_and_dead_letters() {
        let p = PartitionId::new("s", "f");
        let mut types = ColumnTypes::default();
        let items = vec![
            msg(0, br#"{"host":"a","messages":[{"id":"k1","ts":"2026-11-22T10:00:00Z","n":1},{"ts":1700000000000,"n":"x"}]}"#),
            msg(10, b"{not json"),
            msg(20, b"\xff\xfe"),
            msg(30, br#"{"host":{"x":1},"host_x":2}"#),
        ];
        let batch = encode_batch(&p, &settings(), &Schemas::default(), &mut types, items).unwrap();
        assert_eq!(
            (batch.first, batch.last, batch.messages, batch.rows),
            (0, 30, 4, 2)
        );
        let reasons: Vec<_> = batch
            .dead_letters
            .iter()
            .map(|d| (d.position, d.reason))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (10, Reason::MalformedJson),
                (20, Reason::Framing),
                (30, Reason::Flatten)
            ]
        );
        assert_eq!(batch.dead_letters[0].payload, b"{not".to_vec());
        assert_eq!(batch.dead_letters[0].payload_bytes, 9);

        let file = RowFile::read(&batch.row_file, "t").unwrap();
        let schema = file.batch.schema();
        let names: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| {
                let ty = tributary_lake::columns::column_type(f.data_type()).unwrap();
                format!("{}:{ty}", f.name())
            })
            .collect();
        assert_eq!(
            names,
            vec![
                "_key:string",
                "_position:long",
                "date:date",
                "host:string",
                "messages_id:string",
                "messages_ts:timestamp",
                "messages_n:string"
            ],
            "columns in the order the message's text has them"
        );
        let text = |column: usize| -> Vec<Option<&str>> {
            file.batch
                .column(column)
                .as_string::<i32>()
                .iter()
                .collect()
        };
        assert_eq!(text(0), vec![Some("k1"), Some("s/f/0/1")]);
        // The event time, RFC 3339 text or epoch milliseconds, is a timestamp,
        // and its UTC date the partition.
        let days = file.batch.column(2).as_primitive::<Date32Type>();
        assert_eq!(days.values().to_vec(), vec![20_779, 19_675]);
        let times = file
            .batch
            .column(5)
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(
            times.values().to_vec(),
            vec![1_795_341_600_000_000, 1_700_000_000_000_000]
        );
        // `n` widened from long to string within the batch; the long is written as text.
        assert_eq!(text(6), vec![Some("1"), Some("x")]);
        assert_eq!(file.metadata_str(META_LAST_POSITION), Some("30"));
    }

    #[test]
    fn a_rejected_element_is_a_dead_letter_of_its_own_and_widens_nothing() {
        let p = PartitionId::new("s", "f");
        let mut types = ColumnTypes::default();
        types.fix_table_column("messages_n", ColumnType::Long);
        let items = vec![
            msg(
                0,
                br#"{"new":1,"messages":[{"id":"a","n":1},{"n":"x","only_bad":true},{"id":"c","a_b":1,"a":{"b":2}},{"id":"d"}]}"#,
            ),
            msg(5, br#"{"messages":[{"n":2.5}]}"#),
            msg(9, br#"{"messages":[{"id":"e","ts":"yesterday"}]}"#),
        ];
        let batch = encode_batch(&p, &settings(), &Schemas::default(), &mut types, items).unwrap();
        assert_eq!(batch.rows, 2, "elements a and d");
        let letters: Vec<_> = batch
            .dead_letters
            .iter()
            .map(|d| (d.position, d.element, d.reason))
            .collect();
        assert_eq!(
            letters,
            vec![
                (0, Some(1), Reason::Schema),
                (0, Some(2), Reason::Flatten),
                (5, Some(0), Reason::Schema),
                (9, Some(0), Reason::Schema),
            ]
        );
        assert!(
            batch.dead_letters[0]
                .error
                .contains("column `messages_n` is long (in the table); the value is a string")
        );
        assert!(
            batch.dead_letters[3]
                .error
                .contains("event time `messages_ts` is a string")
        );
        assert_eq!(types.get("new"), Some(&ColumnType::Long));
        assert_eq!(
            types.get("messages_only_bad"),
            None,
            "a rejected element must not widen types"
        );
        let file = RowFile::read(&batch.row_file, "t").unwrap();
        let keys = file.batch.column(0).as_string::<i32>();
        assert_eq!(keys.iter().collect::<Vec<_>>(), vec![Some("a"), Some("d")]);
    }

    /// The shape of a random Avro schema's field.
    #[derive(Debug, Clone)]
    enum Shape {
        Text,
        Long,
        Strings,
        Nullable(Box<Shape>),
        Record(Vec<(String, Shape)>),
    }

    fn arb_shape() -> impl Strategy<Value = Shape> {
        let leaf = prop_oneof![Just(Shape::Text), Just(Shape::Long), Just(Shape::Strings)];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                // Avro refuses a union directly in a union.
                inner.clone().prop_map(|s| match s {
                    Shape::Nullable(_) => s,
                    other => Shape::Nullable(Box::new(other)),
                }),
                fields(inner).prop_map(Shape::Record),
            ]
        })
    }

    /// Fields with distinct names from a small alphabet with `_`, so that
    /// nested paths can collide (`a_b` and `a` → `b`).
    fn fields(inner: impl Strategy<Value = Shape>) -> impl Strategy<Value = Vec<(String, Shape)>> {
        proptest::collection::btree_map("[ab_]{1,3}", inner, 1..4)
            .prop_map(|m| m.into_iter().collect())
    }

    /// The Avro schema of `shape` (records named `R<n>`).
    fn avro_type(shape: &Shape, records: &mut usize) -> serde_json::Value {
        use serde_json::json;
        match shape {
            Shape::Text => json!("string"),
            Shape::Long => json!("long"),
            Shape::Strings => json!({"type": "array", "items": "string"}),
            Shape::Nullable(inner) => json!(["null", avro_type(inner, records)]),
            Shape::Record(fields) => {
                *records += 1;
                let name = format!("R{records}");
                let fields: Vec<_> = fields
                    .iter()
                    .map(|(n, s)| json!({"name": n, "type": avro_type(s, records)}))
                    .collect();
                json!({"type": "record", "name": name, "fields": fields})
            }
        }
    }

    /// A value of `shape` whose text leaves are unique markers `<n>`;
    /// `null` picks the null branch of nullable fields.
    fn avro_value(shape: &Shape, next: &mut usize, null: bool) -> AvroValue {
        let mut marker = || {
            *next += 1;
            AvroValue::String(format!("<{next}>"))
        };
        match shape {
            Shape::Text => marker(),
            Shape::Long => AvroValue::Long(*next as i64),
            Shape::Strings => AvroValue::Array(vec![marker(), marker()]),
            Shape::Nullable(_) if null => AvroValue::Union(0, Box::new(AvroValue::Null)),
            Shape::Nullable(inner) => AvroValue::Union(1, Box::new(avro_value(inner, next, null))),
            Shape::Record(fields) => AvroValue::Record(
                fields
                    .iter()
                    .map(|(n, s)| (n.clone(), avro_value(s, next, null)))
                    .collect(),
            ),
        }
    }

    proptest! {
        /// Random Avro schemas and data, exploded on `messages`: no panic,
        /// and every text leaf lands in exactly one column of one row (an
        /// envelope leaf once in each row of its message), or its message or
        /// element is a dead letter.
        #[test]
        fn every_avro_leaf_lands_once_or_in_a_dead_letter(
            envelope in fields(arb_shape()),
            element in fields(arb_shape()),
            counts in proptest::collection::vec(0..4usize, 1..4),
            null in any::<bool>(),
        ) {
            let mut records = 0;
            let mut shape = envelope.clone();
            shape.push(("messages".into(), Shape::Text));
            let mut schema = avro_type(&Shape::Record(shape), &mut records);
            let items_type = avro_type(&Shape::Record(element.clone()), &mut records);
            let last = schema["fields"].as_array().map_or(0, Vec::len) - 1;
            schema["fields"][last]["type"] = serde_json::json!({"type": "array", "items": items_type});
            let text = schema.to_string();
            let Ok(parsed) = AvroSchema::parse_str(&text) else {
                // Names that Avro refuses: nothing to decode.
                return Ok(());
            };
            let id = uuid::Uuid::from_u128(7);
            let mut next = 0;
            // Leaves by message: (first, last) of the envelope's markers, and of each element's.
            let mut leaves = Vec::new();
            let mut items = Vec::new();
            for (position, count) in counts.iter().enumerate() {
                let first = next;
                let AvroValue::Record(mut fields) = avro_value(&Shape::Record(envelope.clone()), &mut next, null) else {
                    unreachable!()
                };
                let envelope_leaves = (first, next);
                let mut elements = Vec::new();
                let mut element_leaves = Vec::new();
                for _ in 0..*count {
                    let first = next;
                    elements.push(avro_value(&Shape::Record(element.clone()), &mut next, null));
                    element_leaves.push((first, next));
                }
                fields.push(("messages".into(), AvroValue::Array(elements)));
                let datum = to_avro_datum(&parsed, AvroValue::Record(fields)).unwrap();
                items.push(SourceItem::Message(Message::new(position as u64, wire::glue_frame(id, &datum, false))));
                leaves.push((envelope_leaves, element_leaves));
            }

            let config = FlattenConfig {
                explode: Some("messages".into()),
                ..Default::default()
            };
            let client = Client::fixed(
                [(SchemaRef::Uuid(id), SchemaType::Avro, text.clone())],
                ClientOptions {
                    rules: crate::schemas::flatten_rules(&config),
                    reader: None,
                    capacity: 4,
                    unknown_ttl: std::time::Duration::from_secs(1),
                    max_backoff: std::time::Duration::from_secs(1),
                },
            );
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let schemas = runtime.block_on(Schemas::resolve(Some(&client), &items, |_, _, _| {}));
            let mut settings = settings();
            settings.flattener = Flattener::new(&config);
            settings.key_field = None;
            settings.event_time_field = None;
            let p = PartitionId::new("s", "f");
            let mut types = ColumnTypes::default();
            let (batch, dead) = build_batch(&p, &settings, &schemas, &mut types, &items).unwrap();

            let texts: Vec<Vec<String>> = {
                let columns: Vec<_> = batch.columns().iter().skip(3)
                    .map(|c| tributary_lake::columns::json_text(c).unwrap()).collect();
                (0..batch.num_rows()).map(|row| columns.iter().map(|c| {
                    let c = c.as_string::<i32>();
                    if c.is_valid(row) { c.value(row).to_string() } else { String::new() }
                }).collect()).collect()
            };
            let positions = batch.column(1).as_primitive::<deltalake::arrow::datatypes::Int64Type>();
            for (message, (envelope_leaves, element_leaves)) in leaves.iter().enumerate() {
                let rows: Vec<usize> = (0..batch.num_rows())
                    .filter(|r| positions.value(*r) == message as i64).collect();
                let message_dead = dead.iter().any(|d| d.position == message as u64 && d.element.is_none());
                let count_in = |row: usize, leaf: usize| -> usize {
                    let marker = format!("<{leaf}>");
                    let hits: Vec<usize> = texts[row].iter().map(|t| t.matches(&marker).count()).collect();
                    assert!(hits.iter().filter(|h| **h > 0).count() <= 1, "marker {marker} in two columns");
                    hits.iter().sum()
                };
                if message_dead {
                    prop_assert!(rows.is_empty());
                    continue;
                }
                for leaf in envelope_leaves.0 + 1..=envelope_leaves.1 {
                    for row in &rows {
                        prop_assert_eq!(count_in(*row, leaf), 1, "envelope leaf {} in row {}", leaf, row);
                    }
                }
                for (i, (first, last)) in element_leaves.iter().enumerate() {
                    let element_dead = dead.iter().any(|d| d.position == message as u64 && d.element == Some(i as u64));
                    for leaf in first + 1..=*last {
                        let total: usize = rows.iter().map(|r| count_in(*r, leaf)).sum();
                        prop_assert_eq!(total, usize::from(!element_dead), "element {} leaf {}", i, leaf);
                    }
                }
            }
        }
    }
}
