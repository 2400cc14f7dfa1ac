//! Field routing: the batches of one source partition fanned out to the
//! tables of a `[[ingest.routing.fields]]` route.
//!
//! ```text
//!   batch [first, last] of partition P ──► decode once (the lead's flattening)
//!      │
//!      ├─ rows whose field picks A, after resume_A ──► table A ─┐ side by side,
//!      ├─ rows whose field picks B, after resume_B ──► table B ─┘ create-only
//!      └─ the rest, and the dead letters ─────────────► lead L (staged last)
//!
//!   resume_T = max(watermark_T, last of T's newest staged file of P)
//!   P is read after R = min over T of resume_T
//! ```
//!
//! Each table keeps its own position chain for `P`, exactly as a table fed
//! by one partition does (DESIGN.md, "Exactly-once into the table"):
//!
//! * **Lockstep.** Every batch is staged into every table of the route; a
//!   table that none of the batch's rows go to gets a row file without rows.
//!   So each table's files tile `P`'s positions, and the next file staged
//!   into `T` starts at the first message after `resume_T`: the name another
//!   writer with a stale view of `T` collides on.
//! * **Cut per table.** A writer reads `P` after the slowest table. The
//!   part of a batch a table stages is its messages after that table's
//!   resume point (`[max(first, resume_T + 1), last]`), so a table that is
//!   ahead (a crash between two tables' puts, another writer) skips what it
//!   has and never gets a file overlapping one it holds. This replaces the
//!   design study's cut points (`docs/routing-and-upsert-design.md` §1.3):
//!   the reader does not have to cut batches where other writers did.
//! * **Collisions.** A table whose file is already there (another writer
//!   staged from the same position) takes that file's `last` as its resume
//!   point; the writer reads on after the slowest table.
//! * **Lead last.** The lead (`dead_letter_table`, else `default_table`) is
//!   staged after every other table of the batch, its dead letters before
//!   its row file. A lead with a chain therefore means every table of the
//!   route had one: a table without a chain while the lead has one was added
//!   to the route later (a *joiner*) and starts at `R`, not at the start of
//!   the partition.
//!
//! The Kafka offset committed for `P` is `R + 1`: the slowest table's.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use deltalake::arrow::compute::{cast, take_record_batch};
use deltalake::arrow::datatypes::{DataType, Int64Type};
use deltalake::arrow::error::ArrowError;
use futures::future::try_join_all;
use tributary_config::FieldRoute;
use tributary_lake::PartitionId;
use tributary_lake::chain::StageOutcome;
use tributary_lake::dead_letter::{DeadLetter, Reason};

use crate::batch::{
    ColumnTypes, EncodedBatch, Part, SourceItem, batch_error, build_batch, encode_part,
};
use crate::error::{Error, Result};
use crate::route::TableId;
use crate::run::{Stager, blocking};
use crate::schemas::Schemas;
use crate::tables::Table;

/// Where one topic's records are staged.
#[derive(Debug, Clone)]
pub(crate) enum Destination {
    /// One table.
    Table(Arc<Table>),
    /// The tables of a field route (`[[ingest.routing.fields]]`).
    Fan(Arc<FanOut>),
}

impl Destination {
    /// Its tables, the lead last.
    pub(crate) fn tables(&self) -> Vec<&Arc<Table>> {
        match self {
            Destination::Table(table) => vec![table],
            Destination::Fan(fan) => fan.tables().collect(),
        }
    }

    /// The table whose settings decode the topic's messages and which gets
    /// their dead letters.
    pub(crate) fn lead(&self) -> &Arc<Table> {
        match self {
            Destination::Table(table) => table,
            Destination::Fan(fan) => fan.lead(),
        }
    }
}

/// The `n`-th table of the `i`-th partition, as `(i, n)`.
type Slot = (usize, usize);

/// Columns every row file has, even one without rows.
const SYSTEM_COLUMNS: [&str; 3] = ["_key", "_position", "date"];

/// A field route with its tables opened.
#[derive(Debug)]
pub(crate) struct FanOut {
    rows: RowRouter,
    /// The route's tables other than the lead.
    others: Vec<Arc<Table>>,
    /// The lead: the table of the route's dead letters, staged last, whose
    /// flattening and column types decode the topic.
    lead: Arc<Table>,
}

