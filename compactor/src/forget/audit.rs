//! `tributary forget --audit`: reads every object under the table and looks
//! for the identifiers of every completed request in the ledger
//! (`_tributary/forget/<id>.done.json`), reporting any residue with its
//! object and column. Its cost grows with the table; it is meant to run
//! rarely (weekly), as a check on everything else.
//!
//! The ledger holds SHA-256 hashes of the identifiers, never the
//! identifiers, so a substring search is impossible. Instead every string
//! value is hashed whole, and so is every span of it the free-text index
//! would extract ([`crate::text_index::for_each_span`], here without the
//! digit-or-`@` filter: runs of 1 to 6 letter-or-digit atoms joined by
//! `@ . _ - +`), and each digest is looked up in the ledger. So an
//! identifier is found as a whole value, or as a whole token of text not
//! glued to a letter or digit (`p3@ex.org` in `"mail to p3@ex.org."`), but
//! not when glued into a longer word (`xp3@ex.org`), nor an identifier that
//! spans several tokens (`John Smith` inside a sentence; found as a whole
//! value only), nor inside compressed payloads.
//!
//! Only what a request erased is residue: a subject's records created after
//! its request are kept, by forget and by the ledger at compaction. So an
//! identifier counts only where it is dated at or before the request's
//! time:
//!
//! - rows (table files, staged row files) by their event-time column
//!   (`ingest.flatten.event_time_field`); a row without one is counted;
//! - dead letters (not parsed, so without an event time) by `written_at`,
//!   when ingest first wrote them: a letter written after the request holds
//!   a record that arrived after it (a replay's letter of an erased record
//!   is missed here; dead letters are erased by forget and retention, not
//!   by the ledger);
//! - Delta log actions by the statistics of the file they add (the earliest
//!   event time in it): a file of rows all after the request may name the
//!   subject in its statistics;
//! - everything else (requests, leases, objects of unknown shape) has no
//!   time: every occurrence counts.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::{Array, ArrayRef, AsArray};
use deltalake::arrow::datatypes::{DataType, Int64Type};
use deltalake::arrow::record_batch::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use object_store::path::Path;
use rustc_hash::FxHashMap;
use serde::Serialize;
use tributary_lake::Lake;
use tributary_lake::rowfile::RowFile;

use super::requests::{Digest, completed_requests, event_times, identifier_digest, read_object};
use crate::error::{Error, Result};
use crate::files::TableFile;
use crate::partition::TablePartition;
use crate::progress::Progress;
use crate::text_index::for_each_span;

/// What an audit read and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    /// Completed requests in the ledger.
    pub ledger_requests: u64,
    /// Distinct subject hashes they hold.
    pub ledger_subjects: u64,
    /// Distinct record-key hashes they hold.
    pub ledger_keys: u64,
    /// Objects read.
    pub objects_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// String values and spans hashed.
    pub values_hashed: u64,
    /// Where an identifier of a completed request was found.
    pub residue: Vec<AuditResidue>,
    /// Whether no residue was found.
    pub clean: bool,
    /// How long the audit took.
    pub duration_ms: u64,
}

/// An identifier of a completed request found in an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AuditResidue {
    /// The object's path under the table.
    pub object: String,
    /// The column (empty for an object that is not rows).
    pub column: String,
    /// The request whose identifier it is.
    pub request_id: String,
    /// `subject` or `key`.
    pub kind: &'static str,
}

