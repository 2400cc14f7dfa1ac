//! Finding a request's identifiers wherever a request reads: subject ids in
//! every string value as a substring, record keys as whole string values
//! (a key such as `42` is not a person's name inside text, and would match
//! every `"numRecords":42` of the log), and both in raw bytes (dead-letter
//! payloads, objects that are not text) anywhere.
//!
//! In text an identifier counts where it is not glued to a letter or digit
//! on either side: `p3@ex.org` is in `"mail sent to p3@ex.org."` and in
//! `{"user":"p3@ex.org"}`, `u1` is not in `u10` (another person). That is
//! the boundary the free-text index is built for ([`crate::text_index`]). In
//! raw bytes any occurrence counts: an encoded payload's length prefix may be
//! any byte.
//!
//! The search is one Aho-Corasick automaton over every identifier (a
//! thousand identifiers cost one pass over the text, and a memchr prefilter
//! skips text without a candidate first byte); the crate is already in the
//! build through `regex`.

use std::collections::HashSet;

use aho_corasick::AhoCorasick;
use deltalake::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::record_batch::RecordBatch;
use serde::Serialize;

use crate::error::{Error, Result};

/// What replaces an identifier in a redact column.
pub const REDACTED: &str = "[redacted]";

/// An object (and column) that still holds an identifier after the request
/// wrote what it could.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Residue {
    /// The object's path under the table.
    pub object: String,
    /// The column (empty for an object that is not a table of rows).
    pub column: String,
}

/// The identifiers of a request, ready to match.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub(super) subjects: HashSet<String>,
    pub(super) keys: HashSet<String>,
    /// Every non-empty subject id, searched in text; `None` when there is
    /// none.
    automaton: Option<AhoCorasick>,
    /// Per pattern: whether its first and its last character are letters or
    /// digits (only then must its neighbour not be one).
    edges: Vec<(bool, bool)>,
    /// Every non-empty identifier, keys included, searched in raw bytes.
    raw: Option<AhoCorasick>,
}

impl Matcher {
    /// The matcher of `subjects` and `keys`.
    pub fn new(
        subjects: impl IntoIterator<Item = String>,
        keys: impl IntoIterator<Item = String>,
    ) -> Result<Matcher> {
        let subjects: HashSet<String> = subjects.into_iter().collect();
        let keys: HashSet<String> = keys.into_iter().collect();
        let patterns: Vec<&String> = subjects.iter().filter(|id| !id.is_empty()).collect();
        let raw_patterns: Vec<&String> = subjects
            .iter()
            .chain(keys.difference(&subjects))
            .filter(|id| !id.is_empty())
            .collect();
        let edges = patterns
            .iter()
            .map(|p| {
                let alnum = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
                (alnum(p.chars().next()), alnum(p.chars().next_back()))
            })
            .collect();
        let search = |patterns: &[&String]| -> Result<Option<AhoCorasick>> {
            if patterns.is_empty() {
                return Ok(None);
            }
            AhoCorasick::new(patterns)
                .map(Some)
                .map_err(|source| Error::IdentifierSearch {
                    identifiers: patterns.len(),
                    source,
                })
        };
        Ok(Matcher {
            automaton: search(&patterns)?,
            raw: search(&raw_patterns)?,
            subjects,
            keys,
            edges,
        })
    }

    /// The subject ids.
    pub fn subjects(&self) -> &HashSet<String> {
        &self.subjects
    }

    /// The record keys.
    pub fn keys(&self) -> &HashSet<String> {
        &self.keys
    }

    /// Every identifier, subjects then keys.
    pub fn identifiers(&self) -> impl Iterator<Item = &String> {
        self.subjects.iter().chain(&self.keys)
    }

