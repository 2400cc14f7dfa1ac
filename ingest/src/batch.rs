//! Turning a batch of raw messages into one row file (and its dead letters).

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use rustc_hash::FxHashMap;
use tributary_config::{ColumnTypeName, IngestConfig};
use tributary_lake::PartitionId;
use tributary_lake::chain::file_metadata;
use tributary_lake::columns::arrow_type;
use tributary_lake::rowfile::{self, Codec, ColumnType};

use tributary_schema_registry::avro::{Decoded, Plan, Val};
use tributary_schema_registry::client::describe;
use tributary_schema_registry::wire;

use crate::flatten::{FlatRow, FlattenError, Flattener, MessageRows};
use crate::schemas::Schemas;
use crate::value::{Value, array_of};
use tributary_lake::dead_letter::{self, DeadLetter, Reason};

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
    pub columns: FlatRow,
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
            columns: FlatRow::new(),
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

/// Column types a stream's rows must respect, and the types inferred so far.
///
/// Types come from three places: the declared schema in configuration and the
/// table's existing columns are *fixed* (a value of another type is a dead
/// letter); columns seen only in messages are *inferred* and widen by
/// [`ColumnType::widen`].
#[derive(Debug, Clone, Default)]
pub struct ColumnTypes {
    fixed: FxHashMap<String, (ColumnType, &'static str)>,
    inferred: FxHashMap<String, ColumnType>,
    reject_unfixed: bool,
}

impl ColumnTypes {
    /// Types for `config`: its declared schema, and whether undeclared columns
    /// are rejected.
    pub fn from_config(config: &IngestConfig) -> Self {
        let fixed = config
            .flatten
            .schema
            .iter()
            .map(|(name, ty)| (name.clone(), (column_type(*ty), "declared")))
            .collect();
        Self {
            fixed,
            inferred: FxHashMap::default(),
            reject_unfixed: !config.flatten.schema.is_empty() && !config.flatten.infer_undeclared,
        }
    }

    /// Fixes the type of a column that exists in the table. Declared types win.
    pub fn fix_table_column(&mut self, name: &str, ty: ColumnType) {
        self.fixed
            .entry(name.to_string())
            .or_insert((ty, "in the table"));
    }

    /// Fixes the type of a metadata column the source adds to every row
    /// ([`Message::columns`]). Its name is reserved, so no declaration or
    /// payload field can give it another type.
    pub fn fix_source_column(&mut self, name: &str, ty: ColumnType) {
        self.fixed.insert(name.to_string(), (ty, "source metadata"));
    }

    /// The type a column has now, if any value or declaration gave it one.
    pub fn get(&self, name: &str) -> Option<&ColumnType> {
        self.fixed
            .get(name)
            .map(|(t, _)| t)
            .or_else(|| self.inferred.get(name))
    }

    /// Checks every value of a row, and only if all pass, records the
    /// widened types. Returns the reason otherwise.
    fn admit(&mut self, row: &FlatRow) -> Result<(), String> {
        let mut widened: Vec<(&str, ColumnType)> = Vec::new();
        for (name, value) in row {
            let name = &**name;
            // The common case, without allocating: the column already has
            // this value's type and nothing widened earlier in the row.
            let current = self
                .fixed
                .get(name)
                .map(|(t, _)| t)
                .or_else(|| self.inferred.get(name));
            if widened.is_empty() && current.is_some_and(|t| value.is_of(t)) {
                continue;
            }
            let Some(found) = value.column_type() else {
                continue;
            };
            if let Some((ty, origin)) = self.fixed.get(name) {
                if !ty.accepts(&found) {
                    return Err(format!(
                        "column `{name}` is {ty} ({origin}); the value is {}",
                        value.kind()
                    ));
                }
                continue;
            }
            if self.reject_unfixed {
                return Err(format!("column `{name}` is not in the declared schema"));
            }
            let current = widened
                .iter()
                .rev()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t)
                .or_else(|| self.inferred.get(name));
            let next = current.map_or_else(|| found.clone(), |t| t.widen(&found));
            if current != Some(&next) {
                widened.push((name, next));
            }
        }
        for (name, ty) in widened {
            self.inferred.insert(name.to_string(), ty);
        }
        Ok(())
    }
}

