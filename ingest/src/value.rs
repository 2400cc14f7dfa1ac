//! The decoded value of one field, as the decoders and the flattener hand it
//! to the batch builder ([`crate::batch`]), which appends it to an Arrow
//! column of the column's type.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat};
use deltalake::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array,
    ListArray, StringArray, TimestampMicrosecondArray, new_null_array,
};
use deltalake::arrow::buffer::{NullBuffer, OffsetBuffer};
use deltalake::arrow::datatypes::Field;
use tributary_lake::columns::arrow_type;
use tributary_lake::rowfile::ColumnType;
use tributary_schema_registry::avro::decimal_text;

/// A value in a row.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Value {
    /// Absent or JSON `null`.
    #[default]
    Null,
    /// A boolean.
    Boolean(bool),
    /// An integer.
    Long(i64),
    /// A float.
    Double(f64),
    /// Text.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A UTC time in microseconds since the epoch.
    Timestamp(i64),
    /// Days since the epoch.
    Date(i32),
    /// `unscaled` × 10^-`scale`, of at most `precision` (≤ 38) digits.
    Decimal {
        /// The unscaled value.
        unscaled: i128,
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: i8,
    },
    /// A list of scalars (or nulls).
    List(Vec<Value>),
}

impl Value {
    /// Whether this value is of type `ty` or fits any column (null), checked
    /// without allocating: `true` means [`Value::column_type`] is `None` or
    /// `ty`. (`false` may still be such a value, e.g. a list of nulls; callers
    /// then ask [`Value::column_type`].)
    pub fn is_of(&self, ty: &ColumnType) -> bool {
        match (self, ty) {
            (Value::Null, _)
            | (Value::Boolean(_), ColumnType::Boolean)
            | (Value::Long(_), ColumnType::Long)
            | (Value::Double(_), ColumnType::Double)
            | (Value::String(_), ColumnType::String)
            | (Value::Bytes(_), ColumnType::Bytes)
            | (Value::Timestamp(_), ColumnType::Timestamp)
            | (Value::Date(_), ColumnType::Date) => true,
            (
                Value::Decimal {
                    precision, scale, ..
                },
                ColumnType::Decimal(p, s),
            ) => precision == p && scale == s,
            (Value::List(items), ColumnType::List(item)) => items.iter().all(|i| i.is_of(item)),
            _ => false,
        }
    }

