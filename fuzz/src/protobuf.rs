//! The `protobuf` target: the first input byte picks a [`Case`] (a plan of
//! [`PROTO`] compiled with an explode path or none, and the message
//! indexing of a framing, Confluent or Glue); the rest is the payload as
//! that framing carries it: the message index, then the message.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use tributary_decode::Val;
use tributary_decode::avro::{Col, Decoded};
use tributary_decode::prost_reflect::prost::Message as _;
use tributary_decode::prost_reflect::{
    DescriptorPool, DynamicMessage, FileDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value,
};
use tributary_decode::protobuf::{Indexing, MessagePlan, Plan};

use crate::avro::rules;

/// Every scalar type, an enum, nested messages (one inside a `oneof`),
/// `optional` fields, maps, repeated fields packed and unpacked, messages
/// that contain themselves (directly and through another), the well-known
/// types the decoder reads as one value, explode paths (`items`, `codes`,
/// `inner.ids`), and the largest field number.
pub const PROTO: &str = r#"syntax = "proto3";
package fuzz;

import "google/protobuf/duration.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

enum Kind {
  KIND_UNSPECIFIED = 0;
  KIND_A = 1;
  KIND_B = 2;
}

message Event {
  double f_double = 1;
  float f_float = 2;
  int32 f_int32 = 3;
  int64 f_int64 = 4;
  uint32 f_uint32 = 5;
  uint64 f_uint64 = 6;
  sint32 f_sint32 = 7;
  sint64 f_sint64 = 8;
  fixed32 f_fixed32 = 9;
  fixed64 f_fixed64 = 10;
  sfixed32 f_sfixed32 = 11;
  sfixed64 f_sfixed64 = 12;
  bool f_bool = 13;
  string f_string = 14;
  bytes f_bytes = 15;
  Kind kind = 16;
  optional string note = 17;
  optional sint64 count = 18;
  Inner inner = 19;
  oneof choice {
    string text = 20;
    int64 number = 21;
    Inner detail = 22;
  }
  map<string, int32> counts = 23;
  map<int64, Inner> by_id = 24;
  repeated int64 packed = 25;
  repeated sint32 unpacked = 26 [packed = false];
  repeated double ratios = 27;
  repeated Kind kinds = 28;
  repeated string names = 29;
  repeated bytes blobs = 30;
  Tree tree = 31;
  google.protobuf.Timestamp at = 32;
  google.protobuf.Duration took = 33;
  google.protobuf.Int64Value maybe = 34;
  google.protobuf.StringValue label = 35;
  google.protobuf.UInt32Value small = 36;
  repeated Item items = 37;
  repeated fixed32 codes = 38;
  bool far = 536870911;
}

message Inner {
  string name = 1;
  int32 level = 2;
  Deep deep = 3;
  repeated uint64 ids = 4;
  message Deep {
    bool on = 1;
    fixed64 mark = 2;
    Kind kind = 3;
  }
}

message Item {
  string sku = 1;
  int64 qty = 2;
  optional string note = 3;
  Kind kind = 4;
  repeated int32 sizes = 5;
  Inner.Deep deep = 6;
  google.protobuf.Timestamp at = 7;
}

message Tree {
  string name = 1;
  Tree left = 2;
  repeated Tree children = 3;
  Leaf leaf = 4;
  message Leaf {
    Tree back = 1;
    sfixed32 weight = 2;
  }
}
"#;

/// The explode paths the plans are compiled with (the first: none).
const EXPLODE: [&[&str]; 4] = [&[], &["items"], &["inner", "ids"], &["codes"]];

/// One compiled plan, read with one framing's message indexes.
pub struct Case {
    /// What the case is, for seed file names.
    pub name: &'static str,
    /// The plan's explode path.
    pub explode: &'static [&'static str],
    /// How the payload names its message type.
    pub indexing: Indexing,
    plan: usize,
}

/// The compiled file, its plans and the cases.
pub struct Compiled {
    /// The file [`PROTO`] compiles to.
    pub file: FileDescriptor,
    /// Every message type of the file, sorted by full name (Glue's order).
    pub messages: Vec<MessageDescriptor>,
    /// The cases a selector byte picks from.
    pub cases: Vec<Case>,
    /// One plan per explode path of [`EXPLODE`].
    plans: Vec<Plan>,
    /// A full `Event` as Confluent and as Glue payloads, decoded into the
    /// reused buffer first.
    primers: [Vec<u8>; 2],
}

