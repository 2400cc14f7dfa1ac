//! One value as a decoder hands it to the batch builder.

use std::borrow::Cow;

use crate::columns::ColumnType;

/// A flattened value, borrowing text and bytes from the record it was
/// decoded from where it can (a decoder of any format can hand these over).
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    /// Null.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Long(i64),
    /// A 64-bit float.
    Double(f64),
    /// Text.
    Str(Cow<'a, str>),
    /// Raw bytes (`bytes`, `fixed`).
    Bytes(Cow<'a, [u8]>),
    /// A UTC time in microseconds since the epoch.
    Timestamp(i64),
    /// Days since the epoch.
    Date(i32),
    /// A decimal: `unscaled` × 10^-`scale`, of at most `precision` digits.
    Decimal {
        /// The unscaled value.
        unscaled: i128,
        /// Digits in all (at most 38).
        precision: u8,
        /// Digits after the point.
        scale: i8,
    },
    /// A list of scalars.
    List(Vec<Val<'a>>),
}

impl Val<'_> {
    /// The value, owning its text and bytes.
    pub fn into_owned(self) -> Val<'static> {
        match self {
            Val::Null => Val::Null,
            Val::Bool(b) => Val::Bool(b),
            Val::Long(l) => Val::Long(l),
            Val::Double(d) => Val::Double(d),
            Val::Str(s) => Val::Str(Cow::Owned(s.into_owned())),
            Val::Bytes(b) => Val::Bytes(Cow::Owned(b.into_owned())),
            Val::Timestamp(t) => Val::Timestamp(t),
            Val::Date(d) => Val::Date(d),
            Val::Decimal {
                unscaled,
                precision,
                scale,
            } => Val::Decimal {
                unscaled,
                precision,
                scale,
            },
            Val::List(items) => Val::List(items.into_iter().map(Val::into_owned).collect()),
        }
    }
}

impl Val<'_> {
    /// The value's type; `None` for null and for a list of nulls only, which
    /// fit any column.
    pub fn column_type(&self) -> Option<ColumnType> {
        Some(match self {
            Val::Null => return None,
            Val::Bool(_) => ColumnType::Boolean,
            Val::Long(_) => ColumnType::Long,
            Val::Double(_) => ColumnType::Double,
            Val::Str(_) => ColumnType::String,
            Val::Bytes(_) => ColumnType::Bytes,
            Val::Timestamp(_) => ColumnType::Timestamp,
            Val::Date(_) => ColumnType::Date,
            Val::Decimal {
                precision, scale, ..
            } => ColumnType::Decimal(*precision, *scale),
            Val::List(items) => ColumnType::List(Box::new(
                items
                    .iter()
                    .filter_map(Val::column_type)
                    .reduce(|a, b| a.widen(&b))?,
            )),
        })
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "a boolean",
            Val::Long(_) => "an integer",
            Val::Double(_) => "a float",
            Val::Str(_) => "a string",
            Val::Bytes(_) => "bytes",
            Val::Timestamp(_) => "a timestamp",
            Val::Date(_) => "a date",
            Val::Decimal { .. } => "a decimal",
            Val::List(_) => "a list",
        }
    }

    /// The value as JSON text: what it becomes in a `string` column (text
    /// stays as it is).
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Val::Str(s) => Cow::Borrowed(s),
            other => Cow::Owned(match json(other) {
                serde_json::Value::String(s) => s,
                json => json.to_string(),
            }),
        }
    }
}

/// The value as a JSON value (timestamps RFC 3339, dates `YYYY-MM-DD`,
/// decimals their digits, all as strings).
fn json(value: &Val<'_>) -> serde_json::Value {
    use serde_json::Value as Json;
    {
        match value {
            Val::Null => Json::Null,
            Val::Bool(b) => Json::Bool(*b),
            Val::Long(l) => Json::from(*l),
            Val::Double(d) => Json::from(*d),
            Val::Str(s) => Json::String(s.to_string()),
            Val::Bytes(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
            Val::Timestamp(micros) => Json::String(
                chrono::DateTime::from_timestamp_micros(*micros).map_or_else(
                    || micros.to_string(),
                    |t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                ),
            ),
            Val::Date(days) => Json::String(
                chrono::DateTime::from_timestamp(i64::from(*days) * 86_400, 0)
                    .map_or_else(|| days.to_string(), |t| t.format("%Y-%m-%d").to_string()),
            ),
            Val::Decimal {
                unscaled, scale, ..
            } => Json::String(decimal_text(*unscaled, (*scale).max(0) as u32)),
            Val::List(items) => Json::Array(items.iter().map(json).collect()),
        }
    }
}

/// The decimal text of `unscaled` × 10^-`scale`.
pub(crate) fn decimal_text(unscaled: i128, scale: u32) -> String {
    let negative = unscaled < 0;
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let mut text = String::with_capacity(digits.len() + 3);
    if negative {
        text.push('-');
    }
    if scale == 0 {
        text.push_str(&digits);
    } else if digits.len() > scale {
        text.push_str(&digits[..digits.len() - scale]);
        text.push('.');
        text.push_str(&digits[digits.len() - scale..]);
    } else {
        text.push_str("0.");
        text.extend(std::iter::repeat_n('0', scale - digits.len()));
        text.push_str(&digits);
    }
    text
}
