//! Schema definitions: parsing, the normalized form that names a version, the
//! UUID derived from it, and compatibility between versions.

use std::collections::BTreeMap;
use std::str::FromStr;

use apache_avro::Schema as AvroSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Definitions longer than this many characters are refused.
pub const MAX_DEFINITION_CHARS: usize = 170_000;

/// The language a definition is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchemaType {
    /// Apache Avro.
    #[default]
    Avro,
    /// JSON Schema.
    Json,
    /// Protocol Buffers (a `.proto` file).
    Protobuf,
}

impl SchemaType {
    /// The name used on the wire (`AVRO`, `JSON`, `PROTOBUF`).
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }
}

impl FromStr for SchemaType {
    type Err = SchemaError;

    fn from_str(s: &str) -> Result<Self, SchemaError> {
        match s.to_ascii_uppercase().as_str() {
            "AVRO" => Ok(SchemaType::Avro),
            "JSON" => Ok(SchemaType::Json),
            "PROTOBUF" => Ok(SchemaType::Protobuf),
            _ => Err(SchemaError::UnsupportedType(s.to_string())),
        }
    }
}

/// Why a definition or a compatibility level is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// Longer than [`MAX_DEFINITION_CHARS`].
    #[error(
        "the definition is {chars} characters long; at most {MAX_DEFINITION_CHARS} are accepted"
    )]
    TooLong {
        /// Its length.
        chars: usize,
    },
    /// Not valid JSON.
    #[error("the definition is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not a valid schema of its type.
    #[error("invalid {kind} schema: {message}")]
    Invalid {
        /// `AVRO`, `JSON` or `PROTOBUF`.
        kind: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A schema type other than AVRO, JSON or PROTOBUF.
    #[error("schema type `{0}` is not supported (AVRO, JSON and PROTOBUF are)")]
    UnsupportedType(String),
    /// An unknown compatibility level.
    #[error(
        "compatibility level `{0}` is unknown (NONE, DISABLED, BACKWARD, BACKWARD_TRANSITIVE, \
         FORWARD, FORWARD_TRANSITIVE, FULL or FULL_TRANSITIVE)"
    )]
    UnknownCompatibility(String),
}

/// A parsed definition and its normalized text.
///
/// For Avro and JSON Schema, the normalized text is the definition's JSON
/// with object keys sorted, whitespace removed, `doc` attributes dropped and
/// `{"type": "int"}` shortened to `"int"`. Unlike Avro's Parsing Canonical
/// Form it keeps defaults, logical types, aliases and custom attributes,
/// because they change how data is read. A Protobuf definition is kept as
/// given (`.proto` text or a base64 `FileDescriptorProto`), without its
/// surrounding whitespace.
#[derive(Debug, Clone)]
pub struct Definition {
    kind: SchemaType,
    normalized: String,
    parsed: Parsed,
    references: Vec<Reference>,
    imports: Imports,
}

/// A reference from a definition to another subject's version, under the
/// name the definition imports it by (a Protobuf import path), as in
/// Confluent's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// The name the definition imports it by.
    pub name: String,
    /// The subject.
    pub subject: String,
    /// The version.
    pub version: u32,
}

/// The definitions a definition imports, directly or through others, by
/// import name: their type and text.
pub type Imports = BTreeMap<String, (SchemaType, String)>;

/// A definition parsed by its format's rules.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Parsed {
    /// An Avro schema.
    Avro(AvroSchema),
    /// A JSON Schema document.
    Json(Json),
    /// A Protobuf file, compiled with its imports.
    Protobuf(prost_reflect::FileDescriptor),
}

impl Definition {
    /// Parses and normalizes `text`, which references nothing.
    pub fn parse(kind: SchemaType, text: &str) -> Result<Self, SchemaError> {
        Self::parse_with_references(kind, text, Vec::new(), Imports::new())
    }

    /// Parses and normalizes `text`, whose `references` name the imported
    /// definitions in `imports` (those of the references and, transitively,
    /// of theirs). Only Protobuf definitions may have references.
    pub fn parse_with_references(
        kind: SchemaType,
        text: &str,
        references: Vec<Reference>,
        imports: Imports,
    ) -> Result<Self, SchemaError> {
        if kind != SchemaType::Protobuf && !references.is_empty() {
            return Err(SchemaError::Invalid {
                kind: kind.as_str(),
                message: "schema references are supported for Protobuf only".into(),
            });
        }
        let chars = text.chars().count();
        if chars > MAX_DEFINITION_CHARS {
            return Err(SchemaError::TooLong { chars });
        }
        let invalid = |message: String| SchemaError::Invalid {
            kind: kind.as_str(),
            message,
        };
        let (normalized, parsed) = match kind {
            SchemaType::Protobuf => (
                text.trim().to_string(),
                Parsed::Protobuf(crate::protobuf::compile(text, &imports).map_err(invalid)?),
            ),
            SchemaType::Avro | SchemaType::Json => {
                let json: Json =
                    serde_json::from_str(text).map_err(|e| SchemaError::NotJson(e.to_string()))?;
                let mut normalized = String::with_capacity(text.len());
                write_normalized(&json, kind == SchemaType::Avro, &mut normalized);
                let parsed = if kind == SchemaType::Avro {
                    Parsed::Avro(AvroSchema::parse(&json).map_err(|e| invalid(e.to_string()))?)
                } else if matches!(json, Json::Object(_) | Json::Bool(_)) {
                    Parsed::Json(json)
                } else {
                    return Err(invalid("a JSON Schema is an object or a boolean".into()));
                };
                (normalized, parsed)
            }
        };
        Ok(Self {
            kind,
            normalized,
            parsed,
            references,
            imports,
        })
    }

