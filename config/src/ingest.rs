use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Result, invalid};
use crate::kafka::{KafkaSourceConfig, Tombstones};
use crate::kinesis::KinesisSourceConfig;

/// `[ingest]`: what `tributary ingest` reads and how it stages row files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Name of the stream, used in object paths
    /// (`_tributary/staging/<stream>/<partition>/…`) and in the table's
    /// watermarks. Letters, digits, `_`, `-` and `.` only. Never rename a stream
    /// that has data in the lake: its watermarks are stored under this name.
    pub stream: String,
    /// Read newline-delimited JSON files (the embedded default source).
    /// Exactly one source section is configured.
    pub files: Option<FilesSourceConfig>,
    /// Read Kafka topics as a consumer group.
    pub kafka: Option<KafkaSourceConfig>,
    /// Read the shards of a Kinesis data stream, shared by shard leases.
    pub kinesis: Option<KinesisSourceConfig>,
    /// When a micro-batch is closed and staged as a row file.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Messages longer than this many bytes are not decoded; they become
    /// dead-letter entries with reason `oversized`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// At most this many bytes of a rejected message are kept in its
    /// dead-letter entry (the entry records the full length and the position,
    /// so the original can always be found in the source).
    #[serde(default = "default_dead_letter_max_payload_bytes")]
    pub dead_letter_max_payload_bytes: u64,
    /// Compression codec of row files: `zstd` (default) or `deflate`.
    #[serde(default)]
    pub compression: RowFileCompression,
    /// How nested messages become flat rows.
    #[serde(default)]
    pub flatten: FlattenConfig,
    /// Where the schemas named by framed messages (AWS Glue, Confluent, Avro
    /// single-object) are fetched. Without it only plain JSON is decoded and
    /// framed messages are dead letters.
    pub registry: Option<RegistryClientConfig>,
    /// Which table each Kafka topic feeds, when `lake.table_uri` ends in
    /// `/${table}`.
    pub routing: Option<crate::RoutingConfig>,
}

/// `[ingest.registry]`: the schema registry ingest resolves schema UUIDs and
/// ids from: Tributary's registry (or any Confluent-compatible one) at `url`,
/// or AWS Glue Schema Registry with `[ingest.registry.glue]`. Exactly one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryClientConfig {
    /// Base URL of a Tributary or Confluent-compatible registry,
    /// e.g. `http://registry:8081`.
    pub url: Option<String>,
    /// Name of an environment variable holding a bearer token for `url`.
    pub token_env: Option<String>,
    /// Resolve UUIDs from AWS Glue Schema Registry instead.
    pub glue: Option<GlueRegistryConfig>,
    /// An Avro schema file (`.avsc`) to read every Avro message as: the
    /// writer's data is resolved to it by Avro's rules, so columns stay stable
    /// across writer versions. Without it, messages are read as written.
    pub reader_schema: Option<std::path::PathBuf>,
    /// Most schemas (with their prepared decoders) kept in memory.
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: usize,
    /// How long a schema the registry said it does not know is remembered as
    /// unknown before it is asked again, in milliseconds.
    #[serde(default = "default_unknown_retry_ms")]
    pub unknown_retry_ms: u64,
    /// Timeout of one request to the registry, in milliseconds.
    #[serde(default = "default_registry_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Longest wait between retries while the registry is unreachable, in
    /// milliseconds. Ingest never dead-letters a message because of an outage:
    /// it waits.
    #[serde(default = "default_registry_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Check each JSON payload whose framing names a JSON Schema against
    /// that schema; a payload it does not accept is a dead letter
    /// (`validation`) with the failing locations.
    #[serde(default)]
    pub validate_json: bool,
}

/// `[ingest.registry.glue]`: AWS Glue Schema Registry, with the AWS SDK's
/// default credential chain (environment, profile, ECS task role, EKS IRSA).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlueRegistryConfig {
    /// AWS region; the SDK's default region chain when unset.
    pub region: Option<String>,
    /// Endpoint URL override (tests, VPC endpoints).
    pub endpoint: Option<String>,
}

/// How messages are delimited in `[ingest.files]` files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileFormat {
    /// One message per line (newline-delimited JSON).
    #[default]
    Lines,
    /// Each message is a 4-byte big-endian length followed by that many
    /// bytes: for binary messages (Glue-framed or Confluent-framed Avro).
    LengthPrefixed,
}

/// `[ingest.files]`: newline-delimited JSON, plain or gzip-compressed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSourceConfig {
    /// A directory to watch, or `-` for standard input. Every regular file in the
    /// directory whose name does not start with `.` is a source partition, named
    /// after the file; names ending in `.gz` are gzip-decompressed.
    pub path: String,
    /// How often the directory is listed for new and growing files, in
    /// milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// A `.gz` file is read only once it has not changed for this long, in
    /// milliseconds, because a gzip stream cannot be read while it is written.
    #[serde(default = "default_gz_settle_ms")]
    pub gz_settle_ms: u64,
    /// How messages are delimited: `lines` (default) or `length-prefixed`.
    #[serde(default)]
    pub format: FileFormat,
}