/// The file, plans and cases, compiled once per process.
pub fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(compile)
}

fn compile() -> Compiled {
    let file = file(PROTO);
    let mut messages = Vec::new();
    let mut level: Vec<MessageDescriptor> = file.messages().collect();
    while !level.is_empty() {
        let next = level.iter().flat_map(|m| m.child_messages()).collect();
        messages.append(&mut level);
        level = next;
    }
    messages.sort_by(|a, b| a.full_name().cmp(b.full_name()));
    let plans = EXPLODE
        .iter()
        .map(|explode| Plan::compile(&file, &rules(explode)))
        .collect();
    let cases = [
        ("confluent", 0, Indexing::Confluent),
        ("glue", 0, Indexing::Glue),
        ("confluent-items", 1, Indexing::Confluent),
        ("glue-items", 1, Indexing::Glue),
        ("confluent-inner-ids", 2, Indexing::Confluent),
        ("glue-codes", 3, Indexing::Glue),
    ]
    .into_iter()
    .map(|(name, plan, indexing)| Case {
        name,
        explode: EXPLODE[plan],
        indexing,
        plan,
    })
    .collect();
    let event = sample(&file, "event", 0);
    let mut compiled = Compiled {
        file,
        messages,
        cases,
        plans,
        primers: [Vec::new(), Vec::new()],
    };
    compiled.primers = [Indexing::Confluent, Indexing::Glue].map(|indexing| {
        let mut payload = compiled.index_prefix(indexing, &event.descriptor());
        payload.extend(event.encode_to_vec());
        payload
    });
    compiled
}

/// `text` compiled as `fuzz.proto`, the well-known types resolvable.
fn file(text: &str) -> FileDescriptor {
    struct Single(File);
    impl FileResolver for Single {
        fn open_file(&self, name: &str) -> Result<File, protox::Error> {
            if name == self.0.name() {
                Ok(self.0.clone())
            } else {
                Err(protox::Error::file_not_found(name))
            }
        }
    }
    let source = File::from_source("fuzz.proto", text)
        .unwrap_or_else(|e| panic!("the fuzz schema does not parse: {e}"));
    let mut resolver = ChainFileResolver::new();
    resolver.add(Single(source));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    if let Err(e) = compiler.open_file("fuzz.proto") {
        panic!("the fuzz schema does not compile: {e}");
    }
    let pool: DescriptorPool = compiler.descriptor_pool();
    match pool.get_file_by_name("fuzz.proto") {
        Some(file) => file,
        None => panic!("the compiled pool has no fuzz.proto"),
    }
}

impl Compiled {
    /// The message index a framing puts before a message of type `message`:
    /// Glue's position in [`Compiled::messages`]; Confluent's path through
    /// declared messages (map entries are not declared), or the short form
    /// `[0]` for the first message.
    pub fn index_prefix(&self, indexing: Indexing, message: &MessageDescriptor) -> Vec<u8> {
        let mut out = Vec::new();
        match indexing {
            Indexing::Glue => {
                let at = self
                    .messages
                    .iter()
                    .position(|m| m == message)
                    .unwrap_or_else(|| panic!("{} is not in the file", message.full_name()));
                varint(at as u64, &mut out);
            }
            Indexing::Confluent => {
                let mut path = Vec::new();
                let mut at = message.clone();
                while let Some(parent) = at.parent_message() {
                    path.push(declared(parent.child_messages(), &at));
                    at = parent;
                }
                path.push(declared(self.file.messages(), &at));
                path.reverse();
                if path == [0] {
                    out.push(0);
                } else {
                    varint(zigzag(path.len() as i64), &mut out);
                    for i in path {
                        varint(zigzag(i as i64), &mut out);
                    }
                }
            }
        }
        out
    }

