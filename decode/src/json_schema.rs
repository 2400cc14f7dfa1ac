//! Validating JSON payloads against their JSON Schema (with
//! `ingest.registry.validate_json`), with `boon` (drafts 4 to 2020-12).

use serde_json::Value as Json;

/// Where a schema is registered in its validator (`$ref`s inside it resolve
/// against this; references to other documents are not loaded).
const SCHEMA_URL: &str = "urn:tributary:schema";

/// A compiled JSON Schema.
pub struct JsonValidator {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl std::fmt::Debug for JsonValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonValidator").finish_non_exhaustive()
    }
}

impl JsonValidator {
    /// Compiles `schema`; the error says why it cannot validate (for
    /// example a `$ref` to another document).
    pub fn compile(schema: &Json) -> Result<Self, String> {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        let describe = |e: boon::CompileError| format!("{e:#}");
        compiler
            .add_resource(SCHEMA_URL, schema.clone())
            .map_err(describe)?;
        let index = compiler
            .compile(SCHEMA_URL, &mut schemas)
            .map_err(describe)?;
        Ok(Self { schemas, index })
    }

    /// Checks `value`; the error lists each failing location and why, on
    /// one line.
    pub fn validate(&self, value: &Json) -> Result<(), String> {
        self.schemas.validate(value, self.index).map_err(|e| {
            let text = e.to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            // The first line names the schema's URL, which says nothing here.
            lines.next();
            let causes: Vec<&str> = lines.map(|l| l.trim_start_matches("- ")).collect();
            if causes.is_empty() {
                "the payload does not match its JSON Schema".to_string()
            } else {
                format!(
                    "the payload does not match its JSON Schema: {}",
                    causes.join("; ")
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test: a panic is a failure

    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_are_checked_and_errors_name_the_location() {
        let validator = JsonValidator::compile(&json!({
            "type": "object",
            "properties": {"age": {"type": "integer"}, "tags": {"$ref": "#/$defs/tags"}},
            "required": ["age"],
            "$defs": {"tags": {"type": "array", "items": {"type": "string"}}}
        }))
        .unwrap();
        assert!(
            validator
                .validate(&json!({"age": 3, "tags": ["a"]}))
                .is_ok()
        );
        let e = validator.validate(&json!({"age": "3"})).unwrap_err();
        assert!(e.contains("/age") && e.contains("integer"), "{e}");
        let e = validator.validate(&json!({"tags": [1]})).unwrap_err();
        assert!(e.contains("age") && e.contains("/tags/0"), "{e}");
    }

    #[test]
    fn a_schema_that_cannot_validate_says_why() {
        let e =
            JsonValidator::compile(&json!({"$ref": "https://example.com/other.json"})).unwrap_err();
        assert!(e.contains("example.com"), "{e}");
        assert!(JsonValidator::compile(&json!({"type": 7})).is_err());
    }
}
