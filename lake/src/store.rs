//! Opening the lake: the object store rooted at the table, and the Delta table.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Once};

use bytes::Bytes;
use deltalake::logstore::object_store::client::{HttpError, HttpErrorKind};
use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use tributary_config::{LakeConfig, S3Config};
use url::Url;

use crate::error::{Error, Result};
use crate::layout::PartitionId;
use crate::local::LocalStore;

/// One table's lake: the object store under the table root (where Tributary's
/// `_tributary/…` objects live) and the Delta table's URL.
///
/// On S3 the store is the one delta-rs builds for the table (the same
/// credentials, retries and conditional writes as Delta commits use), which
/// also repeats create-only writes and deletes that timed out (a repeated
/// create that finds its own first attempt is handled like any clash on the
/// position chain).
#[derive(Debug, Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    table_url: Url,
    storage_options: HashMap<String, String>,
    subject_columns: Vec<String>,
    redact_columns: Vec<String>,
    partition_columns: Vec<String>,
    max_partition_values: usize,
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
            store: Arc::new(LocalStore::new(store)),
            table_url,
            storage_options: HashMap::new(),
            subject_columns: config.subject_columns.clone(),
            redact_columns: config.redact_columns.clone(),
            partition_columns: config.partition_columns(),
            max_partition_values: config.max_partition_values,
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
            store: Arc::new(RetryingStore {
                inner: log_store.object_store(None),
                max_retries: s3.max_retries,
            }),
            table_url,
            storage_options,
            subject_columns: config.subject_columns.clone(),
            redact_columns: config.redact_columns.clone(),
            partition_columns: config.partition_columns(),
            max_partition_values: config.max_partition_values,
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

    /// The free-text columns whose mentions of a subject are redacted
    /// (`lake.redact_columns`).
    pub fn redact_columns(&self) -> &[String] {
        &self.redact_columns
    }

    /// The partition columns of a new table (`lake.partition_by`, with
    /// `"hour"` as the `_hour` column).
    pub fn partition_columns(&self) -> &[String] {
        &self.partition_columns
    }

    /// `lake.max_partition_values`.
    pub fn max_partition_values(&self) -> usize {
        self.max_partition_values
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
        // Without a log, delta-kernel logs an error for a missing table
        // before reporting it; one listing spares every caller that noise.
        let log = Path::from("_delta_log");
        let mut listed = self.store.list(Some(&log));
        if listed.next().await.is_none() {
            return Ok(None);
        }
        drop(listed);
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

/// The lake's S3 store: object_store's S3 client, which also repeats, up to
/// `max_retries` times, the writes that client does not repeat after a
/// timeout or a connection cut while awaiting the answer (when the write may
/// or may not have happened): create-only puts and deletes.
///
/// Repeating them is safe for Tributary's objects:
///
/// * a create-only put whose first attempt did land fails with
///   `AlreadyExists`, which the position chain already handles as "a file
///   from this position is staged" by reading that file's `last` position
///   (here its own), so the batch is neither lost nor staged twice;
/// * deleting an object that is already gone succeeds.
///
/// Any other create-only writer on this store must likewise read
/// `AlreadyExists` as "maybe my own earlier attempt": the lease module
/// compares the existing object with the one it wrote.
///
/// Conditional updates (`PutMode::Update`) are not repeated: a first attempt
/// that landed would make the repeat fail as if another writer had won.
#[derive(Debug)]
struct RetryingStore {
    inner: Arc<dyn ObjectStore>,
    max_retries: usize,
}

/// Parallel deletes of one `delete_stream` call.
const DELETE_CONCURRENCY: usize = 8;

/// Whether `error` is one after which a write's outcome is unknown: a
/// timeout, or the connection cut while the answer was awaited.
fn outcome_unknown(error: &object_store::Error) -> bool {
    let object_store::Error::Generic { source, .. } = error else {
        return false;
    };
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(e) = next {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Timeout | HttpErrorKind::Interrupted
            );
        }
        next = e.source();
    }
    false
}

