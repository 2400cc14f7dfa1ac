//! Protobuf definitions: a `.proto` file, as text or (the form Confluent's
//! clients send) a base64-encoded `FileDescriptorProto`, compiled with its
//! imports into a [`FileDescriptor`].
//!
//! Imports of Google's well-known types (`google/protobuf/timestamp.proto`
//! and the rest) are built in. Imports of other files need schema
//! references, which the registry does not store yet: such a definition is
//! refused with the import it names.

use base64::Engine;
use prost_reflect::FileDescriptor;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

/// The name a definition given as text is compiled under.
const TEXT_FILE_NAME: &str = "schema.proto";

/// Compiles `text` into the descriptor of its file; an error says why not.
pub(crate) fn compile(text: &str) -> Result<FileDescriptor, String> {
    let file = match descriptor_form(text) {
        Some(file) => file,
        None => File::from_source(TEXT_FILE_NAME, text).map_err(|e| e.to_string())?,
    };
    let name = file.name().to_string();
    let mut resolver = ChainFileResolver::new();
    resolver.add(Single(file));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.open_file(&name).map_err(|e| {
        if e.is_file_not_found() {
            format!(
                "{e}: only Google's well-known types can be imported (schema references are not \
                 supported yet)"
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

/// Serves one file to the compiler.
struct Single(File);

impl FileResolver for Single {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == self.0.name() {
            Ok(self.0.clone())
        } else {
            Err(protox::Error::file_not_found(name))
        }
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
        let from_text = compile(ORDER).unwrap();
        let proto = from_text.file_descriptor_proto().encode_to_vec();
        let encoded = base64::engine::general_purpose::STANDARD.encode(proto);
        let from_descriptor = compile(&encoded).unwrap();
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
        let e = compile("syntax = \"proto3\"; message A { strin x = 1; }").unwrap_err();
        assert!(e.contains("strin"), "{e}");
        let e = compile("syntax = \"proto3\"; import \"other.proto\"; message A {}").unwrap_err();
        assert!(
            e.contains("import 'other.proto' not found: only Google's"),
            "{e}"
        );
        assert!(compile("not a schema").is_err());
    }
}
