//! The Kafka source: one member of a consumer group that stages each
//! partition assigned to it on the position chain (DESIGN.md, "Exactly-once
//! into the table").
//!
//! ```text
//!  consumer thread (BaseConsumer::poll)                 tokio runtime
//!  ───────────────────────────────────                  ─────────────
//!  assign ─► resume each partition from the lake,
//!            assign at `last staged + 1`
//!  message ─► partition buffer ─► batch full or old ─► Stager::stage ──┐
//!                 │ (paused while a full batch waits)                  │
//!  outcome ◄──────┴──── staged: commit offset · already staged: seek ◄─┘
//!  revoke ─► wait for the partition's batch in flight, stage the rest of
//!            its buffer, commit, let it go (a lost partition is dropped)
//!  SIGTERM ─► pause all, stage every buffer, commit, leave the group
//!  --once: at assignment, each partition's end offset (its high
//!          watermark); messages at or past it are not taken; once the
//!          consumer's position reaches it in every assigned partition,
//!          leave as on SIGTERM
//! ```
//!
//! * **Positions** are Kafka offsets. A partition is read from the lake's
//!   position, never from the group's committed offset; offsets are
//!   committed after staging only so that lag tools see progress.
//! * **One batch in flight per partition.** The next batch fills while the
//!   previous one is encoded and written; a partition whose next batch is
//!   full waits paused. Memory is bounded by two batches per assigned
//!   partition plus librdkafka's prefetch (`queued.max.messages.kbytes`).
//! * **Revocation** stages what was read before the partition is given up;
//!   a partition *lost* (the group moved on without us, e.g. after a long
//!   pause) is dropped unstaged and read again by its new owner. Either way
//!   a late write by this process can only collide with the new owner's
//!   create-only file names or fall below the table's watermark: it never
//!   duplicates rows.
//! * **Metadata columns** (`[ingest.kafka] metadata_columns`): `_kafka_topic`,
//!   `_kafka_partition`, `_kafka_offset`, `_kafka_timestamp` (a UTC timestamp;
//!   null when the broker gives none; a table made before it was typed
//!   keeps its string column, RFC 3339 text) and `_kafka_key` (the key as text when
//!   it is UTF-8, else `0x` + lowercase hex; null without a key). A
//!   `__value_schema_id` header names the value's schema.
//!
//! Rebalance callbacks run on the consumer thread inside `poll`, so they may
//! block: they read the lake and wait for staging through the runtime handle.

mod context;
mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tributary_config::{
    IngestConfig, KafkaSourceConfig, StartPosition, Tombstones, librdkafka_options,
};
use tributary_decode::Val;
use tributary_decode::avro::hex;
use tributary_lake::rowfile::ColumnType;

use crate::batch::{SourceColumns, SourceItem};
use crate::error::{Error, Result};
use crate::run::{Mode, Stager};
use crate::tables::Table;
use context::Context;
use state::State;

/// The metadata columns and their types.
const METADATA_COLUMNS: [(&str, ColumnType); 5] = [
    ("_kafka_topic", ColumnType::String),
    ("_kafka_partition", ColumnType::Long),
    ("_kafka_offset", ColumnType::Long),
    ("_kafka_timestamp", ColumnType::Timestamp),
    ("_kafka_key", ColumnType::String),
];

/// The header that names a value's schema (Confluent's header framing).
const SCHEMA_HEADER: &str = "__value_schema_id";

/// How long one `poll` waits for a message; also how often due batches,
/// staging outcomes and the shutdown flag are looked at when idle.
const POLL: Duration = Duration::from_millis(20);

/// librdkafka's statistics interval, which refreshes the lag gauge, unless
/// `statistics.interval.ms` is set in `[ingest.kafka.options]`.
const STATISTICS_INTERVAL_MS: &str = "1000";

