//! Column types, values, and the rule by which types widen.

use std::fmt;

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
    /// Raw bytes (dead-letter payloads).
    Bytes,
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
    ///   then a list…) widens to `string`, and values are then written as
    ///   their JSON text.
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
            ColumnType::List(item) => write!(f, "list<{item}>"),
        }
    }
}

/// One column of a row file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Name: `[A-Za-z_][A-Za-z0-9_]*`, as Avro requires.
    pub name: String,
    /// Type.
    pub ty: ColumnType,
    /// Whether the column may hold nulls (written as an Avro `["null", T]` union).
    pub nullable: bool,
}

impl Column {
    /// A nullable column.
    pub fn nullable(name: impl Into<String>, ty: ColumnType) -> Self {
        Self {
            name: name.into(),
            ty,
            nullable: true,
        }
    }

    /// A column that never holds null.
    pub fn required(name: impl Into<String>, ty: ColumnType) -> Self {
        Self {
            name: name.into(),
            ty,
            nullable: false,
        }
    }
}

/// The ordered columns of a row file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowSchema {
    /// The columns, in the order values appear in a row.
    pub columns: Vec<Column>,
}

impl RowSchema {
    /// The index of column `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

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
    /// A list of scalars (or nulls).
    List(Vec<Value>),
}

/// A value decoded from a row file, borrowing its text and bytes from the
/// file's data: what readers that do not keep rows use, without an
/// allocation per value.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueRef<'a> {
    /// Absent or JSON `null`.
    Null,
    /// A boolean.
    Boolean(bool),
    /// An integer.
    Long(i64),
    /// A float.
    Double(f64),
    /// Text.
    String(&'a str),
    /// Raw bytes.
    Bytes(&'a [u8]),
    /// A list of scalars (or nulls).
    List(Vec<ValueRef<'a>>),
}

impl ValueRef<'_> {
    /// The owned [`Value`].
    pub fn to_value(&self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Boolean(b) => Value::Boolean(*b),
            ValueRef::Long(i) => Value::Long(*i),
            ValueRef::Double(d) => Value::Double(*d),
            ValueRef::String(s) => Value::String((*s).to_string()),
            ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
            ValueRef::List(items) => Value::List(items.iter().map(ValueRef::to_value).collect()),
        }
    }
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
            | (Value::Bytes(_), ColumnType::Bytes) => true,
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
            Value::List(_) => "a list",
        }
    }

    /// The value as JSON text: what a value becomes in a `string` column that
    /// widened from another type.
    pub fn to_json_text(&self) -> String {
        match self {
            Value::String(s) => s.clone(),
            other => other.to_json().to_string(),
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
            Value::List(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ColumnType::*;
    use super::*;

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

    #[test]
    fn list_type_ignores_nulls() {
        let v = Value::List(vec![Value::Null, Value::Long(1), Value::Double(2.5)]);
        assert_eq!(v.column_type(), Some(List(Box::new(Double))));
        assert_eq!(Value::List(vec![Value::Null]).column_type(), None);
    }
}
