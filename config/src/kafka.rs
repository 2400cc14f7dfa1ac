//! `[ingest.kafka]`: the Kafka source.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Result, invalid};

/// `[ingest.kafka]`: read topics as a member of a consumer group
/// (cooperative-sticky assignment). Every assigned partition resumes from
/// the lake, never from the group's committed offset; offsets are committed
/// after staging, for lag tools.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port[,host:port…]` (librdkafka's
    /// `bootstrap.servers`).
    pub brokers: String,
    /// Consumer group id. Every `tributary ingest` process of one stream uses
    /// the same group.
    pub group_id: String,
    /// Topics to read. Either `topics` or `topic_pattern`.
    #[serde(default)]
    pub topics: Vec<String>,
    /// A regular expression (librdkafka's syntax) matching the topics to read;
    /// new matching topics are picked up as the metadata refreshes.
    pub topic_pattern: Option<String>,
    /// Where a partition with nothing in the lake starts: `earliest`
    /// (default) or `latest`.
    #[serde(default)]
    pub start: StartPosition,
    /// Whether rows get the Kafka metadata columns `_kafka_topic`,
    /// `_kafka_partition`, `_kafka_offset`, `_kafka_timestamp` and
    /// `_kafka_key`.
    #[serde(default = "default_true")]
    pub metadata_columns: bool,
    /// librdkafka consumer properties passed through as they are: security
    /// (`security.protocol`, `sasl.mechanism`, `ssl.ca.location`, …), timeouts,
    /// fetch sizes. Tributary sets `bootstrap.servers`, `group.id`,
    /// `enable.auto.commit`, `enable.auto.offset.store` and
    /// `partition.assignment.strategy` itself; they may not appear here.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// librdkafka properties whose values come from environment variables
    /// (property → variable name), for secrets such as `sasl.password`.
    #[serde(default)]
    pub options_env: BTreeMap<String, String>,
    /// What a message with a key and no value (a log-compaction tombstone)
    /// becomes: `dead_letter` (reason `no_value`) or `delete`, a delete of
    /// the record whose key is the message's key. Default: `delete` for an
    /// upsert table (`[lake.upsert]`), else `dead_letter`
    /// ([`Config::complete`](crate::Config::complete) fills it in).
    #[serde(default)]
    pub tombstones: Option<Tombstones>,
    /// Not a key: `compact.delete_column` and `compact.delete_value`, which
    /// [`Config::complete`](crate::Config::complete) copies here: a
    /// tombstone becomes a row carrying them.
    #[serde(skip)]
    pub delete_marker: (String, String),
}

/// What a Kafka tombstone becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tombstones {
    /// A dead letter with reason `no_value`.
    #[default]
    DeadLetter,
    /// A delete of the key (`ingest.flatten.key_field` must name the
    /// record key).
    Delete,
}

/// Where a partition with nothing in the lake starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    /// The oldest message the broker still has.
    #[default]
    Earliest,
    /// Only messages produced after the partition is assigned.
    Latest,
}

/// librdkafka properties Tributary sets itself.
pub const KAFKA_RESERVED_OPTIONS: [&str; 6] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "partition.assignment.strategy",
    "auto.offset.reset",
];

fn default_true() -> bool {
    true
}

impl KafkaSourceConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(invalid(
                "ingest.kafka.brokers",
                &self.brokers,
                "must not be empty",
            ));
        }
        if self.group_id.trim().is_empty() {
            return Err(invalid(
                "ingest.kafka.group_id",
                &self.group_id,
                "must not be empty",
            ));
        }
        match (self.topics.is_empty(), &self.topic_pattern) {
            (true, None) => {
                return Err(invalid(
                    "ingest.kafka.topics",
                    "[]",
                    "list topics, or set ingest.kafka.topic_pattern",
                ));
            }
            (false, Some(pattern)) => {
                return Err(invalid(
                    "ingest.kafka.topic_pattern",
                    pattern,
                    "set either `topics` or `topic_pattern`, not both",
                ));
            }
            _ => {}
        }
        if let Some(topic) = self.topics.iter().find(|t| !valid_topic(t)) {
            return Err(invalid(
                "ingest.kafka.topics",
                topic,
                "a Kafka topic name: letters, digits, '.', '_' and '-', at most 249",
            ));
        }
        for key in self.options.keys().chain(self.options_env.keys()) {
            if KAFKA_RESERVED_OPTIONS.contains(&key.as_str()) {
                return Err(invalid(
                    &format!("ingest.kafka.options.{key}"),
                    key,
                    "Tributary sets this librdkafka property itself",
                ));
            }
        }
        Ok(())
    }
}

/// `options` with the options of `options_env` (option → environment
/// variable) read from the environment; an unset variable is an error naming
/// `<section>.options_env.<option>`.
pub fn librdkafka_options(
    section: &str,
    options: &BTreeMap<String, String>,
    options_env: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let mut all = options.clone();
    for (key, variable) in options_env {
        let value = std::env::var(variable).map_err(|_| {
            invalid(
                &format!("{section}.options_env.{key}"),
                variable,
                format!("environment variable `{variable}` is not set"),
            )
        })?;
        all.insert(key.clone(), value);
    }
    Ok(all)
}

pub(crate) fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
