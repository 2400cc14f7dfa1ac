//! Row files under `_tributary/` (staged rows, dead letters) as the
//! operations that rewrite them in place (forget, retention) list, read and
//! write them.

use deltalake::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload};
use tributary_lake::Lake;
use tributary_lake::layout::TRIBUTARY_DIR;
use tributary_lake::rowfile::{self, Codec, RowFile};

use crate::error::Result;

/// Every `.avro` object under `_tributary/<dir>/`.
pub(crate) async fn list(lake: &Lake, dir: &str) -> Result<Vec<ObjectMeta>> {
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

/// Reads a row file; `None` when it went away since the listing (compacted).
pub(crate) async fn read(lake: &Lake, path: &Path) -> Result<Option<RowFile>> {
    match tributary_lake::read_object(lake.store().as_ref(), path).await {
        Ok(bytes) => Ok(Some(RowFile::read(&bytes, path.as_ref())?)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes `rows` over the row file `file` at `path`, keeping its metadata.
pub(crate) async fn rewrite(
    lake: &Lake,
    path: &Path,
    file: &RowFile,
    rows: &RecordBatch,
) -> Result<()> {
    let metadata: Vec<(String, String)> = file
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("avro."))
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    let body = rowfile::write(rows, Codec::Zstd, metadata)?;
    lake.store()
        .put(path, PutPayload::from(body))
        .await
        .map_err(|e| tributary_lake::Error::store(path, e))?;
    Ok(())
}
