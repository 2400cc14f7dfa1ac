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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::{Path, PathPart};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::schema::{Compatibility, Definition, SchemaError, SchemaType};

/// Registration gives up after this many lost races for one version.
const MAX_ATTEMPTS: usize = 1_000;
/// Parsed schemas kept in memory; the cache is emptied when it is full.
const SCHEMA_CACHE_ENTRIES: usize = 10_000;

/// What a registry operation can fail with. [`RegistryError::code`] is the
/// Confluent error code the REST API answers with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The subject has no versions (or only permanently deleted ones).
    #[error("subject `{subject}` not found")]
    SubjectNotFound {
        /// The subject.
        subject: String,
    },
    /// The subject has no such (live) version.
    #[error("version {version} of subject `{subject}` not found")]
    VersionNotFound {
        /// The subject.
        subject: String,
        /// The version asked for.
        version: String,
    },
    /// No schema with this id, UUID or fingerprint, or not in this subject.
    #[error("schema {what} not found")]
    SchemaNotFound {
        /// Which schema, e.g. `id 7`.
        what: String,
    },
    /// A soft delete of a subject that is already soft-deleted.
    #[error("subject `{subject}` was soft deleted; set permanent=true to delete it permanently")]
    SubjectSoftDeleted {
        /// The subject.
        subject: String,
    },
    /// A permanent delete of a subject that still has live versions.
    #[error(
        "subject `{subject}` was not soft deleted first; delete it without permanent=true first"
    )]
    SubjectNotSoftDeleted {
        /// The subject.
        subject: String,
    },
    /// A soft delete of a version that is already soft-deleted.
    #[error(
        "version {version} of subject `{subject}` was soft deleted; set permanent=true to delete it permanently"
    )]
    VersionSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// A permanent delete of a live version.
    #[error(
        "version {version} of subject `{subject}` was not soft deleted first; delete it without permanent=true first"
    )]
    VersionNotSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// The subject has no subject-level compatibility level.
    #[error("subject `{subject}` has no subject-level compatibility configured")]
    SubjectCompatibilityNotConfigured {
        /// The subject.
        subject: String,
    },
    /// The definition is incompatible with the subject's versions.
    #[error(
        "schema being registered is incompatible with an earlier schema of subject `{subject}` ({level}): {}",
        messages.join("; ")
    )]
    Incompatible {
        /// The subject.
        subject: String,
        /// Its compatibility level.
        level: Compatibility,
        /// One message per problem.
        messages: Vec<String>,
    },
    /// The definition cannot be parsed, is too long, or uses an unsupported
    /// feature.
    #[error("invalid schema: {source}")]
    InvalidSchema {
        /// Why.
        #[source]
        source: SchemaError,
    },
    /// A definition with references, which are not supported.
    #[error("schema references are not supported (subject `{subject}`)")]
    ReferencesUnsupported {
        /// The subject.
        subject: String,
    },
    /// A version that is neither a positive number nor `latest`.
    #[error(
        "the specified version `{version}` is not a valid version id; allowed values are 1 to 2147483647, -1 and latest"
    )]
    InvalidVersion {
        /// As given.
        version: String,
    },
    /// An unknown compatibility level.
    #[error("invalid compatibility level: {source}")]
    InvalidCompatibility {
        /// Why.
        #[source]
        source: SchemaError,
    },
    /// A subject name that cannot be stored.
    #[error("invalid subject `{subject}`: {reason}")]
    InvalidSubject {
        /// The subject.
        subject: String,
        /// Why.
        reason: &'static str,
    },
    /// The object store failed.
    #[error("object store error at {path}")]
    Store {
        /// The object.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// An object of the registry holds something unexpected.
    #[error("object {path} is corrupt: {reason}")]
    Corrupt {
        /// The object.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Too many lost races in a row.
    #[error("gave up registering in subject `{subject}` after {MAX_ATTEMPTS} lost races")]
    Contention {
        /// The subject.
        subject: String,
    },
}

impl RegistryError {
    /// The Confluent error code. Its first three digits are the HTTP status.
    pub fn code(&self) -> u32 {
        match self {
            RegistryError::SubjectNotFound { .. } => 40401,
            RegistryError::VersionNotFound { .. } => 40402,
            RegistryError::SchemaNotFound { .. } => 40403,
            RegistryError::SubjectSoftDeleted { .. } => 40404,
            RegistryError::SubjectNotSoftDeleted { .. } => 40405,
            RegistryError::VersionSoftDeleted { .. } => 40406,
            RegistryError::VersionNotSoftDeleted { .. } => 40407,
            RegistryError::SubjectCompatibilityNotConfigured { .. } => 40408,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::InvalidSchema { .. } | RegistryError::ReferencesUnsupported { .. } => {
                42201
            }
            RegistryError::InvalidVersion { .. } => 42202,
            RegistryError::InvalidCompatibility { .. } => 42203,
            RegistryError::InvalidSubject { .. } => 42208,
            RegistryError::Store { .. }
            | RegistryError::Corrupt { .. }
            | RegistryError::Contention { .. } => 50001,
        }
    }

    /// Whether the store (not the request) is at fault.
    pub fn is_store_error(&self) -> bool {
        self.code() == 50001
    }
}

/// The result type of registry operations.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A version named in a request: a number or the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    /// Version `n` (1 or more).
    Number(u32),
    /// The latest (live) version.
    Latest,
}

