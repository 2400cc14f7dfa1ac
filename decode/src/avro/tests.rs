use apache_avro::types::Value as Avro;
use proptest::prelude::*;

use super::read::unscaled;
use super::*;
use crate::value::decimal_text;
use serde_json::Value as Json;

const ENVELOPE: &str = r#"{
  "type": "record", "name": "Envelope", "namespace": "t",
  "fields": [
    {"name": "host", "type": "string"},
    {"name": "site", "type": ["null", {"type": "record", "name": "Site",
      "fields": [{"name": "id", "type": "int"}, {"name": "tags", "type": {"type": "map", "values": "string"}}]}]},
    {"name": "messages", "type": {"type": "array", "items": {"type": "record", "name": "Msg", "fields": [
      {"name": "id", "type": "string"},
      {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
      {"name": "level", "type": {"type": "enum", "name": "Level", "symbols": ["INFO", "WARN"]}},
      {"name": "n", "type": ["null", "int", "double"]},
      {"name": "codes", "type": {"type": "array", "items": "long"}},
      {"name": "raw", "type": "bytes"},
      {"name": "day", "type": {"type": "int", "logicalType": "date"}},
      {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}}
    ]}}},
    {"name": "sent", "type": "long"}
  ]}"#;

fn schema(text: &str) -> Schema {
    Schema::parse_str(text).unwrap()
}

fn rules(explode: &[&str]) -> FlattenRules {
    FlattenRules {
        explode: explode.iter().map(|s| s.to_string()).collect(),
        reserved: vec!["_key".into(), "date".into()],
        reserved_prefixes: vec!["_kafka_".into()],
    }
}

fn message(id: &str, n: Avro) -> Avro {
    Avro::Record(vec![
        ("id".into(), Avro::String(id.into())),
        ("ts".into(), Avro::TimestampMillis(1_763_800_000_123)),
        ("level".into(), Avro::Enum(1, "WARN".into())),
        ("n".into(), n),
        (
            "codes".into(),
            Avro::Array(vec![Avro::Long(1), Avro::Long(-2)]),
        ),
        ("raw".into(), Avro::Bytes(vec![0xab, 0x01])),
        ("day".into(), Avro::Date(20_000)),
        (
            "price".into(),
            Avro::Decimal(apache_avro::Decimal::from(vec![0xff, 0x85])),
        ),
    ])
}

fn envelope(messages: Vec<Avro>, site: bool) -> Avro {
    let site = if site {
        Avro::Union(
            1,
            Box::new(Avro::Record(vec![
                ("id".into(), Avro::Int(7)),
                (
                    "tags".into(),
                    Avro::Map([("k".to_string(), Avro::String("v".into()))].into()),
                ),
            ])),
        )
    } else {
        Avro::Union(0, Box::new(Avro::Null))
    };
    Avro::Record(vec![
        ("host".into(), Avro::String("h1".into())),
        ("site".into(), site),
        ("messages".into(), Avro::Array(messages)),
        ("sent".into(), Avro::Long(5)),
    ])
}

fn encode(schema: &Schema, value: Avro) -> Vec<u8> {
    apache_avro::to_avro_datum(schema, value).unwrap()
}

/// Rows as (column name, value) lists, the envelope first in each.
fn flat_rows(plan: &Plan, decoded: &Decoded) -> Vec<Vec<(String, Val<'static>)>> {
    let named = |values: &[(Col, Val<'static>)]| -> Vec<(String, Val<'static>)> {
        values
            .iter()
            .map(|(c, v)| (plan.columns()[*c as usize].to_string(), v.clone()))
            .collect()
    };
    if decoded.elements().is_empty() {
        return vec![named(&decoded.envelope)];
    }
    decoded
        .elements()
        .iter()
        .map(|e| {
            let mut row = named(&decoded.envelope);
            row.extend(named(e));
            row
        })
        .collect()
}

fn s(text: &str) -> Val<'static> {
    Val::Str(text.to_string().into())
}

