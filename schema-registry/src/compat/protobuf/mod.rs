//! Protobuf's compatibility rules, as Confluent Schema Registry applies them.
//!
//! Confluent compares two `.proto` files element by element, records every
//! difference, and calls a change compatible when each difference is in its
//! set of compatible changes. This module walks two [`FileDescriptor`]s the
//! same way and reports only the differences outside that set:
//!
//! | change                                          | verdict                                    |
//! |-------------------------------------------------|--------------------------------------------|
//! | package changed                                 | problem                                    |
//! | syntax changed (proto2 ↔ proto3)                | fine; its effects (`required`) are checked |
//! | message removed (map entries aside)             | problem                                    |
//! | message added, moved or reordered               | fine                                       |
//! | enum added or removed                           | fine                                       |
//! | enum constant added, removed or renamed         | fine                                       |
//! | field (by number) added, removed or renamed     | fine                                       |
//! | `required` field added or removed               | problem                                    |
//! | field becomes or stops being `required`         | problem (stricter, see below)              |
//! | scalar type changed within a wire group         | fine                                       |
//! | scalar type changed across groups               | problem                                    |
//! | scalar ↔ message ↔ map                          | problem                                    |
//! | message type renamed (name without package)     | problem                                    |
//! | imported message type changed incompatibly      | problem                                    |
//! | number or enum: singular ↔ repeated             | problem (also when implicit, see below)    |
//! | string, bytes or message: singular ↔ repeated   | fine                                       |
//! | oneof added, removed or renamed                 | fine                                       |
//! | field added to a oneof, or moved out of one     | fine                                       |
//! | field removed from a oneof, others kept         | problem                                    |
//! | fields that could be set together share a oneof | problem                                    |
//! | map key or value type changed                   | as for a field of that type                |
//!
//! The wire groups ([`ScalarGroup`]) are Confluent's: `int32`, `uint32`,
//! `int64`, `uint64`, `bool` and enums; `sint32`, `sint64`; `fixed32`,
//! `sfixed32`; `fixed64`, `sfixed64`; `string`, `bytes`; `float`; `double`.
//!
//! Where this module departs from Confluent, it is stricter. Confluent
//! compares labels only when both fields spell one out, so a proto3 field
//! without a label that becomes `repeated` passes there, although packed
//! numbers cannot be read as a single number; here implicit and explicit
//! `optional` are both "singular". And a field that becomes (or stops being)
//! `required` is a problem here whatever its type, as adding or removing a
//! `required` field is (Confluent lets `string`, `bytes` and message fields
//! change it).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost_reflect::{
    Cardinality, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor, OneofDescriptor,
};

#[cfg(test)]
mod tests;

/// Why data written with `writer` (the schema the bytes were encoded with)
/// may not be readable with `reader` (the schema decoding them); empty when
/// it always is.
///
/// This is Confluent's BACKWARD check with `writer` as the original (older)
/// schema and `reader` as the update: FORWARD is the same call with the two
/// swapped. Elements are matched as Confluent matches them: messages and
/// oneofs by name within their parent, fields by number. Each problem names
/// its element by the writer's full name, e.g. `message .shop.Order field 3
/// ("price"): type changed from int64 to string`.
pub(super) fn reading_problems(writer: &FileDescriptor, reader: &FileDescriptor) -> Vec<String> {
    let mut diff = FileDiff {
        writer: writer.clone(),
        reader: reader.clone(),
        imported: HashMap::new(),
        problems: Vec::new(),
    };
    if writer.package_name() != reader.package_name() {
        diff.problems.push(format!(
            "package changed from {} to {}",
            package(writer),
            package(reader)
        ));
    }
    diff.messages(writer.messages(), reader.messages());
    diff.problems
}

/// The comparison of one writer's file with one reader's, and what it found.
struct FileDiff {
    /// The file data was written with.
    writer: FileDescriptor,
    /// The file reading it.
    reader: FileDescriptor,
    /// Imported message types compared so far, by (writer's, reader's) full
    /// name: whether the reader's reads the writer's. A pair still being
    /// compared counts as compatible, so that recursive types end.
    imported: HashMap<(String, String), bool>,
    /// One line per problem.
    problems: Vec<String>,
}

