//! The messages of the seed corpus, built with prost-reflect.

use tributary_decode::prost_reflect::{DynamicMessage, FileDescriptor, MapKey, Value};

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
