//! Data availability events: one event per Delta commit that adds or
//! removes data files (a compaction round, optimize, forget), delivered at
//! least once to each configured sink so downstream pipelines start when
//! data has landed instead of on a clock.
//!
//! The Delta log is the queue. Every commit is already a durable, ordered,
//! numbered log entry, so nothing is written on the commit path but a
//! summary in the commit's own `commitInfo` (operation, request id, rows
//! added and removed per partition: removed rows are only known from the
//! snapshot at commit time). Each sink keeps a cursor, the next version to
//! deliver, under `_tributary/events/<sink>/cursor.json`:
//!
//! ```text
//!  commit N ─► _delta_log/N.json {commitInfo{tributary: summary}, add…, remove…, txn…}
//!                     │
//!  dispatcher (one per sink, under lease `events/<sink>`):
//!    read entry `cursor` ─► event ─► deliver (retry with backoff) ─► cursor + 1
//! ```
//!
//! A crash between delivery and the cursor write delivers that event again,
//! with the same `id` (table URI and version: the idempotency key). A sink
//! that is down holds only its own cursor: compaction goes on. Before log
//! cleanup (or an erasure, which must remove every older entry) deletes
//! entries some cursor has not passed, their events are spooled to
//! `_tributary/events/spool/<version>.json` ([`spool_before`]), so nothing
//! is lost however long a sink is down. Events never carry values: a forget
//! event names its request id only.

pub mod dispatch;
mod sink;

use std::collections::{BTreeMap, HashMap};

use deltalake::kernel::Action;
use deltalake::table::state::DeltaTableState;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tributary_lake::Lake;
use tributary_lake::layout::TRIBUTARY_DIR;

use crate::error::{Error, Result};

/// The key of the commit summary in `commitInfo`.
pub(crate) const SUMMARY_KEY: &str = "tributary";

/// What a commit did, as its event names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// A compaction round: staged rows added, tombstoned rows removed.
    Compaction,
    /// Small files merged into large ones (the same rows).
    Optimize,
    /// An erasure request's rewrite.
    Forget {
        /// The request's id.
        request_id: String,
    },
}

/// Rows one commit added to and removed from one table partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionChange {
    /// The partition's column values (`date`, then any others).
    pub values: BTreeMap<String, Option<String>>,
    /// Rows in the files the commit added.
    pub rows_added: u64,
    /// Rows in the files it removed; `null` for commits made by other
    /// writers, whose log entries do not say.
    pub rows_removed: Option<u64>,
}

/// The summary a commit carries in `commitInfo.tributary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Summary {
    operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    partitions: Vec<PartitionChange>,
}

/// One delivered event. The JSON body of every sink; the README documents
/// it field by field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The idempotency key: `<table URI>@<version>`.
    pub id: String,
    /// `commit`.
    pub kind: String,
    /// The table's URI.
    pub table: String,
    /// The Delta version the commit created.
    pub version: u64,
    /// `compaction`, `optimize`, `forget`, or the Delta operation (e.g.
    /// `WRITE`) of a commit by another writer.
    pub operation: String,
    /// The erasure request of a `forget` commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Every partition the commit touched.
    pub partitions: Vec<PartitionChange>,
    /// The source watermarks the commit set: the last source position in
    /// the table, per source partition (`tributary/<stream>/<partition>`).
    pub watermarks: BTreeMap<String, i64>,
    /// When the commit was made (RFC 3339, UTC).
    pub committed_at: String,
}

/// The summary of a commit of `actions` on `snapshot`, for its `commitInfo`.
pub(crate) fn summarize(
    operation: &Operation,
    actions: &[Action],
    snapshot: &DeltaTableState,
) -> serde_json::Value {
    let removes = actions.iter().any(|a| matches!(a, Action::Remove(_)));
    let rows_by_path: HashMap<String, u64> = if removes {
        snapshot
            .log_data()
            .iter()
            .map(|f| (f.path().to_string(), f.num_records().unwrap_or(0) as u64))
            .collect()
    } else {
        HashMap::new()
    };
    let mut partitions: BTreeMap<BTreeMap<String, Option<String>>, (u64, u64)> = BTreeMap::new();
    for action in actions {
        match action {
            Action::Add(add) => {
                let values = add.partition_values.clone().into_iter().collect();
                partitions.entry(values).or_default().0 += rows_in_stats(add.stats.as_deref());
            }
            Action::Remove(remove) => {
                let values = remove
                    .partition_values
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                partitions.entry(values).or_default().1 +=
                    rows_by_path.get(&remove.path).copied().unwrap_or(0);
            }
            _ => {}
        }
    }
    let (name, request_id) = match operation {
        Operation::Compaction => ("compaction", None),
        Operation::Optimize => ("optimize", None),
        Operation::Forget { request_id } => ("forget", Some(request_id.clone())),
    };
    let summary = Summary {
        operation: name.into(),
        request_id,
        partitions: partitions
            .into_iter()
            .map(|(values, (added, removed))| PartitionChange {
                values,
                rows_added: added,
                rows_removed: Some(removed),
            })
            .collect(),
    };
    serde_json::to_value(summary).unwrap_or(serde_json::Value::Null)
}

