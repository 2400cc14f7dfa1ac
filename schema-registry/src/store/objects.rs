//! Reading and writing the registry's objects: create-only writes (and what
//! a lost race reads back), reads, deletes and listings, the JSON bodies,
//! and the lock of the in-memory caches.

use std::sync::Mutex;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{corrupt, store_error};
use super::{RegistryError, Result, SchemaRegistry};

/// `ids/<id>.json`, `fingerprints/<hex>.json`, `subjects/<s>/versions/<n>.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct UuidPointer {
    pub(super) uuid: Uuid,
}

/// The outcome of a create-only write.
pub(super) enum Created {
    /// Ours (now, or by an earlier attempt that wrote the same bytes).
    Ours,
    /// Someone else's; their bytes.
    Theirs(Bytes),
}

impl SchemaRegistry {
    pub(super) async fn create(&self, path: &Path, body: Vec<u8>) -> Result<Created> {
        let options = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(path, PutPayload::from(body.clone()), options)
            .await
        {
            Ok(_) => Ok(Created::Ours),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing =
                    self.read_opt(path)
                        .await?
                        .ok_or_else(|| RegistryError::Corrupt {
                            path: path.to_string(),
                            reason: "exists for a create-only write, then is gone".into(),
                        })?;
                if existing.as_ref() == body.as_slice() {
                    Ok(Created::Ours)
                } else {
                    Ok(Created::Theirs(existing))
                }
            }
            Err(source) => Err(store_error(path, source)),
        }
    }

    pub(super) async fn read_opt(&self, path: &Path) -> Result<Option<Bytes>> {
        let result = match self.store.get(path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(store_error(path, source)),
        };
        result
            .bytes()
            .await
            .map(Some)
            .map_err(|source| store_error(path, source))
    }

    pub(super) async fn delete_opt(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(store_error(path, source)),
        }
    }

    pub(super) async fn list_names(&self, prefix: &Path) -> Result<Vec<String>> {
        let objects: Vec<_> = self
            .store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|source| store_error(prefix, source))?;
        Ok(objects
            .iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect())
    }
}

pub(super) fn to_json(value: &impl Serialize) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(path, e))
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent whatever a panicking holder did.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
