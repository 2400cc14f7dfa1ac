//! The consumer's state: the assigned partitions, their buffers and
//! batches in flight, and what assignment, revocation and staging outcomes
//! do to them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tributary_config::StartPosition;
use tributary_lake::PartitionId;
use tributary_lake::dead_letter::{DeadLetter, Reason};

use super::context::Context;
use super::{
    Key, METADATA_COLUMNS, SCHEMA_HEADER, Settings, TombstoneDelete, commit, item_bytes,
    kafka_error, metadata_columns, partition_name, set_paused,
};
use crate::batch::{ColumnTypes, Message, SourceItem};
use crate::error::{Error, Result};
use crate::fanout::{Destination, Resumes};
use crate::route::TableId;
use crate::run::Stager;

/// How long reading a partition's end offset (`--once`) may take.
const WATERMARKS_TIMEOUT: Duration = Duration::from_secs(10);

/// The consumer's state, shared by the loop and the rebalance callback.
pub(super) struct State {
    pub(super) settings: Settings,
    pub(super) shared: Arc<Stager>,
    pub(super) handle: Handle,
    pub(super) partitions: HashMap<Key, Partition>,
    pub(super) outcomes_tx: mpsc::Sender<Outcome>,
    pub(super) outcomes: mpsc::Receiver<Outcome>,
    /// Numbers assignments, so a late outcome of an earlier one is ignored.
    pub(super) generation: u64,
    /// An error that must stop the consumer (raised inside a callback).
    pub(super) fatal: Option<Error>,
}

/// An assigned partition.
pub(super) struct Partition {
    pub(super) id: PartitionId,
    /// The table(s) the partition's topic goes to.
    pub(super) destination: Destination,
    /// Where each of them has the partition staged up to.
    pub(super) resumes: Resumes,
    /// How a tombstone becomes a delete in that table, if it does.
    pub(super) tombstones: Option<Arc<TombstoneDelete>>,
    pub(super) generation: u64,
    /// Messages read and not yet handed to staging, in offset order.
    pub(super) buffer: VecDeque<SourceItem>,
    pub(super) buffer_bytes: u64,
    /// When the oldest buffered message arrived.
    pub(super) opened: Option<Instant>,
    /// `None` while a batch is in flight (the types travel with it).
    pub(super) types: Option<ColumnTypes>,
    /// The next offset to stage: everything before it is staged.
    pub(super) next_offset: Option<i64>,
    pub(super) paused: bool,
    /// `--once`: the offset reading stops at (the end offset when the
    /// partition was assigned), and whether the consumer got there.
    pub(super) end: Option<i64>,
    pub(super) read_to_end: bool,
}

/// What staging a batch came to.
pub(super) struct Outcome {
    pub(super) key: Key,
    pub(super) generation: u64,
    pub(super) last: u64,
    pub(super) result: Result<(ColumnTypes, Resumes)>,
}

