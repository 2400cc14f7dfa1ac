//! `[ingest.kinesis]`: the Kinesis Data Streams source.

use serde::Deserialize;

use crate::error::{Result, invalid};

/// `[ingest.kinesis]`: read every shard of one Kinesis data stream, shared
/// between all `tributary ingest` processes of the stream through shard
/// leases on the object store (`_tributary/leases/kinesis/<stream>/<shard>/`).
/// Every shard resumes from the lake, never from a checkpoint elsewhere.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisSourceConfig {
    /// Name of the Kinesis data stream.
    pub stream_name: String,
    /// AWS region; the SDK's default region chain (`AWS_REGION`, profile)
    /// when unset.
    pub region: Option<String>,
    /// Endpoint URL override (kinesalite in tests, VPC endpoints), e.g.
    /// `http://127.0.0.1:4567`. Default: `https://kinesis.<region>.amazonaws.com`.
    pub endpoint: Option<String>,
    /// Where a shard with nothing in the lake starts: `trim_horizon`
    /// (default, the oldest record kept) or `latest`. A child shard of a
    /// split or merge always starts at its beginning.
    #[serde(default)]
    pub start: KinesisStart,
    /// Whether rows get the Kinesis metadata columns `_kinesis_stream`,
    /// `_kinesis_shard`, `_kinesis_sequence`, `_kinesis_subsequence`,
    /// `_kinesis_partition_key` and `_kinesis_arrival_ms`.
    #[serde(default = "default_true")]
    pub metadata_columns: bool,
    /// Most records one GetRecords call returns (1–10000).
    #[serde(default = "default_max_records_per_call")]
    pub max_records_per_call: u32,
    /// Pause between GetRecords calls on a shard that returned nothing, in
    /// milliseconds. Kinesis allows 5 calls per second per shard, shared by
    /// every consumer: at least 200.
    #[serde(default = "default_idle_poll_ms")]
    pub idle_poll_ms: u64,
    /// Shortest pause between two GetRecords calls on one shard, in
    /// milliseconds (at least 200: the per-shard limit of 5 calls/s).
    #[serde(default = "default_min_poll_interval_ms")]
    pub min_poll_interval_ms: u64,
    /// How often shards are listed (ListShards) to find new shards after a
    /// split or merge, in milliseconds.
    #[serde(default = "default_list_shards_interval_ms")]
    pub list_shards_interval_ms: u64,
    /// How long a shard lease lasts unless renewed, in milliseconds. A worker
    /// that dies holds its shards this long; leases are renewed every third
    /// of it.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Longest pause between retries after throttling
    /// (`ProvisionedThroughputExceededException`, `LimitExceededException`)
    /// or another retryable error, in milliseconds. Pauses start at 100 ms
    /// and double.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Timeout of one Kinesis request attempt (and of connecting), in
    /// milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Tries of one call inside the AWS SDK (standard retry mode) before the
    /// shard reader's own backoff takes over. Default: the SDK's chain
    /// (`AWS_MAX_ATTEMPTS`, the profile's `max_attempts`, else 3).
    pub max_attempts: Option<u32>,
    /// This worker's name in shard leases. Default: host name, process id
    /// and start time, unique per process. Two running workers must never
    /// share one.
    pub worker_id: Option<String>,
}

/// Where a shard with nothing in the lake starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KinesisStart {
    /// The oldest record the stream still keeps (`TRIM_HORIZON`).
    #[default]
    TrimHorizon,
    /// Records put after the shard is first read (`LATEST`).
    Latest,
}

fn default_true() -> bool {
    true
}
fn default_max_records_per_call() -> u32 {
    10_000
}
fn default_idle_poll_ms() -> u64 {
    1_000
}
fn default_min_poll_interval_ms() -> u64 {
    200
}
fn default_list_shards_interval_ms() -> u64 {
    10_000
}
fn default_lease_ms() -> u64 {
    20_000
}
fn default_max_backoff_ms() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    10_000
}