impl FanOut {
    /// `route`'s tables, `tables` (in the order of [`FieldRoute::tables`],
    /// lead last).
    pub(crate) fn new(route: &FieldRoute, mut tables: Vec<Arc<Table>>) -> Result<Self> {
        let lead = tables
            .pop()
            .ok_or_else(|| Error::Config(no_tables(route)))?;
        let rows = RowRouter::new(route, lead.delete_marker.clone());
        Ok(Self {
            rows,
            others: tables,
            lead,
        })
    }

    /// The lead table.
    pub(crate) fn lead(&self) -> &Arc<Table> {
        &self.lead
    }

    /// Every table of the route, the lead last.
    pub(crate) fn tables(&self) -> impl Iterator<Item = &Arc<Table>> {
        self.others.iter().chain([&self.lead])
    }
}

fn no_tables(route: &FieldRoute) -> tributary_config::ConfigError {
    tributary_config::ConfigError::Invalid {
        key: "ingest.routing.fields".into(),
        value: route.topic.clone(),
        reason: "routes to no table".into(),
    }
}

/// Where each table of a route has a partition staged up to (the lead last):
/// `None` is nothing yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resumes(Vec<Option<u64>>);

impl Resumes {
    /// `tables` tables with nothing staged yet.
    pub(crate) fn start(tables: usize) -> Self {
        Self(vec![None; tables])
    }

    /// From each table's own resume point (lead last). A table without one
    /// while the lead has one joined the route later: it starts where the
    /// slowest other table is.
    pub(crate) fn fan_in(mut each: Vec<Option<u64>>) -> Self {
        if let Some(Some(_)) = each.last() {
            let slowest = each.iter().flatten().min().copied();
            for resume in &mut each {
                if resume.is_none() {
                    *resume = slowest;
                }
            }
        }
        Self(each)
    }

    /// Where the partition resumes: after the slowest table (`None`: from
    /// the start).
    pub(crate) fn after(&self) -> Option<u64> {
        self.0.iter().min().copied().flatten()
    }

    /// Table `table` staged a batch ending at `last` with `outcome`.
    pub(crate) fn record(&mut self, table: usize, last: u64, outcome: StageOutcome) {
        self.0[table] = Some(match outcome {
            StageOutcome::Staged => last,
            StageOutcome::AlreadyStaged { existing_last } => existing_last,
        });
    }
}

/// Which table of a route a row goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Table(usize),
    /// A delete: every table (the key may be in any of them).
    Every,
    /// `unlisted = "dead-letter"`: its message is a dead letter; why.
    Unrouted(String),
}

/// Sends each row of a field route to its table by its field's value.
#[derive(Debug)]
pub(crate) struct RowRouter {
    field: String,
    topic: String,
    /// Value → index of its table (in [`FieldRoute::tables`] order).
    values: HashMap<String, usize>,
    /// The table of unlisted values; `None`: they are dead letters.
    unlisted: Option<usize>,
    /// The delete marker (column, value): such rows go to every table.
    delete: (String, String),
    tables: usize,
}

impl RowRouter {
    pub(crate) fn new(route: &FieldRoute, delete: (String, String)) -> Self {
        let tables = route.tables();
        let index = |name: &str| {
            tables
                .iter()
                .position(|t| *t == name)
                .unwrap_or(tables.len() - 1)
        };
        Self {
            field: route.field.clone(),
            topic: route.topic.clone(),
            values: route
                .values
                .iter()
                .map(|(value, table)| (value.clone(), index(table)))
                .collect(),
            unlisted: route.unlisted_table().map(index),
            delete,
            tables: tables.len(),
        }
    }

