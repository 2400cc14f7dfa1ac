//! The lake's local store: object_store's [`LocalFileSystem`], plus the
//! conditional update ([`PutMode::Update`]) that it does not implement, so
//! that rewrites in place (forget's and retention's of row files) are
//! conditional on the version they read on a local table as on S3.
//!
//! # How an update is made conditional
//!
//! A local file's e-tag is its inode, modification time and size (the
//! [`LocalFileSystem`] scheme). An update of `F` from version `V`:
//!
//! ```text
//! open F (gone ─► Precondition, as S3 answers a missing object)
//!   ─► flock F's inode, exclusively (every updater of that inode waits here)
//!   ─► F's e-tag now == V?  no ─► Precondition
//!   ─► write the new body to F#<digits> (a name listings skip)
//!   ─► exchange F#<digits> and F in one step (renameat2 RENAME_EXCHANGE)
//!        F gone meanwhile (a plain delete) ─► ENOENT: nothing is recreated,
//!        the temporary file is removed ─► Precondition
//!   ─► the file swapped out is not the locked inode (replaced meanwhile by
//!      a plain, unconditional write) ─► exchange back ─► Precondition
//!   ─► remove the swapped-out old version
//! ```
//!
//! The lock serializes updaters of one version: a second updater that read
//! `V` waits for the first, then sees another e-tag and fails, as If-Match
//! does on S3. It is an advisory `flock`, released by the kernel when the
//! process dies, so a killed run never leaves it held. Writers that do not
//! update conditionally (create-only staging, deletes after compaction or
//! replay) do not take it: the atomic exchange is what keeps a rewrite from
//! recreating a file they deleted. An exchange could swap out a file that
//! was deleted and created again at the same name between the check and the
//! exchange; the inode check after it catches that and puts the newer file
//! back (for that instant a reader could see the stale rewrite; only
//! unconditional writers can cause it, and S3 has no such window).
//!
//! Without an exchange call (platforms other than Linux and macOS), the new
//! body is renamed over `F` under the same lock: updaters still exclude one
//! another, but a delete between the check and the rename is undone.

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    UpdateVersion,
};

const STORE: &str = "LocalFileSystem";

/// [`LocalFileSystem`] with conditional updates (see the module docs).
#[derive(Debug)]
pub(crate) struct LocalStore {
    inner: LocalFileSystem,
}

impl LocalStore {
    pub(crate) fn new(inner: LocalFileSystem) -> LocalStore {
        LocalStore { inner }
    }

    /// Writes `payload` to `location` if its current version is `version`.
    async fn update(
        &self,
        location: &Path,
        payload: PutPayload,
        version: UpdateVersion,
    ) -> object_store::Result<PutResult> {
        let expected = version.e_tag.ok_or_else(|| object_store::Error::Generic {
            store: STORE,
            source: "ETag required for conditional put".into(),
        })?;
        let target = self.inner.path_to_filesystem(location)?;
        let precondition = |why: &str| object_store::Error::Precondition {
            path: location.to_string(),
            source: format!("{location}: {why}").into(),
        };
        // Open and lock the inode the path names now.
        let opened = target.clone();
        let locked = blocking(move || {
            let file = match std::fs::File::open(&opened) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                other => other?,
            };
            file.lock()?;
            Ok(Some(file))
        })
        .await
        .map_err(|e| io_error(&target, e))?;
        let Some(locked) = locked else {
            return Err(precondition("the object does not exist"));
        };
        let current = match self.inner.head(location).await {
            Ok(meta) => meta.e_tag,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(precondition("the object does not exist"));
            }
            Err(e) => return Err(e),
        };
        if current.as_deref() != Some(expected.as_str()) {
            return Err(precondition("the object changed since it was read"));
        }
        let body: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
        let swapped = target.clone();
        let outcome = blocking(move || swap_in(&swapped, &body, &locked))
            .await
            .map_err(|e| io_error(&target, e))?;
        match outcome {
            Swap::Done => {}
            Swap::Gone => return Err(precondition("the object was deleted")),
            Swap::Replaced => return Err(precondition("the object was replaced")),
        }
        let meta = self.inner.head(location).await?;
        Ok(PutResult {
            e_tag: meta.e_tag,
            version: None,
        })
    }
}

/// What [`swap_in`] did.
enum Swap {
    /// The new body is in place.
    Done,
    /// The file was deleted: nothing written.
    Gone,
    /// The file was replaced by another writer: nothing written.
    Replaced,
}

/// A suffix for temporary names: `#` and digits, which
/// [`LocalFileSystem`]'s listings skip.
fn temporary_name(target: &FsPath) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = target.as_os_str().to_owned();
    name.push(format!("#{}{n:06}", std::process::id()));
    PathBuf::from(name)
}

