//! Subjects and their versions: registering, looking up, listing and
//! deleting (soft, then permanently) versions, and testing a definition
//! against them, from the states a subject's objects record.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};

use super::error::store_error;
use super::layout::unescape_subject;
use super::objects::{Created, UuidPointer, decode, lock, to_json};
use super::schemas::StoredSchema;
use super::{MAX_ATTEMPTS, RegistryError, Result, SchemaRegistry};
use crate::schema::Definition;

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

impl SchemaRegistry {
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
        if permanent == state.deleted {
            self.refuse_if_referenced(subject, &[n]).await?;
        }
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
            self.refuse_if_referenced(subject, &soft_deleted).await?;
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
            self.refuse_if_referenced(subject, &live).await?;
            for &n in &live {
                self.mark(subject, "deleted", n).await?;
            }
            Ok(live)
        }
    }

    /// The ids of the schemas whose versions (soft-deleted ones included)
    /// import version `version` of `subject` by reference. It reads every
    /// subject's listing, which is fine for what needs it: deletes and
    /// `GET .../referencedby`.
    pub async fn referenced_by(&self, subject: &str, version: u32) -> Result<Vec<u32>> {
        let mut ids = BTreeSet::new();
        for other in self.subjects(true).await? {
            let versions = match self.versions(&other, true).await {
                Ok(versions) => versions,
                // Deleted since it was listed.
                Err(RegistryError::SubjectNotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            for v in versions {
                let references = v.schema.definition.references();
                if references
                    .iter()
                    .any(|r| r.subject == subject && r.version == version)
                {
                    ids.insert(v.schema.id);
                }
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// Fails with [`RegistryError::ReferenceExists`] when a schema imports
    /// one of `versions` of `subject`.
    async fn refuse_if_referenced(&self, subject: &str, versions: &[u32]) -> Result<()> {
        for &version in versions {
            let ids = self.referenced_by(subject, version).await?;
            if !ids.is_empty() {
                return Err(RegistryError::ReferenceExists {
                    subject: subject.to_string(),
                    version,
                    ids,
                });
            }
        }
        Ok(())
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
