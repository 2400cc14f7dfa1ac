//! Row-file rows to Arrow record batches in the table's schema, appended
//! one row at a time straight from the decoded file (no row is kept).

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, ListBuilder,
    StringBuilder,
};
use deltalake::arrow::datatypes::{Field, SchemaRef};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use tributary_lake::columns::arrow_type;
use tributary_lake::rowfile::{ColumnType, ValueRef};

/// A column of the target schema, with where its values come from in a row.
pub(crate) struct Source {
    /// Index of the value in the row, or `None` when the file lacks the column.
    pub index: Option<usize>,
    /// Target type.
    pub ty: ColumnType,
}

/// One builder per target column.
enum Builder {
    Scalar(Box<dyn ArrayBuilder>),
    List(ListBuilder<Box<dyn ArrayBuilder>>),
}

/// Builds one record batch of a target schema, row by row.
pub(crate) struct BatchBuilder {
    sources: Vec<Source>,
    builders: Vec<Builder>,
    /// The column that holds the same text in every row (`_partition`), and
    /// that text.
    constant: (usize, String),
    rows: usize,
}

impl BatchBuilder {
    /// A builder for columns taken from rows as `sources` says; column
    /// `constant.0` holds `constant.1` in every row.
    pub(crate) fn new(sources: Vec<Source>, constant: (usize, String), capacity: usize) -> Self {
        let builders = sources
            .iter()
            .map(|source| match &source.ty {
                ColumnType::List(item) => {
                    let field = Field::new("element", arrow_type(item), true);
                    Builder::List(
                        ListBuilder::new(scalar_builder(item, capacity))
                            .with_field(Arc::new(field)),
                    )
                }
                scalar => Builder::Scalar(scalar_builder(scalar, capacity)),
            })
            .collect();
        BatchBuilder {
            sources,
            builders,
            constant,
            rows: 0,
        }
    }

    /// Appends `row`. Values must already fit their target types (see
    /// [`ColumnType::accepts`]); a value that does not is null.
    pub(crate) fn append(&mut self, row: &[ValueRef<'_>]) {
        for (i, (source, builder)) in self.sources.iter().zip(&mut self.builders).enumerate() {
            let value = source
                .index
                .and_then(|j| row.get(j))
                .unwrap_or(&ValueRef::Null);
            match builder {
                Builder::Scalar(b) if i == self.constant.0 => {
                    append_scalar(b, &source.ty, &ValueRef::String(&self.constant.1));
                }
                Builder::Scalar(b) => append_scalar(b, &source.ty, value),
                Builder::List(b) => {
                    let (ColumnType::List(item), ValueRef::List(items)) = (&source.ty, value)
                    else {
                        b.append(false);
                        continue;
                    };
                    for item_value in items {
                        append_scalar(b.values(), item, item_value);
                    }
                    b.append(true);
                }
            }
        }
        self.rows += 1;
    }

    /// Rows appended so far.
    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    /// The batch of every row appended.
    pub(crate) fn finish(self, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = self
            .builders
            .into_iter()
            .map(|builder| match builder {
                Builder::Scalar(mut b) => b.finish(),
                Builder::List(mut b) => Arc::new(b.finish()) as ArrayRef,
            })
            .collect();
        RecordBatch::try_new(Arc::clone(schema), columns)
    }
}

fn scalar_builder(ty: &ColumnType, len: usize) -> Box<dyn ArrayBuilder> {
    match ty {
        ColumnType::Boolean => Box::new(BooleanBuilder::with_capacity(len)),
        ColumnType::Long => Box::new(Int64Builder::with_capacity(len)),
        ColumnType::Double => Box::new(Float64Builder::with_capacity(len)),
        _ => Box::new(StringBuilder::with_capacity(len, len * 16)),
    }
}

/// Appends `v` converted to `ty` (long → double, anything → JSON text for
/// strings), or null.
fn append_scalar(b: &mut Box<dyn ArrayBuilder>, ty: &ColumnType, v: &ValueRef<'_>) {
    let any = b.as_any_mut();
    match ty {
        ColumnType::Boolean => {
            if let Some(b) = any.downcast_mut::<BooleanBuilder>() {
                b.append_option(match v {
                    ValueRef::Boolean(x) => Some(*x),
                    _ => None,
                });
            }
        }
        ColumnType::Long => {
            if let Some(b) = any.downcast_mut::<Int64Builder>() {
                b.append_option(match v {
                    ValueRef::Long(x) => Some(*x),
                    _ => None,
                });
            }
        }
        ColumnType::Double => {
            if let Some(b) = any.downcast_mut::<Float64Builder>() {
                b.append_option(match v {
                    ValueRef::Double(x) => Some(*x),
                    ValueRef::Long(x) => Some(*x as f64),
                    _ => None,
                });
            }
        }
        _ => {
            if let Some(b) = any.downcast_mut::<StringBuilder>() {
                match v {
                    ValueRef::Null | ValueRef::Bytes(_) => b.append_null(),
                    ValueRef::String(s) => b.append_value(s),
                    other => b.append_value(other.to_value().to_json_text()),
                }
            }
        }
    }
}
