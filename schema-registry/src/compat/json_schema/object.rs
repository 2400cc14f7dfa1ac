//! Objects: properties under open, partially open and closed content
//! models, `required`, dependencies, `additionalProperties` and the like.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use super::Checker;
use super::scalars::Bound;
use super::shape::{ANY, Node, is_any};

/// What a schema says of a property (or tuple item) it does not list.
#[derive(Debug)]
pub(super) enum Model<'a> {
    /// Anything goes.
    Open,
    /// It must match this schema, given by this keyword.
    Covered(&'a Json, &'static str),
    /// It may not be there.
    Closed,
    /// Cannot be told (a pattern that does not compile here).
    Unknown(String),
}

/// The content model that `additional` (`additionalProperties`,
/// `additionalItems`) and then `unevaluated` (`unevaluatedProperties`, ...)
/// give, each with its keyword; absent counts as `true`.
pub(super) fn rest_model<'a>(
    additional: (&'static str, Option<&'a Json>),
    unevaluated: (&'static str, Option<&'a Json>),
) -> Model<'a> {
    match additional.1 {
        Some(Json::Bool(false)) => Model::Closed,
        Some(schema @ Json::Object(_)) => Model::Covered(schema, additional.0),
        _ => match unevaluated.1 {
            None => Model::Open,
            Some(schema) if is_any(schema) => Model::Open,
            Some(Json::Bool(false)) => Model::Closed,
            Some(schema) => Model::Covered(schema, unevaluated.0),
        },
    }
}

/// The content model an object schema gives the property `name` it does not
/// list: a matching `patternProperties` schema first. With
/// `patternProperties` and nothing else covering `name`, the model counts as
/// closed (as Confluent counts it).
fn model_for<'a>(map: &'a Map<String, Json>, name: &str) -> Model<'a> {
    let rest = rest_model(
        ("additionalProperties", map.get("additionalProperties")),
        ("unevaluatedProperties", map.get("unevaluatedProperties")),
    );
    let Some(patterns) = map.get("patternProperties").and_then(Json::as_object) else {
        return rest;
    };
    if patterns.is_empty() {
        return rest;
    }
    for (pattern, schema) in patterns {
        match regex_lite::Regex::new(pattern) {
            Ok(regex) if regex.is_match(name) => {
                return Model::Covered(schema, "patternProperties");
            }
            Ok(_) => {}
            Err(e) => {
                return Model::Unknown(format!(
                    "patternProperties pattern \"{pattern}\" cannot be evaluated here ({e}), so \
                     what it allows under \"{name}\" is unknown"
                ));
            }
        }
    }
    match rest {
        Model::Open => Model::Closed,
        other => other,
    }
}

/// The `properties` of an object schema.
fn properties(map: &Map<String, Json>) -> Option<&Map<String, Json>> {
    map.get("properties").and_then(Json::as_object)
}

/// Whether `required` names `name`.
fn is_required(map: &Map<String, Json>, name: &str) -> bool {
    map.get("required")
        .and_then(Json::as_array)
        .is_some_and(|names| names.iter().any(|n| n.as_str() == Some(name)))
}

/// Whether a property's schema gives a default (itself, or where its `$ref`
/// leads).
fn has_default(node: Node<'_>) -> bool {
    let gives = |value: &Json| value.get("default").is_some();
    gives(node.value) || super::shape::resolve(node).is_ok_and(|n| gives(n.value))
}

/// Both kinds of dependency, by property name: a list of properties
/// (`dependencies` or `dependentRequired`) or a schema (`dependencies` or
/// `dependentSchemas`).
fn dependencies(map: &Map<String, Json>) -> BTreeMap<&str, &Json> {
    ["dependencies", "dependentRequired", "dependentSchemas"]
        .into_iter()
        .filter_map(|keyword| map.get(keyword).and_then(Json::as_object))
        .flat_map(|deps| deps.iter().map(|(name, dep)| (name.as_str(), dep)))
        .collect()
}

impl<'a> Checker<'a> {
    /// Two object schemas.
    pub(super) fn object(
        &mut self,
        writer: Node<'a>,
        w: &'a Map<String, Json>,
        reader: Node<'a>,
        r: &'a Map<String, Json>,
    ) {
        self.required(w, reader, r);
        self.properties(writer, w, reader, r);
        self.dependencies(writer, w, reader, r);
        for keyword in ["additionalProperties", "unevaluatedProperties"] {
            self.extra(writer, w.get(keyword), reader, r.get(keyword), keyword);
        }
        self.limit(w, r, "maxProperties", Bound::Upper);
        self.limit(w, r, "minProperties", Bound::Lower);
    }

    /// A property both schemas list that becomes required, without a
    /// default in the reader's schema.
    fn required(&mut self, w: &Map<String, Json>, reader: Node<'a>, r: &'a Map<String, Json>) {
        let (Some(written), Some(read)) = (properties(w), properties(r)) else {
            return;
        };
        for (name, schema) in read {
            if written.contains_key(name)
                && !is_required(w, name)
                && is_required(r, name)
                && !has_default(reader.child(schema))
            {
                self.at("required", |c| {
                    c.problem(format!(
                        "property \"{name}\" became required (data written earlier may lack it; \
                         a default would let them through)"
                    ));
                });
            }
        }
    }

    /// Properties both schemas list are compared; one listed on one side
    /// only is judged by the other side's content model.
    fn properties(
        &mut self,
        writer: Node<'a>,
        w: &'a Map<String, Json>,
        reader: Node<'a>,
        r: &'a Map<String, Json>,
    ) {
        let (written, read) = (properties(w), properties(r));
        for (name, schema) in written.into_iter().flatten() {
            match read.and_then(|read| read.get(name)) {
                Some(read_schema) => self.at("properties", |c| {
                    c.at_name(name, |c| {
                        c.compare(writer.child(schema), reader.child(read_schema));
                    });
                }),
                None => self.property_removed(writer.child(schema), reader, r, name),
            }
        }
        for (name, schema) in read.into_iter().flatten() {
            if !written.is_some_and(|written| written.contains_key(name)) {
                self.property_added(writer, w, reader.child(schema), r, name);
            }
        }
    }

