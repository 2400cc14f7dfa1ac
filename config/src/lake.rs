use serde::Deserialize;

use crate::error::{Result, invalid};

/// `[lake]`: the Delta table and Tributary's objects beside it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Location of the Delta table: `s3://bucket/prefix`, a local directory
    /// path (relative paths are resolved against the working directory) or a
    /// `file://` URI. Row files, dead letters and other bookkeeping live under
    /// `<table_uri>/_tributary/`.
    pub table_uri: String,
    /// How to reach S3 when `table_uri` is an `s3://` URI. Credentials are
    /// never configured here: they come from the AWS credential chain
    /// (environment, profile, ECS task role, EKS IRSA).
    #[serde(default)]
    pub s3: S3Config,
    /// Columns that identify the person a row is about (e.g.
    /// `messages_user_id`, `messages_user_email`). Parquet files get bloom
    /// filters on them (as on `_key`), the compactor sorts by them first, and
    /// `tributary forget` erases by their values. Default: none.
    #[serde(default)]
    pub subject_columns: Vec<String>,
    /// Free-text columns (e.g. `messages_message`) that may mention people:
    /// `tributary forget` replaces every occurrence of a request's
    /// identifiers in them by `[redacted]` (the row stays, its other values
    /// untouched), and compaction indexes their identifier-like tokens in the
    /// hidden column `_redact_tokens` (with a bloom filter) so that files
    /// that cannot mention a subject are not read. Default: none.
    #[serde(default)]
    pub redact_columns: Vec<String>,
    /// How a new table is partitioned: `"date"` (the event's UTC day, a
    /// Delta `date` column), optionally followed by `"hour"` (the event's UTC
    /// hour, 0–23, in the integer column `_hour`) and by low-cardinality
    /// flattened columns (e.g. `"service"`), whose values become partition
    /// values. An existing table keeps the partitioning it was created
    /// with; a different setting is an error. Default: `["date"]`.
    #[serde(default = "default_partition_by")]
    pub partition_by: Vec<String>,
    /// Most distinct values one partition column (other than `date` and
    /// `hour`) may take in one compaction round; more fail the round with an
    /// error naming the column, and the rows stay staged. A guard against
    /// partitioning by a high-cardinality column. Default 1000.
    #[serde(default = "default_max_partition_values")]
    pub max_partition_values: usize,
    /// `[lake.upsert]`: upsert mode (at most one row per record key).
    /// Default: absent, insert-only.
    #[serde(default)]
    pub upsert: Option<crate::UpsertConfig>,
}

/// The name of the hour partition column `lake.partition_by = [.., "hour"]`
/// adds.
pub const HOUR_COLUMN: &str = "_hour";

fn default_partition_by() -> Vec<String> {
    vec!["date".into()]
}
fn default_max_partition_values() -> usize {
    1000
}

impl LakeConfig {
    /// The table at `table_uri` with every other setting at its default.
    pub fn new(table_uri: impl Into<String>) -> Self {
        Self {
            table_uri: table_uri.into(),
            s3: S3Config::default(),
            subject_columns: Vec::new(),
            redact_columns: Vec::new(),
            partition_by: default_partition_by(),
            max_partition_values: default_max_partition_values(),
            upsert: None,
        }
    }

    /// The table's partition columns as `partition_by` names them: `date`,
    /// then `_hour` for `"hour"`, then the other columns.
    pub fn partition_columns(&self) -> Vec<String> {
        self.partition_by
            .iter()
            .map(|c| {
                if c == "hour" {
                    HOUR_COLUMN.to_string()
                } else {
                    c.clone()
                }
            })
            .collect()
    }
}

/// `[lake.s3]`: the S3 (or S3-compatible) endpoint of an `s3://` table.
///
/// Every request is retried on 5xx answers (such as 503 SlowDown), 429,
/// dropped connections and, for reads and unconditional writes, timeouts,
/// with exponential backoff from 100 ms up to 15 s between attempts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The AWS region, e.g. `eu-west-1`. Default: from the environment
    /// (`AWS_REGION`) or profile.
    pub region: Option<String>,
    /// Endpoint URL of an S3-compatible server, e.g. `http://127.0.0.1:5000`.
    /// Default: AWS S3 of the region.
    pub endpoint: Option<String>,
    /// Allow `http://` endpoints (test servers). Default false.
    #[serde(default)]
    pub allow_http: bool,
    /// Address buckets as `endpoint/bucket` (path style) instead of
    /// `bucket.endpoint` (virtual-hosted style). Most S3-compatible servers
    /// need it. Default false.
    #[serde(default)]
    pub path_style: bool,
    /// How long one request may take, from sending it to the end of the
    /// answer's body, before it counts as timed out (and is retried, if it
    /// is safe to repeat), in milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// How long connecting to the endpoint may take, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Most retries of one request; 0 disables retries.
    #[serde(default = "default_max_retries")]
    pub max_retries: usize,
    /// No retry starts later than this after a request's first attempt, in
    /// milliseconds. Keep it under 5 minutes: retries reuse the first
    /// attempt's signature.
    #[serde(default = "default_retry_timeout_ms")]
    pub retry_timeout_ms: u64,
}