fn column_type(name: ColumnTypeName) -> ColumnType {
    let list = |t| ColumnType::List(Box::new(t));
    match name {
        ColumnTypeName::Boolean => ColumnType::Boolean,
        ColumnTypeName::Long => ColumnType::Long,
        ColumnTypeName::Double => ColumnType::Double,
        ColumnTypeName::String => ColumnType::String,
        ColumnTypeName::BooleanList => list(ColumnType::Boolean),
        ColumnTypeName::LongList => list(ColumnType::Long),
        ColumnTypeName::DoubleList => list(ColumnType::Double),
        ColumnTypeName::StringList => list(ColumnType::String),
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
}

impl BatchSettings {
    /// Settings from configuration.
    pub fn from_config(config: &IngestConfig) -> Self {
        Self {
            flattener: Flattener::new(&config.flatten),
            key_field: config.flatten.key_field.clone(),
            event_time_field: config.flatten.event_time_field.clone(),
            codec: match config.compression {
                tributary_config::RowFileCompression::Zstd => Codec::Zstd,
                tributary_config::RowFileCompression::Deflate => Codec::Deflate,
            },
            dead_letter_max_payload_bytes: config.dead_letter_max_payload_bytes,
            max_message_bytes: config.max_message_bytes,
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
    let mut builder = RowsBuilder::default();
    let mut dead_letters = Vec::new();
    let mut message_bytes = 0;
    let messages = items.len() as u64;
    let mut decoded = Decoded::default();
    for item in items {
        match item {
            SourceItem::Bad(letter) => {
                message_bytes += letter.payload_bytes;
                dead_letters.push(letter);
            }
            SourceItem::Message(message) => {
                message_bytes += message.payload.len() as u64;
                let letter = |(reason, error): Rejection| {
                    DeadLetter::new(
                        message.position,
                        reason,
                        error,
                        &message.payload,
                        settings.dead_letter_max_payload_bytes,
                    )
                };
                match decode(settings, schemas, &mut decoded, types, &message) {
                    Ok(MessageRows::Envelope(row)) => {
                        builder.push_row(partition, settings, message.position, 0, row);
                    }
                    Ok(MessageRows::Elements(elements)) => {
                        for (i, element) in elements.into_iter().enumerate() {
                            match element {
                                Ok(row) => {
                                    builder.push_row(partition, settings, message.position, i, row);
                                }
                                Err(rejection) => {
                                    dead_letters.push(letter(rejection).for_element(i as u64));
                                }
                            }
                        }
                    }
                    Err(rejection) => dead_letters.push(letter(rejection)),
                }
            }
        }
    }
    let rows = builder.rows.len() as u64;
    let row_file = builder.encode(partition, types, settings.codec, first, last, source)?;
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
        messages,
        message_bytes,
        rows,
        row_file,
        dead_letters,
        dead_letter_file,
    })
}

/// Why a message, or one element of its explode path, is a dead letter.
pub type Rejection = (Reason, String);

/// The rows of one message: its framing (if any) names the schema; plain
/// JSON and JSON Schema payloads go through the JSON flattener, Avro through
/// the schema's compiled plan. Each row ends with the message's source
/// columns, its event time is a timestamp, and its types are admitted by
/// `types`; a row that fails is rejected alone if it is an element of the
/// explode path, else the message is.
pub fn decode(
    settings: &BatchSettings,
    schemas: &Schemas,
    decoded: &mut Decoded,
    types: &mut ColumnTypes,
    message: &Message,
) -> Result<MessageRows<Rejection>, Rejection> {
    let frame = message
        .frame(settings.max_message_bytes)
        .map_err(|e| (Reason::Framing, e.to_string()))?;
    let mut rows = match frame.schema {
        None => flatten_json(settings, &frame.payload)?,
        Some(reference) => {
            let prepared = schemas
                .get(reference)
                .map_err(|e| (Reason::UnknownSchema, e))?;
            match &prepared.plan {
                None => flatten_json(settings, &frame.payload)?,
                Some(Err(e)) => {
                    return Err((Reason::Flatten, format!("{}: {e}", describe(reference))));
                }
                Some(Ok(plan)) => avro_rows(plan, decoded, &frame.payload)
                    .map_err(|e| (Reason::Decode, format!("{}: {e}", describe(reference))))?,
            }
        }
    };
    match &mut rows {
        MessageRows::Envelope(row) => finish_row(settings, types, message, row)?,
        MessageRows::Elements(elements) => {
            for element in elements {
                if let Ok(row) = element
                    && let Err(rejection) = finish_row(settings, types, message, row)
                {
                    *element = Err(rejection);
                }
            }
        }
    }
    Ok(rows)
}

/// Adds the message's source columns to `row`, makes its event time a
/// timestamp, and admits its types.
fn finish_row(
    settings: &BatchSettings,
    types: &mut ColumnTypes,
    message: &Message,
    row: &mut FlatRow,
) -> Result<(), Rejection> {
    row.extend(message.columns.iter().cloned());
    if let Some(field) = &settings.event_time_field
        && let Some((_, v)) = row.iter_mut().find(|(c, _)| **c == **field)
    {
        *v = event_time(std::mem::take(v)).map_err(|found| {
            let error = format!(
                "event time `{field}` is {found}, not an RFC 3339 time or \
                 milliseconds since the epoch"
            );
            (Reason::Schema, error)
        })?;
    }
    types.admit(row).map_err(|e| (Reason::Schema, e))
}

/// An event time as a timestamp: an RFC 3339 string, or milliseconds since
/// the Unix epoch as a number (a timestamp stays, a date is its midnight,
/// null stays null). Otherwise the kind of value it is.
fn event_time(value: Value) -> Result<Value, &'static str> {
    const MICROS_PER_DAY: i64 = 86_400_000_000;
    let micros = match &value {
        Value::Null | Value::Timestamp(_) => return Ok(value),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc).timestamp_micros()),
        Value::Long(ms) => ms.checked_mul(1_000),
        Value::Double(ms) if ms.is_finite() && ms.abs() < 9.2e15 => Some((ms * 1_000.0) as i64),
        Value::Date(days) => i64::from(*days).checked_mul(MICROS_PER_DAY),
        _ => None,
    };
    micros.map(Value::Timestamp).ok_or(match value {
        Value::String(_) => "a string",
        other => other.kind(),
    })
}

