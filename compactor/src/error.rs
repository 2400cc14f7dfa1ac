/// Errors that stop a compaction round.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lake could not be read or written.
    #[error(transparent)]
    Lake(#[from] tributary_lake::Error),
    /// A Delta operation failed.
    #[error("Delta {operation} on {url} failed")]
    Delta {
        /// What was attempted.
        operation: &'static str,
        /// The table.
        url: String,
        /// delta-rs's error.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// Converting rows to Arrow failed.
    #[error("cannot build Arrow data for {path}")]
    Arrow {
        /// The row file.
        path: String,
        /// Arrow's error.
        #[source]
        source: deltalake::arrow::error::ArrowError,
    },
    /// A table file could not be read.
    #[error("cannot read table file {path}")]
    Parquet {
        /// The file.
        path: String,
        /// The Parquet reader's error.
        #[source]
        source: deltalake::parquet::errors::ParquetError,
    },
    /// Another compactor committed rows of a source partition of this round
    /// while the round waited for partition leases. The round is repeated.
    #[error("another compactor committed rows of {partition} during this round")]
    RoundOvertaken {
        /// The source partition.
        partition: String,
    },
    /// A request id was recorded before with other identifiers.
    #[error("forget: request {request_id} exists with other identifiers; use a new request id")]
    RequestIdTaken {
        /// The request id.
        request_id: String,
    },
    /// A stored erasure request (or its report) is not what Tributary
    /// writes.
    #[error("forget: request object {path} is not valid")]
    CorruptRequest {
        /// The object.
        path: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored erasure request holds a hash that is not a hex SHA-256.
    #[error("forget: request {request_id} holds `{hash}`, which is not a hex SHA-256 hash")]
    RequestHash {
        /// The request id.
        request_id: String,
        /// The value found.
        hash: String,
    },
    /// An erasure request or report could not be encoded as JSON.
    #[error("forget: cannot encode {path}")]
    EncodeRequest {
        /// The object it was for.
        path: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The search for a request's identifiers could not be built.
    #[error("forget: cannot build the search for {identifiers} identifiers")]
    IdentifierSearch {
        /// How many identifiers (never the identifiers: they are personal
        /// data).
        identifiers: usize,
        /// aho-corasick's error.
        #[source]
        source: aho_corasick::BuildError,
    },
    /// A replaced table file a request holds for deletion is not an object
    /// path.
    #[error("forget: request {request_id} holds replaced file {file:?}, which is not a valid path")]
    ReplacedFilePath {
        /// The request id.
        request_id: String,
        /// The recorded file.
        file: String,
        /// Why it is not a path.
        #[source]
        source: object_store::path::Error,
    },
    /// A batch ran a request but gave no outcome for it.
    #[error("forget: the pass gave no report for request {request_id}")]
    NoReport {
        /// The request id.
        request_id: String,
    },
    /// A row file (staged rows, dead letters) kept changing under its
    /// rewrite: every attempt found another process's version in place.
    #[error(
        "{path} was changed by another process during each of {attempts} attempts to rewrite it; \
         run again"
    )]
    RewriteContended {
        /// The row file.
        path: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The retention rules object (or the retention state) is not valid.
    #[error("retention: {path} is not valid")]
    RetentionRules {
        /// The object.
        path: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Ingest's decoding could not be set up (for a dead-letter replay).
    #[error(transparent)]
    Ingest(#[from] tributary_ingest::Error),
    /// A table of the configuration cannot be resolved (a bad name, a
    /// routed configuration where one table was expected).
    #[error("table {table} of the configuration")]
    Table {
        /// The table's name (or `lake.table_uri`).
        table: String,
        /// The configuration's error.
        #[source]
        source: tributary_config::ConfigError,
    },
    /// The tables under a routed configuration's root cannot be listed.
    #[error("cannot list the tables under {root}")]
    ListTables {
        /// `lake.table_uri` up to its `${table}` segment.
        root: String,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
    /// A dead-letter replay remainder written by an earlier version names
    /// its letters by index, which a rewrite since may have shifted.
    #[error(
        "dead-letter replay of {path}: {remainder} was written by an earlier version that named \
         the letters to stage by index, which a rewrite of the file since may have shifted; \
         nothing of the file was staged: delete {remainder} and replay again"
    )]
    ReplayIndexedRemainder {
        /// The dead-letter file.
        path: String,
        /// Its remainder file.
        remainder: String,
    },
    /// A replay remainder's header cannot be read as a decision.
    #[error("dead-letter replay remainder {path} is corrupt: {problem}")]
    ReplayCorruptRemainder {
        /// The remainder file.
        path: String,
        /// What is wrong with its header.
        problem: String,
    },
    /// A letter a replay decided to stage fails to decode on the rerun.
    #[error(
        "dead-letter replay of {path}: the remainder {remainder} decided that letter {letter} \
         becomes rows (at position {at} of the replay chain), but it now fails ({failure}); \
         the file is left as it is"
    )]
    ReplayDecidedLetterFails {
        /// The dead-letter file.
        path: String,
        /// Its remainder file.
        remainder: String,
        /// The letter (source position, and element when one).
        letter: String,
        /// Its position on the replay chain.
        at: u64,
        /// The dead-letter reason and error it fails with now.
        failure: String,
    },
    /// Another replay wrote the remainder while this one decoded.
    #[error(
        "dead-letter replay of {path}: {remainder} appeared while this replay decoded the file: \
         another replay is running; run again once it is done"
    )]
    ReplayRaced {
        /// The dead-letter file.
        path: String,
        /// Its remainder file.
        remainder: String,
    },
    /// A row file on the replay chain covers another range than decided.
    #[error(
        "dead-letter replay: staged file {path} covers up to {existing_last}, not the decided \
         {decided_last}: another replay wrote to this chain without holding the lease `{lease}`"
    )]
    ReplayChainClash {
        /// The staged row file.
        path: String,
        /// The last position it covers.
        existing_last: u64,
        /// The last position the replay decided.
        decided_last: u64,
        /// The replay lease.
        lease: &'static str,
    },
    /// Event delivery's own state is unreadable.
    #[error("events: {0}")]
    Events(String),
    /// A `tributary forget` request was recorded while the round ran; the
    /// round committed nothing and is repeated with the request applied.
    #[error("an erasure request arrived during this round")]
    ErasureArrived,
    /// `lake.partition_by` differs from how the table is partitioned.
    #[error(
        "the table at {url} is partitioned by {table:?}, but lake.partition_by names {configured:?}; \
         a table keeps the partitioning it was created with (set lake.partition_by to match, or \
         point lake.table_uri at a new table)"
    )]
    Partitioning {
        /// The table.
        url: String,
        /// Its partition columns.
        table: Vec<String>,
        /// The configured ones.
        configured: Vec<String>,
    },
    /// `[lake.upsert]` differs from the mode the table was created in.
    #[error(
        "the table at {url} was created {}, but the configuration asks for {}; a table keeps \
         its mode (point lake.table_uri at a new table to change it)",
        mode(table.as_deref()),
        mode(configured.as_deref())
    )]
    UpsertMode {
        /// The table.
        url: String,
        /// The order column its `tributary.upsert.orderBy` property records.
        table: Option<String>,
        /// `lake.upsert.order_by`.
        configured: Option<String>,
    },
    /// A round's rows give a partition column more values than
    /// `lake.max_partition_values`; the rows stay staged.
    #[error(
        "partition column `{column}` has more than {limit} distinct values in this round's rows \
         (lake.max_partition_values): partition by a column of few values, or raise the limit"
    )]
    PartitionCardinality {
        /// The column.
        column: String,
        /// The limit.
        limit: usize,
    },
    /// A worker task failed.
    #[error("compaction worker stopped unexpectedly")]
    Worker(#[source] tokio::task::JoinError),
}

/// Names a table mode in [`Error::UpsertMode`].
fn mode(order_by: Option<&str>) -> String {
    match order_by {
        Some(column) => format!("in upsert mode ordered by `{column}`"),
        None => "insert-only".into(),
    }
}

impl Error {
    /// Whether the operation lost to another writer and committed nothing:
    /// a Delta commit conflict it could not retry past, or a table-partition
    /// lease that expired and was taken over before the commit. The round can
    /// be run again.
    pub fn is_commit_conflict(&self) -> bool {
        use deltalake::DeltaTableError;
        use deltalake::kernel::transaction::TransactionError;
        match self {
            Error::RoundOvertaken { .. }
            | Error::ErasureArrived
            | Error::Lake(tributary_lake::Error::LeaseLost { .. }) => true,
            Error::Delta { source, .. } => matches!(
                source.as_ref(),
                DeltaTableError::Transaction {
                    source: TransactionError::CommitConflict(_)
                        | TransactionError::MaxCommitAttempts(_)
                        | TransactionError::VersionAlreadyExists(_)
                } | DeltaTableError::VersionAlreadyExists(_)
            ),
            _ => false,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