/// `numRecords` of an add action's statistics (0 without them).
fn rows_in_stats(stats: Option<&str>) -> u64 {
    stats
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|s| s["numRecords"].as_u64())
        .unwrap_or(0)
}

/// The Delta log entry of `version`.
fn log_entry(version: u64) -> Path {
    Path::from(format!("_delta_log/{version:020}.json"))
}

/// The table's URI as events name it (no trailing `/`).
fn table_uri(lake: &Lake) -> &str {
    lake.table_url().as_str().trim_end_matches('/')
}

/// The spooled event of `version` (`null` for an entry without one).
fn spooled(version: u64) -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/events/spool/{version:020}.json"))
}

/// The object at `path`, `None` if there is none.
async fn get_optional(lake: &Lake, path: &Path) -> Result<Option<bytes::Bytes>> {
    match lake.store().get(path).await {
        Ok(got) => Ok(Some(
            got.bytes()
                .await
                .map_err(|e| tributary_lake::Error::store(path, e))?,
        )),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(tributary_lake::Error::store(path, e).into()),
    }
}

/// The event of log entry `version` (or of its spooled copy once the entry
/// is removed): `Ok(None)` when neither exists, `Ok(Some(None))` when the
/// entry adds and removes no files (a schema change, vacuum's bookkeeping).
pub(crate) async fn read_event(lake: &Lake, version: u64) -> Result<Option<Option<Event>>> {
    if let Some(entry) = get_optional(lake, &log_entry(version)).await? {
        return Ok(Some(event_of_entry(table_uri(lake), version, &entry)));
    }
    let path = spooled(version);
    match get_optional(lake, &path).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Events(format!("{path} is not a spooled event: {e}"))),
        None => Ok(None),
    }
}

/// Spools the event (or `null`) of every log entry before `version` that an
/// event sink has not passed and that is not spooled yet, so that those
/// entries may be removed. Then deletes spooled events every sink has
/// passed.
pub async fn spool_before(lake: &Lake, version: u64) -> Result<()> {
    let Some(oldest) = oldest_cursor(lake).await? else {
        return Ok(());
    };
    let dir = Path::from(format!("{TRIBUTARY_DIR}/events/spool"));
    let spooled_versions: Vec<u64> = lake
        .store()
        .list(Some(&dir))
        .map_ok(|o| o.location)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| tributary_lake::Error::store(&dir, e))?
        .iter()
        .filter_map(|p| p.filename()?.strip_suffix(".json")?.parse().ok())
        .collect();
    for v in oldest..version {
        if spooled_versions.contains(&v) {
            continue;
        }
        let Some(entry) = get_optional(lake, &log_entry(v)).await? else {
            continue;
        };
        let event = event_of_entry(table_uri(lake), v, &entry);
        let path = spooled(v);
        let body = serde_json::to_vec(&event).unwrap_or_default();
        lake.store()
            .put(&path, body.into())
            .await
            .map_err(|e| tributary_lake::Error::store(&path, e))?;
    }
    for v in spooled_versions.into_iter().filter(|v| *v < oldest) {
        let path = spooled(v);
        match lake.store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(tributary_lake::Error::store(&path, e).into()),
        }
    }
    Ok(())
}

