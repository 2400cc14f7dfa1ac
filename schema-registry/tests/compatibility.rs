//! The compatibility rules as a table: for each level, sequences of schemas
//! (Avro, then JSON Schema) whose last one must be accepted or refused after
//! the earlier ones.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a panic is a failure

use tributary_schema_registry::schema::{Compatibility, Definition, SchemaType};

/// A record `R` with these fields (JSON text of each field).
fn record(fields: &[&str]) -> Definition {
    let text = format!(
        r#"{{"type":"record","name":"R","fields":[{}]}}"#,
        fields.join(",")
    );
    Definition::parse(SchemaType::Avro, &text).unwrap()
}

const ID: &str = r#"{"name":"id","type":"long"}"#;
const ID_INT: &str = r#"{"name":"id","type":"int"}"#;
const ID_STRING: &str = r#"{"name":"id","type":"string"}"#;
const NOTE_DEFAULT: &str = r#"{"name":"note","type":"string","default":""}"#;
const NOTE: &str = r#"{"name":"note","type":"string"}"#;
const COLOR_RG: &str = r#"{"name":"c","type":{"type":"enum","name":"C","symbols":["R","G"]}}"#;
const COLOR_RGB: &str = r#"{"name":"c","type":{"type":"enum","name":"C","symbols":["R","G","B"]}}"#;
const PRICE: &str =
    r#"{"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}}"#;
const PRICE_WIDER: &str =
    r#"{"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}}"#;
const PRICE_BYTES: &str = r#"{"name":"price","type":"bytes"}"#;
const AMOUNT: &str = r#"{"name":"amount","type":{"type":"fixed","name":"Amount","size":8,"logicalType":"decimal","precision":18,"scale":4}}"#;
const AMOUNT_RESCALED: &str = r#"{"name":"amount","type":{"type":"fixed","name":"Amount","size":8,"logicalType":"decimal","precision":18,"scale":2}}"#;
/// A field of every other logical type (and `duration`), nested in an
/// array, a map and a union.
const LOGICAL: &str = r#"{"name":"t","type":{"type":"record","name":"T","namespace":"ns","fields":[
  {"name":"d","type":{"type":"int","logicalType":"date"}},
  {"name":"tm","type":{"type":"int","logicalType":"time-millis"}},
  {"name":"tu","type":{"type":"long","logicalType":"time-micros"}},
  {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"tsu","type":{"type":"long","logicalType":"timestamp-micros"}},
  {"name":"lts","type":{"type":"long","logicalType":"local-timestamp-millis"}},
  {"name":"ltsu","type":{"type":"long","logicalType":"local-timestamp-micros"}},
  {"name":"u","type":{"type":"string","logicalType":"uuid"}},
  {"name":"dur","type":{"type":"fixed","name":"Dur","size":12,"logicalType":"duration"}},
  {"name":"prices","type":{"type":"array","items":{"type":"bytes","logicalType":"decimal","precision":9,"scale":3}}},
  {"name":"by_day","type":{"type":"map","values":["null",{"type":"int","logicalType":"date"}]}},
  {"name":"again","type":["null","ns.Dur"]}]}}"#;

/// A JSON Schema object with these properties (the JSON text of each
/// `"name": schema`) and these further keywords (JSON text, or empty).
fn object(properties: &[&str], keywords: &[&str]) -> Definition {
    let mut text = format!(
        r#"{{"type":"object","properties":{{{}}}"#,
        properties.join(",")
    );
    for keyword in keywords {
        text.push(',');
        text.push_str(keyword);
    }
    text.push('}');
    Definition::parse(SchemaType::Json, &text).unwrap()
}

