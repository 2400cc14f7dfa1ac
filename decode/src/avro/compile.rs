//! Compiling a plan: the writer schema, resolved against the reader's,
//! becomes the operations and columns a plan decodes with.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::schema::{Name, RecordSchema, ResolvedSchema, UnionSchema};
use serde_json::Value as Json;

pub use crate::Val;

use super::{Col, FlattenRules, Num, Op, PlanError, Read, Shape};

pub(super) type Names = HashMap<Name, Schema>;

pub(super) fn names(schema: &Schema) -> Result<Names, PlanError> {
    let resolved =
        ResolvedSchema::try_from(schema).map_err(|e| PlanError::Invalid(e.to_string()))?;
    Ok(resolved
        .get_names()
        .iter()
        .map(|(name, schema)| (name.clone(), (*schema).clone()))
        .collect())
}

pub(super) struct Compiler<'a> {
    pub(super) writer_names: &'a Names,
    pub(super) reader_names: &'a Names,
    pub(super) rules: &'a FlattenRules,
    pub(super) columns: PlanColumns,
    /// Named types being compiled, to refuse recursion.
    pub(super) stack: Vec<String>,
}

/// The columns a plan (Avro or Protobuf) is compiled with: their names by
/// [`Col`], and which belong to exploded elements.
#[derive(Debug, Default)]
pub(crate) struct PlanColumns {
    names: Vec<Arc<str>>,
    index: HashMap<String, Col>,
    /// Columns of the explode path's elements.
    pub(crate) element: HashSet<Col>,
}

impl PlanColumns {
    /// The column of `path`, refusing a reserved name and a column `used`
    /// already holds in the same row.
    pub(crate) fn claim(
        &mut self,
        rules: &FlattenRules,
        path: &str,
        used: &mut HashSet<Col>,
    ) -> Result<Col, PlanError> {
        if rules.reserved.iter().any(|r| r == path)
            || rules
                .reserved_prefixes
                .iter()
                .any(|p| path.starts_with(p.as_str()))
        {
            return Err(PlanError::ReservedColumn(path.to_string()));
        }
        let next = self.names.len() as Col;
        let col = *self.index.entry(path.to_string()).or_insert(next);
        if col == next {
            self.names.push(path.into());
        }
        if !used.insert(col) {
            return Err(PlanError::ColumnCollision(path.to_string()));
        }
        Ok(col)
    }

    /// The column names, once no envelope column (`used`) is also an
    /// element's.
    pub(crate) fn finish(self, used: &HashSet<Col>) -> Result<Vec<Arc<str>>, PlanError> {
        match self.element.intersection(used).next() {
            Some(col) => Err(PlanError::ColumnCollision(
                self.names[*col as usize].to_string(),
            )),
            None => Ok(self.names),
        }
    }
}

/// Appends `key`, sanitized, to a column path: characters outside
/// `[A-Za-z0-9_]` become `_`, a leading digit or an empty key gets a `_`
/// prefix, segments are joined with `_`.
pub fn push_segment(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('_');
    }
    if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit()) {
        path.push('_');
    }
    // Most keys need no change.
    if key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        path.push_str(key);
        return;
    }
    path.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
}

pub(super) fn resolve<'s>(schema: &'s Schema, names: &'s Names) -> Result<&'s Schema, PlanError> {
    match schema {
        Schema::Ref { name } => names
            .get(name)
            .ok_or_else(|| PlanError::Invalid(format!("unknown type `{}`", name.name))),
        other => Ok(other),
    }
}

pub(super) fn named(schema: &Schema) -> Option<String> {
    match schema {
        Schema::Record(r) => Some(r.name.fullname(None)),
        Schema::Enum(e) => Some(e.name.fullname(None)),
        Schema::Fixed(f) => Some(f.name.fullname(None)),
        _ => None,
    }
}

pub(super) fn nullable_scalar(schema: &Schema) -> bool {
    match schema {
        Schema::Union(u) => u.variants().iter().all(is_scalar),
        other => is_scalar(other),
    }
}