/// How a field's values are encoded, as far as compatibility goes.
enum Shape {
    /// A scalar or an enum.
    Scalar(ScalarGroup),
    /// A message (or group).
    Message(MessageDescriptor),
    /// A map, by its entry type.
    Map(MessageDescriptor),
}

/// Scalar types whose values read as one another (Confluent's grouping,
/// after protobuf's "updating a message type" guide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScalarGroup {
    /// Varints: `int32`, `uint32`, `int64`, `uint64`, `bool`, enums.
    Varint,
    /// Zigzag varints: `sint32`, `sint64`.
    Zigzag,
    /// `fixed32`, `sfixed32`.
    Fixed32,
    /// `fixed64`, `sfixed64`.
    Fixed64,
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// `string`, `bytes`.
    StringOrBytes,
}

/// A field's label, with proto3's implicit one counted as singular.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    /// At most once (`optional`, or no label in proto3).
    Singular,
    /// Exactly once (proto2 `required`).
    Required,
    /// Any number of times (`repeated`, maps).
    Repeated,
}

impl FileDiff {
    /// Compares messages matched by name (map entries are compared as the
    /// maps they stand for); messages only the reader has are fine.
    fn messages(
        &mut self,
        writer: impl Iterator<Item = MessageDescriptor>,
        reader: impl Iterator<Item = MessageDescriptor>,
    ) {
        let reader: HashMap<String, MessageDescriptor> = reader
            .map(|message| (message.name().to_owned(), message))
            .collect();
        for written in writer.filter(|message| !message.is_map_entry()) {
            match reader.get(written.name()) {
                Some(read) => self.message(&written, read),
                None => self.problems.push(format!(
                    "message .{}: removed (the reader's schema has no message of that name)",
                    written.full_name()
                )),
            }
        }
    }

    /// Compares two messages of one name: their oneofs, their fields by
    /// number, then their nested messages. (Enums need no comparison: every
    /// change to an enum is compatible, and a field of enum type is compared
    /// as a varint.)
    fn message(&mut self, writer: &MessageDescriptor, reader: &MessageDescriptor) {
        let at = format!("message .{}", writer.full_name());
        let written: BTreeMap<u32, FieldDescriptor> = writer
            .fields()
            .map(|field| (field.number(), field))
            .collect();
        let read: BTreeMap<u32, FieldDescriptor> = reader
            .fields()
            .map(|field| (field.number(), field))
            .collect();

        // A oneof gone by name none of whose members survive was deleted
        // whole, which is fine; its members are not reported one by one.
        let reader_oneofs: BTreeSet<String> =
            real_oneofs(reader).map(|o| o.name().into()).collect();
        let deleted: BTreeSet<String> = real_oneofs(writer)
            .filter(|oneof| {
                !reader_oneofs.contains(oneof.name())
                    && oneof
                        .fields()
                        .all(|field| !read.contains_key(&field.number()))
            })
            .map(|oneof| oneof.name().to_owned())
            .collect();

        for oneof in real_oneofs(reader) {
            self.oneof_exclusivity(&at, &oneof, &written);
        }

        let numbers: BTreeSet<u32> = written.keys().chain(read.keys()).copied().collect();
        for number in numbers {
            match (written.get(&number), read.get(&number)) {
                (Some(w), None) => match real_oneof(w) {
                    Some(oneof) if !deleted.contains(oneof.name()) => {
                        self.problems.push(format!(
                            "{at} field {number} (\"{}\"): removed from oneof \"{}\", so data \
                             that set it reads as if no member were set",
                            w.name(),
                            oneof.name()
                        ));
                    }
                    Some(_) => {}
                    None if w.is_required() => self.problems.push(format!(
                        "{at} field {number} (\"{}\"): a required field was removed",
                        w.name()
                    )),
                    None => {}
                },
                (None, Some(r)) if r.is_required() => self.problems.push(format!(
                    "{at} field {number} (\"{}\"): a required field was added, which data \
                     written without it lacks",
                    r.name()
                )),
                (Some(w), Some(r)) => {
                    self.field(&format!("{at} field {number} (\"{}\")", w.name()), w, r)
                }
                _ => {}
            }
        }

        self.messages(writer.child_messages(), reader.child_messages());
    }

