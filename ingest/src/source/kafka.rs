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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tributary_config::{IngestConfig, KafkaSourceConfig, StartPosition, librdkafka_options};
use tributary_lake::PartitionId;
use tributary_lake::chain::StageOutcome;
use tributary_lake::dead_letter::{DeadLetter, Reason};
use tributary_lake::rowfile::ColumnType;

use tributary_decode::Val;
use tributary_decode::avro::hex;

use crate::batch::SourceColumns;
use crate::batch::{ColumnTypes, Message, SourceItem};
use crate::error::{Error, Result};
use crate::run::Stager;

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

/// Runs a consumer-group member for `kafka` until `shutdown` turns true, then
/// stages what it has read, commits and leaves the group.
pub(crate) async fn run(
    config: &IngestConfig,
    kafka: &KafkaSourceConfig,
    stager: Stager,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let mut types = stager.types.clone();
    if kafka.metadata_columns {
        for (name, ty) in METADATA_COLUMNS {
            types.fix_source_column(name, ty);
        }
    }
    let (outcomes_tx, outcomes) = mpsc::channel();
    let settings = Settings {
        stream: config.stream.clone(),
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
            types,
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
    start: StartPosition,
    metadata_columns: Option<[Arc<str>; 5]>,
    max_records: usize,
    max_bytes: u64,
    max_latency: Duration,
    max_message_bytes: u64,
    dead_letter_max_payload_bytes: u64,
}

/// The consumer's context: librdkafka calls `rebalance` on the consumer
/// thread, inside `poll`, while the loop holds no lock.
struct Context {
    state: Mutex<State>,
    /// Whether the group has assigned partitions to this member once: the
    /// brokers accepted its TLS handshake and credentials.
    joined: AtomicBool,
    /// The newest connection failure librdkafka logged (facility `FAIL`),
    /// which names the cause that an error code alone does not. Apart from
    /// `state`: librdkafka logs from inside calls made while `state` is held.
    last_failure: Mutex<Option<String>>,
}

impl Context {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the state was held leaves nothing half-staged that
        // the lake would not resolve, so the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error to stop with when `error` is an authentication or TLS
    /// failure before the group ever assigned partitions: the credentials,
    /// mechanism or trusted certificates are wrong, and librdkafka's retries
    /// would repeat the failure forever while nothing is read. Later ones
    /// (a broker restarting with a new certificate, a credential rotation
    /// under way) are retried like any connection failure.
    fn refused(&self, error: &KafkaError) -> Option<Error> {
        if self.joined.load(Ordering::Relaxed) {
            return None;
        }
        let problem = match error.rdkafka_error_code()? {
            RDKafkaErrorCode::Authentication => {
                "SASL authentication failed (check sasl.mechanism, sasl.username and the password)"
            }
            RDKafkaErrorCode::SSL => {
                "the TLS handshake failed (check ssl.ca.location and that the broker's certificate names the broker's host)"
            }
            _ => return None,
        };
        let cause = self
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| error.to_string());
        Some(kafka_error(
            &format!("cannot connect to the brokers: {problem}: {cause}"),
            error.clone(),
        ))
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "FAIL" {
            // Without librdkafka's `[thrd:…]: ` prefix.
            let failure = log_message
                .split_once("]: ")
                .map_or(log_message, |(_, m)| m);
            *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(failure.to_string());
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {log_message}"),
            _ => tracing::debug!(facility = fac, "librdkafka: {log_message}"),
        }
    }

    /// Client-wide errors; all brokers down makes the source not ready.
    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(refused) = self.refused(&error) {
            self.lock().fatal.get_or_insert(refused);
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.lock().shared.telemetry.source_answered(false);
        }
        tracing::warn!(%error, "librdkafka: {reason}");
    }

    /// Sets the lag gauge of every assigned partition: the broker's high
    /// watermark minus the next offset to stage.
    fn stats(&self, statistics: Statistics) {
        let state = self.lock();
        for ((topic, number), partition) in &state.partitions {
            let high = statistics
                .topics
                .get(&**topic)
                .and_then(|t| t.partitions.get(number))
                .map(|p| p.hi_offset);
            let next = partition.next_offset.or_else(|| {
                let first = partition.buffer.front()?.position();
                i64::try_from(first).ok()
            });
            if let (Some(next), Some(high)) = (next, high)
                && high >= 0
            {
                state
                    .shared
                    .telemetry
                    .kafka_lag(&partition_name(topic, *number), (high - next).max(0));
            }
        }
    }
}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut state = self.lock();
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.joined.store(true, Ordering::Relaxed);
                state.assign(consumer, tpl)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                state.revoke(consumer, tpl, consumer.assignment_lost())
            }
            other => {
                tracing::error!(error = ?other, "kafka rebalance failed; dropping the partitions");
                state.revoke(consumer, tpl, true)
            }
        };
        if let Err(error) = result {
            state.fatal.get_or_insert(error);
        }
        let revoked: Vec<String> = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Vec::new(),
            _ => tpl
                .elements()
                .iter()
                .map(|e| partition_name(e.topic(), e.partition()))
                .collect(),
        };
        state
            .shared
            .telemetry
            .kafka_rebalanced(state.partitions.len(), &revoked);
    }
}

