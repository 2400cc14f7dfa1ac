//! Where the registry's objects live: the paths of the layout drawn in the
//! `store` module documentation, and subject names escaped into (and back
//! from) one path segment.

use object_store::path::{Path, PathPart};

use super::{RegistryError, Result, SchemaRegistry};

impl SchemaRegistry {
    pub(super) fn path(&self, parts: &[&str]) -> Path {
        parts
            .iter()
            .fold(self.prefix.clone(), |path, part| path.join(*part))
    }

    pub(super) fn subject_path(&self, subject: &str) -> Result<Path> {
        let escaped = escape_subject(subject)?;
        let part = PathPart::parse(&escaped).map_err(|_| RegistryError::InvalidSubject {
            subject: subject.to_string(),
            reason: "cannot be stored",
        })?;
        Ok(self.path(&["subjects"]).join(part))
    }

    pub(super) fn version_path(&self, subject: &str, version: u32) -> Result<Path> {
        Ok(self
            .subject_path(subject)?
            .join("versions")
            .join(format!("{version}.json")))
    }

    pub(super) fn subject_config_path(&self, subject: &str) -> Result<Path> {
        let escaped = escape_subject(subject)?;
        Ok(self
            .path(&["config", "subjects"])
            .join(format!("{escaped}.json")))
    }
}

/// Longest escaped subject name: one path segment (a file name) of at most
/// 255 bytes, with room for `.json`.
const MAX_ESCAPED_SUBJECT: usize = 240;

/// The subject's path segment; see the `store` module documentation.
fn escape_subject(subject: &str) -> Result<String> {
    if subject.is_empty() {
        return Err(RegistryError::InvalidSubject {
            subject: subject.to_string(),
            reason: "must not be empty",
        });
    }
    let mut out = String::with_capacity(subject.len());
    for (i, byte) in subject.bytes().enumerate() {
        let plain = byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' || byte == b'.';
        if plain && !(i == 0 && byte == b'.') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("={byte:02X}"));
        }
    }
    if out.len() > MAX_ESCAPED_SUBJECT {
        return Err(RegistryError::InvalidSubject {
            subject: subject.to_string(),
            reason: "too long (at most 240 bytes once characters other than [A-Za-z0-9_.-] are escaped)",
        });
    }
    Ok(out)
}

/// The inverse of [`escape_subject`]; `None` for a segment it never writes.
pub(super) fn unescape_subject(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_names_escape_into_one_segment_and_back() {
        for subject in [
            "orders-value",
            "a/b",
            ".hidden",
            "..",
            "ü €",
            "x=y",
            "com.example.V",
        ] {
            let escaped = escape_subject(subject).unwrap();
            assert!(PathPart::parse(&escaped).is_ok(), "{escaped}");
            assert!(!escaped.contains('/') && !escaped.starts_with('.'));
            assert_eq!(unescape_subject(&escaped).as_deref(), Some(subject));
        }
        assert_eq!(escape_subject("orders-value").unwrap(), "orders-value");
        assert!(escape_subject("").is_err());
        assert!(escape_subject(&"/".repeat(100)).is_err());
    }
}