/// The ledger as digests: for each, the requests (id, kind, and time in
/// µs since the epoch: what is dated later is not residue).
type Ledger = FxHashMap<Digest, Vec<(String, &'static str, i64)>>;

/// Reads every object under the table and reports where an identifier of a
/// completed request is left in something dated at or before the request
/// (see the module docs); rows are dated by their `event_time` column.
pub async fn audit(lake: &Lake, event_time: Option<&str>) -> Result<AuditReport> {
    let started = Instant::now();
    let mut report = AuditReport::default();
    let mut ledger = Ledger::default();
    for request in completed_requests(lake).await? {
        report.ledger_requests += 1;
        for (hashes, kind) in [
            (&request.subject_hashes, "subject"),
            (&request.key_hashes, "key"),
        ] {
            for hash in hashes {
                let digest = request.digest(hash)?;
                ledger.entry(digest).or_default().push((
                    request.id.clone(),
                    kind,
                    request.created_at_ms.saturating_mul(1000),
                ));
            }
        }
    }
    report.ledger_subjects = ledger
        .values()
        .filter(|r| r.iter().any(|(_, k, _)| *k == "subject"))
        .count() as u64;
    report.ledger_keys = ledger
        .values()
        .filter(|r| r.iter().any(|(_, k, _)| *k == "key"))
        .count() as u64;
    if ledger.is_empty() {
        report.clean = true;
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }

    let objects: Vec<ObjectMeta> = lake
        .store()
        .list(None)
        .try_collect()
        .await
        .map_err(|e| tributary_lake::Error::store(&Path::from(""), e))?;
    let ledger = Arc::new(ledger);
    let event_time: Option<Arc<str>> = event_time.map(Arc::from);
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
    let mut progress = Progress::new("objects audited", objects.len() as u64);
    let mut audited = futures::stream::iter(objects)
        .map(|meta| {
            let (lake, ledger, event_time) = (lake.clone(), ledger.clone(), event_time.clone());
            tokio::spawn(async move {
                let found = audit_object(&lake, &meta, ledger, event_time.as_deref()).await?;
                Ok::<_, Error>(found.map(|found| (meta, found)))
            })
        })
        .buffer_unordered(parallelism);
    let mut residue = BTreeSet::new();
    while let Some(result) = audited.next().await {
        progress.step();
        let Some((meta, found)) = result.map_err(Error::Worker)?? else {
            continue;
        };
        report.objects_read += 1;
        report.bytes_read += meta.size;
        report.values_hashed += found.hashed;
        residue.extend(
            found
                .hits
                .into_iter()
                .map(|(column, request_id, kind)| AuditResidue {
                    object: meta.location.to_string(),
                    column,
                    request_id,
                    kind,
                }),
        );
    }
    report.residue = residue.into_iter().collect();
    report.clean = report.residue.is_empty();
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// What one object holds.
#[derive(Default)]
struct Found {
    ledger: Arc<Ledger>,
    hashed: u64,
    /// (column, request id, kind).
    hits: BTreeSet<(String, String, &'static str)>,
}

impl Found {
    /// Hashes `text` whole and each of its spans, in `column`, of a value
    /// dated `time` (µs; `None`: unknown, every request counts).
    fn text(&mut self, column: &str, text: &str, time: Option<i64>) {
        let ledger = &self.ledger;
        let mut hits = Vec::new();
        let mut hashed = 1;
        let mut check = |value: &str| {
            if let Some(requests) = ledger.get(&identifier_digest(value)) {
                hits.extend(
                    requests
                        .iter()
                        .filter(|(_, _, until)| time.is_none_or(|t| t <= *until))
                        .map(|(id, kind, _)| (id.clone(), *kind)),
                );
            }
        };
        check(text);
        for_each_span(text, false, |span| {
            hashed += 1;
            if span.len() != text.len() {
                check(span);
            }
        });
        self.hashed += hashed;
        for (request_id, kind) in hits {
            self.hits.insert((column.to_string(), request_id, kind));
        }
    }

    /// Every column of `batch`, its rows dated by `times` (µs; per row,
    /// `None` unknown; no times: all unknown).
    fn batch(&mut self, batch: &RecordBatch, times: Option<&[Option<i64>]>) {
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            let Some(times) = times else {
                self.array(field.name(), array, None);
                continue;
            };
            // Most columns hold no identifier at all: look at the whole
            // column first, then row by row only where it does.
            let mut probe = Found {
                ledger: self.ledger.clone(),
                ..Found::default()
            };
            probe.array(field.name(), array, None);
            self.hashed += probe.hashed;
            if probe.hits.is_empty() {
                continue;
            }
            let hashed = self.hashed;
            for (row, time) in times.iter().enumerate() {
                self.array(field.name(), &array.slice(row, 1), *time);
            }
            self.hashed = hashed;
        }
    }

    /// Every string and binary value of `array`, at any depth, dated `time`.
    fn array(&mut self, column: &str, array: &ArrayRef, time: Option<i64>) {
        match array.data_type() {
            DataType::Utf8 => {
                for s in array.as_string::<i32>().iter().flatten() {
                    self.text(column, s, time);
                }
            }
            DataType::LargeUtf8 => {
                for s in array.as_string::<i64>().iter().flatten() {
                    self.text(column, s, time);
                }
            }
            DataType::Utf8View => {
                for s in array.as_string_view().iter().flatten() {
                    self.text(column, s, time);
                }
            }
            DataType::Binary => {
                for b in array.as_binary::<i32>().iter().flatten() {
                    self.text(column, &String::from_utf8_lossy(b), time);
                }
            }
            DataType::LargeBinary => {
                for b in array.as_binary::<i64>().iter().flatten() {
                    self.text(column, &String::from_utf8_lossy(b), time);
                }
            }
            DataType::List(_) => self.array(column, array.as_list::<i32>().values(), time),
            DataType::LargeList(_) => self.array(column, array.as_list::<i64>().values(), time),
            DataType::Struct(_) => {
                for child in array.as_struct().columns() {
                    self.array(column, child, time);
                }
            }
            DataType::Map(_, _) => {
                let map = array.as_map();
                self.array(column, map.keys(), time);
                self.array(column, map.values(), time);
            }
            _ => {}
        }
    }

    /// Every string of a JSON value (keys too), dated `time`.
    fn json(&mut self, value: &serde_json::Value, time: Option<i64>) {
        match value {
            serde_json::Value::String(s) => self.text("", s, time),
            serde_json::Value::Array(items) => items.iter().for_each(|v| self.json(v, time)),
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    self.text("", k, time);
                    self.json(v, time);
                }
            }
            _ => {}
        }
    }
}

