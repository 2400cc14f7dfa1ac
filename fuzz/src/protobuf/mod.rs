//! The `protobuf` target: the first input byte picks a [`Case`] (a plan of
//! [`PROTO`] compiled with an explode path or none, and the message
//! indexing of a framing, Confluent or Glue); the rest is the payload as
//! that framing carries it: the message index, then the message.

mod prost;
mod sample;

use std::sync::OnceLock;

use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use tributary_decode::avro::Decoded;
use tributary_decode::prost_reflect::prost::Message as _;
use tributary_decode::prost_reflect::{
    DescriptorPool, FileDescriptor, MessageDescriptor, ReflectMessage,
};
use tributary_decode::protobuf::{Indexing, MessagePlan, Plan};

use self::prost::check_prost;
pub use self::sample::sample;
use crate::avro::rules;
use crate::decoded::{assert_bounded, assert_same_when_reused};
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
        assert_same_when_reused(case.name, &fresh, &reused);
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
    let columns = message.columns().len();
    let bound = (bytes.len() + 1) * (columns + 1);
    assert_bounded(case.name, out, bytes.len(), columns, bound);
}
