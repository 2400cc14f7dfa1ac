//! The `avro` target: the first input byte picks a [`Case`] (a compiled plan)
//! and whether the rest is a bare record or a whole message (any framing,
//! read by [`wire::parse`]) whose payload is the record.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use tributary_decode::apache_avro::types::Value;
use tributary_decode::apache_avro::{Decimal, Schema, to_avro_datum};
use tributary_decode::avro::{Decoded, FlattenRules, Plan};
use tributary_decode::wire;

use crate::decoded::{assert_bounded, assert_same_when_reused};
use crate::frame::MAX_PAYLOAD_BYTES;
use crate::sample;

/// The selector bit: the rest of the input is a framed message.
pub const FRAMED: u8 = 0x80;

/// Ingest's reserved columns (`tributary_config::RESERVED_COLUMNS`) and
/// prefixes (`SOURCE_COLUMN_PREFIXES`).
const RESERVED: [&str; 6] = [
    "_hour",
    "_key",
    "_partition",
    "_position",
    "_redact_tokens",
    "date",
];

/// Every Avro type and logical type the decoder reads, in unions, maps,
/// nested arrays and an explode path (`items`). `holes` is an array whose
/// items take no bytes, which the decoder's limit on a block's item count
/// (the bytes left) does not bound.
pub const KITCHEN: &str = r#"{"type": "record", "name": "Event", "namespace": "fuzz", "fields": [
  {"name": "id", "type": "long"},
  {"name": "flag", "type": "boolean"},
  {"name": "ratio", "type": "float"},
  {"name": "score", "type": ["null", "double"]},
  {"name": "name", "type": ["null", "string"]},
  {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"], "default": "A"}},
  {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 8}},
  {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 4}},
  {"name": "amount", "type": {"type": "fixed", "name": "Amount", "size": 16, "logicalType": "decimal", "precision": 38, "scale": 2}},
  {"name": "day", "type": {"type": "int", "logicalType": "date"}},
  {"name": "at_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "at_us", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
  {"name": "at_ns", "type": {"type": "long", "logicalType": "timestamp-nanos"}},
  {"name": "tick", "type": {"type": "int", "logicalType": "time-millis"}},
  {"name": "uuid", "type": {"type": "string", "logicalType": "uuid"}},
  {"name": "blob", "type": "bytes"},
  {"name": "labels", "type": {"type": "map", "values": "string"}},
  {"name": "matrix", "type": {"type": "array", "items": {"type": "array", "items": "int"}}},
  {"name": "nested", "type": {"type": "map", "values": {"type": "array", "items": ["null", "Kind", "Hash",
    {"type": "record", "name": "Pair", "fields": [
      {"name": "k", "type": "string"}, {"name": "v", "type": ["null", "long", "double"]}]}]}}},
  {"name": "choice", "type": ["null",
    {"type": "record", "name": "Left", "fields": [{"name": "l", "type": "int"}]},
    {"type": "record", "name": "Right", "fields": [{"name": "r", "type": "string"},
      {"name": "deep", "type": {"type": "record", "name": "Deep", "fields": [{"name": "x", "type": "double"}]}}]}]},
  {"name": "nums", "type": {"type": "array", "items": ["null", "long"]}},
  {"name": "holes", "type": {"type": "array", "items": "null"}},
  {"name": "items", "type": {"type": "array", "items": {"type": "record", "name": "Item", "fields": [
    {"name": "sku", "type": "string"}, {"name": "qty", "type": "int"},
    {"name": "note", "type": ["null", "string"], "default": null}]}}}
]}"#;

/// [`KITCHEN`] evolved: a field dropped, promotions (int → long, long and
/// float → double, string ↔ bytes), a reordered union, an enum that lost a
/// symbol (read as its default), a renamed field (by alias), new fields with
/// defaults (a record default among them).
const KITCHEN_READER: &str = r#"{"type": "record", "name": "Event", "namespace": "fuzz", "fields": [
  {"name": "id", "type": "double"},
  {"name": "ratio", "type": "double"},
  {"name": "score", "type": ["null", "double"]},
  {"name": "name", "type": ["string", "null"]},
  {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["B", "A", "D"], "default": "A"}},
  {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 8}},
  {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 4}},
  {"name": "amount", "type": {"type": "fixed", "name": "Amount", "size": 16, "logicalType": "decimal", "precision": 38, "scale": 2}},
  {"name": "day", "type": {"type": "int", "logicalType": "date"}},
  {"name": "at_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "at_us", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
  {"name": "at_ns", "type": {"type": "long", "logicalType": "timestamp-nanos"}},
  {"name": "tick", "type": "long"},
  {"name": "uuid", "type": "bytes"},
  {"name": "blob", "type": "string"},
  {"name": "labels", "type": {"type": "map", "values": "string"}},
  {"name": "matrix", "type": {"type": "array", "items": {"type": "array", "items": "long"}}},
  {"name": "nested", "type": {"type": "map", "values": {"type": "array", "items": ["null", "Kind", "Hash",
    {"type": "record", "name": "Pair", "fields": [
      {"name": "k", "type": "string"}, {"name": "v", "type": ["null", "long", "double"]}]}]}}},
  {"name": "choice", "type": ["null",
    {"type": "record", "name": "Left", "fields": [{"name": "l", "type": "long"}]},
    {"type": "record", "name": "Right", "fields": [{"name": "r", "type": "string"},
      {"name": "deep", "type": {"type": "record", "name": "Deep", "fields": [{"name": "x", "type": "double"}]}},
      {"name": "extra", "type": "string", "default": "x"}]}]},
  {"name": "nums", "type": {"type": "array", "items": ["null", "double"]}},
  {"name": "holes", "type": {"type": "array", "items": "null"}},
  {"name": "items", "type": {"type": "array", "items": {"type": "record", "name": "Item", "fields": [
    {"name": "sku", "type": "string"},
    {"name": "quantity", "aliases": ["qty"], "type": "long"},
    {"name": "note", "type": ["null", "string"], "default": null},
    {"name": "unit", "type": "string", "default": "pcs"}]}}},
  {"name": "added", "type": {"type": "record", "name": "Added", "fields": [
    {"name": "a", "type": "int"}, {"name": "b", "type": "string"}]}, "default": {"a": 1, "b": "z"}},
  {"name": "region", "type": ["null", "string"], "default": null}
]}"#;

