//! Compatibility between a subject's versions: the levels, and one module
//! per schema format deciding whether data written with one version can be
//! read with another.

use std::fmt;
use std::str::FromStr;

use crate::schema::{Definition, Parsed, SchemaError};

mod avro;
mod json_schema;
mod protobuf;

/// A subject's compatibility level: which earlier versions a new version is
/// checked against, and in which direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Compatibility {
    /// No check.
    None,
    /// No new versions at all once a subject has one.
    Disabled,
    /// The new version reads data written with the latest one.
    #[default]
    Backward,
    /// The new version reads data written with every earlier one.
    BackwardTransitive,
    /// The latest version reads data written with the new one.
    Forward,
    /// Every earlier version reads data written with the new one.
    ForwardTransitive,
    /// Backward and forward, against the latest version.
    Full,
    /// Backward and forward, against every earlier version.
    FullTransitive,
}

impl Compatibility {
    /// Every level.
    pub const ALL: [Compatibility; 8] = [
        Compatibility::None,
        Compatibility::Disabled,
        Compatibility::Backward,
        Compatibility::BackwardTransitive,
        Compatibility::Forward,
        Compatibility::ForwardTransitive,
        Compatibility::Full,
        Compatibility::FullTransitive,
    ];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Disabled => "DISABLED",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive
                | Compatibility::ForwardTransitive
                | Compatibility::FullTransitive
        )
    }

    /// Checks `new` against `earlier` (a subject's live versions, oldest
    /// first). Returns one message per problem; empty means compatible.
    ///
    /// Each format is checked by its own rules (see `reading_problems`); a
    /// version of another format is always incompatible.
    pub fn check(self, new: &Definition, earlier: &[Definition]) -> Vec<String> {
        if self == Compatibility::None || earlier.is_empty() {
            return Vec::new();
        }
        if self == Compatibility::Disabled {
            return vec![
                "the subject's compatibility level is DISABLED: no new versions are accepted"
                    .into(),
            ];
        }
        let against = if self.transitive() {
            earlier
        } else {
            &earlier[earlier.len() - 1..]
        };
        let backward = !matches!(
            self,
            Compatibility::Forward | Compatibility::ForwardTransitive
        );
        let forward = !matches!(
            self,
            Compatibility::Backward | Compatibility::BackwardTransitive
        );
        let mut problems = Vec::new();
        for (i, old) in against.iter().enumerate() {
            let which = if self.transitive() {
                format!("version {} of {}", i + 1, against.len())
            } else {
                "the latest version".to_string()
            };
            if old.kind() != new.kind() {
                problems.push(format!(
                    "{which} is {}, the new schema {}",
                    old.kind().as_str(),
                    new.kind().as_str()
                ));
                continue;
            }
            if backward {
                problems.extend(
                    reading_problems(old, new).into_iter().map(|e| {
                        format!("the new schema cannot read data written with {which}: {e}")
                    }),
                );
            }
            if forward {
                problems.extend(
                    reading_problems(new, old).into_iter().map(|e| {
                        format!("{which} cannot read data written with the new schema: {e}")
                    }),
                );
            }
        }
        problems
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compatibility {
    type Err = SchemaError;

    fn from_str(s: &str) -> Result<Self, SchemaError> {
        let level = match s.to_ascii_uppercase().as_str() {
            "NONE" => Compatibility::None,
            "DISABLED" => Compatibility::Disabled,
            "BACKWARD" => Compatibility::Backward,
            "BACKWARD_TRANSITIVE" | "BACKWARD_ALL" => Compatibility::BackwardTransitive,
            "FORWARD" => Compatibility::Forward,
            "FORWARD_TRANSITIVE" | "FORWARD_ALL" => Compatibility::ForwardTransitive,
            "FULL" => Compatibility::Full,
            "FULL_TRANSITIVE" | "FULL_ALL" => Compatibility::FullTransitive,
            _ => return Err(SchemaError::UnknownCompatibility(s.to_string())),
        };
        Ok(level)
    }
}

/// Why data written with `writer` may not be readable with `reader` (both of
/// one format); empty when it always is.
fn reading_problems(writer: &Definition, reader: &Definition) -> Vec<String> {
    match (writer.parsed(), reader.parsed()) {
        (Parsed::Avro(writer), Parsed::Avro(reader)) => {
            avro::can_read(writer, reader).err().into_iter().collect()
        }
        (Parsed::Json(writer), Parsed::Json(reader)) => {
            json_schema::reading_problems(writer, reader)
        }
        (Parsed::Protobuf(writer), Parsed::Protobuf(reader)) => {
            protobuf::reading_problems(writer, reader)
        }
        // Two formats: `check` refuses them before asking.
        _ => Vec::new(),
    }
}
