//! Arrays: the schema of every item, tuples (`items` as a list, or 2020-12's
//! `prefixItems`) under open, partially open and closed content models, and
//! the array bounds.

use serde_json::{Map, Value as Json};

use super::Checker;
use super::object::{Model, rest_model};
use super::scalars::Bound;
use super::shape::{ANY, Node, is_any};

/// The schema every item must match: `items` given as one schema (not with
/// `prefixItems`, where it covers only the items after those).
fn every_item(map: &Map<String, Json>) -> Option<&Json> {
    match map.get("items") {
        Some(items) if !items.is_array() && !map.contains_key("prefixItems") => Some(items),
        _ => None,
    }
}

/// The schemas of the first items: `prefixItems`, or `items` as a list.
fn tuple(map: &Map<String, Json>) -> &[Json] {
    let list = map.get("prefixItems").or_else(|| map.get("items"));
    list.and_then(Json::as_array).map_or(&[], |v| v)
}

/// What items past the tuple must match, and its keyword: `items` after
/// `prefixItems`, else `additionalItems`.
fn rest(map: &Map<String, Json>) -> (&'static str, Option<&Json>) {
    if map.contains_key("prefixItems") {
        ("items", map.get("items"))
    } else {
        ("additionalItems", map.get("additionalItems"))
    }
}

/// The content model of the items past the tuple.
fn item_model(map: &Map<String, Json>) -> Model<'_> {
    rest_model(rest(map), ("unevaluatedItems", map.get("unevaluatedItems")))
}

impl<'a> Checker<'a> {
    /// Two array schemas.
    pub(super) fn array(
        &mut self,
        writer: Node<'a>,
        w: &'a Map<String, Json>,
        reader: Node<'a>,
        r: &'a Map<String, Json>,
    ) {
        if let Some(read) = every_item(r) {
            let written = every_item(w).unwrap_or(&ANY);
            self.at("items", |c| {
                c.compare(writer.child(written), reader.child(read))
            });
        }
        self.tuples(writer, w, reader, r);
        let ((keyword, written), (_, read)) = (rest(w), rest(r));
        self.extra(writer, written, reader, read, keyword);
        let (written, read) = (w.get("unevaluatedItems"), r.get("unevaluatedItems"));
        self.extra(writer, written, reader, read, "unevaluatedItems");
        self.limit(w, r, "maxItems", Bound::Upper);
        self.limit(w, r, "minItems", Bound::Lower);
        self.limit(w, r, "maxContains", Bound::Upper);
        self.limit(w, r, "minContains", Bound::Lower);
        let unique = |map: &Map<String, Json>| map.get("uniqueItems") == Some(&Json::Bool(true));
        if unique(r) && !unique(w) {
            self.problem("uniqueItems added (data written earlier may repeat items)");
        }
    }

    /// Tuple items position by position; an item only one side lists is
    /// judged by the other side's content model.
    fn tuples(
        &mut self,
        writer: Node<'a>,
        w: &'a Map<String, Json>,
        reader: Node<'a>,
        r: &'a Map<String, Json>,
    ) {
        let (written, read) = (tuple(w), tuple(r));
        for i in 0..written.len().max(read.len()) {
            self.at(format!("items/{i}"), |c| {
                match (written.get(i), read.get(i)) {
                    (Some(before), Some(after)) => {
                        c.compare(writer.child(before), reader.child(after));
                    }
                    (Some(before), None) => c.item_removed(writer.child(before), reader, r),
                    (None, Some(after)) => c.item_added(writer, w, reader.child(after)),
                    (None, None) => {}
                }
            });
        }
    }

    /// A tuple item the reader no longer lists: its content model must take
    /// it.
    fn item_removed(&mut self, written: Node<'a>, reader: Node<'a>, r: &'a Map<String, Json>) {
        match item_model(r) {
            Model::Open => {}
            Model::Covered(schema, keyword) => {
                let problems = self.trial(|c| c.compare(written, reader.child(schema)));
                if !problems.is_empty() {
                    self.problem(format!(
                        "item removed from the tuple, and the reader's {keyword} schema that now \
                         covers it refuses some of its values"
                    ));
                    self.problems.extend(problems);
                }
            }
            Model::Closed if written.value == &Json::Bool(false) => {}
            Model::Closed | Model::Unknown(_) => {
                self.problem("item removed from a closed tuple (data written earlier may hold it)")
            }
        }
    }

    /// A tuple item the writer did not list: what the writer's content
    /// model let through in its place must fit it.
    fn item_added(&mut self, writer: Node<'a>, w: &'a Map<String, Json>, read: Node<'a>) {
        match item_model(w) {
            Model::Open if is_any(read.value) => {}
            Model::Open => self.problem(
                "item added to an open tuple (data written earlier may hold any value there)",
            ),
            Model::Covered(schema, keyword) => {
                let problems = self.trial(|c| c.compare(writer.child(schema), read));
                if !problems.is_empty() {
                    self.problem(format!(
                        "item added to the tuple, and the writer's {keyword} schema let data \
                         written earlier hold values there it refuses"
                    ));
                    self.problems.extend(problems);
                }
            }
            Model::Closed | Model::Unknown(_) => {}
        }
    }
}
