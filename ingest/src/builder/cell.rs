//! One value as a decoder hands it to the builder.

use std::borrow::Cow;

use tributary_lake::rowfile::ColumnType;
use tributary_schema_registry::avro::decimal_text;

use super::MICROS_PER_DAY;

/// One value as a decoder hands it over: the Avro plan's value type, which
/// borrows text and bytes from the message where it can; the JSON flattener
/// and the sources' metadata columns make the same.
pub use tributary_schema_registry::avro::Val as Cell;

/// What the builder asks of a cell.
pub(crate) trait CellExt {
    /// The cell's type; `None` for null and for a list of nulls only, which
    /// fit any column.
    fn column_type(&self) -> Option<ColumnType>;
    /// A short name of the cell's kind, for error messages.
    fn kind(&self) -> &'static str;
    /// The cell as JSON text: what it becomes in a `string` column (text
    /// stays as it is).
    fn text(&self) -> Cow<'_, str>;
}

impl CellExt for Cell<'_> {
    fn column_type(&self) -> Option<ColumnType> {
        Some(match self {
            Cell::Null => return None,
            Cell::Bool(_) => ColumnType::Boolean,
            Cell::Long(_) => ColumnType::Long,
            Cell::Double(_) => ColumnType::Double,
            Cell::Str(_) => ColumnType::String,
            Cell::Bytes(_) => ColumnType::Bytes,
            Cell::Timestamp(_) => ColumnType::Timestamp,
            Cell::Date(_) => ColumnType::Date,
            Cell::Decimal {
                precision, scale, ..
            } => ColumnType::Decimal(*precision, *scale),
            Cell::List(items) => ColumnType::List(Box::new(
                items
                    .iter()
                    .filter_map(Cell::column_type)
                    .reduce(|a, b| a.widen(&b))?,
            )),
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            Cell::Null => "null",
            Cell::Bool(_) => "a boolean",
            Cell::Long(_) => "an integer",
            Cell::Double(_) => "a float",
            Cell::Str(_) => "a string",
            Cell::Bytes(_) => "bytes",
            Cell::Timestamp(_) => "a timestamp",
            Cell::Date(_) => "a date",
            Cell::Decimal { .. } => "a decimal",
            Cell::List(_) => "a list",
        }
    }

    fn text(&self) -> Cow<'_, str> {
        match self {
            Cell::Str(s) => Cow::Borrowed(s),
            other => Cow::Owned(match json(other) {
                serde_json::Value::String(s) => s,
                json => json.to_string(),
            }),
        }
    }
}

/// The cell as a JSON value (timestamps RFC 3339, dates `YYYY-MM-DD`,
/// decimals their digits, all as strings).
fn json(cell: &Cell<'_>) -> serde_json::Value {
    use serde_json::Value as Json;
    {
        match cell {
            Cell::Null => Json::Null,
            Cell::Bool(b) => Json::Bool(*b),
            Cell::Long(l) => Json::from(*l),
            Cell::Double(d) => Json::from(*d),
            Cell::Str(s) => Json::String(s.to_string()),
            Cell::Bytes(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
            Cell::Timestamp(micros) => Json::String(
                chrono::DateTime::from_timestamp_micros(*micros).map_or_else(
                    || micros.to_string(),
                    |t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                ),
            ),
            Cell::Date(days) => Json::String(
                chrono::DateTime::from_timestamp(i64::from(*days) * 86_400, 0)
                    .map_or_else(|| days.to_string(), |t| t.format("%Y-%m-%d").to_string()),
            ),
            Cell::Decimal {
                unscaled, scale, ..
            } => Json::String(decimal_text(*unscaled, (*scale).max(0) as u32)),
            Cell::List(items) => Json::Array(items.iter().map(json).collect()),
        }
    }
}

/// An event time as a timestamp: RFC 3339 text, or milliseconds since the
/// Unix epoch as a number (a timestamp stays, a date is its midnight, null
/// stays null). Otherwise the kind of value it is.
pub(super) fn event_time<'a>(cell: Cell<'a>) -> Result<Cell<'a>, &'static str> {
    let micros = match &cell {
        Cell::Null | Cell::Timestamp(_) => return Ok(cell),
        Cell::Str(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_micros()),
        Cell::Long(ms) => ms.checked_mul(1_000),
        Cell::Double(ms) if ms.is_finite() && ms.abs() < 9.2e15 => Some((ms * 1_000.0) as i64),
        Cell::Date(days) => i64::from(*days).checked_mul(MICROS_PER_DAY),
        _ => None,
    };
    micros.map(Cell::Timestamp).ok_or(cell.kind())
}