    /// Byte ranges of the identifiers' occurrences in `text` that are not
    /// glued to a letter or digit.
    fn occurrences(&self, text: &str) -> Vec<(usize, usize)> {
        let Some(automaton) = &self.automaton else {
            return Vec::new();
        };
        let mut found: Vec<(usize, usize)> = Vec::new();
        for m in automaton.find_overlapping_iter(text) {
            let (start_alnum, end_alnum) = self.edges[m.pattern().as_usize()];
            let glued_before = start_alnum
                && text[..m.start()]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_alphanumeric);
            let glued_after = end_alnum
                && text[m.end()..]
                    .chars()
                    .next()
                    .is_some_and(char::is_alphanumeric);
            if !glued_before && !glued_after {
                found.push((m.start(), m.end()));
            }
        }
        found
    }

    /// Whether `text` holds an identifier (see the module docs). JSON text
    /// whose strings are escaped (an identifier with a `"` or `\` in it) is
    /// also searched string by string.
    pub fn text_holds(&self, text: &str) -> bool {
        if self.keys.contains(text) {
            return true;
        }
        if let Some(automaton) = &self.automaton
            && automaton.is_match(text)
            && !self.occurrences(text).is_empty()
        {
            return true;
        }
        // Keys are whole values, so inside JSON text they are found only
        // by parsing it; so are subject ids written with escapes.
        let json = text.starts_with('{') || text.starts_with('[');
        json && (text.contains('\\') || !self.keys.is_empty())
            && serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| self.json_holds(&v))
    }

    fn json_holds(&self, value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => self.text_holds(s),
            serde_json::Value::Array(items) => items.iter().any(|v| self.json_holds(v)),
            serde_json::Value::Object(map) => map
                .iter()
                .any(|(k, v)| self.text_holds(k) || self.json_holds(v)),
            _ => false,
        }
    }

    /// Whether raw bytes (a dead letter's payload, an object that is not
    /// text) contain an identifier anywhere.
    pub fn bytes_hold(&self, bytes: &[u8]) -> bool {
        self.raw.as_ref().is_some_and(|a| a.is_match(bytes))
    }

    /// Whether an object that is not a table of rows (a Delta log entry, a
    /// request, a lease) holds an identifier: as text when it is UTF-8, else
    /// as raw bytes.
    pub fn object_holds(&self, bytes: &[u8]) -> bool {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                self.text_holds(text)
                    || ((text.contains('\\') || !self.keys.is_empty())
                        && text.lines().any(|line| self.text_holds(line)))
            }
            Err(_) => self.bytes_hold(bytes),
        }
    }

    /// `text` with every occurrence of an identifier replaced by
    /// [`REDACTED`]; `None` when it holds none.
    pub fn redact(&self, text: &str) -> Option<String> {
        if !self.automaton.as_ref()?.is_match(text) {
            return None;
        }
        redact_ranges(text, self.occurrences(text))
    }

    /// `array` (a string column) with every identifier replaced by
    /// [`REDACTED`], and how many values changed; `None` when none did or
    /// it is not a `Utf8` column.
    pub fn redact_array(&self, array: &ArrayRef) -> Option<(ArrayRef, u64)> {
        let strings = array.as_string_opt::<i32>()?;
        let mut changed = 0u64;
        let redacted: StringArray = strings
            .iter()
            .map(|value| {
                let value = value?;
                match self.redact(value) {
                    Some(new) => {
                        changed += 1;
                        Some(std::borrow::Cow::Owned(new))
                    }
                    None => Some(std::borrow::Cow::Borrowed(value)),
                }
            })
            .collect();
        (changed > 0).then(|| (std::sync::Arc::new(redacted) as ArrayRef, changed))
    }

    /// Whether any string or binary value in `array` (at any depth) holds an
    /// identifier.
    pub fn array_holds(&self, array: &ArrayRef) -> bool {
        if self.raw.is_none() {
            return false;
        }
        match array.data_type() {
            DataType::Utf8 => array
                .as_string::<i32>()
                .iter()
                .flatten()
                .any(|s| self.text_holds(s)),
            DataType::LargeUtf8 => array
                .as_string::<i64>()
                .iter()
                .flatten()
                .any(|s| self.text_holds(s)),
            DataType::Utf8View => array
                .as_string_view()
                .iter()
                .flatten()
                .any(|s| self.text_holds(s)),
            DataType::Binary => array
                .as_binary::<i32>()
                .iter()
                .flatten()
                .any(|b| self.bytes_hold(b)),
            DataType::LargeBinary => array
                .as_binary::<i64>()
                .iter()
                .flatten()
                .any(|b| self.bytes_hold(b)),
            DataType::List(_) => self.array_holds(array.as_list::<i32>().values()),
            DataType::LargeList(_) => self.array_holds(array.as_list::<i64>().values()),
            DataType::Struct(_) => array
                .as_struct()
                .columns()
                .iter()
                .any(|c| self.array_holds(c)),
            DataType::Map(_, _) => {
                let map = array.as_map();
                self.array_holds(map.keys()) || self.array_holds(map.values())
            }
            _ => false,
        }
    }

    /// The columns of `batch` (other than `skip`) that hold an identifier.
    pub fn columns_holding(&self, batch: &RecordBatch, skip: &[&str]) -> Vec<String> {
        batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(field, array)| {
                !skip.contains(&field.name().as_str()) && self.array_holds(array)
            })
            .map(|(field, _)| field.name().clone())
            .collect()
    }
}