    /// The message type `prefix` (a whole message index) names, read here
    /// independently of the decoder: Confluent's zigzag count and path,
    /// Glue's position.
    fn named(&self, indexing: Indexing, prefix: &[u8]) -> Option<MessageDescriptor> {
        let mut values = Vec::new();
        let mut rest = prefix;
        while !rest.is_empty() {
            let end = rest.iter().position(|b| b & 0x80 == 0)?;
            let value = rest[..=end]
                .iter()
                .rev()
                .fold(0u64, |v, b| (v << 7) | u64::from(b & 0x7f));
            values.push(value);
            rest = &rest[end + 1..];
        }
        match indexing {
            Indexing::Glue => match values[..] {
                [at] => self.messages.get(usize::try_from(at).ok()?).cloned(),
                _ => None,
            },
            Indexing::Confluent => {
                let unzigzag = |v: u64| usize::try_from(v >> 1).ok().filter(|_| v & 1 == 0);
                let (&count, path) = values.split_first()?;
                if count == 0 {
                    return path
                        .is_empty()
                        .then(|| self.file.messages().next())
                        .flatten();
                }
                if unzigzag(count)? != path.len() {
                    return None;
                }
                let (&first, nested) = path.split_first()?;
                let mut message = self.file.messages().nth(unzigzag(first)?)?;
                for &i in nested {
                    let child = message
                        .child_messages()
                        .filter(|m| !m.is_map_entry())
                        .nth(unzigzag(i)?)?;
                    message = child;
                }
                Some(message)
            }
        }
    }
}