/// Decodes one Avro record with `plan` into flat rows: one per exploded
/// element (the envelope's values copied onto each), or one of envelope
/// values.
pub fn avro_rows<E>(
    plan: &Plan,
    decoded: &mut Decoded,
    payload: &[u8],
) -> Result<MessageRows<E>, tributary_schema_registry::avro::DecodeError> {
    plan.decode(payload, decoded)?;
    let columns = plan.columns();
    let named = |values: &mut Vec<(u32, Val)>, row: &mut FlatRow| {
        row.extend(
            values
                .drain(..)
                .map(|(c, v)| (columns[c as usize].clone(), value(v))),
        );
    };
    let elements = decoded.elements().len();
    let mut envelope = FlatRow::with_capacity(decoded.envelope.len());
    named(&mut decoded.envelope, &mut envelope);
    if elements == 0 {
        return Ok(MessageRows::Envelope(envelope));
    }
    let mut rows = Vec::with_capacity(elements);
    for element in decoded.elements_mut() {
        let mut row = FlatRow::with_capacity(envelope.len() + element.len());
        row.extend(envelope.iter().cloned());
        named(element, &mut row);
        rows.push(Ok(row));
    }
    Ok(MessageRows::Elements(rows))
}

fn value(v: Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Boolean(b),
        Val::Long(l) => Value::Long(l),
        Val::Double(d) => Value::Double(d),
        Val::Str(s) => Value::String(s),
        Val::Bytes(b) => Value::Bytes(b),
        Val::Timestamp(t) => Value::Timestamp(t),
        Val::Date(d) => Value::Date(d),
        Val::Decimal {
            unscaled,
            precision,
            scale,
        } => Value::Decimal {
            unscaled,
            precision,
            scale,
        },
        Val::List(items) => Value::List(items.into_iter().map(value).collect()),
    }
}

