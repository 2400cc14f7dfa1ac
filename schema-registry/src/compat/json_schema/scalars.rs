//! Strings and numbers, and the bounds every type has (`maxLength`,
//! `minimum`, `maxItems`, `minProperties`, ...).

use serde_json::{Map, Value as Json};

use super::Checker;

/// Which way a bound limits values.
#[derive(Debug, Clone, Copy)]
pub(super) enum Bound {
    /// Values may not exceed it (`maximum`, `maxLength`, ...).
    Upper,
    /// Values may not fall below it (`minimum`, `minLength`, ...).
    Lower,
}

impl Checker<'_> {
    /// `maxLength`, `minLength` and `pattern`.
    pub(super) fn strings(&mut self, writer: &Map<String, Json>, reader: &Map<String, Json>) {
        self.limit(writer, reader, "maxLength", Bound::Upper);
        self.limit(writer, reader, "minLength", Bound::Lower);
        match (writer.get("pattern"), reader.get("pattern")) {
            (None, Some(pattern)) => self.problem(format!(
                "pattern {pattern} added (data written earlier need not match it)"
            )),
            (Some(before), Some(after)) if before != after => self.problem(format!(
                "pattern changed from {before} to {after} (data written earlier need not match \
                 it)"
            )),
            _ => {}
        }
    }

    /// `integer` and `number`, their bounds and `multipleOf`.
    pub(super) fn numbers(
        &mut self,
        written_type: &str,
        writer: &Map<String, Json>,
        read_type: &str,
        reader: &Map<String, Json>,
    ) {
        if written_type == "number" && read_type == "integer" {
            self.problem(
                "type changed from \"number\" to \"integer\" (data written earlier may hold \
                 fractions)",
            );
        }
        self.limit(writer, reader, "maximum", Bound::Upper);
        self.limit(writer, reader, "exclusiveMaximum", Bound::Upper);
        self.limit(writer, reader, "minimum", Bound::Lower);
        self.limit(writer, reader, "exclusiveMinimum", Bound::Lower);
        let Some(after) = reader.get("multipleOf") else {
            return;
        };
        match writer.get("multipleOf") {
            None => self.problem(format!(
                "multipleOf {after} added (data written earlier need not be multiples of it)"
            )),
            Some(before) if !divides(after, before) => self.problem(format!(
                "multipleOf changed from {before} to {after} (not every multiple of {before} is \
                 one of {after})"
            )),
            Some(_) => {}
        }
    }

    /// A numeric bound: adding one, or tightening it, is a problem. A bound
    /// that is not a number (draft 4's boolean `exclusiveMaximum`) is not
    /// compared, as Confluent does not.
    pub(super) fn limit(
        &mut self,
        writer: &Map<String, Json>,
        reader: &Map<String, Json>,
        keyword: &str,
        bound: Bound,
    ) {
        let Some(after) = reader.get(keyword).filter(|v| v.is_number()) else {
            return;
        };
        let Some(before) = writer.get(keyword).filter(|v| v.is_number()) else {
            let why = match bound {
                Bound::Upper => "data written earlier may exceed it",
                Bound::Lower => "data written earlier may fall below it",
            };
            self.problem(format!("{keyword} {after} added ({why})"));
            return;
        };
        let (b, a) = (
            before.as_f64().unwrap_or(0.0),
            after.as_f64().unwrap_or(0.0),
        );
        match bound {
            Bound::Upper if a < b => self.problem(format!(
                "{keyword} lowered from {before} to {after} (data written earlier may exceed it)"
            )),
            Bound::Lower if a > b => self.problem(format!(
                "{keyword} raised from {before} to {after} (data written earlier may fall below it)"
            )),
            _ => {}
        }
    }
}

/// Whether every multiple of `before` is a multiple of `after`: `before` is
/// a whole multiple of `after` (within floating point's reach).
fn divides(after: &Json, before: &Json) -> bool {
    match (after.as_f64(), before.as_f64()) {
        (Some(after), Some(before)) if after != 0.0 => {
            let quotient = before / after;
            (quotient - quotient.round()).abs() < 1e-9
        }
        _ => after == before,
    }
}