/// One compiled plan and a record it decodes.
pub struct Case {
    /// What the case is, for seed file names.
    pub name: &'static str,
    /// The plan under test.
    pub plan: Plan,
    /// A valid record of the writer schema.
    pub sample: Vec<u8>,
}

/// The cases, compiled once per process.
pub fn cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(compile_cases)
}

fn compile_cases() -> Vec<Case> {
    let parse = |text: &str| match Schema::parse_str(text) {
        Ok(schema) => schema,
        Err(e) => panic!("a fuzz schema does not parse: {e}"),
    };
    let v1 = parse(sample::AVRO_SCHEMA_V1);
    let v2 = parse(&sample::avro_schema_v2());
    let kitchen = parse(KITCHEN);
    let kitchen_reader = parse(KITCHEN_READER);
    let envelope = |v2: bool| {
        let mut out = Vec::new();
        // One log record: a short sample.
        let emitted = sample::avro_envelopes(
            &mut sample::SplitMix::new(7),
            1,
            0,
            |_| v2,
            |_, _, bytes| {
                out = bytes.to_vec();
                Ok(())
            },
        );
        assert!(matches!(emitted, Ok(1)), "one sample envelope");
        out
    };
    let kitchen_sample = match to_avro_datum(&kitchen, kitchen_record(0)) {
        Ok(bytes) => bytes,
        Err(e) => panic!("the kitchen record does not encode: {e}"),
    };
    let messages = rules(&["messages"]);
    let items = rules(&["items"]);
    let none = rules(&[]);
    [
        ("v1", &v1, None, &messages, envelope(false)),
        ("v1-read-as-v2", &v1, Some(&v2), &messages, envelope(false)),
        ("v2", &v2, None, &messages, envelope(true)),
        ("v2-read-as-v1", &v2, Some(&v1), &messages, envelope(true)),
        ("v1-unexploded", &v1, None, &none, envelope(false)),
        ("kitchen", &kitchen, None, &items, kitchen_sample.clone()),
        (
            "kitchen-evolved",
            &kitchen,
            Some(&kitchen_reader),
            &items,
            kitchen_sample.clone(),
        ),
        ("kitchen-unexploded", &kitchen, None, &none, kitchen_sample),
    ]
    .into_iter()
    .map(|(name, writer, reader, rules, sample)| {
        let plan = match Plan::compile(writer, reader, rules) {
            Ok(plan) => plan,
            Err(e) => panic!("case {name} does not compile: {e}"),
        };
        Case { name, plan, sample }
    })
    .collect()
}

pub(crate) fn rules(explode: &[&str]) -> FlattenRules {
    FlattenRules {
        explode: explode.iter().map(|s| s.to_string()).collect(),
        reserved: RESERVED.iter().map(|s| s.to_string()).collect(),
        reserved_prefixes: vec!["_kafka_".into(), "_kinesis_".into()],
    }
}