/// The consumer's state, shared by the loop and the rebalance callback.
struct State {
    settings: Settings,
    shared: Arc<Stager>,
    handle: Handle,
    /// Column types a newly assigned partition starts from.
    types: ColumnTypes,
    partitions: HashMap<Key, Partition>,
    outcomes_tx: mpsc::Sender<Outcome>,
    outcomes: mpsc::Receiver<Outcome>,
    /// Numbers assignments, so a late outcome of an earlier one is ignored.
    generation: u64,
    /// An error that must stop the consumer (raised inside a callback).
    fatal: Option<Error>,
}

/// An assigned partition.
struct Partition {
    id: PartitionId,
    generation: u64,
    /// Messages read and not yet handed to staging, in offset order.
    buffer: VecDeque<SourceItem>,
    buffer_bytes: u64,
    /// When the oldest buffered message arrived.
    opened: Option<Instant>,
    /// `None` while a batch is in flight (the types travel with it).
    types: Option<ColumnTypes>,
    /// The next offset to stage: everything before it is staged.
    next_offset: Option<i64>,
    paused: bool,
}

/// What staging a batch came to.
struct Outcome {
    key: Key,
    generation: u64,
    last: u64,
    result: Result<(ColumnTypes, StageOutcome)>,
}

fn partition_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

impl State {
    /// Resumes each newly assigned partition from the lake and assigns it
    /// there.
    fn assign(
        &mut self,
        consumer: &BaseConsumer<Context>,
        tpl: &mut TopicPartitionList,
    ) -> Result<()> {
        let assigned: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let ids: Vec<PartitionId> = assigned
            .iter()
            .map(|(topic, number)| {
                PartitionId::new(&self.settings.stream, &partition_name(topic, *number))
            })
            .collect();
        let (resumed, failure) = match self.handle.block_on(self.shared.resume_all(&ids)) {
            Ok(resumed) => (resumed, None),
            // Assigned but never read: the process stops with the error
            // and the group hands the partitions on.
            Err(error) => (vec![None; ids.len()], Some(error)),
        };
        for (((topic, number), id), after) in assigned.into_iter().zip(ids).zip(resumed) {
            let offset = match (after, &failure) {
                (_, Some(_)) => Offset::End,
                (Some(last), None) => Offset::Offset(last as i64 + 1),
                (None, None) => match self.settings.start {
                    StartPosition::Earliest => Offset::Beginning,
                    StartPosition::Latest => Offset::End,
                },
            };
            tracing::info!(partition = %id, ?offset, "kafka partition assigned; resuming from the lake");
            self.generation += 1;
            self.partitions.insert(
                (Arc::from(topic.as_str()), number),
                Partition {
                    id,
                    generation: self.generation,
                    buffer: VecDeque::new(),
                    buffer_bytes: 0,
                    opened: None,
                    types: Some(self.types.clone()),
                    next_offset: match offset {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    },
                    paused: false,
                },
            );
            tpl.set_partition_offset(&topic, number, offset)
                .map_err(|source| kafka_error("cannot set a resume offset", source))?;
        }
        consumer
            .incremental_assign(tpl)
            .map_err(|source| kafka_error("cannot assign partitions", source))?;
        self.shared.telemetry.source_answered(true);
        failure.map_or(Ok(()), Err)
    }

