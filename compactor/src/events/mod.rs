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

pub mod complete;
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

/// The `operation` of a compaction round's summary.
pub(crate) const COMPACTION: &str = "compaction";

/// What a commit did, as its event names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// A compaction round: staged rows added, tombstoned rows removed.
    Compaction {
        /// The latest event time (microseconds since the Unix epoch) of the
        /// rows it adds, per source partition (its Delta `txn` id): what
        /// partition completeness ([`complete`]) follows.
        latest_event_times: BTreeMap<String, i64>,
        /// The files it adds that hold staged rows (not those rewritten to
        /// apply deletes).
        new_files: HashSet<String>,
    },
    /// Small files merged into large ones (the same rows).
    Optimize,
    /// An erasure request's rewrite.
    Forget {
        /// The request's id.
        request_id: String,
    },
    /// A retention run: expired partitions removed, tenants' expired rows
    /// rewritten away.
    Retention {
        /// The run's id.
        run_id: String,
    },
    /// Partitions declared complete, or completed again by late rows
    /// (no data: the commit moves [`complete`]'s frontier).
    Complete {
        /// One per partition.
        completed: Vec<Completion>,
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
    /// A compaction's rows new to the table (from staging); the rest of
    /// `rows_added` were rewritten by deletes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_rows: Option<u64>,
}

/// A date (or hour) partition that became complete: every source feeding
/// the table is past its end plus the allowed lateness, and no staged row
/// belongs to it (see [`complete`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The partition: `date`, and `_hour` in a table partitioned by hour
    /// (every value of any other partition column).
    pub values: BTreeMap<String, String>,
    /// Its first instant (RFC 3339, UTC).
    pub start: String,
    /// The instant after it (RFC 3339, UTC).
    pub end: String,
    /// Rows the table held in it when the event was decided.
    pub rows: u64,
    /// `true` when late rows were added after it was declared complete: the
    /// partition is complete again, with them.
    pub correction: bool,
    /// A correction's late rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_rows: Option<u64>,
    /// The version of the commit that added a correction's late rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_version: Option<u64>,
}

/// The summary a commit carries in `commitInfo.tributary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Summary {
    operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    partitions: Vec<PartitionChange>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    latest_event_times: BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    completed: Vec<Completion>,
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
    /// `compaction`, `optimize`, `forget`, `complete`, or the Delta
    /// operation (e.g. `WRITE`) of a commit by another writer.
    pub operation: String,
    /// The erasure request of a `forget` commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `commit` events: every partition the commit touched.
    pub partitions: Vec<PartitionChange>,
    /// The source watermarks the commit set: the last source position in
    /// the table, per source partition (`tributary/<stream>/<partition>`).
    pub watermarks: BTreeMap<String, i64>,
    /// When the commit was made (RFC 3339, UTC).
    pub committed_at: String,
    /// `partition_complete` events: the partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<Completion>,
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
    let new_files = match operation {
        Operation::Compaction { new_files, .. } => Some(new_files),
        _ => None,
    };
    let mut partitions: BTreeMap<BTreeMap<String, Option<String>>, PartitionChange> =
        BTreeMap::new();
    let empty = |values: &BTreeMap<String, Option<String>>| PartitionChange {
        values: values.clone(),
        rows_added: 0,
        rows_removed: Some(0),
        new_rows: new_files.map(|_| 0),
    };
    for action in actions {
        match action {
            Action::Add(add) => {
                let rows = rows_in_stats(add.stats.as_deref());
                let values = add.partition_values.clone().into_iter().collect();
                let change = partitions.entry(values).or_insert_with_key(empty);
                change.rows_added += rows;
                if new_files.is_some_and(|new| new.contains(&add.path)) {
                    change.new_rows = change.new_rows.map(|n| n + rows);
                }
            }
            Action::Remove(remove) => {
                let values = remove
                    .partition_values
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let rows = rows_by_path.get(&remove.path).copied().flatten();
                let change = partitions.entry(values).or_insert_with_key(empty);
                change.rows_removed = change.rows_removed.zip(rows).map(|(a, b)| a + b);
            }
            _ => {}
        }
    }
    let mut summary = Summary {
        operation: String::new(),
        request_id: None,
        latest_event_times: BTreeMap::new(),
        completed: Vec::new(),
        partitions: partitions.into_values().collect(),
    };
    summary.operation = match operation {
        Operation::Compaction {
            latest_event_times, ..
        } => {
            summary.latest_event_times = latest_event_times.clone();
            COMPACTION
        }
        Operation::Optimize => "optimize",
        Operation::Forget { request_id } => {
            summary.request_id = Some(request_id.clone());
            "forget"
        }
        Operation::Retention { run_id } => {
            summary.request_id = Some(run_id.clone());
            "retention"
        }
        Operation::Complete { completed } => {
            summary.completed = completed.clone();
            complete::OPERATION
        }
    }
    .into();
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