    /// A property the writer lists and the reader does not: the reader's
    /// content model must take its values.
    fn property_removed(
        &mut self,
        written: Node<'a>,
        reader: Node<'a>,
        r: &'a Map<String, Json>,
        name: &str,
    ) {
        match model_for(r, name) {
            Model::Open => {}
            Model::Covered(schema, keyword) => {
                let problems = self.at("properties", |c| {
                    c.at_name(name, |c| {
                        c.trial(|c| c.compare(written, reader.child(schema)))
                    })
                });
                if !problems.is_empty() {
                    self.at("properties", |c| {
                        c.problem(format!(
                            "property \"{name}\" removed, and the reader's {keyword} schema \
                             that now covers it refuses some of its values"
                        ));
                    });
                    self.problems.extend(problems);
                }
            }
            Model::Closed if written.value == &Json::Bool(false) => {}
            Model::Closed => self.at("properties", |c| {
                c.problem(format!(
                    "property \"{name}\" removed from a closed content model (data written \
                     earlier may hold it)"
                ));
            }),
            Model::Unknown(why) => self.at("properties", |c| c.problem(why)),
        }
    }

    /// A property the reader lists and the writer does not: what the
    /// writer's content model let through under its name must fit it.
    fn property_added(
        &mut self,
        writer: Node<'a>,
        w: &'a Map<String, Json>,
        read: Node<'a>,
        r: &Map<String, Json>,
        name: &str,
    ) {
        let required = is_required(r, name);
        match model_for(w, name) {
            Model::Open if is_any(read.value) => return,
            Model::Open => {
                let (what, why) = match required {
                    true => (
                        "required property",
                        "lack it or hold any value under that name",
                    ),
                    false => ("property", "hold any value under that name"),
                };
                self.at("properties", |c| {
                    c.problem(format!(
                        "{what} \"{name}\" added to an open content model (data written earlier \
                         may {why})"
                    ));
                });
                return;
            }
            Model::Covered(schema, keyword) => {
                let problems = self.at("properties", |c| {
                    c.at_name(name, |c| c.trial(|c| c.compare(writer.child(schema), read)))
                });
                if !problems.is_empty() {
                    self.at("properties", |c| {
                        c.problem(format!(
                            "property \"{name}\" added, and the writer's {keyword} schema let \
                             data written earlier hold values under that name it refuses"
                        ));
                    });
                    self.problems.extend(problems);
                }
            }
            Model::Closed => {}
            Model::Unknown(why) => self.at("properties", |c| c.problem(why)),
        }
        if required && !has_default(read) {
            self.at("properties", |c| {
                c.problem(format!(
                    "required property \"{name}\" added (data written earlier lacks it; a \
                     default would let them through)"
                ));
            });
        }
    }

    /// Dependencies the reader has: a list that names no more properties
    /// than the writer's, a schema compatible with the writer's.
    fn dependencies(
        &mut self,
        writer: Node<'a>,
        w: &'a Map<String, Json>,
        reader: Node<'a>,
        r: &'a Map<String, Json>,
    ) {
        let written = dependencies(w);
        for (name, read) in dependencies(r) {
            self.at("dependencies", |c| match (written.get(name), read) {
                (Some(Json::Array(before)), Json::Array(after)) => {
                    if let Some(extra) = after.iter().find(|p| !before.contains(p)) {
                        c.problem(format!(
                            "\"{name}\" now also needs property {extra} (data written earlier \
                             may lack it)"
                        ));
                    }
                }
                (Some(before), after) if !before.is_array() && !after.is_array() => {
                    c.at_name(name, |c| {
                        c.compare(writer.child(before), reader.child(after))
                    });
                }
                (Some(_), _) => c.problem(format!(
                    "the dependency of \"{name}\" changed between a list of properties and a \
                     schema"
                )),
                (None, Json::Array(names)) => c.problem(format!(
                    "\"{name}\" now needs properties {} beside it (data written earlier may \
                     lack them)",
                    Json::from(names.clone())
                )),
                (None, _) => c.problem(format!(
                    "dependent schema for \"{name}\" added (data written earlier need not match \
                     it)"
                )),
            });
        }
    }

    /// What a schema allows beyond what it lists (`keyword` is
    /// `additionalProperties`, `additionalItems` or their `unevaluated`
    /// kin; absent and `true` allow anything): it may open up, never close
    /// or narrow.
    pub(super) fn extra(
        &mut self,
        writer: Node<'a>,
        written: Option<&'a Json>,
        reader: Node<'a>,
        read: Option<&'a Json>,
        keyword: &str,
    ) {
        let closed = |v: Option<&Json>| v == Some(&Json::Bool(false));
        let open = |v: Option<&Json>| v.is_none_or(|v| v == &Json::Bool(true));
        if closed(written) {
            return;
        }
        self.at(keyword, |c| {
            if closed(read) {
                c.problem(format!(
                    "{keyword} became false (data written earlier may hold more than the reader \
                     lists)"
                ));
            } else if open(written) && !open(read) {
                c.problem(format!(
                    "{keyword} narrowed from anything to a schema (data written earlier may hold \
                     any value there)"
                ));
            } else if !open(read) {
                let (w, r) = (written.unwrap_or(&ANY), read.unwrap_or(&ANY));
                c.compare(writer.child(w), reader.child(r));
            }
        });
    }
}