/// `[ingest.batch]`: a micro-batch is closed by whichever limit is hit first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most messages in one batch.
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// Most message bytes (before decoding) in one batch.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Longest time a message waits in an open batch, in milliseconds.
    #[serde(default = "default_max_latency_ms")]
    pub max_latency_ms: u64,
}

/// Row-file compression codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowFileCompression {
    /// Avro `zstandard` codec.
    #[default]
    Zstd,
    /// Avro `deflate` codec.
    Deflate,
}

/// `[ingest.flatten]`: nested messages to flat rows (see the ingest crate's
/// `flatten` module for the rules).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlattenConfig {
    /// Dotted path of an array of objects to explode into one row per element,
    /// e.g. `messages` or `payload.events`. The envelope's other fields are
    /// copied onto every row; the element's fields become columns prefixed by
    /// the array path (`messages_level`).
    pub explode: Option<String>,
    /// Column (flattened name) holding the record key, e.g. `messages_id`.
    /// Without it the key is derived from the source position.
    pub key_field: Option<String>,
    /// Column (flattened name) holding the event time, an RFC 3339 string or a
    /// number of milliseconds since the Unix epoch. It gives the `date`
    /// partition column (UTC). Rows without a usable event time get a null `date`.
    pub event_time_field: Option<String>,
    /// Declared column types (flattened name → `boolean`, `long`, `double`,
    /// `string`, or `list<…>` of one of those). With a declared schema, values
    /// of another type are dead-lettered instead of widening the column.
    #[serde(default)]
    pub schema: BTreeMap<String, ColumnTypeName>,
    /// With a declared `schema`: whether columns it does not declare are
    /// inferred (`true`) or make the message a dead letter (`false`, default).
    #[serde(default)]
    pub infer_undeclared: bool,
}

/// A column type as written in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ColumnTypeName {
    /// `boolean`
    #[serde(rename = "boolean")]
    Boolean,
    /// `long` (64-bit signed integer)
    #[serde(rename = "long")]
    Long,
    /// `double`
    #[serde(rename = "double")]
    Double,
    /// `string`
    #[serde(rename = "string")]
    String,
    /// `list<boolean>`
    #[serde(rename = "list<boolean>")]
    BooleanList,
    /// `list<long>`
    #[serde(rename = "list<long>")]
    LongList,
    /// `list<double>`
    #[serde(rename = "list<double>")]
    DoubleList,
    /// `list<string>`
    #[serde(rename = "list<string>")]
    StringList,
}

fn default_max_message_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_dead_letter_max_payload_bytes() -> u64 {
    1024 * 1024
}
fn default_poll_interval_ms() -> u64 {
    500
}
fn default_gz_settle_ms() -> u64 {
    2_000
}
fn default_cache_capacity() -> usize {
    1_000
}
fn default_unknown_retry_ms() -> u64 {
    30_000
}
fn default_registry_timeout_ms() -> u64 {
    5_000
}
fn default_registry_max_backoff_ms() -> u64 {
    30_000
}
fn default_max_records() -> usize {
    100_000
}
fn default_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_max_latency_ms() -> u64 {
    5_000
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_records: default_max_records(),
            max_bytes: default_max_bytes(),
            max_latency_ms: default_max_latency_ms(),
        }
    }
}

/// Column names Tributary adds to every row; flattened columns may not use them.
pub const RESERVED_COLUMNS: [&str; 6] = [
    "_hour",
    "_key",
    "_partition",
    "_position",
    "_redact_tokens",
    "date",
];

/// Prefixes of the metadata columns sources add to rows (`_kafka_offset`,
/// `_kinesis_sequence`, …); flattened columns may not start with them.
pub const SOURCE_COLUMN_PREFIXES: [&str; 2] = ["_kafka_", "_kinesis_"];

/// Whether a flattened column may not be called `name`: it is one of
/// [`RESERVED_COLUMNS`] or starts with one of [`SOURCE_COLUMN_PREFIXES`].
pub fn is_reserved_column(name: &str) -> bool {
    RESERVED_COLUMNS.contains(&name) || SOURCE_COLUMN_PREFIXES.iter().any(|p| name.starts_with(p))
}