    /// The table of each row of `batch`.
    fn targets(&self, batch: &RecordBatch) -> Vec<Target> {
        let values = text_column(batch, &self.field);
        let (delete_column, delete_value) = &self.delete;
        let deletes = text_column(batch, delete_column);
        (0..batch.num_rows())
            .map(|row| {
                if let Some(marks) = &deletes
                    && marks.is_valid(row)
                    && marks.value(row) == delete_value
                {
                    return Target::Every;
                }
                let value = values.as_ref().filter(|v| v.is_valid(row));
                let table = value.and_then(|v| self.values.get(v.value(row)).copied());
                match (table, self.unlisted) {
                    (Some(table), _) | (None, Some(table)) => Target::Table(table),
                    (None, None) => Target::Unrouted(match value {
                        Some(v) => format!(
                            "field `{}` has the value {:?}, which ingest.routing.fields of \
                             topic `{}` does not list",
                            self.field,
                            v.value(row),
                            self.topic
                        ),
                        None => format!(
                            "field `{}` has no value to route by (ingest.routing.fields of \
                             topic `{}`)",
                            self.field, self.topic
                        ),
                    }),
                }
            })
            .collect()
    }

    /// Splits a batch of one partition into what each table stages, in one
    /// pass over its rows.
    ///
    /// `rows` and `dead_letters` were decoded from `items` (the batch's
    /// messages, in order). A message with a row of an unlisted value (with
    /// `unlisted = "dead-letter"`) becomes a dead letter of the lead (at most
    /// `max_payload` bytes of it kept) and none of its rows is staged. Table
    /// `t`'s share holds its rows of the messages after `resumes[t]`,
    /// covering `[first message after resumes[t], last]`; a table that has
    /// the whole batch gets none. The lead's share holds the dead letters.
    fn split(
        &self,
        rows: &RecordBatch,
        mut dead_letters: Vec<DeadLetter>,
        items: &[SourceItem],
        max_payload: u64,
        resumes: &Resumes,
    ) -> Vec<Option<Share>> {
        let targets = self.targets(rows);
        let row_positions: Vec<u64> = rows
            .column_by_name("_position")
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .map(|p| p.values().iter().map(|&v| v as u64).collect())
            .unwrap_or_default();
        let mut unrouted: BTreeMap<u64, &str> = BTreeMap::new();
        for (target, &position) in targets.iter().zip(&row_positions) {
            if let Target::Unrouted(why) = target {
                unrouted.entry(position).or_insert(why);
            }
        }
        dead_letters.extend(items.iter().filter_map(|item| match item {
            SourceItem::Message(m) => {
                let why = unrouted.get(&m.position)?;
                let letter =
                    DeadLetter::new(m.position, Reason::Unrouted, *why, &m.payload, max_payload);
                Some(letter.with_schema_header(m.schema_header.clone()))
            }
            SourceItem::Bad(_) => None,
        }));
        let after = |t: usize, p: u64| resumes.0.get(t).copied().flatten().is_none_or(|r| p > r);
        let mut shares: Vec<Option<Share>> = (0..self.tables)
            .map(|t| {
                let first = items
                    .iter()
                    .map(SourceItem::position)
                    .find(|&p| after(t, p))?;
                Some(Share {
                    first,
                    rows: Vec::new(),
                    dead_letters: Vec::new(),
                })
            })
            .collect();
        let mut give = |t: usize, row: usize, position: u64| {
            if let Some(Some(share)) = shares.get_mut(t)
                && after(t, position)
            {
                share.rows.push(row as u32);
            }
        };
        for (row, (target, &position)) in targets.iter().zip(&row_positions).enumerate() {
            match target {
                _ if unrouted.contains_key(&position) => {}
                Target::Table(t) => give(*t, row, position),
                Target::Every => (0..self.tables).for_each(|t| give(t, row, position)),
                Target::Unrouted(_) => {}
            }
        }
        let lead = self.tables - 1;
        if let Some(Some(share)) = shares.get_mut(lead) {
            dead_letters.retain(|d| after(lead, d.position));
            share.dead_letters = dead_letters;
        }
        shares
    }
}

/// What one table stages of a batch: its rows (indices into the batch's
/// rows), the first position its file covers, and its dead letters.
#[derive(Debug)]
struct Share {
    first: u64,
    rows: Vec<u32>,
    dead_letters: Vec<DeadLetter>,
}