/// The dates of `batch`'s rows: their `event_time` column, or a dead
/// letter's `written_at` (ms), or for Delta log rows (a checkpoint's) the
/// statistics of the file an `add` adds; `None` when it has none of them.
fn row_times(batch: &RecordBatch, event_time: Option<&str>) -> Option<Vec<Option<i64>>> {
    if let Some(times) = event_times(batch, event_time) {
        return Some(times.iter().collect());
    }
    if let Some(written) = batch
        .column_by_name("written_at")
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
    {
        return Some(written.iter().map(|ms| ms.map(|ms| ms * 1000)).collect());
    }
    let stats = batch
        .column_by_name("add")?
        .as_struct_opt()?
        .column_by_name("stats")?
        .as_string_opt::<i32>()?;
    Some(
        stats
            .iter()
            .map(|s| s.and_then(|s| stats_earliest(s, event_time)))
            .collect(),
    )
}

/// The earliest event time (µs) of a Delta `add` action's statistics
/// (`{"minValues":{"<event_time>":"2026-11-25T00:00:00.000Z"}}`).
fn stats_earliest(stats: &str, event_time: Option<&str>) -> Option<i64> {
    let stats: serde_json::Value = serde_json::from_str(stats).ok()?;
    let min = stats.get("minValues")?.get(event_time?)?.as_str()?;
    Some(
        chrono::DateTime::parse_from_rfc3339(min)
            .ok()?
            .timestamp_micros(),
    )
}

/// The date of a Delta log line: the earliest event time of the file an
/// `add` adds (see [`stats_earliest`]).
fn log_line_time(line: &serde_json::Value, event_time: Option<&str>) -> Option<i64> {
    stats_earliest(line.get("add")?.get("stats")?.as_str()?, event_time)
}

/// What one object holds; `None` when it is gone.
async fn audit_object(
    lake: &Lake,
    meta: &ObjectMeta,
    ledger: Arc<Ledger>,
    event_time: Option<&str>,
) -> Result<Option<Found>> {
    let mut found = Found {
        ledger,
        ..Found::default()
    };
    let name = meta.location.as_ref();
    if name.ends_with(".parquet") {
        let file = match TableFile::open(lake, meta.location.clone(), meta.size).await {
            Ok(file) => file,
            Err(Error::Parquet { .. })
                if !super::verify::lake_has(lake, &meta.location).await? =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut rows = file.rows(TablePartition::default())?;
        while let Some(batch) = rows.next().await? {
            found.batch(&batch, row_times(&batch, event_time).as_deref());
        }
        return Ok(Some(found));
    }
    let bytes = match read_object(lake, &meta.location).await {
        Ok(bytes) => bytes,
        Err(Error::Lake(e)) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    if name.ends_with(".avro") {
        let file = RowFile::read(&bytes, name)?;
        let times = row_times(&file.batch, event_time);
        found.batch(&file.batch, times.as_deref());
        return Ok(Some(found));
    }
    let text = String::from_utf8_lossy(&bytes);
    for line in text.lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) => found.json(&value, log_line_time(&value, event_time)),
            Err(_) => found.text("", line, None),
        }
    }
    Ok(Some(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_found_whole_and_as_tokens_by_their_hashes() {
        let mut ledger = Ledger::default();
        for id in ["p3@ex.org", "John Smith"] {
            ledger
                .entry(identifier_digest(id))
                .or_default()
                .push(("req".into(), "subject", 100));
        }
        let mut found = Found {
            ledger: Arc::new(ledger),
            ..Found::default()
        };
        found.text("msg", "mail to p3@ex.org.", Some(100));
        found.text("name", "John Smith", None);
        found.text("other", "xp3@ex.org and John Smithers", None);
        // Dated after the request: a record it did not erase.
        found.text("later", "mail to p3@ex.org.", Some(101));
        let columns: Vec<&str> = found.hits.iter().map(|(c, _, _)| c.as_str()).collect();
        assert_eq!(columns, ["msg", "name"]);
    }
}
