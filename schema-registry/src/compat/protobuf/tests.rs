//! Each rule as a pair of `.proto` files compiled with protox: accepted, or
//! rejected with a problem that names the element.

use prost_reflect::FileDescriptor;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use super::reading_problems;

/// `.proto` sources by file name, for protox to import from.
struct Sources(Vec<(&'static str, String)>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.iter().find(|(file, _)| *file == name) {
            Some((file, source)) => File::from_source(file, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Compiles `schema.proto` (its imports from `imports` or the well-known
/// types) into a descriptor.
fn compile(schema: &str, imports: &[(&'static str, &str)]) -> FileDescriptor {
    let mut files = vec![("schema.proto", schema.to_owned())];
    files.extend(imports.iter().map(|(name, text)| (*name, text.to_string())));
    let mut resolver = ChainFileResolver::new();
    resolver.add(Sources(files));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler
        .open_file("schema.proto")
        .unwrap_or_else(|e| panic!("{e}\n{schema}"));
    compiler
        .descriptor_pool()
        .get_file_by_name("schema.proto")
        .expect("compiled")
}

/// A proto3 file in package `shop` with `body`.
fn proto3(body: &str) -> String {
    format!("syntax = \"proto3\";\npackage shop;\n{body}")
}

/// A proto2 file in package `shop` with `body`.
fn proto2(body: &str) -> String {
    format!("syntax = \"proto2\";\npackage shop;\n{body}")
}

/// The problems reading data written with proto3 `writer` using proto3
/// `reader`.
fn problems(writer: &str, reader: &str) -> Vec<String> {
    reading_problems(
        &compile(&proto3(writer), &[]),
        &compile(&proto3(reader), &[]),
    )
}

/// Cases by rule: (rule, writer's body, reader's body, `None` when
/// compatible or a fragment of the expected problem). Bodies are proto3 in
/// package `shop`.
// A table reads best one case to a line, which rustfmt would undo.
#[rustfmt::skip]
const CASES: &[(&str, &str, &str, Option<&str>)] = &[
    // Fields by number.
    ("field added", "message M { int32 a = 1; }", "message M { int32 a = 1; string b = 2; }", None),
    ("field removed", "message M { int32 a = 1; string b = 2; }", "message M { int32 a = 1; }", None),
    ("field renamed", "message M { int32 a = 1; }", "message M { int32 b = 1; }", None),
    ("field renumbered", "message M { int32 a = 1; }", "message M { int32 a = 2; }", None),
    // Scalar groups.
    ("int32 to int64", "message M { int32 a = 1; }", "message M { int64 a = 1; }", None),
    ("uint64 to bool", "message M { uint64 a = 1; }", "message M { bool a = 1; }", None),
    ("sint32 to sint64", "message M { sint32 a = 1; }", "message M { sint64 a = 1; }", None),
    ("fixed32 to sfixed32", "message M { fixed32 a = 1; }", "message M { sfixed32 a = 1; }", None),
    ("fixed64 to sfixed64", "message M { fixed64 a = 1; }", "message M { sfixed64 a = 1; }", None),
    ("string to bytes", "message M { string a = 1; }", "message M { bytes a = 1; }", None),
    ("int32 to enum", "message M { int32 a = 1; }", "message M { E a = 1; } enum E { Z = 0; }", None),
    ("enum to uint32", "message M { E a = 1; } enum E { Z = 0; }", "message M { uint32 a = 1; }", None),
    ("int32 to sint32", "message M { int32 a = 1; }", "message M { sint32 a = 1; }",
        Some(r#"message .shop.M field 1 ("a"): type changed from int32 to sint32"#)),
    ("int64 to string", "message M { int64 a = 1; }", "message M { string a = 1; }", Some("int64 to string")),
    ("fixed32 to fixed64", "message M { fixed32 a = 1; }", "message M { fixed64 a = 1; }", Some("fixed32 to fixed64")),
    ("float to double", "message M { float a = 1; }", "message M { double a = 1; }", Some("float to double")),
    ("enum to string", "message M { E a = 1; } enum E { Z = 0; }", "message M { string a = 1; }", Some(".shop.E to string")),
    // Scalar, message, map.
    ("scalar to message", "message M { int32 a = 1; } message N {}", "message M { N a = 1; } message N {}",
        Some("a scalar cannot be read as a message")),
    ("message to map", "message M { N a = 1; } message N {}", "message M { map<string, N> a = 1; } message N {}",
        Some("a message cannot be read as a map")),
    ("map to repeated message", "message M { map<string, int32> a = 1; }",
        "message M { repeated E a = 1; message E { string key = 1; int32 value = 2; } }",
        Some("a map cannot be read as a message")),
    ("message type renamed", "message M { N a = 1; } message N {} message O {}",
        "message M { O a = 1; } message N {} message O {}", Some("type changed from .shop.N to .shop.O")),
    ("message type qualified", "message M { N a = 1; } message N {}", "message M { .shop.N a = 1; } message N {}", None),
    // Labels.
    ("optional string to repeated", "message M { optional string a = 1; }", "message M { repeated string a = 1; }", None),
    ("repeated bytes to implicit", "message M { repeated bytes a = 1; }", "message M { bytes a = 1; }", None),
    ("message to repeated", "message M { N a = 1; } message N {}", "message M { repeated N a = 1; } message N {}", None),
    ("implicit to optional int32", "message M { int32 a = 1; }", "message M { optional int32 a = 1; }", None),
    ("optional int32 to repeated", "message M { optional int32 a = 1; }", "message M { repeated int32 a = 1; }",
        Some("label changed from singular to repeated")),
    ("implicit int64 to repeated", "message M { int64 a = 1; }", "message M { repeated int64 a = 1; }",
        Some("label changed from singular to repeated")),
    ("repeated enum to implicit", "message M { repeated E a = 1; } enum E { Z = 0; }",
        "message M { E a = 1; } enum E { Z = 0; }", Some("label changed from repeated to singular")),
    // Messages.
    ("message added", "message M {}", "message M {} message N {}", None),
    ("messages reordered", "message M {} message N {}", "message N {} message M {}", None),
    ("message removed", "message M {} message N {}", "message M {}", Some("message .shop.N: removed")),
    ("nested message removed", "message M { message N {} }", "message M {}", Some("message .shop.M.N: removed")),
    ("nested field type changed", "message M { message N { int32 a = 1; } }", "message M { message N { string a = 1; } }",
        Some(r#"message .shop.M.N field 1 ("a"): type changed from int32 to string"#)),
    // Enums: every change is compatible.
    ("enum added", "message M {}", "message M {} enum E { Z = 0; }", None),
    ("enum removed", "message M {} enum E { Z = 0; }", "message M {}", None),
    ("enum constant added", "enum E { Z = 0; }", "enum E { Z = 0; O = 1; }", None),
    ("enum constant removed", "enum E { Z = 0; O = 1; }", "enum E { Z = 0; }", None),
    ("enum constant renamed", "message M { enum E { Z = 0; O = 1; } }", "message M { enum E { Z = 0; ONE = 1; } }", None),
    // Oneofs.
    ("field into a new oneof", "message M { int32 a = 1; int32 b = 2; }",
        "message M { int32 a = 1; oneof o { int32 b = 2; } }", None),
    ("field and new members into a new oneof", "message M { int32 a = 1; }",
        "message M { oneof o { int32 a = 1; string n = 3; } }", None),
    ("oneof member added", "message M { oneof o { int32 a = 1; } }",
        "message M { oneof o { int32 a = 1; int32 b = 2; } }", None),
    ("oneof renamed", "message M { oneof o { int32 a = 1; int32 b = 2; } }",
        "message M { oneof p { int32 a = 1; int32 b = 2; } }", None),
    ("oneof member to top level", "message M { oneof o { int32 a = 1; int32 b = 2; } }",
        "message M { oneof o { int32 a = 1; } int32 b = 2; }", None),
    ("oneof deleted whole", "message M { int32 x = 9; oneof o { int32 a = 1; int32 b = 2; } }",
        "message M { int32 x = 9; }", None),
    ("proto3 optional is no oneof", "message M { optional int32 a = 1; optional int32 b = 2; }",
        "message M { int32 a = 1; int32 b = 2; }", None),
    ("oneof member removed", "message M { oneof o { int32 a = 1; int32 b = 2; } }",
        "message M { oneof o { int32 a = 1; } }", Some(r#"message .shop.M field 2 ("b"): removed from oneof "o""#)),
    ("oneof member removed while renamed", "message M { oneof o { int32 a = 1; int32 b = 2; } }",
        "message M { oneof p { int32 a = 1; } }", Some(r#"field 2 ("b"): removed from oneof "o""#)),
    ("fields into a new oneof", "message M { int32 a = 1; int32 b = 2; }",
        "message M { oneof o { int32 a = 1; int32 b = 2; } }",
        Some(r#"message .shop.M oneof "o": fields 1 ("a"), 2 ("b") could be set together"#)),
    ("field into an existing oneof", "message M { int32 a = 1; oneof o { int32 b = 2; } }",
        "message M { oneof o { int32 a = 1; int32 b = 2; } }", Some(r#"oneof "o": fields 1 ("a"), 2 ("b")"#)),
    ("member moved between oneofs", "message M { oneof o { int32 a = 1; int32 b = 2; } oneof p { int32 c = 3; } }",
        "message M { oneof o { int32 a = 1; } oneof p { int32 b = 2; int32 c = 3; } }", Some(r#"oneof "p""#)),
    ("oneofs merged", "message M { oneof o { int32 a = 1; } oneof p { int32 b = 2; } }",
        "message M { oneof q { int32 a = 1; int32 b = 2; } }", Some(r#"oneof "q""#)),
    ("type change inside a renamed oneof", "message M { oneof o { int32 a = 1; } }",
        "message M { oneof p { string a = 1; } }", Some("type changed from int32 to string")),
    // Maps.
    ("map value widened", "message M { map<string, int32> a = 1; }", "message M { map<string, int64> a = 1; }", None),
    ("map value changed", "message M { map<string, int32> a = 1; }", "message M { map<string, string> a = 1; }",
        Some(r#"message .shop.M field 1 ("a"): map value type changed from int32 to string"#)),
    ("map key changed", "message M { map<string, int32> a = 1; }", "message M { map<int32, int32> a = 1; }",
        Some("map key type changed from string to int32")),
    ("map value message renamed", "message M { map<string, N> a = 1; } message N {} message O {}",
        "message M { map<string, O> a = 1; } message N {} message O {}",
        Some("map value type changed from .shop.N to .shop.O")),
    ("map of local type qualified", "message M { map<string, N> a = 1; message N {} }",
        "message M { map<string, M.N> a = 1; message N {} }", None),
];

#[test]
fn rules() {
    let mut failures = Vec::new();
    for (rule, writer, reader, expected) in CASES {
        let found = problems(writer, reader);
        let ok = match expected {
            None => found.is_empty(),
            Some(fragment) => found.iter().any(|p| p.contains(fragment)),
        };
        if !ok {
            failures.push(format!("{rule}: expected {expected:?}, found {found:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn direction_matters() {
    let two = "message M { oneof o { int32 a = 1; int32 b = 2; } }";
    let one = "message M { oneof o { int32 a = 1; } }";
    // The reader knows a member the writer never sets: fine.
    assert_eq!(problems(one, two), Vec::<String>::new());
    // The reader lost a member the writer may set.
    assert_eq!(
        problems(two, one),
        [
            r#"message .shop.M field 2 ("b"): removed from oneof "o", so data that set it reads as if no member were set"#
        ]
    );
}

#[test]
fn problem_names_the_element() {
    let found = problems(
        "message Order { int64 price = 3; }",
        "message Order { string price = 3; }",
    );
    assert_eq!(
        found,
        [
            r#"message .shop.Order field 3 ("price"): type changed from int64 to string, which do not share a wire encoding"#
        ]
    );
}

#[test]
fn package_and_syntax() {
    let shop = compile(&proto3("message M { int32 a = 1; }"), &[]);
    let store = compile(
        "syntax = \"proto3\"; package store; message M { int32 a = 1; }",
        &[],
    );
    assert_eq!(
        reading_problems(&shop, &store),
        [r#"package changed from "shop" to "store""#]
    );
    // proto2 optional fields read as proto3 ones.
    let two = compile(
        &proto2("message M { optional int32 a = 1; repeated string b = 2; }"),
        &[],
    );
    let three = compile(
        &proto3("message M { int32 a = 1; repeated string b = 2; }"),
        &[],
    );
    assert_eq!(reading_problems(&two, &three), Vec::<String>::new());
    assert_eq!(reading_problems(&three, &two), Vec::<String>::new());
}

#[test]
fn required_fields() {
    let check = |writer: &str, reader: &str| {
        reading_problems(
            &compile(&proto2(writer), &[]),
            &compile(&proto2(reader), &[]),
        )
    };
    let base = "message M { optional int32 a = 1; }";
    let added = "message M { optional int32 a = 1; required string b = 2; }";
    assert_eq!(
        check(base, added),
        [
            r#"message .shop.M field 2 ("b"): a required field was added, which data written without it lacks"#
        ]
    );
    assert_eq!(
        check(added, base),
        [r#"message .shop.M field 2 ("b"): a required field was removed"#]
    );
    let optional = "message M { optional string a = 1; }";
    let required = "message M { required string a = 1; }";
    assert_eq!(
        check(optional, required),
        [r#"message .shop.M field 1 ("a"): label changed from singular to required"#]
    );
    assert_eq!(
        check(required, optional),
        [r#"message .shop.M field 1 ("a"): label changed from required to singular"#]
    );
    assert_eq!(
        check(
            added,
            "message M { optional int32 a = 1; required bytes b = 2; }"
        ),
        Vec::<String>::new()
    );
}

#[test]
fn well_known_types() {
    let check = |writer: &str, reader: &str| {
        let import = "import \"google/protobuf/timestamp.proto\";\nimport \"google/protobuf/duration.proto\";\n";
        reading_problems(
            &compile(&proto3(&format!("{import}{writer}")), &[]),
            &compile(&proto3(&format!("{import}{reader}")), &[]),
        )
    };
    let at = "message Order { google.protobuf.Timestamp at = 1; }";
    assert_eq!(check(at, at), Vec::<String>::new());
    assert_eq!(check("message Order {}", at), Vec::<String>::new());
    assert_eq!(
        check(at, "message Order { google.protobuf.Duration at = 1; }"),
        [
            r#"message .shop.Order field 1 ("at"): type changed from .google.protobuf.Timestamp to .google.protobuf.Duration (message types are matched by name)"#
        ]
    );
    assert_eq!(
        check(at, "message Order { string at = 1; }"),
        [
            r#"message .shop.Order field 1 ("at"): type changed from .google.protobuf.Timestamp to string: a message cannot be read as a scalar"#
        ]
    );
}

#[test]
fn imported_types_are_compared() {
    let schema = proto3("import \"money.proto\";\nmessage Order { pay.Money price = 1; }");
    let money =
        |body: &str| format!("syntax = \"proto3\"; package pay; message Money {{ {body} }}");
    let check = |writer: &str, reader: &str| {
        reading_problems(
            &compile(&schema, &[("money.proto", &money(writer))]),
            &compile(&schema, &[("money.proto", &money(reader))]),
        )
    };
    let cents = "int64 cents = 1; repeated Money parts = 2;";
    assert_eq!(check(cents, cents), Vec::<String>::new());
    assert_eq!(
        check(cents, "int32 units = 1; repeated Money parts = 2;"),
        Vec::<String>::new()
    );
    assert_eq!(
        check(cents, "string cents = 1; repeated Money parts = 2;"),
        [
            r#"message .pay.Money field 1 ("cents"): type changed from int64 to string, which do not share a wire encoding"#,
            r#"message .shop.Order field 1 ("price"): type .pay.Money is read as .pay.Money, which cannot read it (see the problems of message .pay.Money)"#,
        ]
    );
    // A type moved from the file into an import (same name) is compared too.
    let local = compile(
        &proto3("message Order { Money price = 1; } message Money { string cents = 1; }"),
        &[],
    );
    let imported = compile(
        &proto3("import \"money.proto\";\nmessage Order { .pay.Money price = 1; }"),
        &[("money.proto", &money("int64 cents = 1;"))],
    );
    let found = reading_problems(&local, &imported);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("message .shop.Money: removed")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("type .shop.Money is read as .pay.Money, which cannot read it")),
        "{found:#?}"
    );
}
