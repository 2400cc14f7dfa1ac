//! Column types: the rule by which they widen, their Arrow types, and the
//! types a stream's columns are held to.

use std::fmt;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, ArrayRef};
use arrow_json::writer::{EncoderOptions, make_encoder};
use arrow_schema::{ArrowError, DataType, Field, TimeUnit};
use rustc_hash::FxHashMap;
use tributary_config::{ColumnTypeName, FlattenConfig};

/// The type of a column. Lists hold nullable scalars.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// `true` / `false`.
    Boolean,
    /// 64-bit signed integer.
    Long,
    /// 64-bit float.
    Double,
    /// UTF-8 text.
    String,
    /// Raw bytes (Avro `bytes` and `fixed`, dead-letter payloads): a Delta
    /// `binary` column.
    Bytes,
    /// A UTC time in microseconds: a Delta `timestamp` column.
    Timestamp,
    /// Days since the epoch: a Delta `date` column.
    Date,
    /// A decimal of a precision (at most 38) and scale: a Delta
    /// `decimal(p,s)` column.
    Decimal(u8, i8),
    /// A list of nullable scalars of one type.
    List(Box<ColumnType>),
}

impl ColumnType {
    /// The narrowest type holding values of both `self` and `other`:
    ///
    /// * equal types stay;
    /// * `long` and `double` widen to `double`;
    /// * lists widen element-wise;
    /// * every other mix (`long` then `string`, `boolean` then `long`, a scalar
    ///   then a list, two decimals of different scales, a timestamp then a
    ///   date…) widens to `string`, and values are then written as their JSON
    ///   text (timestamps as RFC 3339, dates as `YYYY-MM-DD`, decimals as
    ///   their digits).
    pub fn widen(&self, other: &ColumnType) -> ColumnType {
        use ColumnType::*;
        match (self, other) {
            (a, b) if a == b => a.clone(),
            (Long, Double) | (Double, Long) => Double,
            (List(a), List(b)) => List(Box::new(a.widen(b))),
            _ => String,
        }
    }

    /// Whether values of type `from` can be written to a column of this type
    /// without loss of meaning (the conversions [`ColumnType::widen`] implies).
    pub fn accepts(&self, from: &ColumnType) -> bool {
        self == from || (*from != ColumnType::Bytes && self.widen(from) == *self)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Boolean => f.write_str("boolean"),
            ColumnType::Long => f.write_str("long"),
            ColumnType::Double => f.write_str("double"),
            ColumnType::String => f.write_str("string"),
            ColumnType::Bytes => f.write_str("bytes"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Decimal(p, s) => write!(f, "decimal({p},{s})"),
            ColumnType::List(item) => write!(f, "list<{item}>"),
        }
    }
}

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

/// Column types a stream's rows must respect, and the types inferred so far.
///
/// Types come from three places: the declared schema in configuration and the
/// table's existing columns are *fixed* (a value of another type is a dead
/// letter); columns seen only in messages are *inferred* and widen by
/// [`ColumnType::widen`].
#[derive(Debug, Clone, Default)]
pub struct ColumnTypes {
    fixed: FxHashMap<String, (ColumnType, &'static str)>,
    inferred: FxHashMap<String, ColumnType>,
    reject_unfixed: bool,
}

impl ColumnTypes {
    /// Types for `config`: its declared schema, and whether undeclared columns
    /// are rejected.
    pub fn from_config(flatten: &FlattenConfig) -> Self {
        let fixed = flatten
            .schema
            .iter()
            .map(|(name, ty)| (name.clone(), ((*ty).into(), "declared")))
            .collect();
        Self {
            fixed,
            inferred: FxHashMap::default(),
            reject_unfixed: !flatten.schema.is_empty() && !flatten.infer_undeclared,
        }
    }

    /// Fixes the type of a column that exists in the table. Declared types win.
    pub fn fix_table_column(&mut self, name: &str, ty: ColumnType) {
        self.fixed
            .entry(name.to_string())
            .or_insert((ty, "in the table"));
    }

    /// Fixes the type of a metadata column the source adds to every row
    /// (`_kafka_offset`, …). Its name is reserved, so no declaration or
    /// payload field can give it another type; a table column of that name
    /// keeps its own type in the table (the compactor converts).
    pub fn fix_source_column(&mut self, name: &str, ty: ColumnType) {
        self.fixed.insert(name.to_string(), (ty, "source metadata"));
    }

    /// The type a column has now, if any value or declaration gave it one.
    pub fn get(&self, name: &str) -> Option<&ColumnType> {
        self.fixed
            .get(name)
            .map(|(t, _)| t)
            .or_else(|| self.inferred.get(name))
    }

    /// The fixed type of column `name` and where it comes from, if any.
    pub(crate) fn fixed(&self, name: &str) -> Option<&(ColumnType, &'static str)> {
        self.fixed.get(name)
    }

    /// Whether a column without a fixed type is rejected.
    pub(crate) fn rejects_unfixed(&self) -> bool {
        self.reject_unfixed
    }

    /// The type column `name` has in a batch whose values were of
    /// `observed` type (widened; `None`: all null): its fixed type, or the
    /// widening of `observed` and the type inferred before, which it becomes.
    /// `None` when nothing gives the column a type.
    pub(crate) fn admit(&mut self, name: &str, observed: Option<ColumnType>) -> Option<ColumnType> {
        if let Some((ty, _)) = self.fixed.get(name) {
            return Some(ty.clone());
        }
        let ty = match (self.inferred.get(name), observed) {
            (Some(before), Some(now)) => before.widen(&now),
            (Some(before), None) => before.clone(),
            (None, Some(now)) => now,
            (None, None) => return None,
        };
        self.inferred.insert(name.to_string(), ty.clone());
        Some(ty)
    }
}

impl From<ColumnTypeName> for ColumnType {
    fn from(name: ColumnTypeName) -> Self {
        let list = |t| ColumnType::List(Box::new(t));
        match name {
            ColumnTypeName::Boolean => ColumnType::Boolean,
            ColumnTypeName::Long => ColumnType::Long,
            ColumnTypeName::Double => ColumnType::Double,
            ColumnTypeName::String => ColumnType::String,
            ColumnTypeName::BooleanList => list(ColumnType::Boolean),
            ColumnTypeName::LongList => list(ColumnType::Long),
            ColumnTypeName::DoubleList => list(ColumnType::Double),
            ColumnTypeName::StringList => list(ColumnType::String),
        }
    }
}

/// Each value of `array` as JSON text (null stays null): what a value becomes
/// in a `string` column that widened from another type. Values that JSON
/// writes as strings (text, timestamps, dates) are kept as they are, not
/// quoted.
pub fn json_text(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
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

#[cfg(test)]
mod tests {
    use super::ColumnType::*;

    #[test]
    fn widening_rule() {
        assert_eq!(Long.widen(&Long), Long);
        assert_eq!(Long.widen(&Double), Double);
        assert_eq!(Long.widen(&String), String);
        assert_eq!(Boolean.widen(&Long), String);
        assert_eq!(
            List(Box::new(Long)).widen(&List(Box::new(Double))),
            List(Box::new(Double))
        );
        assert_eq!(List(Box::new(Long)).widen(&Long), String);
        assert!(Double.accepts(&Long));
        assert!(!Long.accepts(&Double));
        assert!(String.accepts(&List(Box::new(Long))));
        assert!(!Bytes.accepts(&String));
    }
}
