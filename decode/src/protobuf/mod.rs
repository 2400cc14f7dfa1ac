//! Protobuf binary messages decoded straight into flat rows.
//!
//! A [`Plan`] is compiled once per schema (a `.proto` file): one
//! [`MessagePlan`] per message type of the file, picked per record by the
//! message index its framing carries (see [`Indexing`]). Decoding walks the
//! wire format once, with no `DynamicMessage` and no value tree, and hands
//! each field's value to the batch builder as a column of the row.
//!
//! Flattening follows the Avro and JSON rules (nested messages join their
//! path with `_`, the configured explode path yields one row per element
//! with the envelope's columns on each, reserved names and collisions are
//! refused). Beyond those:
//!
//! * `int32`, `int64`, `uint32`, `sint*`, `fixed32` and `sfixed*` are longs;
//!   `uint64` and `fixed64` are `decimal(20,0)` (they do not fit a long);
//!   `float` and `double` doubles; `bool` booleans; `string` strings;
//!   `bytes` bytes; an enum is the name of its value (the number, as text,
//!   for a number the schema does not name);
//! * a field without presence (a proto3 field not marked `optional`) that is
//!   absent holds its default (0, `false`, `""`, the enum's first value)
//!   when its message is present; a field with presence (proto2, proto3
//!   `optional`, a `oneof` member) and an absent message are null;
//! * a `oneof` adds no column of its own: each member is a column, null
//!   unless it is the member that is set (the last one on the wire; an
//!   explode path inside a member yields its elements even when a later
//!   member replaces it, since elements are handed over as they are read);
//! * `google.protobuf.Timestamp` is a UTC timestamp (microseconds; finer
//!   digits are truncated), `google.protobuf.Duration` a long of
//!   microseconds, and the wrapper types (`Int64Value`, `StringValue`, ...)
//!   the value they wrap, null when absent;
//! * a repeated scalar or enum is a list column; a map, a repeated message
//!   off the explode path, and a message that contains itself are one
//!   string column holding the value as JSON text (field names as in the
//!   schema, bytes in base64);
//! * when a field occurs twice, the last value wins and messages merge, as
//!   the Protobuf specification says; unknown fields are skipped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use prost_reflect::{Cardinality, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};

use crate::Val;
use crate::avro::{
    Col, DecodeError, Decoded, FlattenRules, PlanColumns, PlanError, Sink, push_segment,
};

mod read;
mod text;

/// How a framing names the message type of a record within its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexing {
    /// Confluent: a zigzag varint count, then that many zigzag varint
    /// indexes (a path through top-level and nested messages); a count of
    /// 0 means the first message.
    Confluent,
    /// AWS Glue: one unsigned varint indexing every message type of the
    /// file, nested ones (and map entries) included, sorted by full name.
    Glue,
}

/// The compiled decoders of one `.proto` file's messages.
#[derive(Debug)]
pub struct Plan {
    /// Every message of the file, sorted by full name (Glue's order).
    messages: Vec<Compiled>,
    /// Confluent's index path of each message, to its place in `messages`.
    by_path: HashMap<Vec<i64>, usize>,
}

#[derive(Debug)]
struct Compiled {
    name: String,
    plan: Result<MessagePlan, PlanError>,
}

impl Plan {
    /// Compiles every message of `file`, flattened by `rules`. A message
    /// that cannot be flattened is an error only for records of that type.
    pub fn compile(file: &FileDescriptor, rules: &FlattenRules) -> Self {
        // Glue indexes every message type, map entries included; Confluent's
        // paths count the message types the `.proto` text declares.
        let mut found = Vec::new();
        let mut level: Vec<(Option<Vec<i64>>, MessageDescriptor)> = file
            .messages()
            .enumerate()
            .map(|(i, m)| (Some(vec![i as i64]), m))
            .collect();
        while !level.is_empty() {
            let mut next = Vec::new();
            for (path, message) in level {
                let mut declared = 0;
                for child in message.child_messages() {
                    let child_path = match &path {
                        Some(path) if !child.is_map_entry() => {
                            declared += 1;
                            Some([path.as_slice(), &[declared - 1]].concat())
                        }
                        _ => None,
                    };
                    next.push((child_path, child));
                }
                found.push((path, message));
            }
            level = next;
        }
        found.sort_by(|a, b| a.1.full_name().cmp(b.1.full_name()));
        let by_path = found
            .iter()
            .enumerate()
            .filter_map(|(i, (path, _))| Some((path.clone()?, i)))
            .collect();
        let messages = found
            .into_iter()
            .map(|(_, message)| Compiled {
                name: message.full_name().to_string(),
                plan: MessagePlan::compile(&message, rules),
            })
            .collect();
        Self { messages, by_path }
    }