/// The event of one log entry's newline-delimited actions.
fn event_of_entry(table: &str, version: u64, entry: &[u8]) -> Option<Event> {
    let mut info = serde_json::Value::Null;
    let mut watermarks = BTreeMap::new();
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    for line in entry.split(|b| *b == b'\n') {
        let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(commit_info) = action.get("commitInfo") {
            info = commit_info.clone();
        } else if let Some(txn) = action.get("txn") {
            if let (Some(app), Some(v)) = (txn["appId"].as_str(), txn["version"].as_i64()) {
                watermarks.insert(app.to_string(), v);
            }
        } else if let Some(add) = action.get("add") {
            adds.push(add.clone());
        } else if let Some(remove) = action.get("remove") {
            removes.push(remove.clone());
        }
    }
    if adds.is_empty() && removes.is_empty() {
        return None;
    }
    let summary = serde_json::from_value::<Summary>(info[SUMMARY_KEY].clone())
        .unwrap_or_else(|_| foreign_summary(&info, &adds, &removes));
    let committed_at = info["timestamp"]
        .as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Some(Event {
        id: format!("{table}@{version}"),
        kind: "commit".into(),
        table: table.to_string(),
        version,
        operation: summary.operation,
        request_id: summary.request_id,
        partitions: summary.partitions,
        watermarks,
        committed_at,
    })
}

/// The summary of a commit by another writer: its Delta operation, rows
/// added from the add actions' statistics, rows removed unknown.
fn foreign_summary(
    info: &serde_json::Value,
    adds: &[serde_json::Value],
    removes: &[serde_json::Value],
) -> Summary {
    let values = |action: &serde_json::Value| -> BTreeMap<String, Option<String>> {
        serde_json::from_value(action["partitionValues"].clone()).unwrap_or_default()
    };
    let mut partitions: BTreeMap<BTreeMap<String, Option<String>>, u64> = BTreeMap::new();
    for add in adds {
        *partitions.entry(values(add)).or_default() += rows_in_stats(add["stats"].as_str());
    }
    for remove in removes {
        partitions.entry(values(remove)).or_default();
    }
    Summary {
        operation: info["operation"].as_str().unwrap_or("unknown").to_string(),
        request_id: None,
        partitions: partitions
            .into_iter()
            .map(|(values, rows_added)| PartitionChange {
                values,
                rows_added,
                rows_removed: None,
            })
            .collect(),
    }
}

/// The object holding a sink's cursor.
fn cursor_path(sink: &str) -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/events/{sink}/cursor.json"))
}

/// A sink's cursor: the next version to deliver.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Cursor {
    next_version: u64,
}

/// `sink`'s cursor, `None` before its first delivery.
async fn read_cursor(lake: &Lake, sink: &str) -> Result<Option<u64>> {
    let path = cursor_path(sink);
    let Some(bytes) = get_optional(lake, &path).await? else {
        return Ok(None);
    };
    let cursor: Cursor = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Events(format!("{path} is not a delivery cursor: {e}")))?;
    Ok(Some(cursor.next_version))
}

async fn write_cursor(lake: &Lake, sink: &str, next_version: u64) -> Result<()> {
    let path = cursor_path(sink);
    let body = serde_json::to_vec(&Cursor { next_version }).unwrap_or_default();
    lake.store()
        .put(&path, body.into())
        .await
        .map_err(|e| tributary_lake::Error::store(&path, e))?;
    Ok(())
}

/// The lowest cursor of any sink that has one, among every sink ever used
/// on this table (configured here or not).
pub async fn oldest_cursor(lake: &Lake) -> Result<Option<u64>> {
    let root = Path::from(format!("{TRIBUTARY_DIR}/events"));
    let objects: Vec<_> = lake
        .store()
        .list(Some(&root))
        .try_collect()
        .await
        .map_err(|e| tributary_lake::Error::store(&root, e))?;
    let mut oldest: Option<u64> = None;
    for object in objects {
        if object.location.filename() != Some("cursor.json") {
            continue;
        }
        let Some(sink) = object.location.parts().nth(2) else {
            continue;
        };
        if let Some(next) = read_cursor(lake, sink.as_ref()).await? {
            oldest = Some(oldest.map_or(next, |o| o.min(next)));
        }
    }
    Ok(oldest)
}

/// What `tributary events list` prints.
#[derive(Debug, Serialize)]
pub struct Listing {
    /// The table's URI.
    pub table: String,
    /// Its newest version (`null` before it exists).
    pub latest_version: Option<u64>,
    /// Where each configured sink stands.
    pub sinks: Vec<SinkPosition>,
    /// The events of the versions listed, oldest first.
    pub events: Vec<Listed>,
}

