//! Fields rendered as JSON text (maps, repeated messages, recursive
//! messages): decoded with `prost-reflect`'s dynamic messages, which is slow
//! but only these fields take this path.

use base64::Engine;
use prost::Message;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};
use serde_json::{Map, Value as Json};

use crate::avro::DecodeError;

/// The occurrences of `field` in one record, as JSON text: an object for a
/// map, an array for a repeated message, an object for a message (its
/// occurrences merged).
pub(super) fn render(
    field: &FieldDescriptor,
    occurrences: &[&[u8]],
) -> Result<String, DecodeError> {
    let Kind::Message(message) = field.kind() else {
        return Err(invalid(format!(
            "field `{}` is not a message",
            field.name()
        )));
    };
    let json = if field.is_map() {
        let (key_field, value_field) = (
            message.map_entry_key_field(),
            message.map_entry_value_field(),
        );
        let mut object = Map::new();
        for bytes in occurrences {
            let entry = decode(&message, &[bytes])?;
            let key = match entry.get_field(&key_field).as_ref() {
                Value::String(s) => s.clone(),
                other => json(other, &key_field.kind()).to_string(),
            };
            let value = json(entry.get_field(&value_field).as_ref(), &value_field.kind());
            object.insert(key, value);
        }
        Json::Object(object)
    } else if field.is_list() {
        let items = occurrences
            .iter()
            .map(|bytes| Ok(message_json(&decode(&message, &[bytes])?)))
            .collect::<Result<Vec<_>, DecodeError>>()?;
        Json::Array(items)
    } else {
        message_json(&decode(&message, occurrences)?)
    };
    Ok(json.to_string())
}

fn invalid(what: String) -> DecodeError {
    DecodeError::Invalid { at: 0, what }
}

/// The occurrences of a message, merged.
fn decode(
    message: &MessageDescriptor,
    occurrences: &[&[u8]],
) -> Result<DynamicMessage, DecodeError> {
    let mut dynamic = DynamicMessage::new(message.clone());
    for bytes in occurrences {
        dynamic
            .merge(*bytes)
            .map_err(|e| invalid(format!("message `{}`: {e}", message.full_name())))?;
    }
    Ok(dynamic)
}

fn message_json(message: &DynamicMessage) -> Json {
    Json::Object(
        message
            .fields()
            .map(|(field, value)| (field.name().to_string(), json(value, &field.kind())))
            .collect(),
    )
}

fn json(value: &Value, kind: &Kind) -> Json {
    match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        Value::F32(f) => float(f64::from(*f)),
        Value::F64(f) => float(*f),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::EnumNumber(n) => match kind.as_enum().and_then(|e| e.get_value(*n)) {
            Some(value) => Json::String(value.name().to_string()),
            None => Json::from(*n),
        },
        Value::Message(m) => message_json(m),
        Value::List(items) => Json::Array(items.iter().map(|v| json(v, kind)).collect()),
        Value::Map(entries) => {
            let value_kind = match kind {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other.clone(),
            };
            Json::Object(
                entries
                    .iter()
                    .map(|(key, value)| (map_key(key), json(value, &value_kind)))
                    .collect(),
            )
        }
    }
}

/// A float as JSON: a number, or (like Protobuf's JSON mapping) `"NaN"`,
/// `"Infinity"` or `"-Infinity"`.
fn float(f: f64) -> Json {
    serde_json::Number::from_f64(f).map_or_else(
        || {
            Json::String(
                if f.is_nan() {
                    "NaN"
                } else if f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }
                .into(),
            )
        },
        Json::Number,
    )
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}