impl VersionRef {
    /// Parses `latest`, `-1` or `1..=2147483647`.
    pub fn parse(text: &str) -> Result<VersionRef> {
        match text {
            "latest" | "-1" => Ok(VersionRef::Latest),
            _ => match text.parse::<u32>() {
                Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(VersionRef::Number(n)),
                _ => Err(RegistryError::InvalidVersion {
                    version: text.to_string(),
                }),
            },
        }
    }
}

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

/// One version of a subject.
#[derive(Debug, Clone)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The version number.
    pub version: u32,
    /// Whether it is soft-deleted.
    pub deleted: bool,
    /// Its schema.
    pub schema: Arc<StoredSchema>,
}

/// `schemas/<uuid>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct SchemaRecord {
    uuid: Uuid,
    id: u32,
    #[serde(rename = "schemaType")]
    schema_type: SchemaType,
    schema: String,
}

/// `ids/<id>.json`, `fingerprints/<hex>.json`, `subjects/<s>/versions/<n>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct UuidPointer {
    uuid: Uuid,
}

/// `config/….json`.
#[derive(Debug, Serialize, Deserialize)]
struct ConfigRecord {
    compatibility: String,
}

/// The state of one version number of a subject.
#[derive(Debug, Clone, Copy, Default)]
struct VersionState {
    written: bool,
    deleted: bool,
    purged: bool,
}

impl VersionState {
    fn live(self) -> bool {
        self.written && !self.deleted && !self.purged
    }
    fn visible(self, include_deleted: bool) -> bool {
        self.written && !self.purged && (include_deleted || !self.deleted)
    }
}

