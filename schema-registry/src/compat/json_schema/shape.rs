//! What a JSON Schema node is, in the terms the rules compare: one JSON type
//! with its keywords, an `enum`, a `const`, a combination of subschemas, a
//! `not`, or the boolean schemas.
//!
//! A node with several of these (`"type": "string"` beside an `enum`, say) is
//! the combination of all of them, as Confluent's checker sees it; its parts
//! are views of the one node, so nothing is copied.

use serde_json::{Map, Value as Json};

/// The schema an absent subschema keyword stands for.
pub(super) static ANY: Json = Json::Bool(true);

/// How many `$ref`s in a row are followed before giving up on a loop.
const MAX_REF_HOPS: usize = 64;

/// Keywords that make a node without `type` a schema of that type (they
/// apply only to values of it).
const IMPLIED_TYPES: [(&str, &[&str]); 4] = [
    (
        "object",
        &[
            "properties",
            "required",
            "additionalProperties",
            "patternProperties",
            "unevaluatedProperties",
            "minProperties",
            "maxProperties",
            "dependencies",
            "dependentRequired",
            "dependentSchemas",
            "propertyNames",
        ],
    ),
    (
        "array",
        &[
            "items",
            "prefixItems",
            "additionalItems",
            "unevaluatedItems",
            "minItems",
            "maxItems",
            "uniqueItems",
            "contains",
            "minContains",
            "maxContains",
        ],
    ),
    ("string", &["minLength", "maxLength", "pattern", "format"]),
    (
        "number",
        &[
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "multipleOf",
        ],
    ),
];

/// A schema node: where it is, the document its `$ref`s resolve in, and
/// which facet of it is looked at.
#[derive(Debug, Clone, Copy)]
pub(super) struct Node<'a> {
    /// The whole schema document.
    pub doc: &'a Json,
    /// The node itself.
    pub value: &'a Json,
    /// Which part of the node.
    pub view: View<'a>,
}

impl<'a> Node<'a> {
    /// A whole document.
    pub fn root(doc: &'a Json) -> Self {
        Node {
            doc,
            value: doc,
            view: View::Whole,
        }
    }

    /// A subschema of this node's document.
    pub fn child(self, value: &'a Json) -> Self {
        Node {
            doc: self.doc,
            value,
            view: View::Whole,
        }
    }

    /// Another view of this node.
    fn facet(self, view: View<'a>) -> Self {
        Node { view, ..self }
    }
}

/// Which part of a node is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum View<'a> {
    /// All of it.
    Whole,
    /// Its `type` (or the type its keywords imply), possibly several.
    Types,
    /// Its keywords for values of one JSON type.
    Type(&'a str),
    /// Its `enum`.
    Enum,
    /// Its `const`.
    Const,
    /// Its `allOf`, `anyOf` or `oneOf`.
    Combinator(Criterion),
    /// Its `not`.
    Not,
}

/// How a combination's subschemas apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Criterion {
    /// Every one.
    All,
    /// At least one.
    Any,
    /// Exactly one.
    One,
}

impl Criterion {
    /// The keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Criterion::All => "allOf",
            Criterion::Any => "anyOf",
            Criterion::One => "oneOf",
        }
    }
}

/// One subschema of a combination, and the path segment naming it (none for
/// the parts of a node that has several facets).
#[derive(Debug, Clone)]
pub(super) struct Part<'a> {
    pub node: Node<'a>,
    pub segment: Option<String>,
}

