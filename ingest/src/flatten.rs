//! Nested JSON messages to flat rows.
//!
//! The rules, in order:
//!
//! 1. A message is a JSON object; anything else is rejected.
//! 2. Object keys become column names: characters outside `[A-Za-z0-9_]`
//!    become `_`, a leading digit gets a `_` prefix, an empty key becomes `_`.
//!    Nested objects join their path with `_`: `{"http": {"status": 200}}` is
//!    column `http_status`.
//! 3. The configured explode path (e.g. `messages`) must hold an array; each
//!    element becomes one row whose columns are the element's fields, prefixed
//!    by the path (`messages_level`), plus a copy of every envelope field. An
//!    element that is not an object becomes the single column named by the path.
//!    An empty or missing array yields one row of envelope fields, so no
//!    envelope is ever lost.
//! 4. An array of scalars (and nulls) becomes a list column. Any other array
//!    (of objects, of arrays, or off the explode path) becomes a string column
//!    holding the array's JSON text.
//! 5. `null` is a value (the column is null in that row); an empty object
//!    contributes no column.
//! 6. Two fields that map to the same column name (`{"a_b": 1, "a": {"b": 2}}`),
//!    or a field that maps to a column Tributary reserves (`_key`, `_position`,
//!    `_partition`, `date`, and the sources' metadata columns `_kafka_…` and
//!    `_kinesis_…`), are an error, never silently merged. In the envelope the
//!    whole message is dead-lettered; in one element of the explode path only
//!    that element is (a dead letter with the element's index), and the
//!    envelope's other elements become rows.

use std::sync::Arc;

use serde_json::Value as Json;
use tributary_config::{FlattenConfig, is_reserved_column};
use tributary_schema_registry::avro::push_segment;

use crate::value::Value;

/// A flat row: column names and values, in the order fields appeared. Names
/// are shared: an Avro plan computes each once.
pub type FlatRow = Vec<(Arc<str>, Value)>;

/// The rows of one message: the envelope's single row, or one per element of
/// the explode path, each a row or the reason that element cannot be one.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageRows<E> {
    /// No explode path, or an empty or missing array: one row.
    Envelope(FlatRow),
    /// One entry per element, in order.
    Elements(Vec<Result<FlatRow, E>>),
}

impl<E> MessageRows<E> {
    /// Every row, in order, or the first bad element's error.
    pub fn into_rows(self) -> Result<Vec<FlatRow>, E> {
        match self {
            MessageRows::Envelope(row) => Ok(vec![row]),
            MessageRows::Elements(elements) => elements.into_iter().collect(),
        }
    }
}

/// Why a message could not be flattened.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FlattenError {
    /// The message is JSON but not an object.
    #[error("message is {found}, not a JSON object")]
    NotAnObject {
        /// What it is.
        found: &'static str,
    },
    /// Two fields map to one column name.
    #[error("two fields map to column `{column}`")]
    ColumnCollision {
        /// The column.
        column: String,
    },
    /// A field maps to a reserved column name.
    #[error("field maps to reserved column `{column}`")]
    ReservedColumn {
        /// The column.
        column: String,
    },
}

/// Flattens messages by the rules of this module.
#[derive(Debug, Clone, Default)]
pub struct Flattener {
    /// The explode path's keys, e.g. `["messages"]`.
    explode: Vec<String>,
}

impl Flattener {
    /// A flattener for `config`.
    pub fn new(config: &FlattenConfig) -> Self {
        Self {
            explode: config
                .explode
                .as_deref()
                .map(|p| p.split('.').map(str::to_string).collect())
                .unwrap_or_default(),
        }
    }

    /// The rows of one message. A message that is not an object, or whose
    /// envelope has a bad column name, is an error; an element with a bad
    /// column name is an error in its place.
    pub fn flatten(&self, message: Json) -> Result<MessageRows<FlattenError>, FlattenError> {
        let Json::Object(object) = message else {
            return Err(FlattenError::NotAnObject {
                found: json_kind(&message),
            });
        };
        let mut envelope = FlatRow::new();
        let mut exploded: Option<(String, Vec<Json>)> = None;
        self.walk_object(object, &mut String::new(), 0, &mut envelope, &mut exploded);
        check_names(&envelope)?;
        let (prefix, elements) = match exploded {
            Some((prefix, elements)) if !elements.is_empty() => (prefix, elements),
            _ => return Ok(MessageRows::Envelope(envelope)),
        };
        let rows = elements
            .into_iter()
            .map(|element| {
                let mut row = envelope.clone();
                match element {
                    Json::Object(fields) => {
                        let mut path = prefix.clone();
                        walk_plain(fields, &mut path, &mut row);
                    }
                    scalar => push_leaf(&prefix, scalar, &mut row),
                }
                check_names(&row)?;
                Ok(row)
            })
            .collect();
        Ok(MessageRows::Elements(rows))
    }