/// Where one sink stands.
#[derive(Debug, Serialize)]
pub struct SinkPosition {
    /// The sink's name.
    pub name: String,
    /// The next version it will be told of (`null`: it has not started).
    pub next_version: Option<u64>,
    /// Versions from there to the newest (`null`: it has not started).
    pub pending_versions: Option<u64>,
}

/// One listed event and the sinks that have not received it yet.
#[derive(Debug, Serialize)]
pub struct Listed {
    /// The event as sinks receive it.
    #[serde(flatten)]
    pub event: Event,
    /// Configured sinks it is still pending for.
    pub pending_for: Vec<String>,
}

/// The events of versions `since` to the newest, at most `limit` (by
/// default the newest `limit` versions), and where each of `sinks` stands.
pub async fn list(
    lake: &Lake,
    sinks: &[tributary_config::SinkConfig],
    since: Option<u64>,
    limit: usize,
) -> Result<Listing> {
    let latest = lake.load_table().await?.and_then(|t| t.version());
    let mut positions = Vec::new();
    for sink in sinks {
        let next_version = read_cursor(lake, &sink.name).await?;
        positions.push(SinkPosition {
            name: sink.name.clone(),
            next_version,
            pending_versions: next_version
                .map(|next| latest.map_or(0, |l| (l + 1).saturating_sub(next))),
        });
    }
    let mut events = Vec::new();
    if let Some(latest) = latest {
        let since = since.unwrap_or_else(|| (latest + 1).saturating_sub(limit as u64));
        for version in since..=latest {
            if events.len() >= limit {
                break;
            }
            if let Some(Some(event)) = read_event(lake, version).await? {
                let pending_for = positions
                    .iter()
                    .filter(|p| p.next_version.is_none_or(|next| next <= version))
                    .map(|p| p.name.clone())
                    .collect();
                events.push(Listed { event, pending_for });
            }
        }
    }
    Ok(Listing {
        table: table_uri(lake).to_string(),
        latest_version: latest,
        sinks: positions,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_with_a_summary_becomes_its_event() {
        let entry = br#"{"commitInfo":{"timestamp":1764500000000,"operation":"DELETE","tributary":{"operation":"forget","request_id":"r-1","partitions":[{"values":{"date":"2026-11-29"},"rows_added":3,"rows_removed":5}]}}}
{"txn":{"appId":"tributary/app/p0","version":41}}
{"add":{"path":"date=2026-11-29/a.parquet","partitionValues":{"date":"2026-11-29"},"size":1,"modificationTime":0,"dataChange":true,"stats":"{\"numRecords\":3}"}}
{"remove":{"path":"date=2026-11-29/b.parquet","dataChange":true}}
"#;
        let event = event_of_entry("s3://lake/t", 7, entry).unwrap();
        assert_eq!(event.id, "s3://lake/t@7");
        assert_eq!(event.operation, "forget");
        assert_eq!(event.request_id.as_deref(), Some("r-1"));
        assert_eq!(event.partitions[0].rows_removed, Some(5));
        assert_eq!(event.watermarks["tributary/app/p0"], 41);
        assert_eq!(event.committed_at, "2025-11-30T10:53:20.000Z");
    }

    #[test]
    fn a_foreign_commit_counts_added_rows_and_leaves_removed_unknown() {
        let entry = br#"{"commitInfo":{"timestamp":0,"operation":"WRITE"}}
{"add":{"path":"a.parquet","partitionValues":{"date":"2026-11-29"},"stats":"{\"numRecords\":4}"}}
{"add":{"path":"b.parquet","partitionValues":{"date":"2026-11-29"},"stats":"{\"numRecords\":6}"}}
"#;
        let event = event_of_entry("t", 1, entry).unwrap();
        assert_eq!(event.operation, "WRITE");
        assert_eq!(event.partitions.len(), 1);
        assert_eq!(event.partitions[0].rows_added, 10);
        assert_eq!(event.partitions[0].rows_removed, None);
    }

    #[test]
    fn an_entry_without_files_has_no_event() {
        let entry = br#"{"commitInfo":{"timestamp":0,"operation":"ADD COLUMNS"}}
{"metaData":{"id":"x"}}
"#;
        assert!(event_of_entry("t", 2, entry).is_none());
    }
}
