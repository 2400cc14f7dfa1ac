//! The columnar batch: decoders append each message's values here, by column
//! name, straight into Arrow builders, and [`BatchBuilder::finish`] returns
//! the record batch that is staged.
//!
//! A message has two levels of columns. The *envelope* holds one row per
//! message; the *elements* hold one row per element of the explode path (or
//! one row for a message without elements). Envelope columns are never copied
//! per element: at the end each is repeated by index (`take`) onto the rows
//! of its message's elements.
//!
//! A column may receive values of several types within a batch (a long, then
//! a string). Each type gets its own builder; at the end the column's type is
//! their widening ([`ColumnType::widen`], together with the type the stream
//! inferred before), each part is converted to it, and the parts are merged.
//!
//! A message or element that turns out bad after some of its values were
//! appended (a collision, a value its column rejects, a malformed tail) is not
//! taken out of the builders: its rows are marked dead and filtered out at
//! the end, and only live rows decide a column's type.

mod part;

use std::sync::Arc;

use arrow_arith::boolean::is_not_null;
use arrow_array::builder::StringBuilder;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Int64Array, RecordBatch, StringArray, UInt32Array,
    new_null_array,
};
use arrow_cast::cast;
use arrow_schema::{ArrowError, DataType, Field, Schema};
use arrow_select::filter::filter;
use arrow_select::take::take;
use arrow_select::zip::zip;
use rustc_hash::FxHashMap;
use tributary_config::is_reserved_column;

use crate::columns::{ColumnType, ColumnTypes, arrow_type, json_text};
use crate::{Reason, Rejection, Val};
use part::Part;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// One column of one level.
struct Slot {
    name: Arc<str>,
    /// One part per type seen, in the order first seen.
    parts: Vec<(ColumnType, Part)>,
    /// The part the last value went to.
    last_part: usize,
    /// One past the last row a field was written to, so a second field
    /// mapping to the column in the same row is a collision.
    written: usize,
    /// The type every value must fit, and where it comes from.
    fixed: Option<(ColumnType, &'static str)>,
    /// Whether the column has no fixed type where only declared columns
    /// are accepted.
    undeclared: bool,
    /// Whether the name is reserved (only sources may write it).
    reserved: bool,
    /// Whether this is the event-time column.
    event_time: bool,
    /// The slot of the same name at the other level, if any.
    twin: Option<usize>,
}

/// The columns of one level.
#[derive(Default)]
struct Level {
    index: FxHashMap<Arc<str>, usize>,
    slots: Vec<Slot>,
}

/// Which level a value is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The message's envelope row.
    Envelope,
    /// The current element's row.
    Element,
}

/// What became of a message: all its rows are in, it was rejected as a
/// whole, or some of its elements were (by index).
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Every row is in.
    Rows,
    /// The message is a dead letter; none of its rows are in.
    Rejected(Rejection),
    /// These elements are dead letters; the message's other rows are in.
    Elements(Vec<(u32, Rejection)>),
}

/// A batch being built, message by message.
pub struct BatchBuilder {
    envelope: Level,
    elements: Level,
    /// Column names in the order first seen (either level).
    order: Vec<Arc<str>>,
    event_time_field: Option<Arc<str>>,
    key_field: Option<String>,
    /// Per message: its position.
    positions: Vec<i64>,
    /// Per element row: its message.
    message_of: Vec<u32>,
    /// Per element row: its element index.
    element_of: Vec<u32>,
    /// Per element row: whether it goes to the table.
    live: Vec<bool>,
    /// Per message and per element row: the UTC date of its event time.
    envelope_dates: Vec<Option<i32>>,
    element_dates: Vec<Option<i32>>,
    /// The current message's first element row.
    first_row: usize,
    /// Whether the current message has an element open, and its rejection.
    element: Option<Option<Rejection>>,
    /// The current message's rejection, and its elements' rejections.
    rejected: Option<Rejection>,
    rejected_elements: Vec<(u32, Rejection)>,
    /// Rows a new column has room for, at the envelope level.
    capacity: usize,
}