/// What a node is.
#[derive(Debug)]
pub(super) enum Shape<'a> {
    /// `true`, `{}`, or only keywords that do not constrain (`title`, ...).
    Any,
    /// `false`.
    Nothing,
    /// A value of this JSON type, with these keywords.
    Typed(&'a str, &'a Map<String, Json>),
    /// One of these values.
    Enum(&'a [Json]),
    /// This value.
    Const(&'a Json),
    /// A combination of subschemas.
    Combined(Criterion, Vec<Part<'a>>),
    /// Anything this subschema refuses.
    Not(Node<'a>),
}

impl Shape<'_> {
    /// Which shapes are compared keyword by keyword: the same variant, and
    /// for types the same JSON type (`integer` is a `number`).
    pub fn same_kind(&self, other: &Shape<'_>) -> bool {
        match (self, other) {
            (Shape::Typed(a, _), Shape::Typed(b, _)) => type_class(a) == type_class(b),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }

    /// Says what the shape is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Shape::Any => "any value (true)".into(),
            Shape::Nothing => "no value (false)".into(),
            Shape::Typed(name, _) => format!("\"{name}\""),
            Shape::Enum(values) => format!("enum {}", Json::from(values.to_vec())),
            Shape::Const(value) => format!("const {value}"),
            Shape::Not(_) => "not".into(),
            Shape::Combined(criterion, parts) => {
                if parts.iter().any(|p| p.segment.is_some()) {
                    return format!("{} of {} subschemas", criterion.keyword(), parts.len());
                }
                let each: Vec<String> = parts.iter().map(|p| shape(p.node).describe()).collect();
                match criterion {
                    Criterion::All => each.join(" with "),
                    _ => format!("[{}]", each.join(", ")),
                }
            }
        }
    }
}

/// Whether two nodes are of the same kind (see [`Shape::same_kind`]); not
/// when either cannot be resolved.
pub(super) fn same_kind(a: Node<'_>, b: Node<'_>) -> bool {
    match (resolve(a), resolve(b)) {
        (Ok(a), Ok(b)) => shape(a).same_kind(&shape(b)),
        _ => false,
    }
}

/// What a node is, for messages.
pub(super) fn describe(node: Node<'_>) -> String {
    resolve(node).map_or_else(|_| node.value.to_string(), |n| shape(n).describe())
}

/// `integer` is a kind of `number`; every other type name is its own class.
fn type_class(name: &str) -> &str {
    if name == "integer" { "number" } else { name }
}

/// What `node` is. `node` must be resolved (see [`resolve`]); a value that
/// is not a schema counts as `true`, since [`resolve`] reports it.
pub(super) fn shape(node: Node<'_>) -> Shape<'_> {
    let map = match node.value {
        Json::Object(map) => map,
        Json::Bool(false) => return Shape::Nothing,
        _ => return Shape::Any,
    };
    match node.view {
        View::Whole => {
            let mut facets = facets(map);
            match facets.len() {
                0 => Shape::Any,
                1 => shape(node.facet(facets.remove(0))),
                _ => Shape::Combined(Criterion::All, parts(node, facets)),
            }
        }
        View::Types => {
            let (explicit, mut names) = type_names(map);
            match (names.len(), explicit) {
                (0, _) => Shape::Any,
                (1, _) => Shape::Typed(names.remove(0), map),
                (_, true) => Shape::Combined(Criterion::Any, parts(node, names_as_views(names))),
                (_, false) => Shape::Combined(Criterion::All, parts(node, names_as_views(names))),
            }
        }
        View::Type(name) => Shape::Typed(name, map),
        View::Enum => Shape::Enum(map.get("enum").and_then(Json::as_array).map_or(&[], |v| v)),
        View::Const => Shape::Const(map.get("const").unwrap_or(&Json::Null)),
        View::Not => Shape::Not(node.child(map.get("not").unwrap_or(&ANY))),
        View::Combinator(criterion) => {
            let subschemas = map.get(criterion.keyword()).and_then(Json::as_array);
            let parts = subschemas.map_or(&[][..], |v| v).iter().enumerate();
            Shape::Combined(
                criterion,
                parts
                    .map(|(i, value)| Part {
                        node: node.child(value),
                        segment: Some(format!("{}/{i}", criterion.keyword())),
                    })
                    .collect(),
            )
        }
    }
}

/// Whether `value` accepts every value by itself: `true`, or an object with
/// no keyword that constrains (and no `$ref`).
pub(super) fn is_any(value: &Json) -> bool {
    match value {
        Json::Bool(b) => *b,
        Json::Object(map) => !map.contains_key("$ref") && facets(map).is_empty(),
        _ => false,
    }
}

/// The facets of a node that constrain values, in a fixed order so two
/// nodes' parts line up.
fn facets(map: &Map<String, Json>) -> Vec<View<'static>> {
    let mut facets = Vec::new();
    if !type_names(map).1.is_empty() {
        facets.push(View::Types);
    }
    if map.get("enum").is_some_and(Json::is_array) {
        facets.push(View::Enum);
    }
    if map.contains_key("const") {
        facets.push(View::Const);
    }
    for criterion in [Criterion::All, Criterion::Any, Criterion::One] {
        if map.get(criterion.keyword()).is_some_and(Json::is_array) {
            facets.push(View::Combinator(criterion));
        }
    }
    if map.contains_key("not") {
        facets.push(View::Not);
    }
    facets
}

/// The node's types: whether `type` gives them, and their names (from
/// `type`, or else implied by the keywords present).
fn type_names(map: &Map<String, Json>) -> (bool, Vec<&str>) {
    match map.get("type") {
        Some(Json::String(name)) => (true, vec![name.as_str()]),
        Some(Json::Array(names)) => (true, names.iter().filter_map(Json::as_str).collect()),
        _ => {
            let implied = IMPLIED_TYPES
                .iter()
                .filter(|(_, keywords)| keywords.iter().any(|k| map.contains_key(*k)))
                .map(|(name, _)| *name)
                .collect();
            (false, implied)
        }
    }
}

/// One view per type name.
fn names_as_views(names: Vec<&str>) -> Vec<View<'_>> {
    names.into_iter().map(View::Type).collect()
}

/// The parts of a node that has several facets (or types): views of it.
fn parts<'a>(node: Node<'a>, views: Vec<View<'a>>) -> Vec<Part<'a>> {
    views
        .into_iter()
        .map(|view| Part {
            node: node.facet(view),
            segment: None,
        })
        .collect()
}

/// `node` with its `$ref`s followed (only references inside its document,
/// `#` or `#/...`), or why it cannot be compared.
pub(super) fn resolve(mut node: Node<'_>) -> Result<Node<'_>, String> {
    for _ in 0..MAX_REF_HOPS {
        let reference = match node.value {
            Json::Object(map) if node.view == View::Whole => match map.get("$ref") {
                Some(Json::String(reference)) => reference,
                Some(other) => return Err(format!("$ref {other} is not a string")),
                None => return Ok(node),
            },
            Json::Object(_) | Json::Bool(_) => return Ok(node),
            other => return Err(format!("{other} is not a schema (an object or a boolean)")),
        };
        node.value = lookup(node.doc, reference)?;
    }
    Err(format!(
        "the $refs from here go round in a loop (more than {MAX_REF_HOPS} in a row)"
    ))
}

/// The node a `$ref` within `doc` points to.
fn lookup<'a>(doc: &'a Json, reference: &str) -> Result<&'a Json, String> {
    let Some(pointer) = reference.strip_prefix('#') else {
        return Err(format!(
            "$ref \"{reference}\" cannot be followed: only references within the schema \
             (\"#/...\") are checked"
        ));
    };
    doc.pointer(pointer)
        .ok_or_else(|| format!("$ref \"{reference}\" points to nothing in the schema"))
}
