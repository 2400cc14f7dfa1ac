//! Column types and the rule by which types widen.

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
