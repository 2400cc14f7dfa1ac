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
    /// An erasure request cannot be carried out as asked.
    #[error("forget: {0}")]
    Forget(String),
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
    /// A dead-letter file cannot be replayed as asked.
    #[error("dead-letter replay of {path}: {reason}")]
    Replay {
        /// The dead-letter (or remainder) file.
        path: String,
        /// Why.
        reason: String,
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
