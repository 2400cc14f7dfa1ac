use object_store::path::Path;

/// Errors of the lake crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The table location is not usable.
    #[error("invalid table location {uri:?}: {reason}")]
    TableLocation {
        /// The configured `lake.table_uri`.
        uri: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// An object store operation failed.
    #[error("object store operation on {path} failed")]
    Store {
        /// The object.
        path: Path,
        /// The store's error.
        #[source]
        source: Box<object_store::Error>,
    },
    /// A row file is not a valid Avro object container file of the shape
    /// Tributary writes.
    #[error("corrupt row file {path}: {reason}")]
    CorruptRowFile {
        /// The object, or `<memory>` for bytes not yet stored.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A row file could not be encoded, or read as an Avro object container
    /// file of records.
    #[error("row file {path} cannot be encoded or read")]
    RowFile {
        /// The object, or `<memory>` for bytes not yet stored.
        path: String,
        /// arrow-avro's error.
        #[source]
        source: deltalake::arrow::error::ArrowError,
    },
    /// A row-file block could not be compressed or decompressed.
    #[error("row file codec {codec} failed")]
    Codec {
        /// The codec name.
        codec: &'static str,
        /// The codec's error.
        #[source]
        source: std::io::Error,
    },
    /// A lease object is not what Tributary writes.
    #[error("corrupt lease {path}: {reason}")]
    CorruptLease {
        /// The object.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process holds the lease and did not give it up in time.
    #[error("lease {name} is held by {owner} until {expires_at_ms} ms since the epoch")]
    LeaseHeld {
        /// The lease.
        name: String,
        /// Its holder.
        owner: String,
        /// When the holder's lease runs out.
        expires_at_ms: i64,
    },
    /// This process's lease expired and another process may have taken it.
    #[error("lease {name} held by {owner} was lost (expired or taken over)")]
    LeaseLost {
        /// The lease.
        name: String,
        /// This process's owner id.
        owner: String,
    },
    /// The Delta table could not be read.
    #[error("cannot read the Delta table at {url}")]
    Delta {
        /// The table URL.
        url: String,
        /// The delta-rs error.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an object store error with the path it concerns.
    pub fn store(path: &Path, source: object_store::Error) -> Self {
        Error::Store {
            path: path.clone(),
            source: Box::new(source),
        }
    }

    /// Whether this error means the object does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Store { source, .. } if matches!(**source, object_store::Error::NotFound { .. }))
    }

    /// Whether this error means the object already exists (a create-only
    /// write lost the race).
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::Store { source, .. } if matches!(**source, object_store::Error::AlreadyExists { .. }))
    }
}
