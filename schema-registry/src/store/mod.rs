//! The registry's state on an object store, shared by stateless replicas.
//!
//! Every object that names a version is written once, with a create-only
//! write (`PutMode::Create`): the first writer wins, a writer that finds the
//! object already there re-reads it, and a write that finds its own bytes
//! (a retried write whose first attempt landed) counts as its own. No replica
//! is a leader and none holds state that another needs; each keeps an
//! in-memory cache of objects that never change once written.
//!
//! # Layout (under the store's prefix)
//!
//! ```text
//! schemas/<uuid>.json              {"uuid": "<uuid>", "id": <u32>, "schemaType": "AVRO"|"JSON",
//!                                   "schema": "<normalized text>"}   create-only; the existing id wins
//! ids/<id>.json                    {"uuid": "<uuid>"}                create-only
//! fingerprints/<16 hex>.json       {"uuid": "<uuid>"}                create-only (Avro only)
//! subjects/<subject>/versions/<n>.json  {"uuid": "<uuid>"}           create-only
//! subjects/<subject>/deleted/<n>.json   {}   version n is soft-deleted
//! subjects/<subject>/purged/<n>.json    {}   version n is permanently deleted
//! config/global.json               {"compatibility": "<LEVEL>"}      overwritten by PUT /config
//! config/subjects/<subject>.json   {"compatibility": "<LEVEL>"}      overwritten by PUT /config/{s}
//! ```
//!
//! `<subject>` is the subject name with every byte outside `[A-Za-z0-9_.-]`
//! (and a leading `.`) written as `=` and two uppercase hex digits, so any
//! name is one path segment: `orders-value` stays as is, `a/b` is `a=2Fb`.
//!
//! # Ids
//!
//! Confluent's 32-bit ids are assigned from 1 up. A replica claims the next
//! free id by creating `ids/<id>.json`, then creates `schemas/<uuid>.json`
//! with it. Two replicas registering one new schema at once may both claim
//! an id; the one whose `schemas/<uuid>.json` lands first is the schema's
//! id, and the other stays an alias of the same UUID (harmless: it serves
//! the same schema).
//!
//! # Versions
//!
//! A subject's version `n + 1` is written create-only after checking the
//! definition against the subject's live versions up to `n`:
//!
//! ```text
//!         ┌──────────── list subject ◀──────────────────────────────┐
//!         ▼                                                         │
//!   already a live version with this UUID? ── yes ─▶ that version   │
//!         │ no                                                      │
//!   compatible with live versions? ── no ─▶ 409                     │
//!         │ yes                                                     │
//!   create versions/<highest + 1>.json ── AlreadyExists ─▶ re-read: │
//!         │ created                          same UUID ─▶ done      │
//!         ▼                                  other UUID ────────────┘
//!       done
//! ```
//!
//! Version numbers are never reused, even after a permanent delete (whose
//! marker hides the version from every read but the version's number).
//! Soft and permanent deletes only add markers, so they never race with a
//! registration's create-only write.

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use object_store::ObjectStore;
use object_store::path::Path;
use uuid::Uuid;

use crate::schema::{Definition, Imports, Reference, SchemaType};

mod config;
mod error;
mod layout;
mod objects;
mod schemas;
mod subjects;

pub use error::{RegistryError, Result};
pub use schemas::StoredSchema;
pub use subjects::{SubjectVersion, VersionRef};

use error::store_error;

/// Registration gives up after this many lost races for one version.
const MAX_ATTEMPTS: usize = 1_000;
/// Parsed schemas kept in memory; the cache is emptied when it is full.
const SCHEMA_CACHE_ENTRIES: usize = 10_000;

/// The registry on an object store. Cheap to share (`Arc`); every method
/// takes `&self`.
#[derive(Debug)]
pub struct SchemaRegistry {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    name: String,
    /// The next id to try; 0 until the `ids/` listing has been read.
    next_id: AtomicU32,
    schemas: Mutex<HashMap<Uuid, Arc<StoredSchema>>>,
    /// `(subject, version)` → UUID: version objects never change.
    versions: Mutex<HashMap<(String, u32), Uuid>>,
}