/// The events of log entry `version` (or their spooled copy once the
/// entry is removed), in delivery order: `Ok(None)` when neither exists;
/// none for an entry that changes no data and completes no partition (a
/// schema change, vacuum's bookkeeping).
pub(crate) async fn read_events(lake: &Lake, version: u64) -> Result<Option<Vec<Event>>> {
    if let Some(entry) = get_optional(lake, &log_entry(version)).await? {
        let entry = LogEntry::parse(version, &entry)?;
        return Ok(Some(entry.events(table_uri(lake), version)));
    }
    let path = spooled(version);
    match get_optional(lake, &path).await? {
        Some(bytes) => spooled_events(&bytes)
            .map(Some)
            .map_err(|e| Error::Events(format!("{path} holds no spooled events: {e}"))),
        None => Ok(None),
    }
}

/// Spooled events: an array (or, as spooled by earlier versions, one event
/// or `null`).
fn spooled_events(bytes: &[u8]) -> serde_json::Result<Vec<Event>> {
    Ok(match serde_json::from_slice::<serde_json::Value>(bytes)? {
        serde_json::Value::Null => Vec::new(),
        array @ serde_json::Value::Array(_) => serde_json::from_value(array)?,
        event => vec![serde_json::from_value(event)?],
    })
}

/// One Delta log entry, as events read it.
pub(crate) struct LogEntry {
    /// Its `commitInfo`.
    info: serde_json::Value,
    /// Its `txn` actions: application id → version.
    transactions: BTreeMap<String, i64>,
    adds: Vec<serde_json::Value>,
    removes: Vec<serde_json::Value>,
}

