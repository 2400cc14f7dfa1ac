//! What registry operations fail with: [`RegistryError`] and its Confluent
//! codes, the [`Result`] alias, and the helpers that build the errors of a
//! failing store or a corrupt object.

use object_store::path::Path;

use super::MAX_ATTEMPTS;
use crate::schema::{Compatibility, SchemaError};

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
    /// A delete of a version that versions of other schemas import by
    /// reference (soft-deleted ones included): Confluent's registry refuses
    /// it too, since those schemas could no longer be read.
    #[error(
        "version {version} of subject `{subject}` is imported by reference by schema id(s) {}; delete the versions that reference it permanently first",
        ids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    )]
    ReferenceExists {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
        /// The ids of the schemas that reference it.
        ids: Vec<u32>,
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
    /// A reference to a version that cannot be imported.
    #[error("schema reference `{reference}`: {reason}")]
    InvalidReference {
        /// The reference (`name` → `subject` version `n`).
        reference: String,
        /// Why.
        reason: String,
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
            RegistryError::InvalidSchema { .. } | RegistryError::InvalidReference { .. } => 42201,
            RegistryError::InvalidVersion { .. } => 42202,
            RegistryError::ReferenceExists { .. } => 42206,
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

pub(super) fn corrupt(path: &Path, reason: impl ToString) -> RegistryError {
    RegistryError::Corrupt {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

pub(super) fn store_error(path: &Path, source: object_store::Error) -> RegistryError {
    RegistryError::Store {
        path: path.to_string(),
        source,
    }
}