/// The outcome of a create-only write.
enum Created {
    /// Ours (now, or by an earlier attempt that wrote the same bytes).
    Ours,
    /// Someone else's; their bytes.
    Theirs(Bytes),
}

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

    /// Parses `text` as a definition of type `kind`.
    pub fn parse(kind: SchemaType, text: &str) -> Result<Definition> {
        Definition::parse(kind, text).map_err(|source| RegistryError::InvalidSchema { source })
    }

    // ----- schemas by UUID, id and fingerprint -----

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
            Created::Theirs(bytes) => self.decode_schema(&path, &bytes)?,
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

    async fn schema_by_uuid_opt(&self, uuid: Uuid) -> Result<Option<Arc<StoredSchema>>> {
        if let Some(found) = lock(&self.schemas).get(&uuid) {
            return Ok(Some(found.clone()));
        }
        let path = self.path(&["schemas", &format!("{uuid}.json")]);
        let Some(bytes) = self.read_opt(&path).await? else {
            return Ok(None);
        };
        let stored = self.decode_schema(&path, &bytes)?;
        self.cache_schema(stored.clone());
        Ok(Some(stored))
    }

    fn decode_schema(&self, path: &Path, bytes: &[u8]) -> Result<Arc<StoredSchema>> {
        let record: SchemaRecord = decode(path, bytes)?;
        let definition =
            Definition::parse(record.schema_type, &record.schema).map_err(|e| corrupt(path, e))?;
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

    // ----- subjects and versions -----

    /// Registers `definition` under `subject` and returns its version (an
    /// existing live version when the subject already has this schema).
    pub async fn register(&self, subject: &str, definition: &Definition) -> Result<SubjectVersion> {
        let uuid = definition.uuid(&self.name);
        // Stored only once it passed the compatibility check, so that a
        // refused definition gets no id.
        let mut stored: Option<Arc<StoredSchema>> = None;
        for _ in 0..MAX_ATTEMPTS {
            let states = self.subject_states(subject).await?;
            let live = self.live_versions(subject, &states).await?;
            if let Some(existing) = live.iter().find(|v| v.schema.uuid == uuid) {
                return Ok(existing.clone());
            }
            let level = self.effective_compatibility(subject).await?;
            let earlier: Vec<Definition> =
                live.iter().map(|v| v.schema.definition.clone()).collect();
            let messages = level.check(definition, &earlier);
            if !messages.is_empty() {
                return Err(RegistryError::Incompatible {
                    subject: subject.to_string(),
                    level,
                    messages,
                });
            }
            let stored = match &stored {
                Some(stored) => stored.clone(),
                None => stored.insert(self.put_schema(definition).await?).clone(),
            };
            let version = states.keys().next_back().map_or(1, |n| n + 1);
            let path = self.version_path(subject, version)?;
            let pointer = UuidPointer { uuid: stored.uuid };
            match self.create(&path, to_json(&pointer)).await? {
                Created::Ours => {}
                Created::Theirs(bytes) => {
                    let theirs: UuidPointer = decode(&path, &bytes)?;
                    lock(&self.versions).insert((subject.to_string(), version), theirs.uuid);
                    if theirs.uuid != stored.uuid {
                        continue; // lost the race: check against the new latest
                    }
                }
            }
            lock(&self.versions).insert((subject.to_string(), version), stored.uuid);
            return Ok(SubjectVersion {
                subject: subject.to_string(),
                version,
                deleted: false,
                schema: stored,
            });
        }
        Err(RegistryError::Contention {
            subject: subject.to_string(),
        })
    }

    /// The version of `subject` that holds `definition` (soft-deleted ones
    /// too with `include_deleted`).
    pub async fn lookup(
        &self,
        subject: &str,
        definition: &Definition,
        include_deleted: bool,
    ) -> Result<SubjectVersion> {
        let uuid = definition.uuid(&self.name);
        let versions = self.versions(subject, include_deleted).await?;
        // The latest version with this schema, as Confluent answers.
        versions
            .into_iter()
            .rev()
            .find(|v| v.schema.uuid == uuid)
            .ok_or_else(|| RegistryError::SchemaNotFound {
                what: format!("{uuid} in subject `{subject}`"),
            })
    }

    /// Subject names with live versions (and soft-deleted ones with
    /// `include_deleted`), sorted.
    pub async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>> {
        let root = self.path(&["subjects"]);
        let mut states: BTreeMap<String, BTreeMap<u32, VersionState>> = BTreeMap::new();
        let objects: Vec<_> = self
            .store
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|source| store_error(&root, source))?;
        for meta in objects {
            let mut parts = meta.location.prefix_match(&root).into_iter().flatten();
            let (Some(subject), Some(kind), Some(file)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some(subject) = unescape_subject(subject.as_ref()) else {
                continue;
            };
            let entry = states.entry(subject).or_default();
            apply_state(entry, kind.as_ref(), file.as_ref());
        }
        Ok(states
            .into_iter()
            .filter(|(_, versions)| versions.values().any(|s| s.visible(include_deleted)))
            .map(|(subject, _)| subject)
            .collect())
    }

    /// The versions of `subject`, oldest first (soft-deleted ones too with
    /// `include_deleted`). Fails with [`RegistryError::SubjectNotFound`] when
    /// there are none.
    pub async fn versions(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<Vec<SubjectVersion>> {
        let states = self.subject_states(subject).await?;
        let mut out = Vec::new();
        for (&version, &state) in &states {
            if state.visible(include_deleted) {
                out.push(self.subject_version(subject, version, state).await?);
            }
        }
        if out.is_empty() {
            return Err(RegistryError::SubjectNotFound {
                subject: subject.to_string(),
            });
        }
        Ok(out)
    }

    /// One version of `subject`.
    pub async fn version(
        &self,
        subject: &str,
        version: VersionRef,
        include_deleted: bool,
    ) -> Result<SubjectVersion> {
        let states = self.subject_states(subject).await?;
        if !states.values().any(|s| s.visible(include_deleted)) {
            return Err(RegistryError::SubjectNotFound {
                subject: subject.to_string(),
            });
        }
        let found = match version {
            VersionRef::Latest => states
                .iter()
                .rev()
                .find(|(_, s)| s.visible(include_deleted)),
            VersionRef::Number(n) => states
                .get_key_value(&n)
                .filter(|(_, s)| s.visible(include_deleted)),
        };
        let Some((&n, &state)) = found else {
            return Err(version_not_found(subject, version));
        };
        self.subject_version(subject, n, state).await
    }

    /// Deletes one version: soft by default, permanently (only after a soft
    /// delete) with `permanent`. Returns its number.
    pub async fn delete_version(
        &self,
        subject: &str,
        version: VersionRef,
        permanent: bool,
    ) -> Result<u32> {
        let states = self.subject_states(subject).await?;
        if !states.values().any(|s| s.visible(true)) {
            return Err(RegistryError::SubjectNotFound {
                subject: subject.to_string(),
            });
        }
        let found = match version {
            VersionRef::Latest => states.iter().rev().find(|(_, s)| s.visible(permanent)),
            VersionRef::Number(n) => states.get_key_value(&n).filter(|(_, s)| s.visible(true)),
        };
        let Some((&n, &state)) = found else {
            return Err(version_not_found(subject, version));
        };
        match (permanent, state.deleted) {
            (false, true) => Err(RegistryError::VersionSoftDeleted {
                subject: subject.to_string(),
                version: n,
            }),
            (true, false) => Err(RegistryError::VersionNotSoftDeleted {
                subject: subject.to_string(),
                version: n,
            }),
            (false, false) => {
                self.mark(subject, "deleted", n).await?;
                Ok(n)
            }
            (true, true) => {
                self.mark(subject, "purged", n).await?;
                Ok(n)
            }
        }
    }

    /// Deletes every version of `subject`: soft by default, permanently
    /// (only after a soft delete) with `permanent`. Returns their numbers.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>> {
        let states = self.subject_states(subject).await?;
        let live: Vec<u32> = states
            .iter()
            .filter(|(_, s)| s.live())
            .map(|(n, _)| *n)
            .collect();
        let soft_deleted: Vec<u32> = states
            .iter()
            .filter(|(_, s)| s.visible(true) && s.deleted)
            .map(|(n, _)| *n)
            .collect();
        if live.is_empty() && soft_deleted.is_empty() {
            return Err(RegistryError::SubjectNotFound {
                subject: subject.to_string(),
            });
        }
        if permanent {
            if !live.is_empty() {
                return Err(RegistryError::SubjectNotSoftDeleted {
                    subject: subject.to_string(),
                });
            }
            for &n in &soft_deleted {
                self.mark(subject, "purged", n).await?;
            }
            // The subject's configuration goes with it.
            let config = self.subject_config_path(subject)?;
            self.delete_opt(&config).await?;
            Ok(soft_deleted)
        } else {
            if live.is_empty() {
                return Err(RegistryError::SubjectSoftDeleted {
                    subject: subject.to_string(),
                });
            }
            for &n in &live {
                self.mark(subject, "deleted", n).await?;
            }
            Ok(live)
        }
    }

    /// Tests `definition` against `subject`: against one version with
    /// `Some(version)`, else against the versions its level names. Returns
    /// the problems (empty: compatible). A subject without versions accepts
    /// anything when no version is named.
    pub async fn test_compatibility(
        &self,
        subject: &str,
        version: Option<VersionRef>,
        definition: &Definition,
    ) -> Result<Vec<String>> {
        let level = self.effective_compatibility(subject).await?;
        let earlier: Vec<Definition> = match version {
            Some(version) => vec![
                self.version(subject, version, false)
                    .await?
                    .schema
                    .definition
                    .clone(),
            ],
            None => {
                let states = self.subject_states(subject).await?;
                self.live_versions(subject, &states)
                    .await?
                    .iter()
                    .map(|v| v.schema.definition.clone())
                    .collect()
            }
        };
        Ok(level.check(definition, &earlier))
    }

    async fn live_versions(
        &self,
        subject: &str,
        states: &BTreeMap<u32, VersionState>,
    ) -> Result<Vec<SubjectVersion>> {
        let mut out = Vec::new();
        for (&n, &state) in states {
            if state.live() {
                out.push(self.subject_version(subject, n, state).await?);
            }
        }
        Ok(out)
    }

    async fn subject_version(
        &self,
        subject: &str,
        version: u32,
        state: VersionState,
    ) -> Result<SubjectVersion> {
        let key = (subject.to_string(), version);
        let cached = lock(&self.versions).get(&key).copied();
        let uuid = match cached {
            Some(uuid) => uuid,
            None => {
                let path = self.version_path(subject, version)?;
                let bytes = self
                    .read_opt(&path)
                    .await?
                    .ok_or_else(|| RegistryError::Corrupt {
                        path: path.to_string(),
                        reason: "listed but gone".into(),
                    })?;
                let pointer: UuidPointer = decode(&path, &bytes)?;
                lock(&self.versions).insert(key, pointer.uuid);
                pointer.uuid
            }
        };
        let schema =
            self.schema_by_uuid_opt(uuid)
                .await?
                .ok_or_else(|| RegistryError::Corrupt {
                    path: self
                        .version_path(subject, version)
                        .map_or_else(|_| String::new(), |p| p.to_string()),
                    reason: format!("names schema {uuid}, which is not stored"),
                })?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version,
            deleted: state.deleted,
            schema,
        })
    }

    /// Every version number of `subject` that has an object, with its state.
    async fn subject_states(&self, subject: &str) -> Result<BTreeMap<u32, VersionState>> {
        let root = self.subject_path(subject)?;
        let objects: Vec<_> = self
            .store
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|source| store_error(&root, source))?;
        let mut states = BTreeMap::new();
        for meta in objects {
            let mut parts = meta.location.prefix_match(&root).into_iter().flatten();
            if let (Some(kind), Some(file)) = (parts.next(), parts.next()) {
                apply_state(&mut states, kind.as_ref(), file.as_ref());
            }
        }
        // A marker without its version (never happens through this API).
        states.retain(|_, s: &mut VersionState| s.written);
        Ok(states)
    }

    async fn mark(&self, subject: &str, kind: &str, version: u32) -> Result<()> {
        let path = self
            .subject_path(subject)?
            .join(kind)
            .join(format!("{version}.json"));
        self.store
            .put(&path, PutPayload::from_static(b"{}"))
            .await
            .map(drop)
            .map_err(|source| store_error(&path, source))
    }

    // ----- compatibility configuration -----

    /// The level configured for `subject` (`None`: the global one), if any.
    pub async fn compatibility(&self, subject: Option<&str>) -> Result<Option<Compatibility>> {
        let path = match subject {
            Some(subject) => self.subject_config_path(subject)?,
            None => self.path(&["config", "global.json"]),
        };
        let Some(bytes) = self.read_opt(&path).await? else {
            return Ok(None);
        };
        let record: ConfigRecord = decode(&path, &bytes)?;
        record
            .compatibility
            .parse()
            .map(Some)
            .map_err(|e| corrupt(&path, e))
    }

    /// The level that applies to `subject`: its own, else the global one,
    /// else BACKWARD.
    pub async fn effective_compatibility(&self, subject: &str) -> Result<Compatibility> {
        if let Some(level) = self.compatibility(Some(subject)).await? {
            return Ok(level);
        }
        Ok(self.compatibility(None).await?.unwrap_or_default())
    }

    /// Sets the level of `subject` (`None`: the global one).
    pub async fn set_compatibility(
        &self,
        subject: Option<&str>,
        level: Compatibility,
    ) -> Result<()> {
        let path = match subject {
            Some(subject) => self.subject_config_path(subject)?,
            None => self.path(&["config", "global.json"]),
        };
        let record = ConfigRecord {
            compatibility: level.as_str().to_string(),
        };
        self.store
            .put(&path, PutPayload::from(to_json(&record)))
            .await
            .map(drop)
            .map_err(|source| store_error(&path, source))
    }

    /// Removes the level of `subject` (`None`: the global one); returns the
    /// level it had.
    pub async fn delete_compatibility(
        &self,
        subject: Option<&str>,
    ) -> Result<Option<Compatibility>> {
        let previous = self.compatibility(subject).await?;
        let path = match subject {
            Some(subject) => self.subject_config_path(subject)?,
            None => self.path(&["config", "global.json"]),
        };
        self.delete_opt(&path).await?;
        Ok(previous)
    }

    // ----- paths and objects -----

    fn path(&self, parts: &[&str]) -> Path {
        parts
            .iter()
            .fold(self.prefix.clone(), |path, part| path.join(*part))
    }

    fn subject_path(&self, subject: &str) -> Result<Path> {
        let escaped = escape_subject(subject)?;
        let part = PathPart::parse(&escaped).map_err(|_| RegistryError::InvalidSubject {
            subject: subject.to_string(),
            reason: "cannot be stored",
        })?;
        Ok(self.path(&["subjects"]).join(part))
    }

    fn version_path(&self, subject: &str, version: u32) -> Result<Path> {
        Ok(self
            .subject_path(subject)?
            .join("versions")
            .join(format!("{version}.json")))
    }

    fn subject_config_path(&self, subject: &str) -> Result<Path> {
        let escaped = escape_subject(subject)?;
        Ok(self
            .path(&["config", "subjects"])
            .join(format!("{escaped}.json")))
    }

    async fn create(&self, path: &Path, body: Vec<u8>) -> Result<Created> {
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

    async fn read_opt(&self, path: &Path) -> Result<Option<Bytes>> {
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

    async fn delete_opt(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(store_error(path, source)),
        }
    }

    async fn list_names(&self, prefix: &Path) -> Result<Vec<String>> {
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

/// Records one object of a subject's directory (`versions/3.json`, …).
fn apply_state(states: &mut BTreeMap<u32, VersionState>, kind: &str, file: &str) {
    let Some(n) = file
        .strip_suffix(".json")
        .and_then(|n| n.parse::<u32>().ok())
    else {
        return;
    };
    let state = states.entry(n).or_default();
    match kind {
        "versions" => state.written = true,
        "deleted" => state.deleted = true,
        "purged" => state.purged = true,
        _ => {}
    }
}

fn version_not_found(subject: &str, version: VersionRef) -> RegistryError {
    RegistryError::VersionNotFound {
        subject: subject.to_string(),
        version: match version {
            VersionRef::Latest => "latest".into(),
            VersionRef::Number(n) => n.to_string(),
        },
    }
}

/// Longest escaped subject name: one path segment (a file name) of at most
/// 255 bytes, with room for `.json`.
const MAX_ESCAPED_SUBJECT: usize = 240;

/// The subject's path segment; see the module documentation.
fn escape_subject(subject: &str) -> Result<String> {
    if subject.is_empty() {
        return Err(RegistryError::InvalidSubject {
            subject: subject.to_string(),
            reason: "must not be empty",
        });
    }
    let mut out = String::with_capacity(subject.len());
    for (i, byte) in subject.bytes().enumerate() {
        let plain = byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' || byte == b'.';
        if plain && !(i == 0 && byte == b'.') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("={byte:02X}"));
        }
    }
    if out.len() > MAX_ESCAPED_SUBJECT {
        return Err(RegistryError::InvalidSubject {
            subject: subject.to_string(),
            reason: "too long (at most 240 bytes once characters other than [A-Za-z0-9_.-] are escaped)",
        });
    }
    Ok(out)
}

/// The inverse of [`escape_subject`]; `None` for a segment it never writes.
fn unescape_subject(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(path, e))
}

fn corrupt(path: &Path, reason: impl ToString) -> RegistryError {
    RegistryError::Corrupt {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

fn store_error(path: &Path, source: object_store::Error) -> RegistryError {
    RegistryError::Store {
        path: path.to_string(),
        source,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent whatever a panicking holder did.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

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

    #[test]
    fn subject_names_escape_into_one_segment_and_back() {
        for subject in [
            "orders-value",
            "a/b",
            ".hidden",
            "..",
            "ü €",
            "x=y",
            "com.example.V",
        ] {
            let escaped = escape_subject(subject).unwrap();
            assert!(PathPart::parse(&escaped).is_ok(), "{escaped}");
            assert!(!escaped.contains('/') && !escaped.starts_with('.'));
            assert_eq!(unescape_subject(&escaped).as_deref(), Some(subject));
        }
        assert_eq!(escape_subject("orders-value").unwrap(), "orders-value");
        assert!(escape_subject("").is_err());
        assert!(escape_subject(&"/".repeat(100)).is_err());
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
}