/// Puts `body` at `target` in place of the file `locked` holds open, unless
/// `target` was deleted or now names another file.
fn swap_in(target: &FsPath, body: &[u8], locked: &std::fs::File) -> std::io::Result<Swap> {
    let staged = temporary_name(target);
    std::fs::write(&staged, body)?;
    let result = exchange(&staged, target, locked);
    // The old version (or, when nothing was swapped, the new body).
    let _ = std::fs::remove_file(&staged);
    result
}

#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
fn exchange(staged: &FsPath, target: &FsPath, locked: &std::fs::File) -> std::io::Result<Swap> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use std::os::unix::fs::MetadataExt;
    match renameat_with(CWD, staged, CWD, target, RenameFlags::EXCHANGE) {
        Ok(()) => {}
        Err(rustix::io::Errno::NOENT) => return Ok(Swap::Gone),
        Err(e) => return Err(e.into()),
    }
    let old = std::fs::metadata(staged)?;
    let read = locked.metadata()?;
    if (old.dev(), old.ino()) == (read.dev(), read.ino()) {
        return Ok(Swap::Done);
    }
    // Another writer replaced the file after the check: put its file back.
    match renameat_with(CWD, staged, CWD, target, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(Swap::Replaced),
        // Our body was deleted at the name meanwhile: it stays deleted.
        Err(rustix::io::Errno::NOENT) => Ok(Swap::Gone),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
fn exchange(staged: &FsPath, target: &FsPath, _locked: &std::fs::File) -> std::io::Result<Swap> {
    if !target.exists() {
        return Ok(Swap::Gone);
    }
    std::fs::rename(staged, target)?;
    Ok(Swap::Done)
}

/// Runs blocking file work off the reactor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

fn io_error(path: &FsPath, source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: format!("conditional update of {}: {source}", path.display()).into(),
    }
}

impl std::fmt::Display for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match opts.mode {
            PutMode::Update(version) => self.update(location, payload, version).await,
            _ => self.inner.put_opts(location, payload, opts).await,
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
        self.inner.delete_stream(locations)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn version(meta: &ObjectMeta) -> PutMode {
        PutMode::Update(UpdateVersion {
            e_tag: meta.e_tag.clone(),
            version: meta.version.clone(),
        })
    }

    #[tokio::test]
    async fn an_update_from_a_stale_or_deleted_version_fails_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let path = Path::from("_tributary/staging/s/p/0.avro");
        store.put(&path, PutPayload::from("v1")).await.unwrap();
        let v1 = store.head(&path).await.unwrap();

        store
            .put_opts(&path, PutPayload::from("v2"), version(&v1).into())
            .await
            .unwrap();
        async fn read(store: &LocalStore, path: &Path) -> object_store::Result<Bytes> {
            store.get(path).await?.bytes().await
        }
        assert_eq!(read(&store, &path).await.unwrap(), "v2");

        // Stale: v1 was replaced by v2.
        let stale = store
            .put_opts(&path, PutPayload::from("v3"), version(&v1).into())
            .await
            .unwrap_err();
        assert!(
            matches!(stale, object_store::Error::Precondition { .. }),
            "{stale}"
        );
        assert_eq!(read(&store, &path).await.unwrap(), "v2");

        // Deleted: not recreated.
        let v2 = store.head(&path).await.unwrap();
        store.delete(&path).await.unwrap();
        let gone = store
            .put_opts(&path, PutPayload::from("v4"), version(&v2).into())
            .await
            .unwrap_err();
        assert!(
            matches!(gone, object_store::Error::Precondition { .. }),
            "{gone}"
        );
        assert!(matches!(
            store.head(&path).await,
            Err(object_store::Error::NotFound { .. })
        ));
        // No temporary file is left, and none would be listed.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("_tributary/staging/s/p"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_concurrent_updates_from_one_version_exactly_one_lands() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalStore::new(
            LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
        ));
        let path = Path::from("f.avro");
        for round in 0..20 {
            store.put(&path, PutPayload::from("base")).await.unwrap();
            let base = store.head(&path).await.unwrap();
            let writers: Vec<_> = (0..4)
                .map(|w| {
                    let (store, path, mode) = (store.clone(), path.clone(), version(&base));
                    tokio::spawn(async move {
                        store
                            .put_opts(&path, PutPayload::from(format!("w{w}")), mode.into())
                            .await
                    })
                })
                .collect();
            let mut landed = 0;
            for writer in writers {
                match writer.await.unwrap() {
                    Ok(_) => landed += 1,
                    Err(object_store::Error::Precondition { .. }) => {}
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
            assert_eq!(landed, 1, "round {round}");
        }
    }
}
