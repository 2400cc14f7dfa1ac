use std::path::PathBuf;

/// Errors that stop ingestion (bad messages never do: they are dead letters).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lake could not be read or written.
    #[error(transparent)]
    Lake(#[from] tributary_lake::Error),
    /// A source could not be read.
    #[error("cannot read source {path}")]
    Source {
        /// The file or directory (`-` for stdin).
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] tributary_config::ConfigError),
    /// The Kafka client failed.
    #[error("kafka: {context}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The schema registry client cannot be set up.
    #[error("schema registry: {message}")]
    Registry {
        /// What is wrong.
        message: String,
    },
    /// A Kinesis call failed and retrying does not help (e.g. the stream
    /// does not exist, or access is denied).
    #[error("Kinesis, {shard}")]
    Kinesis {
        /// The shard (`<stream>/<shard>`), or the Kinesis stream name.
        shard: String,
        /// What Kinesis answered.
        #[source]
        source: crate::source::kinesis::ApiError,
    },
    /// Where a Kinesis shard resumes cannot be read from the lake.
    #[error("Kinesis shard {partition}: {reason}")]
    KinesisPosition {
        /// The shard (`<stream>/<shard>`).
        partition: String,
        /// What is missing or wrong.
        reason: String,
    },
    /// A Kafka topic matches no route of `[ingest.routing]`: its
    /// partitions are not read (their messages stay in Kafka).
    #[error(
        "topic `{topic}` matches no route of ingest.routing: add it to ingest.routing.topics or \
         patterns, or set ingest.routing.template; its messages stay in Kafka until then"
    )]
    Unrouted {
        /// The topic.
        topic: String,
    },
    /// Opening one more table would pass `ingest.routing.max_tables`.
    #[error(
        "table `{table}` would be table number {} of this ingest process, more than \
         ingest.routing.max_tables ({max_tables})", max_tables + 1
    )]
    TooManyTables {
        /// The table that would be opened.
        table: String,
        /// The limit.
        max_tables: usize,
    },
    /// A worker task failed.
    #[error("ingest worker for {partition} stopped unexpectedly")]
    Worker {
        /// The partition it served.
        partition: String,
        /// The task's failure.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
