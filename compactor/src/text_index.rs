//! The free-text index: the identifier-like tokens of a row's redact
//! columns (`lake.redact_columns`), kept in the hidden list column
//! [`INDEX_COLUMN`] of every table file, with a Parquet bloom filter, so that
//! `tributary forget` can tell which files may mention a subject without
//! reading them.
//!
//! ```text
//! "password reset mail sent to p3@ex.org, ticket T-4711."
//!   tokens (runs of letters, digits and the joiners @ . _ - +):
//!     password reset mail sent to p3@ex.org ticket T-4711.
//!   identifier-like tokens (a digit or an `@`): p3@ex.org  T-4711.
//!   atoms (runs of letters and digits): [p3, ex, org]  [T, 4711]
//!   indexed spans (1..=6 consecutive atoms of a token, with a digit or `@`):
//!     p3  p3@ex  p3@ex.org  T-4711  4711
//! ```
//!
//! Why this shape: forget finds an identifier in text wherever it is not
//! glued to a letter or digit on either side (`p3@ex.org.` and `<p3@ex.org>`
//! mention `p3@ex.org`; `xp3@ex.org` and `p30@ex.org` do not, and `u1` is not
//! in `u10`). Such an occurrence always starts and ends on atom boundaries
//! of one token, so if the identifier is one run of at most
//! [`MAX_SPAN_ATOMS`] atoms and joiners holding a digit or an `@`
//! ([`indexable`]), it is one of the token's spans, and a bloom filter that
//! rules the identifier out proves the file clean. E-mail addresses, numeric
//! and alphanumeric user ids, UUIDs, phone numbers and IP addresses are of
//! that shape; words are not indexed (they would multiply the index for
//! nothing: a request naming `jsmith` reads every file with free text).
//!
//! The index is a copy of identifiers, so it lives in the data file it
//! describes: deleting or rewriting the file deletes or recomputes it. The
//! columns a file's index covers are named in its Parquet key-value metadata
//! ([`INDEXED_COLUMNS_KEY`]); a file without the index, or whose index does
//! not cover a redact column it holds, is read.

use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, AsArray, ListBuilder, StringBuilder};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;

/// The hidden list column holding each row's indexed spans.
pub const INDEX_COLUMN: &str = "_redact_tokens";

/// The Parquet leaf column of [`INDEX_COLUMN`]'s values (where the bloom
/// filter is).
pub const INDEX_LEAF: &str = "_redact_tokens.list.element";

/// The Parquet key-value metadata key naming the columns a file's index
/// covers (a JSON list).
pub const INDEXED_COLUMNS_KEY: &str = "tributary.redact_columns";

/// Most atoms in an indexed span (and in an identifier the index can rule
/// out): `first.last@mail.example.com` has 5.
pub const MAX_SPAN_ATOMS: usize = 6;

/// The Arrow type of [`INDEX_COLUMN`] (as the table's list columns are written).
pub fn index_type() -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)))
}

/// Characters that join atoms into one token.
pub fn is_joiner(c: char) -> bool {
    matches!(c, '@' | '.' | '_' | '-' | '+')
}

fn is_atom(c: char) -> bool {
    c.is_alphanumeric()
}

/// Whether a span is identifier-like: it holds a digit or an `@`.
fn is_marked(s: &str) -> bool {
    s.chars().any(|c| c == '@' || c.is_numeric())
}

/// Calls `found` with every span of `text`: each run of 1 to
/// [`MAX_SPAN_ATOMS`] consecutive atoms of one token, with what joins them.
/// With `marked_only`, only spans holding a digit or an `@` (what the index
/// keeps); without, every span (what the audit hashes).
pub fn for_each_span<'t>(text: &'t str, marked_only: bool, mut found: impl FnMut(&'t str)) {
    let mut atoms: Vec<(usize, usize)> = Vec::new();
    let mut atom_start = None;
    let mut flush = |atoms: &mut Vec<(usize, usize)>| {
        for i in 0..atoms.len() {
            for j in i..atoms.len().min(i + MAX_SPAN_ATOMS) {
                let span = &text[atoms[i].0..atoms[j].1];
                if !marked_only || is_marked(span) {
                    found(span);
                }
            }
        }
        atoms.clear();
    };
    for (at, c) in text.char_indices() {
        if is_atom(c) {
            atom_start.get_or_insert(at);
            continue;
        }
        if let Some(start) = atom_start.take() {
            atoms.push((start, at));
        }
        if !is_joiner(c) {
            flush(&mut atoms);
        }
    }
    if let Some(start) = atom_start {
        atoms.push((start, text.len()));
    }
    flush(&mut atoms);
}