impl Share {
    /// The share's rows of `rows` and its extent, which ends at `last`;
    /// columns none of its rows has a value in are left out (another
    /// table's fields), the system columns kept.
    fn part(self, rows: &RecordBatch, last: u64) -> std::result::Result<Part, ArrowError> {
        let taken = take_record_batch(rows, &UInt32Array::from(self.rows))?;
        let schema = taken.schema();
        let keep: Vec<usize> = (0..taken.num_columns())
            .filter(|&i| {
                SYSTEM_COLUMNS.contains(&schema.field(i).name().as_str())
                    || taken.column(i).null_count() < taken.num_rows()
            })
            .collect();
        Ok(Part {
            first: self.first,
            last,
            rows: taken.project(&keep)?,
            dead_letters: self.dead_letters,
        })
    }
}

/// Column `name` of `batch` as text (arrow's cast: a number as written in
/// JSON, a list as `[1, 2]`), if it has it and it casts.
fn text_column(
    batch: &RecordBatch,
    name: &str,
) -> Option<deltalake::arrow::array::GenericStringArray<i32>> {
    let column = batch.column_by_name(name)?;
    let text = cast(column, &DataType::Utf8).ok()?;
    Some(text.as_string::<i32>().clone())
}

/// Stages the parts of one batch (ending at `last`) into the tables of a
/// route, with `put(table, part)`: the others side by side, then the lead.
/// Returns where each table is now.
pub(crate) async fn stage_parts<P, F, Fut>(
    parts: Vec<Option<P>>,
    last: u64,
    resumes: &Resumes,
    put: F,
) -> Result<Resumes>
where
    F: Fn(usize, P) -> Fut,
    Fut: Future<Output = Result<StageOutcome>>,
{
    let mut parts = parts;
    let lead = parts.len().saturating_sub(1);
    let lead_part = parts.pop().flatten();
    let others = parts.into_iter().enumerate().filter_map(|(t, part)| {
        let staged = put(t, part?);
        Some(async move { Ok::<_, Error>((t, staged.await?)) })
    });
    let mut now = resumes.clone();
    for (t, outcome) in try_join_all(others).await? {
        now.record(t, last, outcome);
    }
    if let Some(part) = lead_part {
        now.record(lead, last, put(lead, part).await?);
    }
    Ok(now)
}

impl FanOut {
    /// Decodes `items` of `id` once (the lead's settings) and encodes each
    /// table's part of them ([`RowRouter::split`]), the lead last.
    fn encode(
        &self,
        id: &PartitionId,
        schemas: &Schemas,
        types: &mut ColumnTypes,
        items: &[SourceItem],
        resumes: &Resumes,
    ) -> tributary_lake::Result<Vec<Option<EncodedBatch>>> {
        let settings = &self.lead.settings;
        let (rows, dead_letters) = build_batch(id, settings, schemas, types, items)
            .map_err(|source| batch_error(id, source))?;
        let max_payload = settings.dead_letter_max_payload_bytes;
        let shares = self
            .rows
            .split(&rows, dead_letters, items, max_payload, resumes);
        let last = items.last().map_or(0, SourceItem::position);
        let lead = shares.len().saturating_sub(1);
        // One table's rows at a time: each copy is dropped once encoded.
        shares
            .into_iter()
            .enumerate()
            .map(|(t, share)| {
                let Some(share) = share else { return Ok(None) };
                let part = share
                    .part(&rows, last)
                    .map_err(|source| batch_error(id, source))?;
                // A route's messages count in its lead's metrics.
                let messages = match t == lead {
                    true => &items[items.partition_point(|i| i.position() < part.first)..],
                    false => &[],
                };
                encode_part(id, settings, part, messages, Vec::new()).map(Some)
            })
            .collect()
    }
}