/// The place of `message` among the declared (not map entry) `messages`.
fn declared(
    messages: impl Iterator<Item = MessageDescriptor>,
    message: &MessageDescriptor,
) -> usize {
    messages
        .filter(|m| !m.is_map_entry())
        .position(|m| &m == message)
        .unwrap_or_else(|| panic!("{} is not declared", message.full_name()))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A message of the file for the seed corpus: `"event"` (every field set;
/// `variant` varies the oneof member, list lengths, signs and the tree),
/// `"empty-event"`, `"tree"`, `"inner"`, `"deep"`, `"item"` or
/// `"counts-entry"`.
pub fn sample(file: &FileDescriptor, what: &str, variant: u8) -> DynamicMessage {
    let pool = file.parent_pool();
    let new = |name: &str| match pool.get_message_by_name(name) {
        Some(descriptor) => DynamicMessage::new(descriptor),
        None => panic!("no message {name}"),
    };
    let v = i64::from(variant);
    let sign = if variant.is_multiple_of(2) { 1 } else { -1 };
    let deep = || {
        let mut deep = new("fuzz.Inner.Deep");
        deep.set_field_by_name("on", Value::Bool(variant.is_multiple_of(2)));
        deep.set_field_by_name("mark", Value::U64(u64::MAX - v as u64));
        deep.set_field_by_name("kind", Value::EnumNumber(7));
        deep
    };
    let inner = |name: &str| {
        let mut inner = new("fuzz.Inner");
        inner.set_field_by_name("name", Value::String(name.into()));
        inner.set_field_by_name("level", Value::I32(-3 * sign as i32));
        inner.set_field_by_name("deep", Value::Message(deep()));
        inner.set_field_by_name(
            "ids",
            Value::List((0..v + 2).map(|i| Value::U64(1 << (i * 9))).collect()),
        );
        inner
    };
    let timestamp = |seconds: i64, nanos: i32| {
        let mut at = new("google.protobuf.Timestamp");
        at.set_field_by_name("seconds", Value::I64(seconds));
        at.set_field_by_name("nanos", Value::I32(nanos));
        at
    };
    let item = |n: i64| {
        let mut item = new("fuzz.Item");
        item.set_field_by_name("sku", Value::String(format!("sku-{n}")));
        item.set_field_by_name("qty", Value::I64(n * sign));
        if n % 2 == 1 {
            item.set_field_by_name("note", Value::String("fragile".into()));
        }
        item.set_field_by_name("kind", Value::EnumNumber((n % 3) as i32));
        item.set_field_by_name("sizes", Value::List(vec![Value::I32(-1), Value::I32(40)]));
        if n == 0 {
            item.set_field_by_name("deep", Value::Message(deep()));
            item.set_field_by_name("at", Value::Message(timestamp(-1, 999_999_999)));
        }
        item
    };
    let tree = || {
        let mut leaf_tree = new("fuzz.Tree");
        leaf_tree.set_field_by_name("name", Value::String("back".into()));
        let mut leaf = new("fuzz.Tree.Leaf");
        leaf.set_field_by_name("back", Value::Message(leaf_tree));
        leaf.set_field_by_name("weight", Value::I32(-5));
        let mut left = new("fuzz.Tree");
        left.set_field_by_name("name", Value::String("left".into()));
        let mut root = new("fuzz.Tree");
        root.set_field_by_name("name", Value::String("root".into()));
        root.set_field_by_name("left", Value::Message(left.clone()));
        root.set_field_by_name(
            "children",
            Value::List(vec![Value::Message(left); usize::from(variant % 3)]),
        );
        root.set_field_by_name("leaf", Value::Message(leaf));
        root
    };
    match what {
        "event" => {
            let mut e = new("fuzz.Event");
            e.set_field_by_name("f_double", Value::F64(-0.5 * v as f64));
            e.set_field_by_name("f_float", Value::F32(f32::NAN));
            e.set_field_by_name("f_int32", Value::I32(i32::MIN + variant as i32));
            e.set_field_by_name("f_int64", Value::I64(-v * 1_000_003));
            e.set_field_by_name("f_uint32", Value::U32(u32::MAX));
            e.set_field_by_name("f_uint64", Value::U64(u64::MAX));
            e.set_field_by_name("f_sint32", Value::I32(i32::MIN));
            e.set_field_by_name("f_sint64", Value::I64(i64::MIN + v));
            e.set_field_by_name("f_fixed32", Value::U32(4_000_000_000));
            e.set_field_by_name("f_fixed64", Value::U64(1 << 63));
            e.set_field_by_name("f_sfixed32", Value::I32(-2));
            e.set_field_by_name("f_sfixed64", Value::I64(i64::MAX));
            e.set_field_by_name("f_bool", Value::Bool(true));
            e.set_field_by_name("f_string", Value::String("név".into()));
            e.set_field_by_name("f_bytes", Value::Bytes(b"\x00\xfftext"[..].into()));
            e.set_field_by_name("kind", Value::EnumNumber(1 + (variant % 3) as i32));
            if variant.is_multiple_of(2) {
                e.set_field_by_name("note", Value::String("".into()));
                e.set_field_by_name("count", Value::I64(-1));
            }
            e.set_field_by_name("inner", Value::Message(inner("inner")));
            match variant % 3 {
                0 => e.set_field_by_name("text", Value::String("chosen".into())),
                1 => e.set_field_by_name("number", Value::I64(0)),
                _ => e.set_field_by_name("detail", Value::Message(inner("detail"))),
            }
            e.set_field_by_name(
                "counts",
                Value::Map(
                    [("a", 1), ("", -1)]
                        .map(|(k, n)| (MapKey::String(k.into()), Value::I32(n)))
                        .into(),
                ),
            );
            e.set_field_by_name(
                "by_id",
                Value::Map([(MapKey::I64(-v), Value::Message(inner("by id")))].into()),
            );
            e.set_field_by_name(
                "packed",
                Value::List(vec![Value::I64(1), Value::I64(-1), Value::I64(1 << 40)]),
            );
            e.set_field_by_name("unpacked", Value::List(vec![Value::I32(-2), Value::I32(3)]));
            e.set_field_by_name("ratios", Value::List(vec![Value::F64(f64::INFINITY)]));
            e.set_field_by_name(
                "kinds",
                Value::List(vec![Value::EnumNumber(2), Value::EnumNumber(-9)]),
            );
            e.set_field_by_name(
                "names",
                Value::List(vec![Value::String("x".into()), Value::String("".into())]),
            );
            e.set_field_by_name("blobs", Value::List(vec![Value::Bytes(vec![0; 3].into())]));
            e.set_field_by_name("tree", Value::Message(tree()));
            e.set_field_by_name(
                "at",
                Value::Message(timestamp(1_795_478_400 + v, 123_456_789)),
            );
            let mut took = new("google.protobuf.Duration");
            took.set_field_by_name("seconds", Value::I64(-3));
            took.set_field_by_name("nanos", Value::I32(-500_000_000));
            e.set_field_by_name("took", Value::Message(took));
            let mut maybe = new("google.protobuf.Int64Value");
            maybe.set_field_by_name("value", Value::I64(42));
            e.set_field_by_name("maybe", Value::Message(maybe));
            // Present, holding its default.
            e.set_field_by_name("label", Value::Message(new("google.protobuf.StringValue")));
            let mut small = new("google.protobuf.UInt32Value");
            small.set_field_by_name("value", Value::U32(u32::MAX));
            e.set_field_by_name("small", Value::Message(small));
            e.set_field_by_name(
                "items",
                Value::List((0..v % 4).map(|n| Value::Message(item(n))).collect()),
            );
            e.set_field_by_name(
                "codes",
                Value::List(vec![Value::U32(7); usize::from(variant)]),
            );
            e.set_field_by_name("far", Value::Bool(true));
            e
        }
        "empty-event" => new("fuzz.Event"),
        "tree" => tree(),
        "inner" => inner("alone"),
        "deep" => deep(),
        "item" => item(1),
        "counts-entry" => {
            let mut entry = new("fuzz.Event.CountsEntry");
            entry.set_field_by_name("key", Value::String("k".into()));
            entry.set_field_by_name("value", Value::I32(9));
            entry
        }
        other => panic!("no sample {other}"),
    }
}

/// Decodes the payload with the case the first byte picks, and checks the
/// outcome: no panic; the same values on a fresh and on a reused
/// [`Decoded`]; at most linearly many values in the message's length; and,
/// when the decoder accepts the message, that prost-reflect accepts it too
/// and holds the same values, flattened here from its `DynamicMessage`.
pub fn check(input: &[u8]) {
    let Some((&selector, payload)) = input.split_first() else {
        return;
    };
    let compiled = compiled();
    let case = &compiled.cases[usize::from(selector) % compiled.cases.len()];
    let plan = &compiled.plans[case.plan];
    let Ok((message, bytes)) = plan.message(case.indexing, payload) else {
        return;
    };
    let descriptor = match compiled.named(case.indexing, &payload[..payload.len() - bytes.len()]) {
        Some(descriptor) => descriptor,
        None => panic!(
            "case {}: the decoder accepted a message index that names no message type",
            case.name
        ),
    };

    let mut fresh = Decoded::default();
    let result = message.decode(bytes, &mut fresh);
    check_size(case, message, bytes, &fresh);

    // Buffers reused from a previous message must not leak into this one.
    let mut reused = Decoded::default();
    let primer = &compiled.primers[usize::from(case.indexing == Indexing::Glue)];
    let primed = plan
        .message(case.indexing, primer)
        .and_then(|(event, bytes)| event.decode(bytes, &mut reused));
    if let Err(e) = primed {
        panic!("case {}: the sample event does not decode: {e}", case.name);
    }
    let again = message.decode(bytes, &mut reused);
    assert_eq!(result, again, "case {}: decoding twice differs", case.name);
    if result.is_ok() {
        assert!(
            same_rows(&fresh.envelope, &reused.envelope)
                && fresh.elements().len() == reused.elements().len()
                && fresh
                    .elements()
                    .iter()
                    .zip(reused.elements())
                    .all(|(a, b)| same_rows(a, b)),
            "case {}: a reused buffer decodes differently:\n{fresh:?}\n{reused:?}",
            case.name
        );
        check_prost(case, &descriptor, message, bytes, &fresh);
    }
}

/// The decoded values (list items and exploded elements counted one by
/// one), even of a message that failed part way, are at most
/// `(len + 1) × (columns + 1)`: values reach the sink when a message (the
/// envelope, or an element of the explode path) ends, at most one per
/// column, defaults of a present nested message included; list items take
/// a byte each at least (a packed varint), so at most `len` in all; an
/// element of messages takes at least two bytes (tag and length), an
/// element of scalars one (packed). So at most `columns + len + len / 2 ×
/// (1 + columns)` values, or `columns + 2 × len` for scalar elements.
fn check_size(case: &Case, message: &MessagePlan, bytes: &[u8], out: &Decoded) {
    let values = |row: &[(Col, Val)]| -> usize {
        row.iter()
            .map(|(_, v)| match v {
                Val::List(items) => 1 + items.len(),
                _ => 1,
            })
            .sum()
    };
    let total = values(&out.envelope) + out.elements().iter().map(|e| 1 + values(e)).sum::<usize>();
    let columns = message.columns().len();
    let bound = (bytes.len() + 1) * (columns + 1);
    assert!(
        total <= bound,
        "case {}: {total} values decoded from a message of {} bytes ({columns} columns): \
         the output must grow at most linearly with the input (bound {bound})",
        case.name,
        bytes.len(),
    );
}

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
fn check_prost(
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

/// Equal rows, NaN equal to itself.
fn same_rows(a: &[(Col, Val)], b: &[(Col, Val)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ca, va), (cb, vb))| ca == cb && same(va, vb))
}

/// Equal values, a NaN equal to a NaN of the same bits.
fn same(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Double(x), Val::Double(y)) => x.to_bits() == y.to_bits(),
        (Val::List(x), Val::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}
