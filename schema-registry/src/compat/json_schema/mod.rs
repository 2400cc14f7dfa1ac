//! JSON Schema's compatibility rules, as Confluent Schema Registry decides
//! them (its default, strict policy).
//!
//! Data written with a writer's schema is readable with a reader's when every
//! document valid under the first is valid under the second. Deciding that
//! in general is out of reach, so, like Confluent, the two schemas are walked
//! side by side and each difference is judged on its own: a bound that is
//! loosened, a type widened (`integer` to `number`, `T` to `anyOf [T, U]`),
//! an `enum` value added, a property removed from an open content model are
//! fine; the reverse of each is a problem. The content model of an object is
//! open when it lets any other property through (`additionalProperties`
//! absent or `true`, no `patternProperties`), closed when it lets none, and
//! partially open when a schema covers the others; a property added to an
//! open model is a problem, because data written earlier may hold any value
//! under its name. Keywords the rules do not compare (`title`,
//! `description`, `format`, `contains`, `propertyNames`, ...) are ignored,
//! as Confluent ignores them.
//!
//! `$ref`s are followed within the schema's own document; a pair of nodes
//! met again while it is being compared counts as compatible there (a
//! recursive schema), and the walk is bounded by [`MAX_STEPS`] and
//! [`MAX_DEPTH`].
//!
//! Where this differs from Confluent: a `$ref` to another document is not
//! followed (refused, unless both sides hold the same one); an absent
//! `items` or `unevaluatedProperties` counts as `true` (Confluent calls
//! giving `{}` or `true` for them a narrowing); `patternProperties` are
//! matched with Rust's `regex-lite` syntax; Confluent's lenient policy, its
//! reserved-property metadata and its Kafka Connect `connect.type: bytes`
//! exception are not implemented.

use std::collections::HashSet;
use std::fmt::Display;

use serde_json::Value as Json;

use shape::{Criterion, Node, Part, Shape, View, describe, resolve, same_kind, shape};

mod array;
mod object;
mod scalars;
mod shape;
#[cfg(test)]
mod tests;

/// At most this many pairs of nodes are compared; past it the schemas are
/// refused as too intricate (combinations compare every pair of their
/// subschemas, which nested `$ref`s can multiply).
const MAX_STEPS: usize = 100_000;

/// At most this many nodes deep (counting the `$ref`s followed) are
/// compared; past it the schemas are refused, rather than risking the
/// stack.
const MAX_DEPTH: usize = 128;

/// Why data written with the `writer` schema may not be valid under the
/// `reader` schema; empty when it always is (by Confluent's rules). Each
/// message starts with the JSON pointer of the node it is about.
pub(super) fn reading_problems(writer: &Json, reader: &Json) -> Vec<String> {
    let mut checker = Checker::default();
    checker.compare(Node::root(writer), Node::root(reader));
    if checker.steps > MAX_STEPS {
        checker.problems.push(format!(
            "#: the schemas are too intricate to compare (more than {MAX_STEPS} pairs of \
             subschemas); refused to be safe"
        ));
    }
    if checker.too_deep {
        checker.problems.push(format!(
            "#: the schemas nest more than {MAX_DEPTH} subschemas deep (counting $refs); refused \
             to be safe"
        ));
    }
    checker.problems
}

/// A pair of nodes being compared, by address and view.
type PairKey<'a> = (*const Json, View<'a>, *const Json, View<'a>);

/// The walk over a writer's and a reader's schema.
#[derive(Default)]
struct Checker<'a> {
    /// Where the walk is: JSON pointer segments, escaped.
    path: Vec<String>,
    /// What was found so far.
    problems: Vec<String>,
    /// The pairs being compared, further up the walk.
    active: HashSet<PairKey<'a>>,
    /// Pairs compared so far.
    steps: usize,
    /// How many comparisons are under way, one inside the other.
    depth: usize,
    /// Whether the walk went deeper than [`MAX_DEPTH`].
    too_deep: bool,
}