    /// The definitions it references.
    pub fn references(&self) -> &[Reference] {
        &self.references
    }

    /// What a definition referencing this one under `name` imports: this
    /// definition and its own imports.
    pub fn imports_as(&self, name: &str) -> Imports {
        let mut imports = self.imports.clone();
        imports.insert(name.to_string(), (self.kind, self.normalized.clone()));
        imports
    }

    /// Its type.
    pub fn kind(&self) -> SchemaType {
        self.kind
    }

    /// The normalized text, which is what the registry stores and serves.
    pub fn text(&self) -> &str {
        &self.normalized
    }

    /// The parsed Avro schema (`None` for JSON Schema).
    pub fn avro(&self) -> Option<&AvroSchema> {
        match &self.parsed {
            Parsed::Avro(schema) => Some(schema),
            _ => None,
        }
    }

    /// The parsed definition.
    pub fn parsed(&self) -> &Parsed {
        &self.parsed
    }

    /// The version's UUID in registry `registry`: the first 16 bytes of
    /// SHA-256 over the registry name, the type, the normalized text and the
    /// references (if any), as an RFC 9562 version 8 (name-based, custom
    /// hash) UUID. The same definition registered twice, by any replica,
    /// gets the same UUID.
    pub fn uuid(&self, registry: &str) -> Uuid {
        let mut hash = Sha256::new();
        let versions: Vec<String> = self
            .references
            .iter()
            .map(|r| r.version.to_string())
            .collect();
        let references = self
            .references
            .iter()
            .zip(&versions)
            .flat_map(|(r, v)| [r.name.as_str(), r.subject.as_str(), v.as_str()]);
        for part in [registry, self.kind.as_str(), &self.normalized]
            .into_iter()
            .chain(references)
        {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }

    /// The CRC-64-AVRO (Rabin) fingerprint of the Avro Parsing Canonical
    /// Form, as carried by Avro single-object encoding.
    pub fn fingerprint(&self) -> Option<u64> {
        let fingerprint = self.avro()?.fingerprint::<apache_avro::rabin::Rabin>();
        let bytes: [u8; 8] = fingerprint.bytes.as_slice().try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    }
}

/// Appends the normalized JSON text of `value`.
fn write_normalized(value: &Json, avro: bool, out: &mut String) {
    match value {
        Json::Object(map) => {
            if avro
                && map.len() == 1
                && let Some(Json::String(name)) = map.get("type")
            {
                write_normalized(&Json::String(name.clone()), avro, out);
                return;
            }
            let mut keys: Vec<&String> = map
                .keys()
                .filter(|k| !(avro && k.as_str() == "doc"))
                .collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String(key.clone()).to_string());
                out.push(':');
                // Defaults are data, not schema: `{"type": "x"}` inside a
                // default must stay as written.
                let nested_avro = avro && key != "default";
                write_normalized(&map[key], nested_avro, out);
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_normalized(item, avro, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

pub use crate::compat::Compatibility;

#[cfg(test)]
mod tests {
    use super::*;

    fn avro(text: &str) -> Definition {
        Definition::parse(SchemaType::Avro, text).unwrap()
    }

    #[test]
    fn normalizing_ignores_layout_and_docs_but_keeps_defaults_and_logical_types() {
        let a = avro(
            r#"{"type": "record", "name": "E", "doc": "x",
                "fields": [{"name": "n", "type": {"type": "long"}, "default": 1},
                           {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}"#,
        );
        let b = avro(
            r#"{"fields":[{"default":1,"type":"long","name":"n"},{"name":"t","type":{"logicalType":"timestamp-millis","type":"long"}}],"name":"E","type":"record"}"#,
        );
        assert_eq!(a.text(), b.text());
        assert_eq!(a.uuid("r"), b.uuid("r"));
        assert_ne!(a.uuid("r"), a.uuid("other registry"));
        assert_eq!(a.uuid("r").get_version_num(), 8);
        let c = avro(
            r#"{"type":"record","name":"E","fields":[{"name":"n","type":"long","default":2},{"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#,
        );
        assert_ne!(
            a.uuid("r"),
            c.uuid("r"),
            "a different default is a different schema"
        );
        assert!(a.text().contains("timestamp-millis"));
    }

    #[test]
    fn bad_definitions_are_refused_with_their_reason() {
        let long = format!(r#""{}""#, "x".repeat(MAX_DEFINITION_CHARS));
        assert!(matches!(
            Definition::parse(SchemaType::Avro, &long),
            Err(SchemaError::TooLong { .. })
        ));
        assert!(matches!(
            Definition::parse(SchemaType::Avro, "{"),
            Err(SchemaError::NotJson(_))
        ));
        let err =
            Definition::parse(SchemaType::Avro, r#"{"type":"record","name":"R"}"#).unwrap_err();
        assert!(err.to_string().starts_with("invalid AVRO schema"), "{err}");
        assert!(Definition::parse(SchemaType::Json, "3").is_err());
        assert!(Definition::parse(SchemaType::Json, r#"{"type":"object"}"#).is_ok());
    }

    #[test]
    fn fingerprint_is_the_single_object_encoding_one() {
        // The Avro specification's CRC-64-AVRO of `"int"` (Parsing Canonical Form).
        assert_eq!(avro(r#""int""#).fingerprint(), Some(0x7275_d51a_3f39_5c8f));
    }

    #[test]
    fn levels_parse_with_glue_spellings() {
        for level in Compatibility::ALL {
            assert_eq!(level.as_str().parse::<Compatibility>().unwrap(), level);
        }
        assert_eq!(
            "backward_all".parse::<Compatibility>().unwrap(),
            Compatibility::BackwardTransitive
        );
        assert!("SIDEWAYS".parse::<Compatibility>().is_err());
    }
}