/// A record of [`KITCHEN`]; `variant` varies the union branches and array
/// lengths (the seed generator writes a few).
pub fn kitchen_record(variant: u8) -> Value {
    let v = i64::from(variant);
    let odd = variant % 2 == 1;
    let pair = Value::Record(vec![
        ("k".into(), Value::String("key".into())),
        ("v".into(), Value::Union(2, Box::new(Value::Double(0.5)))),
    ]);
    let choice = match variant % 3 {
        0 => Value::Union(0, Box::new(Value::Null)),
        1 => Value::Union(
            1,
            Box::new(Value::Record(vec![("l".into(), Value::Int(-7))])),
        ),
        _ => Value::Union(
            2,
            Box::new(Value::Record(vec![
                ("r".into(), Value::String("right".into())),
                (
                    "deep".into(),
                    Value::Record(vec![("x".into(), Value::Double(f64::NAN))]),
                ),
            ])),
        ),
    };
    let item = |n: i64| {
        Value::Record(vec![
            ("sku".into(), Value::String(format!("sku-{n}"))),
            ("qty".into(), Value::Int(n as i32)),
            (
                "note".into(),
                if n % 2 == 0 {
                    Value::Union(0, Box::new(Value::Null))
                } else {
                    Value::Union(1, Box::new(Value::String("fragile".into())))
                },
            ),
        ])
    };
    Value::Record(vec![
        ("id".into(), Value::Long(-v * 1_000_003)),
        ("flag".into(), Value::Boolean(odd)),
        ("ratio".into(), Value::Float(1.5)),
        (
            "score".into(),
            if odd {
                Value::Union(0, Box::new(Value::Null))
            } else {
                Value::Union(1, Box::new(Value::Double(-0.25)))
            },
        ),
        (
            "name".into(),
            Value::Union(1, Box::new(Value::String("név".into()))),
        ),
        (
            "kind".into(),
            Value::Enum(
                u32::from(variant % 3),
                ["A", "B", "C"][usize::from(variant % 3)].into(),
            ),
        ),
        ("hash".into(), Value::Fixed(8, vec![0xab; 8])),
        (
            "price".into(),
            Value::Decimal(Decimal::from(vec![0xff, 0x38])),
        ),
        (
            "amount".into(),
            Value::Decimal(Decimal::from(vec![0x01; 16])),
        ),
        ("day".into(), Value::Date(20_000 + variant as i32)),
        (
            "at_ms".into(),
            Value::TimestampMillis(1_795_478_400_000 + v),
        ),
        ("at_us".into(), Value::LocalTimestampMicros(-1)),
        ("at_ns".into(), Value::TimestampNanos(1_000_000_001)),
        ("tick".into(), Value::TimeMillis(86_399_999)),
        (
            "uuid".into(),
            Value::Uuid(uuid::Uuid::from_bytes([variant; 16])),
        ),
        ("blob".into(), Value::Bytes(b"\x00\x01text".to_vec())),
        (
            "labels".into(),
            Value::Map(HashMap::from([
                ("env".to_string(), Value::String("prod".into())),
                ("".to_string(), Value::String("empty key".into())),
            ])),
        ),
        (
            "matrix".into(),
            Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Int(-2)]),
                Value::Array(vec![]),
            ]),
        ),
        (
            "nested".into(),
            Value::Map(HashMap::from([(
                "n".to_string(),
                Value::Array(vec![
                    Value::Union(0, Box::new(Value::Null)),
                    Value::Union(1, Box::new(Value::Enum(1, "B".into()))),
                    Value::Union(2, Box::new(Value::Fixed(8, vec![1; 8]))),
                    Value::Union(3, Box::new(pair)),
                ]),
            )])),
        ),
        ("choice".into(), choice),
        (
            "nums".into(),
            Value::Array(vec![
                Value::Union(1, Box::new(Value::Long(v))),
                Value::Union(0, Box::new(Value::Null)),
            ]),
        ),
        (
            "holes".into(),
            Value::Array(vec![Value::Null; usize::from(variant % 4)]),
        ),
        ("items".into(), Value::Array((0..v % 4).map(item).collect())),
    ])
}

/// Decodes the input's record with the case its first byte picks, and
/// checks the outcome: the same on a fresh and on a reused [`Decoded`], and
/// at most linear in the record's size.
pub fn check(input: &[u8]) {
    let Some((&selector, rest)) = input.split_first() else {
        return;
    };
    let cases = cases();
    let case = &cases[usize::from(selector & !FRAMED) % cases.len()];
    let record: Cow<'_, [u8]> = if selector & FRAMED != 0 {
        match wire::parse(rest, MAX_PAYLOAD_BYTES) {
            Ok(frame) => frame.payload,
            Err(_) => return,
        }
    } else {
        Cow::Borrowed(rest)
    };

    let mut fresh = Decoded::default();
    let result = case.plan.decode(&record, &mut fresh);
    check_size(case, &record, &fresh);

    // Buffers reused from a previous record must not leak into this one.
    let mut reused = Decoded::default();
    if let Err(e) = case.plan.decode(&case.sample, &mut reused) {
        panic!("case {}: its sample record does not decode: {e}", case.name);
    }
    let again = case.plan.decode(&record, &mut reused);
    assert_eq!(result, again, "case {}: decoding twice differs", case.name);
    if result.is_ok() {
        assert_same_when_reused(case.name, &fresh, &reused);
    }
}

/// The decoded values (list items and exploded elements counted one by
/// one), even of a record that failed part way, are bounded by a linear
/// function of the record's length. Every value takes at least one byte
/// except nulls, exploded elements and reader defaults; the decoder lets an
/// array block hold at most as many items as bytes are left, so one block of
/// zero-byte items yields at most `len` values, and each element at most one
/// value per column.
fn check_size(case: &Case, record: &[u8], out: &Decoded) {
    let columns = case.plan.columns().len();
    let bound = 2 * (record.len() + 1) * (columns + 1);
    assert_bounded(case.name, out, record.len(), columns, bound);
}
