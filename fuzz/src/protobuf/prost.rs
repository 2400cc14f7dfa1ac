//! The differential check: prost-reflect's `DynamicMessage`, flattened here
//! by the decoder's rules, against the decoder's values.

use std::collections::BTreeMap;

use tributary_decode::Val;
use tributary_decode::avro::{Col, Decoded};
use tributary_decode::prost_reflect::{
    DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value,
};
use tributary_decode::protobuf::MessagePlan;

use super::Case;
use crate::decoded::same;

/// What a column holds, as flattened here from a `DynamicMessage`.
#[derive(Debug)]
enum Expect {
    /// This value.
    Val(Val<'static>),
    /// A value rendered as JSON text (by prost-reflect in the decoder too,
    /// so only its presence is compared).
    Text,
}

type Row = BTreeMap<String, Expect>;

/// The message the decoder accepted: prost-reflect accepts it too, and its
/// fields, flattened by the decoder's rules ([`flatten`]), are the
/// decoder's values. The one exception: prost counts nesting (messages and
/// groups) from the top against a limit of 100, while the decoder reads a
/// field rendered as JSON text with a fresh count and skips groups up to 64
/// deep in each message, so prost may refuse a message that nests that deep.
/// (A `DynamicMessage` is not printed: its `Debug` prints descriptors, and
/// those of a recursive message without end.)
pub(super) fn check_prost(
    case: &Case,
    descriptor: &MessageDescriptor,
    message: &MessagePlan,
    bytes: &[u8],
    out: &Decoded,
) {
    let dynamic = match DynamicMessage::decode(descriptor.clone(), bytes) {
        Ok(dynamic) => dynamic,
        Err(e) if e.to_string().contains("recursion limit reached") => return,
        Err(e) => panic!(
            "case {}: the decoder accepted a {} that prost-reflect refuses: {e}\n{out:?}",
            case.name,
            descriptor.full_name()
        ),
    };
    let mut envelope = Row::new();
    let mut elements = Vec::new();
    flatten(
        &dynamic,
        "",
        Some(0),
        case.explode,
        &mut Vec::new(),
        &mut envelope,
        &mut elements,
    );
    let named = |row: &[(Col, Val<'static>)]| -> BTreeMap<String, Val<'static>> {
        row.iter()
            .map(|(c, v)| (message.columns()[*c as usize].to_string(), v.clone()))
            .collect()
    };
    let agrees = |expected: &Row, row: &[(Col, Val<'static>)]| {
        let actual = named(row);
        expected.len() == actual.len()
            && expected.iter().zip(&actual).all(|((ek, e), (ak, a))| {
                ek == ak
                    && match e {
                        Expect::Val(e) => same(e, a),
                        Expect::Text => matches!(a, Val::Str(_)),
                    }
            })
    };
    assert!(
        agrees(&envelope, &out.envelope)
            && elements.len() == out.elements().len()
            && elements
                .iter()
                .zip(out.elements())
                .all(|(e, row)| agrees(e, row)),
        "case {}: the decoder's values of a {} differ from prost-reflect's\n\
         decoder: {:?}\n         {:?}\nprost-reflect: {envelope:?}\n               {elements:?}",
        case.name,
        descriptor.full_name(),
        named(&out.envelope),
        out.elements().iter().map(|e| named(e)).collect::<Vec<_>>(),
    );
}

/// Flattens `message` (present, at `path`) as the decoder's plans do: a
/// nested message's fields join its path with `_` (an absent one adds
/// nothing), a field without presence holds its default, one with
/// presence only when set, a repeated scalar is a list, the explode path
/// (`explode`, `depth` of it leading here) yields one element per item, a
/// map, a repeated message off the explode path and a message that
/// contains itself are JSON text, the well-known types one value.
fn flatten(
    message: &DynamicMessage,
    path: &str,
    depth: Option<usize>,
    explode: &[&str],
    stack: &mut Vec<String>,
    row: &mut Row,
    elements: &mut Vec<Row>,
) {
    let descriptor = message.descriptor();
    stack.push(descriptor.full_name().to_string());
    for field in descriptor.fields() {
        let path = if path.is_empty() {
            field.name().to_string()
        } else {
            format!("{path}_{}", field.name())
        };
        let depth = depth.and_then(|d| (explode.get(d) == Some(&field.name())).then_some(d + 1));
        let kind = field.kind();
        let value = message.get_field(&field);
        if !explode.is_empty() && depth == Some(explode.len()) && field.is_list() {
            for item in value.as_list().unwrap_or_default() {
                let mut element = Row::new();
                match item {
                    Value::Message(item) => flatten(
                        item,
                        &path,
                        None,
                        explode,
                        stack,
                        &mut element,
                        &mut Vec::new(),
                    ),
                    item => {
                        element.insert(path.clone(), Expect::Val(scalar(item, &kind)));
                    }
                }
                elements.push(element);
            }
            continue;
        }
        if field.is_map() || (field.is_list() && kind.as_message().is_some()) {
            if message.has_field(&field) {
                row.insert(path, Expect::Text);
            }
            continue;
        }
        if let Kind::Message(nested) = &kind {
            let Some(value) = value.as_message().filter(|_| message.has_field(&field)) else {
                continue;
            };
            if let Some(known) = known(nested, value) {
                row.insert(path, Expect::Val(known));
            } else if stack.iter().any(|m| m == nested.full_name()) {
                row.insert(path, Expect::Text);
            } else {
                flatten(value, &path, depth, explode, stack, row, elements);
            }
            continue;
        }
        if let Some(items) = value.as_list() {
            let items = items.iter().map(|item| scalar(item, &kind)).collect();
            row.insert(path, Expect::Val(Val::List(items)));
        } else if !field.supports_presence() || message.has_field(&field) {
            row.insert(path, Expect::Val(scalar(&value, &kind)));
        }
    }
    stack.pop();
}

/// A scalar as the decoder reads it.
fn scalar(value: &Value, kind: &Kind) -> Val<'static> {
    match value {
        Value::Bool(b) => Val::Bool(*b),
        Value::I32(n) => Val::Long(i64::from(*n)),
        Value::I64(n) => Val::Long(*n),
        Value::U32(n) => Val::Long(i64::from(*n)),
        Value::U64(n) => Val::Decimal {
            unscaled: i128::from(*n),
            precision: 20,
            scale: 0,
        },
        Value::F32(f) => Val::Double(f64::from(*f)),
        Value::F64(f) => Val::Double(*f),
        Value::String(s) => Val::Str(s.clone().into()),
        Value::Bytes(b) => Val::Bytes(b.to_vec().into()),
        Value::EnumNumber(n) => Val::Str(
            match kind.as_enum().and_then(|e| e.get_value(*n)) {
                Some(value) => value.name().to_string(),
                None => n.to_string(),
            }
            .into(),
        ),
        other => panic!("{other:?} is not a scalar"),
    }
}

/// A well-known type's value: a timestamp or a duration in microseconds,
/// a wrapper's value.
fn known(descriptor: &MessageDescriptor, value: &DynamicMessage) -> Option<Val<'static>> {
    let field = |name: &str| match value.get_field_by_name(name) {
        Some(value) => value.into_owned(),
        None => panic!("{} has no field {name}", descriptor.full_name()),
    };
    let micros = || {
        let (Value::I64(seconds), Value::I32(nanos)) = (field("seconds"), field("nanos")) else {
            panic!("seconds and nanos of {}", descriptor.full_name());
        };
        match seconds
            .checked_mul(1_000_000)
            .and_then(|m| m.checked_add(i64::from(nanos) / 1_000))
        {
            Some(micros) => micros,
            None => panic!("the decoder accepted {seconds} seconds, out of range"),
        }
    };
    Some(match descriptor.full_name() {
        "google.protobuf.Timestamp" => Val::Timestamp(micros()),
        "google.protobuf.Duration" => Val::Long(micros()),
        name if name.starts_with("google.protobuf.") && name.ends_with("Value") => {
            let kind = value.descriptor().get_field_by_name("value")?.kind();
            scalar(&field("value"), &kind)
        }
        _ => return None,
    })
}