/// `text` with each byte range of `found` (in any order, possibly
/// overlapping) replaced by [`REDACTED`], overlapping ones once; `None`
/// when there is none.
pub(super) fn redact_ranges(text: &str, mut found: Vec<(usize, usize)>) -> Option<String> {
    if found.is_empty() {
        return None;
    }
    found.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(found.len());
    for (start, end) in found {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in merged {
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(ids: &[&str]) -> Matcher {
        Matcher::new(ids.iter().map(|s| s.to_string()), []).unwrap()
    }

    #[test]
    fn record_keys_are_whole_values_in_text_and_anywhere_in_bytes() {
        let m = Matcher::new([], ["42".to_string()]).unwrap();
        assert!(m.text_holds("42"));
        assert!(!m.text_holds("took 42 ms"));
        assert!(m.object_holds(br#"{"add":{"tags":{"_key":"42"}}}"#));
        assert!(!m.object_holds(br#"{"add":{"stats":"{\"numRecords\":42}"}}"#));
        assert!(m.bytes_hold(b"\x02\x0442\x00"));
        assert_eq!(m.redact("took 42 ms"), None);
    }

    #[test]
    fn identifiers_are_found_inside_text_but_not_inside_other_words() {
        let m = matcher(&["p3@ex.org", "u1"]);
        for text in [
            "p3@ex.org",
            "password reset mail sent to p3@ex.org.",
            "{\"user\":\"u1\"}",
            "user_u1 logged in",
            "(u1)",
        ] {
            assert!(m.text_holds(text), "{text}");
        }
        for text in ["u10", "xp3@ex.org", "mu1", "p3@ex.orgs", ""] {
            assert!(!m.text_holds(text), "{text}");
        }
        // Escaped in JSON text.
        let quoted = matcher(&["a\"b1"]);
        assert!(quoted.text_holds(r#"{"msg":"to a\"b1"}"#));
        // Raw bytes: anywhere.
        assert!(m.bytes_hold(b"\x12xp3@ex.org"));
        assert!(!matcher(&[]).text_holds("anything"));
    }

    #[test]
    fn redaction_replaces_every_occurrence_and_nothing_else() {
        let m = matcher(&["p3@ex.org", "p3", "u1"]);
        assert_eq!(
            m.redact("sent to p3@ex.org and p3@ex.org, not u10 but u1.")
                .unwrap(),
            "sent to [redacted] and [redacted], not u10 but [redacted]."
        );
        assert_eq!(m.redact("nobody here, u10"), None);
        let redacted = m.redact("p3@ex.org").unwrap();
        assert!(!m.text_holds(&redacted));
    }
}