/// Runs a consumer-group member for `kafka` until `shutdown` turns true (or,
/// with [`Mode::Once`], until its partitions are read up to their end
/// offsets at assignment), then stages what it has read, commits and leaves
/// the group.
pub(crate) async fn run(
    config: &IngestConfig,
    kafka: &KafkaSourceConfig,
    stager: Stager,
    mode: Mode,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    if stager.tables.is_routed() {
        // A listed topic without a route fails now, not at its assignment.
        if kafka.topic_pattern.is_none() {
            for topic in &kafka.topics {
                stager.tables.of_topic(topic).await?;
            }
        }
    } else {
        // Opened before joining the group, as a lake that cannot be read
        // stops the process before it takes partitions.
        stager.tables.the_table().await?;
    }
    let (outcomes_tx, outcomes) = mpsc::channel();
    let settings = Settings {
        stream: config.stream.clone(),
        bounded: mode == Mode::Once,
        start: kafka.start,
        metadata_columns: kafka
            .metadata_columns
            .then(|| METADATA_COLUMNS.map(|(name, _)| Arc::<str>::from(name))),
        max_records: config.batch.max_records,
        max_bytes: config.batch.max_bytes,
        max_latency: Duration::from_millis(config.batch.max_latency_ms),
        max_message_bytes: config.max_message_bytes,
        dead_letter_max_payload_bytes: config.dead_letter_max_payload_bytes,
    };
    let context = Context {
        joined: AtomicBool::new(false),
        last_failure: Mutex::new(None),
        state: Mutex::new(State {
            settings,
            shared: Arc::new(stager),
            handle: Handle::current(),
            partitions: HashMap::new(),
            outcomes_tx,
            outcomes,
            generation: 0,
            fatal: None,
        }),
    };
    let consumer: BaseConsumer<Context> = client_config(kafka)?
        .create_with_context(context)
        .map_err(|source| kafka_error("cannot create the consumer", source))?;
    match &kafka.topic_pattern {
        // librdkafka treats a subscription starting with `^` as a pattern.
        Some(pattern) => {
            let pattern = if pattern.starts_with('^') {
                pattern.clone()
            } else {
                format!("^{pattern}")
            };
            consumer.subscribe(&[&pattern])
        }
        None => consumer.subscribe(&kafka.topics.iter().map(String::as_str).collect::<Vec<_>>()),
    }
    .map_err(|source| kafka_error("cannot subscribe", source))?;

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let stop = stop.clone();
        async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
            stop.store(true, Ordering::Relaxed);
        }
    });
    let result = tokio::task::spawn_blocking(move || consume(consumer, &stop))
        .await
        .map_err(|source| Error::Worker {
            partition: "kafka consumer".into(),
            source,
        })?;
    watcher.abort();
    result
}

fn client_config(kafka: &KafkaSourceConfig) -> Result<ClientConfig> {
    let mut config = ClientConfig::new();
    config.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    for (key, value) in librdkafka_options("ingest.kafka", &kafka.options, &kafka.options_env)? {
        config.set(key, value);
    }
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "auto.offset.reset",
            match kafka.start {
                StartPosition::Earliest => "earliest",
                StartPosition::Latest => "latest",
            },
        )
        .set_log_level(RDKafkaLogLevel::Warning);
    Ok(config)
}

fn kafka_error(context: &str, source: KafkaError) -> Error {
    Error::Kafka {
        context: context.to_string(),
        source,
    }
}

/// The consumer loop: poll, buffer, dispatch batches, apply outcomes; on
/// `stop`, drain and leave the group.
fn consume(consumer: BaseConsumer<Context>, stop: &AtomicBool) -> Result<()> {
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let polled = consumer.poll(POLL);
        let mut state = consumer.context().lock();
        if let Some(error) = state.fatal.take() {
            // Nothing more is staged: leaving the group must not flush.
            state.partitions.clear();
            return Err(error);
        }
        match polled {
            Some(Ok(message)) => {
                state.shared.telemetry.source_answered(true);
                state.push(&consumer, &message);
            }
            Some(Err(error)) => {
                if let Some(refused) = consumer.context().refused(&error) {
                    return Err(refused);
                }
                tracing::warn!(%error, "kafka consumer error (librdkafka retries)");
            }
            None => {}
        }
        state.apply_outcomes(&consumer, Duration::ZERO)?;
        state.dispatch_due(&consumer);
        if state.settings.bounded
            && consumer.context().joined.load(Ordering::Relaxed)
            && state.read_to_end(&consumer)
        {
            // `--once`: everything up to the end offsets is read; stage it
            // and leave as on SIGTERM.
            break;
        }
    }
    // SIGTERM: stop fetching, stage what is buffered, commit, leave. The
    // service's grace period bounds how long this may take; what is not
    // staged by then is read again by the partitions' next owners.
    let mut state = consumer.context().lock();
    if let Ok(assignment) = consumer.assignment() {
        let _ = consumer.pause(&assignment);
    }
    let keys: Vec<Key> = state.partitions.keys().cloned().collect();
    for key in keys {
        state.flush(&consumer, &key)?;
    }
    state.partitions.clear();
    drop(state);
    consumer.unsubscribe();
    // Leaving the group serves the final revocation (nothing is left to stage).
    drop(consumer);
    Ok(())
}

/// A partition: its topic and number.
type Key = (Arc<str>, i32);

/// What does not change while the consumer runs.
struct Settings {
    stream: String,
    /// `ingest --once`: each partition is read up to its end offset when
    /// it is assigned, then the consumer stages, commits and leaves.
    bounded: bool,
    start: StartPosition,
    metadata_columns: Option<[Arc<str>; 5]>,
    max_records: usize,
    max_bytes: u64,
    max_latency: Duration,
    max_message_bytes: u64,
    dead_letter_max_payload_bytes: u64,
}

