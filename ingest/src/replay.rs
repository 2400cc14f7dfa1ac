//! Dead letters decoded again: the batch step of `tributary dead-letters
//! replay` (the protocol around it, which makes it exactly once, is in
//! `tributary_compactor::dead_letters::replay`).
//!
//! A stored dead letter goes through the same decoding step as a
//! message read from its source, with the current registry, flattening and
//! column types. Its rows keep what ingest would have given them, `_key`
//! included (the fallback key names the *original* partition and position),
//! except `_position`, which is the letter's place on the replay chain of
//! its source partition (positions the replay assigns, see the compactor's
//! module).

use bytes::Bytes;
use deltalake::arrow::array::{ArrayRef, Int64Array};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use std::sync::Arc;
use tributary_decode::builder::{BatchBuilder, Outcome};
use tributary_decode::{Decoder, Reason, Rejection};
use tributary_lake::PartitionId;
use tributary_lake::chain::{file_metadata, first_event_time_metadata};
use tributary_lake::dead_letter::StoredLetter;
use tributary_lake::rowfile;

use crate::batch::{BatchSettings, ColumnTypes, Message, SourceItem, decode_message};
use crate::schemas::Schemas;

/// What replaying some dead letters of one file gave.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// Rows decoded (in the row file).
    pub rows: u64,
    /// The row file to stage, when there are rows.
    pub row_file: Option<Bytes>,
    /// Replay-chain positions of the letters that became rows, all of them
    /// or some elements (the others are in `failed`).
    pub replayed: Vec<u64>,
    /// Letters that fail again (with their new reason and error, and the
    /// element, when only some elements of a message fail), by the
    /// replay-chain position of the letter they come from.
    pub failed: Vec<(u64, StoredLetter)>,
}

/// The message a stored letter holds, as its source gave it (without the
/// source's metadata columns, which dead letters do not keep).
pub fn message_of(letter: &StoredLetter) -> SourceItem {
    let mut message = Message::new(letter.position, letter.payload.clone());
    message.schema_header = letter.schema_header.clone();
    SourceItem::Message(message)
}

/// Decodes `letters` (each with its position on the replay chain `replay`,
/// within `range`; whole payloads only, see [`StoredLetter::is_whole`]) of
/// source partition `source` with `schemas` already resolved for
/// [`message_of`] each; the rows go to a row file of `replay` covering
/// `range` (`[first, last]`). A letter of one element of the explode path
/// gives that element's row only.
pub fn replay_letters(
    source: &PartitionId,
    replay: &PartitionId,
    range: (u64, u64),
    settings: &BatchSettings,
    schemas: &Schemas,
    types: &mut ColumnTypes,
    letters: &[(u64, StoredLetter)],
) -> tributary_lake::Result<Replayed> {
    let arrow = |source| tributary_lake::Error::RowFile {
        path: format!("<replay of {source} dead letters>"),
        source,
    };
    let (batch, replayed, failed) =
        build(source, settings, schemas, types, letters).map_err(arrow)?;
    let rows = batch.num_rows() as u64;
    let row_file =
        if rows == 0 {
            None
        } else {
            let metadata = file_metadata(replay, range.0, range.1).into_iter().chain([
                first_event_time_metadata(&batch, settings.event_time_field.as_deref()),
            ]);
            Some(rowfile::write(&batch, settings.codec, metadata)?)
        };
    Ok(Replayed {
        rows,
        row_file,
        replayed,
        failed,
    })
}

type Built = (RecordBatch, Vec<u64>, Vec<(u64, StoredLetter)>);

