//! Dead letters: messages that could not become rows, kept with their reason.
//!
//! A batch's dead letters are written to
//! `_tributary/dead-letter/<stream>/<partition>/<first>.avro` (an Avro file
//! with columns `_position`, `reason`, `error`, `payload`, `payload_bytes`)
//! *before* its row file is staged. The row file is the commit point: a crash
//! in between re-reads the batch and rewrites the dead-letter file, so every
//! rejected message is recorded at least once, identified by its position.
//!
//! The compactor writes the rows it cannot add to the table (a value whose
//! type the table column does not accept) to `<first>.compactor.avro` beside
//! them, with the row as JSON for payload.

use bytes::Bytes;

use crate::PartitionId;
use crate::chain::file_metadata;
use crate::rowfile::{Codec, Column, ColumnType, RowFileWriter, RowSchema, Value};

/// Why a message was rejected. The names are stable: they label metrics and
/// are stored in dead-letter files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Not valid JSON.
    MalformedJson,
    /// Not valid UTF-8.
    InvalidUtf8,
    /// Longer than `ingest.max_message_bytes`.
    Oversized,
    /// Valid JSON that cannot be flattened (not an object, column collision).
    Flatten,
    /// A value whose type the column does not accept.
    Schema,
    /// The source could not be read past this position (e.g. a truncated gzip file).
    Source,
    /// A file with no content.
    EmptyFile,
    /// A framing (AWS Glue, Confluent, Avro single-object) that cannot be
    /// read: truncated, unknown header or compression, corrupt or oversized zlib.
    Framing,
    /// A schema the registry confirmed it does not know, or none configured.
    UnknownSchema,
    /// A payload that does not decode with its schema.
    Decode,
    /// A Kafka message without a value (a compaction tombstone).
    NoValue,
}

impl Reason {
    /// Every reason, so metrics can start each at zero.
    pub const ALL: [Reason; 11] = [
        Reason::MalformedJson,
        Reason::InvalidUtf8,
        Reason::Oversized,
        Reason::Flatten,
        Reason::Schema,
        Reason::Source,
        Reason::EmptyFile,
        Reason::Framing,
        Reason::UnknownSchema,
        Reason::Decode,
        Reason::NoValue,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::Oversized => "oversized",
            Reason::Flatten => "flatten",
            Reason::Schema => "schema",
            Reason::Source => "source",
            Reason::EmptyFile => "empty_file",
            Reason::Framing => "framing",
            Reason::UnknownSchema => "unknown_schema",
            Reason::Decode => "decode",
            Reason::NoValue => "no_value",
        }
    }
}

/// One rejected message.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Its source position.
    pub position: u64,
    /// Why it was rejected.
    pub reason: Reason,
    /// The error in words, naming the bad value's place (never its content).
    pub error: String,
    /// The message bytes, at most `ingest.dead_letter_max_payload_bytes`.
    pub payload: Vec<u8>,
    /// The message's full length.
    pub payload_bytes: u64,
}

impl DeadLetter {
    /// A dead letter keeping at most `max_payload` bytes of `payload`.
    pub fn new(
        position: u64,
        reason: Reason,
        error: impl Into<String>,
        payload: &[u8],
        max_payload: u64,
    ) -> Self {
        let keep = payload
            .len()
            .min(usize::try_from(max_payload).unwrap_or(usize::MAX));
        Self {
            position,
            reason,
            error: error.into(),
            payload: payload[..keep].to_vec(),
            payload_bytes: payload.len() as u64,
        }
    }
}

/// The schema of dead-letter files.
pub fn dead_letter_schema() -> RowSchema {
    RowSchema {
        columns: vec![
            Column::required("_position", ColumnType::Long),
            Column::required("reason", ColumnType::String),
            Column::required("error", ColumnType::String),
            Column::required("payload", ColumnType::Bytes),
            Column::required("payload_bytes", ColumnType::Long),
        ],
    }
}

/// Encodes a batch's dead letters as one file.
pub fn encode(
    partition: &PartitionId,
    first: u64,
    last: u64,
    letters: &[DeadLetter],
    codec: Codec,
) -> crate::Result<Bytes> {
    let mut writer = RowFileWriter::new(
        dead_letter_schema(),
        codec,
        file_metadata(partition, first, last),
    );
    for letter in letters {
        writer.append(&[
            Value::Long(letter.position as i64),
            Value::String(letter.reason.as_str().to_string()),
            Value::String(letter.error.clone()),
            Value::Bytes(letter.payload.clone()),
            Value::Long(letter.payload_bytes as i64),
        ])?;
    }
    writer.finish()
}