    /// Reports a reader's oneof holding fields the writer let be set
    /// together: members of different writer oneofs, or of a writer oneof and
    /// a plain field, or several plain fields. (Members new to the reader are
    /// fine: no data sets them.)
    fn oneof_exclusivity(
        &mut self,
        at: &str,
        oneof: &OneofDescriptor,
        written: &BTreeMap<u32, FieldDescriptor>,
    ) {
        let mut origins = BTreeSet::new();
        let mut members = Vec::new();
        for field in oneof.fields() {
            let Some(before) = written.get(&field.number()) else {
                continue;
            };
            origins.insert(match real_oneof(before) {
                Some(was) => format!("oneof {}", was.name()),
                None => format!("field {}", before.number()),
            });
            members.push(format!("{} (\"{}\")", before.number(), before.name()));
        }
        if origins.len() > 1 {
            self.problems.push(format!(
                "{at} oneof \"{}\": fields {} could be set together in the writer's schema \
                 but exclude one another in the reader's",
                oneof.name(),
                members.join(", ")
            ));
        }
    }

    /// Compares a field present (by number) in both schemas.
    fn field(&mut self, at: &str, writer: &FieldDescriptor, reader: &FieldDescriptor) {
        let labels = (label(writer), label(reader));
        if (labels.0 == Label::Required) != (labels.1 == Label::Required) {
            self.problems.push(format!(
                "{at}: label changed from {} to {}",
                label_name(labels.0),
                label_name(labels.1)
            ));
            self.value(at, "", writer, reader, None);
        } else {
            self.value(at, "", writer, reader, Some(labels));
        }
    }

    /// Compares the values a field (or a map's key or value, `role`) holds;
    /// `labels`, when given, are compared for scalars.
    fn value(
        &mut self,
        at: &str,
        role: &str,
        writer: &FieldDescriptor,
        reader: &FieldDescriptor,
        labels: Option<(Label, Label)>,
    ) {
        let changed = format!(
            "{at}: {role}type changed from {} to {}",
            type_name(writer),
            type_name(reader)
        );
        match (shape(writer), shape(reader)) {
            (Shape::Scalar(w), Shape::Scalar(r)) if w != r => {
                self.problems
                    .push(format!("{changed}, which do not share a wire encoding"));
            }
            (Shape::Scalar(group), Shape::Scalar(_)) => {
                if let Some((w, r)) = labels
                    && w != r
                    && group != ScalarGroup::StringOrBytes
                {
                    self.problems.push(format!(
                        "{at}: label changed from {} to {}, which changes how a number is encoded",
                        label_name(w),
                        label_name(r)
                    ));
                }
            }
            (Shape::Message(w), Shape::Message(r)) => {
                if local_name(&w) != local_name(&r) {
                    self.problems
                        .push(format!("{changed} (message types are matched by name)"));
                } else if !self.imported_compatible(&w, &r) {
                    self.problems.push(format!(
                        "{at}: {role}type .{} is read as .{}, which cannot read it (see the \
                         problems of message .{0})",
                        w.full_name(),
                        r.full_name()
                    ));
                }
            }
            (Shape::Map(w), Shape::Map(r)) => {
                let (wk, rk) = (w.map_entry_key_field(), r.map_entry_key_field());
                self.value(at, "map key ", &wk, &rk, None);
                let (wv, rv) = (w.map_entry_value_field(), r.map_entry_value_field());
                self.value(at, "map value ", &wv, &rv, None);
            }
            (w, r) => self.problems.push(format!(
                "{changed}: a {} cannot be read as a {}",
                w.kind(),
                r.kind()
            )),
        }
    }

    /// Whether `reader` reads `writer`, two message types of one name, when
    /// either comes from an imported file (as Confluent compares types from
    /// other schemas). Types declared in the two files compared are compared
    /// where they are declared, so are taken as compatible here.
    fn imported_compatible(
        &mut self,
        writer: &MessageDescriptor,
        reader: &MessageDescriptor,
    ) -> bool {
        if writer.parent_file().name() == self.writer.name()
            && reader.parent_file().name() == self.reader.name()
        {
            return true;
        }
        let pair = (writer.full_name().to_owned(), reader.full_name().to_owned());
        if let Some(&compatible) = self.imported.get(&pair) {
            return compatible;
        }
        self.imported.insert(pair.clone(), true);
        let before = self.problems.len();
        self.message(writer, reader);
        let compatible = self.problems.len() == before;
        self.imported.insert(pair, compatible);
        compatible
    }
}