impl<'a> Checker<'a> {
    /// Records a problem at the current path.
    fn problem(&mut self, message: impl Display) {
        let mut pointer = String::from("#");
        for segment in &self.path {
            pointer.push('/');
            pointer.push_str(segment);
        }
        self.problems.push(format!("{pointer}: {message}"));
    }

    /// Runs `f` one path segment deeper (`segment` is escaped already when
    /// it holds several segments, like `anyOf/1`).
    fn at<R>(&mut self, segment: impl Into<String>, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(segment.into());
        let result = f(self);
        self.path.pop();
        result
    }

    /// Runs `f` one path segment deeper, under a property's name.
    fn at_name<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.at(name.replace('~', "~0").replace('/', "~1"), f)
    }

    /// The problems `f` finds, taken out of the report.
    fn trial(&mut self, f: impl FnOnce(&mut Self)) -> Vec<String> {
        let mark = self.problems.len();
        f(self);
        self.problems.split_off(mark)
    }

    /// Compares two nodes: the heart of the walk.
    fn compare(&mut self, writer: Node<'a>, reader: Node<'a>) {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return;
        }
        if self.depth >= MAX_DEPTH {
            self.too_deep = true;
            return;
        }
        let (writer, reader) = match (resolve(writer), resolve(reader)) {
            (Ok(writer), Ok(reader)) => (writer, reader),
            (writer_found, reader_found) => {
                // The same unresolvable node on both sides is taken as equal.
                if writer.value != reader.value {
                    for message in [writer_found.err(), reader_found.err()]
                        .into_iter()
                        .flatten()
                    {
                        self.problem(message);
                    }
                }
                return;
            }
        };
        let key = (
            writer.value as *const Json,
            writer.view,
            reader.value as *const Json,
            reader.view,
        );
        if self.active.insert(key) {
            self.depth += 1;
            self.compare_shapes(writer, reader);
            self.depth -= 1;
            self.active.remove(&key);
        }
    }

    /// Compares two resolved nodes by what they are, as Confluent does: a
    /// one-sided combination first, then the kinds, then keyword by keyword.
    fn compare_shapes(&mut self, writer: Node<'a>, reader: Node<'a>) {
        let (written, read) = (shape(writer), shape(reader));
        if let Some(problems) = self.one_sided_combination(writer, &written, reader, &read) {
            if problems.is_empty() {
                return;
            }
            self.problems.extend(problems);
            return;
        }
        if !written.same_kind(&read) {
            if !matches!(written, Shape::Nothing) && !matches!(read, Shape::Any) {
                // `"string"` read as `"string"` with an `enum`, say.
                let narrowed = matches!(&read, Shape::Combined(Criterion::All, parts)
                    if parts.iter().any(|p| same_kind(writer, p.node)));
                self.problem(format!(
                    "{} from {} to {}",
                    if narrowed { "narrowed" } else { "type changed" },
                    written.describe(),
                    read.describe()
                ));
            }
            return;
        }
        match (written, read) {
            (Shape::Typed(name, w), Shape::Typed(read_name, r)) => match name {
                "string" => self.strings(w, r),
                "number" | "integer" => self.numbers(name, w, read_name, r),
                "object" => self.object(writer, w, reader, r),
                "array" => self.array(writer, w, reader, r),
                _ => {}
            },
            (Shape::Enum(w), Shape::Enum(r)) => self.enums(w, r),
            (Shape::Const(w), Shape::Const(r)) if w != r => {
                self.problem(format!("const changed from {w} to {r}"));
            }
            (Shape::Combined(wc, w), Shape::Combined(rc, r)) => self.combined(wc, w, rc, r),
            (Shape::Not(w), Shape::Not(r)) => self.not(w, r),
            _ => {}
        }
    }

    /// A combination on one side only: the reader's `anyOf`/`oneOf` (or a
    /// single subschema) accepts the writer's data when one of its
    /// subschemas does, and the writer's `allOf` (or single subschema) is
    /// accepted when one of its subschemas is. `None` when neither applies;
    /// else the problems (empty when accepted), those of the first
    /// subschema of the same kind, if any.
    fn one_sided_combination(
        &mut self,
        writer: Node<'a>,
        written: &Shape<'a>,
        reader: Node<'a>,
        read: &Shape<'a>,
    ) -> Option<Vec<String>> {
        let (parts, reader_side, other) = match (written, read) {
            (w, Shape::Combined(criterion, parts))
                if !matches!(w, Shape::Combined(..))
                    && (parts.len() == 1 || *criterion != Criterion::All) =>
            {
                (parts, true, writer)
            }
            (Shape::Combined(criterion, parts), r)
                if !matches!(r, Shape::Combined(..))
                    && (parts.len() == 1 || *criterion == Criterion::All) =>
            {
                (parts, false, reader)
            }
            _ => return None,
        };
        let mut closest = None;
        for part in parts {
            let problems = self.trial(|c| {
                if reader_side {
                    c.compare(writer, part.node);
                } else {
                    c.compare(part.node, reader);
                }
            });
            if problems.is_empty() {
                return Some(problems);
            }
            if closest.is_none() && same_kind(part.node, other) {
                closest = Some(problems);
            }
        }
        closest
    }

    /// `enum`: every value the writer allowed must stay.
    fn enums(&mut self, written: &[Json], read: &[Json]) {
        let removed: Vec<String> = written
            .iter()
            .filter(|value| !read.contains(value))
            .map(Json::to_string)
            .collect();
        if !removed.is_empty() {
            self.problem(format!(
                "enum value{} {} removed (data written earlier may hold {})",
                if removed.len() == 1 { "" } else { "s" },
                removed.join(", "),
                if removed.len() == 1 { "it" } else { "them" },
            ));
        }
    }

    /// `not`: the reader's must refuse no more than the writer's did, so the
    /// two are compared the other way round.
    fn not(&mut self, writer: Node<'a>, reader: Node<'a>) {
        self.at("not", |c| {
            if !c.trial(|c| c.compare(reader, writer)).is_empty() {
                c.problem(
                    "the reader's `not` refuses values the writer's allowed (data written \
                     earlier may hold them)",
                );
            }
        });
    }

    /// Two combinations: the criterion may only widen (to `anyOf`, or
    /// between single subschemas), a sum (`anyOf`, `oneOf`) may gain
    /// subschemas and a product (`allOf`) lose some, and the subschemas of
    /// the smaller side must each pair with a distinct one of the other side
    /// that is compatible with it.
    fn combined(
        &mut self,
        written_criterion: Criterion,
        written: Vec<Part<'a>>,
        read_criterion: Criterion,
        read: Vec<Part<'a>>,
    ) {
        let (w_name, r_name) = (written_criterion.keyword(), read_criterion.keyword());
        if written_criterion != read_criterion {
            let (w_single, r_single) = (written.len() == 1, read.len() == 1);
            let widened = read_criterion == Criterion::Any
                || (w_single && r_single)
                || (w_single && read_criterion == Criterion::One)
                || (r_single && written_criterion == Criterion::All);
            if !widened {
                self.problem(format!(
                    "{w_name} changed to {r_name} (data written earlier may match it otherwise)"
                ));
                return;
            }
        }
        let (written, read) = (distinct(written), distinct(read));
        let (n, m) = (written.len(), read.len());
        if n < m && read_criterion == Criterion::All {
            self.problem(format!(
                "{r_name} gained {} subschema(s) (data written earlier need not match them)",
                m - n
            ));
        }
        if n > m && written_criterion != Criterion::All {
            self.problem(format!(
                "{w_name} lost {} subschema(s) (data written earlier may match only those)",
                n - m
            ));
        }
        // Every pair once (kept for the report: comparing again would
        // double the work at each level of nested combinations).
        let trials: Vec<Vec<Vec<String>>> = written
            .iter()
            .map(|w| read.iter().map(|r| self.part_trial(w, r.node)).collect())
            .collect();
        let fits: Vec<Vec<usize>> = trials
            .iter()
            .map(|row| (0..m).filter(|&j| row[j].is_empty()).collect())
            .collect();
        let pairs = max_matching(&fits, m);
        if pairs.iter().flatten().count() < n.min(m) {
            self.unpaired(&written, &read, &pairs, trials);
        }
    }

    /// Runs `f` under a subschema's path (the parts of a node with several
    /// facets share the node's).
    fn at_part<R>(&mut self, part: &Part<'a>, f: impl FnOnce(&mut Self) -> R) -> R {
        match &part.segment {
            Some(segment) => self.at(segment.clone(), f),
            None => f(self),
        }
    }

    /// Compares a writer's subschema with a reader's node, under the
    /// subschema's path.
    fn part_trial(&mut self, writer: &Part<'a>, reader: Node<'a>) -> Vec<String> {
        self.at_part(writer, |c| c.trial(|c| c.compare(writer.node, reader)))
    }

    /// Reports the subschemas of the smaller side that found no partner:
    /// with the problems (`trials[i][j]`: writer part `i` against reader
    /// part `j`) against a subschema of the same kind on the other side
    /// that has any, the one in the same place first.
    fn unpaired(
        &mut self,
        written: &[Part<'a>],
        read: &[Part<'a>],
        pairs: &[Option<usize>],
        trials: Vec<Vec<Vec<String>>>,
    ) {
        if written.len() > read.len() {
            for (part, _) in read.iter().zip(pairs).filter(|(_, pair)| pair.is_none()) {
                self.at_part(part, |c| {
                    c.problem(format!(
                        "the reader's subschema {} has no counterpart among the writer's \
                         (data written earlier need not match it)",
                        describe(part.node)
                    ));
                });
            }
            return;
        }
        for ((i, part), row) in written.iter().enumerate().zip(trials) {
            if pairs.contains(&Some(i)) {
                continue;
            }
            // The subschema in the same place first: parts line up when
            // only one changed.
            let mut candidates: Vec<(&Part<'a>, Vec<String>)> = read.iter().zip(row).collect();
            if i < candidates.len() {
                candidates[..=i].rotate_right(1);
            }
            let problems = candidates
                .into_iter()
                .filter(|(r, problems)| same_kind(part.node, r.node) && !problems.is_empty())
                .map(|(_, problems)| problems)
                .next();
            match problems {
                Some(problems) => self.problems.extend(problems),
                None => self.at_part(part, |c| {
                    c.problem(format!(
                        "the writer's subschema {} has no counterpart among the reader's \
                         (each pairs with one compatible subschema at most)",
                        describe(part.node)
                    ));
                }),
            }
        }
    }
}

/// `parts` without repeats (equal JSON, same view).
fn distinct(parts: Vec<Part<'_>>) -> Vec<Part<'_>> {
    let mut kept: Vec<Part<'_>> = Vec::with_capacity(parts.len());
    for part in parts {
        let seen = kept
            .iter()
            .any(|k| k.node.view == part.node.view && k.node.value == part.node.value);
        if !seen {
            kept.push(part);
        }
    }
    kept
}

/// A maximum matching of the bipartite graph where writer part `i` may pair
/// with the reader parts `fits[i]` (Kuhn's augmenting paths): for each of
/// the `readers` parts, its writer part.
fn max_matching(fits: &[Vec<usize>], readers: usize) -> Vec<Option<usize>> {
    fn augment(
        i: usize,
        fits: &[Vec<usize>],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for &j in &fits[i] {
            if seen[j] {
                continue;
            }
            seen[j] = true;
            let free = match owner[j] {
                None => true,
                Some(other) => augment(other, fits, owner, seen),
            };
            if free {
                owner[j] = Some(i);
                return true;
            }
        }
        false
    }
    let mut owner = vec![None; readers];
    for i in 0..fits.len() {
        augment(i, fits, &mut owner, &mut vec![false; readers]);
    }
    owner
}
