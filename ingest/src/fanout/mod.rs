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
mod tests;
