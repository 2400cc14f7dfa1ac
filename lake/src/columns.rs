//! Row-file column types as Arrow types, and the columns of a Delta table.

use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::arrow::array::{Array, ArrayRef, StringBuilder};
use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::json::writer::{EncoderOptions, make_encoder};

use crate::error::Result;
use crate::rowfile::ColumnType;

/// The Arrow type of a column type (lists hold nullable items named `element`,
/// as Delta and Parquet expect).
pub fn arrow_type(ty: &ColumnType) -> DataType {
    match ty {
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Long => DataType::Int64,
        ColumnType::Double => DataType::Float64,
        ColumnType::String => DataType::Utf8,
        ColumnType::Bytes => DataType::Binary,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ColumnType::Date => DataType::Date32,
        ColumnType::Decimal(p, s) => DataType::Decimal128(*p, *s),
        ColumnType::List(item) => {
            DataType::List(Arc::new(Field::new("element", arrow_type(item), true)))
        }
    }
}

/// The column type of an Arrow type, for the types Tributary writes (and the
/// integer, float and string variants other writers use); `None` otherwise.
pub fn column_type(ty: &DataType) -> Option<ColumnType> {
    Some(match ty {
        DataType::Boolean => ColumnType::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => ColumnType::Long,
        DataType::Float32 | DataType::Float64 => ColumnType::Double,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::String,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => ColumnType::Bytes,
        DataType::Timestamp(_, Some(_)) => ColumnType::Timestamp,
        DataType::Date32 => ColumnType::Date,
        DataType::Decimal128(p, s) => ColumnType::Decimal(*p, *s),
        DataType::List(f) | DataType::LargeList(f) => {
            ColumnType::List(Box::new(column_type(f.data_type())?))
        }
        _ => return None,
    })
}

/// The table's columns with a type Tributary can write (others are left to
/// their writers and never touched).
pub fn table_columns(table: &DeltaTable) -> Result<Vec<(String, ColumnType)>> {
    let snapshot = table.snapshot().map_err(|e| crate::Error::Delta {
        url: table.table_url().to_string(),
        source: Box::new(e),
    })?;
    let schema = snapshot.snapshot().arrow_schema();
    Ok(schema
        .fields()
        .iter()
        .filter_map(|f| Some((f.name().clone(), column_type(f.data_type())?)))
        .collect())
}

/// Each value of `array` as JSON text (null stays null): what a value becomes
/// in a `string` column that widened from another type. Values that JSON
/// writes as strings (text, timestamps, dates) are kept as they are, not
/// quoted.
pub fn json_text(array: &ArrayRef) -> std::result::Result<ArrayRef, ArrowError> {
    if matches!(array.data_type(), DataType::Utf8) {
        return Ok(Arc::clone(array));
    }
    let field = Arc::new(Field::new("value", array.data_type().clone(), true));
    let options = EncoderOptions::default().with_explicit_nulls(true);
    let mut encoder = make_encoder(&field, array.as_ref(), &options)?;
    let mut out = Vec::new();
    let mut texts = StringBuilder::with_capacity(array.len(), array.len() * 8);
    for row in 0..array.len() {
        if array.is_null(row) {
            texts.append_null();
            continue;
        }
        out.clear();
        encoder.encode(row, &mut out);
        // A value that is a JSON string (a timestamp, a date) is its text.
        match serde_json::from_slice::<String>(&out) {
            Ok(text) => texts.append_value(text),
            Err(_) => texts.append_value(String::from_utf8_lossy(&out)),
        }
    }
    Ok(Arc::new(texts.finish()))
}