    /// The message plan `payload`'s index prefix names, and the message's
    /// bytes after it.
    pub fn message<'d>(
        &self,
        indexing: Indexing,
        payload: &'d [u8],
    ) -> Result<(&MessagePlan, &'d [u8]), DecodeError> {
        let mut reader = read::Wire::new(payload);
        let at = match indexing {
            Indexing::Glue => {
                let index = reader.varint()?;
                usize::try_from(index)
                    .ok()
                    .filter(|i| *i < self.messages.len())
                    .ok_or_else(|| {
                        reader.invalid(format!(
                            "message index {index}, but the schema has {} message types",
                            self.messages.len()
                        ))
                    })?
            }
            Indexing::Confluent => {
                let count = reader.zigzag()?;
                let path = if count == 0 {
                    vec![0]
                } else {
                    if !(1..=64).contains(&count) {
                        return Err(reader.invalid(format!("message index count {count}")));
                    }
                    (0..count)
                        .map(|_| reader.zigzag())
                        .collect::<Result<Vec<_>, _>>()?
                };
                *self.by_path.get(&path).ok_or_else(|| {
                    reader.invalid(format!("message index {path:?} names no message type"))
                })?
            }
        };
        let compiled = &self.messages[at];
        let plan = compiled.plan.as_ref().map_err(|e| DecodeError::Invalid {
            at: 0,
            what: format!("message type `{}` cannot be flattened: {e}", compiled.name),
        })?;
        Ok((plan, reader.rest()))
    }
}

/// The compiled decoder of one message type.
#[derive(Debug)]
pub struct MessagePlan {
    columns: Vec<Arc<str>>,
    root: Node,
    /// The field of each column rendered as JSON text.
    texts: HashMap<Col, FieldDescriptor>,
}

/// The fields of a message, by field number.
#[derive(Debug)]
struct Node {
    /// Sorted by field number.
    fields: Vec<(u32, Field)>,
    /// For each member of a `oneof` (sorted by field number), the columns
    /// of the other members, emptied when it is read: the last member on
    /// the wire is the one that is set.
    oneof_others: Vec<(u32, Box<[Col]>)>,
}

impl Node {
    fn field(&self, number: u32) -> Option<&Field> {
        self.fields
            .binary_search_by_key(&number, |(n, _)| *n)
            .ok()
            .map(|i| &self.fields[i].1)
    }

    /// The columns reading field `number` empties (see `oneof_others`).
    fn oneof_others(&self, number: u32) -> &[Col] {
        match self.oneof_others.binary_search_by_key(&number, |(n, _)| *n) {
            Ok(i) => &self.oneof_others[i].1,
            Err(_) => &[],
        }
    }
}

/// How one field is read.
#[derive(Debug)]
enum Field {
    /// A scalar; `default` is what an absent field holds when the field has
    /// no presence.
    Scalar {
        col: Col,
        kind: Scalar,
        default: Option<Val<'static>>,
    },
    /// A repeated scalar: a list column.
    List { col: Col, kind: Scalar },
    /// A nested message, flattened.
    Message(Box<Node>),
    /// A well-known message type read as one value.
    Known { col: Col, known: Known },
    /// The repeated message (or scalar) the explode path names.
    Explode(Box<Element>),
    /// A value rendered as JSON text: a map, a repeated message, a
    /// recursive message.
    Text { col: Col },
}

impl Field {
    /// The envelope columns this field's values go to (an explode path's
    /// go to elements, handed over as they are read).
    fn columns(&self, out: &mut Vec<Col>) {
        match self {
            Field::Scalar { col, .. }
            | Field::List { col, .. }
            | Field::Known { col, .. }
            | Field::Text { col } => out.push(*col),
            Field::Message(node) => {
                for (_, field) in &node.fields {
                    field.columns(out);
                }
            }
            Field::Explode(_) => {}
        }
    }
}

/// What one element of the explode path is.
#[derive(Debug)]
enum Element {
    Message(Node),
    Scalar(Col, Scalar),
}

/// A scalar type, as the wire holds it.
#[derive(Debug, Clone)]
enum Scalar {
    Double,
    Float,
    /// `int32`, `int64`, `uint32`: a varint read as a signed long (`int32`
    /// sign-extended, `uint32` zero-extended, as the encoder wrote them).
    Int {
        bits32: bool,
        unsigned: bool,
    },
    /// `uint64`: a varint as `decimal(20,0)`.
    UInt64,
    /// `sint32`, `sint64`: a zigzag varint (`sint32` of the varint's low
    /// 32 bits, as the specification says).
    SInt {
        bits32: bool,
    },
    Fixed32,
    Fixed64,
    SFixed32,
    SFixed64,
    Bool,
    String,
    Bytes,
    /// Value names by number.
    Enum(Arc<HashMap<i32, Arc<str>>>),
}