impl State {
    /// Resumes each newly assigned partition from the lake and assigns it
    /// there.
    pub(super) fn assign(
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
        let (resumed, failure) = match self.handle.block_on(self.resume_all(&assigned, &ids)) {
            Ok(resumed) => (resumed, None),
            // Assigned but never read (a topic without a route, a table
            // that cannot be read): the process stops with the error, the
            // messages stay in Kafka and the group hands the partitions on.
            Err(error) => (Vec::new(), Some(error)),
        };
        let mut resumed = resumed.into_iter();
        for ((topic, number), id) in assigned.into_iter().zip(ids) {
            let (destination, after) = match resumed.next() {
                Some((destination, resumes)) => {
                    let after = resumes.after();
                    (Some((destination, resumes)), after)
                }
                None => (None, None),
            };
            let offset = match (after, &failure) {
                (_, Some(_)) => Offset::End,
                (Some(last), None) => Offset::Offset(last as i64 + 1),
                (None, None) => match self.settings.start {
                    StartPosition::Earliest => Offset::Beginning,
                    StartPosition::Latest => Offset::End,
                },
            };
            let end = if self.settings.bounded && failure.is_none() {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, number, WATERMARKS_TIMEOUT)
                    .map_err(|source| {
                        kafka_error(
                            &format!(
                                "cannot read the end offset of {}",
                                partition_name(&topic, number)
                            ),
                            source,
                        )
                    })?;
                let start = match offset {
                    Offset::Offset(o) => o,
                    Offset::Beginning => low,
                    _ => high,
                };
                Some((start, high))
            } else {
                None
            };
            tpl.set_partition_offset(&topic, number, offset)
                .map_err(|source| kafka_error("cannot set a resume offset", source))?;
            let Some((destination, resumes)) = destination else {
                continue;
            };
            let table = destination.lead().clone();
            tracing::info!(partition = %id, table = %table.id, ?offset, end = ?end.map(|(_, e)| e), "kafka partition assigned; resuming from the lake");
            let mut types = table.types.clone();
            if self.settings.metadata_columns.is_some() {
                for (name, ty) in METADATA_COLUMNS {
                    types.fix_source_column(name, ty);
                }
            }
            self.generation += 1;
            self.partitions.insert(
                (Arc::from(topic.as_str()), number),
                Partition {
                    id,
                    tombstones: TombstoneDelete::of_table(&table).map(Arc::new),
                    destination,
                    resumes,
                    generation: self.generation,
                    buffer: VecDeque::new(),
                    buffer_bytes: 0,
                    opened: None,
                    types: Some(types),
                    next_offset: match offset {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    },
                    paused: false,
                    end: end.map(|(_, end)| end),
                    read_to_end: end.is_some_and(|(start, end)| start >= end),
                },
            );
        }
        consumer
            .incremental_assign(tpl)
            .map_err(|source| kafka_error("cannot assign partitions", source))?;
        self.shared.telemetry.source_answered(true);
        failure.map_or(Ok(()), Err)
    }

    /// Where each assigned partition (`assigned`, named `ids`) goes and
    /// where it resumes in each of its tables, in order.
    async fn resume_all(
        &self,
        assigned: &[(String, i32)],
        ids: &[PartitionId],
    ) -> Result<Vec<(Destination, Resumes)>> {
        let tables = &self.shared.tables;
        let destinations =
            try_join_all(assigned.iter().map(|(topic, _)| tables.of_topic(topic))).await?;
        let resumes = self.shared.resume_into(&destinations, ids).await?;
        Ok(destinations.into_iter().zip(resumes).collect())
    }

    /// Gives up the partitions in `tpl`: staged first, unless `lost`.
    pub(super) fn revoke(
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
        let in_use: HashSet<&TableId> = self
            .partitions
            .values()
            .flat_map(|p| p.destination.tables())
            .map(|table| &table.id)
            .collect();
        self.shared.tables.close_unused(|id| in_use.contains(id));
        let unassigned = consumer
            .incremental_unassign(tpl)
            .map_err(|source| kafka_error("cannot unassign partitions", source));
        result.and(unassigned)
    }

    /// Buffers a polled message (or its dead letter) and dispatches the
    /// partition's batch when it is full.
    pub(super) fn push(&mut self, consumer: &BaseConsumer<Context>, message: &BorrowedMessage<'_>) {
        let key: Key = (Arc::from(message.topic()), message.partition());
        let Some(partition) = self.partitions.get_mut(&key) else {
            // Fetched just before a revocation took effect: the new owner
            // reads it.
            return;
        };
        if partition.end.is_some_and(|end| message.offset() >= end) {
            // `--once`: produced after the partition was assigned; the next
            // run reads it.
            return;
        }
        let item = item(&self.settings, partition.tombstones.as_deref(), message);
        if partition.buffer.is_empty() {
            partition.opened = Some(Instant::now());
        }
        partition.buffer_bytes += item_bytes(&item);
        partition.buffer.push_back(item);
        if self.full(&key) {
            self.dispatch(consumer, &key);
        }
    }

    /// `--once`: whether the consumer has read every assigned partition up
    /// to its end offset. A partition that gets there is paused, so that
    /// nothing past it is fetched.
    pub(super) fn read_to_end(&mut self, consumer: &BaseConsumer<Context>) -> bool {
        if self.partitions.values().all(|p| p.read_to_end) {
            return true;
        }
        let Ok(positions) = consumer.position() else {
            return false;
        };
        let mut all = true;
        for (key, partition) in &mut self.partitions {
            if !partition.read_to_end {
                let position = positions.find_partition(&key.0, key.1).map(|e| e.offset());
                partition.read_to_end = matches!(
                    (position, partition.end),
                    (Some(Offset::Offset(at)), Some(end)) if at >= end
                );
                if partition.read_to_end && !partition.paused {
                    partition.paused = true;
                    set_paused(consumer, key, true);
                }
            }
            all &= partition.read_to_end;
        }
        all
    }

    /// Whether `key`'s buffer holds a full batch.
    pub(super) fn full(&self, key: &Key) -> bool {
        self.partitions.get(key).is_some_and(|p| {
            p.buffer.len() >= self.settings.max_records || p.buffer_bytes >= self.settings.max_bytes
        })
    }

    /// Hands the partition's next batch to staging if none is in flight;
    /// otherwise pauses the partition while a full batch waits.
    pub(super) fn dispatch(&mut self, consumer: &BaseConsumer<Context>, key: &Key) {
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
        let (shared, tx, id, destination, resumes) = (
            self.shared.clone(),
            self.outcomes_tx.clone(),
            partition.id.clone(),
            partition.destination.clone(),
            partition.resumes.clone(),
        );
        let (key, generation) = (key.clone(), partition.generation);
        self.handle.spawn(async move {
            let result = shared
                .stage_into(&destination, &id, types, items, resumes, started)
                .await;
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
    pub(super) fn dispatch_due(&mut self, consumer: &BaseConsumer<Context>) {
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
    pub(super) fn apply_outcomes(
        &mut self,
        consumer: &BaseConsumer<Context>,
        wait: Duration,
    ) -> Result<()> {
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

    pub(super) fn apply(
        &mut self,
        consumer: &BaseConsumer<Context>,
        outcome: Outcome,
    ) -> Result<()> {
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
        // After the slowest table: past `last`, unless another writer had
        // staged from this batch's first offset in a table and its file
        // ended elsewhere; then what we read after it is not ours to stage.
        let next = staged.after().unwrap_or(last) as i64 + 1;
        partition.resumes = staged;
        if next != last as i64 + 1 {
            // What is buffered does not start at `next`: read from there.
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
            // `--once`: a seek back below the end offset has more to read.
            partition.read_to_end = partition.end.is_some_and(|end| next >= end);
        }
        partition.next_offset = Some(next);
        commit(consumer, &key, next, CommitMode::Async);
        if partition.paused && !partition.read_to_end && !self.full(&key) {
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
    pub(super) fn flush(&mut self, consumer: &BaseConsumer<Context>, key: &Key) -> Result<()> {
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

/// The source item of a polled message; `tombstones` is how its table turns
/// a tombstone into a delete, if it does.
fn item(
    settings: &Settings,
    tombstones: Option<&TombstoneDelete>,
    message: &BorrowedMessage<'_>,
) -> SourceItem {
    let position = u64::try_from(message.offset()).unwrap_or(0);
    let payload = match (message.payload(), tombstones) {
        (Some(payload), _) => payload.to_vec(),
        // `tombstones = "delete"`: a delete of the message's key.
        (None, Some(delete))
            if message
                .key()
                .is_some_and(|k| std::str::from_utf8(k).is_ok()) =>
        {
            let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
            delete.message(key.unwrap_or_default())
        }
        (None, delete) => {
            let why = if delete.is_some() {
                "has no value (a tombstone) and no UTF-8 key to delete"
            } else {
                "has no value (a tombstone)"
            };
            return SourceItem::Bad(DeadLetter::new(
                position,
                Reason::NoValue,
                format!(
                    "message at offset {} of {} {why}",
                    message.offset(),
                    partition_name(message.topic(), message.partition())
                ),
                &[],
                settings.dead_letter_max_payload_bytes,
            ));
        }
    };
    if payload.len() as u64 > settings.max_message_bytes {
        return SourceItem::oversized(
            position,
            &payload,
            settings.max_message_bytes,
            settings.dead_letter_max_payload_bytes,
        );
    }
    let mut item = Message::new(position, payload);
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