impl Stager {
    /// Where each partition of `ids` resumes in each table of its
    /// destination in `destinations` (see [`Stager::resume_all`] and
    /// [`Resumes::fan_in`]); one table load per table.
    pub(crate) async fn resume_into(
        &self,
        destinations: &[Destination],
        ids: &[PartitionId],
    ) -> Result<Vec<Resumes>> {
        let mut by_table: BTreeMap<&TableId, (&Arc<Table>, Vec<Slot>)> = BTreeMap::new();
        for (i, destination) in destinations.iter().enumerate() {
            for (n, table) in destination.tables().into_iter().enumerate() {
                by_table
                    .entry(&table.id)
                    .or_insert((table, Vec::new()))
                    .1
                    .push((i, n));
            }
        }
        let resumed = try_join_all(by_table.into_values().map(|(table, members)| async move {
            let of_table: Vec<PartitionId> = members.iter().map(|&(i, _)| ids[i].clone()).collect();
            let after = self.resume_all(table, &of_table).await?;
            Ok::<_, Error>(members.into_iter().zip(after))
        }))
        .await?;
        let mut each: Vec<Vec<Option<u64>>> = destinations
            .iter()
            .map(|d| vec![None; d.tables().len()])
            .collect();
        for ((i, n), after) in resumed.into_iter().flatten() {
            each[i][n] = after;
        }
        Ok(each.into_iter().map(Resumes::fan_in).collect())
    }

    /// Stages `items` (read from `id` after `resumes.after()`) into
    /// `destination`; returns where each of its tables is now.
    pub(crate) async fn stage_into(
        &self,
        destination: &Destination,
        id: &PartitionId,
        types: ColumnTypes,
        items: Vec<SourceItem>,
        resumes: Resumes,
        started: Instant,
    ) -> Result<(ColumnTypes, Resumes)> {
        match destination {
            Destination::Table(table) => {
                let last = items.last().map_or(0, SourceItem::position);
                let (types, outcome) = self.stage(table, id, types, items, started).await?;
                let mut now = resumes;
                now.record(0, last, outcome);
                Ok((types, now))
            }
            Destination::Fan(fan) => {
                self.stage_fan(fan, id, types, items, resumes, started)
                    .await
            }
        }
    }

    /// Decodes `items` (read from `id` after `resumes.after()`) once and
    /// stages each table's part of them (see the module docs). Returns where
    /// each table is now.
    async fn stage_fan(
        &self,
        fan: &Arc<FanOut>,
        id: &PartitionId,
        types: ColumnTypes,
        items: Vec<SourceItem>,
        resumes: Resumes,
        started: Instant,
    ) -> Result<(ColumnTypes, Resumes)> {
        let Some(last) = items.last().map(SourceItem::position) else {
            return Ok((types, resumes));
        };
        let schemas = self.schemas(fan.lead(), id, &items).await;
        let (task_fan, task_id, task_resumes) = (fan.clone(), id.clone(), resumes.clone());
        let (types, parts) = blocking(id.clone(), move || {
            let mut types = types;
            let parts = task_fan.encode(&task_id, &schemas, &mut types, &items, &task_resumes);
            (types, parts)
        })
        .await?;
        let tables: Vec<&Arc<Table>> = fan.tables().collect();
        let now = stage_parts(parts?, last, &resumes, |t, batch| {
            let table = tables[t];
            async move { self.put(table, id, &batch, started).await }
        })
        .await?;
        Ok((types, now))
    }
}

#[cfg(test)]
mod tests {
    //! The fan-out chain's proof obligation as a property: whatever the
    //! batch sizes, crashes between the tables' puts, zombie writers with a
    //! stale view and compactions in between, every table ends up with each
    //! of its rows exactly once, and its files never overlap.

    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use deltalake::arrow::array::{ArrayRef, Date32Array, Int64Array, StringArray};
    use object_store::memory::InMemory;
    use object_store::{ObjectStore, ObjectStoreExt};
    use proptest::prelude::*;
    use tributary_config::Unlisted;
    use tributary_lake::chain::{self, file_metadata};
    use tributary_lake::dead_letter::{self, read_dead_letters};
    use tributary_lake::rowfile::{self, Codec, RowFile};

    use super::*;
    use crate::batch::Message;

    /// Tables: `a` (value v0), `b` (v1), the lead `rest` (other values and
    /// dead letters).
    const TABLES: usize = 3;

