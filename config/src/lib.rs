//! Tributary's configuration.
//!
//! Every Tributary process reads one TOML file ([`Config::load`]). The file is
//! parsed strictly (unknown keys are errors, so a misspelled key never silently
//! falls back to a default), then environment variables override keys, then the
//! whole configuration is validated ([`Config::validate`]) and every error names
//! the key and the bad value.
//!
//! Environment overrides use the prefix `TRIBUTARY_` and `__` between path
//! segments: `TRIBUTARY_LAKE__TABLE_URI=s3://bucket/tables/app_logs` sets
//! `lake.table_uri`; `TRIBUTARY_INGEST__BATCH__MAX_RECORDS=5000` sets
//! `ingest.batch.max_records`. Variables with the prefix but without `__` (such
//! as `TRIBUTARY_LOG`) are not configuration keys and are ignored here.
//!
//! ```
//! use tributary_config::Config;
//!
//! let config = Config::from_toml_str(
//!     r#"
//!     [lake]
//!     table_uri = "/tmp/lake/app_logs"
//!
//!     [ingest]
//!     stream = "app"
//!     [ingest.files]
//!     path = "/var/log/app"
//!     "#,
//!     std::iter::empty(),
//! )
//! .unwrap();
//! assert_eq!(config.ingest.unwrap().batch.max_records, 100_000);
//! ```
#![deny(missing_docs)]

mod compact;
mod error;
mod events;
mod ingest;
mod kafka;
mod kinesis;
mod lake;
mod load;
mod registry;
mod retention;
mod service;
mod upsert;

pub use compact::CompactConfig;
pub use error::{ConfigError, Result};
pub use events::{
    CompletenessConfig, EventBridgeConfig, EventStart, EventsConfig, KafkaSinkConfig, SinkConfig,
    WebhookConfig,
};
pub use ingest::{
    BatchConfig, ColumnTypeName, FileFormat, FilesSourceConfig, FlattenConfig, GlueRegistryConfig,
    IngestConfig, RESERVED_COLUMNS, RegistryClientConfig, RowFileCompression,
    SOURCE_COLUMN_PREFIXES, Source, is_reserved_column,
};
pub use kafka::{
    KAFKA_RESERVED_OPTIONS, KafkaSourceConfig, StartPosition, Tombstones, librdkafka_options,
};
pub use kinesis::{KinesisSourceConfig, KinesisStart};
pub use lake::{HOUR_COLUMN, LakeConfig, S3Config};
pub use load::ENV_PREFIX;
pub use registry::{RegistryConfig, RegistryFile, RegistryToken, TokenScope};
pub use retention::{DEFAULT_RULES_OBJECT, RetentionConfig, TenantRule};
pub use service::ServiceConfig;
pub use upsert::UpsertConfig;

use serde::Deserialize;

/// The configuration of one Tributary process.
///
/// Sections that a process does not use may be left out; a process checks that
/// the sections it needs are present (see [`Config::require_ingest`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the table and Tributary's bookkeeping objects live.
    pub lake: LakeConfig,
    /// Settings of `tributary ingest`.
    pub ingest: Option<IngestConfig>,
    /// Settings of `tributary compact`.
    #[serde(default)]
    pub compact: CompactConfig,
    /// How long-running processes serve metrics and health, and shut down.
    #[serde(default)]
    pub service: ServiceConfig,
    /// Data availability events that `tributary compact` delivers.
    #[serde(default)]
    pub events: EventsConfig,
    /// How long rows are kept (`tributary retention`, and the long-running
    /// compactor every `retention.interval_ms`).
    #[serde(default)]
    pub retention: RetentionConfig,
}

impl Config {
    /// Checks every section, returning the first problem found.
    pub fn validate(&self) -> Result<()> {
        self.lake.validate()?;
        let event_time = self
            .ingest
            .as_ref()
            .and_then(|i| i.flatten.event_time_field.as_ref());
        if self.lake.partition_by.iter().any(|c| c == "hour") && event_time.is_none() {
            return Err(crate::error::invalid(
                "lake.partition_by",
                format!("{:?}", self.lake.partition_by),
                "\"hour\" is the event time's hour: set ingest.flatten.event_time_field",
            ));
        }
        if let Some(upsert) = &self.lake.upsert {
            // A compactor's configuration may leave `[ingest]` out.
            let keyless = self
                .ingest
                .as_ref()
                .is_some_and(|i| i.flatten.key_field.is_none());
            upsert.validate(&self.lake.partition_by, keyless)?;
        }
        if let Some(ingest) = &self.ingest {
            ingest.validate()?;
        }
        self.compact.validate()?;
        self.events.validate()?;
        self.retention.validate()?;
        self.service.validate()
    }

    /// Fills the defaults that depend on other sections: `compact.sort_columns`
    /// becomes the subject columns, then the event time field. [`Config::load`]
    /// calls it; code that builds a `Config` itself calls it too.
    pub fn complete(&mut self) {
        let event_time = self
            .ingest
            .as_ref()
            .and_then(|i| i.flatten.event_time_field.clone());
        if self.compact.sort_columns.is_none() {
            let columns = self
                .lake
                .subject_columns
                .iter()
                .cloned()
                .chain(event_time.clone());
            self.compact.sort_columns = Some(columns.collect());
        }
        self.compact.event_time_column = event_time;
        self.compact.upsert = self.lake.upsert.clone();
        self.compact.retention = self.retention.clone();
        if let Some(kafka) = self.ingest.as_mut().and_then(|i| i.kafka.as_mut()) {
            // In upsert mode a tombstone deletes its key unless set otherwise.
            if kafka.tombstones.is_none() && self.lake.upsert.is_some() {
                kafka.tombstones = Some(Tombstones::Delete);
            }
            kafka.delete_marker = (
                self.compact.delete_column.clone(),
                self.compact.delete_value.clone(),
            );
        }
    }

    /// The `[ingest]` section, or an error naming it when it is missing.
    pub fn require_ingest(&self) -> Result<&IngestConfig> {
        self.ingest
            .as_ref()
            .ok_or(ConfigError::MissingSection { section: "ingest" })
    }
}
