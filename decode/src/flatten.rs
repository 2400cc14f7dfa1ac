//! Nested JSON messages to flat rows, streamed from the message text
//! straight into the batch's Arrow builders (no `serde_json::Value` per
//! message: only arrays off the explode path are buffered, to tell a list of
//! scalars from JSON text).
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
//!    by the path (`messages_level`), plus every envelope field (stored once
//!    per message and repeated onto its rows by index, not copied). An
//!    element that is not an object becomes the single column named by the path.
//!    An empty or missing array yields one row of envelope fields, so no
//!    envelope is ever lost.
//! 4. An array of scalars (and nulls) becomes a list column. Any other array
//!    (of objects, of arrays, or off the explode path) becomes a string column
//!    holding the array's JSON text.
//! 5. `null` is a value (the column is null in that row); an empty object
//!    contributes no column.
//! 6. Two fields that map to the same column name (`{"a_b": 1, "a": {"b": 2}}`),
//!    or a field that maps to a column Tributary reserves (`_key`, `_position`, `_hour`,
//!    `_partition`, `date`, and the sources' metadata columns `_kafka_…` and
//!    `_kinesis_…`), are an error, never silently merged. In the envelope the
//!    whole message is dead-lettered; in one element of the explode path only
//!    that element is (a dead letter with the element's index), and the
//!    envelope's other elements become rows. A key that appears twice in one
//!    object is such a collision too (a value tree would keep the last one
//!    silently); so is an element field that maps to the name of an
//!    envelope field, which rejects the whole message.
//! 7. Columns appear in the order the message text first has them.

use std::borrow::Cow;
use std::fmt;

use crate::avro::push_segment;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;
use tributary_config::FlattenConfig;

use crate::Val;
use crate::builder::{At, BatchBuilder};
use crate::columns::ColumnTypes;

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
    /// The message is not JSON.
    #[error("{0}")]
    Malformed(String),
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

    /// Appends the rows of one JSON message to `builder` (whose current
    /// message it is). Bad column names reject their element or message in
    /// the builder; text that is not a JSON object is an error, after which
    /// the caller aborts the message.
    pub fn flatten(
        &self,
        text: &str,
        builder: &mut BatchBuilder,
        types: &ColumnTypes,
    ) -> Result<(), FlattenError> {
        let mut walk = Walk {
            explode: &self.explode,
            builder,
            types,
            path: String::new(),
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let malformed = |e: serde_json::Error| FlattenError::Malformed(e.to_string());
        de.deserialize_any(Top(&mut walk)).map_err(malformed)??;
        de.end().map_err(malformed)
    }
}

/// A message being walked: the builder it goes to and the current path.
struct Walk<'a> {
    explode: &'a [String],
    builder: &'a mut BatchBuilder,
    types: &'a ColumnTypes,
    path: String,
}

impl Walk<'_> {
    fn put(&mut self, at: At, cell: Val<'_>) {
        self.builder.put(at, &self.path, cell, self.types);
    }
}

/// The message: an object, or the kind of value it is instead.
struct Top<'w, 'a>(&'w mut Walk<'a>);

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = Result<(), FlattenError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Object {
            walk: self.0,
            at: At::Envelope,
            depth: Some(0),
        }
        .visit_map(map)
        .map(Ok)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(FlattenError::NotAnObject { found: "an array" }))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(FlattenError::NotAnObject { found: "null" }))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(FlattenError::NotAnObject { found: "a boolean" }))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(FlattenError::NotAnObject { found: "a number" }))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(FlattenError::NotAnObject { found: "a number" }))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(FlattenError::NotAnObject { found: "a number" }))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(FlattenError::NotAnObject { found: "a string" }))
    }
}

/// An object's fields, at a level; `depth` is how far along the explode
/// path the object is, if it is on it.
struct Object<'w, 'a> {
    walk: &'w mut Walk<'a>,
    at: At,
    depth: Option<usize>,
}

