//! Schemas by UUID, Confluent id and fingerprint: storing a definition and
//! claiming its id, and looking it up (through the in-memory cache).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use object_store::path::Path;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::corrupt;
use super::objects::{Created, UuidPointer, decode, lock, to_json};
use super::{MAX_ATTEMPTS, RegistryError, Result, SCHEMA_CACHE_ENTRIES, SchemaRegistry};
use crate::schema::{Definition, Reference, SchemaType};

/// A registered schema: its definition, UUID and Confluent id.
#[derive(Debug, Clone)]
pub struct StoredSchema {
    /// The version's UUID.
    pub uuid: Uuid,
    /// Its Confluent id.
    pub id: u32,
    /// The parsed definition; [`Definition::text`] is what is served.
    pub definition: Definition,
}

/// `schemas/<uuid>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct SchemaRecord {
    uuid: Uuid,
    id: u32,
    #[serde(rename = "schemaType")]
    schema_type: SchemaType,
    schema: String,
    /// The versions it imports (Protobuf).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    references: Vec<Reference>,
}

impl SchemaRegistry {
    /// Stores `definition` (if new) and returns it with its id.
    pub async fn put_schema(&self, definition: &Definition) -> Result<Arc<StoredSchema>> {
        let uuid = definition.uuid(&self.name);
        if let Some(found) = self.schema_by_uuid_opt(uuid).await? {
            return Ok(found);
        }
        let id = self.claim_id(uuid).await?;
        let record = SchemaRecord {
            uuid,
            id,
            schema_type: definition.kind(),
            schema: definition.text().to_string(),
            references: definition.references().to_vec(),
        };
        let path = self.path(&["schemas", &format!("{uuid}.json")]);
        let body = to_json(&record);
        let stored = match self.create(&path, body).await? {
            Created::Ours => Arc::new(StoredSchema {
                uuid,
                id,
                definition: definition.clone(),
            }),
            // Another replica registered it first: its id wins, ours stays
            // an alias of the same UUID.
            Created::Theirs(bytes) => self.decode_schema(&path, &bytes).await?,
        };
        if let Some(fingerprint) = definition.fingerprint() {
            let path = self.path(&["fingerprints", &format!("{fingerprint:016x}.json")]);
            // First writer wins; another schema with the same canonical form
            // (differing only in defaults, docs or aliases) keeps it.
            self.create(&path, to_json(&UuidPointer { uuid })).await?;
        }
        self.cache_schema(stored.clone());
        Ok(stored)
    }

    /// The schema named `uuid`.
    pub async fn schema_by_uuid(&self, uuid: Uuid) -> Result<Arc<StoredSchema>> {
        self.schema_by_uuid_opt(uuid)
            .await?
            .ok_or_else(|| RegistryError::SchemaNotFound {
                what: format!("guid {uuid}"),
            })
    }

    /// The schema with Confluent id `id`.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<StoredSchema>> {
        let path = self.path(&["ids", &format!("{id}.json")]);
        self.schema_by_pointer(&path, format!("id {id}")).await
    }

    /// The Avro schema whose Parsing Canonical Form has this CRC-64-AVRO
    /// fingerprint (the first registered, if several share it).
    pub async fn schema_by_fingerprint(&self, fingerprint: u64) -> Result<Arc<StoredSchema>> {
        let path = self.path(&["fingerprints", &format!("{fingerprint:016x}.json")]);
        self.schema_by_pointer(&path, format!("fingerprint {fingerprint:016x}"))
            .await
    }

    /// The schema a `{"uuid"}` pointer object at `path` names (`what` names
    /// the lookup in the not-found error). A pointer claimed by a replica that
    /// crashed before writing the schema points at nothing.
    async fn schema_by_pointer(&self, path: &Path, what: String) -> Result<Arc<StoredSchema>> {
        let not_found = || RegistryError::SchemaNotFound { what: what.clone() };
        let Some(bytes) = self.read_opt(path).await? else {
            return Err(not_found());
        };
        let pointer: UuidPointer = decode(path, &bytes)?;
        self.schema_by_uuid_opt(pointer.uuid)
            .await?
            .ok_or_else(not_found)
    }

    pub(super) async fn schema_by_uuid_opt(&self, uuid: Uuid) -> Result<Option<Arc<StoredSchema>>> {
        if let Some(found) = lock(&self.schemas).get(&uuid) {
            return Ok(Some(found.clone()));
        }
        let path = self.path(&["schemas", &format!("{uuid}.json")]);
        let Some(bytes) = self.read_opt(&path).await? else {
            return Ok(None);
        };
        let stored = self.decode_schema(&path, &bytes).await?;
        self.cache_schema(stored.clone());
        Ok(Some(stored))
    }

    async fn decode_schema(&self, path: &Path, bytes: &[u8]) -> Result<Arc<StoredSchema>> {
        let record: SchemaRecord = decode(path, bytes)?;
        // Boxed: importing a version decodes its schema, which may import.
        let imports = Box::pin(self.imports(&record.references)).await?;
        let definition = Definition::parse_with_references(
            record.schema_type,
            &record.schema,
            record.references,
            imports,
        )
        .map_err(|e| corrupt(path, e))?;
        Ok(Arc::new(StoredSchema {
            uuid: record.uuid,
            id: record.id,
            definition,
        }))
    }

    fn cache_schema(&self, stored: Arc<StoredSchema>) {
        let mut cache = lock(&self.schemas);
        if cache.len() >= SCHEMA_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(stored.uuid, stored);
    }

    /// Claims the next free id for `uuid`.
    async fn claim_id(&self, uuid: Uuid) -> Result<u32> {
        let mut next = self.next_id.load(Ordering::Relaxed);
        if next == 0 {
            next = self.highest_id().await? + 1;
        }
        let body = to_json(&UuidPointer { uuid });
        for _ in 0..MAX_ATTEMPTS {
            let path = self.path(&["ids", &format!("{next}.json")]);
            match self.create(&path, body.clone()).await? {
                Created::Ours => {
                    self.next_id.fetch_max(next + 1, Ordering::Relaxed);
                    return Ok(next);
                }
                // Taken: other replicas have been registering; skip past
                // everything they claimed.
                Created::Theirs(_) => next = (self.highest_id().await? + 1).max(next + 1),
            }
        }
        Err(RegistryError::Contention {
            subject: format!("(ids for {uuid})"),
        })
    }

    async fn highest_id(&self) -> Result<u32> {
        let names = self.list_names(&self.path(&["ids"])).await?;
        Ok(names
            .iter()
            .filter_map(|n| n.strip_suffix(".json")?.parse::<u32>().ok())
            .max()
            .unwrap_or(0))
    }
}
