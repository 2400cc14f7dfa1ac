//! Dead letters decoded again: the batch step of `tributary dead-letters
//! replay` (the protocol around it, which makes it exactly once, is in
//! `tributary_compactor::dead_letters::replay`).
//!
//! A stored dead letter goes through the same [`decode_message`] as a
//! message read from its source, with the current registry, flattening and
//! column types. Its rows keep what ingest would have given them, `_key`
//! included (the fallback key names the *original* partition and position),
//! except `_position`, which is the letter's index in its dead-letter file:
//! the replay is staged on a chain of its own whose positions are those
//! indexes.

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
    /// Indexes of the letters that became rows, all of them or some
    /// elements (the others are in `failed`).
    pub replayed: Vec<u64>,
    /// Letters that fail again (with their new reason and error, and the
    /// element, when only some elements of a message fail), by the index
    /// of the letter they come from.
    pub failed: Vec<(u64, StoredLetter)>,
}

/// The message a stored letter holds, as its source gave it (without the
/// source's metadata columns, which dead letters do not keep).
pub fn message_of(letter: &StoredLetter) -> SourceItem {
    let mut message = Message::new(letter.position, letter.payload.clone());
    message.schema_header = letter.schema_header.clone();
    SourceItem::Message(message)
}

/// Decodes `letters` (each with its index in its file; whole payloads only,
/// see [`StoredLetter::is_whole`]) of source partition `source` with
/// `schemas` already resolved for [`message_of`] each; the rows go to a row
/// file of `replay` covering `[0, last]`. A letter of one element of the
/// explode path gives that element's row only.
pub fn replay_letters(
    source: &PartitionId,
    replay: &PartitionId,
    last: u64,
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
    let row_file = if rows == 0 {
        None
    } else {
        let metadata =
            file_metadata(replay, 0, last)
                .into_iter()
                .chain([first_event_time_metadata(
                    &batch,
                    settings.event_time_field.as_deref(),
                )]);
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
    // Per row: the index of the letter it comes from.
    let mut indexes: Vec<i64> = Vec::new();
    let mut replayed = Vec::new();
    let mut failed = Vec::new();
    for (index, letter) in letters {
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
            replayed.push(*index);
        }
        indexes.extend(std::iter::repeat_n(*index as i64, rows));
        failed.extend(failures.into_iter().map(|f| (*index, f)));
    }
    drop(decoder);
    let batch = builder.finish(&source.to_string(), types)?;
    if batch.num_rows() != indexes.len() {
        return Err(ArrowError::InvalidArgumentError(format!(
            "{} rows decoded but {} counted per dead letter",
            batch.num_rows(),
            indexes.len()
        )));
    }
    // `_position` (column 1, see `BatchBuilder::finish`) becomes the index
    // of each row's letter: the replay chain's position.
    let mut columns = batch.columns().to_vec();
    columns[1] = Arc::new(Int64Array::from(indexes)) as ArrayRef;
    let batch = RecordBatch::try_new(batch.schema(), columns)?;
    Ok((batch, replayed, failed))
}