impl SchemaRegistry {
    /// A registry named `name` (which goes into every UUID) in `store` under
    /// `prefix` (empty for the store's root).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, name: impl Into<String>) -> Self {
        Self {
            store,
            prefix,
            name: name.into(),
            next_id: AtomicU32::new(0),
            schemas: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// The registry's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks the store for one small listing, to tell whether it answers.
    pub async fn check_reachable(&self) -> Result<()> {
        let path = self.path(&["config"]);
        self.store
            .list_with_delimiter(Some(&path))
            .await
            .map(drop)
            .map_err(|source| store_error(&path, source))
    }

    /// Parses `text` as a definition of type `kind` that imports the
    /// versions `references` name.
    pub async fn parse(
        &self,
        kind: SchemaType,
        text: &str,
        references: Vec<Reference>,
    ) -> Result<Definition> {
        let imports = self.imports(&references).await?;
        Definition::parse_with_references(kind, text, references, imports)
            .map_err(|source| RegistryError::InvalidSchema { source })
    }

    /// What `references` import: each referenced version's definition under
    /// the reference's name, and (transitively) what it imports. Soft-deleted
    /// versions can still be imported.
    pub async fn imports(&self, references: &[Reference]) -> Result<Imports> {
        let mut imports = Imports::new();
        for reference in references {
            let found = self
                .version(
                    &reference.subject,
                    VersionRef::Number(reference.version),
                    true,
                )
                .await
                .map_err(|e| {
                    if e.is_store_error() {
                        e
                    } else {
                        RegistryError::InvalidReference {
                            reference: format!(
                                "{} -> {} version {}",
                                reference.name, reference.subject, reference.version
                            ),
                            reason: e.to_string(),
                        }
                    }
                })?;
            imports.extend(found.schema.definition.imports_as(&reference.name));
        }
        Ok(imports)
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;
    use crate::schema::Reference;

    fn registry(store: &Arc<dyn ObjectStore>) -> SchemaRegistry {
        SchemaRegistry::new(store.clone(), Path::from("registry"), "test")
    }

    fn record(fields: &str) -> Definition {
        Definition::parse(
            SchemaType::Avro,
            &format!(r#"{{"type":"record","name":"R","fields":[{fields}]}}"#),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn registration_is_idempotent_and_versions_grow() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let r = registry(&store);
        let v1 = record(r#"{"name":"a","type":"long"}"#);
        let v2 = record(r#"{"name":"a","type":"long"},{"name":"b","type":"string","default":""}"#);
        let first = r.register("s", &v1).await.unwrap();
        assert_eq!((first.version, first.schema.id), (1, 1));
        let again = r.register("s", &v1).await.unwrap();
        assert_eq!((again.version, again.schema.uuid), (1, first.schema.uuid));
        let second = r.register("s", &v2).await.unwrap();
        assert_eq!((second.version, second.schema.id), (2, 2));
        // Another replica on the same store sees the same history.
        let other = registry(&store);
        let latest = other.version("s", VersionRef::Latest, false).await.unwrap();
        assert_eq!(latest.schema.uuid, second.schema.uuid);
        assert_eq!(other.schema_by_id(1).await.unwrap().uuid, first.schema.uuid);
        let fingerprint = v1.fingerprint().unwrap();
        assert_eq!(
            other.schema_by_fingerprint(fingerprint).await.unwrap().id,
            1
        );
        // A refused definition gets no id.
        let incompatible = record(r#"{"name":"z","type":"long"}"#);
        let refused = r.register("s", &incompatible).await.unwrap_err();
        assert_eq!(refused.code(), 409, "{refused}");
        assert!(refused.to_string().contains("'z'"), "{refused}");
        // A third schema from the other replica gets the next id.
        let v3 = record(r#"{"name":"a","type":"long"},{"name":"c","type":"int","default":0}"#);
        assert_eq!(other.register("t", &v3).await.unwrap().schema.id, 3);
        assert_eq!(r.subjects(false).await.unwrap(), ["s", "t"]);
    }

    #[tokio::test]
    async fn deletes_hide_versions_but_not_schemas() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let r = registry(&store);
        let v1 = r
            .register("s", &record(r#"{"name":"a","type":"long"}"#))
            .await
            .unwrap();
        assert_eq!(r.delete_subject("s", true).await.unwrap_err().code(), 40405);
        assert_eq!(r.delete_subject("s", false).await.unwrap(), [1]);
        assert_eq!(
            r.delete_subject("s", false).await.unwrap_err().code(),
            40404
        );
        assert_eq!(r.versions("s", false).await.unwrap_err().code(), 40401);
        assert_eq!(r.versions("s", true).await.unwrap().len(), 1);
        assert_eq!(r.subjects(true).await.unwrap(), ["s"]);
        assert!(r.subjects(false).await.unwrap().is_empty());
        assert_eq!(r.delete_subject("s", true).await.unwrap(), [1]);
        assert_eq!(r.versions("s", true).await.unwrap_err().code(), 40401);
        // Lookups by UUID and id keep working.
        assert_eq!(r.schema_by_uuid(v1.schema.uuid).await.unwrap().id, 1);
        // The subject starts again after the highest number ever used.
        let again = r
            .register("s", &record(r#"{"name":"a","type":"long"}"#))
            .await
            .unwrap();
        assert_eq!((again.version, again.schema.id), (2, 1));
    }

    #[tokio::test]
    async fn references_import_other_versions_on_every_replica() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let r = registry(&store);
        let meta = "syntax = \"proto3\"; package m; message Meta { string source = 1; }";
        let meta = r.parse(SchemaType::Protobuf, meta, vec![]).await.unwrap();
        r.register("meta.proto", &meta).await.unwrap();
        let envelope = "syntax = \"proto3\"; import \"meta.proto\"; message E { m.Meta meta = 1; }";
        let reference = |version| Reference {
            name: "meta.proto".into(),
            subject: "meta.proto".into(),
            version,
        };
        let missing = r
            .parse(SchemaType::Protobuf, envelope, vec![reference(2)])
            .await
            .unwrap_err();
        assert_eq!(missing.code(), 42201, "{missing}");
        assert!(missing.to_string().contains("meta.proto"), "{missing}");
        let unreferenced = r.parse(SchemaType::Protobuf, envelope, vec![]).await;
        assert_eq!(unreferenced.unwrap_err().code(), 42201);
        let definition = r
            .parse(SchemaType::Protobuf, envelope, vec![reference(1)])
            .await
            .unwrap();
        let registered = r.register("e", &definition).await.unwrap();
        // Another replica reads it back, importing the referenced version.
        let other = registry(&store);
        let read = other.schema_by_id(registered.schema.id).await.unwrap();
        assert_eq!(read.definition.references(), [reference(1)]);
        assert_eq!(read.uuid, registered.schema.uuid);
        // Avro definitions may not reference anything.
        let avro = r#"{"type":"record","name":"R","fields":[]}"#;
        let refused = r.parse(SchemaType::Avro, avro, vec![reference(1)]).await;
        assert_eq!(refused.unwrap_err().code(), 42201);

        // The referenced version cannot be deleted, softly or as a subject,
        // while a version (soft-deleted or not) imports it.
        assert_eq!(
            r.referenced_by("meta.proto", 1).await.unwrap(),
            [registered.schema.id]
        );
        let version = VersionRef::Number(1);
        for refused in [
            r.delete_version("meta.proto", version, false).await,
            r.delete_subject("meta.proto", false).await.map(|_| 1),
        ] {
            let refused = refused.unwrap_err();
            assert_eq!(refused.code(), 42206, "{refused}");
            let id = registered.schema.id.to_string();
            assert!(refused.to_string().contains(&id), "{refused}");
        }
        r.delete_version("e", version, false).await.unwrap();
        let still = r.delete_version("meta.proto", version, false).await;
        assert_eq!(still.unwrap_err().code(), 42206);
        // Once the importing version is gone for good, the referenced one
        // may go, and the other replica agrees.
        r.delete_version("e", version, true).await.unwrap();
        assert!(
            other
                .referenced_by("meta.proto", 1)
                .await
                .unwrap()
                .is_empty()
        );
        other
            .delete_version("meta.proto", version, false)
            .await
            .unwrap();
        other
            .delete_version("meta.proto", version, true)
            .await
            .unwrap();
    }
}