impl BatchBuilder {
    /// An empty batch whose rows take their key from `key_field` and their
    /// date partition from `event_time_field`.
    pub fn new(key_field: Option<String>, event_time_field: Option<String>) -> Self {
        BatchBuilder {
            envelope: Level::default(),
            elements: Level::default(),
            order: Vec::new(),
            event_time_field: event_time_field.map(Arc::from),
            key_field,
            positions: Vec::new(),
            message_of: Vec::new(),
            element_of: Vec::new(),
            live: Vec::new(),
            envelope_dates: Vec::new(),
            element_dates: Vec::new(),
            first_row: 0,
            element: None,
            rejected: None,
            rejected_elements: Vec::new(),
            capacity: 0,
        }
    }

    /// Room for the columns of about `messages` messages (one row each),
    /// allocated as each column appears.
    pub fn with_capacity(mut self, messages: usize) -> Self {
        self.capacity = messages;
        self
    }

    /// Rows in the batch so far (dead ones included).
    pub fn rows(&self) -> usize {
        self.live.len()
    }

    /// Starts the message at `position`.
    pub fn begin_message(&mut self, position: u64) {
        self.positions.push(position as i64);
        self.envelope_dates.push(None);
        self.first_row = self.live.len();
        self.rejected = None;
        self.rejected_elements.clear();
    }

    /// Starts the next element of the current message's explode path,
    /// ending the one before if it is still open.
    pub fn begin_element(&mut self) {
        if self.element.is_some() {
            self.end_element();
        }
        let index = (self.live.len() - self.first_row) as u32;
        self.message_of.push((self.positions.len() - 1) as u32);
        self.element_of.push(index);
        self.live.push(true);
        self.element_dates.push(None);
        self.element = Some(None);
    }

    /// Ends the current element; if a value of it was rejected, the element
    /// is a dead letter.
    pub fn end_element(&mut self) {
        if let Some(Some(rejection)) = self.element.take() {
            let row = self.live.len() - 1;
            self.live[row] = false;
            self.rejected_elements
                .push(((row - self.first_row) as u32, rejection));
        }
    }

    /// Writes `cell` to column `name` of the current row at `at`. A value
    /// that cannot be written rejects its element (or, in the envelope, its
    /// message), and the rest of that row's values are ignored.
    pub fn put(&mut self, at: At, name: &str, cell: Val<'_>, types: &ColumnTypes) {
        let column = self.column(at, name, types);
        self.put_column(at, column, cell);
    }

    /// [`put`](Self::put) to a column found with [`column`](Self::column)
    /// before: for decoders that know their columns up front.
    pub fn put_column(&mut self, at: At, column: usize, cell: Val<'_>) {
        if let Err(rejection) = self.try_put(at, column, cell, false) {
            self.reject(at, rejection);
        }
    }

    /// Writes a source metadata column (a reserved name) to the envelope.
    pub fn put_source(&mut self, name: &str, cell: Val<'_>, types: &ColumnTypes) {
        let column = self.column(At::Envelope, name, types);
        if let Err(rejection) = self.try_put(At::Envelope, column, cell, true) {
            self.reject(At::Envelope, rejection);
        }
    }

    /// Rejects the current element (or, at the envelope, the message).
    pub fn reject(&mut self, at: At, rejection: Rejection) {
        match (at, &mut self.element) {
            (At::Element, Some(slot @ None)) => *slot = Some(rejection),
            (At::Element, Some(Some(_))) => {}
            _ => {
                self.rejected.get_or_insert(rejection);
            }
        }
    }