// The defaults are object_store's own.
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_max_retries() -> usize {
    10
}
fn default_retry_timeout_ms() -> u64 {
    180_000
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            region: None,
            endpoint: None,
            allow_http: false,
            path_style: false,
            request_timeout_ms: default_request_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            max_retries: default_max_retries(),
            retry_timeout_ms: default_retry_timeout_ms(),
        }
    }
}

impl S3Config {
    fn validate(&self) -> Result<()> {
        for (key, value) in [
            ("lake.s3.request_timeout_ms", self.request_timeout_ms),
            ("lake.s3.connect_timeout_ms", self.connect_timeout_ms),
            ("lake.s3.retry_timeout_ms", self.retry_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, value, "must be greater than 0"));
            }
        }
        Ok(())
    }
}

impl LakeConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.table_uri.trim().is_empty() {
            return Err(invalid(
                "lake.table_uri",
                &self.table_uri,
                "must not be empty",
            ));
        }
        if let Some(empty) = self.subject_columns.iter().find(|c| c.trim().is_empty()) {
            return Err(invalid(
                "lake.subject_columns",
                format!("{empty:?}"),
                "column names must not be empty",
            ));
        }
        for column in &self.redact_columns {
            let problem = if column.trim().is_empty() {
                Some("column names must not be empty")
            } else if crate::is_reserved_column(column) {
                Some("names a column Tributary reserves")
            } else if self.partition_by.contains(column) {
                Some(
                    "is a partition column (lake.partition_by): its values are object paths, which cannot be redacted",
                )
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(invalid(
                    "lake.redact_columns",
                    format!("{:?}", self.redact_columns),
                    format!("`{column}` {problem}"),
                ));
            }
        }
        let spec = format!("{:?}", self.partition_by);
        if self.partition_by.first().map(String::as_str) != Some("date") {
            return Err(invalid(
                "lake.partition_by",
                &spec,
                "must start with \"date\" (then optionally \"hour\", then columns)",
            ));
        }
        for (i, column) in self.partition_by.iter().enumerate().skip(1) {
            let problem = if column.trim().is_empty() {
                Some("column names must not be empty")
            } else if column == "hour" && i != 1 {
                Some("\"hour\" must come right after \"date\"")
            } else if column == "date" || self.partition_by[..i].contains(column) {
                Some("a column may appear only once")
            } else if crate::is_reserved_column(column) {
                Some("names a column Tributary reserves")
            } else if self.subject_columns.contains(column) {
                // Partition values are object paths, log entries and event
                // payloads: an identifier there could never be erased.
                Some(
                    "is a subject column (lake.subject_columns): identifiers may not be partition values",
                )
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(invalid(
                    "lake.partition_by",
                    &spec,
                    format!("`{column}` {problem}"),
                ));
            }
        }
        if self.partition_by.len() > 4 {
            return Err(invalid(
                "lake.partition_by",
                &spec,
                "at most 4 partition levels: each multiplies the table's partitions",
            ));
        }
        if self.max_partition_values == 0 {
            return Err(invalid(
                "lake.max_partition_values",
                0,
                "must be at least 1",
            ));
        }
        if let Some(endpoint) = &self.s3.endpoint {
            let scheme_ok = endpoint.starts_with("https://")
                || (endpoint.starts_with("http://") && self.s3.allow_http);
            if !scheme_ok {
                return Err(invalid(
                    "lake.s3.endpoint",
                    endpoint,
                    "must start with https:// (or http:// with lake.s3.allow_http = true)",
                ));
            }
        }
        self.s3.validate()
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const S3: &str = r#"
        [lake]
        table_uri = "s3://bucket/t"
        [lake.s3]
        region = "eu-west-1"
    "#;

    fn load(text: &str) -> crate::Result<Config> {
        Config::from_toml_str(text, std::iter::empty())
    }

    #[test]
    fn s3_timeouts_and_retries_default_to_object_stores() {
        let s3 = load(S3).unwrap().lake.s3;
        assert_eq!(
            (
                s3.request_timeout_ms,
                s3.connect_timeout_ms,
                s3.max_retries,
                s3.retry_timeout_ms
            ),
            (30_000, 5_000, 10, 180_000)
        );
        let s3 = load(&format!("{S3}max_retries = 0\nrequest_timeout_ms = 1500\n"))
            .unwrap()
            .lake
            .s3;
        assert_eq!((s3.max_retries, s3.request_timeout_ms), (0, 1500));
    }

    #[test]
    fn zero_s3_timeout_is_rejected_and_named() {
        let err = load(&format!("{S3}connect_timeout_ms = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lake.s3.connect_timeout_ms"), "{err}");
    }

    #[test]
    fn redact_columns_are_read_and_checked() {
        let config = load("[lake]\ntable_uri = \"/tmp/t\"\nredact_columns = [\"msg\"]\n").unwrap();
        assert_eq!(config.lake.redact_columns, ["msg"]);
        for bad in ["_key", "date", ""] {
            let err = load(&format!(
                "[lake]\ntable_uri = \"/tmp/t\"\nredact_columns = [\"{bad}\"]\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains("lake.redact_columns"), "{err}");
        }
    }

    #[test]
    fn a_subject_column_is_never_a_partition_column() {
        let err = load(
            "[lake]\ntable_uri = \"/tmp/t\"\nsubject_columns = [\"user_email\"]\n\
             partition_by = [\"date\", \"user_email\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("lake.partition_by") && err.contains("subject column"),
            "{err}"
        );
    }
}