fn build(
    source: &PartitionId,
    settings: &BatchSettings,
    schemas: &Schemas,
    types: &mut ColumnTypes,
    letters: &[(u64, StoredLetter)],
) -> Result<Built, ArrowError> {
    let mut builder = BatchBuilder::new(
        settings.key_field.clone(),
        settings.event_time_field.clone(),
    )
    .with_capacity(letters.len());
    let mut decoder = Decoder::new(&settings.flattener, types);
    // Per row: the replay-chain position of the letter it comes from.
    let mut positions: Vec<i64> = Vec::new();
    let mut replayed = Vec::new();
    let mut failed = Vec::new();
    for (at, letter) in letters {
        let SourceItem::Message(message) = message_of(letter) else {
            continue;
        };
        let fail = |element: Option<u64>, (reason, error): Rejection| StoredLetter {
            element,
            reason: reason.as_str().to_string(),
            error,
            ..letter.clone()
        };
        let outcome = decode_message(&mut decoder, &mut builder, &message, settings, schemas);
        let mut failures = Vec::new();
        match (outcome, letter.element) {
            (Err(rejection) | Ok(Outcome::Rejected(rejection)), element) => {
                failures.push(fail(element, rejection));
            }
            (Ok(Outcome::Rows), _) => {}
            (Ok(Outcome::Elements(rejected)), None) => failures.extend(
                rejected
                    .into_iter()
                    .map(|(i, rejection)| fail(Some(u64::from(i)), rejection)),
            ),
            (Ok(Outcome::Elements(rejected)), Some(element)) => failures.extend(
                rejected
                    .into_iter()
                    .filter(|(i, _)| u64::from(*i) == element)
                    .map(|(i, rejection)| fail(Some(u64::from(i)), rejection)),
            ),
        }
        if let Some(element) = letter.element {
            match u32::try_from(element) {
                Ok(element) => builder.retain_element(element),
                Err(_) => builder.abort_message(),
            }
            if failures.is_empty() && builder.message_rows() == 0 {
                failures.push(fail(
                    letter.element,
                    (
                        Reason::Flatten,
                        format!(
                            "element {element} of the explode path is not in the message \
                             as the current flattening reads it"
                        ),
                    ),
                ));
            }
        }
        let rows = builder.message_rows();
        if rows > 0 {
            replayed.push(*at);
        }
        positions.extend(std::iter::repeat_n(*at as i64, rows));
        failed.extend(failures.into_iter().map(|f| (*at, f)));
    }
    drop(decoder);
    let batch = builder.finish(&source.to_string(), types)?;
    if batch.num_rows() != positions.len() {
        return Err(ArrowError::InvalidArgumentError(format!(
            "{} rows decoded but {} counted per dead letter",
            batch.num_rows(),
            positions.len()
        )));
    }
    // `_position` (column 1, see `BatchBuilder::finish`) becomes the
    // replay-chain position of each row's letter.
    let mut columns = batch.columns().to_vec();
    columns[1] = Arc::new(Int64Array::from(positions)) as ArrayRef;
    let batch = RecordBatch::try_new(batch.schema(), columns)?;
    Ok((batch, replayed, failed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::Int64Type;
    use tributary_config::FlattenConfig;
    use tributary_decode::flatten::Flattener;
    use tributary_lake::rowfile::{Codec, RowFile};

    fn settings(key_field: Option<&str>) -> BatchSettings {
        BatchSettings {
            flattener: Flattener::new(&FlattenConfig {
                explode: Some("messages".into()),
                ..Default::default()
            }),
            key_field: key_field.map(str::to_string),
            event_time_field: None,
            codec: Codec::Zstd,
            dead_letter_max_payload_bytes: 1 << 20,
            max_message_bytes: 1 << 20,
            validate_json: false,
        }
    }

    fn letter(position: u64, element: Option<u64>, payload: &[u8]) -> StoredLetter {
        StoredLetter {
            position,
            element,
            reason: "flatten".into(),
            error: "before".into(),
            payload: payload.to_vec(),
            payload_bytes: payload.len() as u64,
            schema_header: None,
            written_at_ms: None,
        }
    }

    const TWO: &[u8] = br#"{"messages":[{"id":"k0"},{"id":"k1"}]}"#;

    fn replay(
        key_field: Option<&str>,
        letters: &[(u64, StoredLetter)],
    ) -> (Replayed, Vec<(String, i64)>) {
        let (source, chain) = (PartitionId::new("s", "f"), PartitionId::new("r", "x"));
        let mut types = ColumnTypes::default();
        let replayed = replay_letters(
            &source,
            &chain,
            (0, 9),
            &settings(key_field),
            &Schemas::default(),
            &mut types,
            letters,
        )
        .unwrap();
        let rows = match &replayed.row_file {
            None => Vec::new(),
            Some(bytes) => {
                let file = RowFile::read(bytes, "t").unwrap();
                let keys = file.batch.column(0).as_string::<i32>().clone();
                let positions = file.batch.column(1).as_primitive::<Int64Type>().clone();
                (0..keys.len())
                    .map(|i| (keys.value(i).to_string(), positions.value(i)))
                    .collect()
            }
        };
        (replayed, rows)
    }

    #[test]
    fn rows_carry_the_letters_chain_position_and_the_original_key() {
        let letters = [(3, letter(40, None, TWO)), (5, letter(50, Some(1), TWO))];
        let (replayed, rows) = replay(Some("messages_id"), &letters);
        // The element letter gives its element's row only.
        let expected = [("k0", 3), ("k1", 3), ("k1", 5)];
        let expected: Vec<_> = expected.iter().map(|(k, p)| (k.to_string(), *p)).collect();
        assert_eq!(rows, expected);
        assert_eq!((replayed.rows, replayed.replayed), (3, vec![3, 5]));
        assert!(replayed.failed.is_empty());
        // Without a key field the key names the source partition and the
        // original position, as ingest would have.
        let (_, rows) = replay(None, &letters[1..]);
        assert_eq!(rows, vec![("s/f/50/1".to_string(), 5)]);
    }

    #[test]
    fn letters_that_fail_again_carry_their_new_reason() {
        let letters = [
            (0, letter(7, None, b"{not json")),
            (1, letter(8, Some(4), TWO)),
            (
                2,
                letter(
                    9,
                    None,
                    br#"{"messages":[{"id":"k2"},{"id":{"x":1},"id_x":1}]}"#,
                ),
            ),
        ];
        let (replayed, rows) = replay(Some("messages_id"), &letters);
        let failed: Vec<_> = replayed
            .failed
            .iter()
            .map(|(i, l)| (*i, l.position, l.element, l.reason.as_str()))
            .collect();
        assert_eq!(
            failed,
            vec![
                (0, 7, None, "malformed_json"),
                // An element the message does not have is not dropped.
                (1, 8, Some(4), "flatten"),
                // Of a whole message, only the element that fails.
                (2, 9, Some(1), "flatten"),
            ]
        );
        assert_eq!(rows, vec![("k2".to_string(), 2)]);
        assert_eq!(replayed.replayed, vec![2]);
        assert!(replayed.failed[0].1.payload == b"{not json");
    }
}