#[test]
fn envelopes_explode_into_flat_rows_with_converted_logical_types() {
    let writer = schema(ENVELOPE);
    let plan = Plan::compile(&writer, None, &rules(&["messages"])).unwrap();
    let data = encode(
        &writer,
        envelope(
            vec![
                message("a", Avro::Union(1, Box::new(Avro::Int(3)))),
                message("b", Avro::Union(0, Box::new(Avro::Null))),
            ],
            true,
        ),
    );
    let mut decoded = Decoded::default();
    plan.decode(&data, &mut decoded).unwrap();
    let rows = flat_rows(&plan, &decoded);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        vec![
            ("host".into(), s("h1")),
            ("site_id".into(), Val::Long(7)),
            ("site_tags".into(), s(r#"{"k":"v"}"#)),
            ("sent".into(), Val::Long(5)),
            ("messages_id".into(), s("a")),
            ("messages_ts".into(), Val::Timestamp(1_763_800_000_123_000)),
            ("messages_level".into(), s("WARN")),
            ("messages_n".into(), Val::Long(3)),
            (
                "messages_codes".into(),
                Val::List(vec![Val::Long(1), Val::Long(-2)])
            ),
            ("messages_raw".into(), Val::Bytes(vec![0xab, 0x01].into())),
            ("messages_day".into(), Val::Date(20_000)),
            (
                "messages_price".into(),
                Val::Decimal {
                    unscaled: -123,
                    precision: 9,
                    scale: 2
                }
            ),
        ]
    );
    assert_eq!(rows[1][7], ("messages_n".into(), Val::Null));

    // No site, no messages: one row of envelope fields.
    let data = encode(&writer, envelope(vec![], false));
    plan.decode(&data, &mut decoded).unwrap();
    assert_eq!(
        flat_rows(&plan, &decoded),
        vec![vec![
            ("host".into(), s("h1")),
            ("sent".into(), Val::Long(5))
        ]]
    );
}

#[test]
fn without_an_explode_path_arrays_of_records_are_json_text() {
    let writer = schema(ENVELOPE);
    let plan = Plan::compile(&writer, None, &rules(&[])).unwrap();
    let data = encode(
        &writer,
        envelope(
            vec![message("a", Avro::Union(2, Box::new(Avro::Double(0.5))))],
            false,
        ),
    );
    let mut decoded = Decoded::default();
    plan.decode(&data, &mut decoded).unwrap();
    let rows = flat_rows(&plan, &decoded);
    let (name, Val::Str(text)) = &rows[0][1] else {
        panic!("{:?}", rows[0]);
    };
    assert_eq!(name, "messages");
    let json: Json = serde_json::from_str(text).unwrap();
    assert_eq!(json[0]["id"], "a");
    assert_eq!(json[0]["n"], 0.5);
}

#[test]
fn a_reader_schema_resolves_added_removed_promoted_and_renamed_fields() {
    let writer = schema(
        r#"{"type":"record","name":"R","fields":[
            {"name":"a","type":"int"},
            {"name":"gone","type":{"type":"array","items":"string"}},
            {"name":"old","type":"string"},
            {"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y","Z"]}}]}"#,
    );
    let reader = schema(
        r#"{"type":"record","name":"R","fields":[
            {"name":"a","type":"double"},
            {"name":"renamed","aliases":["old"],"type":"string"},
            {"name":"added","type":{"type":"record","name":"In","fields":[{"name":"x","type":"long"}]},"default":{"x":4}},
            {"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"],"default":"X"}}]}"#,
    );
    let plan = Plan::compile(&writer, Some(&reader), &rules(&[])).unwrap();
    let data = encode(
        &writer,
        Avro::Record(vec![
            ("a".into(), Avro::Int(2)),
            ("gone".into(), Avro::Array(vec![Avro::String("zz".into())])),
            ("old".into(), Avro::String("o".into())),
            ("e".into(), Avro::Enum(2, "Z".into())),
        ]),
    );
    let mut decoded = Decoded::default();
    plan.decode(&data, &mut decoded).unwrap();
    assert_eq!(
        flat_rows(&plan, &decoded),
        vec![vec![
            ("a".into(), Val::Double(2.0)),
            ("renamed".into(), s("o")),
            ("e".into(), s("X")),
            ("added_x".into(), Val::Long(4)),
        ]]
    );

    let incompatible =
        schema(r#"{"type":"record","name":"R","fields":[{"name":"new","type":"string"}]}"#);
    assert!(matches!(
        Plan::compile(&writer, Some(&incompatible), &rules(&[])),
        Err(PlanError::Unresolvable(_))
    ));
}