const P_ID: &str = r#""id":{"type":"integer"}"#;
const P_ID_NUMBER: &str = r#""id":{"type":"number"}"#;
const P_NOTE: &str = r#""note":{"type":"string"}"#;
const P_NOTE_NULLABLE: &str = r#""note":{"type":["string","null"]}"#;
const P_NOTE_DEFAULT: &str = r#""note":{"type":"string","default":""}"#;
const P_COLOR_RG: &str = r#""c":{"enum":["R","G"]}"#;
const P_COLOR_RGB: &str = r#""c":{"enum":["R","G","B"]}"#;
/// No properties but the listed ones.
const CLOSED: &str = r#""additionalProperties":false"#;
const NOTE_REQUIRED: &str = r#""required":["note"]"#;

/// A Protobuf file of package `shop` with message `Order` holding these
/// fields, and any further `extra` text.
fn proto(fields: &[&str], extra: &str) -> Definition {
    let text = format!(
        "syntax = \"proto3\";\npackage shop;\nmessage Order {{ {} }}\n{extra}",
        fields.join(" ")
    );
    Definition::parse(SchemaType::Protobuf, &text).unwrap()
}

const F_ID: &str = "int64 id = 1;";
const F_ID_INT32: &str = "int32 id = 1;";
const F_ID_STRING: &str = "string id = 1;";
const F_IDS: &str = "repeated int64 id = 1;";
const F_NOTE: &str = "string note = 2;";
const F_AT: &str = "google.protobuf.Timestamp at = 3;";
const IMPORT_TIMESTAMP: &str = "import \"google/protobuf/timestamp.proto\";";
const LINE: &str = "message Line { string sku = 1; }";

/// What happens when a new version is added to the history.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Accepted,
    Refused,
}
use Outcome::{Accepted, Refused};