impl<'de> Visitor<'de> for Object<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Object { walk, at, depth } = self;
        loop {
            let len = walk.path.len();
            let expect = depth.and_then(|d| walk.explode.get(d)).map(String::as_str);
            let Some(on_path) = map.next_key_seed(Key {
                path: &mut walk.path,
                expect,
            })?
            else {
                break;
            };
            let mode = match depth {
                Some(d) if on_path && d + 1 == walk.explode.len() => Mode::Explode,
                Some(d) if on_path => Mode::OnPath(d + 1),
                _ => Mode::Plain,
            };
            map.next_value_seed(Field {
                walk: &mut *walk,
                at,
                mode,
            })?;
            walk.path.truncate(len);
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Object<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

/// A key: appends its sanitized segment to the path; whether it is the
/// explode path's next key.
struct Key<'p> {
    path: &'p mut String,
    expect: Option<&'p str>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        push_segment(self.path, key);
        Ok(self.expect == Some(key))
    }
}

/// Where a field's value sits relative to the explode path.
#[derive(Clone, Copy)]
enum Mode {
    Plain,
    /// An object here continues the path at this depth.
    OnPath(usize),
    /// An array here is exploded.
    Explode,
}

/// A field's value at the current path.
struct Field<'w, 'a> {
    walk: &'w mut Walk<'a>,
    at: At,
    mode: Mode,
}

impl<'de> DeserializeSeed<'de> for Field<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Field<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.walk.put(self.at, Val::Null);
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.walk.put(self.at, Val::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.walk.put(self.at, Val::Long(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.walk.put(self.at, number(v));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.walk.put(self.at, Val::Double(v));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.walk.put(self.at, Val::Str(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let depth = match self.mode {
            Mode::OnPath(d) => Some(d),
            _ => None,
        };
        Object {
            walk: self.walk,
            at: self.at,
            depth,
        }
        .visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Field { walk, at, mode } = self;
        if !matches!(mode, Mode::Explode) {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<Json>()? {
                items.push(item);
            }
            walk.put(at, array(items));
            return Ok(());
        }
        while seq
            .next_element_seed(Element { walk: &mut *walk })?
            .is_some()
        {
            walk.builder.end_element();
        }
        Ok(())
    }
}

/// One element of the explode array: an object's fields, or a single value,
/// at the element level.
struct Element<'w, 'a> {
    walk: &'w mut Walk<'a>,
}

impl<'de> DeserializeSeed<'de> for Element<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.walk.builder.begin_element();
        d.deserialize_any(Field {
            walk: self.walk,
            at: At::Element,
            mode: Mode::Plain,
        })
    }
}

/// A JSON number that fits no `i64`: a double (so `u64` values above
/// `i64::MAX` lose precision, as in Spark).
fn number(v: u64) -> Val<'static> {
    i64::try_from(v).map_or(Val::Double(v as f64), Val::Long)
}

/// An array off the explode path: a list if it holds only scalars and
/// nulls, else its JSON text.
fn array(items: Vec<Json>) -> Val<'static> {
    if items
        .iter()
        .any(|i| matches!(i, Json::Array(_) | Json::Object(_)))
    {
        return Val::Str(Cow::Owned(Json::Array(items).to_string()));
    }
    Val::List(items.into_iter().map(scalar).collect())
}

