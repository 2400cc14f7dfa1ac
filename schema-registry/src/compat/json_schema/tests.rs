//! The rules as a table: a writer's schema, a reader's, and whether data
//! written with the first reads with the second (or what the refusal says).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a panic is a failure

use serde_json::{Value as Json, json};

use super::reading_problems;

/// Accepted, or refused with a message containing this text.
const OK: Option<&str> = None;

/// One row: what it shows, writer, reader, expected outcome.
type Row = (&'static str, Json, Json, Option<&'static str>);

fn object(properties: Json) -> Json {
    json!({"type": "object", "properties": properties})
}

fn closed(properties: Json) -> Json {
    json!({"type": "object", "properties": properties, "additionalProperties": false})
}

/// `schema` with these keywords added.
fn with(mut schema: Json, keywords: Json) -> Json {
    if let (Some(schema), Json::Object(keywords)) = (schema.as_object_mut(), keywords) {
        schema.extend(keywords);
    }
    schema
}

#[rustfmt::skip]
fn types() -> Vec<Row> {
    let (int, num, string) = (json!({"type": "integer"}), json!({"type": "number"}), json!({"type": "string"}));
    vec![
        ("same type", int.clone(), int.clone(), OK),
        ("integer widened to number", int.clone(), num.clone(), OK),
        ("number narrowed to integer", num.clone(), int.clone(),
            Some(r#"#: type changed from "number" to "integer""#)),
        ("unrelated type", string.clone(), int.clone(),
            Some(r#"#: type changed from "string" to "integer""#)),
        ("type widened to a list", string.clone(), json!({"type": ["string", "null"]}), OK),
        ("type narrowed from a list", json!({"type": ["string", "null"]}), string.clone(),
            Some(r#"type changed from ["string", "null"] to "string""#)),
        ("type list grows", json!({"type": ["integer", "null"]}), json!({"type": ["number", "null", "string"]}), OK),
        ("type widened to oneOf", string.clone(), json!({"oneOf": [{"type": "number"}, {"type": "string"}]}), OK),
        ("a bound inside the widened type", json!({"type": "string", "maxLength": 9}),
            json!({"type": ["string", "null"], "maxLength": 5}), Some("#: maxLength lowered from 9 to 5")),
        ("anything read as true", int.clone(), json!(true), OK),
        ("anything read as {}", int.clone(), json!({"title": "anything"}), OK),
        ("true read as a type", json!(true), string.clone(), Some(r#"from any value (true) to "string""#)),
        ("false read as anything", json!(false), string.clone(), OK),
        ("a type read as false", string.clone(), json!(false), Some("to no value (false)")),
        ("title and description ignored", json!({"type": "string", "title": "a", "description": "b"}),
            json!({"type": "string", "title": "c"}), OK),
    ]
}

#[rustfmt::skip]
fn scalars() -> Vec<Row> {
    let s = |keywords: Json| with(json!({"type": "string"}), keywords);
    let n = |keywords: Json| with(json!({"type": "number"}), keywords);
    vec![
        ("maxLength raised", s(json!({"maxLength": 5})), s(json!({"maxLength": 9})), OK),
        ("maxLength lowered", s(json!({"maxLength": 9})), s(json!({"maxLength": 5})),
            Some("#: maxLength lowered from 9 to 5 (data written earlier may exceed it)")),
        ("maxLength added", s(json!({})), s(json!({"maxLength": 5})), Some("maxLength 5 added")),
        ("maxLength removed", s(json!({"maxLength": 5})), s(json!({})), OK),
        ("minLength lowered", s(json!({"minLength": 3})), s(json!({"minLength": 1})), OK),
        ("minLength raised", s(json!({"minLength": 1})), s(json!({"minLength": 3})), Some("minLength raised from 1 to 3")),
        ("pattern removed", s(json!({"pattern": "^a"})), s(json!({})), OK),
        ("pattern added", s(json!({})), s(json!({"pattern": "^a"})), Some(r#"pattern "^a" added"#)),
        ("pattern changed", s(json!({"pattern": "^a"})), s(json!({"pattern": "^b"})),
            Some(r#"pattern changed from "^a" to "^b""#)),
        ("maximum raised", n(json!({"maximum": 10})), n(json!({"maximum": 20})), OK),
        ("maximum lowered", n(json!({"maximum": 20})), n(json!({"maximum": 10})), Some("maximum lowered from 20 to 10")),
        ("maximum added", n(json!({})), n(json!({"maximum": 10})), Some("maximum 10 added")),
        ("minimum removed", n(json!({"minimum": 0})), n(json!({})), OK),
        ("minimum raised", n(json!({"minimum": 0})), n(json!({"minimum": 1.5})), Some("minimum raised from 0 to 1.5")),
        ("exclusiveMaximum raised", n(json!({"exclusiveMaximum": 1})), n(json!({"exclusiveMaximum": 2})), OK),
        ("exclusiveMaximum lowered", n(json!({"exclusiveMaximum": 2})), n(json!({"exclusiveMaximum": 1})),
            Some("exclusiveMaximum lowered from 2 to 1")),
        ("exclusiveMinimum lowered", n(json!({"exclusiveMinimum": 2})), n(json!({"exclusiveMinimum": 1})), OK),
        ("exclusiveMinimum added", n(json!({})), n(json!({"exclusiveMinimum": 0})), Some("exclusiveMinimum 0 added")),
        ("multipleOf divides the old one", n(json!({"multipleOf": 10})), n(json!({"multipleOf": 2.5})), OK),
        ("multipleOf does not divide", n(json!({"multipleOf": 10})), n(json!({"multipleOf": 3})),
            Some("multipleOf changed from 10 to 3")),
        ("multipleOf added", n(json!({})), n(json!({"multipleOf": 2})), Some("multipleOf 2 added")),
        ("enum value added", json!({"enum": ["a", "b"]}), json!({"enum": ["a", "b", "c"]}), OK),
        ("enum value removed", json!({"enum": ["a", "b"]}), json!({"enum": ["a"]}),
            Some(r#"#: enum value "b" removed"#)),
        ("enum beside a type, value added", json!({"type": "string", "enum": ["a"]}),
            json!({"type": "string", "enum": ["a", "b"]}), OK),
        ("enum beside a type, value removed", json!({"type": "string", "enum": ["a", "b"]}),
            json!({"type": "string", "enum": ["b"]}), Some(r#"#: enum value "a" removed"#)),
        ("enum added beside a type", json!({"type": "string"}), json!({"type": "string", "enum": ["a"]}),
            Some(r#"#: narrowed from "string" to "string" with enum ["a"]"#)),
        ("enum dropped beside a type", json!({"type": "string", "enum": ["a"]}), json!({"type": "string"}), OK),
        ("const kept", json!({"const": 1}), json!({"const": 1}), OK),
        ("const changed", json!({"const": 1}), json!({"const": 2}), Some("#: const changed from 1 to 2")),
    ]
}

#[rustfmt::skip]
fn objects() -> Vec<Row> {
    let id = json!({"id": {"type": "integer"}});
    let id_email = json!({"id": {"type": "integer"}, "email": {"type": "string"}});
    let required = |mut schema: Json, names: Json| {
        schema["required"] = names;
        schema
    };
    vec![
        ("optional property added to a closed model", closed(id.clone()), closed(id_email.clone()), OK),
        ("optional property added to an open model", object(id.clone()), object(id_email.clone()),
            Some(concat!(r#"#/properties: property "email" added to an open content model "#,
                "(data written earlier may hold any value under that name)"))),
        ("property of any value added to an open model", object(id.clone()),
            object(json!({"id": {"type": "integer"}, "email": true})), OK),
        ("required property added to a closed model", closed(id.clone()), required(closed(id_email.clone()), json!(["email"])),
            Some(r#"#/properties: required property "email" added (data written earlier lacks it"#)),
        ("required property with a default added to a closed model", closed(id.clone()),
            required(closed(json!({"id": {"type": "integer"}, "email": {"type": "string", "default": ""}})), json!(["email"])),
            OK),
        ("property removed from an open model", object(id_email.clone()), object(id.clone()), OK),
        ("property removed from a closed model", closed(id_email.clone()), closed(id.clone()),
            Some(r#"#/properties: property "email" removed from a closed content model"#)),
        ("property false removed from a closed model", closed(json!({"id": {"type": "integer"}, "x": false})),
            closed(id.clone()), OK),
        ("property became required", object(id_email.clone()), required(object(id_email.clone()), json!(["email"])),
            Some(r#"#/required: property "email" became required"#)),
        ("property became required, with a default", object(id_email.clone()),
            required(object(json!({"id": {"type": "integer"}, "email": {"type": "string", "default": "-"}})), json!(["email"])),
            OK),
        ("property no longer required", required(object(id_email.clone()), json!(["email"])), object(id_email.clone()), OK),
        ("nested property narrowed",
            object(json!({"address": object(json!({"zip": {"type": "number"}}))})),
            object(json!({"address": object(json!({"zip": {"type": "integer"}}))})),
            Some(r#"#/properties/address/properties/zip: type changed from "number" to "integer""#)),
        ("property removed, covered by additionalProperties",
            closed(id_email.clone()),
            json!({"type": "object", "properties": id, "additionalProperties": {"type": "string"}}), OK),
        ("property removed, refused by additionalProperties",
            closed(id_email.clone()), json!({"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}),
            Some(r#"#/properties/id: type changed from "integer" to "string""#)),
        ("property added, covered by patternProperties",
            json!({"type": "object", "patternProperties": {"^n_": {"type": "integer"}}, "additionalProperties": false}),
            json!({"type": "object", "properties": {"n_1": {"type": "number"}},
                   "patternProperties": {"^n_": {"type": "integer"}}, "additionalProperties": false}), OK),
        ("property added, not covered by patternProperties",
            json!({"type": "object", "patternProperties": {"^n_": {"type": "number"}}, "additionalProperties": false}),
            json!({"type": "object", "properties": {"n_1": {"type": "integer"}},
                   "patternProperties": {"^n_": {"type": "number"}}, "additionalProperties": false}),
            Some(r#"#/properties/n_1: type changed from "number" to "integer""#)),
        ("additionalProperties opened", closed(id.clone()), object(id.clone()), OK),
        ("additionalProperties closed", object(id.clone()), closed(id.clone()),
            Some("#/additionalProperties: additionalProperties became false")),
        ("additionalProperties narrowed to a schema", object(json!({})),
            json!({"type": "object", "additionalProperties": {"type": "string"}}), Some("narrowed from anything to a schema")),
        ("additionalProperties schema widened", json!({"additionalProperties": {"type": "integer"}}),
            json!({"additionalProperties": {"type": "number"}}), OK),
        ("dependency removed", json!({"dependencies": {"a": ["b"]}}), json!({}), OK),
        ("dependency added", json!({"type": "object"}), json!({"type": "object", "dependencies": {"a": ["b"]}}),
            Some(r#"#/dependencies: "a" now needs properties ["b"]"#)),
        ("maxProperties lowered", json!({"maxProperties": 3}), json!({"maxProperties": 2}), Some("maxProperties lowered")),
        ("escaped property names in paths",
            object(json!({"a/b": {"type": "number"}})), object(json!({"a/b": {"type": "integer"}})),
            Some("#/properties/a~1b: type changed")),
    ]
}

#[rustfmt::skip]
fn arrays() -> Vec<Row> {
    let items = |schema: Json| json!({"type": "array", "items": schema});
    let tuple = |list: Json, additional: bool| json!({"type": "array", "items": list, "additionalItems": additional});
    vec![
        ("items widened", items(json!({"type": "integer"})), items(json!({"type": "number"})), OK),
        ("items narrowed", items(json!({"type": "number"})), items(json!({"type": "integer"})),
            Some(r#"#/items: type changed from "number" to "integer""#)),
        ("items given", json!({"type": "array"}), items(json!({"type": "string"})), Some("#/items: type changed")),
        ("items dropped", items(json!({"type": "string"})), json!({"type": "array"}), OK),
        ("nested items",
            items(items(object(json!({"a": {"type": "string"}})))), items(items(object(json!({"a": {"type": "number"}})))),
            Some("#/items/items/properties/a: type changed")),
        ("maxItems raised", json!({"type": "array", "maxItems": 1}), json!({"type": "array", "maxItems": 2}), OK),
        ("maxItems lowered", json!({"type": "array", "maxItems": 2}), json!({"type": "array", "maxItems": 1}),
            Some("maxItems lowered from 2 to 1")),
        ("minItems raised", json!({"type": "array"}), json!({"type": "array", "minItems": 1}), Some("minItems 1 added")),
        ("minItems removed", json!({"type": "array", "minItems": 1}), json!({"type": "array"}), OK),
        ("uniqueItems added", json!({"type": "array"}), json!({"type": "array", "uniqueItems": true}), Some("uniqueItems added")),
        ("tuple item added to a closed tuple", tuple(json!([{"type": "string"}]), false),
            tuple(json!([{"type": "string"}, {"type": "number"}]), false), OK),
        ("tuple item removed from a closed tuple", tuple(json!([{"type": "string"}, {"type": "number"}]), false),
            tuple(json!([{"type": "string"}]), false), Some("#/items/1: item removed from a closed tuple")),
        ("tuple item added to an open tuple", tuple(json!([{"type": "string"}]), true),
            tuple(json!([{"type": "string"}, {"type": "number"}]), true), Some("#/items/1: item added to an open tuple")),
        ("prefixItems item removed, covered by items",
            json!({"prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false}),
            json!({"prefixItems": [{"type": "string"}], "items": {"type": "number"}}), OK),
    ]
}

#[rustfmt::skip]
fn references_and_combinations() -> Vec<Row> {
    let defs = |zip: &str| json!({
        "type": "object",
        "properties": {"home": {"$ref": "#/definitions/address"}, "work": {"$ref": "#/$defs/address"}},
        "definitions": {"address": {"type": "object", "properties": {"zip": {"type": zip}}}},
        "$defs": {"address": {"$ref": "#/definitions/address"}},
    });
    let list = |value: &str| json!({
        "$ref": "#/definitions/node",
        "definitions": {"node": {"type": "object", "properties": {
            "value": {"type": value}, "next": {"$ref": "#/definitions/node"}}}},
    });
    vec![
        ("$ref followed, widened", defs("integer"), defs("number"), OK),
        ("$ref followed, narrowed", defs("number"), defs("integer"),
            Some(r#"#/properties/home/properties/zip: type changed from "number" to "integer""#)),
        ("$defs followed", defs("number"), defs("integer"), Some("#/properties/work/properties/zip: type changed")),
        ("moved into a definition", json!({"type": "string"}),
            json!({"$ref": "#/definitions/s", "definitions": {"s": {"type": "string"}}}), OK),
        ("recursive schema, widened", list("integer"), list("number"), OK),
        ("recursive schema, narrowed", list("number"), list("integer"),
            Some(r#"#/properties/value: type changed from "number" to "integer""#)),
        ("remote $ref", json!({"type": "string"}), json!({"$ref": "other.json#/s"}),
            Some(r#"#: $ref "other.json#/s" cannot be followed"#)),
        ("the same remote $ref on both sides", json!({"$ref": "other.json"}), json!({"$ref": "other.json"}), OK),
        ("$ref to nothing", json!({"type": "string"}), json!({"$ref": "#/definitions/none"}),
            Some(r##"$ref "#/definitions/none" points to nothing"##)),
        ("$ref loop", json!({"type": "string"}),
            json!({"$ref": "#/definitions/a", "definitions": {"a": {"$ref": "#/definitions/a"}}}),
            Some("go round in a loop")),
        ("anyOf gains a subschema", json!({"anyOf": [{"type": "string"}]}),
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}), OK),
        ("anyOf loses a subschema", json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
            json!({"anyOf": [{"type": "string"}]}), Some("#: anyOf lost 1 subschema(s)")),
        ("oneOf gains a subschema", json!({"oneOf": [{"type": "string"}, {"type": "null"}]}),
            json!({"oneOf": [{"type": "null"}, {"type": "string"}, {"type": "integer"}]}), OK),
        ("oneOf subschema narrowed", json!({"oneOf": [{"type": "number"}, {"type": "null"}]}),
            json!({"oneOf": [{"type": "integer"}, {"type": "null"}]}),
            Some(r#"#/oneOf/0: type changed from "number" to "integer""#)),
        ("allOf loses a subschema", json!({"allOf": [{"type": "string"}, {"maxLength": 3}]}),
            json!({"allOf": [{"type": "string"}]}), OK),
        ("allOf gains a subschema", json!({"allOf": [{"type": "string"}]}),
            json!({"allOf": [{"type": "string"}, {"maxLength": 3}]}), Some("#: allOf gained 1 subschema(s)")),
        ("oneOf becomes anyOf", json!({"oneOf": [{"type": "string"}, {"type": "null"}]}),
            json!({"anyOf": [{"type": "string"}, {"type": "null"}]}), OK),
        ("anyOf becomes oneOf", json!({"anyOf": [{"type": "string"}, {"type": "null"}]}),
            json!({"oneOf": [{"type": "string"}, {"type": "null"}]}), Some("#: anyOf changed to oneOf")),
        ("not narrowed", json!({"not": {"type": "number"}}), json!({"not": {"type": "integer"}}), OK),
        ("not widened", json!({"not": {"type": "integer"}}), json!({"not": {"type": "number"}}),
            Some("#/not: the reader's `not` refuses values")),
    ]
}

#[test]
fn every_rule_accepts_and_refuses_as_the_table_says() {
    let mut failures = Vec::new();
    let rows = [
        types(),
        scalars(),
        objects(),
        arrays(),
        references_and_combinations(),
    ];
    for (what, writer, reader, expected) in rows.into_iter().flatten() {
        let problems = reading_problems(&writer, &reader);
        let matches = match expected {
            None => problems.is_empty(),
            Some(text) => problems.iter().any(|p| p.contains(text)),
        };
        if !matches {
            failures.push(format!("{what}: expected {expected:?}, got {problems:?}"));
        }
        if let Some(problem) = problems.iter().find(|p| !p.starts_with('#')) {
            failures.push(format!("{what}: a message without a path: {problem}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_schema_reads_its_own_data() {
    for (_, writer, reader, _) in [
        types(),
        scalars(),
        objects(),
        arrays(),
        references_and_combinations(),
    ]
    .into_iter()
    .flatten()
    {
        for schema in [writer, reader] {
            let problems = reading_problems(&schema, &schema);
            assert!(problems.is_empty(), "{schema}: {problems:?}");
        }
    }
}

/// Subschemas are compared pairwise, and `$ref`s can nest that: the walk is
/// bounded, and a schema past the bound is refused rather than compared
/// for hours.
#[test]
fn an_exponential_schema_is_refused_quickly() {
    let mut definitions = serde_json::Map::new();
    for i in 0..12 {
        let next = json!({"$ref": format!("#/definitions/d{}", i + 1)});
        definitions.insert(
            format!("d{i}"),
            json!({"anyOf": [next, {"type": "array", "items": next}, {"type": "object", "additionalProperties": next}]}),
        );
    }
    let schema = |leaf: &str| {
        let mut definitions = definitions.clone();
        definitions.insert("d12".into(), json!({"type": leaf}));
        json!({"$ref": "#/definitions/d0", "definitions": definitions})
    };
    let started = std::time::Instant::now();
    let problems = reading_problems(&schema("number"), &schema("integer"));
    assert!(
        problems.iter().any(|p| p.contains("too intricate")),
        "{problems:?}"
    );
    assert!(
        started.elapsed().as_secs() < 30,
        "took {:?}",
        started.elapsed()
    );
}

/// A chain of `$ref`s `links` long, each inside the one before (as a
/// property, an item, in an `anyOf`, in a `oneOf` beside a `type`), ending
/// in `leaf`.
fn chain(links: usize, leaf: &str) -> Json {
    let mut definitions = serde_json::Map::new();
    for i in 0..links {
        let next = json!({"$ref": format!("#/definitions/d{}", i + 1)});
        let link = match i % 4 {
            0 => object(json!({"next": next})),
            1 => json!({"type": "array", "items": next}),
            2 => json!({"anyOf": [{"type": "null"}, next]}),
            _ => json!({"type": ["object", "null"], "oneOf": [next, {"type": "null"}]}),
        };
        definitions.insert(format!("d{i}"), link);
    }
    definitions.insert(format!("d{links}"), json!({"type": leaf}));
    json!({"$ref": "#/definitions/d0", "definitions": definitions})
}

/// Deep schemas are compared within a worker thread's stack (2 MiB, as
/// tokio's), and refused past the depth bound instead of overflowing it.
#[test]
fn a_deep_schema_is_compared_within_the_stack_or_refused() {
    let run = |links: usize| {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || reading_problems(&chain(links, "number"), &chain(links, "integer")))
            .unwrap()
            .join()
            .unwrap()
    };
    // Some links take two levels (the `oneOf` beside a `type`).
    let within = run(super::MAX_DEPTH / 2);
    assert!(
        within.iter().all(|p| !p.contains("nest more than"))
            && within
                .iter()
                .any(|p| p.contains(r#"from "number" to "integer""#)),
        "{within:?}"
    );
    let past = run(20_000);
    assert!(
        past.iter().any(|p| p.contains("nest more than")),
        "{past:?}"
    );
}
