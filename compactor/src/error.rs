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
    /// A worker task failed.
    #[error("compaction worker stopped unexpectedly")]
    Worker(#[source] tokio::task::JoinError),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