pub(super) fn is_scalar(schema: &Schema) -> bool {
    !matches!(
        schema,
        Schema::Record(_)
            | Schema::Array(_)
            | Schema::Map(_)
            | Schema::Union(_)
            | Schema::Ref { .. }
    )
}

/// Whether a writer branch and a reader branch are the same kind of type
/// (for picking a union branch), allowing Avro's promotions.
pub(super) fn matches(writer: &Schema, reader: &Schema) -> bool {
    use Schema as S;
    match (writer, reader) {
        (S::Record(w), S::Record(r)) => w.name.name == r.name.name,
        (S::Enum(w), S::Enum(r)) => w.name.name == r.name.name,
        (S::Fixed(w), S::Fixed(r)) => w.name.name == r.name.name && w.size == r.size,
        (S::Int, S::Long | S::Float | S::Double)
        | (S::Long, S::Float | S::Double)
        | (S::Float, S::Double)
        | (S::String, S::Bytes)
        | (S::Bytes, S::String) => true,
        (S::Array(_), S::Array(_)) | (S::Map(_), S::Map(_)) => true,
        (w, r) => std::mem::discriminant(w) == std::mem::discriminant(r),
    }
}

impl Compiler<'_> {
    /// The branch of the reader's union `ru` that reads the writer's
    /// (non-union) `w`: the first that matches, as Avro resolves unions.
    fn union_branch_for(&self, ru: &UnionSchema, w: &Schema) -> Result<Schema, PlanError> {
        ru.variants()
            .iter()
            .find(|rb| resolve(rb, self.reader_names).is_ok_and(|rb| matches(w, rb)))
            .cloned()
            .ok_or_else(|| {
                PlanError::Unresolvable(format!("the reader's union has no branch for {}", kind(w)))
            })
    }

    pub(super) fn column(&mut self, path: &str, used: &mut HashSet<Col>) -> Result<Col, PlanError> {
        self.columns.claim(self.rules, path, used)
    }

    /// Compiles the value at `path`. `explode_depth` is how much of the
    /// explode path leads here (`None` once off it).
    pub(super) fn compile(
        &mut self,
        writer: &Schema,
        reader: &Schema,
        path: &mut String,
        explode_depth: Option<usize>,
        used: &mut HashSet<Col>,
    ) -> Result<Op, PlanError> {
        let w = resolve(writer, self.writer_names)?;
        let r = resolve(reader, self.reader_names)?;
        let name = self.enter(w)?;
        let op = self.compile_resolved(w, r, path, explode_depth, used);
        if name {
            self.stack.pop();
        }
        op
    }

    /// Pushes a named type on the stack (returns whether it was named),
    /// refusing one that is already being compiled.
    pub(super) fn enter(&mut self, schema: &Schema) -> Result<bool, PlanError> {
        let Some(name) = named(schema) else {
            return Ok(false);
        };
        if self.stack.contains(&name) {
            return Err(PlanError::Recursive(name));
        }
        self.stack.push(name);
        Ok(true)
    }

    pub(super) fn compile_resolved(
        &mut self,
        w: &Schema,
        r: &Schema,
        path: &mut String,
        explode_depth: Option<usize>,
        used: &mut HashSet<Col>,
    ) -> Result<Op, PlanError> {
        let at_explode =
            explode_depth == Some(self.rules.explode.len()) && !self.rules.explode.is_empty();
        match (w, r) {
            (Schema::Union(wu), _) if !nullable_scalar(w) || !nullable_scalar(r) || at_explode => {
                let base = used.clone();
                let mut merged = used.clone();
                let mut ops = Vec::with_capacity(wu.variants().len());
                for branch in wu.variants() {
                    let mut branch_used = base.clone();
                    let op = match self.reader_branch(branch, r)? {
                        Some(rb) => {
                            self.compile(branch, &rb, path, explode_depth, &mut branch_used)?
                        }
                        None => Op::Fail(format!(
                            "the reader schema has no branch for the writer's {}",
                            kind(branch)
                        )),
                    };
                    merged.extend(branch_used);
                    ops.push(op);
                }
                *used = merged;
                Ok(Op::Union(ops))
            }
            (_, Schema::Union(ru)) if !matches!(w, Schema::Union(_)) => {
                let branch = self.union_branch_for(ru, w).map_err(|e| match e {
                    PlanError::Unresolvable(why) => {
                        PlanError::Unresolvable(format!("`{path}`: {why}"))
                    }
                    other => other,
                })?;
                self.compile(w, &branch, path, explode_depth, used)
            }
            // A null field or union branch leaves its columns absent (null).
            (Schema::Null, _) => Ok(Op::Nothing),
            (Schema::Record(wr), Schema::Record(rr)) => {
                self.record(wr, rr, path, explode_depth, used)
            }
            (Schema::Array(wa), Schema::Array(ra)) if at_explode => {
                let mut element_used = HashSet::new();
                let op = self.compile(&wa.items, &ra.items, path, None, &mut element_used)?;
                self.columns.element.extend(element_used);
                Ok(Op::Explode(Box::new(op)))
            }
            (Schema::Array(wa), Schema::Array(ra))
                if nullable_scalar(&wa.items) && nullable_scalar(&ra.items) =>
            {
                let read = self.read(&wa.items, &ra.items)?;
                Ok(Op::List(self.column(path, used)?, read))
            }
            (Schema::Array(_) | Schema::Map(_), Schema::Array(_) | Schema::Map(_)) => {
                Ok(Op::Text(self.column(path, used)?, self.shape(w)?))
            }
            (Schema::Union(_), _) | (_, Schema::Union(_)) => {
                let read = self.read(w, r)?;
                Ok(Op::Leaf(self.column(path, used)?, read))
            }
            _ if is_scalar(w) && is_scalar(r) => {
                let read = self.read(w, r)?;
                Ok(Op::Leaf(self.column(path, used)?, read))
            }
            _ => Err(PlanError::Unresolvable(format!(
                "`{path}`: the writer's {} cannot be read as {}",
                kind(w),
                kind(r)
            ))),
        }
    }

    pub(super) fn reader_branch(
        &self,
        writer: &Schema,
        reader: &Schema,
    ) -> Result<Option<Schema>, PlanError> {
        let w = resolve(writer, self.writer_names)?;
        let candidates: Vec<&Schema> = match reader {
            Schema::Union(ru) => ru.variants().iter().collect(),
            other => vec![other],
        };
        for candidate in candidates {
            let c = resolve(candidate, self.reader_names)?;
            if matches(w, c) {
                return Ok(Some(candidate.clone()));
            }
        }
        Ok(None)
    }

    pub(super) fn record(
        &mut self,
        wr: &RecordSchema,
        rr: &RecordSchema,
        path: &mut String,
        explode_depth: Option<usize>,
        used: &mut HashSet<Col>,
    ) -> Result<Op, PlanError> {
        let mut ops = Vec::with_capacity(wr.fields.len());
        let mut matched = vec![false; rr.fields.len()];
        for field in &wr.fields {
            let reader_field = rr.fields.iter().position(|f| {
                f.name == field.name || f.aliases.as_ref().is_some_and(|a| a.contains(&field.name))
            });
            let Some(index) = reader_field else {
                ops.push(Op::Skip(self.shape(&field.schema)?));
                continue;
            };
            matched[index] = true;
            let reader_field = &rr.fields[index];
            let on_path = explode_depth
                .filter(|d| self.rules.explode.get(*d) == Some(&reader_field.name))
                .map(|d| d + 1);
            let len = path.len();
            push_segment(path, &reader_field.name);
            let op = self.compile(&field.schema, &reader_field.schema, path, on_path, used);
            path.truncate(len);
            ops.push(op?);
        }
        let mut defaults = Vec::new();
        for (field, _) in rr.fields.iter().zip(&matched).filter(|(_, m)| !**m) {
            let default = field.default.as_ref().ok_or_else(|| {
                PlanError::Unresolvable(format!(
                    "reader field `{}` has no default and the writer does not have it",
                    field.name
                ))
            })?;
            let len = path.len();
            push_segment(path, &field.name);
            let result = self.default_values(default, path, used, &mut defaults);
            path.truncate(len);
            result?;
        }
        Ok(Op::Record(ops, defaults))
    }

    /// Flattens a reader field's default (JSON) under `path`.
    pub(super) fn default_values(
        &mut self,
        value: &Json,
        path: &mut String,
        used: &mut HashSet<Col>,
        out: &mut Vec<(Col, Val<'static>)>,
    ) -> Result<(), PlanError> {
        match value {
            Json::Object(fields) => {
                for (key, inner) in fields {
                    let len = path.len();
                    push_segment(path, key);
                    let result = self.default_values(inner, path, used, out);
                    path.truncate(len);
                    result?;
                }
            }
            other => {
                let col = self.column(path, used)?;
                out.push((col, json_val(other)));
            }
        }
        Ok(())
    }

    pub(super) fn read(&mut self, writer: &Schema, reader: &Schema) -> Result<Read, PlanError> {
        use Schema as S;
        let w = resolve(writer, self.writer_names)?;
        let r = resolve(reader, self.reader_names)?;
        let num_as = |r: &Schema| match (r, timestamp_unit(r)) {
            (_, Some((per_second, utc))) => Num::Timestamp { per_second, utc },
            (S::Float | S::Double, _) => Num::Double,
            (S::Date, _) => Num::Date,
            _ => Num::Long,
        };
        let (w_num, r_num) = (numeric_encoding(w), numeric_encoding(r));
        let read = match (w, r) {
            (S::Union(wu), _) => {
                let mut reads = Vec::with_capacity(wu.variants().len());
                for branch in wu.variants() {
                    reads.push(match self.reader_branch(branch, r)? {
                        Some(rb) => self.read(branch, &rb)?,
                        None => Read::Fail(format!(
                            "the reader schema has no branch for the writer's {}",
                            kind(branch)
                        )),
                    });
                }
                Read::Union(reads)
            }
            (_, S::Union(ru)) => {
                let branch = self.union_branch_for(ru, w)?;
                self.read(w, &branch)?
            }
            (S::Null, S::Null) => Read::Null,
            (S::Boolean, S::Boolean) => Read::Bool,
            _ if w_num == Some(Encoding::Int) && r_num.is_some() => Read::Int(num_as(r)),
            _ if w_num == Some(Encoding::Long) && !matches!(r_num, None | Some(Encoding::Int)) => {
                Read::Long(num_as(r))
            }
            (S::Float, S::Float | S::Double) => Read::Float,
            (S::Double, S::Double) => Read::Double,
            (S::String | S::Uuid, S::String | S::Uuid) => Read::Str,
            (S::String | S::Uuid, S::Bytes) => Read::StrAsHex,
            (S::Bytes, S::String | S::Uuid) => Read::BytesAsStr,
            (S::Bytes | S::BigDecimal, S::Bytes | S::BigDecimal) => Read::Hex,
            (S::Fixed(wf), S::Fixed(rf)) if wf.size == rf.size => Read::FixedHex(wf.size),
            (S::Duration, S::Duration) => Read::FixedHex(12),
            (S::Decimal(wd), S::Decimal(_)) => Read::Decimal {
                fixed: match &*wd.inner {
                    S::Fixed(f) => Some(f.size),
                    _ => None,
                },
                precision: wd.precision,
                scale: wd.scale as u32,
            },
            (S::Enum(we), S::Enum(re)) => Read::Enum(
                we.symbols
                    .iter()
                    .map(|s| {
                        if re.symbols.contains(s) {
                            Some(s.clone())
                        } else {
                            re.default.clone()
                        }
                    })
                    .collect(),
            ),
            (w, r) => {
                return Err(PlanError::Unresolvable(format!(
                    "the writer's {} cannot be read as {}",
                    kind(w),
                    kind(r)
                )));
            }
        };
        Ok(read)
    }

    pub(super) fn shape(&mut self, schema: &Schema) -> Result<Shape, PlanError> {
        use Schema as S;
        let s = resolve(schema, self.writer_names)?;
        let name = self.enter(s)?;
        let shape = (|| {
            Ok(match s {
                S::Null => Shape::Null,
                S::Boolean => Shape::Bool,
                S::Bytes | S::BigDecimal => Shape::Bytes,
                S::String | S::Uuid => Shape::Str,
                S::Fixed(f) => Shape::Fixed(f.size),
                S::Duration => Shape::Fixed(12),
                S::Decimal(d) => match &*d.inner {
                    S::Fixed(f) => Shape::Fixed(f.size),
                    _ => Shape::Bytes,
                },
                S::Enum(e) => Shape::Enum(e.symbols.clone()),
                S::Array(a) => Shape::Array(Box::new(self.shape(&a.items)?)),
                S::Map(m) => Shape::Map(Box::new(self.shape(&m.types)?)),
                S::Union(u) => Shape::Union(
                    u.variants()
                        .iter()
                        .map(|v| self.shape(v))
                        .collect::<Result<_, _>>()?,
                ),
                S::Record(r) => Shape::Record(
                    r.fields
                        .iter()
                        .map(|f| Ok((f.name.clone(), self.shape(&f.schema)?)))
                        .collect::<Result<_, PlanError>>()?,
                ),
                S::Ref { name } => {
                    return Err(PlanError::Invalid(format!("unknown type `{}`", name.name)));
                }
                numeric => match numeric_encoding(numeric) {
                    Some(Encoding::Int) => Shape::Int,
                    Some(Encoding::Long) => Shape::Long,
                    Some(Encoding::Float) => Shape::Float,
                    Some(Encoding::Double) => Shape::Double,
                    None => {
                        return Err(PlanError::Invalid(format!(
                            "unsupported type {}",
                            kind(numeric)
                        )));
                    }
                },
            })
        })();
        if name {
            self.stack.pop();
        }
        shape
    }
}