    fn try_put(
        &mut self,
        at: At,
        column: usize,
        cell: Val<'_>,
        source: bool,
    ) -> Result<(), Rejection> {
        let row = match at {
            At::Envelope => self.positions.len() - 1,
            At::Element => self.live.len().saturating_sub(1),
        };
        let (level, other) = match at {
            At::Envelope => (&mut self.envelope, &self.elements),
            At::Element => (&mut self.elements, &self.envelope),
        };
        let slot = &mut level.slots[column];
        let name = &*slot.name;
        if slot.written == row + 1 {
            return Err(collision(name));
        }
        if at == At::Element
            && let Some(twin) = slot.twin
            && other.slots[twin].written == self.positions.len()
        {
            return Err(collision(name));
        }
        slot.written = row + 1;
        if slot.reserved && !source {
            let error = format!("field maps to reserved column `{name}`");
            return Err((Reason::Flatten, error));
        }
        let cell = if slot.event_time {
            let cell = event_time(cell).map_err(|found| {
                let error = format!(
                    "event time `{name}` is {found}, not an RFC 3339 time or milliseconds \
                     since the epoch"
                );
                (Reason::Schema, error)
            })?;
            if let Val::Timestamp(micros) = cell {
                let dates = match at {
                    At::Envelope => &mut self.envelope_dates,
                    At::Element => &mut self.element_dates,
                };
                dates[row] = i32::try_from(micros.div_euclid(MICROS_PER_DAY)).ok();
            }
            cell
        } else {
            cell
        };
        if matches!(cell, Val::Null) {
            return Ok(());
        }
        // The common case: the value is of the type of the part the column's
        // last value went to.
        if let Some((_, part)) = slot.parts.get_mut(slot.last_part)
            && part.holds(&cell)
        {
            part.pad(row);
            part.push(&cell);
            return Ok(());
        }
        let Some(found) = cell.column_type() else {
            // An empty list (or one of nulls) fits any list column.
            if let (Val::List(_), Some((_, part @ Part::List { .. }))) =
                (&cell, slot.parts.get_mut(slot.last_part))
            {
                part.pad(row);
                part.push(&cell);
            }
            return Ok(());
        };
        let ty = match &slot.fixed {
            Some((ty, origin)) if !ty.accepts(&found) => {
                let error = format!(
                    "column `{name}` is {ty} ({origin}); the value is {}",
                    cell.kind()
                );
                return Err((Reason::Schema, error));
            }
            Some((ty, _)) => ty.clone(),
            None if slot.undeclared => {
                let error = format!("column `{name}` is not in the declared schema");
                return Err((Reason::Schema, error));
            }
            None => found,
        };
        let part = match slot.parts.iter().position(|(t, _)| *t == ty) {
            Some(p) => p,
            None => {
                let rows = match at {
                    At::Envelope => self.capacity,
                    At::Element => self.capacity.max(row * 2),
                };
                let part = Part::new(&ty, rows);
                slot.parts.push((ty, part));
                slot.parts.len() - 1
            }
        };
        slot.last_part = part;
        let part = &mut slot.parts[part].1;
        part.pad(row);
        part.push(&cell);
        Ok(())
    }

    /// The column `name` at `at` (created if new), for
    /// [`put_column`](Self::put_column).
    pub fn column(&mut self, at: At, name: &str, types: &ColumnTypes) -> usize {
        let (level, other) = match at {
            At::Envelope => (&mut self.envelope, &mut self.elements),
            At::Element => (&mut self.elements, &mut self.envelope),
        };
        if let Some(i) = level.index.get(name) {
            return *i;
        }
        let name: Arc<str> = Arc::from(name);
        let i = level.slots.len();
        let twin = other.index.get(&name).copied();
        if let Some(t) = twin {
            other.slots[t].twin = Some(i);
        } else {
            self.order.push(Arc::clone(&name));
        }
        let fixed = types.fixed(&name).cloned();
        level.slots.push(Slot {
            undeclared: fixed.is_none() && types.rejects_unfixed(),
            fixed,
            reserved: is_reserved_column(&name),
            event_time: self.event_time_field.as_ref() == Some(&name),
            twin,
            parts: Vec::new(),
            last_part: 0,
            written: 0,
            name: Arc::clone(&name),
        });
        level.index.insert(name, i);
        i
    }