    fn route(unlisted: Unlisted) -> FieldRoute {
        FieldRoute {
            topic: "web".into(),
            field: "host".into(),
            values: BTreeMap::from([("v0".into(), "a".into()), ("v1".into(), "b".into())]),
            unlisted,
            default_table: Some("rest".into()),
            dead_letter_table: Some("rest".into()),
        }
    }

    fn router(unlisted: Unlisted) -> RowRouter {
        RowRouter::new(&route(unlisted), ("_op".into(), "delete".into()))
    }

    /// A message of the partition: its value (0..=3), or a delete (4).
    #[derive(Debug, Clone, Copy)]
    struct Msg {
        position: u64,
        value: u8,
    }

    /// The tables a message's row belongs in (none: a dead letter).
    fn expected(msg: Msg, unlisted: Unlisted) -> Vec<usize> {
        match (msg.value, unlisted) {
            (0, _) => vec![0],
            (1, _) => vec![1],
            (4, _) => vec![0, 1, 2],
            (_, Unlisted::Default) => vec![2],
            (_, Unlisted::DeadLetter) => vec![],
        }
    }

    /// The decoded rows of `msgs`: one row each; a v0 row has a column of
    /// its own (`a_only`), a delete has no host and the delete marker.
    fn rows(msgs: &[Msg]) -> RecordBatch {
        let text = |f: &dyn Fn(&Msg) -> Option<String>| -> ArrayRef {
            Arc::new(msgs.iter().map(f).collect::<StringArray>())
        };
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("_key", text(&|m| Some(format!("k{}", m.position)))),
            (
                "_position",
                Arc::new(Int64Array::from_iter_values(
                    msgs.iter().map(|m| m.position as i64),
                )),
            ),
            ("date", Arc::new(Date32Array::from(vec![None; msgs.len()]))),
            (
                "host",
                text(&|m| (m.value < 4).then(|| format!("v{}", m.value))),
            ),
            (
                "_op",
                text(&|m| (m.value == 4).then(|| "delete".to_string())),
            ),
            ("a_only", text(&|m| (m.value == 0).then(|| "x".to_string()))),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    /// The partition as a store per table sees it, and the compacted rows.
    struct Lake {
        id: PartitionId,
        stores: Vec<InMemory>,
        watermarks: Vec<Option<u64>>,
        compacted: Vec<Vec<u64>>,
    }

    impl Lake {
        fn new() -> Self {
            Self {
                id: PartitionId::new("s", "web-0"),
                stores: (0..TABLES).map(|_| InMemory::new()).collect(),
                watermarks: vec![None; TABLES],
                compacted: vec![Vec::new(); TABLES],
            }
        }

        /// Where a writer starting now resumes each table.
        async fn resumes(&self) -> Resumes {
            let mut each = Vec::new();
            for (store, watermark) in self.stores.iter().zip(&self.watermarks) {
                each.push(
                    chain::resume_after(store, &self.id, *watermark)
                        .await
                        .unwrap(),
                );
            }
            Resumes::fan_in(each)
        }

        /// What the compactor does to table `t`, for its `take` oldest
        /// staged files: keep each file's rows after the watermark and the
        /// files before it, move the watermark to the newest file's last,
        /// delete the files.
        async fn compact(&mut self, t: usize, take: usize) {
            let store = &self.stores[t];
            let mut covered = self.watermarks[t];
            let staged = chain::staged_files(store, &self.id).await.unwrap();
            for file in staged.into_iter().take(take) {
                let bytes = store.get(&file.path).await.unwrap().bytes().await.unwrap();
                let read = RowFile::read(&bytes, file.path.as_ref()).unwrap();
                let last = chain::last_position(&read.metadata, "f").unwrap();
                if t != 0 {
                    assert!(read.batch.column_by_name("a_only").is_none());
                }
                let positions = read.batch.column_by_name("_position").unwrap();
                let positions = positions.as_primitive::<Int64Type>();
                let kept = positions.values().iter().map(|&p| p as u64);
                self.compacted[t].extend(kept.filter(|&p| covered.is_none_or(|c| p > c)));
                covered = covered.max(Some(last));
                store.delete(&file.path).await.unwrap();
            }
            self.watermarks[t] = covered;
        }

        /// The positions of the dead letters of the lead.
        async fn dead_letters(&self) -> BTreeSet<u64> {
            let store = &self.stores[TABLES - 1];
            let listed: Vec<_> = futures::TryStreamExt::try_collect(store.list(None))
                .await
                .unwrap();
            let mut positions = BTreeSet::new();
            for meta in listed
                .iter()
                .filter(|m| m.location.as_ref().contains("dead-letter"))
            {
                let bytes = store
                    .get(&meta.location)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                for letter in read_dead_letters(&bytes, "d").unwrap() {
                    assert_eq!(letter.reason, "unrouted");
                    positions.insert(letter.position);
                }
            }
            positions
        }
    }

    /// One writer of the partition: where it thinks each table is, and how
    /// many puts it has left before it crashes.
    struct Writer {
        resumes: Resumes,
        puts_left: Option<usize>,
    }

    /// A writer stages the next `size` messages after its resume point.
    /// Returns false when it crashed (a put failed).
    async fn stage_batch(
        lake: &Lake,
        writer: &mut Writer,
        router: &RowRouter,
        msgs: &[Msg],
        size: usize,
    ) -> bool {
        let after = writer.resumes.after();
        let start = msgs.partition_point(|m| after.is_some_and(|a| m.position <= a));
        let batch = &msgs[start..(start + size).min(msgs.len())];
        let Some(last) = batch.last().map(|m| m.position) else {
            return true;
        };
        let items: Vec<SourceItem> = batch
            .iter()
            .map(|m| SourceItem::Message(Message::new(m.position, b"{}".to_vec())))
            .collect();
        let decoded = rows(batch);
        let shares = router.split(&decoded, Vec::new(), &items, 100, &writer.resumes);
        let files: Vec<Option<(u64, Bytes, Option<Bytes>)>> = shares
            .into_iter()
            .map(|share| {
                let part = share?.part(&decoded, last).unwrap();
                let metadata = file_metadata(&lake.id, part.first, part.last);
                let row_file = rowfile::write(&part.rows, Codec::Zstd, metadata).unwrap();
                let letters = (!part.dead_letters.is_empty()).then(|| {
                    dead_letter::encode(&lake.id, part.first, last, &part.dead_letters, Codec::Zstd)
                        .unwrap()
                });
                Some((part.first, row_file, letters))
            })
            .collect();
        let puts = AtomicUsize::new(writer.puts_left.unwrap_or(usize::MAX));
        let staged = stage_parts(files, last, &writer.resumes, |t, (first, file, letters)| {
            let (store, id, puts) = (&lake.stores[t], &lake.id, &puts);
            async move {
                let put = || {
                    let left = puts.load(Ordering::SeqCst);
                    puts.store(left.saturating_sub(1), Ordering::SeqCst);
                    match left {
                        0 => Err(Error::Unrouted {
                            topic: "crash".into(),
                        }),
                        _ => Ok(()),
                    }
                };
                if let Some(letters) = letters {
                    put()?;
                    chain::stage_dead_letters(store, id, first, last, letters).await?;
                }
                put()?;
                Ok(chain::stage(store, id, first, file).await?)
            }
        })
        .await;
        match staged {
            Ok(now) => {
                writer.resumes = now;
                writer.puts_left = writer.puts_left.map(|_| puts.load(Ordering::SeqCst));
                true
            }
            Err(_) => false,
        }
    }

    #[derive(Debug, Clone)]
    struct Step {
        writer: usize,
        size: usize,
        /// Puts before this writer crashes, when it starts.
        crash_after: Option<usize>,
        /// A table compacted first, and how many staged files it takes.
        compact: Option<(usize, usize)>,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            0..2usize,
            1..6usize,
            prop::option::weighted(0.3, 0..5usize),
            prop::option::weighted(0.2, (0..TABLES, 1..4usize)),
        )
            .prop_map(|(writer, size, crash_after, compact)| Step {
                writer,
                size,
                crash_after,
                compact,
            })
    }

