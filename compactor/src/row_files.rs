//! Row files under `_tributary/` (staged rows, dead letters) as the
//! operations that rewrite them in place (forget, retention) list, read and
//! write them.
//!
//! Other processes change these files at the same time: another forget or
//! retention run rewrites them, the compactor deletes staged files once
//! their rows are committed, a dead-letter replay retires files. So a
//! rewrite is a compare-and-swap ([`update`]): it is written only over the
//! version it was computed from (`If-Match` on S3, the local store's
//! conditional update on a local table); when another writer got there
//! first, the file is read again and the edit applied to what is there now;
//! a file deleted meanwhile stays deleted.
//!
//! ```text
//! read F (version V) ─► edit ─► keep: done
//!                              write over V ─► ok: done
//!                                            └► not V any more ─► read F again ─► edit …
//!                                                                 (F gone: Gone, never recreated)
//! ```

use deltalake::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use tributary_lake::Lake;
use tributary_lake::layout::TRIBUTARY_DIR;
use tributary_lake::rowfile::{self, Codec, RowFile};

use crate::error::{Error, Result};

/// Every `.avro` object under `_tributary/<dir>/`.
pub async fn list(lake: &Lake, dir: &str) -> Result<Vec<ObjectMeta>> {
    let prefix = Path::from(format!("{TRIBUTARY_DIR}/{dir}"));
    let mut objects: Vec<ObjectMeta> = lake
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| tributary_lake::Error::store(&prefix, e))?;
    objects.retain(|m| m.location.extension() == Some("avro"));
    Ok(objects)
}

/// A row file as read, with the object's metadata: its size, write time and
/// the version a rewrite of it is conditional on.
pub struct ReadRowFile {
    /// The rows and the file metadata.
    pub file: RowFile,
    /// The object as it was read.
    pub meta: ObjectMeta,
}

/// Reads a row file; `None` when it went away since the listing (compacted,
/// replayed, expired).
pub async fn read(lake: &Lake, path: &Path) -> Result<Option<ReadRowFile>> {
    let store_error = |e| tributary_lake::Error::store(path, e);
    let got = match lake.store().get(path).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store_error(e).into()),
    };
    let meta = got.meta.clone();
    let bytes = match got.bytes().await {
        Ok(bytes) => bytes,
        // Deleted while it was read (a local file unlinked mid-read).
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store_error(e).into()),
    };
    Ok(Some(ReadRowFile {
        file: RowFile::read(&bytes, path.as_ref())?,
        meta,
    }))
}

/// What an edit makes of a row file.
pub enum Edit {
    /// Nothing to change.
    Keep,
    /// These rows replace the file's (its metadata kept).
    Write(RecordBatch),
    /// The file goes. Unconditional (object stores have no conditional
    /// delete): only for an edit that holds for any later version of the
    /// file, as for retention's letters that are all past their age — the
    /// other rewrites remove or blank letters and keep each one's
    /// `written_at`, they never add one.
    Delete,
}

/// How an [`update`] ended.
#[derive(Debug)]
pub enum Updated<T> {
    /// The file was not there when read (gone since the listing).
    Missing,
    /// The edit of the version read last, with what the edit returned:
    /// written, deleted or kept (or, in a dry run, not written).
    Edited(T),
    /// The file was deleted by another process after it was read, before
    /// the edit could be written: it is not recreated.
    Gone,
}

/// Times a rewrite is computed again after losing a race, before giving up.
pub const ATTEMPTS: u32 = 10;

/// Reads the row file at `path`, applies `edit` and writes the result over
/// the version read, and only over that one: when another process changed
/// the file meanwhile, reads it again and applies `edit` again (so the
/// figures `edit` returns are those of the edit that landed); when it was
/// deleted, leaves it deleted. With `dry_run`, reads and edits only.
pub async fn update<T>(
    lake: &Lake,
    path: &Path,
    dry_run: bool,
    mut edit: impl FnMut(&ReadRowFile) -> Result<(Edit, T)>,
) -> Result<Updated<T>> {
    for attempt in 1..=ATTEMPTS {
        let Some(read) = read(lake, path).await? else {
            return Ok(if attempt == 1 {
                Updated::Missing
            } else {
                Updated::Gone
            });
        };
        let (change, figures) = edit(&read)?;
        if dry_run {
            return Ok(Updated::Edited(figures));
        }
        let rows = match change {
            Edit::Keep => return Ok(Updated::Edited(figures)),
            Edit::Delete => {
                return match lake.store().delete(path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                        Ok(Updated::Edited(figures))
                    }
                    Err(e) => Err(tributary_lake::Error::store(path, e).into()),
                };
            }
            Edit::Write(rows) => rows,
        };
        let body = rowfile::write(&rows, Codec::Zstd, kept_metadata(&read.file))?;
        let mode = PutMode::Update(UpdateVersion {
            e_tag: read.meta.e_tag.clone(),
            version: read.meta.version.clone(),
        });
        match lake
            .store()
            .put_opts(path, PutPayload::from(body), PutOptions::from(mode))
            .await
        {
            Ok(_) => return Ok(Updated::Edited(figures)),
            // Changed or deleted since it was read (a store that says so).
            Err(object_store::Error::Precondition { .. }) => {
                tracing::debug!(%path, attempt, "row file changed while it was rewritten; again");
            }
            Err(object_store::Error::NotFound { .. }) => return Ok(Updated::Gone),
            Err(e) => return Err(tributary_lake::Error::store(path, e).into()),
        }
    }
    Err(Error::RewriteContended {
        path: path.to_string(),
        attempts: ATTEMPTS,
    })
}

/// The metadata of `file` that its rewrite keeps: everything but the Avro
/// container's own keys (schema, codec), which the writer sets.
fn kept_metadata(file: &RowFile) -> Vec<(String, String)> {
    file.metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("avro."))
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}