    /// Ends the current message: a message without elements gets one row;
    /// a rejected envelope rejects every row of the message.
    pub fn end_message(&mut self) -> Outcome {
        if self.element.is_some() {
            self.end_element();
        }
        if self.live.len() == self.first_row {
            self.begin_element();
            self.element = None;
        }
        let message = self.positions.len();
        // An element column of the same name as an envelope column both
        // written in this message: a collision of the message.
        if self.rejected.is_none() {
            for slot in &self.elements.slots {
                if let Some(twin) = slot.twin
                    && slot.written > self.first_row
                    && self.envelope.slots[twin].written == message
                {
                    self.rejected = Some(collision(&slot.name));
                    break;
                }
            }
        }
        if let Some(rejection) = self.rejected.take() {
            self.live[self.first_row..].fill(false);
            self.rejected_elements.clear();
            return Outcome::Rejected(rejection);
        }
        if self.rejected_elements.is_empty() {
            Outcome::Rows
        } else {
            Outcome::Elements(std::mem::take(&mut self.rejected_elements))
        }
    }

    /// After [`end_message`](Self::end_message): keeps only the row of
    /// element `index` of the message just ended (the one element a
    /// dead-letter replay asks for; its siblings were rows already).
    pub fn retain_element(&mut self, index: u32) {
        for row in self.first_row..self.live.len() {
            if self.element_of[row] != index {
                self.live[row] = false;
            }
        }
    }

    /// The live rows of the current (or just ended) message.
    pub fn message_rows(&self) -> usize {
        self.live[self.first_row..].iter().filter(|l| **l).count()
    }

    /// Ends the current message as a dead letter: none of its rows are in.
    pub fn abort_message(&mut self) {
        self.element = None;
        if self.live.len() == self.first_row {
            return;
        }
        self.live[self.first_row..].fill(false);
    }

    /// The batch of every live row: `_key`, `_position`, `date`, then the
    /// columns in the order first seen, typed by the values of live rows
    /// widened with what `types` inferred before (which they then update).
    /// Columns with no value in any live row are left out unless `types`
    /// knows them.
    pub fn finish(
        mut self,
        partition: &str,
        types: &mut ColumnTypes,
    ) -> Result<RecordBatch, ArrowError> {
        let rows = self.live.len();
        let live = BooleanArray::from(std::mem::take(&mut self.live));
        let messages = UInt32Array::from(std::mem::take(&mut self.message_of));
        let mut by_name: FxHashMap<Arc<str>, Vec<(ColumnType, ArrayRef)>> = FxHashMap::default();
        for (level, at) in [
            (&mut self.envelope, At::Envelope),
            (&mut self.elements, At::Element),
        ] {
            for slot in &mut level.slots {
                let parts = by_name.entry(Arc::clone(&slot.name)).or_default();
                for (ty, part) in &mut slot.parts {
                    let len = if at == At::Envelope {
                        self.positions.len()
                    } else {
                        rows
                    };
                    part.pad(len);
                    let mut array = part.finish()?;
                    if at == At::Envelope {
                        array = take(&array, &messages, None)?;
                    }
                    let array = keep(&array, &live)?;
                    // Only live values decide a column's type.
                    if array.null_count() < array.len() {
                        parts.push((ty.clone(), array));
                    }
                }
            }
        }
        let positions = Int64Array::from(std::mem::take(&mut self.positions));
        let positions = keep(&take(&positions, &messages, None)?, &live)?;
        let elements: ArrayRef = Arc::new(UInt32Array::from(std::mem::take(&mut self.element_of)));
        let elements = keep(&elements, &live)?;
        let len = positions.len();

        let mut fields = vec![
            Field::new("_key", DataType::Utf8, false),
            Field::new("_position", DataType::Int64, false),
            Field::new("date", arrow_type(&ColumnType::Date), true),
        ];
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.order.len() + 3);
        let mut key = None;
        for name in &self.order {
            let parts = by_name.remove(name).unwrap_or_default();
            let observed = parts
                .iter()
                .map(|(t, _)| t.clone())
                .reduce(|a, b| a.widen(&b));
            let Some(ty) = types.admit(name, observed) else {
                continue;
            };
            let array = merge(parts, &ty, len)?;
            if self.key_field.as_deref() == Some(&**name) {
                key = Some(json_text(&array)?);
            }
            fields.push(Field::new(&**name, arrow_type(&ty), true));
            columns.push(array);
        }
        let keys = keys(partition, key.as_ref(), &positions, &elements);
        let message_of = messages.values();
        let dates: Date32Array = (0..rows)
            .map(|row| self.element_dates[row].or(self.envelope_dates[message_of[row] as usize]))
            .collect();
        let date = keep(&(Arc::new(dates) as ArrayRef), &live)?;
        let mut all: Vec<ArrayRef> = vec![keys, positions, date];
        all.extend(columns);
        RecordBatch::try_new(Arc::new(Schema::new(fields)), all)
    }
}