/// Whether the index can rule `identifier` out: it is one token that starts
/// and ends with a letter or digit, of at most [`MAX_SPAN_ATOMS`] atoms, and
/// holds a digit or an `@`. Any occurrence of such an identifier in text is
/// an indexed span (see the module docs).
pub fn indexable(identifier: &str) -> bool {
    let (Some(first), Some(last)) = (identifier.chars().next(), identifier.chars().next_back())
    else {
        return false;
    };
    if !is_atom(first) || !is_atom(last) || !is_marked(identifier) {
        return false;
    }
    if !identifier.chars().all(|c| is_atom(c) || is_joiner(c)) {
        return false;
    }
    let mut atoms = 0;
    let mut in_atom = false;
    for c in identifier.chars() {
        if is_atom(c) && !in_atom {
            atoms += 1;
        }
        in_atom = is_atom(c);
    }
    atoms <= MAX_SPAN_ATOMS
}

/// Value `row` of a string array of any string type (`None`: null, or not
/// a string column).
pub fn string_value(array: &dyn Array, row: usize) -> Option<&str> {
    if array.is_null(row) {
        return None;
    }
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Some(array.as_string_view().value(row)),
        _ => None,
    }
}

/// The index of `batch`: per row, the distinct indexed spans of its values
/// in `columns` (null when there are none).
pub fn index_array(batch: &RecordBatch, columns: &[String]) -> ArrayRef {
    let sources: Vec<&ArrayRef> = columns
        .iter()
        .filter_map(|c| batch.column_by_name(c))
        .collect();
    let mut builder = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "element",
        DataType::Utf8,
        true,
    )));
    let mut spans: Vec<&str> = Vec::new();
    for row in 0..batch.num_rows() {
        spans.clear();
        for source in &sources {
            if let Some(text) = string_value(source.as_ref(), row) {
                for_each_span(text, true, |s| spans.push(s));
            }
        }
        if spans.is_empty() {
            builder.append_null();
            continue;
        }
        spans.sort_unstable();
        spans.dedup();
        for span in &spans {
            builder.values().append_value(span);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

/// `schema` with [`INDEX_COLUMN`] (appended when missing).
pub fn with_index_field(schema: &SchemaRef) -> SchemaRef {
    if schema.index_of(INDEX_COLUMN).is_ok() {
        return schema.clone();
    }
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(INDEX_COLUMN, index_type(), true)));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` as rows of `schema` (its columns, then [`INDEX_COLUMN`]) with
/// the index computed from `columns`; a stale index is replaced.
pub fn with_index(
    batch: &RecordBatch,
    schema: &SchemaRef,
    columns: &[String],
) -> Result<RecordBatch, ArrowError> {
    let index = index_array(batch, columns);
    let arrays = schema
        .fields()
        .iter()
        .map(|field| {
            if field.name() == INDEX_COLUMN {
                Ok(index.clone())
            } else {
                batch.column_by_name(field.name()).cloned().ok_or_else(|| {
                    ArrowError::SchemaError(format!("no column `{}` to write", field.name()))
                })
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), arrays)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::StringArray;

    fn spans(text: &str, marked_only: bool) -> Vec<String> {
        let mut found = Vec::new();
        for_each_span(text, marked_only, |s| found.push(s.to_string()));
        found
    }

    #[test]
    fn identifier_like_spans_of_a_message_are_indexed() {
        assert_eq!(
            spans(
                "password reset mail sent to p3@ex.org, ticket T-4711.",
                true
            ),
            ["p3", "p3@ex", "p3@ex.org", "T-4711", "4711"]
        );
        assert_eq!(spans("no ids here", true), Vec::<String>::new());
        assert_eq!(spans("a.b c", false), ["a", "a.b", "b", "c"]);
        // Letters of any script are atoms; other characters end tokens.
        assert_eq!(spans("«jö1@x»", true), ["jö1", "jö1@x"]);
    }

    #[test]
    fn every_delimited_occurrence_of_an_indexable_identifier_is_a_span() {
        for (text, id) in [
            ("mail to p3@ex.org.", "p3@ex.org"),
            ("<p3@ex.org>", "p3@ex.org"),
            ("user_u123 logged in", "u123"),
            ("see first.last2@mail.example.com", "last2@mail.example.com"),
            ("id=550e8400-e29b-41d4", "550e8400-e29b-41d4"),
        ] {
            assert!(indexable(id), "{id}");
            assert!(spans(text, true).iter().any(|s| s == id), "{id} in {text}");
        }
        for id in ["jsmith", "p3 x", "-u1", "a.b.c.d.e.f.g1", ""] {
            assert!(!indexable(id), "{id}");
        }
    }

    #[test]
    fn the_index_column_holds_distinct_spans_per_row() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("msg", DataType::Utf8, true),
            Field::new("note", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("to u1 and u1"),
                    None,
                    Some("x"),
                ])),
                Arc::new(StringArray::from(vec![Some("u2"), Some("u3"), None])),
            ],
        )
        .unwrap();
        let columns = ["msg".to_string()];
        let indexed = with_index(&batch, &with_index_field(&schema), &columns).unwrap();
        let index = indexed
            .column_by_name(INDEX_COLUMN)
            .unwrap()
            .as_list::<i32>();
        let row = |i: usize| {
            let values = index.value(i);
            let values = values.as_string::<i32>();
            values
                .iter()
                .flatten()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(row(0), ["u1"]);
        assert!(index.is_null(1) && index.is_null(2));
    }
}
