//! The erasure-request ledger: `_tributary/forget/<id>.json` objects holding
//! SHA-256 hashes of the identifiers (never the identifiers) and the
//! request's progress. Every compaction round reads the ledger
//! ([`erasure_ledger`]) to drop the staged rows it names and to redact its
//! subjects' mentions in the redact columns of other rows
//! ([`redact_ledger_mentions`]).

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;
use std::sync::{LazyLock, Mutex};

use bytes::Bytes;
use deltalake::arrow::array::{Array, ArrayRef, AsArray, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tributary_lake::Lake;
use tributary_lake::layout::TRIBUTARY_DIR;

use super::Matcher;
use super::matcher::redact_ranges;
use crate::error::{Error, Result};
use crate::text_index::for_each_span;

/// The durable request: identifier hashes and progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRequest {
    /// The request id.
    pub id: String,
    /// When it was first recorded, ms since the epoch.
    pub created_at_ms: i64,
    /// SHA-256 (hex) of each subject id.
    pub subject_hashes: Vec<String>,
    /// SHA-256 (hex) of each record key.
    pub key_hashes: Vec<String>,
    /// Replaced table files waiting for the grace period.
    #[serde(default)]
    pub pending_deletes: Vec<String>,
    /// When those of `pending_deletes` that `delete_after_ms_of` does not
    /// name may be deleted, ms since the epoch (requests recorded before
    /// per-file times).
    #[serde(default)]
    pub delete_after_ms: i64,
    /// When each replaced file may be deleted, ms since the epoch: the
    /// grace period counted from the commit that removed it from the table,
    /// fixed then (a later commit of a resumed request does not move it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub delete_after_ms_of: BTreeMap<String, i64>,
    /// Whether a verification found no copy left.
    #[serde(default)]
    pub complete: bool,
}

/// A SHA-256 digest.
pub type Digest = [u8; 32];

impl StoredRequest {
    /// Adds `files`, removed from the table by a commit now, to the pending
    /// deletes, each due `grace` from now; files already pending keep
    /// their time unless removed again (a commit that failed after they
    /// were recorded).
    pub(super) fn add_pending_deletes(&mut self, files: &[String], now_ms: i64, grace_ms: i64) {
        for file in files {
            self.delete_after_ms_of
                .insert(file.clone(), now_ms.saturating_add(grace_ms));
        }
        self.pending_deletes.extend(files.iter().cloned());
        self.pending_deletes.sort();
        self.pending_deletes.dedup();
    }

    /// When the pending delete `file` is due, ms since the epoch.
    pub(super) fn delete_after_ms_of(&self, file: &str) -> i64 {
        self.delete_after_ms_of
            .get(file)
            .copied()
            .unwrap_or(self.delete_after_ms)
    }

    /// The digest of `hash`, one of the request's hashes.
    pub(super) fn digest(&self, hash: &str) -> Result<Digest> {
        digest_of_hex(hash).ok_or_else(|| Error::RequestHash {
            request_id: self.id.clone(),
            hash: hash.to_string(),
        })
    }
}

/// SHA-256 of an identifier.
pub fn identifier_digest(identifier: &str) -> Digest {
    Sha256::digest(identifier.as_bytes()).into()
}

/// SHA-256 of an identifier, hex.
pub fn identifier_hash(identifier: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in identifier_digest(identifier) {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 15)]));
    }
    out
}

/// The digest a hex hash (as requests store them) names.
fn digest_of_hex(hex: &str) -> Option<Digest> {
    let mut digest = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

pub(super) fn request_path(id: &str) -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/forget/{id}.json"))
}

pub(super) fn done_path(id: &str) -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/forget/{id}.done.json"))
}

pub(super) fn report_path(id: &str) -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/forget/{id}.report.json"))
}

/// Moves a complete request to `<id>.done.json`, so that compactors, which
/// read every unfinished request each round, no longer read it. Running the
/// same request id again records it anew.
pub(super) async fn finish_request(lake: &Lake, request: &StoredRequest) -> Result<()> {
    let done = done_path(&request.id);
    let body = encode(request, &done)?;
    lake.store()
        .put(&done, PutPayload::from(body))
        .await
        .map_err(|e| tributary_lake::Error::store(&done, e))?;
    let path = request_path(&request.id);
    match lake.store().delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(tributary_lake::Error::store(&path, e).into()),
    }
}