/// The live rows of `array` (itself when all are).
fn keep(array: &ArrayRef, live: &BooleanArray) -> Result<ArrayRef, ArrowError> {
    if live.false_count() == 0 {
        Ok(Arc::clone(array))
    } else {
        filter(array, live)
    }
}

fn collision(name: &str) -> Rejection {
    (
        Reason::Flatten,
        format!("two fields map to column `{name}`"),
    )
}

/// One column of `ty` from its parts (each null where another has a value).
fn merge(
    parts: Vec<(ColumnType, ArrayRef)>,
    ty: &ColumnType,
    len: usize,
) -> Result<ArrayRef, ArrowError> {
    let to = arrow_type(ty);
    let mut merged: Option<ArrayRef> = None;
    for (part_type, array) in parts {
        let array = if part_type == *ty && array.data_type() == &to {
            array
        } else if *ty == ColumnType::String {
            json_text(&array)?
        } else {
            cast(&array, &to)?
        };
        merged = Some(match merged {
            None => array,
            Some(m) => zip(&is_not_null(&array)?, &array, &m)?,
        });
    }
    Ok(merged.unwrap_or_else(|| new_null_array(&to, len)))
}

/// The record key of each row: the key column's text, or
/// `<partition>/<position>/<element>` where it is null or absent.
fn keys(
    partition: &str,
    key: Option<&ArrayRef>,
    positions: &ArrayRef,
    elements: &ArrayRef,
) -> ArrayRef {
    let key = key.and_then(|k| k.as_any().downcast_ref::<StringArray>());
    let positions = positions.as_any().downcast_ref::<Int64Array>();
    let elements = elements.as_any().downcast_ref::<UInt32Array>();
    let (Some(positions), Some(elements)) = (positions, elements) else {
        return new_null_array(&DataType::Utf8, 0);
    };
    let mut out = StringBuilder::with_capacity(positions.len(), positions.len() * 16);
    for row in 0..positions.len() {
        match key.filter(|k| k.is_valid(row)) {
            Some(k) => out.append_value(k.value(row)),
            None => out.append_value(format!(
                "{partition}/{}/{}",
                positions.value(row),
                elements.value(row)
            )),
        }
    }
    Arc::new(out.finish())
}

