#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a panic is a failure

use std::collections::BTreeMap;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, FileDescriptor, MapKey, Value};
use protox::file::{ChainFileResolver, File, GoogleFileResolver};

use super::*;
use crate::avro::Decoded;

const SHOP: &str = r#"
syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

enum Status { NEW = 0; PAID = 1; }

message Order {
  string id = 1;
  int32 qty = 2;
  uint64 big = 3;
  sint64 delta = 4;
  double price = 5;
  bool gift = 6;
  bytes blob = 7;
  Status status = 8;
  optional string note = 9;
  google.protobuf.Timestamp at = 10;
  google.protobuf.Int64Value maybe = 11;
  Customer customer = 12;
  repeated int64 tags = 13;
  repeated Line lines = 14;
  map<string, int32> counts = 15;
  oneof pay { string card = 16; string iban = 17; }
  fixed32 f32 = 18;
  sfixed64 sf64 = 19;
  float ratio = 20;
  message Line { string sku = 1; int64 n = 2; }
}

message Customer { string name = 1; Address address = 2; }
message Address { string city = 1; }
"#;

fn file(text: &str) -> FileDescriptor {
    let mut resolver = ChainFileResolver::new();
    resolver.add(Single(File::from_source("shop.proto", text).unwrap()));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.open_file("shop.proto").unwrap();
    let pool: DescriptorPool = compiler.descriptor_pool();
    pool.get_file_by_name("shop.proto").unwrap()
}

struct Single(File);