/// Writes the request (hashes only) create-only; an existing request with
/// the same id must have the same identifiers.
pub(super) async fn record_request(
    lake: &Lake,
    matcher: &Matcher,
    id: &str,
) -> Result<StoredRequest> {
    let mut subject_hashes: Vec<String> = matcher
        .subjects
        .iter()
        .map(|s| identifier_hash(s))
        .collect();
    let mut key_hashes: Vec<String> = matcher.keys.iter().map(|k| identifier_hash(k)).collect();
    subject_hashes.sort();
    key_hashes.sort();
    let request = StoredRequest {
        id: id.to_string(),
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        subject_hashes,
        key_hashes,
        pending_deletes: Vec::new(),
        delete_after_ms: 0,
        delete_after_ms_of: BTreeMap::new(),
        complete: false,
    };
    let path = request_path(id);
    let body = encode(&request, &path)?;
    let put = lake
        .store()
        .put_opts(
            &path,
            PutPayload::from(body),
            PutOptions::from(PutMode::Create),
        )
        .await;
    match put {
        Ok(_) => Ok(request),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let existing = load_request(lake, id).await?;
            if existing.subject_hashes != request.subject_hashes
                || existing.key_hashes != request.key_hashes
            {
                return Err(Error::RequestIdTaken {
                    request_id: id.to_string(),
                });
            }
            Ok(existing)
        }
        Err(e) => Err(tributary_lake::Error::store(&path, e).into()),
    }
}

pub(super) async fn load_request(lake: &Lake, id: &str) -> Result<StoredRequest> {
    let path = request_path(id);
    let bytes = read_object(lake, &path).await?;
    serde_json::from_slice(&bytes).map_err(|source| Error::CorruptRequest {
        path: path.to_string(),
        source,
    })
}

/// `value` as the JSON stored at `path`.
pub(super) fn encode(value: &impl Serialize, path: &Path) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|source| Error::EncodeRequest {
        path: path.to_string(),
        source,
    })
}

pub(super) async fn save_request(lake: &Lake, request: &StoredRequest) -> Result<()> {
    let path = request_path(&request.id);
    let body = encode(request, &path)?;
    lake.store()
        .put(&path, PutPayload::from(body))
        .await
        .map_err(|e| tributary_lake::Error::store(&path, e))?;
    Ok(())
}

pub(super) async fn read_object(lake: &Lake, path: &Path) -> Result<Bytes> {
    Ok(tributary_lake::read_object(lake.store().as_ref(), path).await?)
}

/// The erasure ledger as the compactor applies it to staged rows: the
/// identifier hashes of every unfinished request (rows dropped whatever
/// their time) and of every request completed within `keep_ms` (rows dropped
/// when their event time is at or before the request's time, so a replay
/// cannot bring erased records back while later records of the same subject
/// are kept). `None` when the ledger names nothing.
pub async fn erasure_ledger(lake: &Lake, keep_ms: u64) -> Result<Option<HashedIdentifiers>> {
    let mut hashed = HashedIdentifiers::default();
    for request in unfinished(lake).await? {
        hashed.add(&request, None)?;
    }
    let since = chrono::Utc::now().timestamp_millis() - i64::try_from(keep_ms).unwrap_or(i64::MAX);
    for request in completed_requests(lake).await? {
        if request.created_at_ms >= since {
            hashed.add(&request, Some(request.created_at_ms.saturating_mul(1000)))?;
        }
    }
    Ok((!hashed.subjects.is_empty() || !hashed.keys.is_empty()).then_some(hashed))
}

/// How many requests are unfinished, and when the oldest was recorded (ms
/// since the epoch): what the erasure deadline is watched by.
pub async fn unfinished_summary(lake: &Lake) -> Result<(u64, Option<i64>)> {
    let requests = unfinished(lake).await?;
    let oldest = requests.iter().map(|r| r.created_at_ms).min();
    Ok((requests.len() as u64, oldest))
}

/// Every recorded request not yet complete.
async fn unfinished(lake: &Lake) -> Result<Vec<StoredRequest>> {
    Ok(requests(lake, false)
        .await?
        .into_iter()
        .filter(|r| !r.complete)
        .collect())
}

/// Every completed request (`<id>.done.json`). They never change once
/// written, so each is read once per process.
pub(super) async fn completed_requests(lake: &Lake) -> Result<Vec<StoredRequest>> {
    requests(lake, true).await
}

