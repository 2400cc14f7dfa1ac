//! Opening the lake: the object store rooted at the table, and the Delta table.

use std::collections::HashMap;
use std::sync::{Arc, Once};

use deltalake::{DeltaTable, DeltaTableBuilder};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use tributary_config::{LakeConfig, S3Config};
use url::Url;

use crate::error::{Error, Result};
use crate::layout::PartitionId;

/// One table's lake: the object store under the table root (where Tributary's
/// `_tributary/…` objects live) and the Delta table's URL.
///
/// On S3 the store is the one delta-rs builds for the table (the same
/// credentials, retries and conditional writes as Delta commits use).
#[derive(Debug, Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    table_url: Url,
    storage_options: HashMap<String, String>,
    subject_columns: Vec<String>,
}

impl Lake {
    /// Opens the lake at `config.table_uri`: an `s3://` URI, or a local
    /// directory, which is created if it does not exist yet.
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
            Ok(url) if matches!(url.scheme(), "s3" | "s3a") => {
                return Self::open_s3(url, config);
            }
            Ok(url) if url.scheme().len() > 1 => {
                return Err(location_error(format!(
                    "scheme `{}` is not supported; use s3:// or a local directory",
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
            storage_options: HashMap::new(),
            subject_columns: config.subject_columns.clone(),
        })
    }

    fn open_s3(mut table_url: Url, config: &LakeConfig) -> Result<Lake> {
        let s3 = &config.s3;
        static REGISTER: Once = Once::new();
        REGISTER.call_once(|| deltalake::aws::register_handlers(None));
        if table_url.host_str().is_none_or(str::is_empty) {
            return Err(Error::TableLocation {
                uri: table_url.to_string(),
                reason: "an s3:// URI needs a bucket: s3://bucket/prefix".into(),
            });
        }
        if !table_url.path().ends_with('/') {
            table_url.set_path(&format!("{}/", table_url.path()));
        }
        let storage_options = s3_storage_options(s3);
        let log_store = DeltaTableBuilder::from_url(table_url.clone())
            .map(|b| b.with_storage_options(storage_options.clone()))
            .and_then(|b| b.build_storage())
            .map_err(|e| Error::Delta {
                url: table_url.to_string(),
                source: Box::new(e),
            })?;
        Ok(Lake {
            store: log_store.object_store(None),
            table_url,
            storage_options,
            subject_columns: config.subject_columns.clone(),
        })
    }

    /// The delta-rs storage options of this lake (empty for a local table).
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }

    /// A builder for the Delta table, with this lake's storage options.
    pub fn table_builder(&self) -> Result<DeltaTableBuilder> {
        DeltaTableBuilder::from_url(self.table_url.clone())
            .map(|b| b.with_storage_options(self.storage_options.clone()))
            .map_err(|e| self.delta_error(e))
    }

    /// The columns that identify the person a row is about
    /// (`lake.subject_columns`).
    pub fn subject_columns(&self) -> &[String] {
        &self.subject_columns
    }

    /// The object store, with paths relative to the table root.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The table's URL (`file:///…/` or `s3://bucket/prefix/`).
    pub fn table_url(&self) -> &Url {
        &self.table_url
    }

    /// Loads the Delta table; `None` if no commit exists yet.
    pub async fn load_table(&self) -> Result<Option<DeltaTable>> {
        let mut table = self
            .table_builder()?
            .build()
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

/// delta-rs (and object_store) options for `[lake.s3]`. Credentials are left
/// to the AWS credential chain.
///
/// `timeout` and `connect_timeout` are object_store client options;
/// `max_retries` and `retry_timeout` are parsed by delta-rs into the
/// object_store `RetryConfig` of every store it builds for the table.
fn s3_storage_options(s3: &S3Config) -> HashMap<String, String> {
    let mut options = HashMap::from([
        ("timeout".into(), format!("{}ms", s3.request_timeout_ms)),
        (
            "connect_timeout".into(),
            format!("{}ms", s3.connect_timeout_ms),
        ),
        ("max_retries".into(), s3.max_retries.to_string()),
        ("retry_timeout".into(), format!("{}ms", s3.retry_timeout_ms)),
    ]);
    if let Some(region) = &s3.region {
        options.insert("AWS_REGION".into(), region.clone());
    }
    if let Some(endpoint) = &s3.endpoint {
        options.insert("AWS_ENDPOINT_URL".into(), endpoint.clone());
    }
    if s3.allow_http {
        options.insert("AWS_ALLOW_HTTP".into(), "true".into());
    }
    if s3.path_style {
        options.insert("AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(), "false".into());
    }
    options
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::Duration;

    use deltalake::logstore::StorageConfig;
    use deltalake::logstore::object_store::ClientConfigKey;
    use deltalake::logstore::object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

    use super::*;

    #[test]
    fn s3_timeouts_and_retries_reach_the_object_store() {
        let s3 = S3Config {
            request_timeout_ms: 1_500,
            connect_timeout_ms: 700,
            max_retries: 3,
            retry_timeout_ms: 20_000,
            ..S3Config::default()
        };
        let options = s3_storage_options(&s3);
        let config = StorageConfig::parse_options(&options).unwrap();
        assert_eq!(config.retry.max_retries, 3);
        assert_eq!(config.retry.retry_timeout, Duration::from_secs(20));
        // deltalake-aws hands every key that names an S3 option to the
        // builder, which parses the durations when it builds the store.
        let builder = options
            .iter()
            .filter_map(|(k, v)| Some((AmazonS3ConfigKey::from_str(k).ok()?, v)))
            .fold(AmazonS3Builder::new(), |b, (k, v)| b.with_config(k, v));
        let timeout = |key| builder.get_config_value(&AmazonS3ConfigKey::Client(key));
        assert_eq!(timeout(ClientConfigKey::Timeout).as_deref(), Some("1500ms"));
        assert_eq!(
            timeout(ClientConfigKey::ConnectTimeout).as_deref(),
            Some("700ms")
        );
        builder
            .with_bucket_name("b")
            .with_region("us-east-1")
            .build()
            .unwrap();
    }
}