impl Shape {
    /// The shape's name in messages.
    fn kind(&self) -> &'static str {
        match self {
            Shape::Scalar(_) => "scalar",
            Shape::Message(_) => "message",
            Shape::Map(_) => "map",
        }
    }
}

/// How `field`'s values are encoded.
fn shape(field: &FieldDescriptor) -> Shape {
    let group = match field.kind() {
        Kind::Message(entry) if field.is_map() => return Shape::Map(entry),
        Kind::Message(message) => return Shape::Message(message),
        Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 | Kind::Bool | Kind::Enum(_) => {
            ScalarGroup::Varint
        }
        Kind::Sint32 | Kind::Sint64 => ScalarGroup::Zigzag,
        Kind::Fixed32 | Kind::Sfixed32 => ScalarGroup::Fixed32,
        Kind::Fixed64 | Kind::Sfixed64 => ScalarGroup::Fixed64,
        Kind::Float => ScalarGroup::Float,
        Kind::Double => ScalarGroup::Double,
        Kind::String | Kind::Bytes => ScalarGroup::StringOrBytes,
    };
    Shape::Scalar(group)
}

/// `field`'s type as a `.proto` file spells it (named types in full).
fn type_name(field: &FieldDescriptor) -> String {
    let name = match field.kind() {
        Kind::Message(entry) if field.is_map() => {
            return format!(
                "map<{}, {}>",
                type_name(&entry.map_entry_key_field()),
                type_name(&entry.map_entry_value_field())
            );
        }
        Kind::Message(message) => return format!(".{}", message.full_name()),
        Kind::Enum(enumeration) => return format!(".{}", enumeration.full_name()),
        Kind::Double => "double",
        Kind::Float => "float",
        Kind::Int32 => "int32",
        Kind::Int64 => "int64",
        Kind::Uint32 => "uint32",
        Kind::Uint64 => "uint64",
        Kind::Sint32 => "sint32",
        Kind::Sint64 => "sint64",
        Kind::Fixed32 => "fixed32",
        Kind::Fixed64 => "fixed64",
        Kind::Sfixed32 => "sfixed32",
        Kind::Sfixed64 => "sfixed64",
        Kind::Bool => "bool",
        Kind::String => "string",
        Kind::Bytes => "bytes",
    };
    name.to_owned()
}

/// `field`'s label.
fn label(field: &FieldDescriptor) -> Label {
    match field.cardinality() {
        Cardinality::Optional => Label::Singular,
        Cardinality::Required => Label::Required,
        Cardinality::Repeated => Label::Repeated,
    }
}

/// A label's name in messages.
fn label_name(label: Label) -> &'static str {
    match label {
        Label::Singular => "singular",
        Label::Required => "required",
        Label::Repeated => "repeated",
    }
}

/// `message`'s oneofs as written: not the synthetic ones proto3 wraps each
/// `optional` field in.
fn real_oneofs(message: &MessageDescriptor) -> impl Iterator<Item = OneofDescriptor> + '_ {
    message.oneofs().filter(|oneof| !oneof.is_synthetic())
}

/// The oneof `field` was written in, if any (not a synthetic one).
fn real_oneof(field: &FieldDescriptor) -> Option<OneofDescriptor> {
    field
        .containing_oneof()
        .filter(|oneof| !oneof.is_synthetic())
}

/// `message`'s full name without its package, which Confluent compares named
/// types by (a package change is reported once, for the file).
fn local_name(message: &MessageDescriptor) -> &str {
    let package = message.package_name();
    if package.is_empty() {
        return message.full_name();
    }
    message
        .full_name()
        .strip_prefix(package)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(message.full_name())
}

/// A file's package for messages.
fn package(file: &FileDescriptor) -> String {
    match file.package_name() {
        "" => "(none)".to_owned(),
        name => format!("\"{name}\""),
    }
}
