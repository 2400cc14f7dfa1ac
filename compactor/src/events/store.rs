//! Event delivery's objects: the Delta log entries events are read from,
//! each sink's cursor, and the spool that keeps events whose log entries
//! are removed.
//!
//! ```text
//! _delta_log/<version>.json                          the queue
//! _tributary/events/sinks/<sink>/cursor.json         {next_version, updated_at_ms}
//! _tributary/events/spool/<version>.json             the events of an entry that is gone
//! ```

use std::collections::HashSet;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tributary_lake::Lake;
use tributary_lake::layout::TRIBUTARY_DIR;

use super::{LogEntry, table_uri};
use crate::error::{Error, Result};

/// A cursor not written for this long belongs to a sink no compactor
/// delivers to any more (removed from the configuration): it no longer
/// keeps spooled events. Running sinks rewrite theirs at least hourly.
pub(crate) const ABANDONED_AFTER_MS: i64 = 7 * 24 * 3_600_000;

/// The Delta log entry of `version`.
pub(crate) fn log_entry(version: u64) -> Path {
    Path::from(format!("_delta_log/{version:020}.json"))
}

/// The spooled events of `version` (an array, empty for an entry without
/// any).
pub(crate) fn spooled(version: u64) -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/events/spool/{version:020}.json"))
}

fn spool_dir() -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/events/spool"))
}

fn sinks_dir() -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/events/sinks"))
}

fn cursor_path(sink: &str) -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/events/sinks/{sink}/cursor.json"))
}

/// The object at `path`, `None` if there is none.
pub(crate) async fn get_optional(lake: &Lake, path: &Path) -> Result<Option<bytes::Bytes>> {
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

/// A sink's cursor.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// The next version to deliver.
    pub next_version: u64,
    /// When it was last written, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

/// `sink`'s cursor, `None` before its first delivery.
pub(crate) async fn read_cursor(lake: &Lake, sink: &str) -> Result<Option<Cursor>> {
    let path = cursor_path(sink);
    let Some(bytes) = get_optional(lake, &path).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Events(format!("{path} is not a delivery cursor: {e}")))
}

/// Writes `sink`'s cursor, stamped now.
pub(crate) async fn write_cursor(lake: &Lake, sink: &str, next_version: u64) -> Result<()> {
    let path = cursor_path(sink);
    let cursor = Cursor {
        next_version,
        updated_at_ms: chrono::Utc::now().timestamp_millis(),
    };
    let body = serde_json::to_vec(&cursor).unwrap_or_default();
    lake.store()
        .put(&path, body.into())
        .await
        .map_err(|e| tributary_lake::Error::store(&path, e))?;
    Ok(())
}

/// The lowest cursor of the sinks still delivered to (any compactor's,
/// configured here or not; a cursor not written for 7 days belongs to a
/// retired sink).
pub async fn oldest_cursor(lake: &Lake) -> Result<Option<u64>> {
    let dir = sinks_dir();
    let listing = lake
        .store()
        .list_with_delimiter(Some(&dir))
        .await
        .map_err(|e| tributary_lake::Error::store(&dir, e))?;
    let live_since = chrono::Utc::now().timestamp_millis() - ABANDONED_AFTER_MS;
    let mut oldest: Option<u64> = None;
    for prefix in listing.common_prefixes {
        let Some(sink) = prefix.filename() else {
            continue;
        };
        if let Some(cursor) = read_cursor(lake, sink).await?
            && cursor.updated_at_ms >= live_since
        {
            oldest = Some(oldest.map_or(cursor.next_version, |o| o.min(cursor.next_version)));
        }
    }
    Ok(oldest)
}

/// Versions named by the `<version>.json` objects under `dir` from
/// `from` on, in order.
async fn versions_under(lake: &Lake, dir: &Path, from: u64) -> Result<Vec<u64>> {
    let offset = Path::from(format!("{dir}/{from:020}"));
    let objects: Vec<_> = lake
        .store()
        .list_with_offset(Some(dir), &offset)
        .try_collect()
        .await
        .map_err(|e| tributary_lake::Error::store(dir, e))?;
    let mut versions: Vec<u64> = objects
        .iter()
        .filter_map(|o| o.location.filename()?.strip_suffix(".json")?.parse().ok())
        .filter(|v| *v >= from)
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// Versions of the log entries from `from` on, in order.
pub(crate) async fn log_versions(lake: &Lake, from: u64) -> Result<Vec<u64>> {
    versions_under(lake, &Path::from("_delta_log"), from).await
}

/// How many versions from `from` on have a log entry or spooled events:
/// what a sink at `from` has yet to pass.
pub(crate) async fn pending_versions(lake: &Lake, from: u64) -> Result<u64> {
    let mut versions: HashSet<u64> = log_versions(lake, from).await?.into_iter().collect();
    versions.extend(versions_under(lake, &spool_dir(), from).await?);
    Ok(versions.len() as u64)
}

/// The first version after `missing` with a log entry or a spooled event.
pub(crate) async fn next_available(lake: &Lake, missing: u64) -> Result<Option<u64>> {
    let log = log_versions(lake, missing + 1).await?.first().copied();
    let spool = versions_under(lake, &spool_dir(), missing + 1)
        .await?
        .first()
        .copied();
    Ok(match (log, spool) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// Spools the events of every log entry before `version` that a
/// sink still delivered to has not passed, so that those entries may be
/// removed; then deletes the spooled events every such sink has passed.
pub async fn spool_before(lake: &Lake, version: u64) -> Result<()> {
    let oldest = oldest_cursor(lake).await?;
    let spooled_versions: HashSet<u64> = versions_under(lake, &spool_dir(), 0)
        .await?
        .into_iter()
        .collect();
    if let Some(oldest) = oldest {
        for v in oldest..version {
            if spooled_versions.contains(&v) {
                continue;
            }
            let Some(entry) = get_optional(lake, &log_entry(v)).await? else {
                continue;
            };
            let events = LogEntry::parse(v, &entry)?.events(table_uri(lake), v);
            let path = spooled(v);
            let body = serde_json::to_vec(&events).unwrap_or_default();
            lake.store()
                .put(&path, body.into())
                .await
                .map_err(|e| tributary_lake::Error::store(&path, e))?;
        }
    }
    for v in spooled_versions {
        if oldest.is_some_and(|o| v >= o) {
            continue;
        }
        let path = spooled(v);
        match lake.store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(tributary_lake::Error::store(&path, e).into()),
        }
    }
    Ok(())
}