impl KinesisSourceConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let name_ok = !self.stream_name.is_empty()
            && self.stream_name.len() <= 128
            && self
                .stream_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !name_ok {
            return Err(invalid(
                "ingest.kinesis.stream_name",
                &self.stream_name,
                "a Kinesis stream name: 1 to 128 letters, digits, '_', '-' and '.'",
            ));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(invalid(
                "ingest.kinesis.endpoint",
                endpoint,
                "must be an http:// or https:// URL",
            ));
        }
        if !(1..=10_000).contains(&self.max_records_per_call) {
            return Err(invalid(
                "ingest.kinesis.max_records_per_call",
                self.max_records_per_call,
                "must be between 1 and 10000",
            ));
        }
        for (key, value) in [
            ("idle_poll_ms", self.idle_poll_ms),
            ("min_poll_interval_ms", self.min_poll_interval_ms),
        ] {
            if value < 200 {
                return Err(invalid(
                    &format!("ingest.kinesis.{key}"),
                    value,
                    "must be at least 200 (Kinesis allows 5 GetRecords calls per second per shard)",
                ));
            }
        }
        if self.lease_ms < 1_000 {
            return Err(invalid(
                "ingest.kinesis.lease_ms",
                self.lease_ms,
                "must be at least 1000",
            ));
        }
        if self.list_shards_interval_ms < 1_000 {
            return Err(invalid(
                "ingest.kinesis.list_shards_interval_ms",
                self.list_shards_interval_ms,
                "must be at least 1000 (ListShards allows 100 calls per second per stream)",
            ));
        }
        if self.max_backoff_ms < 100 {
            return Err(invalid(
                "ingest.kinesis.max_backoff_ms",
                self.max_backoff_ms,
                "must be at least 100",
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err(invalid(
                "ingest.kinesis.request_timeout_ms",
                0,
                "must be at least 1",
            ));
        }
        if self.max_attempts == Some(0) {
            return Err(invalid(
                "ingest.kinesis.max_attempts",
                0,
                "must be at least 1 (1 turns the SDK's retries off)",
            ));
        }
        if let Some(id) = &self.worker_id
            && (id.is_empty() || id.contains('/'))
        {
            return Err(invalid(
                "ingest.kinesis.worker_id",
                id,
                "must be non-empty and contain no '/'",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn parse(kinesis: &str) -> crate::Result<Config> {
        let text = format!(
            "[lake]\ntable_uri = \"/tmp/t\"\n[ingest]\nstream = \"s\"\n[ingest.kinesis]\n{kinesis}\n"
        );
        Config::from_toml_str(&text, std::iter::empty())
    }

    /// The error and its source, as the binary prints them.
    fn message(err: crate::ConfigError) -> String {
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            source = s.source();
        }
        message
    }

    #[test]
    fn kinesis_section_parses_with_defaults_and_rejects_bad_values() {
        let config = parse("stream_name = \"events\"").unwrap();
        let k = config.ingest.unwrap().kinesis.unwrap();
        assert_eq!(k.stream_name, "events");
        assert_eq!(k.start, super::KinesisStart::TrimHorizon);
        assert_eq!(k.lease_ms, 20_000);
        assert!(k.metadata_columns);

        let err = parse("stream_name = \"events\"\nlease_msec = 5").unwrap_err();
        let err = message(err);
        assert!(err.contains("lease_msec"), "{err}");
        let err = parse("stream_name = \"bad name\"").unwrap_err();
        let err = message(err);
        assert!(err.contains("bad name"), "{err}");
        let err = parse("stream_name = \"e\"\nmin_poll_interval_ms = 50").unwrap_err();
        let err = message(err);
        assert!(err.contains("min_poll_interval_ms"), "{err}");
        let err = parse("stream_name = \"e\"\nendpoint = \"localhost:4567\"").unwrap_err();
        let err = message(err);
        assert!(err.contains("localhost:4567"), "{err}");
        let err = parse("stream_name = \"e\"\nstart = \"earliest\"").unwrap_err();
        let err = message(err);
        assert!(err.contains("earliest"), "{err}");
    }
}
