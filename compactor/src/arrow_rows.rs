//! Row-file rows to Arrow record batches in the table's schema.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, ListBuilder,
    StringBuilder,
};
use deltalake::arrow::datatypes::{Field, SchemaRef};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use tributary_lake::columns::arrow_type;
use tributary_lake::rowfile::{ColumnType, Value};

/// A column of the target schema, with where its values come from in a row.
pub(crate) struct Source {
    /// Index of the value in the row, or `None` when the file lacks the column.
    pub index: Option<usize>,
    /// Target type.
    pub ty: ColumnType,
}

/// Builds one record batch of `schema` from `rows`. `constant` is the value of
/// the `_partition` column (one per row file). Values must already fit their
/// target types (see [`ColumnType::accepts`]); a value that does not is null.
pub(crate) fn record_batch(
    schema: &SchemaRef,
    sources: &[Source],
    rows: &[Vec<Value>],
    constant: (usize, &str),
) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<ArrayRef> = sources
        .iter()
        .enumerate()
        .map(|(i, source)| {
            if i == constant.0 {
                let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * constant.1.len());
                rows.iter().for_each(|_| b.append_value(constant.1));
                return Arc::new(b.finish()) as ArrayRef;
            }
            let values = rows.iter().map(|row| {
                source
                    .index
                    .and_then(|j| row.get(j))
                    .unwrap_or(&Value::Null)
            });
            build(&source.ty, values, rows.len())
        })
        .collect();
    RecordBatch::try_new(Arc::clone(schema), columns)
}

fn build<'a>(ty: &ColumnType, values: impl Iterator<Item = &'a Value>, len: usize) -> ArrayRef {
    match ty {
        ColumnType::List(item) => {
            let field = Field::new("element", arrow_type(item), true);
            let mut b = ListBuilder::new(scalar_builder(item, len)).with_field(Arc::new(field));
            for v in values {
                match v {
                    Value::List(items) => {
                        for item_value in items {
                            append_scalar(b.values(), item, item_value);
                        }
                        b.append(true);
                    }
                    _ => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
        scalar => {
            let mut b = scalar_builder(scalar, len);
            for v in values {
                append_scalar(&mut b, scalar, v);
            }
            b.finish()
        }
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
fn append_scalar(b: &mut Box<dyn ArrayBuilder>, ty: &ColumnType, v: &Value) {
    let any = b.as_any_mut();
    match ty {
        ColumnType::Boolean => {
            if let Some(b) = any.downcast_mut::<BooleanBuilder>() {
                b.append_option(match v {
                    Value::Boolean(x) => Some(*x),
                    _ => None,
                });
            }
        }
        ColumnType::Long => {
            if let Some(b) = any.downcast_mut::<Int64Builder>() {
                b.append_option(match v {
                    Value::Long(x) => Some(*x),
                    _ => None,
                });
            }
        }
        ColumnType::Double => {
            if let Some(b) = any.downcast_mut::<Float64Builder>() {
                b.append_option(match v {
                    Value::Double(x) => Some(*x),
                    Value::Long(x) => Some(*x as f64),
                    _ => None,
                });
            }
        }
        _ => {
            if let Some(b) = any.downcast_mut::<StringBuilder>() {
                match v {
                    Value::Null | Value::Bytes(_) => b.append_null(),
                    Value::String(s) => b.append_value(s),
                    other => b.append_value(other.to_json_text()),
                }
            }
        }
    }
}
