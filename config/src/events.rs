use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use crate::error::{Result, invalid};

/// `[events]`: data availability events, delivered by the long-running
/// `tributary compact` to each sink in `[[events.sinks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// How often each sink looks for new commits once it has delivered
    /// everything, in milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Longest pause between delivery attempts to a sink that fails, in
    /// milliseconds; pauses start at one second and double.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Where events go. None: no events are delivered.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// Partition-complete events. Absent: none are decided.
    pub completeness: Option<CompletenessConfig>,
}

/// `[events.completeness]`: when a date (or hour) partition is declared
/// complete (the compactor crate's `events::complete` states the rule).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletenessConfig {
    /// How far every source's latest event time must be past a partition's
    /// end before it is complete, in milliseconds: how late a row may
    /// arrive and still be in the partition when it is declared.
    #[serde(default = "default_allowed_lateness_ms")]
    pub allowed_lateness_ms: u64,
    /// A source partition with no rows committed and none staged for this
    /// long counts as caught up, in milliseconds (a closed Kinesis shard, a
    /// quiet Kafka partition).
    #[serde(default = "default_idle_after_ms")]
    pub idle_after_ms: u64,
}

/// The longest `allowed_lateness_ms`: 30 days.
const MAX_LATENESS_MS: u64 = 30 * 86_400_000;

fn default_allowed_lateness_ms() -> u64 {
    900_000
}

fn default_idle_after_ms() -> u64 {
    3_600_000
}

/// One `[[events.sinks]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The sink's name: its delivery cursor (`_tributary/events/<name>/`)
    /// and the `sink` label of its metrics. Letters, digits, `-` and `_`.
    pub name: String,
    /// Where a sink without a cursor starts: `latest` (default; after the
    /// table's newest version, or at its first when there is no table yet)
    /// or `earliest` (the oldest commit the Delta log still holds).
    #[serde(default)]
    pub start: EventStart,
    /// An HTTP endpoint. Exactly one of `webhook`, `kafka` and
    /// `eventbridge` is set.
    pub webhook: Option<WebhookConfig>,
    /// A Kafka topic.
    pub kafka: Option<KafkaSinkConfig>,
    /// An Amazon EventBridge event bus.
    pub eventbridge: Option<EventBridgeConfig>,
}

/// `[events.sinks.eventbridge]`: an Amazon EventBridge event bus receiving
/// each event through `PutEvents` (its `detail-type` is the event's `kind`,
/// its `detail` the event), signed with the AWS SDK's credential chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBridgeConfig {
    /// The event bus, by name or ARN.
    #[serde(default = "default_bus")]
    pub bus: String,
    /// The events' `source`, which rules match on.
    #[serde(default = "default_event_source")]
    pub source: String,
    /// The AWS region; default: the SDK's chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Another endpoint (a VPC endpoint, a test server); default: the
    /// region's.
    pub endpoint: Option<String>,
    /// Timeout of one request, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_bus() -> String {
    "default".into()
}

fn default_event_source() -> String {
    "tributary".into()
}

/// Where a new sink starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStart {
    /// After the table's newest version.
    #[default]
    Latest,
    /// The oldest commit the Delta log holds.
    Earliest,
}

/// `[events.sinks.webhook]`: an HTTP endpoint that receives each event as a
/// JSON `POST`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint, `http://` or `https://`.
    pub url: String,
    /// Environment variable holding a shared secret: each request then
    /// carries `X-Tributary-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    pub secret_env: Option<String>,
    /// Timeout of one request, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: default_poll_interval_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            sinks: Vec::new(),
            completeness: None,
        }
    }
}

/// `[events.sinks.kafka]`: a Kafka topic receiving each event as one
/// message (key: the event's `id`; value: its JSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// librdkafka producer options (TLS, SASL, …), as in
    /// `[ingest.kafka.options]`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// librdkafka options whose values are read from environment variables
    /// (option → variable), for secrets.
    #[serde(default)]
    pub options_env: BTreeMap<String, String>,
    /// How long one event may take to be acknowledged by the brokers, in
    /// milliseconds (librdkafka's `message.timeout.ms`).
    #[serde(default = "default_kafka_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_kafka_timeout_ms() -> u64 {
    30_000
}

fn default_poll_interval_ms() -> u64 {
    1_000
}

fn default_max_backoff_ms() -> u64 {
    60_000
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl EventsConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.poll_interval_ms < 100 {
            return Err(invalid(
                "events.poll_interval_ms",
                self.poll_interval_ms,
                "must be at least 100",
            ));
        }
        if self.max_backoff_ms < 1_000 {
            return Err(invalid(
                "events.max_backoff_ms",
                self.max_backoff_ms,
                "must be at least 1000",
            ));
        }
        if let Some(completeness) = &self.completeness {
            if completeness.idle_after_ms < 1_000 {
                return Err(invalid(
                    "events.completeness.idle_after_ms",
                    completeness.idle_after_ms,
                    "must be at least 1000",
                ));
            }
            if completeness.allowed_lateness_ms > MAX_LATENESS_MS {
                return Err(invalid(
                    "events.completeness.allowed_lateness_ms",
                    completeness.allowed_lateness_ms,
                    "must be at most 2592000000 (30 days)",
                ));
            }
        }
        let mut names = HashSet::new();
        for sink in &self.sinks {
            let name_ok = !sink.name.is_empty()
                && sink
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
            if !name_ok {
                return Err(invalid(
                    "events.sinks.name",
                    &sink.name,
                    "letters, digits, '-' and '_' only",
                ));
            }
            if !names.insert(sink.name.as_str()) {
                return Err(invalid(
                    "events.sinks.name",
                    &sink.name,
                    "two sinks have this name",
                ));
            }
            match (&sink.webhook, &sink.kafka, &sink.eventbridge) {
                (Some(webhook), None, None) => webhook.validate()?,
                (None, Some(kafka), None) => kafka.validate()?,
                (None, None, Some(eventbridge)) => eventbridge.validate()?,
                _ => {
                    return Err(invalid(
                        "events.sinks",
                        &sink.name,
                        "a sink needs exactly one of [events.sinks.webhook], [events.sinks.kafka] \
                         and [events.sinks.eventbridge]",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl WebhookConfig {
    fn validate(&self) -> Result<()> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(invalid(
                "events.sinks.webhook.url",
                &self.url,
                "must be an http:// or https:// URL",
            ));
        }
        if self.timeout_ms == 0 {
            return Err(invalid(
                "events.sinks.webhook.timeout_ms",
                0,
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl EventBridgeConfig {
    fn validate(&self) -> Result<()> {
        if self.bus.is_empty() {
            return Err(invalid("events.sinks.eventbridge.bus", "", "name a bus"));
        }
        if self.source.is_empty() {
            return Err(invalid(
                "events.sinks.eventbridge.source",
                "",
                "name the events' source",
            ));
        }
        if self.timeout_ms == 0 {
            return Err(invalid(
                "events.sinks.eventbridge.timeout_ms",
                0,
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl KafkaSinkConfig {
    fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(invalid(
                "events.sinks.kafka.brokers",
                &self.brokers,
                "name at least one broker",
            ));
        }
        if self.topic.is_empty() {
            return Err(invalid(
                "events.sinks.kafka.topic",
                &self.topic,
                "must not be empty",
            ));
        }
        if self.timeout_ms == 0 {
            return Err(invalid(
                "events.sinks.kafka.timeout_ms",
                0,
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