#[test]
fn collisions_reserved_names_and_recursion_are_refused() {
    let collide = schema(
        r#"{"type":"record","name":"R","fields":[{"name":"a_b","type":"int"},
            {"name":"a","type":{"type":"record","name":"A","fields":[{"name":"b","type":"int"}]}}]}"#,
    );
    assert_eq!(
        Plan::compile(&collide, None, &rules(&[])).unwrap_err(),
        PlanError::ColumnCollision("a_b".into())
    );
    let reserved =
        schema(r#"{"type":"record","name":"R","fields":[{"name":"date","type":"int"}]}"#);
    assert_eq!(
        Plan::compile(&reserved, None, &rules(&[])).unwrap_err(),
        PlanError::ReservedColumn("date".into())
    );
    let prefixed =
        schema(r#"{"type":"record","name":"R","fields":[{"name":"_kafka_key","type":"int"}]}"#);
    assert_eq!(
        Plan::compile(&prefixed, None, &rules(&[])).unwrap_err(),
        PlanError::ReservedColumn("_kafka_key".into())
    );
    let recursive = schema(
        r#"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#,
    );
    assert!(matches!(
        Plan::compile(&recursive, None, &rules(&[])),
        Err(PlanError::Recursive(_))
    ));
    // Branches of one union are alternatives, not a collision.
    let branches = schema(
        r#"{"type":"record","name":"R","fields":[{"name":"v","type":["null",
            {"type":"record","name":"A","fields":[{"name":"x","type":"int"}]},
            {"type":"record","name":"B","fields":[{"name":"x","type":"string"}]}]}]}"#,
    );
    assert!(Plan::compile(&branches, None, &rules(&[])).is_ok());
}

#[test]
fn truncated_and_trailing_data_are_errors() {
    let writer = schema(ENVELOPE);
    let plan = Plan::compile(&writer, None, &rules(&["messages"])).unwrap();
    let data = encode(
        &writer,
        envelope(
            vec![message("a", Avro::Union(0, Box::new(Avro::Null)))],
            true,
        ),
    );
    let mut decoded = Decoded::default();
    for cut in 0..data.len() {
        assert!(
            plan.decode(&data[..cut], &mut decoded).is_err(),
            "cut at {cut}"
        );
    }
    let mut longer = data.clone();
    longer.push(0);
    assert_eq!(
        plan.decode(&longer, &mut decoded),
        Err(DecodeError::Trailing(1))
    );
}

#[test]
fn items_that_take_no_bytes_cannot_outnumber_the_record_bytes() {
    let writer = schema(
        r#"{"type":"record","name":"R","fields":[{"name":"h","type":{"type":"array","items":"null"}}]}"#,
    );
    let plan = Plan::compile(&writer, None, &rules(&[])).unwrap();
    let mut decoded = Decoded::default();
    // One null item in two bytes is fine.
    plan.decode(&[0x02, 0x00], &mut decoded).unwrap();
    // Blocks of 2 + 2 + 2 null items in 4 bytes: more items than bytes.
    assert!(
        plan.decode(&[0x04, 0x04, 0x04, 0x00], &mut decoded)
            .is_err()
    );
}

#[test]
fn decimals_format_their_scale() {
    let text = |bytes: &[u8], scale| decimal_text(unscaled(bytes).unwrap(), scale);
    assert_eq!(text(&[0x30, 0x39], 2), "123.45");
    assert_eq!(text(&[0x05], 3), "0.005");
    assert_eq!(text(&[0xff], 0), "-1");
    assert_eq!(unscaled(&[0; 17]), None);
}

proptest! {
    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn arbitrary_bytes_are_an_error_or_rows(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let writer = schema(ENVELOPE);
        let plan = Plan::compile(&writer, None, &rules(&["messages"])).unwrap();
        let mut decoded = Decoded::default();
        let _ = plan.decode(&data, &mut decoded);
    }
}