impl IngestConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let stream_ok = !self.stream.is_empty()
            && self
                .stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !stream_ok {
            return Err(invalid(
                "ingest.stream",
                &self.stream,
                "use letters, digits, '_', '-' and '.' only",
            ));
        }
        match self.source()? {
            Source::Files(files) => files.validate()?,
            Source::Kafka(kafka) => {
                kafka.validate()?;
                if kafka.tombstones == Some(Tombstones::Delete) && self.flatten.key_field.is_none()
                {
                    return Err(invalid(
                        "ingest.kafka.tombstones",
                        "delete",
                        "a tombstone deletes a record key: set ingest.flatten.key_field",
                    ));
                }
            }
            Source::Kinesis(kinesis) => kinesis.validate()?,
        }
        if self.batch.max_records == 0 {
            return Err(invalid("ingest.batch.max_records", 0, "must be at least 1"));
        }
        if self.batch.max_bytes == 0 {
            return Err(invalid("ingest.batch.max_bytes", 0, "must be at least 1"));
        }
        if self.max_message_bytes == 0 {
            return Err(invalid("ingest.max_message_bytes", 0, "must be at least 1"));
        }
        if self.batch.max_bytes < self.max_message_bytes {
            return Err(invalid(
                "ingest.batch.max_bytes",
                self.batch.max_bytes,
                format!(
                    "must be at least ingest.max_message_bytes ({}), or a message could never fit a batch",
                    self.max_message_bytes
                ),
            ));
        }
        if let Some(registry) = &self.registry {
            registry.validate()?;
        }
        self.flatten.validate()
    }
}

/// The one source an `[ingest]` section configures.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// `[ingest.files]`
    Files(&'a FilesSourceConfig),
    /// `[ingest.kafka]`
    Kafka(&'a KafkaSourceConfig),
    /// `[ingest.kinesis]`
    Kinesis(&'a KinesisSourceConfig),
}

impl IngestConfig {
    /// The configured source; an error unless exactly one is configured.
    pub fn source(&self) -> Result<Source<'_>> {
        let configured: Vec<(&str, Source<'_>)> = [
            self.files
                .as_ref()
                .map(|s| ("[ingest.files]", Source::Files(s))),
            self.kafka
                .as_ref()
                .map(|s| ("[ingest.kafka]", Source::Kafka(s))),
            self.kinesis
                .as_ref()
                .map(|s| ("[ingest.kinesis]", Source::Kinesis(s))),
        ]
        .into_iter()
        .flatten()
        .collect();
        match configured.as_slice() {
            [(_, source)] => Ok(*source),
            [] => Err(invalid(
                "ingest",
                "(no source)",
                "configure one source: [ingest.files], [ingest.kafka] or [ingest.kinesis]",
            )),
            many => Err(invalid(
                "ingest",
                many.iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(" and "),
                "configure exactly one source",
            )),
        }
    }
}

impl FilesSourceConfig {
    fn validate(&self) -> Result<()> {
        if self.path.trim().is_empty() {
            return Err(invalid(
                "ingest.files.path",
                &self.path,
                "must not be empty",
            ));
        }
        if self.poll_interval_ms == 0 {
            return Err(invalid(
                "ingest.files.poll_interval_ms",
                0,
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl RegistryClientConfig {
    fn validate(&self) -> Result<()> {
        match (&self.url, &self.glue) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "ingest.registry",
                    "url and glue",
                    "set either `url` or `[ingest.registry.glue]`, not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "ingest.registry",
                    "(neither url nor glue)",
                    "set `url` or `[ingest.registry.glue]`",
                ));
            }
            (Some(url), None) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(invalid(
                    "ingest.registry.url",
                    url,
                    "an http:// or https:// URL",
                ));
            }
            _ => {}
        }
        if self.cache_capacity == 0 {
            return Err(invalid(
                "ingest.registry.cache_capacity",
                0,
                "must be at least 1",
            ));
        }
        if self.request_timeout_ms == 0 || self.max_backoff_ms == 0 {
            return Err(invalid(
                "ingest.registry.request_timeout_ms / max_backoff_ms",
                0,
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl FlattenConfig {
    fn validate(&self) -> Result<()> {
        if let Some(path) = &self.explode
            && (path.is_empty() || path.split('.').any(str::is_empty))
        {
            return Err(invalid(
                "ingest.flatten.explode",
                path,
                "a dotted path of object keys, e.g. `messages` or `payload.events`",
            ));
        }
        for (key, value) in [
            ("ingest.flatten.key_field", &self.key_field),
            ("ingest.flatten.event_time_field", &self.event_time_field),
        ] {
            if let Some(column) = value
                && column.is_empty()
            {
                return Err(invalid(key, column, "must not be empty"));
            }
        }
        for column in self.schema.keys() {
            if is_reserved_column(column) {
                return Err(invalid(
                    &format!("ingest.flatten.schema.{column}"),
                    column,
                    format!(
                        "reserved column name; Tributary adds {RESERVED_COLUMNS:?} and the \
                         source's metadata columns ({SOURCE_COLUMN_PREFIXES:?}…) itself"
                    ),
                ));
            }
        }
        if self.infer_undeclared && self.schema.is_empty() {
            return Err(invalid(
                "ingest.flatten.infer_undeclared",
                true,
                "only meaningful with a declared ingest.flatten.schema",
            ));
        }
        Ok(())
    }
}