/// How a numeric type, primitive or logical, is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Int,
    Long,
    Float,
    Double,
}

pub(super) fn numeric_encoding(schema: &Schema) -> Option<Encoding> {
    use Schema as S;
    Some(match schema {
        S::Int | S::Date | S::TimeMillis => Encoding::Int,
        S::Long
        | S::TimeMicros
        | S::TimestampMillis
        | S::TimestampMicros
        | S::TimestampNanos
        | S::LocalTimestampMillis
        | S::LocalTimestampMicros
        | S::LocalTimestampNanos => Encoding::Long,
        S::Float => Encoding::Float,
        S::Double => Encoding::Double,
        _ => return None,
    })
}

/// Units per second and whether it is UTC, for the timestamp logical types.
pub(super) fn timestamp_unit(schema: &Schema) -> Option<(i64, bool)> {
    use Schema as S;
    Some(match schema {
        S::TimestampMillis => (1_000, true),
        S::TimestampMicros => (1_000_000, true),
        S::TimestampNanos => (1_000_000_000, true),
        S::LocalTimestampMillis => (1_000, false),
        S::LocalTimestampMicros => (1_000_000, false),
        S::LocalTimestampNanos => (1_000_000_000, false),
        _ => return None,
    })
}

pub(super) fn kind(schema: &Schema) -> String {
    match named(schema) {
        Some(name) => format!("`{name}`"),
        None => format!("{:?}", apache_avro::schema::SchemaKind::from(schema)).to_lowercase(),
    }
}

pub(super) fn json_val(value: &Json) -> Val<'static> {
    match value {
        Json::Null => Val::Null,
        Json::Bool(b) => Val::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Val::Long(i),
            None => Val::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Val::Str(Cow::Owned(s.clone())),
        Json::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            Val::List(items.iter().map(json_val).collect())
        }
        other => Val::Str(Cow::Owned(other.to_string())),
    }
}