    /// Gives up the partitions in `tpl`: staged first, unless `lost`.
    fn revoke(
        &mut self,
        consumer: &BaseConsumer<Context>,
        tpl: &TopicPartitionList,
        lost: bool,
    ) -> Result<()> {
        let mut result = Ok(());
        for element in tpl.elements() {
            let key: Key = (Arc::from(element.topic()), element.partition());
            if !lost && result.is_ok() {
                result = self.flush(consumer, &key);
            }
            if let Some(partition) = self.partitions.remove(&key) {
                tracing::info!(
                    partition = %partition.id,
                    lost,
                    unstaged = partition.buffer.len(),
                    "kafka partition revoked"
                );
            }
        }
        let unassigned = consumer
            .incremental_unassign(tpl)
            .map_err(|source| kafka_error("cannot unassign partitions", source));
        result.and(unassigned)
    }

    /// Buffers a polled message (or its dead letter) and dispatches the
    /// partition's batch when it is full.
    fn push(&mut self, consumer: &BaseConsumer<Context>, message: &BorrowedMessage<'_>) {
        let key: Key = (Arc::from(message.topic()), message.partition());
        let item = self.item(message);
        let Some(partition) = self.partitions.get_mut(&key) else {
            // Fetched just before a revocation took effect: the new owner
            // reads it.
            return;
        };
        if partition.buffer.is_empty() {
            partition.opened = Some(Instant::now());
        }
        partition.buffer_bytes += item_bytes(&item);
        partition.buffer.push_back(item);
        if self.full(&key) {
            self.dispatch(consumer, &key);
        }
    }

