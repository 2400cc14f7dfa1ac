//! Opening the lake: the object store rooted at the table, and the Delta table.

use std::sync::Arc;

use deltalake::{DeltaTable, DeltaTableBuilder};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use tributary_config::LakeConfig;
use url::Url;

use crate::error::{Error, Result};
use crate::layout::PartitionId;

/// One table's lake: the object store under the table root (where Tributary's
/// `_tributary/…` objects live) and the Delta table's URL.
#[derive(Debug, Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    table_url: Url,
}

impl Lake {
    /// Opens the lake at `config.table_uri`, creating a local directory if it
    /// does not exist yet.
    pub fn open(config: &LakeConfig) -> Result<Lake> {
        let uri = config.table_uri.as_str();
        let location_error = |reason: String| Error::TableLocation {
            uri: uri.to_string(),
            reason,
        };
        let path = match Url::parse(uri) {
            Ok(url) if url.scheme() == "file" => url
                .to_file_path()
                .map_err(|()| location_error("not a local file path".into()))?,
            Ok(url) if url.scheme().len() > 1 => {
                return Err(location_error(format!(
                    "scheme `{}` is not supported yet; use a local directory",
                    url.scheme()
                )));
            }
            // No scheme (or a Windows drive letter): a local path.
            _ => std::path::PathBuf::from(uri),
        };
        std::fs::create_dir_all(&path)
            .map_err(|e| location_error(format!("cannot create directory: {e}")))?;
        let path = std::fs::canonicalize(&path).map_err(|e| location_error(e.to_string()))?;
        let table_url = Url::from_directory_path(&path)
            .map_err(|()| location_error("cannot be expressed as a file:// URL".into()))?;
        let store =
            LocalFileSystem::new_with_prefix(&path).map_err(|e| location_error(e.to_string()))?;
        Ok(Lake {
            store: Arc::new(store),
            table_url,
        })
    }

    /// The object store, with paths relative to the table root.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The table's URL (`file:///…/`).
    pub fn table_url(&self) -> &Url {
        &self.table_url
    }

    /// Loads the Delta table; `None` if no commit exists yet.
    pub async fn load_table(&self) -> Result<Option<DeltaTable>> {
        let mut table = DeltaTableBuilder::from_url(self.table_url.clone())
            .and_then(|b| b.build())
            .map_err(|e| self.delta_error(e))?;
        match table.load().await {
            Ok(()) => Ok(Some(table)),
            Err(deltalake::DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(self.delta_error(e)),
        }
    }

    /// The last position of `partition` committed to the table (its Delta
    /// `txn` watermark), if any.
    pub async fn watermark(
        &self,
        table: Option<&DeltaTable>,
        partition: &PartitionId,
    ) -> Result<Option<u64>> {
        let Some(table) = table else { return Ok(None) };
        let snapshot = table.snapshot().map_err(|e| self.delta_error(e))?;
        let version = snapshot
            .transaction_version(table.log_store().as_ref(), partition.app_id())
            .await
            .map_err(|e| self.delta_error(e))?;
        Ok(version.and_then(|v| u64::try_from(v).ok()))
    }

    /// Asks the object store for one small listing (the prefix of Tributary's
    /// own objects), to tell whether it answers. For readiness probes.
    pub async fn check_reachable(&self) -> Result<()> {
        let prefix = object_store::path::Path::from(crate::layout::TRIBUTARY_DIR);
        self.store
            .list_with_delimiter(Some(&prefix))
            .await
            .map(drop)
            .map_err(|e| Error::store(&prefix, e))
    }

    /// Wraps a delta-rs error with this table's URL.
    pub fn delta_error(&self, source: deltalake::DeltaTableError) -> Error {
        Error::Delta {
            url: self.table_url.to_string(),
            source: Box::new(source),
        }
    }
}