impl LogEntry {
    /// The entry's newline-delimited actions; an error when a line is not
    /// JSON.
    pub(crate) fn parse(version: u64, entry: &[u8]) -> Result<Self> {
        let mut parsed = Self {
            info: serde_json::Value::Null,
            transactions: BTreeMap::new(),
            adds: Vec::new(),
            removes: Vec::new(),
        };
        for line in entry.split(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let mut action: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
                Error::Events(format!(
                    "Delta log entry {version} holds a line that is not JSON: {e}"
                ))
            })?;
            if let Some(commit_info) = action.get_mut("commitInfo") {
                parsed.info = commit_info.take();
            } else if let Some(txn) = action.get("txn") {
                if let (Some(app), Some(v)) = (txn["appId"].as_str(), txn["version"].as_i64()) {
                    parsed.transactions.insert(app.to_string(), v);
                }
            } else if let Some(add) = action.get_mut("add") {
                parsed.adds.push(add.take());
            } else if let Some(remove) = action.get_mut("remove") {
                parsed.removes.push(remove.take());
            }
        }
        Ok(parsed)
    }

    /// Its summary: Tributary's own, or one made from the file actions of
    /// another writer's commit.
    pub(crate) fn summary(&self) -> Summary {
        serde_json::from_value::<Summary>(self.info[SUMMARY_KEY].clone())
            .unwrap_or_else(|_| foreign_summary(&self.info, &self.adds, &self.removes))
    }

    /// When it was committed, in milliseconds since the Unix epoch.
    pub(crate) fn committed_at_ms(&self) -> i64 {
        self.info["timestamp"].as_i64().unwrap_or_default()
    }

    /// The events it makes: a `commit` event when it adds or removes files,
    /// then a `partition_complete` event per partition it completes.
    fn events(&self, table: &str, version: u64) -> Vec<Event> {
        let summary = self.summary();
        let committed_at = chrono::DateTime::from_timestamp_millis(self.committed_at_ms())
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // Source watermarks only, not completeness's own bookkeeping.
        let watermarks: BTreeMap<String, i64> = self
            .transactions
            .iter()
            .filter(|(app, _)| app.starts_with("tributary/"))
            .map(|(app, v)| (app.clone(), *v))
            .collect();
        let event = |id: String, kind: &str| Event {
            id,
            kind: kind.into(),
            table: table.to_string(),
            version,
            operation: summary.operation.clone(),
            request_id: summary.request_id.clone(),
            partitions: Vec::new(),
            watermarks: watermarks.clone(),
            committed_at: committed_at.clone(),
            completed: None,
        };
        let mut events = Vec::new();
        if !(self.adds.is_empty() && self.removes.is_empty()) {
            events.push(Event {
                partitions: summary.partitions.clone(),
                ..event(format!("{table}@{version}"), "commit")
            });
        }
        for completion in &summary.completed {
            let name: Vec<String> = completion
                .values
                .iter()
                .map(|(column, value)| format!("{column}={value}"))
                .collect();
            events.push(Event {
                completed: Some(completion.clone()),
                ..event(
                    format!("{table}@{version}/{}", name.join("/")),
                    "partition_complete",
                )
            });
        }
        events
    }
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
        latest_event_times: BTreeMap::new(),
        completed: Vec::new(),
        partitions: partitions
            .into_iter()
            .map(|(values, rows_added)| PartitionChange {
                values,
                rows_added,
                rows_removed: None,
                new_rows: None,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events_of(table: &str, version: u64, entry: &[u8]) -> Result<Vec<Event>> {
        Ok(LogEntry::parse(version, entry)?.events(table, version))
    }

    #[test]
    fn an_entry_with_a_summary_becomes_its_event() {
        let entry = br#"{"commitInfo":{"timestamp":1764500000000,"operation":"DELETE","tributary":{"operation":"forget","request_id":"r-1","partitions":[{"values":{"date":"2026-11-29"},"rows_added":3,"rows_removed":5}]}}}
{"txn":{"appId":"tributary/app/p0","version":41}}
{"add":{"path":"date=2026-11-29/a.parquet","partitionValues":{"date":"2026-11-29"},"size":1,"modificationTime":0,"dataChange":true,"stats":"{\"numRecords\":3}"}}
{"remove":{"path":"date=2026-11-29/b.parquet","dataChange":true}}
"#;
        let [event] = &events_of("s3://lake/t", 7, entry).unwrap()[..] else {
            panic!("one event")
        };
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
        let [event] = &events_of("t", 1, entry).unwrap()[..] else {
            panic!("one event")
        };
        assert_eq!(event.operation, "WRITE");
        assert_eq!(event.partitions.len(), 1);
        assert_eq!(event.partitions[0].rows_added, 10);
        assert_eq!(event.partitions[0].rows_removed, None);
    }

    #[test]
    fn a_line_that_is_not_json_is_an_error() {
        assert!(events_of("t", 3, b"{\"commitInfo\":{}}\n{not json\n").is_err());
    }

    #[test]
    fn an_entry_without_files_has_no_event() {
        let entry = br#"{"commitInfo":{"timestamp":0,"operation":"ADD COLUMNS"}}
{"metaData":{"id":"x"}}
"#;
        assert!(events_of("t", 2, entry).unwrap().is_empty());
    }

    #[test]
    fn a_complete_entry_makes_one_event_per_partition_and_no_commit_event() {
        let entry = br#"{"commitInfo":{"timestamp":0,"operation":"STREAMING UPDATE","tributary":{"operation":"complete","partitions":[],"completed":[{"values":{"date":"2026-11-28"},"start":"2026-11-28T00:00:00Z","end":"2026-11-29T00:00:00Z","rows":7,"correction":false},{"values":{"date":"2026-11-27"},"start":"2026-11-27T00:00:00Z","end":"2026-11-28T00:00:00Z","rows":9,"correction":true,"late_rows":2,"late_version":4}]}}}
{"txn":{"appId":"tributary-events/complete-until","version":1764374400000000}}
"#;
        let events = events_of("t", 9, entry).unwrap();
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["t@9/date=2026-11-28", "t@9/date=2026-11-27"]);
        assert!(events.iter().all(|e| e.kind == "partition_complete"));
        assert!(events[1].completed.as_ref().unwrap().correction);
        // Completeness's bookkeeping is not a source watermark.
        assert!(events[0].watermarks.is_empty());
    }

    #[test]
    fn spooled_events_of_every_version_read_back() {
        assert!(spooled_events(b"null").unwrap().is_empty());
        let entry = br#"{"commitInfo":{"timestamp":0,"operation":"WRITE"}}
{"add":{"path":"a.parquet","partitionValues":{"date":"2026-11-29"},"stats":"{\"numRecords\":4}"}}
"#;
        let events = events_of("t", 1, entry).unwrap();
        let one = serde_json::to_vec(&events[0]).unwrap();
        assert_eq!(spooled_events(&one).unwrap(), events);
        let all = serde_json::to_vec(&events).unwrap();
        assert_eq!(spooled_events(&all).unwrap(), events);
    }
}