    /// The type of this value; `None` for null and for an empty list or a list
    /// of nulls, which fit any column.
    pub fn column_type(&self) -> Option<ColumnType> {
        match self {
            Value::Null => None,
            Value::Boolean(_) => Some(ColumnType::Boolean),
            Value::Long(_) => Some(ColumnType::Long),
            Value::Double(_) => Some(ColumnType::Double),
            Value::String(_) => Some(ColumnType::String),
            Value::Bytes(_) => Some(ColumnType::Bytes),
            Value::Timestamp(_) => Some(ColumnType::Timestamp),
            Value::Date(_) => Some(ColumnType::Date),
            Value::Decimal {
                precision, scale, ..
            } => Some(ColumnType::Decimal(*precision, *scale)),
            Value::List(items) => {
                let mut item_type: Option<ColumnType> = None;
                for item in items {
                    if let Some(t) = item.column_type() {
                        item_type = Some(match item_type {
                            Some(acc) => acc.widen(&t),
                            None => t,
                        });
                    }
                }
                Some(ColumnType::List(Box::new(item_type?)))
            }
        }
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Boolean(_) => "a boolean",
            Value::Long(_) => "an integer",
            Value::Double(_) => "a float",
            Value::String(_) => "a string",
            Value::Bytes(_) => "bytes",
            Value::Timestamp(_) => "a timestamp",
            Value::Date(_) => "a date",
            Value::Decimal { .. } => "a decimal",
            Value::List(_) => "a list",
        }
    }

    /// The value as JSON text: what a value becomes in a `string` column that
    /// widened from another type.
    pub fn to_json_text(&self) -> String {
        match self.to_json() {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Boolean(b) => serde_json::Value::Bool(*b),
            Value::Long(i) => serde_json::Value::from(*i),
            Value::Double(d) => serde_json::Value::from(*d),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Bytes(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
            Value::Timestamp(micros) => {
                serde_json::Value::String(DateTime::from_timestamp_micros(*micros).map_or_else(
                    || micros.to_string(),
                    |t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                ))
            }
            Value::Date(days) => serde_json::Value::String(
                DateTime::from_timestamp(i64::from(*days) * 86_400, 0)
                    .map_or_else(|| days.to_string(), |t| t.format("%Y-%m-%d").to_string()),
            ),
            Value::Decimal {
                unscaled, scale, ..
            } => serde_json::Value::String(decimal_text(*unscaled, (*scale).max(0) as u32)),
            Value::List(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
        }
    }
}

/// The Arrow array of `values` in a column of type `ty` (by
/// [`arrow_type`]): a value of another type than the column's is converted as
/// [`ColumnType::widen`] implies (a long in a double column is a double; any
/// value in a string column is its JSON text), and one the column cannot hold
/// is null.
pub fn array_of<'a>(values: impl Iterator<Item = &'a Value>, ty: &ColumnType) -> ArrayRef {
    match ty {
        ColumnType::Boolean => Arc::new(BooleanArray::from_iter(values.map(|v| match v {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }))),
        ColumnType::Long => Arc::new(Int64Array::from_iter(values.map(|v| match v {
            Value::Long(l) => Some(*l),
            _ => None,
        }))),
        ColumnType::Double => Arc::new(Float64Array::from_iter(values.map(|v| match v {
            Value::Double(d) => Some(*d),
            Value::Long(l) => Some(*l as f64),
            _ => None,
        }))),
        ColumnType::String => Arc::new(StringArray::from_iter(values.map(|v| match v {
            Value::Null => None,
            Value::String(s) => Some(Cow::Borrowed(s.as_str())),
            other => Some(Cow::Owned(other.to_json_text())),
        }))),
        ColumnType::Bytes => Arc::new(BinaryArray::from_iter(values.map(|v| match v {
            Value::Bytes(b) => Some(b.as_slice()),
            _ => None,
        }))),
        ColumnType::Timestamp => Arc::new(
            TimestampMicrosecondArray::from_iter(values.map(|v| match v {
                Value::Timestamp(t) => Some(*t),
                _ => None,
            }))
            .with_timezone("UTC"),
        ),
        ColumnType::Date => Arc::new(Date32Array::from_iter(values.map(|v| match v {
            Value::Date(d) => Some(*d),
            _ => None,
        }))),
        ColumnType::Decimal(p, s) => {
            let array = Decimal128Array::from_iter(values.map(|v| match v {
                Value::Decimal {
                    unscaled,
                    precision,
                    scale,
                } if precision == p && scale == s => Some(*unscaled),
                _ => None,
            }));
            // A precision and scale that Arrow refuses never reach a column
            // type: the Avro plan keeps such decimals as text.
            let len = array.len();
            match array.with_precision_and_scale(*p, *s) {
                Ok(array) => Arc::new(array),
                Err(_) => new_null_array(&arrow_type(ty), len),
            }
        }
        ColumnType::List(item) => {
            let mut items = Vec::new();
            let mut offsets = vec![0i32];
            let mut valid = Vec::new();
            for v in values {
                if let Value::List(list) = v {
                    items.extend(list.iter());
                }
                valid.push(matches!(v, Value::List(_)));
                // A batch is bounded far below 2^31 list items.
                offsets.push(i32::try_from(items.len()).unwrap_or(i32::MAX));
            }
            let field = Arc::new(Field::new("element", arrow_type(item), true));
            Arc::new(ListArray::new(
                field,
                OffsetBuffer::new(offsets.into()),
                array_of(items.into_iter(), item),
                Some(NullBuffer::from(valid)),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Array, AsArray};

    #[test]
    fn list_type_ignores_nulls() {
        let v = Value::List(vec![Value::Null, Value::Long(1), Value::Double(2.5)]);
        assert_eq!(
            v.column_type(),
            Some(ColumnType::List(Box::new(ColumnType::Double)))
        );
        assert_eq!(Value::List(vec![Value::Null]).column_type(), None);
    }

    #[test]
    fn arrays_convert_values_as_columns_widen() {
        let values = [
            Value::String("a".into()),
            Value::Long(1),
            Value::List(vec![Value::Boolean(true)]),
            Value::Null,
        ];
        let strings = array_of(values.iter(), &ColumnType::String);
        let strings = strings.as_string::<i32>();
        assert_eq!(
            strings.iter().collect::<Vec<_>>(),
            vec![Some("a"), Some("1"), Some("[true]"), None]
        );
        let lists = [
            Value::List(vec![Value::Long(1), Value::Null]),
            Value::Null,
            Value::List(vec![]),
        ];
        let ty = ColumnType::List(Box::new(ColumnType::Double));
        let lists = array_of(lists.iter(), &ty);
        assert_eq!(lists.data_type(), &arrow_type(&ty));
        let lists = lists.as_list::<i32>();
        assert_eq!(lists.null_count(), 1);
        assert_eq!(lists.value_length(0), 2);
        assert_eq!(lists.value_length(2), 0);
    }
}