struct Case {
    what: &'static str,
    history: Vec<Definition>,
    new: Definition,
    /// One outcome per level, in the order of [`Compatibility::ALL`]:
    /// NONE, DISABLED, BACKWARD, BACKWARD_TRANSITIVE, FORWARD,
    /// FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE.
    expected: [Outcome; 8],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "add a field with a default",
            history: vec![record(&[ID])],
            new: record(&[ID, NOTE_DEFAULT]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Accepted, Accepted, Accepted, Accepted,
            ],
        },
        Case {
            what: "add a field without a default (old data lacks it; old readers ignore it)",
            history: vec![record(&[ID])],
            new: record(&[ID, NOTE]),
            expected: [
                Accepted, Refused, Refused, Refused, Accepted, Accepted, Refused, Refused,
            ],
        },
        Case {
            what: "remove a field without a default (new readers ignore it; old readers miss it)",
            history: vec![record(&[ID, NOTE])],
            new: record(&[ID]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "remove a field with a default",
            history: vec![record(&[ID, NOTE_DEFAULT])],
            new: record(&[ID]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Accepted, Accepted, Accepted, Accepted,
            ],
        },
        Case {
            what: "promote int to long (a long reader reads ints, not the reverse)",
            history: vec![record(&[ID_INT])],
            new: record(&[ID]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "narrow long to int",
            history: vec![record(&[ID])],
            new: record(&[ID_INT]),
            expected: [
                Accepted, Refused, Refused, Refused, Accepted, Accepted, Refused, Refused,
            ],
        },
        Case {
            what: "change a type to an unrelated one",
            history: vec![record(&[ID])],
            new: record(&[ID_STRING]),
            expected: [
                Accepted, Refused, Refused, Refused, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "add an enum symbol (old readers cannot read it)",
            history: vec![record(&[COLOR_RG])],
            new: record(&[COLOR_RGB]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "remove an enum symbol",
            history: vec![record(&[COLOR_RGB])],
            new: record(&[COLOR_RG]),
            expected: [
                Accepted, Refused, Refused, Refused, Accepted, Accepted, Refused, Refused,
            ],
        },
        Case {
            what: "the same schema again is always compatible except under DISABLED",
            history: vec![record(&[ID])],
            new: record(&[ID]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Accepted, Accepted, Accepted, Accepted,
            ],
        },
        Case {
            // v1 has a string `note`, v2 dropped it, v3 brings it back as an
            // int with a default: fine with v2 either way, but v3 cannot
            // read v1's strings, nor v1 v3's ints.
            what: "transitive levels check every earlier version, the others only the latest",
            history: vec![record(&[ID, NOTE]), record(&[ID])],
            new: record(&[ID, r#"{"name":"note","type":"int","default":0}"#]),
            expected: [
                Accepted, Refused, Accepted, Refused, Accepted, Refused, Accepted, Refused,
            ],
        },
        Case {
            what: "add a field with a default beside a bytes decimal and a fixed decimal",
            history: vec![record(&[ID, PRICE, AMOUNT])],
            new: record(&[ID, PRICE, AMOUNT, NOTE_DEFAULT]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Accepted, Accepted, Accepted, Accepted,
            ],
        },
        Case {
            what: "add a field with a default beside every other logical type, nested",
            history: vec![record(&[ID, LOGICAL])],
            new: record(&[ID, LOGICAL, NOTE_DEFAULT]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Accepted, Accepted, Accepted, Accepted,
            ],
        },
        Case {
            what: "change a bytes decimal's precision (decimals match only when equal)",
            history: vec![record(&[ID, PRICE])],
            new: record(&[ID, PRICE_WIDER]),
            expected: [
                Accepted, Refused, Refused, Refused, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "change a fixed decimal's scale",
            history: vec![record(&[ID, AMOUNT])],
            new: record(&[ID, AMOUNT_RESCALED]),
            expected: [
                Accepted, Refused, Refused, Refused, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "turn a bytes decimal into plain bytes",
            history: vec![record(&[ID, PRICE])],
            new: record(&[ID, PRICE_BYTES]),
            expected: [
                Accepted, Refused, Refused, Refused, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "JSON Schema: add an optional property to a closed content model (old readers \
                   refuse it)",
            history: vec![object(&[P_ID], &[CLOSED])],
            new: object(&[P_ID, P_NOTE], &[CLOSED]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "JSON Schema: add a property to an open content model (data written earlier \
                   may hold any value under its name)",
            history: vec![object(&[P_ID], &[])],
            new: object(&[P_ID, P_NOTE], &[]),
            expected: [
                Accepted, Refused, Refused, Refused, Accepted, Accepted, Refused, Refused,
            ],
        },
        Case {
            what: "JSON Schema: remove a property from an open content model",
            history: vec![object(&[P_ID, P_NOTE], &[])],
            new: object(&[P_ID], &[]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "JSON Schema: remove a property from a closed content model",
            history: vec![object(&[P_ID, P_NOTE], &[CLOSED])],
            new: object(&[P_ID], &[CLOSED]),
            expected: [
                Accepted, Refused, Refused, Refused, Accepted, Accepted, Refused, Refused,
            ],
        },
        Case {
            what: "JSON Schema: narrow number to integer",
            history: vec![object(&[P_ID_NUMBER], &[])],
            new: object(&[P_ID], &[]),
            expected: [
                Accepted, Refused, Refused, Refused, Accepted, Accepted, Refused, Refused,
            ],
        },
        Case {
            what: "JSON Schema: widen integer to number",
            history: vec![object(&[P_ID], &[])],
            new: object(&[P_ID_NUMBER], &[]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "JSON Schema: widen a type to a list of types (make it nullable)",
            history: vec![object(&[P_ID, P_NOTE], &[])],
            new: object(&[P_ID, P_NOTE_NULLABLE], &[]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "JSON Schema: make a property required (data written earlier may lack it)",
            history: vec![object(&[P_ID, P_NOTE], &[])],
            new: object(&[P_ID, P_NOTE], &[NOTE_REQUIRED]),
            expected: [
                Accepted, Refused, Refused, Refused, Accepted, Accepted, Refused, Refused,
            ],
        },
        Case {
            what: "JSON Schema: make a property with a default required",
            history: vec![object(&[P_ID, P_NOTE_DEFAULT], &[])],
            new: object(&[P_ID, P_NOTE_DEFAULT], &[NOTE_REQUIRED]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Accepted, Accepted, Accepted, Accepted,
            ],
        },
        Case {
            what: "JSON Schema: add a required property to a closed content model",
            history: vec![object(&[P_ID], &[CLOSED])],
            new: object(&[P_ID, P_NOTE], &[CLOSED, NOTE_REQUIRED]),
            expected: [
                Accepted, Refused, Refused, Refused, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "JSON Schema: add an enum value",
            history: vec![object(&[P_COLOR_RG], &[])],
            new: object(&[P_COLOR_RGB], &[]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            // v1 had an integer id, v2 a number: v3 repeats v2, which v1
            // cannot read.
            what: "JSON Schema: transitive levels check every earlier version",
            history: vec![object(&[P_ID], &[]), object(&[P_ID_NUMBER], &[])],
            new: object(&[P_ID_NUMBER], &[]),
            expected: [
                Accepted, Refused, Accepted, Accepted, Accepted, Refused, Accepted, Refused,
            ],
        },
        Case {
            what: "Protobuf: add a field (old readers skip it, new readers default it)",
            history: vec![proto(&[F_ID], "")],
            new: proto(&[F_ID, F_NOTE], ""),
            expected: [
                Accepted, Refused, Accepted, Accepted, Accepted, Accepted, Accepted, Accepted,
            ],
        },
        Case {
            what: "Protobuf: remove a field",
            history: vec![proto(&[F_ID, F_NOTE], "")],
            new: proto(&[F_ID], ""),
            expected: [
                Accepted, Refused, Accepted, Accepted, Accepted, Accepted, Accepted, Accepted,
            ],
        },
        Case {
            what: "Protobuf: int32 to int64 (one wire encoding)",
            history: vec![proto(&[F_ID_INT32], "")],
            new: proto(&[F_ID], ""),
            expected: [
                Accepted, Refused, Accepted, Accepted, Accepted, Accepted, Accepted, Accepted,
            ],
        },
        Case {
            what: "Protobuf: int64 to string",
            history: vec![proto(&[F_ID], "")],
            new: proto(&[F_ID_STRING], ""),
            expected: [
                Accepted, Refused, Refused, Refused, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "Protobuf: a number field becomes repeated",
            history: vec![proto(&[F_ID], "")],
            new: proto(&[F_IDS], ""),
            expected: [
                Accepted, Refused, Refused, Refused, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "Protobuf: remove a message type (old data may be of it)",
            history: vec![proto(&[F_ID], LINE)],
            new: proto(&[F_ID], ""),
            expected: [
                Accepted, Refused, Refused, Refused, Accepted, Accepted, Refused, Refused,
            ],
        },
        Case {
            what: "Protobuf: add a well-known Timestamp field",
            history: vec![proto(&[F_ID], "")],
            new: proto(&[F_ID, F_AT], IMPORT_TIMESTAMP),
            expected: [
                Accepted, Refused, Accepted, Accepted, Accepted, Accepted, Accepted, Accepted,
            ],
        },
        Case {
            what: "another format after an Avro version",
            history: vec![record(&[ID])],
            new: proto(&[F_ID], ""),
            expected: [
                Accepted, Refused, Refused, Refused, Refused, Refused, Refused, Refused,
            ],
        },
        Case {
            what: "a first version is accepted at every level, DISABLED included",
            history: vec![],
            new: record(&[ID]),
            expected: [Accepted; 8],
        },
    ]
}

#[test]
fn every_level_accepts_and_refuses_as_the_table_says() {
    let mut failures = Vec::new();
    for case in cases() {
        for (level, expected) in Compatibility::ALL.into_iter().zip(case.expected) {
            let messages = level.check(&case.new, &case.history);
            let outcome = if messages.is_empty() {
                Accepted
            } else {
                Refused
            };
            if outcome != expected {
                failures.push(format!(
                    "{}: {level} gave {outcome:?}, expected {expected:?} ({messages:?})",
                    case.what
                ));
            }
            if outcome == Refused {
                assert!(
                    messages.iter().all(|m| !m.is_empty()),
                    "{}: {level}: a refusal says why",
                    case.what
                );
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