/// An event time as a timestamp: RFC 3339 text, or milliseconds since the
/// Unix epoch as a number (a timestamp stays, a date is its midnight, null
/// stays null). Otherwise the kind of value it is.
fn event_time<'a>(value: Val<'a>) -> Result<Val<'a>, &'static str> {
    let micros = match &value {
        Val::Null | Val::Timestamp(_) => return Ok(value),
        Val::Str(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_micros()),
        Val::Long(ms) => ms.checked_mul(1_000),
        Val::Double(ms) if ms.is_finite() && ms.abs() < 9.2e15 => Some((ms * 1_000.0) as i64),
        Val::Date(days) => i64::from(*days).checked_mul(MICROS_PER_DAY),
        _ => None,
    };
    micros.map(Val::Timestamp).ok_or(value.kind())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float64Type;

    fn text(s: &str) -> Val<'_> {
        Val::Str(Cow::Borrowed(s))
    }

    #[test]
    fn parts_of_several_types_merge_by_widening_and_the_envelope_is_taken_per_row() {
        let mut types = ColumnTypes::default();
        let mut b = BatchBuilder::new(Some("id".into()), None);
        b.begin_message(10);
        b.put(At::Envelope, "host", text("h1"), &types);
        for (id, n, x) in [
            ("a", Val::Long(1), Val::Long(2)),
            ("b", text("x"), Val::Double(0.5)),
        ] {
            b.begin_element();
            b.put(At::Element, "id", text(id), &types);
            b.put(At::Element, "n", n, &types);
            b.put(At::Element, "x", x, &types);
            b.end_element();
        }
        assert_eq!(b.end_message(), Outcome::Rows);
        b.begin_message(20);
        b.put(At::Envelope, "host", text("h2"), &types);
        assert_eq!(b.end_message(), Outcome::Rows);
        let batch = b.finish("s/p", &mut types).unwrap();
        let column = |name: &str| batch.column_by_name(name).unwrap().clone();
        let strings = |name: &str| -> Vec<Option<String>> {
            column(name)
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect()
        };
        assert_eq!(
            strings("_key"),
            vec![Some("a".into()), Some("b".into()), Some("s/p/20/0".into())]
        );
        assert_eq!(
            strings("host"),
            vec![Some("h1".into()), Some("h1".into()), Some("h2".into())]
        );
        assert_eq!(strings("n"), vec![Some("1".into()), Some("x".into()), None]);
        let x = column("x");
        assert_eq!(
            x.as_primitive::<Float64Type>().iter().collect::<Vec<_>>(),
            vec![Some(2.0), Some(0.5), None]
        );
        assert_eq!(types.get("n"), Some(&ColumnType::String));
        assert_eq!(types.get("x"), Some(&ColumnType::Double));
    }

    #[test]
    fn an_element_field_named_like_an_envelope_field_rejects_the_message() {
        let types = ColumnTypes::default();
        let mut b = BatchBuilder::new(None, None);
        b.begin_message(0);
        b.begin_element();
        b.put(At::Element, "m_x", Val::Long(1), &types);
        b.end_element();
        b.put(At::Envelope, "m_x", Val::Long(2), &types);
        assert_eq!(
            b.end_message(),
            Outcome::Rejected((Reason::Flatten, "two fields map to column `m_x`".into()))
        );
        b.begin_message(1);
        b.put(At::Envelope, "m_x", Val::Long(2), &types);
        b.begin_element();
        b.put(At::Element, "m_x", Val::Long(1), &types);
        b.end_element();
        assert_eq!(
            b.end_message(),
            Outcome::Elements(vec![(
                0,
                (Reason::Flatten, "two fields map to column `m_x`".into())
            )])
        );
    }

    #[test]
    fn an_empty_list_in_a_list_column_is_empty_not_null() {
        let mut types = ColumnTypes::default();
        let mut b = BatchBuilder::new(None, None);
        for list in [vec![Val::Long(1), Val::Null], vec![], vec![Val::Long(2)]] {
            b.begin_message(0);
            b.put(At::Envelope, "tags", Val::List(list), &types);
            assert_eq!(b.end_message(), Outcome::Rows);
        }
        let batch = b.finish("s/p", &mut types).unwrap();
        let tags = batch
            .column_by_name("tags")
            .unwrap()
            .as_list::<i32>()
            .clone();
        assert_eq!(tags.null_count(), 0);
        assert_eq!(
            (0..3).map(|i| tags.value_length(i)).collect::<Vec<_>>(),
            vec![2, 0, 1]
        );
    }
}
