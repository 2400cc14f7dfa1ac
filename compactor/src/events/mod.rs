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
//! deliver, under `_tributary/events/sinks/<sink>/cursor.json`:
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
//! is lost however long a sink is down. Events never carry record values: a
//! forget event names its request id only.

pub mod dispatch;
mod list;
mod sink;
mod store;

use std::collections::{BTreeMap, HashMap, HashSet};

use deltalake::kernel::Action;
use deltalake::table::state::DeltaTableState;
use serde::{Deserialize, Serialize};
use tributary_lake::Lake;

use crate::error::{Error, Result};
pub use list::{Listed, Listing, SinkPosition, list};
use store::{get_optional, log_entry, spooled};
pub use store::{oldest_cursor, spool_before};

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
    /// Rows in the files it removed; `null` when unknown (commits by other
    /// writers, files without statistics).
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
    // Rows of the removed files, from the snapshot (a remove action has no
    // statistics); only those files' rows are kept.
    let removed: HashSet<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Remove(r) => Some(r.path.as_str()),
            _ => None,
        })
        .collect();
    let rows_by_path: HashMap<String, Option<u64>> = if removed.is_empty() {
        HashMap::new()
    } else {
        snapshot
            .log_data()
            .iter()
            .filter(|f| removed.contains(f.path().as_ref()))
            .map(|f| (f.path().to_string(), f.num_records().map(|n| n as u64)))
            .collect()
    };
    let mut partitions: BTreeMap<BTreeMap<String, Option<String>>, (u64, Option<u64>)> =
        BTreeMap::new();
    for action in actions {
        match action {
            Action::Add(add) => {
                let values = add.partition_values.clone().into_iter().collect();
                partitions.entry(values).or_insert((0, Some(0))).0 +=
                    rows_in_stats(add.stats.as_deref());
            }
            Action::Remove(remove) => {
                let values = remove
                    .partition_values
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let rows = rows_by_path.get(&remove.path).copied().flatten();
                let entry = partitions.entry(values).or_insert((0, Some(0)));
                entry.1 = entry.1.zip(rows).map(|(a, b)| a + b);
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
                rows_removed: removed,
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

/// The table's URI as events name it (no trailing `/`).
fn table_uri(lake: &Lake) -> &str {
    lake.table_url().as_str().trim_end_matches('/')
}

/// The event of log entry `version` (or of its spooled copy once the entry
/// is removed): `Ok(None)` when neither exists, `Ok(Some(None))` when the
/// entry adds and removes no files (a schema change, vacuum's bookkeeping).
pub(crate) async fn read_event(lake: &Lake, version: u64) -> Result<Option<Option<Event>>> {
    if let Some(entry) = get_optional(lake, &log_entry(version)).await? {
        return event_of_entry(table_uri(lake), version, &entry).map(Some);
    }
    let path = spooled(version);
    match get_optional(lake, &path).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Events(format!("{path} is not a spooled event: {e}"))),
        None => Ok(None),
    }
}

/// The event of one log entry's newline-delimited actions (`None` when it
/// adds and removes no files); an error when a line is not JSON.
fn event_of_entry(table: &str, version: u64, entry: &[u8]) -> Result<Option<Event>> {
    let mut info = serde_json::Value::Null;
    let mut watermarks = BTreeMap::new();
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    for line in entry.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let action: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
            Error::Events(format!(
                "Delta log entry {version} holds a line that is not JSON: {e}"
            ))
        })?;
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
        return Ok(None);
    }
    let summary = serde_json::from_value::<Summary>(info[SUMMARY_KEY].clone())
        .unwrap_or_else(|_| foreign_summary(&info, &adds, &removes));
    let committed_at = info["timestamp"]
        .as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Ok(Some(Event {
        id: format!("{table}@{version}"),
        kind: "commit".into(),
        table: table.to_string(),
        version,
        operation: summary.operation,
        request_id: summary.request_id,
        partitions: summary.partitions,
        watermarks,
        committed_at,
    }))
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
        let event = event_of_entry("s3://lake/t", 7, entry).unwrap().unwrap();
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
        let event = event_of_entry("t", 1, entry).unwrap().unwrap();
        assert_eq!(event.operation, "WRITE");
        assert_eq!(event.partitions.len(), 1);
        assert_eq!(event.partitions[0].rows_added, 10);
        assert_eq!(event.partitions[0].rows_removed, None);
    }

    #[test]
    fn a_line_that_is_not_json_is_an_error() {
        assert!(event_of_entry("t", 3, b"{\"commitInfo\":{}}\n{not json\n").is_err());
    }

    #[test]
    fn an_entry_without_files_has_no_event() {
        let entry = br#"{"commitInfo":{"timestamp":0,"operation":"ADD COLUMNS"}}
{"metaData":{"id":"x"}}
"#;
        assert!(event_of_entry("t", 2, entry).unwrap().is_none());
    }
}
