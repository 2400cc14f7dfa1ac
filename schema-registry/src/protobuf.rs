//! Protobuf definitions: a `.proto` file, as text or (the form Confluent's
//! clients send) a base64-encoded `FileDescriptorProto`, compiled with its
//! imports into a [`FileDescriptor`].
//!
//! Imports of Google's well-known types (`google/protobuf/timestamp.proto`
//! and the rest) are built in; other imports are the definitions the
//! schema's references name (see [`crate::schema::Reference`]), served
//! under their import names.

use base64::Engine;
use std::collections::BTreeMap;

use prost_reflect::FileDescriptor;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use crate::schema::{Imports, SchemaType};

/// The name a definition given as text is compiled under.
const TEXT_FILE_NAME: &str = "schema.proto";

/// Compiles `text` into the descriptor of its file, with `imports` (by
/// import name) available to it; an error says why not.
pub(crate) fn compile(text: &str, imports: &Imports) -> Result<FileDescriptor, String> {
    let file = parse_file(None, text)?;
    let name = file.name().to_string();
    let mut files = Files(BTreeMap::new());
    for (import, (kind, text)) in imports {
        if *kind != SchemaType::Protobuf {
            return Err(format!("import `{import}` is a {} schema", kind.as_str()));
        }
        files
            .0
            .insert(import.clone(), parse_file(Some(import), text)?);
    }
    files.0.insert(name.clone(), file);
    let mut resolver = ChainFileResolver::new();
    resolver.add(files);
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.open_file(&name).map_err(|e| {
        if e.is_file_not_found() {
            format!(
                "{e}: an import is either one of Google's well-known types or named by one of \
                 the schema's references"
            )
        } else {
            e.to_string()
        }
    })?;
    compiler
        .descriptor_pool()
        .get_file_by_name(&name)
        .ok_or_else(|| format!("the compiled schema has no file `{name}`"))
}

/// The file `text` holds, named `name` (or as it says, for a descriptor;
/// [`TEXT_FILE_NAME`] for text).
fn parse_file(name: Option<&str>, text: &str) -> Result<File, String> {
    match descriptor_form(text) {
        Some(file) => match name {
            Some(name) if file.name() != name => {
                let mut descriptor = file.file_descriptor_proto().clone();
                descriptor.name = Some(name.to_string());
                Ok(File::from_file_descriptor_proto(descriptor))
            }
            _ => Ok(file),
        },
        None => File::from_source(name.unwrap_or(TEXT_FILE_NAME), text).map_err(|e| match name {
            Some(name) => format!("import `{name}`: {e}"),
            None => e.to_string(),
        }),
    }
}

/// The file `text` holds when it is a base64-encoded `FileDescriptorProto`
/// (text with no whitespace, semicolon or brace never is `.proto` source).
fn descriptor_form(text: &str) -> Option<File> {
    let text = text.trim();
    if text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == ';' || c == '{') {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let mut file = File::decode_file_descriptor_proto(bytes.as_slice()).ok()?;
    if file.name().is_empty() {
        let mut descriptor = file.file_descriptor_proto().clone();
        descriptor.name = Some(TEXT_FILE_NAME.to_string());
        file = File::from_file_descriptor_proto(descriptor);
    }
    Some(file)
}

/// Serves the schema's file and its imports to the compiler.
struct Files(BTreeMap<String, File>);

impl FileResolver for Files {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| protox::Error::file_not_found(name))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test: a panic is a failure

    use super::*;
    use prost::Message;

    const ORDER: &str = r#"
        syntax = "proto3";
        package shop;
        import "google/protobuf/timestamp.proto";
        message Order {
          string id = 1;
          google.protobuf.Timestamp at = 2;
          message Line { string sku = 1; int64 qty = 2; }
          repeated Line lines = 3;
        }"#;

    #[test]
    fn text_and_descriptor_forms_compile_to_the_same_messages() {
        let from_text = compile(ORDER, &Imports::new()).unwrap();
        let proto = from_text.file_descriptor_proto().encode_to_vec();
        let encoded = base64::engine::general_purpose::STANDARD.encode(proto);
        let from_descriptor = compile(&encoded, &Imports::new()).unwrap();
        let names = |f: &FileDescriptor| {
            f.messages()
                .map(|m| m.full_name().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&from_text), vec!["shop.Order"]);
        assert_eq!(names(&from_descriptor), names(&from_text));
    }

    #[test]
    fn bad_definitions_say_why() {
        let none = Imports::new();
        let e = compile("syntax = \"proto3\"; message A { strin x = 1; }", &none).unwrap_err();
        assert!(e.contains("strin"), "{e}");
        let importing = "syntax = \"proto3\"; import \"other.proto\"; message A { B b = 1; }";
        let e = compile(importing, &none).unwrap_err();
        assert!(
            e.contains("import 'other.proto' not found: an import is"),
            "{e}"
        );
        assert!(compile("not a schema", &none).is_err());
    }

    #[test]
    fn imports_are_served_by_their_names() {
        let other = Imports::from([(
            "other.proto".to_string(),
            (
                SchemaType::Protobuf,
                "syntax = \"proto3\"; message B { string x = 1; }".to_string(),
            ),
        )]);
        let importing = "syntax = \"proto3\"; import \"other.proto\"; message A { B b = 1; }";
        let file = compile(importing, &other).unwrap();
        let a = file.messages().next().unwrap();
        let b = a.fields().next().unwrap().kind();
        assert_eq!(b.as_message().unwrap().full_name(), "B");
    }
}