/// The request objects: `<id>.json` (recorded, possibly complete but not yet
/// moved), or with `done` the `<id>.done.json` ones (read through a cache,
/// as they are immutable).
async fn requests(lake: &Lake, done: bool) -> Result<Vec<StoredRequest>> {
    let dir = Path::from(format!("{TRIBUTARY_DIR}/forget"));
    let objects: Vec<_> = lake
        .store()
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| tributary_lake::Error::store(&dir, e))?;
    let mut found = Vec::new();
    for meta in objects {
        let name = meta.location.filename().unwrap_or_default();
        let is_done = name.ends_with(".done.json");
        if !name.ends_with(".json") || name.ends_with(".report.json") || is_done != done {
            continue;
        }
        let cache_key = (
            lake.table_url().to_string(),
            meta.location.to_string(),
            meta.size,
        );
        if done && let Some(request) = lock(&DONE_CACHE).get(&cache_key) {
            found.push(request.clone());
            continue;
        }
        let bytes = read_object(lake, &meta.location).await?;
        let request: StoredRequest =
            serde_json::from_slice(&bytes).map_err(|source| Error::CorruptRequest {
                path: meta.location.to_string(),
                source,
            })?;
        if done {
            lock(&DONE_CACHE).insert(cache_key, request.clone());
        }
        found.push(request);
    }
    Ok(found)
}

/// A completed request object: (table URL, object path, size).
type DoneObject = (String, String, u64);

/// Completed requests read so far.
static DONE_CACHE: LazyLock<Mutex<HashMap<DoneObject, StoredRequest>>> =
    LazyLock::new(Mutex::default);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// SHA-256 hashes of identifiers to drop, each with the latest event time
/// (µs since the epoch) of the rows it drops: `None` drops every row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashedIdentifiers {
    /// Of subject ids.
    pub subjects: FxHashMap<Digest, Option<i64>>,
    /// Of record keys.
    pub keys: FxHashMap<Digest, Option<i64>>,
}

impl HashedIdentifiers {
    /// Adds `request`'s hashes, dropping rows up to `until` (`None`: all).
    /// Of two requests naming one identifier the wider one holds.
    fn add(&mut self, request: &StoredRequest, until: Option<i64>) -> Result<()> {
        let widest = |old: Option<i64>| match (old, until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        for (map, hashes) in [
            (&mut self.subjects, &request.subject_hashes),
            (&mut self.keys, &request.key_hashes),
        ] {
            for hash in hashes {
                let digest = request.digest(hash)?;
                map.entry(digest)
                    .and_modify(|old| *old = widest(*old))
                    .or_insert(until);
            }
        }
        Ok(())
    }

    /// Whether any identifier drops rows only up to a time (rows then need
    /// their event times).
    pub fn has_time_limits(&self) -> bool {
        self.subjects
            .values()
            .chain(self.keys.values())
            .any(Option::is_some)
    }
}

/// Whether a row whose subject column (or `_key`, with `is_key`) holds
/// `value`, with event time `event_time_us` (µs; `None` when unknown), is
/// erased: the compactor drops such rows. A row of unknown time is dropped
/// whenever its identifier is in the ledger.
pub fn is_forgotten(
    value: &str,
    is_key: bool,
    event_time_us: Option<i64>,
    hashed: &HashedIdentifiers,
) -> bool {
    let map = if is_key {
        &hashed.keys
    } else {
        &hashed.subjects
    };
    if map.is_empty() {
        return false;
    }
    match map.get(&identifier_digest(value)) {
        None => false,
        Some(None) => true,
        Some(Some(until)) => event_time_us.is_none_or(|t| t <= *until),
    }
}

/// A batch's event times in µs, if it has the column (of any type that
/// casts to a timestamp).
pub(crate) fn event_times(
    batch: &RecordBatch,
    column: Option<&str>,
) -> Option<TimestampMicrosecondArray> {
    let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let times = cast(batch.column_by_name(column?)?, &timestamp).ok()?;
    Some(times.as_primitive::<TimestampMicrosecondType>().clone())
}

/// Distinct text spans whose ledger verdict a round remembers before it
/// forgets them all (bounded memory: about 40 bytes each).
const SPAN_CACHE_ENTRIES: usize = 1 << 18;

/// The ledger's verdict on the text spans a round has seen: for each, the
/// entry of its hash (`None`: not in the ledger). Log text repeats its
/// words, so most spans are looked up here instead of being hashed.
pub type MentionCache<'t> = FxHashMap<&'t str, Option<Option<i64>>>;

impl HashedIdentifiers {
    /// `text` (a value of a redact column of a row with event time
    /// `event_time_us`) with every mention of a ledger subject replaced by
    /// [`REDACTED`](super::REDACTED), as `tributary forget` redacts it;
    /// `None` when it mentions none. A mention is a span of the text as the audit hashes
    /// them ([`for_each_span`] without the digit-or-`@` filter): a token, or
    /// 1 to 6 atoms of one, not glued to a letter or digit. A subject erased
    /// by a completed request is redacted only in rows at or before the
    /// request's time (or of unknown time), as [`is_forgotten`] drops rows.
    pub fn redact_mentions<'t>(
        &self,
        text: &'t str,
        event_time_us: Option<i64>,
        cache: &mut MentionCache<'t>,
    ) -> Option<String> {
        let mut found: Vec<(usize, usize)> = Vec::new();
        let base = text.as_ptr() as usize;
        for_each_span(text, false, |span| {
            if cache.len() >= SPAN_CACHE_ENTRIES {
                cache.clear();
            }
            let entry = *cache
                .entry(span)
                .or_insert_with(|| self.subjects.get(&identifier_digest(span)).copied());
            let erased = match entry {
                None => false,
                Some(None) => true,
                Some(Some(until)) => event_time_us.is_none_or(|t| t <= until),
            };
            if erased {
                let start = span.as_ptr() as usize - base;
                found.push((start, start + span.len()));
            }
        });
        redact_ranges(text, found)
    }
}