/// `tombstones = "delete"`: the JSON message a tombstone becomes, which
/// flattens to one row holding the message's key in the table's
/// `flatten.key_field` and the compactor's delete marker
/// (`compact.delete_column` = `compact.delete_value`), so that compaction
/// deletes that key from the rows staged before it and from the table.
/// Per table: a routed table has its own flattening and upsert mode.
struct TombstoneDelete {
    /// The explode path's parts when the key field is a field of its
    /// elements (`messages_id` under `messages`), else empty.
    path: Vec<String>,
    /// The key's field: in the element, or at the top level.
    field: String,
    /// The delete marker's column and value.
    marker: (String, String),
}

impl TombstoneDelete {
    /// How a tombstone becomes a delete in `table`, if it does (`tombstones
    /// = "delete"`, or a table in upsert mode, and a key field).
    fn of_table(table: &Table) -> Option<Self> {
        match (table.tombstones, &table.flatten.key_field) {
            (Tombstones::Delete, Some(key_field)) => Some(Self::new(
                key_field,
                table.flatten.explode.as_deref(),
                table.delete_marker.clone(),
            )),
            _ => None,
        }
    }

    fn new(key_field: &str, explode: Option<&str>, marker: (String, String)) -> Self {
        let element = explode.and_then(|path| {
            let field = key_field.strip_prefix(&format!("{}_", path.replace('.', "_")))?;
            Some((
                path.split('.').map(String::from).collect(),
                field.to_string(),
            ))
        });
        let (path, field) = element.unwrap_or_else(|| (Vec::new(), key_field.to_string()));
        Self {
            path,
            field,
            marker,
        }
    }

    /// The message deleting `key` (a number when it reads as one, as the
    /// key column holds numbers as such).
    fn message(&self, key: &str) -> Vec<u8> {
        use serde_json::{Map, Value};
        let key = serde_json::from_str::<Value>(key)
            .ok()
            .filter(Value::is_number)
            .unwrap_or_else(|| Value::String(key.to_string()));
        let mut value = Value::Object(Map::from_iter([(self.field.clone(), key)]));
        if !self.path.is_empty() {
            value = Value::Array(vec![value]);
        }
        for part in self.path.iter().rev() {
            value = Value::Object(Map::from_iter([(part.clone(), value)]));
        }
        if let Value::Object(top) = &mut value {
            top.insert(self.marker.0.clone(), Value::String(self.marker.1.clone()));
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

fn partition_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

fn item_bytes(item: &SourceItem) -> u64 {
    match item {
        SourceItem::Message(m) => m.payload.len() as u64,
        SourceItem::Bad(letter) => letter.payload_bytes,
    }
}

fn set_paused(consumer: &BaseConsumer<Context>, (topic, number): &Key, paused: bool) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, *number);
    let result = if paused {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(error) = result {
        tracing::warn!(%error, partition = %partition_name(topic, *number), paused, "cannot pause or resume a kafka partition");
    }
}

/// Commits `next` (the next offset to stage) for lag tools. A failure is
/// logged only: the lake, not Kafka, holds the position.
fn commit(consumer: &BaseConsumer<Context>, (topic, number): &Key, next: i64, mode: CommitMode) {
    let mut tpl = TopicPartitionList::new();
    let added = tpl.add_partition_offset(topic, *number, Offset::Offset(next));
    if let Err(error) = added.and_then(|()| consumer.commit(&tpl, mode)) {
        tracing::warn!(%error, partition = %partition_name(topic, *number), next, "cannot commit the kafka offset");
    }
}

/// The metadata columns of `message`, named `names` (in
/// [`METADATA_COLUMNS`] order).
fn metadata_columns(names: &[Arc<str>; 5], message: &BorrowedMessage<'_>) -> SourceColumns {
    let timestamp = message
        .timestamp()
        .to_millis()
        .and_then(|ms| ms.checked_mul(1_000))
        .map_or(Val::Null, Val::Timestamp);
    let key = message.key().map_or(Val::Null, |key| {
        Val::Str(
            match std::str::from_utf8(key) {
                Ok(text) => text.to_string(),
                Err(_) => format!("0x{}", hex(key)),
            }
            .into(),
        )
    });
    let values = [
        Val::Str(message.topic().to_string().into()),
        Val::Long(i64::from(message.partition())),
        Val::Long(message.offset()),
        timestamp,
        key,
    ];
    names.iter().cloned().zip(values).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker() -> (String, String) {
        ("_op".into(), "delete".into())
    }

    #[test]
    fn a_tombstone_becomes_a_message_flattening_to_its_key_and_the_delete_marker() {
        let top = TombstoneDelete::new("id", None, marker());
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&top.message("r1")).unwrap(),
            serde_json::json!({"id": "r1", "_op": "delete"})
        );
        let element = TombstoneDelete::new("payload_events_id", Some("payload.events"), marker());
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&element.message("42")).unwrap(),
            serde_json::json!({"payload": {"events": [{"id": 42}]}, "_op": "delete"})
        );
        // A key field outside the explode path stays at the top level.
        let outside = TombstoneDelete::new("host_id", Some("messages"), marker());
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&outside.message("007")).unwrap(),
            serde_json::json!({"host_id": "007", "_op": "delete"})
        );
    }
}
