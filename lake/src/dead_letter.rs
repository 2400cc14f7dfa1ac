//! Dead letters: messages that could not become rows, kept with their reason.
//!
//! A batch's dead letters are written to
//! `_tributary/dead-letter/<stream>/<partition>/<first>.avro` (an Avro file
//! with columns `_position`, `element`, `reason`, `error`, `payload`,
//! `payload_bytes`, `schema_header`, `written_at`; `element` is the index of the rejected
//! element of the explode path when only that element was rejected, else
//! null; `schema_header` is the Kafka `__value_schema_id` header that named
//! the payload's schema, if any, so that `tributary dead-letters replay` can
//! decode the payload as ingest would have; `written_at` is when ingest
//! first wrote the letter, in ms since the epoch, kept through every
//! rewrite of the file (forget, retention, a replay's remainder), which is
//! what retention ages letters by; files written before either column
//! existed lack it and read as `None`)
//! *before* its row file is staged. The row file is the commit point: a crash
//! in between re-reads the batch and rewrites the dead-letter file, so every
//! rejected message is recorded at least once, identified by its position.
//!
//! The compactor writes the rows it cannot add to the table (a value whose
//! type the table column does not accept) to `<first>.compactor.avro` beside
//! them, with the row as JSON for payload.

use std::sync::Arc;

use bytes::Bytes;
use deltalake::arrow::array::{Array, ArrayRef, BinaryArray, Int64Array, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;

use crate::PartitionId;
use crate::chain::file_metadata;
use crate::rowfile::{self, Codec};

pub use tributary_decode::Reason;

/// One rejected message.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Its source position.
    pub position: u64,
    /// The index of the element of the explode path that was rejected, when
    /// only that element of the message was (its siblings became rows).
    pub element: Option<u64>,
    /// Why it was rejected.
    pub reason: Reason,
    /// The error in words, naming the bad value's place (never its content).
    pub error: String,
    /// The message bytes, at most `ingest.dead_letter_max_payload_bytes`.
    pub payload: Vec<u8>,
    /// The message's full length.
    pub payload_bytes: u64,
    /// The Kafka `__value_schema_id` header that named the schema, if any.
    pub schema_header: Option<Vec<u8>>,
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
            element: None,
            reason,
            error: error.into(),
            payload: payload[..keep].to_vec(),
            payload_bytes: payload.len() as u64,
            schema_header: None,
        }
    }
}

impl DeadLetter {
    /// This dead letter as the rejection of element `index` of its message
    /// only.
    pub fn for_element(mut self, index: u64) -> Self {
        self.element = Some(index);
        self
    }

    /// This dead letter with the schema header its message carried.
    pub fn with_schema_header(mut self, header: Option<Vec<u8>>) -> Self {
        self.schema_header = header;
        self
    }
}

/// The schema of dead-letter files.
pub fn dead_letter_schema() -> Schema {
    Schema::new(vec![
        Field::new("_position", DataType::Int64, false),
        Field::new("element", DataType::Int64, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("payload", DataType::Binary, false),
        Field::new("payload_bytes", DataType::Int64, false),
        Field::new("schema_header", DataType::Binary, true),
        Field::new("written_at", DataType::Int64, true),
    ])
}

/// Encodes a batch's dead letters as one file.
pub fn encode(
    partition: &PartitionId,
    first: u64,
    last: u64,
    letters: &[DeadLetter],
    codec: Codec,
) -> crate::Result<Bytes> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let stored: Vec<StoredLetter> = letters
        .iter()
        .map(|letter| StoredLetter {
            written_at_ms: Some(now),
            ..StoredLetter::from(letter)
        })
        .collect();
    encode_stored(&stored, codec, file_metadata(partition, first, last))
}

/// Encodes dead letters read back (or converted from [`DeadLetter`]s) as
/// one file with header `metadata`.
pub fn encode_stored<K: Into<String>, V: Into<String>>(
    letters: &[StoredLetter],
    codec: Codec,
    metadata: impl IntoIterator<Item = (K, V)>,
) -> crate::Result<Bytes> {
    let longs = |f: fn(&StoredLetter) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            letters.iter().map(|l| f(l) as i64),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        longs(|l| l.position),
        Arc::new(Int64Array::from_iter(
            letters.iter().map(|l| l.element.map(|e| e as i64)),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|l| l.reason.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|l| l.error.as_str()),
        )),
        Arc::new(BinaryArray::from_iter_values(
            letters.iter().map(|l| l.payload.as_slice()),
        )),
        longs(|l| l.payload_bytes),
        Arc::new(BinaryArray::from_iter(
            letters.iter().map(|l| l.schema_header.as_deref()),
        )),
        Arc::new(Int64Array::from_iter(
            letters.iter().map(|l| l.written_at_ms),
        )),
    ];
    let batch =
        RecordBatch::try_new(Arc::new(dead_letter_schema()), columns).map_err(|source| {
            crate::Error::RowFile {
                path: "<dead letters>".into(),
                source,
            }
        })?;
    rowfile::write(&batch, codec, metadata)
}

/// A dead letter read back from its file.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLetter {
    /// Its source position.
    pub position: u64,
    /// The rejected element of the explode path, if only it was rejected.
    pub element: Option<u64>,
    /// Why (a [`Reason`] name).
    pub reason: String,
    /// The error in words.
    pub error: String,
    /// The kept payload bytes.
    pub payload: Vec<u8>,
    /// The message's full length.
    pub payload_bytes: u64,
    /// The Kafka `__value_schema_id` header that named the schema, if any.
    pub schema_header: Option<Vec<u8>>,
    /// When ingest first wrote it (ms since the epoch); `None` in files
    /// from before the column (their object's write time stands in).
    pub written_at_ms: Option<i64>,
}

