//! `tributary dead-letters list|show|replay`: what the dead-letter store
//! holds, counted by reason, source partition and day; a sample of entries
//! with their errors (payloads only when asked for: they may hold personal
//! data); and [`replay`], which runs selected dead letters through the
//! current decoder into the table exactly once.

pub mod replay;

use std::collections::BTreeMap;

use base64::Engine;
use futures::TryStreamExt;
use object_store::ObjectMeta;
use object_store::path::Path;
use serde::Serialize;
use tributary_lake::Lake;
use tributary_lake::dead_letter::read_dead_letters;
use tributary_lake::layout::TRIBUTARY_DIR;

use crate::error::Result;
use crate::progress::Progress;

/// The dead letters counted (`tributary dead-letters list`).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Dead-letter files read.
    pub files: u64,
    /// Entries in them.
    pub letters: u64,
    /// Entries by reason (`malformed_json`, `decode`, ...).
    pub by_reason: BTreeMap<String, u64>,
    /// Entries by `<stream>/<partition>`.
    pub by_partition: BTreeMap<String, u64>,
    /// Entries by the UTC day their file was written.
    pub by_day: BTreeMap<String, u64>,
}

/// One dead letter as `tributary dead-letters show` prints it.
#[derive(Debug, Serialize)]
pub struct Shown {
    /// The dead-letter file.
    pub object: String,
    /// `<stream>/<partition>`.
    pub partition: String,
    /// The message's source position.
    pub position: u64,
    /// The rejected element of the explode path, when only it was rejected.
    pub element: Option<u64>,
    /// Why.
    pub reason: String,
    /// The error, naming the bad value's place.
    pub error: String,
    /// The message's full length.
    pub payload_bytes: u64,
    /// The kept payload (UTF-8 text, else base64), only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// Which dead letters `show` prints and `replay` replays.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this reason.
    pub reason: Option<String>,
    /// Only this `<stream>` or `<stream>/<partition>`.
    pub partition: Option<String>,
    /// Only files written before this time.
    pub written_before: Option<chrono::DateTime<chrono::Utc>>,
}

impl Selection {
    /// Whether the file at `meta` (of `partition`, `<stream>/<partition>`)
    /// may hold selected letters.
    fn file(&self, partition: &str, meta: &ObjectMeta) -> bool {
        let partition_wanted = self
            .partition
            .as_deref()
            .is_none_or(|p| partition == p || partition.starts_with(&format!("{p}/")));
        partition_wanted && self.written_before.is_none_or(|t| meta.last_modified < t)
    }

    /// Whether a letter of a selected file with `reason` is selected.
    fn reason(&self, reason: &str) -> bool {
        self.reason.as_deref().is_none_or(|r| r == reason)
    }
}

/// Which dead letters `show` prints.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Which ones.
    pub selection: Selection,
    /// At most this many.
    pub limit: usize,
    /// Include payloads.
    pub payload: bool,
}

/// Counts every dead letter of the table.
pub async fn list(lake: &Lake) -> Result<Summary> {
    let files = dead_letter_files(lake).await?;
    let mut summary = Summary::default();
    let mut progress = Progress::new("dead-letter files read", files.len() as u64);
    for meta in files {
        let partition = partition_of(&meta.location);
        let day = meta.last_modified.format("%Y-%m-%d").to_string();
        let letters = read(lake, &meta.location).await?;
        summary.files += 1;
        summary.letters += letters.len() as u64;
        *summary.by_partition.entry(partition).or_default() += letters.len() as u64;
        *summary.by_day.entry(day).or_default() += letters.len() as u64;
        for letter in letters {
            *summary.by_reason.entry(letter.reason).or_default() += 1;
        }
        progress.step();
    }
    Ok(summary)
}

/// The first `filter.limit` dead letters `filter` selects, oldest file
/// first.
pub async fn show(lake: &Lake, filter: &Filter) -> Result<Vec<Shown>> {
    let mut shown = Vec::new();
    for meta in dead_letter_files(lake).await? {
        let partition = partition_of(&meta.location);
        if !filter.selection.file(&partition, &meta) {
            continue;
        }
        for letter in read(lake, &meta.location).await? {
            if !filter.selection.reason(&letter.reason) {
                continue;
            }
            if shown.len() >= filter.limit {
                return Ok(shown);
            }
            let payload = filter
                .payload
                .then(|| match std::str::from_utf8(&letter.payload) {
                    Ok(text) => text.to_string(),
                    Err(_) => base64::engine::general_purpose::STANDARD.encode(&letter.payload),
                });
            shown.push(Shown {
                object: meta.location.to_string(),
                partition: partition.clone(),
                position: letter.position,
                element: letter.element,
                reason: letter.reason,
                error: letter.error,
                payload_bytes: letter.payload_bytes,
                payload,
            });
        }
    }
    Ok(shown)
}

/// Every dead-letter file, oldest first.
async fn dead_letter_files(lake: &Lake) -> Result<Vec<ObjectMeta>> {
    let dir = Path::from(format!("{TRIBUTARY_DIR}/dead-letter"));
    let mut files: Vec<ObjectMeta> = lake
        .store()
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| tributary_lake::Error::store(&dir, e))?;
    files.retain(|meta| meta.location.extension() == Some("avro"));
    files.sort_by(|a, b| (a.last_modified, &a.location).cmp(&(b.last_modified, &b.location)));
    Ok(files)
}

async fn read(lake: &Lake, path: &Path) -> Result<Vec<tributary_lake::dead_letter::StoredLetter>> {
    let bytes = tributary_lake::read_object(lake.store().as_ref(), path).await?;
    Ok(read_dead_letters(&bytes, path.as_ref())?)
}

/// `<stream>/<partition>` of a dead-letter file's path
/// (`_tributary/dead-letter/<stream>/<partition>/<file>`).
fn partition_of(path: &Path) -> String {
    let parts: Vec<_> = path.parts().collect();
    match parts
        .len()
        .checked_sub(3)
        .and_then(|at| parts.get(at..parts.len() - 1))
    {
        Some([stream, partition]) => format!("{}/{}", stream.as_ref(), partition.as_ref()),
        _ => String::new(),
    }
}