    /// Walks an object that may contain the explode path at `depth`.
    fn walk_object(
        &self,
        object: serde_json::Map<String, Json>,
        path: &mut String,
        depth: usize,
        row: &mut FlatRow,
        exploded: &mut Option<(String, Vec<Json>)>,
    ) {
        for (key, value) in object {
            let on_path = self.explode.get(depth) == Some(&key);
            let len = path.len();
            push_segment(path, &key);
            match value {
                Json::Array(elements) if on_path && depth + 1 == self.explode.len() => {
                    *exploded = Some((path.clone(), elements));
                }
                Json::Object(inner) if on_path => {
                    self.walk_object(inner, path, depth + 1, row, exploded)
                }
                other => walk_value(other, path, row),
            }
            path.truncate(len);
        }
    }
}

fn walk_plain(object: serde_json::Map<String, Json>, path: &mut String, row: &mut FlatRow) {
    for (key, value) in object {
        let len = path.len();
        push_segment(path, &key);
        walk_value(value, path, row);
        path.truncate(len);
    }
}

fn walk_value(value: Json, path: &mut String, row: &mut FlatRow) {
    match value {
        Json::Object(inner) => walk_plain(inner, path, row),
        other => push_leaf(path, other, row),
    }
}

fn push_leaf(column: &str, value: Json, row: &mut FlatRow) {
    let value = match value {
        Json::Array(items) if items.iter().all(is_scalar) => {
            Value::List(items.into_iter().map(scalar).collect())
        }
        array @ Json::Array(_) => Value::String(array.to_string()),
        other => scalar(other),
    };
    row.push((column.into(), value));
}

fn is_scalar(v: &Json) -> bool {
    !matches!(v, Json::Array(_) | Json::Object(_))
}

/// A JSON scalar as a value: integers that fit `i64` are longs, other numbers
/// doubles (so `u64` values above `i64::MAX` lose precision, as in Spark).
fn scalar(v: Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Long(i),
            None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(s),
        other => Value::String(other.to_string()),
    }
}