    fn messages() -> impl Strategy<Value = Vec<Msg>> {
        prop::collection::vec((1..3u64, 0..5u8), 1..40).prop_map(|gaps| {
            let mut position = 0;
            gaps.into_iter()
                .map(|(gap, value)| {
                    position += gap;
                    Msg { position, value }
                })
                .collect()
        })
    }

    async fn run(msgs: Vec<Msg>, steps: Vec<Step>, unlisted: Unlisted) {
        let router = router(unlisted);
        let mut lake = Lake::new();
        let mut writers: [Option<Writer>; 2] = [None, None];
        for step in steps {
            if let Some((t, take)) = step.compact {
                lake.compact(t, take).await;
            }
            if writers[step.writer].is_none() {
                writers[step.writer] = Some(Writer {
                    resumes: lake.resumes().await,
                    puts_left: step.crash_after,
                });
            }
            if let Some(writer) = &mut writers[step.writer]
                && !stage_batch(&lake, writer, &router, &msgs, step.size).await
            {
                writers[step.writer] = None;
            }
        }
        // A writer that stays up reads to the end; then everything is compacted.
        let mut last = Writer {
            resumes: lake.resumes().await,
            puts_left: None,
        };
        while last.resumes.after() < msgs.last().map(|m| m.position) {
            assert!(stage_batch(&lake, &mut last, &router, &msgs, 3).await);
        }
        for t in 0..TABLES {
            lake.compact(t, usize::MAX).await;
            let mut want: Vec<u64> = msgs
                .iter()
                .filter(|m| expected(**m, unlisted).contains(&t))
                .map(|m| m.position)
                .collect();
            want.sort_unstable();
            let mut got = lake.compacted[t].clone();
            got.sort_unstable();
            assert_eq!(got, want, "table {t}");
        }
        let unrouted: BTreeSet<u64> = msgs
            .iter()
            .filter(|m| expected(**m, unlisted).is_empty())
            .map(|m| m.position)
            .collect();
        assert_eq!(lake.dead_letters().await, unrouted);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn every_table_holds_its_rows_once_whatever_crashes_and_zombies_do(
            msgs in messages(),
            steps in prop::collection::vec(step(), 0..30),
            dead_letter in any::<bool>(),
        ) {
            let unlisted = if dead_letter { Unlisted::DeadLetter } else { Unlisted::Default };
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(run(msgs, steps, unlisted));
        }
    }