fn flatten_json(
    settings: &BatchSettings,
    payload: &[u8],
) -> Result<MessageRows<Rejection>, Rejection> {
    let text = std::str::from_utf8(payload).map_err(|e| {
        (
            Reason::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| (Reason::MalformedJson, e.to_string()))?;
    let rejection = |e: FlattenError| (Reason::Flatten, e.to_string());
    Ok(match settings.flattener.flatten(json).map_err(rejection)? {
        MessageRows::Envelope(row) => MessageRows::Envelope(row),
        MessageRows::Elements(elements) => {
            MessageRows::Elements(elements.into_iter().map(|e| e.map_err(rejection)).collect())
        }
    })
}

/// Number of columns every row starts with: `_key`, `_position`, `date`.
const SYSTEM_COLUMNS: usize = 3;

/// Rows of a batch, one value per batch column, in first-seen column order.
#[derive(Default)]
struct RowsBuilder {
    columns: Vec<Arc<str>>,
    index: FxHashMap<Arc<str>, usize>,
    rows: Vec<Vec<Value>>,
}

impl RowsBuilder {
    /// Appends the row of element `i` (0 for a message's only row) of the
    /// message at `position`.
    fn push_row(
        &mut self,
        partition: &PartitionId,
        settings: &BatchSettings,
        position: u64,
        i: usize,
        flat: FlatRow,
    ) {
        let field = |name: &Option<String>| {
            name.as_ref()
                .and_then(|n| flat.iter().find(|(c, _)| **c == **n))
                .map(|(_, v)| v)
        };
        let key = match field(&settings.key_field) {
            Some(Value::Null) | None => format!("{partition}/{position}/{i}"),
            Some(v) => v.to_json_text(),
        };
        let date = match field(&settings.event_time_field) {
            Some(Value::Timestamp(micros)) => {
                i32::try_from(micros.div_euclid(86_400_000_000)).map_or(Value::Null, Value::Date)
            }
            _ => Value::Null,
        };
        let mut row = vec![Value::Null; SYSTEM_COLUMNS + self.columns.len()];
        row[0] = Value::String(key);
        row[1] = Value::Long(position as i64);
        row[2] = date;
        for (name, value) in flat {
            let idx = match self.index.get(&*name) {
                Some(idx) => *idx,
                None => {
                    self.columns.push(name.clone());
                    self.index.insert(name, self.columns.len() - 1);
                    row.push(Value::Null);
                    self.columns.len() - 1
                }
            };
            row[SYSTEM_COLUMNS + idx] = value;
        }
        self.rows.push(row);
    }

    fn encode(
        self,
        partition: &PartitionId,
        types: &ColumnTypes,
        codec: Codec,
        first: u64,
        last: u64,
        source: Vec<(String, String)>,
    ) -> tributary_lake::Result<Bytes> {
        // Columns that were null in every row of the batch have no type yet; they
        // are left out (absent means null), so nulls never fix a column's type.
        let mut fields = vec![
            Field::new("_key", DataType::Utf8, false),
            Field::new("_position", DataType::Int64, false),
            Field::new("date", arrow_type(&ColumnType::Date), true),
        ];
        let mut kept = vec![
            (0, ColumnType::String),
            (1, ColumnType::Long),
            (2, ColumnType::Date),
        ];
        for (i, name) in self.columns.iter().enumerate() {
            if let Some(ty) = types.get(name) {
                fields.push(Field::new(name.as_ref(), arrow_type(ty), true));
                kept.push((SYSTEM_COLUMNS + i, ty.clone()));
            }
        }
        let columns = kept
            .iter()
            .map(|(i, ty)| {
                array_of(
                    self.rows.iter().map(|r| r.get(*i).unwrap_or(&Value::Null)),
                    ty,
                )
            })
            .collect();
        let batch =
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|source| {
                tributary_lake::Error::RowFile {
                    path: format!("<batch of {partition}>"),
                    source,
                }
            })?;
        let metadata = file_metadata(partition, first, last)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(source);
        rowfile::write(&batch, codec, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::AsArray;
    use deltalake::arrow::datatypes::{Date32Type, TimestampMicrosecondType};
    use tributary_config::FlattenConfig;
    use tributary_lake::chain::META_LAST_POSITION;
    use tributary_lake::rowfile::RowFile;

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
                "messages_n:string",
                "messages_ts:timestamp"
            ]
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
            .column(6)
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(
            times.values().to_vec(),
            vec![1_795_341_600_000_000, 1_700_000_000_000_000]
        );
        // `n` widened from long to string within the batch; the long is written as text.
        assert_eq!(text(5), vec![Some("1"), Some("x")]);
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
}
