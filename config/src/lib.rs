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
mod routing;
mod service;
mod upsert;

pub use compact::{CompactConfig, CompactTables};
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
pub use routing::{
    FieldRoute, ResolvedTable, Route, RoutePattern, RoutingConfig, TABLE_PLACEHOLDER,
    TOPIC_PLACEHOLDER, TableConfig, TopicRouter, Unlisted, is_safe_name, safe_name,
};
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
    /// Where the table and Tributary's bookkeeping objects live. With
    /// routing (`table_uri` ending in `/${table}`), the defaults of every
    /// table.
    pub lake: LakeConfig,
    /// `[tables.NAME]`: one routed table's overrides of the defaults.
    #[serde(default)]
    pub tables: std::collections::BTreeMap<String, TableConfig>,
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
        self.validate_routing()?;
        if !self.is_routed() {
            let table = self.single_table()?;
            routing::validate_table(&table.lake, &table.flatten, self.ingest.is_some())?;
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
    /// calls it; code that builds a `Config` itself calls it too. A routed
    /// configuration's tables get theirs from [`Config::table`].
    pub fn complete(&mut self) {
        if !self.is_routed() {
            let flatten = self.ingest_flatten();
            routing::complete_compact(&mut self.compact, &self.lake, &flatten, &self.retention);
        }
        let upsert = self.lake.upsert.is_some() && !self.is_routed();
        if let Some(kafka) = self.ingest.as_mut().and_then(|i| i.kafka.as_mut()) {
            // In upsert mode a tombstone deletes its key unless set otherwise
            // (a routed table's default is its own: ResolvedTable::tombstones).
            if kafka.tombstones.is_none() && upsert {
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