fn check_names(row: &FlatRow) -> Result<(), FlattenError> {
    let mut seen = std::collections::HashSet::with_capacity(row.len());
    for (name, _) in row {
        if is_reserved_column(name) {
            return Err(FlattenError::ReservedColumn {
                column: name.to_string(),
            });
        }
        if !seen.insert(&**name) {
            return Err(FlattenError::ColumnCollision {
                column: name.to_string(),
            });
        }
    }
    Ok(())
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn flattener(explode: Option<&str>) -> Flattener {
        Flattener::new(&FlattenConfig {
            explode: explode.map(str::to_string),
            ..FlattenConfig::default()
        })
    }

    /// Every row of a message that has no bad element.
    fn all_rows(f: &Flattener, message: Json) -> Vec<FlatRow> {
        f.flatten(message).unwrap().into_rows().unwrap()
    }

    fn cols(row: &FlatRow) -> Vec<&str> {
        row.iter().map(|(n, _)| &**n).collect()
    }

    #[test]
    fn nested_objects_join_with_underscores() {
        let rows = all_rows(
            &flattener(None),
            json!({"a": {"b": {"c": 1}}, "http-status": 200, "9x": true, "tags": ["x", null]}),
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(cols(&rows[0]), vec!["_9x", "a_b_c", "http_status", "tags"]);
        assert_eq!(
            rows[0][3].1,
            Value::List(vec![Value::String("x".into()), Value::Null])
        );
    }

    #[test]
    fn explode_copies_envelope_onto_each_row() {
        let rows = all_rows(
            &flattener(Some("messages")),
            json!({
                "host": "h1",
                "messages": [{"level": "INFO", "user": {"id": 7}}, {"level": "WARN"}, "bare"],
            }),
        );
        assert_eq!(rows.len(), 3);
        assert_eq!(
            cols(&rows[0]),
            vec!["host", "messages_level", "messages_user_id"]
        );
        assert_eq!(
            rows[1],
            vec![
                ("host".into(), Value::String("h1".into())),
                ("messages_level".into(), Value::String("WARN".into()))
            ]
        );
        assert_eq!(
            rows[2][1],
            ("messages".into(), Value::String("bare".into()))
        );
    }

    #[test]
    fn nested_explode_path_and_empty_array_keep_the_envelope() {
        let f = flattener(Some("payload.events"));
        let rows = all_rows(
            &f,
            json!({"id": 1, "payload": {"kind": "k", "events": [{"x": 1}, {"x": 2}]}}),
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(
            cols(&rows[1]),
            vec!["id", "payload_kind", "payload_events_x"]
        );
        let rows = all_rows(&f, json!({"id": 1, "payload": {"events": []}}));
        assert_eq!(rows, vec![vec![("id".into(), Value::Long(1))]]);
    }

    #[test]
    fn arrays_of_objects_off_the_path_become_json_text() {
        let rows = all_rows(&flattener(None), json!({"a": [{"b": 1}]}));
        assert_eq!(
            rows[0],
            vec![("a".into(), Value::String(r#"[{"b":1}]"#.into()))]
        );
    }

    #[test]
    fn a_collision_in_one_element_fails_only_that_element() {
        let message =
            json!({"host": "h", "messages": [{"a_b": 1}, {"a_b": 1, "a": {"b": 2}}, {"a": 3}]});
        let Ok(MessageRows::Elements(elements)) = flattener(Some("messages")).flatten(message)
        else {
            panic!("an exploded message");
        };
        assert_eq!(elements.len(), 3);
        assert!(elements[0].is_ok() && elements[2].is_ok());
        assert_eq!(
            elements[1],
            Err(FlattenError::ColumnCollision {
                column: "messages_a_b".into()
            })
        );
    }

    #[test]
    fn collisions_and_reserved_names_are_errors() {
        let err = flattener(None)
            .flatten(json!({"a_b": 1, "a": {"b": 2}}))
            .unwrap_err();
        assert_eq!(
            err,
            FlattenError::ColumnCollision {
                column: "a_b".into()
            }
        );
        let err = flattener(None)
            .flatten(json!({"date": "2026-01-01"}))
            .unwrap_err();
        assert_eq!(
            err,
            FlattenError::ReservedColumn {
                column: "date".into()
            }
        );
        let err = flattener(None).flatten(json!([1])).unwrap_err();
        assert_eq!(err, FlattenError::NotAnObject { found: "an array" });
    }

    /// Random nested JSON whose leaves are unique markers `<n>`, keys from a
    /// small alphabet with characters that need sanitizing.
    fn arb_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            Just(json!("LEAF")),
            Just(json!(1)),
            Just(json!(true))
        ];
        leaf.prop_recursive(4, 48, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                proptest::collection::btree_map("[a-c.-]{1,2}", inner, 0..4)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Replaces every "LEAF" string with a unique marker; returns how many.
    fn number_leaves(v: &mut Json, next: &mut usize) {
        match v {
            Json::String(s) => {
                *s = format!("<{next}>");
                *next += 1;
            }
            Json::Array(items) => items.iter_mut().for_each(|i| number_leaves(i, next)),
            Json::Object(m) => m.values_mut().for_each(|i| number_leaves(i, next)),
            _ => {}
        }
    }

    fn count_in(value: &Value, marker: &str) -> usize {
        match value {
            Value::String(s) => s.matches(marker).count(),
            Value::List(items) => items.iter().map(|i| count_in(i, marker)).sum(),
            _ => 0,
        }
    }

    proptest! {
        /// No panic, and every leaf lands in exactly one column of one row —
        /// except envelope leaves under explode, which land once in every row.
        /// No panic, and every leaf lands in exactly one column of one row —
        /// except envelope leaves under explode, which land once in every
        /// row, and leaves of an element that is a dead letter, which land in
        /// none.
        #[test]
        fn every_leaf_lands_exactly_once(mut body in arb_json(), mut messages in proptest::collection::vec(arb_json(), 0..4)) {
            let mut next = 0;
            number_leaves(&mut body, &mut next);
            let envelope_leaves = next;
            // The element each later leaf belongs to.
            let mut element_of = Vec::new();
            for (i, m) in messages.iter_mut().enumerate() {
                let first = next;
                number_leaves(m, &mut next);
                element_of.extend(std::iter::repeat_n(i, next - first));
            }
            let mut message = json!({"body": body});
            message["messages"] = Json::Array(messages.clone());

            let (rows, dead) = match flattener(Some("messages")).flatten(message) {
                Ok(MessageRows::Envelope(row)) => {
                    prop_assert!(messages.is_empty());
                    (vec![row], Vec::new())
                }
                Ok(MessageRows::Elements(elements)) => {
                    prop_assert_eq!(elements.len(), messages.len());
                    let mut rows = Vec::new();
                    let mut dead = Vec::new();
                    for (i, element) in elements.into_iter().enumerate() {
                        match element {
                            Ok(row) => rows.push(row),
                            // Sanitizing `a.` and `a-` to `a_` makes
                            // collisions possible; nothing else may fail.
                            Err(FlattenError::ColumnCollision { .. }) => dead.push(i),
                            Err(e) => return Err(TestCaseError::fail(e.to_string())),
                        }
                    }
                    (rows, dead)
                }
                Err(FlattenError::ColumnCollision { .. }) => return Ok(()),
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            };
            for leaf in 0..next {
                let marker = format!("<{leaf}>");
                let per_row: Vec<usize> = rows.iter().map(|r| {
                    r.iter().map(|(_, v)| count_in(v, &marker)).sum::<usize>()
                }).collect();
                let in_columns: Vec<usize> = rows.iter().map(|r| {
                    r.iter().filter(|(_, v)| count_in(v, &marker) > 0).count()
                }).collect();
                if leaf < envelope_leaves {
                    prop_assert!(per_row.iter().all(|n| *n == 1), "envelope leaf {} per row {:?}", leaf, per_row);
                } else {
                    let expected = usize::from(!dead.contains(&element_of[leaf - envelope_leaves]));
                    prop_assert_eq!(per_row.iter().sum::<usize>(), expected, "element leaf {}", leaf);
                }
                prop_assert!(in_columns.iter().all(|n| *n <= 1));
            }
        }
    }
}