    #[test]
    fn rows_go_by_value_deletes_everywhere_and_the_unroutable_say_why() {
        let msgs: Vec<Msg> = [0, 1, 3, 4]
            .iter()
            .enumerate()
            .map(|(i, &value)| Msg {
                position: i as u64,
                value,
            })
            .collect();
        let batch = rows(&msgs);
        assert_eq!(
            router(Unlisted::Default).targets(&batch),
            [
                Target::Table(0),
                Target::Table(1),
                Target::Table(2),
                Target::Every
            ]
        );
        let dead = router(Unlisted::DeadLetter).targets(&batch);
        let Target::Unrouted(why) = &dead[2] else {
            panic!("{dead:?}");
        };
        assert!(
            why.contains("\"v3\"") && why.contains("topic `web`"),
            "{why}"
        );

        // A field holding a list is compared as its text.
        let lists =
            deltalake::arrow::array::ListArray::from_iter_primitive::<Int64Type, _, _>([Some(
                vec![Some(1)],
            )]);
        let batch = RecordBatch::try_from_iter([("host", Arc::new(lists) as ArrayRef)]).unwrap();
        let Target::Unrouted(why) = &router(Unlisted::DeadLetter).targets(&batch)[0] else {
            panic!("a list is not a listed value");
        };
        assert!(why.contains("\"[1]\""), "{why}");
    }

    #[test]
    fn a_joiner_starts_where_the_slowest_table_is_unless_nothing_was_staged() {
        assert_eq!(
            Resumes::fan_in(vec![None, Some(9), Some(7)]).0,
            [Some(7), Some(9), Some(7)]
        );
        // The lead has nothing: the batch staged elsewhere may be the
        // first one; everything is read from the start.
        let first = Resumes::fan_in(vec![Some(9), None, None]);
        assert_eq!(first.0, [Some(9), None, None]);
        assert_eq!(first.after(), None);
    }
}