/// Well-known types read as one value.
#[derive(Debug, Clone)]
enum Known {
    Timestamp,
    Duration,
    /// A wrapper type (`Int64Value`, ...): its field 1.
    Wrapper(Scalar),
}

struct Compiler<'r> {
    rules: &'r FlattenRules,
    columns: PlanColumns,
    /// Message types being compiled (a message met again is recursive).
    stack: Vec<String>,
    texts: HashMap<Col, FieldDescriptor>,
}

impl MessagePlan {
    fn compile(message: &MessageDescriptor, rules: &FlattenRules) -> Result<Self, PlanError> {
        let mut compiler = Compiler {
            rules,
            columns: PlanColumns::default(),
            stack: Vec::new(),
            texts: HashMap::new(),
        };
        let mut used = HashSet::new();
        let root = compiler.node(message, &mut String::new(), Some(0), &mut used)?;
        Ok(Self {
            columns: compiler.columns.finish(&used)?,
            root,
            texts: compiler.texts,
        })
    }

    /// Column names, indexed by [`Col`].
    pub fn columns(&self) -> &[Arc<str>] {
        &self.columns
    }

    /// Decodes one message's bytes (after its index prefix) into `out`
    /// (cleared first).
    pub fn decode(&self, data: &[u8], out: &mut Decoded) -> Result<(), DecodeError> {
        out.clear();
        self.decode_into(data, out)
    }

    /// Decodes one message's bytes (after its index prefix) into `sink`.
    /// On an error, values before it may have been handed over already.
    pub fn decode_into<'a>(
        &'a self,
        data: &'a [u8],
        sink: &mut impl Sink<'a>,
    ) -> Result<(), DecodeError> {
        read::decode(self, data, sink)
    }
}

impl Compiler<'_> {
    fn column(&mut self, path: &str, used: &mut HashSet<Col>) -> Result<Col, PlanError> {
        self.columns.claim(self.rules, path, used)
    }

    /// A field rendered as JSON text.
    fn text(
        &mut self,
        field: &FieldDescriptor,
        path: &str,
        used: &mut HashSet<Col>,
    ) -> Result<Field, PlanError> {
        let col = self.column(path, used)?;
        self.texts.insert(col, field.clone());
        Ok(Field::Text { col })
    }

    /// The fields of `message` under `path`. `explode_depth` is how much of
    /// the explode path leads here (`None` once off it).
    fn node(
        &mut self,
        message: &MessageDescriptor,
        path: &mut String,
        explode_depth: Option<usize>,
        used: &mut HashSet<Col>,
    ) -> Result<Node, PlanError> {
        self.stack.push(message.full_name().to_string());
        let mut fields = Vec::new();
        for field in message.fields() {
            let len = path.len();
            push_segment(path, field.name());
            let depth = explode_depth.and_then(|d| {
                (self.rules.explode.get(d).map(String::as_str) == Some(field.name()))
                    .then_some(d + 1)
            });
            let op = self.field(&field, path, depth, used);
            path.truncate(len);
            fields.push((field.number(), op?));
        }
        self.stack.pop();
        fields.sort_by_key(|(n, _)| *n);
        let mut oneof_others = Vec::new();
        for oneof in message.oneofs() {
            let members: Vec<(u32, Vec<Col>)> = oneof
                .fields()
                .map(|member| {
                    let mut columns = Vec::new();
                    if let Ok(i) = fields.binary_search_by_key(&member.number(), |(n, _)| *n) {
                        fields[i].1.columns(&mut columns);
                    }
                    (member.number(), columns)
                })
                .collect();
            for (number, _) in &members {
                let others: Box<[Col]> = members
                    .iter()
                    .filter(|(other, _)| other != number)
                    .flat_map(|(_, columns)| columns.iter().copied())
                    .collect();
                // A proto3 `optional` field is the one member of its oneof.
                if !others.is_empty() {
                    oneof_others.push((*number, others));
                }
            }
        }
        oneof_others.sort_by_key(|(n, _)| *n);
        Ok(Node {
            fields,
            oneof_others,
        })
    }

    fn field(
        &mut self,
        field: &FieldDescriptor,
        path: &mut String,
        explode_depth: Option<usize>,
        used: &mut HashSet<Col>,
    ) -> Result<Field, PlanError> {
        let at_explode =
            !self.rules.explode.is_empty() && explode_depth == Some(self.rules.explode.len());
        if at_explode && field.is_list() {
            let mut element_used = HashSet::new();
            let element = match field.kind() {
                Kind::Message(message) if known(&message).is_none() => {
                    Element::Message(self.node(&message, path, None, &mut element_used)?)
                }
                kind => match scalar(&kind) {
                    Some(scalar) => Element::Scalar(self.column(path, &mut element_used)?, scalar),
                    None => {
                        return Err(PlanError::Invalid(format!(
                            "the explode path `{path}` is a list of well-known messages"
                        )));
                    }
                },
            };
            self.columns.element.extend(element_used);
            return Ok(Field::Explode(Box::new(element)));
        }
        if field.is_map() || (field.is_list() && matches!(field.kind(), Kind::Message(_))) {
            return self.text(field, path, used);
        }
        let kind = field.kind();
        if let Kind::Message(message) = &kind {
            if let Some(known) = known(message) {
                return Ok(Field::Known {
                    col: self.column(path, used)?,
                    known,
                });
            }
            if self.stack.iter().any(|m| m == message.full_name()) {
                return self.text(field, path, used);
            }
            let node = self.node(message, path, explode_depth, used)?;
            return Ok(Field::Message(Box::new(node)));
        }
        let Some(scalar) = scalar(&kind) else {
            return Err(PlanError::Invalid(format!(
                "field `{path}` has no scalar type"
            )));
        };
        let col = self.column(path, used)?;
        if field.is_list() {
            return Ok(Field::List { col, kind: scalar });
        }
        let default = (!field.supports_presence() && field.cardinality() != Cardinality::Required)
            .then(|| scalar.default_value());
        Ok(Field::Scalar {
            col,
            kind: scalar,
            default,
        })
    }
}