impl std::fmt::Display for RetryingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Retrying({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for RetryingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if !matches!(opts.mode, PutMode::Create) {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let mut retries = 0;
        loop {
            match self
                .inner
                .put_opts(location, payload.clone(), opts.clone())
                .await
            {
                Err(e) if retries < self.max_retries && outcome_unknown(&e) => retries += 1,
                result => return result,
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let (inner, max_retries) = (Arc::clone(&self.inner), self.max_retries);
        locations
            .map_ok(move |location| {
                let inner = Arc::clone(&inner);
                async move {
                    let mut retries = 0;
                    loop {
                        match inner.delete(&location).await {
                            Err(e) if retries < max_retries && outcome_unknown(&e) => retries += 1,
                            result => return result.map(|()| location),
                        }
                    }
                }
            })
            .try_buffered(DELETE_CONCURRENCY)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// The whole object at `path`; errors name the path.
pub async fn read_object(store: &dyn ObjectStore, path: &Path) -> Result<Bytes> {
    let store_error = |e| Error::store(path, e);
    store
        .get(path)
        .await
        .map_err(store_error)?
        .bytes()
        .await
        .map_err(store_error)
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

    use std::sync::atomic::{AtomicUsize, Ordering};

    use object_store::memory::InMemory;

    use crate::chain::{self, META_LAST_POSITION, StageOutcome};
    use crate::layout::PartitionId;
    use crate::rowfile::{self, Codec};
    use deltalake::arrow::array::{ArrayRef, Int64Array};
    use deltalake::arrow::record_batch::RecordBatch;

    /// An in-memory store whose next `timeouts` create-only puts and deletes
    /// time out: after doing the write when `landed` (the answer was lost),
    /// before it otherwise.
    #[derive(Debug, Clone)]
    struct TimingOut {
        inner: Arc<InMemory>,
        timeouts: Arc<AtomicUsize>,
        landed: bool,
    }

    impl TimingOut {
        fn new(timeouts: usize, landed: bool) -> TimingOut {
            TimingOut {
                inner: Arc::new(InMemory::new()),
                timeouts: Arc::new(AtomicUsize::new(timeouts)),
                landed,
            }
        }

        /// Whether the next write times out.
        fn due(&self) -> bool {
            self.timeouts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        }
    }

    /// A timeout as object_store's HTTP client reports it.
    fn timeout() -> object_store::Error {
        let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
        object_store::Error::Generic {
            store: "TimingOut",
            source: Box::new(HttpError::new(HttpErrorKind::Timeout, timed_out)),
        }
    }

    impl std::fmt::Display for TimingOut {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "TimingOut")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for TimingOut {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            let due = matches!(opts.mode, PutMode::Create) && self.due();
            if due && !self.landed {
                return Err(timeout());
            }
            let result = self.inner.put_opts(location, payload, opts).await?;
            if due { Err(timeout()) } else { Ok(result) }
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            let this = self.clone();
            locations
                .and_then(move |location| {
                    let this = this.clone();
                    async move {
                        let due = this.due();
                        if due && !this.landed {
                            return Err(timeout());
                        }
                        this.inner.delete(&location).await?;
                        if due { Err(timeout()) } else { Ok(location) }
                    }
                })
                .boxed()
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn retrying(inner: TimingOut, max_retries: usize) -> RetryingStore {
        RetryingStore {
            inner: Arc::new(inner),
            max_retries,
        }
    }

    /// A row file covering positions `[first, last]`.
    fn row_file(first: u64, last: u64) -> Bytes {
        let positions: ArrayRef = Arc::new(Int64Array::from(vec![first as i64]));
        let batch = RecordBatch::try_from_iter([("_position", positions)]).unwrap();
        rowfile::write(
            &batch,
            Codec::Zstd,
            [(META_LAST_POSITION, last.to_string())],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn timed_out_row_file_put_is_repeated_and_staged_once() {
        let p = PartitionId::new("s", "p");
        // The answer lost after the write: the repeat finds the file, which
        // the chain reads as staged up to its own last position.
        for (landed, outcome) in [
            (false, StageOutcome::Staged),
            (true, StageOutcome::AlreadyStaged { existing_last: 99 }),
        ] {
            let store = retrying(TimingOut::new(2, landed), 3);
            let staged = chain::stage(&store, &p, 0, row_file(0, 99)).await.unwrap();
            assert_eq!(staged, outcome, "landed: {landed}");
            assert_eq!(chain::staged_files(&store, &p).await.unwrap().len(), 1);
            assert_eq!(
                chain::resume_after(&store, &p, None).await.unwrap(),
                Some(99)
            );
        }
    }

    #[tokio::test]
    async fn timed_out_delete_is_repeated() {
        for landed in [false, true] {
            let store = retrying(TimingOut::new(1, landed), 3);
            let path = Path::from("a");
            store.put(&path, PutPayload::from("x")).await.unwrap();
            store.delete(&path).await.unwrap();
            let gone = store.head(&path).await.unwrap_err();
            assert!(
                matches!(gone, object_store::Error::NotFound { .. }),
                "{gone}"
            );
        }
    }

    #[tokio::test]
    async fn repeats_are_bounded_by_max_retries() {
        let p = PartitionId::new("s", "p");
        let store = retrying(TimingOut::new(3, false), 2);
        let err = chain::stage(&store, &p, 0, row_file(0, 9))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("object store"), "{err}");
        // Other errors are not repeated.
        assert!(!outcome_unknown(&object_store::Error::NotImplemented {
            operation: "x".into(),
            implementer: "y".into(),
        }));
    }
}
