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

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::{Array, ArrayRef, AsArray};
use deltalake::arrow::datatypes::DataType;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use object_store::path::Path;
use rustc_hash::FxHashMap;
use serde::Serialize;
use tributary_lake::Lake;
use tributary_lake::rowfile::RowFile;

use super::requests::{Digest, completed_requests, identifier_digest, read_object};
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

/// The ledger as digests: for each, the requests and the kind.
type Ledger = FxHashMap<Digest, Vec<(String, &'static str)>>;

/// Reads every object under the table and reports where an identifier of a
/// completed request is left.
pub async fn audit(lake: &Lake) -> Result<AuditReport> {
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
                ledger
                    .entry(digest)
                    .or_default()
                    .push((request.id.clone(), kind));
            }
        }
    }
    report.ledger_subjects = ledger
        .values()
        .filter(|r| r.iter().any(|(_, k)| *k == "subject"))
        .count() as u64;
    report.ledger_keys = ledger
        .values()
        .filter(|r| r.iter().any(|(_, k)| *k == "key"))
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
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
    let mut progress = Progress::new("objects audited", objects.len() as u64);
    let mut audited = futures::stream::iter(objects)
        .map(|meta| {
            let (lake, ledger) = (lake.clone(), ledger.clone());
            tokio::spawn(async move {
                let found = audit_object(&lake, &meta, ledger).await?;
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
    /// Hashes `text` whole and each of its spans, in `column`.
    fn text(&mut self, column: &str, text: &str) {
        let ledger = &self.ledger;
        let mut hits = Vec::new();
        let mut hashed = 1;
        let mut check = |value: &str| {
            if let Some(requests) = ledger.get(&identifier_digest(value)) {
                hits.extend(requests.iter().cloned());
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

    /// Every string and binary value of `array`, at any depth.
    fn array(&mut self, column: &str, array: &ArrayRef) {
        match array.data_type() {
            DataType::Utf8 => {
                for s in array.as_string::<i32>().iter().flatten() {
                    self.text(column, s);
                }
            }
            DataType::LargeUtf8 => {
                for s in array.as_string::<i64>().iter().flatten() {
                    self.text(column, s);
                }
            }
            DataType::Utf8View => {
                for s in array.as_string_view().iter().flatten() {
                    self.text(column, s);
                }
            }
            DataType::Binary => {
                for b in array.as_binary::<i32>().iter().flatten() {
                    self.text(column, &String::from_utf8_lossy(b));
                }
            }
            DataType::LargeBinary => {
                for b in array.as_binary::<i64>().iter().flatten() {
                    self.text(column, &String::from_utf8_lossy(b));
                }
            }
            DataType::List(_) => self.array(column, array.as_list::<i32>().values()),
            DataType::LargeList(_) => self.array(column, array.as_list::<i64>().values()),
            DataType::Struct(_) => {
                for child in array.as_struct().columns() {
                    self.array(column, child);
                }
            }
            DataType::Map(_, _) => {
                let map = array.as_map();
                self.array(column, map.keys());
                self.array(column, map.values());
            }
            _ => {}
        }
    }

    /// Every string of a JSON value (keys too).
    fn json(&mut self, value: &serde_json::Value) {
        match value {
            serde_json::Value::String(s) => self.text("", s),
            serde_json::Value::Array(items) => items.iter().for_each(|v| self.json(v)),
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    self.text("", k);
                    self.json(v);
                }
            }
            _ => {}
        }
    }
}

/// What one object holds; `None` when it is gone.
async fn audit_object(
    lake: &Lake,
    meta: &ObjectMeta,
    ledger: Arc<Ledger>,
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
            for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
                found.array(field.name(), array);
            }
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
        for (field, array) in file
            .batch
            .schema()
            .fields()
            .iter()
            .zip(file.batch.columns())
        {
            found.array(field.name(), array);
        }
        return Ok(Some(found));
    }
    let text = String::from_utf8_lossy(&bytes);
    for line in text.lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) => found.json(&value),
            Err(_) => found.text("", line),
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
                .push(("req".into(), "subject"));
        }
        let mut found = Found {
            ledger: Arc::new(ledger),
            ..Found::default()
        };
        found.text("msg", "mail to p3@ex.org.");
        found.text("name", "John Smith");
        found.text("other", "xp3@ex.org and John Smithers");
        let columns: Vec<&str> = found.hits.iter().map(|(c, _, _)| c.as_str()).collect();
        assert_eq!(columns, ["msg", "name"]);
    }
}