impl protox::file::FileResolver for Single {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == self.0.name() {
            Ok(self.0.clone())
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

fn rules(explode: &[&str]) -> FlattenRules {
    FlattenRules {
        explode: explode.iter().map(|s| s.to_string()).collect(),
        reserved: vec!["_key".into()],
        reserved_prefixes: vec!["_kafka_".into()],
    }
}

fn message(file: &FileDescriptor, name: &str) -> DynamicMessage {
    DynamicMessage::new(file.parent_pool().get_message_by_name(name).unwrap())
}

/// One row's values by column name.
type Row = BTreeMap<String, Val<'static>>;

/// Decodes `bytes` (after a Confluent index prefix) into column → value,
/// envelope first, then one map per element.
fn decode(plan: &Plan, framed: &[u8]) -> Result<(Row, Vec<Row>), DecodeError> {
    let (message, bytes) = plan.message(Indexing::Confluent, framed)?;
    let mut out = Decoded::default();
    message.decode_into(bytes, &mut out)?;
    let named = |values: &[(Col, Val<'static>)]| {
        values
            .iter()
            .map(|(c, v)| (message.columns()[*c as usize].to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    Ok((
        named(&out.envelope),
        out.elements().iter().map(|e| named(e)).collect(),
    ))
}

fn framed(index: &[u8], message: &DynamicMessage) -> Vec<u8> {
    let mut out = index.to_vec();
    out.extend(message.encode_to_vec());
    out
}

fn text(s: &str) -> Val<'static> {
    Val::Str(s.to_string().into())
}

#[test]
fn every_field_kind_flattens_by_the_rules() {
    let file = file(SHOP);
    let plan = Plan::compile(&file, &rules(&[]));
    let mut order = message(&file, "shop.Order");
    order.set_field_by_name("id", Value::String("o-1".into()));
    order.set_field_by_name("qty", Value::I32(-3));
    order.set_field_by_name("big", Value::U64(u64::MAX));
    order.set_field_by_name("delta", Value::I64(-7));
    order.set_field_by_name("price", Value::F64(9.5));
    order.set_field_by_name("blob", Value::Bytes(vec![1, 2].into()));
    order.set_field_by_name("status", Value::EnumNumber(1));
    let mut at = message(&file, "google.protobuf.Timestamp");
    at.set_field_by_name("seconds", Value::I64(1_700_000_000));
    at.set_field_by_name("nanos", Value::I32(123_456_789));
    order.set_field_by_name("at", Value::Message(at));
    let mut maybe = message(&file, "google.protobuf.Int64Value");
    maybe.set_field_by_name("value", Value::I64(42));
    order.set_field_by_name("maybe", Value::Message(maybe));
    let mut address = message(&file, "shop.Address");
    address.set_field_by_name("city", Value::String("Oslo".into()));
    let mut customer = message(&file, "shop.Customer");
    customer.set_field_by_name("address", Value::Message(address));
    order.set_field_by_name("customer", Value::Message(customer));
    order.set_field_by_name("tags", Value::List(vec![Value::I64(1), Value::I64(-2)]));
    let mut line = message(&file, "shop.Order.Line");
    line.set_field_by_name("sku", Value::String("a".into()));
    order.set_field_by_name("lines", Value::List(vec![Value::Message(line)]));
    order.set_field_by_name(
        "counts",
        Value::Map([(MapKey::String("x".into()), Value::I32(3))].into()),
    );
    order.set_field_by_name("iban", Value::String("NO93".into()));
    order.set_field_by_name("f32", Value::U32(4_000_000_000));
    order.set_field_by_name("ratio", Value::F32(0.5));

    let (row, elements) = decode(&plan, &framed(&[0], &order)).unwrap();
    assert!(elements.is_empty());
    let expected = BTreeMap::from([
        ("id".to_string(), text("o-1")),
        ("qty".into(), Val::Long(-3)),
        (
            "big".into(),
            Val::Decimal {
                unscaled: i128::from(u64::MAX),
                precision: 20,
                scale: 0,
            },
        ),
        ("delta".into(), Val::Long(-7)),
        ("price".into(), Val::Double(9.5)),
        ("gift".into(), Val::Bool(false)),
        ("blob".into(), Val::Bytes(vec![1, 2].into())),
        ("status".into(), text("PAID")),
        ("at".into(), Val::Timestamp(1_700_000_000_123_456)),
        ("maybe".into(), Val::Long(42)),
        // Customer is present: its name holds the default, its address the city.
        ("customer_name".into(), text("")),
        ("customer_address_city".into(), text("Oslo")),
        ("tags".into(), Val::List(vec![Val::Long(1), Val::Long(-2)])),
        ("lines".into(), text(r#"[{"sku":"a"}]"#)),
        ("counts".into(), text(r#"{"x":3}"#)),
        ("iban".into(), text("NO93")),
        ("f32".into(), Val::Long(4_000_000_000)),
        ("sf64".into(), Val::Long(0)),
        ("ratio".into(), Val::Double(0.5)),
    ]);
    assert_eq!(row, expected);
    // `note` (optional), `card` (the other oneof member) are absent: null.
}

#[test]
fn absent_messages_are_null_and_empty_messages_hold_defaults() {
    let file = file(SHOP);
    let plan = Plan::compile(&file, &rules(&[]));
    let order = message(&file, "shop.Order");
    let (row, _) = decode(&plan, &framed(&[0], &order)).unwrap();
    assert!(!row.contains_key("customer_name"));
    assert!(!row.contains_key("at"));
    assert_eq!(row["status"], text("NEW"));
    assert_eq!(row["tags"], Val::List(vec![]));
}

#[test]
fn the_explode_path_yields_one_row_per_element() {
    let file = file(SHOP);
    let plan = Plan::compile(&file, &rules(&["lines"]));
    let mut order = message(&file, "shop.Order");
    order.set_field_by_name("id", Value::String("o-2".into()));
    let lines = (0..3)
        .map(|i| {
            let mut line = message(&file, "shop.Order.Line");
            line.set_field_by_name("n", Value::I64(i));
            Value::Message(line)
        })
        .collect();
    order.set_field_by_name("lines", Value::List(lines));
    let (row, elements) = decode(&plan, &framed(&[0], &order)).unwrap();
    assert_eq!(row["id"], text("o-2"));
    assert_eq!(elements.len(), 3);
    assert_eq!(elements[2]["lines_n"], Val::Long(2));
    assert_eq!(elements[2]["lines_sku"], text(""));
}

#[test]
fn message_indexes_pick_the_type_as_each_framing_says() {
    let file = file(SHOP);
    let plan = Plan::compile(&file, &rules(&[]));
    let mut address = message(&file, "shop.Address");
    address.set_field_by_name("city", Value::String("Rome".into()));
    let bytes = address.encode_to_vec();
    // Confluent: count 1 (zigzag 2), index 2 (zigzag 4): the third top-level message.
    let mut confluent = vec![2, 4];
    confluent.extend(&bytes);
    let (row, _) = decode(&plan, &confluent).unwrap();
    assert_eq!(row["city"], text("Rome"));
    // Glue: all message types sorted by full name: Address, Customer, Order,
    // Order.CountsEntry (the map's entry), Order.Line.
    let mut glue = vec![0];
    glue.extend(&bytes);
    let (message, rest) = plan.message(Indexing::Glue, &glue).unwrap();
    assert_eq!(&*message.columns()[0], "city");
    assert_eq!(rest, &bytes[..]);
    // Nested: Confluent [0, 0] is Order.Line.
    let (message, _) = plan.message(Indexing::Confluent, &[4, 0, 0]).unwrap();
    assert_eq!(&*message.columns()[0], "sku");
    let (message, _) = plan.message(Indexing::Glue, &[4]).unwrap();
    assert_eq!(&*message.columns()[0], "sku");
    assert!(plan.message(Indexing::Glue, &[9]).is_err());
    assert!(plan.message(Indexing::Confluent, &[2, 10]).is_err());
}

#[test]
fn malformed_bytes_are_errors_that_say_where() {
    let file = file(SHOP);
    let plan = Plan::compile(&file, &rules(&[]));
    let cases: [(&[u8], &str); 4] = [
        // Field 1 (string) sent as a varint.
        (&[0, 0x08, 1], "wire type 0"),
        // Field 1, length 5, 1 byte.
        (&[0, 0x0a, 5, b'a'], "ends early"),
        // Field 1, invalid UTF-8.
        (&[0, 0x0a, 1, 0xff], "UTF-8"),
        // A varint of 11 bytes.
        (
            &[
                0, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1,
            ],
            "varint",
        ),
    ];
    for (bytes, says) in cases {
        let e = decode(&plan, bytes).unwrap_err().to_string();
        assert!(e.contains(says), "{bytes:?}: {e}");
    }
}

#[test]
fn reserved_names_and_collisions_refuse_only_their_message() {
    let file = file(
        r#"syntax = "proto3";
        message Bad { string _key = 1; }
        message Clash { string a_b = 1; A a = 2; message A { string b = 1; } }
        message Good { string x = 1; }"#,
    );
    let plan = Plan::compile(&file, &rules(&[]));
    let e = plan
        .message(Indexing::Confluent, &[0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`Bad`") && e.contains("_key"), "{e}");
    let e = plan
        .message(Indexing::Confluent, &[2, 2])
        .unwrap_err()
        .to_string();
    assert!(e.contains("a_b"), "{e}");
    assert!(plan.message(Indexing::Confluent, &[2, 4]).is_ok());
}

#[test]
fn a_recursive_message_is_json_text() {
    let file = file(
        r#"syntax = "proto3";
        message Node { string name = 1; Node child = 2; }"#,
    );
    let plan = Plan::compile(&file, &rules(&[]));
    let mut leaf = message(&file, "Node");
    leaf.set_field_by_name("name", Value::String("leaf".into()));
    let mut root = message(&file, "Node");
    root.set_field_by_name("name", Value::String("root".into()));
    root.set_field_by_name("child", Value::Message(leaf));
    let (row, _) = decode(&plan, &framed(&[0], &root)).unwrap();
    assert_eq!(row["child"], text(r#"{"name":"leaf"}"#));
}

#[test]
fn unknown_fields_are_skipped_and_the_last_occurrence_wins() {
    let file = file(SHOP);
    let plan = Plan::compile(&file, &rules(&[]));
    // Field 99 (varint 5), field 2 = 1, field 2 = 7, field 98 as a group.
    let bytes = [
        0, 0x98, 0x06, 5, 0x10, 1, 0x10, 7, 0x93, 0x06, 0x08, 1, 0x94, 0x06,
    ];
    let (row, _) = decode(&plan, &bytes).unwrap();
    assert_eq!(row["qty"], Val::Long(7));
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

// Regression (fuzz/regressions/protobuf/varint-overflowing-64-bits-accepted):
// a tenth varint byte above 1 was read with its high bits dropped.
#[test]
fn a_varint_past_64_bits_is_refused() {
    let file = file(SHOP);
    let plan = Plan::compile(&file, &rules(&[]));
    let mut max = vec![0, 0x18];
    max.extend([0xff; 9]);
    max.push(0x01);
    let (row, _) = decode(&plan, &max).unwrap();
    assert_eq!(
        row["big"],
        Val::Decimal {
            unscaled: i128::from(u64::MAX),
            precision: 20,
            scale: 0
        }
    );
    let mut over = max.clone();
    *over.last_mut().unwrap() = 0x02;
    let e = decode(&plan, &over).unwrap_err().to_string();
    assert!(e.contains("overflows 64 bits"), "{e}");
}

// Regression (fuzz/regressions/protobuf/sint32-read-past-32-bits): a sint32
// sent as a varint longer than 32 bits was zigzag-decoded from all 64,
// giving a value outside the 32-bit range.
#[test]
fn a_sint32_is_the_zigzag_of_its_varints_low_32_bits() {
    let file = file(
        r#"syntax = "proto3";
        message M { sint32 a = 1; sint64 b = 2; }"#,
    );
    let plan = Plan::compile(&file, &rules(&[]));
    let long = (1 << 33) + 3;
    let mut bytes = vec![0, 0x08];
    varint(long, &mut bytes);
    bytes.push(0x10);
    varint(long, &mut bytes);
    let (row, _) = decode(&plan, &bytes).unwrap();
    assert_eq!(row["a"], Val::Long(-2));
    assert_eq!(row["b"], Val::Long(-(1 << 32) - 2));
    // The extremes of 32 bits, as encoders write them.
    let mut bytes = vec![0, 0x08];
    varint(u64::from(u32::MAX), &mut bytes);
    let (row, _) = decode(&plan, &bytes).unwrap();
    assert_eq!(row["a"], Val::Long(i64::from(i32::MIN)));
}

// Regression (fuzz/regressions/protobuf/field-number-past-2-29-accepted):
// an unknown field numbered past 2^29 - 1, the largest field number, was
// skipped instead of refused.
#[test]
fn a_field_number_past_the_largest_is_refused() {
    let file = file(SHOP);
    let plan = Plan::compile(&file, &rules(&[]));
    let largest = (1u64 << 29) - 1;
    let mut bytes = vec![0];
    varint(largest << 3, &mut bytes);
    bytes.push(1);
    assert!(decode(&plan, &bytes).is_ok());
    let mut bytes = vec![0];
    varint((largest + 1) << 3, &mut bytes);
    bytes.push(1);
    let e = decode(&plan, &bytes).unwrap_err().to_string();
    assert!(e.contains("field number 536870912"), "{e}");
}

// Regression (fuzz/regressions/protobuf/oneof-members-both-set): the
// members of a oneof read one after another were all kept; the last one on
// the wire is the one that is set, and an earlier message member's columns
// (defaults included) are emptied.
#[test]
fn a_later_oneof_member_replaces_an_earlier_one() {
    let file = file(
        r#"syntax = "proto3";
        message M {
          oneof pick { string s = 1; Sub sub = 2; int64 n = 3; }
          string other = 4;
          message Sub { int32 x = 1; repeated int32 xs = 2; }
        }"#,
    );
    let plan = Plan::compile(&file, &rules(&[]));
    let row = |bytes: &[u8]| decode(&plan, bytes).unwrap().0;
    let other = ("other".to_string(), text(""));
    // sub {x: 5}, then s = "a".
    assert_eq!(
        row(&[0, 0x12, 2, 0x08, 5, 0x0a, 1, b'a']),
        BTreeMap::from([("s".to_string(), text("a")), other.clone()])
    );
    // s = "a", then an empty sub: its fields hold their defaults.
    assert_eq!(
        row(&[0, 0x0a, 1, b'a', 0x12, 0]),
        BTreeMap::from([
            ("sub_x".to_string(), Val::Long(0)),
            ("sub_xs".to_string(), Val::List(vec![])),
            other.clone(),
        ])
    );
    // sub {x: 5}, n = 1, sub {xs: [2]}: the first sub is gone.
    assert_eq!(
        row(&[0, 0x12, 2, 0x08, 5, 0x18, 1, 0x12, 2, 0x10, 2]),
        BTreeMap::from([
            ("sub_x".to_string(), Val::Long(0)),
            ("sub_xs".to_string(), Val::List(vec![Val::Long(2)])),
            other.clone(),
        ])
    );
    // The same member twice merges.
    assert_eq!(
        row(&[0, 0x12, 2, 0x08, 5, 0x12, 2, 0x10, 2]),
        BTreeMap::from([
            ("sub_x".to_string(), Val::Long(5)),
            ("sub_xs".to_string(), Val::List(vec![Val::Long(2)])),
            other,
        ])
    );
}

// Regression (fuzz/regressions/protobuf/timestamp-seconds-of-wrong-wire-type):
// a Timestamp's seconds or nanos of another wire type were skipped as if
// unknown (the timestamp read as 0); they are malformed.
#[test]
fn a_timestamp_field_of_the_wrong_wire_type_is_refused() {
    let file = file(SHOP);
    let plan = Plan::compile(&file, &rules(&[]));
    // `at` (field 10): seconds as a fixed32.
    let e = decode(&plan, &[0, 0x52, 5, 0x0d, 1, 0, 0, 0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("wire type 5"), "{e}");
    // Unknown fields of a timestamp are still skipped.
    let (row, _) = decode(&plan, &[0, 0x52, 4, 0x08, 1, 0x18, 7]).unwrap();
    assert_eq!(row["at"], Val::Timestamp(1_000_000));
}

// Regression (fuzz/regressions/protobuf/timestamp-occurring-twice-not-merged):
// a second occurrence of a Timestamp or wrapper field replaced the first;
// like any message field it merges into it, its absent fields keeping the
// earlier values.
#[test]
fn a_well_known_field_that_occurs_twice_merges() {
    let file = file(SHOP);
    let plan = Plan::compile(&file, &rules(&[]));
    let mut first = vec![0x08, 1, 0x10];
    varint(123_000, &mut first);
    let mut bytes = vec![0, 0x52, first.len() as u8];
    bytes.extend(&first);
    // at {seconds: 2}; maybe {value: 42}; maybe {}.
    bytes.extend([0x52, 2, 0x08, 2, 0x5a, 2, 0x08, 42, 0x5a, 0]);
    let (row, _) = decode(&plan, &bytes).unwrap();
    assert_eq!(row["at"], Val::Timestamp(2_000_123));
    assert_eq!(row["maybe"], Val::Long(42));
    // Seconds past the range of microseconds are still refused.
    let mut bytes = vec![0, 0x52, 10, 0x08];
    varint(i64::MAX as u64 / 1000, &mut bytes);
    bytes[2] = (bytes.len() - 3) as u8;
    let e = decode(&plan, &bytes).unwrap_err().to_string();
    assert!(e.contains("out of range") && e.contains("`at`"), "{e}");
}