fn scalar(v: Json) -> Val<'static> {
    match v {
        Json::Null => Val::Null,
        Json::Bool(b) => Val::Bool(b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Val::Long(i),
            (None, f) => Val::Double(f.unwrap_or(f64::NAN)),
        },
        Json::String(s) => Val::Str(Cow::Owned(s)),
        other => Val::Str(Cow::Owned(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reason;
    use crate::builder::Outcome;
    use crate::columns::{ColumnType, arrow_type, json_text};
    use arrow_array::cast::AsArray;
    use arrow_array::{Array, RecordBatch};
    use proptest::prelude::*;
    use serde_json::json;

    fn flattener(explode: Option<&str>) -> Flattener {
        Flattener::new(&FlattenConfig {
            explode: explode.map(str::to_string),
            ..FlattenConfig::default()
        })
    }

    /// The batch of `messages`, and each message's outcome (or flatten
    /// error).
    fn batch(
        f: &Flattener,
        messages: &[Json],
    ) -> (RecordBatch, Vec<Result<Outcome, FlattenError>>) {
        let types = ColumnTypes::default();
        let mut builder = BatchBuilder::new(None, None);
        let mut outcomes = Vec::new();
        for (position, message) in messages.iter().enumerate() {
            builder.begin_message(position as u64);
            match f.flatten(&message.to_string(), &mut builder, &types) {
                Ok(()) => outcomes.push(Ok(builder.end_message())),
                Err(e) => {
                    builder.abort_message();
                    outcomes.push(Err(e));
                }
            }
        }
        let mut types = types;
        let batch = builder.finish("s/p", &mut types).unwrap();
        (batch, outcomes)
    }

    /// The data columns' names (after `_key`, `_position`, `date`).
    fn cols(batch: &RecordBatch) -> Vec<String> {
        batch
            .schema()
            .fields()
            .iter()
            .skip(3)
            .map(|f| f.name().clone())
            .collect()
    }

    /// Every data cell as JSON text, by row.
    fn texts(batch: &RecordBatch) -> Vec<Vec<Option<String>>> {
        let columns: Vec<_> = batch
            .columns()
            .iter()
            .skip(3)
            .map(|c| json_text(c).unwrap())
            .collect();
        (0..batch.num_rows())
            .map(|row| {
                columns
                    .iter()
                    .map(|c| {
                        let c = c.as_string::<i32>();
                        c.is_valid(row).then(|| c.value(row).to_string())
                    })
                    .collect()
            })
            .collect()
    }

    fn text(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn nested_objects_join_with_underscores() {
        let (b, _) = batch(
            &flattener(None),
            &[json!({"a": {"b": {"c": 1}}, "http-status": 200, "9x": true, "tags": ["x", null]})],
        );
        assert_eq!(cols(&b), vec!["_9x", "a_b_c", "http_status", "tags"]);
        assert_eq!(
            texts(&b),
            vec![vec![
                text("true"),
                text("1"),
                text("200"),
                text(r#"["x",null]"#)
            ]]
        );
        assert_eq!(
            b.schema().field(6).data_type(),
            &arrow_type(&ColumnType::List(Box::new(ColumnType::String)))
        );
    }

    #[test]
    fn explode_repeats_the_envelope_on_each_row() {
        let (b, _) = batch(
            &flattener(Some("messages")),
            &[json!({
                "host": "h1",
                "messages": [{"level": "INFO", "user": {"id": 7}}, {"level": "WARN"}, "bare"],
            })],
        );
        assert_eq!(
            cols(&b),
            vec!["host", "messages_level", "messages_user_id", "messages"]
        );
        assert_eq!(
            texts(&b),
            vec![
                vec![text("h1"), text("INFO"), text("7"), None],
                vec![text("h1"), text("WARN"), None, None],
                vec![text("h1"), None, None, text("bare")],
            ]
        );
    }

    #[test]
    fn nested_explode_path_and_empty_array_keep_the_envelope() {
        let f = flattener(Some("payload.events"));
        let (b, _) = batch(
            &f,
            &[
                json!({"id": 1, "payload": {"kind": "k", "events": [{"x": 1}, {"x": 2}]}}),
                json!({"id": 2, "payload": {"events": []}}),
            ],
        );
        assert_eq!(cols(&b), vec!["id", "payload_events_x", "payload_kind"]);
        assert_eq!(
            texts(&b),
            vec![
                vec![text("1"), text("1"), text("k")],
                vec![text("1"), text("2"), text("k")],
                vec![text("2"), None, None],
            ]
        );
        let keys: Vec<_> = b.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(keys, vec!["s/p/0/0", "s/p/0/1", "s/p/1/0"]);
    }

    #[test]
    fn arrays_of_objects_off_the_path_become_json_text() {
        let (b, _) = batch(&flattener(None), &[json!({"a": [{"b": 1}]})]);
        assert_eq!(texts(&b), vec![vec![text(r#"[{"b":1}]"#)]]);
    }

    #[test]
    fn a_collision_in_one_element_fails_only_that_element() {
        let (b, outcomes) = batch(
            &flattener(Some("messages")),
            &[json!({"host": "h", "messages": [{"a_b": 1}, {"a_b": 1, "a": {"b": 2}}, {"a": 3}]})],
        );
        assert_eq!(
            outcomes,
            vec![Ok(Outcome::Elements(vec![(
                1,
                (
                    Reason::Flatten,
                    "two fields map to column `messages_a_b`".into()
                )
            )]))]
        );
        assert_eq!(b.num_rows(), 2);
    }

    #[test]
    fn collisions_reserved_names_and_non_objects_are_errors() {
        let (b, outcomes) = batch(
            &flattener(None),
            &[
                json!({"a_b": 1, "a": {"b": 2}}),
                json!({"date": "2026-01-01"}),
                json!([1]),
            ],
        );
        let rejected = |error: &str| Ok(Outcome::Rejected((Reason::Flatten, error.to_string())));
        assert_eq!(
            outcomes,
            vec![
                rejected("two fields map to column `a_b`"),
                rejected("field maps to reserved column `date`"),
                Err(FlattenError::NotAnObject { found: "an array" }),
            ]
        );
        assert_eq!(b.num_rows(), 0);
        // A key twice in one object is a collision, not a silent overwrite.
        let (_, outcomes) = batch(&flattener(None), &[]);
        assert!(outcomes.is_empty());
        let types = ColumnTypes::default();
        let mut builder = BatchBuilder::new(None, None);
        builder.begin_message(0);
        flattener(None)
            .flatten(r#"{"k": 1, "k": 2}"#, &mut builder, &types)
            .unwrap();
        assert_eq!(
            builder.end_message(),
            Outcome::Rejected((Reason::Flatten, "two fields map to column `k`".into()))
        );
    }

    #[test]
    fn malformed_json_is_an_error() {
        let types = ColumnTypes::default();
        let mut builder = BatchBuilder::new(None, None);
        builder.begin_message(0);
        for text in [r#"{"a": 1"#, r#"{"a": 1} x"#, "{"] {
            assert!(matches!(
                flattener(None).flatten(text, &mut builder, &types),
                Err(FlattenError::Malformed(_))
            ));
        }
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

    proptest! {
        /// Any text, JSON-like or not, is rows, a rejection or an error;
        /// never a panic, and the batch still finishes.
        #[test]
        fn arbitrary_text_never_panics(text in "[\\[\\]{}\":,0-9a-z_ .\\\\-]{0,64}", bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let types = ColumnTypes::default();
            let mut builder = BatchBuilder::new(Some("a".into()), Some("b".into()));
            let lossy = String::from_utf8_lossy(&bytes).into_owned();
            for (position, text) in [text, lossy].iter().enumerate() {
                builder.begin_message(position as u64);
                match flattener(Some("m")).flatten(text, &mut builder, &types) {
                    Ok(()) => {
                        builder.end_message();
                    }
                    Err(_) => builder.abort_message(),
                }
            }
            let mut types = types;
            prop_assert!(builder.finish("s/p", &mut types).is_ok());
        }

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
                element_of.extend(std::iter::repeat_n(i as u32, next - first));
            }
            let mut message = json!({"body": body});
            message["messages"] = Json::Array(messages.clone());

            let (b, outcomes) = batch(&flattener(Some("messages")), &[message]);
            let dead: Vec<u32> = match &outcomes[0] {
                Ok(Outcome::Rows) => Vec::new(),
                // Sanitizing `a.` and `a-` to `a_` makes collisions possible;
                // they must be reported, and nothing else may fail.
                Ok(Outcome::Elements(rejected)) => {
                    for (_, (_, error)) in rejected {
                        prop_assert!(error.starts_with("two fields map to column"), "{}", error);
                    }
                    rejected.iter().map(|(i, _)| *i).collect()
                }
                Ok(Outcome::Rejected((_, error))) => {
                    prop_assert!(error.starts_with("two fields map to column"), "{}", error);
                    prop_assert_eq!(b.num_rows(), 0);
                    return Ok(());
                }
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            };
            prop_assert_eq!(b.num_rows() + dead.len(), messages.len().max(1));
            let rows = texts(&b);
            for leaf in 0..next {
                let marker = format!("<{leaf}>");
                let count = |cell: &Option<String>| cell.as_deref().map_or(0, |t| t.matches(&marker).count());
                let per_row: Vec<usize> = rows.iter().map(|r| r.iter().map(count).sum::<usize>()).collect();
                let in_columns: Vec<usize> = rows.iter().map(|r| r.iter().filter(|c| count(c) > 0).count()).collect();
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