    /// The source item of a polled message.
    fn item(&self, message: &BorrowedMessage<'_>) -> SourceItem {
        let position = u64::try_from(message.offset()).unwrap_or(0);
        let settings = &self.settings;
        let Some(payload) = message.payload() else {
            return SourceItem::Bad(DeadLetter::new(
                position,
                Reason::NoValue,
                format!(
                    "message at offset {} of {} has no value (a tombstone)",
                    message.offset(),
                    partition_name(message.topic(), message.partition())
                ),
                &[],
                settings.dead_letter_max_payload_bytes,
            ));
        };
        if payload.len() as u64 > settings.max_message_bytes {
            return SourceItem::oversized(
                position,
                payload,
                settings.max_message_bytes,
                settings.dead_letter_max_payload_bytes,
            );
        }
        let mut item = Message::new(position, payload.to_vec());
        item.schema_header = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == SCHEMA_HEADER)
                .and_then(|h| h.value.map(<[u8]>::to_vec))
        });
        if let Some(names) = &settings.metadata_columns {
            item.columns = metadata_columns(names, message);
        }
        SourceItem::Message(item)
    }

    /// Whether `key`'s buffer holds a full batch.
    fn full(&self, key: &Key) -> bool {
        self.partitions.get(key).is_some_and(|p| {
            p.buffer.len() >= self.settings.max_records || p.buffer_bytes >= self.settings.max_bytes
        })
    }

    /// Hands the partition's next batch to staging if none is in flight;
    /// otherwise pauses the partition while a full batch waits.
    fn dispatch(&mut self, consumer: &BaseConsumer<Context>, key: &Key) {
        let full = self.full(key);
        let settings = &self.settings;
        let Some(partition) = self.partitions.get_mut(key) else {
            return;
        };
        let Some(types) = partition.types.take() else {
            if full && !partition.paused {
                partition.paused = true;
                set_paused(consumer, key, true);
            }
            return;
        };
        let mut items = Vec::new();
        let mut bytes = 0;
        while let Some(item) = partition.buffer.front() {
            let size = item_bytes(item);
            if !items.is_empty()
                && (items.len() >= settings.max_records || bytes + size > settings.max_bytes)
            {
                break;
            }
            bytes += size;
            items.extend(partition.buffer.pop_front());
        }
        let Some(last) = items.last().map(SourceItem::position) else {
            partition.types = Some(types);
            return;
        };
        partition.buffer_bytes -= bytes;
        let started = partition.opened.take().unwrap_or_else(Instant::now);
        if !partition.buffer.is_empty() {
            partition.opened = Some(Instant::now());
        }
        let (shared, tx, id) = (
            self.shared.clone(),
            self.outcomes_tx.clone(),
            partition.id.clone(),
        );
        let (key, generation) = (key.clone(), partition.generation);
        self.handle.spawn(async move {
            let result = shared.stage(&id, types, items, started).await;
            // The consumer may have stopped; then nobody needs the outcome.
            let _ = tx.send(Outcome {
                key,
                generation,
                last,
                result,
            });
        });
    }

    /// Dispatches the batch of every partition with none in flight whose
    /// oldest message has waited `max_latency` (full batches are dispatched
    /// as they fill, in `push` and `apply`).
    fn dispatch_due(&mut self, consumer: &BaseConsumer<Context>) {
        let due: Vec<Key> = self
            .partitions
            .iter()
            .filter(|(_, p)| {
                p.types.is_some()
                    && p.opened
                        .is_some_and(|opened| opened.elapsed() >= self.settings.max_latency)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.dispatch(consumer, &key);
        }
    }

    /// Applies the staging outcomes that arrive within `wait` (none waited
    /// for when zero).
    fn apply_outcomes(&mut self, consumer: &BaseConsumer<Context>, wait: Duration) -> Result<()> {
        let mut next = if wait.is_zero() {
            self.outcomes.try_recv().ok()
        } else {
            self.outcomes.recv_timeout(wait).ok()
        };
        while let Some(outcome) = next {
            self.apply(consumer, outcome)?;
            next = self.outcomes.try_recv().ok();
        }
        Ok(())
    }

    fn apply(&mut self, consumer: &BaseConsumer<Context>, outcome: Outcome) -> Result<()> {
        let Outcome {
            key,
            generation,
            last,
            result,
        } = outcome;
        let (types, staged) = result?;
        let Some(partition) = self
            .partitions
            .get_mut(&key)
            .filter(|p| p.generation == generation)
        else {
            // The partition was revoked (lost) meanwhile.
            return Ok(());
        };
        partition.types = Some(types);
        let next = match staged {
            StageOutcome::Staged => last as i64 + 1,
            StageOutcome::AlreadyStaged { existing_last } => {
                // Another writer staged from this batch's first offset:
                // what we read after it is not ours to stage; go on after
                // its file.
                let next = existing_last as i64 + 1;
                partition.buffer.clear();
                partition.buffer_bytes = 0;
                partition.opened = None;
                if let Err(error) =
                    consumer.seek(&key.0, key.1, Offset::Offset(next), Duration::from_secs(10))
                {
                    return Err(kafka_error(
                        "cannot seek after an already staged batch",
                        error,
                    ));
                }
                next
            }
        };
        partition.next_offset = Some(next);
        commit(consumer, &key, next, CommitMode::Async);
        if partition.paused && !self.full(&key) {
            if let Some(p) = self.partitions.get_mut(&key) {
                p.paused = false;
            }
            set_paused(consumer, &key, false);
        }
        if self.full(&key) {
            self.dispatch(consumer, &key);
        }
        Ok(())
    }

    /// Stages everything buffered for `key` and waits for it; commits
    /// synchronously.
    fn flush(&mut self, consumer: &BaseConsumer<Context>, key: &Key) -> Result<()> {
        loop {
            let Some(partition) = self.partitions.get(key) else {
                return Ok(());
            };
            if partition.types.is_some() {
                if partition.buffer.is_empty() {
                    if let Some(next) = partition.next_offset {
                        commit(consumer, key, next, CommitMode::Sync);
                    }
                    return Ok(());
                }
                self.dispatch(consumer, key);
            }
            self.apply_outcomes(consumer, Duration::from_millis(100))?;
        }
    }
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