/// The scalar a field kind is read as (`None` for messages).
fn scalar(kind: &Kind) -> Option<Scalar> {
    Some(match kind {
        Kind::Double => Scalar::Double,
        Kind::Float => Scalar::Float,
        Kind::Int32 => Scalar::Int {
            bits32: true,
            unsigned: false,
        },
        Kind::Int64 => Scalar::Int {
            bits32: false,
            unsigned: false,
        },
        Kind::Uint32 => Scalar::Int {
            bits32: true,
            unsigned: true,
        },
        Kind::Uint64 => Scalar::UInt64,
        Kind::Sint32 => Scalar::SInt { bits32: true },
        Kind::Sint64 => Scalar::SInt { bits32: false },
        Kind::Fixed32 => Scalar::Fixed32,
        Kind::Fixed64 => Scalar::Fixed64,
        Kind::Sfixed32 => Scalar::SFixed32,
        Kind::Sfixed64 => Scalar::SFixed64,
        Kind::Bool => Scalar::Bool,
        Kind::String => Scalar::String,
        Kind::Bytes => Scalar::Bytes,
        Kind::Enum(e) => Scalar::Enum(Arc::new(
            e.values()
                .map(|v| (v.number(), Arc::from(v.name())))
                .collect(),
        )),
        Kind::Message(_) => return None,
    })
}

/// The well-known type `message` is read as, if it is one.
fn known(message: &MessageDescriptor) -> Option<Known> {
    let wrapped = |kind| Some(Known::Wrapper(scalar(&kind)?));
    match message.full_name() {
        "google.protobuf.Timestamp" => Some(Known::Timestamp),
        "google.protobuf.Duration" => Some(Known::Duration),
        "google.protobuf.DoubleValue" => wrapped(Kind::Double),
        "google.protobuf.FloatValue" => wrapped(Kind::Float),
        "google.protobuf.Int64Value" => wrapped(Kind::Int64),
        "google.protobuf.UInt64Value" => wrapped(Kind::Uint64),
        "google.protobuf.Int32Value" => wrapped(Kind::Int32),
        "google.protobuf.UInt32Value" => wrapped(Kind::Uint32),
        "google.protobuf.BoolValue" => wrapped(Kind::Bool),
        "google.protobuf.StringValue" => wrapped(Kind::String),
        "google.protobuf.BytesValue" => wrapped(Kind::Bytes),
        _ => None,
    }
}

impl Scalar {
    /// The value of an absent field without presence.
    fn default_value(&self) -> Val<'static> {
        match self {
            Scalar::Double | Scalar::Float => Val::Double(0.0),
            Scalar::UInt64 | Scalar::Fixed64 => read::unsigned(0),
            Scalar::Bool => Val::Bool(false),
            Scalar::String => Val::Str("".into()),
            Scalar::Bytes => Val::Bytes(Vec::new().into()),
            Scalar::Enum(names) => match names.get(&0) {
                Some(name) => Val::Str(name.to_string().into()),
                None => Val::Str("0".into()),
            },
            _ => Val::Long(0),
        }
    }
}

#[cfg(test)]
mod tests;
