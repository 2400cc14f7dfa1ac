//! The values of one type of one column, in an Arrow builder.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{ArrowError, Field};

use crate::Val;
use crate::columns::{ColumnType, arrow_type};

/// Values of one type of one column, in an Arrow builder.
pub(super) enum Part {
    Bool(BooleanBuilder),
    Long(Int64Builder),
    Double(Float64Builder),
    Str(StringBuilder),
    Bytes(BinaryBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    Decimal(Decimal128Builder, u8, i8),
    /// Lists: offsets and validity here, items in their own part.
    List {
        item: ColumnType,
        items: Box<Part>,
        offsets: Vec<i32>,
        valid: Vec<bool>,
    },
}

impl Part {
    /// A part of type `ty` with room for `rows` rows.
    pub(super) fn new(ty: &ColumnType, rows: usize) -> Part {
        match ty {
            ColumnType::Boolean => Part::Bool(BooleanBuilder::with_capacity(rows)),
            ColumnType::Long => Part::Long(Int64Builder::with_capacity(rows)),
            ColumnType::Double => Part::Double(Float64Builder::with_capacity(rows)),
            ColumnType::String => Part::Str(StringBuilder::with_capacity(rows, rows * 16)),
            ColumnType::Bytes => Part::Bytes(BinaryBuilder::with_capacity(rows, rows * 16)),
            ColumnType::Timestamp => {
                Part::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows))
            }
            ColumnType::Date => Part::Date(Date32Builder::with_capacity(rows)),
            ColumnType::Decimal(p, s) => {
                Part::Decimal(Decimal128Builder::with_capacity(rows), *p, *s)
            }
            ColumnType::List(item) => Part::List {
                item: (**item).clone(),
                items: Box::new(Part::new(item, rows)),
                offsets: vec![0],
                valid: Vec::new(),
            },
        }
    }

    /// Whether `cell` is of exactly this part's type (lists are never
    /// taken as such: their item type needs a look).
    pub(super) fn holds(&self, cell: &Val<'_>) -> bool {
        match (self, cell) {
            (Part::Bool(_), Val::Bool(_))
            | (Part::Long(_), Val::Long(_))
            | (Part::Double(_), Val::Double(_))
            | (Part::Str(_), Val::Str(_))
            | (Part::Bytes(_), Val::Bytes(_))
            | (Part::Timestamp(_), Val::Timestamp(_))
            | (Part::Date(_), Val::Date(_)) => true,
            (
                Part::Decimal(_, p, s),
                Val::Decimal {
                    precision, scale, ..
                },
            ) => p == precision && s == scale,
            // A list whose items are all of the list part's item type (or
            // null), with at least one that is not null.
            (Part::List { items: part, .. }, Val::List(cells)) => {
                cells.iter().any(|c| !matches!(c, Val::Null))
                    && cells
                        .iter()
                        .all(|c| matches!(c, Val::Null) || part.holds(c))
            }
            _ => false,
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Part::Bool(b) => b.len(),
            Part::Long(b) => b.len(),
            Part::Double(b) => b.len(),
            Part::Str(b) => b.len(),
            Part::Bytes(b) => b.len(),
            Part::Timestamp(b) => b.len(),
            Part::Date(b) => b.len(),
            Part::Decimal(b, ..) => b.len(),
            Part::List { valid, .. } => valid.len(),
        }
    }

    pub(super) fn push_nulls(&mut self, n: usize) {
        match self {
            Part::Bool(b) => b.append_nulls(n),
            Part::Long(b) => b.append_nulls(n),
            Part::Double(b) => b.append_nulls(n),
            Part::Str(b) => b.append_nulls(n),
            Part::Bytes(b) => b.append_nulls(n),
            Part::Timestamp(b) => b.append_nulls(n),
            Part::Date(b) => b.append_nulls(n),
            Part::Decimal(b, ..) => b.append_nulls(n),
            Part::List { offsets, valid, .. } => {
                let end = offsets.last().copied().unwrap_or(0);
                offsets.extend(std::iter::repeat_n(end, n));
                valid.extend(std::iter::repeat_n(false, n));
            }
        }
    }

    pub(super) fn push_null(&mut self) {
        self.push_nulls(1);
    }

    /// Nulls up to `rows` rows.
    pub(super) fn pad(&mut self, rows: usize) {
        let len = self.len();
        if len < rows {
            self.push_nulls(rows - len);
        }
    }

    /// Appends `cell`, converted to this part's type the way
    /// [`ColumnType::widen`] implies (a long in a double part is a double,
    /// anything in a string part its JSON text); a cell the part cannot
    /// hold is null.
    pub(super) fn push(&mut self, cell: &Val<'_>) {
        match (self, cell) {
            (part, Val::Null) => part.push_null(),
            (Part::Bool(b), Val::Bool(v)) => b.append_value(*v),
            (Part::Long(b), Val::Long(v)) => b.append_value(*v),
            (Part::Double(b), Val::Double(v)) => b.append_value(*v),
            (Part::Double(b), Val::Long(v)) => b.append_value(*v as f64),
            (Part::Str(b), cell) => b.append_value(cell.text()),
            (Part::Bytes(b), Val::Bytes(v)) => b.append_value(v),
            (Part::Timestamp(b), Val::Timestamp(v)) => b.append_value(*v),
            (Part::Date(b), Val::Date(v)) => b.append_value(*v),
            (
                Part::Decimal(b, p, s),
                Val::Decimal {
                    unscaled,
                    precision,
                    scale,
                },
            ) if p == precision && s == scale => b.append_value(*unscaled),
            (
                Part::List {
                    items,
                    offsets,
                    valid,
                    ..
                },
                Val::List(list),
            ) => {
                for item in list {
                    items.push(item);
                }
                // A batch is bounded far below 2^31 list items.
                offsets.push(i32::try_from(items.len()).unwrap_or(i32::MAX));
                valid.push(true);
            }
            (part, _) => part.push_null(),
        }
    }

    pub(super) fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            Part::Bool(b) => Arc::new(b.finish()),
            Part::Long(b) => Arc::new(b.finish()),
            Part::Double(b) => Arc::new(b.finish()),
            Part::Str(b) => Arc::new(b.finish()),
            Part::Bytes(b) => Arc::new(b.finish()),
            Part::Timestamp(b) => Arc::new(b.finish().with_timezone("UTC")),
            Part::Date(b) => Arc::new(b.finish()),
            Part::Decimal(b, p, s) => Arc::new(b.finish().with_precision_and_scale(*p, *s)?),
            Part::List {
                item,
                items,
                offsets,
                valid,
            } => {
                let field = Arc::new(Field::new("element", arrow_type(item), true));
                let list = ListArray::try_new(
                    field,
                    OffsetBuffer::new(std::mem::take(offsets).into()),
                    items.finish()?,
                    Some(NullBuffer::from(std::mem::take(valid))),
                )?;
                offsets.push(0);
                Arc::new(list)
            }
        })
    }
}