impl StoredLetter {
    /// Whether the whole message was kept (it was not cut at
    /// `ingest.dead_letter_max_payload_bytes`, nor blanked by an erasure):
    /// only then can it be decoded again.
    pub fn is_whole(&self) -> bool {
        self.payload.len() as u64 == self.payload_bytes
    }
}

impl From<&DeadLetter> for StoredLetter {
    fn from(letter: &DeadLetter) -> Self {
        Self {
            position: letter.position,
            element: letter.element,
            reason: letter.reason.as_str().to_string(),
            error: letter.error.clone(),
            payload: letter.payload.clone(),
            payload_bytes: letter.payload_bytes,
            schema_header: letter.schema_header.clone(),
            written_at_ms: None,
        }
    }
}

/// Reads the dead letters of one file (ingest's or the compactor's); `name`
/// is used in errors.
pub fn read_dead_letters(bytes: &[u8], name: &str) -> crate::Result<Vec<StoredLetter>> {
    let file = rowfile::RowFile::read(bytes, name)?;
    let batch = &file.batch;
    let corrupt = |what: &str| crate::Error::CorruptRowFile {
        path: name.to_string(),
        reason: format!("dead-letter column `{what}` is missing or of another type"),
    };
    let column = |what: &str| batch.column_by_name(what).ok_or_else(|| corrupt(what));
    let longs = |what: &str| {
        column(what)?
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .ok_or_else(|| corrupt(what))
    };
    let strings = |what: &str| {
        column(what)?
            .as_any()
            .downcast_ref::<StringArray>()
            .cloned()
            .ok_or_else(|| corrupt(what))
    };
    let (positions, elements, sizes) = (
        longs("_position")?,
        longs("element")?,
        longs("payload_bytes")?,
    );
    let (reasons, errors) = (strings("reason")?, strings("error")?);
    let payloads = column("payload")?
        .as_any()
        .downcast_ref::<BinaryArray>()
        .cloned()
        .ok_or_else(|| corrupt("payload"))?;
    // Written before the column existed: no headers.
    let headers = match batch.column_by_name("schema_header") {
        None => None,
        Some(column) => Some(
            column
                .as_any()
                .downcast_ref::<BinaryArray>()
                .ok_or_else(|| corrupt("schema_header"))?,
        ),
    };
    let written = match batch.column_by_name("written_at") {
        None => None,
        Some(column) => Some(
            column
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| corrupt("written_at"))?,
        ),
    };
    Ok((0..batch.num_rows())
        .map(|i| StoredLetter {
            position: positions.value(i) as u64,
            element: (!elements.is_null(i)).then(|| elements.value(i) as u64),
            reason: reasons.value(i).to_string(),
            error: errors.value(i).to_string(),
            payload: payloads.value(i).to_vec(),
            payload_bytes: sizes.value(i) as u64,
            schema_header: headers
                .filter(|h| !h.is_null(i))
                .map(|h| h.value(i).to_vec()),
            written_at_ms: written.filter(|w| !w.is_null(i)).map(|w| w.value(i)),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_round_trip_with_their_schema_header() {
        let p = PartitionId::new("s", "p");
        let letters = vec![
            DeadLetter::new(3, Reason::UnknownSchema, "no such id", b"abcdef", 4)
                .with_schema_header(Some(b"\x01uuid".to_vec())),
            DeadLetter::new(5, Reason::Flatten, "bad", b"xy", 4).for_element(2),
        ];
        let file = encode(&p, 3, 5, &letters, Codec::Zstd).unwrap();
        let read = read_dead_letters(&file, "f").unwrap();
        let written_at_ms = read[0].written_at_ms;
        let expected: Vec<StoredLetter> = letters
            .iter()
            .map(|l| StoredLetter {
                written_at_ms,
                ..StoredLetter::from(l)
            })
            .collect();
        assert_eq!(read, expected);
        assert_eq!(read[0].schema_header.as_deref(), Some(&b"\x01uuid"[..]));
        assert!(
            read[0]
                .written_at_ms
                .is_some_and(|at| at > 1_700_000_000_000)
        );
        // Cut at 4 of 6 bytes: not whole, so not replayable.
        assert!(!read[0].is_whole() && read[1].is_whole());
    }

    #[test]
    fn files_from_before_the_schema_header_read_without_one() {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![7])),
            Arc::new(Int64Array::from(vec![None::<i64>])),
            Arc::new(StringArray::from(vec!["decode"])),
            Arc::new(StringArray::from(vec!["e"])),
            Arc::new(BinaryArray::from_iter_values([b"x"])),
            Arc::new(Int64Array::from(vec![1])),
        ];
        let old = Schema::new(dead_letter_schema().fields()[..6].to_vec());
        let batch = RecordBatch::try_new(Arc::new(old), columns).unwrap();
        let file = rowfile::write(&batch, Codec::Zstd, [("k", "v")]).unwrap();
        let read = read_dead_letters(&file, "old").unwrap();
        assert_eq!((read[0].position, read[0].schema_header.clone()), (7, None));
        assert_eq!(read[0].written_at_ms, None);
    }
}