/// The round's `batches` with every mention of a ledger subject in the
/// redact `columns` (string columns) replaced (see
/// [`HashedIdentifiers::redact_mentions`]), and how many values changed.
/// The compactor calls it only when redact columns are configured and the
/// ledger names a subject: the cost is a scan of the text and a hash
/// lookup per span (a SHA-256 only for spans the round has not seen).
pub fn redact_ledger_mentions(
    batches: Vec<RecordBatch>,
    columns: &[String],
    hashed: &HashedIdentifiers,
    event_time: Option<&str>,
) -> std::result::Result<(Vec<RecordBatch>, u64), ArrowError> {
    if hashed.subjects.is_empty() || columns.is_empty() {
        return Ok((batches, 0));
    }
    let mut cache = MentionCache::default();
    let mut changed = 0u64;
    // Per batch, the redacted columns (index, array): built while the cache
    // borrows the batches' text, applied after.
    let mut replaced: Vec<Vec<(usize, ArrayRef)>> = Vec::with_capacity(batches.len());
    for batch in &batches {
        let times = hashed
            .has_time_limits()
            .then(|| event_times(batch, event_time))
            .flatten();
        let mut columns_of_batch = Vec::new();
        for column in columns {
            let Ok(index) = batch.schema().index_of(column) else {
                continue;
            };
            let Some(strings) = batch.column(index).as_string_opt::<i32>() else {
                continue;
            };
            let mut any = false;
            let values: Vec<Option<std::borrow::Cow<'_, str>>> = (0..strings.len())
                .map(|row| {
                    if strings.is_null(row) {
                        return None;
                    }
                    let text = strings.value(row);
                    let time = times
                        .as_ref()
                        .filter(|t| t.is_valid(row))
                        .map(|t| t.value(row));
                    Some(match hashed.redact_mentions(text, time, &mut cache) {
                        Some(new) => {
                            any = true;
                            changed += 1;
                            std::borrow::Cow::Owned(new)
                        }
                        None => std::borrow::Cow::Borrowed(text),
                    })
                })
                .collect();
            if any {
                let array: StringArray = values.into_iter().collect();
                columns_of_batch.push((index, std::sync::Arc::new(array) as ArrayRef));
            }
        }
        replaced.push(columns_of_batch);
    }
    drop(cache);
    let batches = batches
        .into_iter()
        .zip(replaced)
        .map(|(batch, columns)| {
            if columns.is_empty() {
                return Ok(batch);
            }
            let mut arrays = batch.columns().to_vec();
            for (index, array) in columns {
                arrays[index] = array;
            }
            RecordBatch::try_new(batch.schema(), arrays)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((batches, changed))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::datatypes::{Field, Schema};

    use super::*;

    /// `p3@ex.org` erased by a request at time 100, `p3` unfinished (every
    /// time).
    fn ledger() -> HashedIdentifiers {
        HashedIdentifiers {
            subjects: FxHashMap::from_iter([
                (identifier_digest("p3@ex.org"), Some(100)),
                (identifier_digest("jsmith"), Some(100)),
            ]),
            keys: FxHashMap::from_iter([(identifier_digest("k1"), None)]),
        }
    }

    #[test]
    fn mentions_of_ledger_subjects_are_redacted_in_rows_from_before_the_request() {
        let hashed = ledger();
        let mut cache = MentionCache::default();
        let text = "reset mail sent to p3@ex.org, cc <p3@ex.org> by jsmith; not xp3@ex.org k1";
        let redacted = "reset mail sent to [redacted], cc <[redacted]> by [redacted]; \
                        not xp3@ex.org k1";
        for time in [Some(50), Some(100), None] {
            assert_eq!(
                hashed.redact_mentions(text, time, &mut cache).as_deref(),
                Some(redacted)
            );
        }
        // After the request: a new record of the subject, kept as it is.
        assert_eq!(hashed.redact_mentions(text, Some(101), &mut cache), None);
        assert_eq!(
            hashed.redact_mentions("nobody here", None, &mut cache),
            None
        );
        // `p3` alone is not erased, nor inside a longer word.
        assert_eq!(
            hashed.redact_mentions("p3 and p3@ex.orgs", None, &mut cache),
            None
        );
    }

    #[test]
    fn a_round_redacts_only_the_redact_columns_by_each_rows_time() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("msg", DataType::Utf8, true),
            Field::new("user", DataType::Utf8, true),
            Field::new("ts", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("to p3@ex.org"),
                    Some("to p3@ex.org"),
                    None,
                    Some("to p4@ex.org"),
                ])),
                Arc::new(StringArray::from(vec!["p3@ex.org"; 4])),
                Arc::new(deltalake::arrow::array::Int64Array::from(vec![
                    Some(100),
                    Some(101),
                    Some(1),
                    None,
                ])),
            ],
        )
        .unwrap();
        let (batches, changed) = redact_ledger_mentions(
            vec![batch.clone()],
            &["msg".to_string()],
            &ledger(),
            Some("ts"),
        )
        .unwrap();
        assert_eq!(changed, 1);
        let msg = batches[0].column(0).as_string::<i32>();
        let msg: Vec<Option<&str>> = msg.iter().collect();
        assert_eq!(
            msg,
            [
                Some("to [redacted]"),
                Some("to p3@ex.org"),
                None,
                Some("to p4@ex.org")
            ]
        );
        // Other columns are the compactor's business (subject columns drop
        // whole rows), not text redaction's.
        assert_eq!(batches[0].column(1), batch.column(1));
        // No redact columns, or no subjects: nothing is read.
        let (_, changed) =
            redact_ledger_mentions(vec![batch.clone()], &[], &ledger(), Some("ts")).unwrap();
        assert_eq!(changed, 0);
    }

    fn request() -> StoredRequest {
        StoredRequest {
            id: "r".into(),
            created_at_ms: 0,
            subject_hashes: Vec::new(),
            key_hashes: Vec::new(),
            pending_deletes: Vec::new(),
            delete_after_ms: 0,
            delete_after_ms_of: BTreeMap::new(),
            complete: false,
        }
    }

    /// A resumed request's later commit does not push back the deletes of
    /// the files an earlier commit removed (nor hasten its own).
    #[test]
    fn each_replaced_file_is_due_a_grace_period_after_its_own_removal() {
        let mut r = request();
        r.add_pending_deletes(&["a".into()], 1_000, 60_000);
        r.add_pending_deletes(&["b".into()], 50_000, 60_000);
        assert_eq!(r.pending_deletes, ["a", "b"]);
        assert_eq!(r.delete_after_ms_of("a"), 61_000);
        assert_eq!(r.delete_after_ms_of("b"), 110_000);
        // Stored and read back.
        let back: StoredRequest =
            serde_json::from_slice(&encode(&r, &Path::from("x")).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    /// A request stored before per-file times: its one time applies.
    #[test]
    fn an_older_request_keeps_its_single_time() {
        let old = r#"{"id":"r","created_at_ms":0,"subject_hashes":[],"key_hashes":[],
            "pending_deletes":["a"],"delete_after_ms":42,"complete":false}"#;
        let r: StoredRequest = serde_json::from_str(old).unwrap();
        assert_eq!(r.delete_after_ms_of("a"), 42);
    }
}
