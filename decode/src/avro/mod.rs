//! Avro binary records decoded straight into flat rows.
//!
//! A [`Plan`] is compiled once per (writer schema, reader schema, flattening
//! rules) and then decodes any number of records with no schema lookups and
//! no intermediate tree: every field is read and pushed as a value of a
//! column whose name was computed at compile time.
//!
//! Flattening follows the JSON rules of the ingest crate's `flatten` module:
//! nested records join their path with `_`, the configured explode path (an
//! array) yields one row per element with the envelope's fields copied onto
//! each, an array of scalars is a list column. Beyond those:
//!
//! * `int` and `long` are longs, `float` and `double` doubles, `enum`,
//!   `string` and `uuid` strings, `bytes`, `fixed` and `duration` bytes;
//! * logical types keep their meaning: `date` is a date (days since the
//!   epoch), `timestamp-millis/micros/nanos` a UTC timestamp in microseconds
//!   (nanoseconds are truncated), `decimal` an unscaled 128-bit value with
//!   its precision and scale (a decimal of more than 38 digits is its
//!   decimal text); `local-timestamp-*` are RFC 3339 text without a zone,
//!   `time-*` stay longs;
//! * maps, and arrays of anything but scalars off the explode path, are one
//!   string column holding JSON text (of the writer's data, unresolved);
//! * a union's null branch leaves its columns null; its other branches are
//!   flattened under the same path (so a union of record types yields the
//!   columns of whichever record was written);
//! * recursive schemas cannot be flattened and are refused;
//! * a record holds at most as many array and map items (all blocks
//!   together) as it has bytes: items of type `null` take no bytes, and
//!   without this a short record could decode into millions of values.
//!
//! With a reader schema, the writer's data is resolved by Avro's rules:
//! fields matched by name or reader alias, writer-only fields skipped,
//! reader-only fields filled from their defaults, numeric and string/bytes
//! promotions, enum symbols by name (or the reader's default symbol), union
//! branches by type.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::schema::{Name, RecordSchema, ResolvedSchema};
use chrono::{DateTime, SecondsFormat};
use serde_json::Value as Json;

pub use crate::Val;
use crate::value::decimal_text;

/// A column of a plan: an index into [`Plan::columns`].
pub type Col = u32;

/// The flattening rules a plan is compiled for.
#[derive(Debug, Clone, Default)]
pub struct FlattenRules {
    /// The explode path's field names (`["payload", "events"]`).
    pub explode: Vec<String>,
    /// Column names no field may map to.
    pub reserved: Vec<String>,
    /// Prefixes no field's column name may start with.
    pub reserved_prefixes: Vec<String>,
}

/// Why a schema cannot be compiled into a plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// Two fields map to the same column in one row.
    #[error("two fields map to column `{0}`")]
    ColumnCollision(String),
    /// A field maps to a reserved column.
    #[error("field maps to reserved column `{0}`")]
    ReservedColumn(String),
    /// The schema refers to itself.
    #[error("recursive schema `{0}` cannot be flattened")]
    Recursive(String),
    /// The reader schema cannot read the writer's data.
    #[error("the reader schema cannot read the writer's data: {0}")]
    Unresolvable(String),
    /// The schema's named types do not resolve.
    #[error("invalid schema: {0}")]
    Invalid(String),
}

/// Why one record cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The data ends inside a value.
    #[error("the record ends early, at byte {0}")]
    Truncated(usize),
    /// Bytes are left after the record.
    #[error("{0} bytes are left after the record")]
    Trailing(usize),
    /// A malformed value.
    #[error("invalid data at byte {at}: {what}")]
    Invalid {
        /// Where.
        at: usize,
        /// What.
        what: String,
    },
}

/// Where a plan puts the values of a record, in the order the record holds
/// them: [`Decoded`] collects them; a batch builder appends them straight to
/// its columns.
pub trait Sink<'a> {
    /// The next element of the explode path starts; values with `element`
    /// set belong to it until the next one starts.
    fn start_element(&mut self);
    /// A value of column `col`, of the envelope or (with `element`) of the
    /// current element.
    fn value(&mut self, element: bool, col: Col, value: Val<'a>);
}

/// The rows of one decoded record: envelope values, and one list of values
/// per exploded element. The buffers are reused from record to record.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Values of the envelope (every row's shared columns).
    pub envelope: Vec<(Col, Val<'static>)>,
    /// Values of each exploded element; empty when the record exploded into
    /// no element (it is then one row of envelope values).
    pub elements: Vec<Vec<(Col, Val<'static>)>>,
    used: usize,
}

impl Decoded {
    /// The exploded elements of the last record.
    pub fn elements(&self) -> &[Vec<(Col, Val<'static>)>] {
        &self.elements[..self.used]
    }

    /// The exploded elements of the last record, to take values from.
    pub fn elements_mut(&mut self) -> &mut [Vec<(Col, Val<'static>)>] {
        &mut self.elements[..self.used]
    }

    fn clear(&mut self) {
        self.envelope.clear();
        self.used = 0;
    }
}

impl<'a> Sink<'a> for Decoded {
    fn start_element(&mut self) {
        if self.used == self.elements.len() {
            self.elements.push(Vec::new());
        }
        self.elements[self.used].clear();
        self.used += 1;
    }

    fn value(&mut self, element: bool, col: Col, value: Val<'a>) {
        let value = value.into_owned();
        if element {
            self.elements[self.used - 1].push((col, value));
        } else {
            self.envelope.push((col, value));
        }
    }
}

/// A compiled decoder for one writer schema (and optional reader schema).
#[derive(Debug, Clone)]
pub struct Plan {
    columns: Vec<Arc<str>>,
    root: Op,
}

impl Plan {
    /// Compiles a plan for data written with `writer`, read as `reader` (or
    /// as written when `None`), flattened by `rules`.
    pub fn compile(
        writer: &Schema,
        reader: Option<&Schema>,
        rules: &FlattenRules,
    ) -> Result<Self, PlanError> {
        let writer_names = names(writer)?;
        let reader_names = match reader {
            Some(r) => names(r)?,
            None => writer_names.clone(),
        };
        let mut compiler = Compiler {
            writer_names: &writer_names,
            reader_names: &reader_names,
            rules,
            columns: Vec::new(),
            index: HashMap::new(),
            stack: Vec::new(),
            element_columns: HashSet::new(),
        };
        let mut used = HashSet::new();
        let root = compiler.compile(
            writer,
            reader.unwrap_or(writer),
            &mut String::new(),
            Some(0),
            &mut used,
        )?;
        if let Some(col) = compiler.element_columns.intersection(&used).next() {
            return Err(PlanError::ColumnCollision(
                compiler.columns[*col as usize].to_string(),
            ));
        }
        Ok(Self {
            columns: compiler.columns,
            root,
        })
    }

    /// Column names, indexed by [`Col`].
    pub fn columns(&self) -> &[Arc<str>] {
        &self.columns
    }

    /// Decodes one record into `out` (cleared first).
    pub fn decode(&self, data: &[u8], out: &mut Decoded) -> Result<(), DecodeError> {
        out.clear();
        self.decode_into(data, out)
    }

    /// Decodes one record into `sink`, value by value. On an error, the
    /// values before it have been handed over already.
    pub fn decode_into<'a>(
        &self,
        data: &'a [u8],
        out: &mut impl Sink<'a>,
    ) -> Result<(), DecodeError> {
        let mut reader = Reader {
            data,
            at: 0,
            items_left: data.len(),
        };
        run(&self.root, &mut reader, out, false)?;
        if reader.at != data.len() {
            return Err(DecodeError::Trailing(data.len() - reader.at));
        }
        Ok(())
    }
}

type Names = HashMap<Name, Schema>;

fn names(schema: &Schema) -> Result<Names, PlanError> {
    let resolved =
        ResolvedSchema::try_from(schema).map_err(|e| PlanError::Invalid(e.to_string()))?;
    Ok(resolved
        .get_names()
        .iter()
        .map(|(name, schema)| (name.clone(), (*schema).clone()))
        .collect())
}

/// How to read one scalar value.
#[derive(Debug, Clone)]
enum Read {
    Null,
    Bool,
    Int(Num),
    Long(Num),
    Float,
    Double,
    Str,
    /// `bytes` read as a string (the `bytes` → `string` promotion).
    BytesAsStr,
    /// `string` read as bytes (hex).
    StrAsHex,
    Hex,
    FixedHex(usize),
    Decimal {
        fixed: Option<usize>,
        precision: usize,
        scale: u32,
    },
    /// Writer symbol index → reader symbol (`None`: unknown to the reader).
    Enum(Vec<Option<String>>),
    /// A union of scalars, by writer branch.
    Union(Vec<Read>),
    Fail(String),
}

/// What an `int` or `long` becomes.
#[derive(Debug, Clone, Copy)]
enum Num {
    Long,
    Double,
    Date,
    Timestamp { per_second: i64, utc: bool },
}

#[derive(Debug, Clone)]
enum Op {
    Leaf(Col, Read),
    List(Col, Read),
    Record(Vec<Op>, Vec<(Col, Val<'static>)>),
    Union(Vec<Op>),
    /// The explode array, by writer element.
    Explode(Box<Op>),
    /// A writer-only value, read and dropped.
    Skip(Shape),
    /// A value rendered as JSON text.
    Text(Col, Shape),
    /// A null union branch under a record path: no columns.
    Nothing,
    Fail(String),
}

/// The writer's structure, for values that are skipped or rendered as text.
#[derive(Debug, Clone)]
enum Shape {
    Null,
    Bool,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    Fixed(usize),
    Enum(Vec<String>),
    Array(Box<Shape>),
    Map(Box<Shape>),
    Union(Vec<Shape>),
    Record(Vec<(String, Shape)>),
}

struct Compiler<'a> {
    writer_names: &'a Names,
    reader_names: &'a Names,
    rules: &'a FlattenRules,
    columns: Vec<Arc<str>>,
    index: HashMap<String, Col>,
    /// Named types being compiled, to refuse recursion.
    stack: Vec<String>,
    element_columns: HashSet<Col>,
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

fn resolve<'s>(schema: &'s Schema, names: &'s Names) -> Result<&'s Schema, PlanError> {
    match schema {
        Schema::Ref { name } => names
            .get(name)
            .ok_or_else(|| PlanError::Invalid(format!("unknown type `{}`", name.name))),
        other => Ok(other),
    }
}

fn named(schema: &Schema) -> Option<String> {
    match schema {
        Schema::Record(r) => Some(r.name.fullname(None)),
        Schema::Enum(e) => Some(e.name.fullname(None)),
        Schema::Fixed(f) => Some(f.name.fullname(None)),
        _ => None,
    }
}

fn nullable_scalar(schema: &Schema) -> bool {
    match schema {
        Schema::Union(u) => u.variants().iter().all(is_scalar),
        other => is_scalar(other),
    }
}

fn is_scalar(schema: &Schema) -> bool {
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
fn matches(writer: &Schema, reader: &Schema) -> bool {
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
    fn column(&mut self, path: &str, used: &mut HashSet<Col>) -> Result<Col, PlanError> {
        if self.rules.reserved.iter().any(|r| r == path)
            || self
                .rules
                .reserved_prefixes
                .iter()
                .any(|p| path.starts_with(p.as_str()))
        {
            return Err(PlanError::ReservedColumn(path.to_string()));
        }
        let next = self.columns.len() as Col;
        let col = *self.index.entry(path.to_string()).or_insert(next);
        if col == next {
            self.columns.push(path.into());
        }
        if !used.insert(col) {
            return Err(PlanError::ColumnCollision(path.to_string()));
        }
        Ok(col)
    }

    /// Compiles the value at `path`. `explode_depth` is how much of the
    /// explode path leads here (`None` once off it).
    fn compile(
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
    fn enter(&mut self, schema: &Schema) -> Result<bool, PlanError> {
        let Some(name) = named(schema) else {
            return Ok(false);
        };
        if self.stack.contains(&name) {
            return Err(PlanError::Recursive(name));
        }
        self.stack.push(name);
        Ok(true)
    }

    fn compile_resolved(
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
                let branch = ru
                    .variants()
                    .iter()
                    .find(|rb| resolve(rb, self.reader_names).is_ok_and(|rb| matches(w, rb)))
                    .cloned()
                    .ok_or_else(|| {
                        PlanError::Unresolvable(format!(
                            "`{path}`: the reader's union has no branch for {}",
                            kind(w)
                        ))
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
                self.element_columns.extend(element_used);
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

    fn reader_branch(&self, writer: &Schema, reader: &Schema) -> Result<Option<Schema>, PlanError> {
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

    fn record(
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
    fn default_values(
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

    fn read(&mut self, writer: &Schema, reader: &Schema) -> Result<Read, PlanError> {
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
                let branch = ru
                    .variants()
                    .iter()
                    .find(|rb| resolve(rb, self.reader_names).is_ok_and(|rb| matches(w, rb)))
                    .cloned()
                    .ok_or_else(|| {
                        PlanError::Unresolvable(format!(
                            "the reader's union has no branch for {}",
                            kind(w)
                        ))
                    })?;
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

    fn shape(&mut self, schema: &Schema) -> Result<Shape, PlanError> {
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
enum Encoding {
    Int,
    Long,
    Float,
    Double,
}

fn numeric_encoding(schema: &Schema) -> Option<Encoding> {
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
fn timestamp_unit(schema: &Schema) -> Option<(i64, bool)> {
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

fn kind(schema: &Schema) -> String {
    match named(schema) {
        Some(name) => format!("`{name}`"),
        None => format!("{:?}", apache_avro::schema::SchemaKind::from(schema)).to_lowercase(),
    }
}

fn json_val(value: &Json) -> Val<'static> {
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

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    /// Array and map items the record may still hold (see [`Reader::blocks`]).
    items_left: usize,
}

impl<'a> Reader<'a> {
    fn invalid(&self, what: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            at: self.at,
            what: what.into(),
        }
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .data
            .get(self.at)
            .ok_or(DecodeError::Truncated(self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn long(&mut self) -> Result<i64, DecodeError> {
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(self.invalid("variable-length integer longer than 64 bits"));
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok((value >> 1) as i64 ^ -((value & 1) as i64))
    }

    fn int(&mut self) -> Result<i64, DecodeError> {
        let v = self.long()?;
        if i32::try_from(v).is_err() {
            return Err(self.invalid(format!("int {v} is out of range")));
        }
        Ok(v)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or(DecodeError::Truncated(self.data.len()))?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| self.invalid(format!("negative length {n}")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.at;
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|e| DecodeError::Invalid {
            at,
            what: format!("string is not UTF-8: {e}"),
        })
    }

    fn f32(&mut self) -> Result<f32, DecodeError> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self) -> Result<f64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    fn branch(&mut self, count: usize) -> Result<usize, DecodeError> {
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .filter(|i| *i < count)
            .ok_or_else(|| self.invalid(format!("union branch {i} of {count}")))
    }

    /// Calls `item` for every item of an array or map, block by block.
    fn blocks(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        loop {
            let mut count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                count = count
                    .checked_neg()
                    .ok_or_else(|| self.invalid("block count"))?;
                self.long()?; // the block's size in bytes
            }
            // Items of type null (or an empty record) take no bytes, so
            // counts alone could make a short record decode into millions of
            // values. A record may hold at most as many array and map items,
            // in all its blocks together, as it has bytes.
            if count as u64 > self.items_left as u64 {
                return Err(self.invalid(format!(
                    "block of {count} items: a record of {} bytes may hold at most that many items",
                    self.data.len()
                )));
            }
            self.items_left -= count as usize;
            for _ in 0..count {
                item(self)?;
            }
        }
    }
}

/// Lowercase hex of `bytes`: how Avro `bytes` and `fixed` values become
/// text columns (and how ingest shows binary Kafka keys).
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn num(value: i64, how: Num, r: &Reader<'_>) -> Result<Val<'static>, DecodeError> {
    Ok(match how {
        Num::Long => Val::Long(value),
        Num::Double => Val::Double(value as f64),
        Num::Date => Val::Date(
            i32::try_from(value).map_err(|_| r.invalid(format!("date {value} is out of range")))?,
        ),
        Num::Timestamp {
            per_second,
            utc: true,
        } => Val::Timestamp(if per_second <= 1_000_000 {
            value
                .checked_mul(1_000_000 / per_second)
                .ok_or_else(|| r.invalid(format!("timestamp {value} is out of range")))?
        } else {
            value.div_euclid(per_second / 1_000_000)
        }),
        Num::Timestamp { per_second, utc } => {
            let secs = value.div_euclid(per_second);
            let nanos = value.rem_euclid(per_second) * (1_000_000_000 / per_second);
            let time = DateTime::from_timestamp(secs, nanos as u32)
                .ok_or_else(|| r.invalid(format!("timestamp {value} is out of range")))?;
            let digits = match per_second {
                1_000 => SecondsFormat::Millis,
                1_000_000 => SecondsFormat::Micros,
                _ => SecondsFormat::Nanos,
            };
            let mut text = time.to_rfc3339_opts(digits, true);
            if !utc {
                text.pop();
            }
            Val::Str(Cow::Owned(text))
        }
    })
}

fn read_scalar<'a>(read: &Read, r: &mut Reader<'a>) -> Result<Val<'a>, DecodeError> {
    Ok(match read {
        Read::Null => Val::Null,
        Read::Bool => match r.byte()? {
            0 => Val::Bool(false),
            1 => Val::Bool(true),
            b => return Err(r.invalid(format!("boolean byte {b}"))),
        },
        Read::Int(how) => {
            let v = r.int()?;
            num(v, *how, r)?
        }
        Read::Long(how) => {
            let v = r.long()?;
            num(v, *how, r)?
        }
        Read::Float => Val::Double(f64::from(r.f32()?)),
        Read::Double => Val::Double(r.f64()?),
        Read::Str | Read::BytesAsStr => Val::Str(Cow::Borrowed(r.str()?)),
        Read::StrAsHex | Read::Hex => Val::Bytes(Cow::Borrowed(r.bytes()?)),
        Read::FixedHex(n) => Val::Bytes(Cow::Borrowed(r.take(*n)?)),
        Read::Decimal {
            fixed,
            precision,
            scale,
        } => {
            let at = r.at;
            let bytes = match fixed {
                Some(n) => r.take(*n)?,
                None => r.bytes()?,
            };
            let unscaled = unscaled(bytes).ok_or_else(|| DecodeError::Invalid {
                at,
                what: format!("decimal of {} bytes is wider than 128 bits", bytes.len()),
            })?;
            match (u8::try_from(*precision), i8::try_from(*scale)) {
                (Ok(precision @ 1..=38), Ok(scale)) if i32::from(scale) <= i32::from(precision) => {
                    Val::Decimal {
                        unscaled,
                        precision,
                        scale,
                    }
                }
                _ => Val::Str(Cow::Owned(decimal_text(unscaled, *scale))),
            }
        }
        Read::Enum(symbols) => {
            let i = r.branch(symbols.len())?;
            match &symbols[i] {
                Some(symbol) => Val::Str(Cow::Owned(symbol.clone())),
                None => return Err(r.invalid(format!("enum symbol {i} is unknown to the reader"))),
            }
        }
        Read::Union(branches) => {
            let i = r.branch(branches.len())?;
            read_scalar(&branches[i], r)?
        }
        Read::Fail(why) => return Err(r.invalid(why.clone())),
    })
}

/// The value of a big-endian two's-complement integer of at most 16 bytes.
fn unscaled(bytes: &[u8]) -> Option<i128> {
    if bytes.len() > 16 {
        return None;
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut buf = [if negative { 0xff } else { 0 }; 16];
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(buf))
}

fn run<'a>(
    op: &Op,
    r: &mut Reader<'a>,
    out: &mut impl Sink<'a>,
    element: bool,
) -> Result<(), DecodeError> {
    match op {
        Op::Leaf(col, read) => {
            let value = read_scalar(read, r)?;
            out.value(element, *col, value);
        }
        Op::List(col, read) => {
            let mut items = Vec::new();
            r.blocks(|r| {
                items.push(read_scalar(read, r)?);
                Ok(())
            })?;
            out.value(element, *col, Val::List(items));
        }
        Op::Record(fields, defaults) => {
            for field in fields {
                run(field, r, out, element)?;
            }
            for (col, value) in defaults {
                out.value(element, *col, value.clone());
            }
        }
        Op::Union(branches) => {
            let i = r.branch(branches.len())?;
            run(&branches[i], r, out, element)?;
        }
        Op::Explode(item) => r.blocks(|r| {
            out.start_element();
            run(item, r, out, true)
        })?,
        Op::Skip(shape) => skip(shape, r)?,
        Op::Text(col, shape) => {
            let json = render(shape, r)?;
            out.value(element, *col, Val::Str(Cow::Owned(json.to_string())));
        }
        Op::Nothing => {}
        Op::Fail(why) => return Err(r.invalid(why.clone())),
    }
    Ok(())
}

fn skip(shape: &Shape, r: &mut Reader<'_>) -> Result<(), DecodeError> {
    match shape {
        Shape::Null => {}
        Shape::Bool => {
            r.byte()?;
        }
        Shape::Int | Shape::Long | Shape::Enum(_) => {
            r.long()?;
        }
        Shape::Float => {
            r.take(4)?;
        }
        Shape::Double => {
            r.take(8)?;
        }
        Shape::Bytes | Shape::Str => {
            r.bytes()?;
        }
        Shape::Fixed(n) => {
            r.take(*n)?;
        }
        Shape::Array(item) => r.blocks(|r| skip(item, r))?,
        Shape::Map(value) => r.blocks(|r| {
            r.bytes()?;
            skip(value, r)
        })?,
        Shape::Union(branches) => {
            let i = r.branch(branches.len())?;
            skip(&branches[i], r)?;
        }
        Shape::Record(fields) => {
            for (_, field) in fields {
                skip(field, r)?;
            }
        }
    }
    Ok(())
}

fn render(shape: &Shape, r: &mut Reader<'_>) -> Result<Json, DecodeError> {
    Ok(match shape {
        Shape::Null => Json::Null,
        Shape::Bool => Json::Bool(r.byte()? != 0),
        Shape::Int | Shape::Long => Json::from(r.long()?),
        Shape::Float => Json::from(f64::from(r.f32()?)),
        Shape::Double => Json::from(r.f64()?),
        Shape::Bytes => Json::String(hex(r.bytes()?)),
        Shape::Str => Json::String(r.str()?.to_owned()),
        Shape::Fixed(n) => Json::String(hex(r.take(*n)?)),
        Shape::Enum(symbols) => Json::String(symbols[r.branch(symbols.len())?].clone()),
        Shape::Array(item) => {
            let mut items = Vec::new();
            r.blocks(|r| {
                items.push(render(item, r)?);
                Ok(())
            })?;
            Json::Array(items)
        }
        Shape::Map(value) => {
            let mut map = serde_json::Map::new();
            r.blocks(|r| {
                let key = r.str()?.to_owned();
                map.insert(key, render(value, r)?);
                Ok(())
            })?;
            Json::Object(map)
        }
        Shape::Union(branches) => {
            let i = r.branch(branches.len())?;
            render(&branches[i], r)?
        }
        Shape::Record(fields) => {
            let mut map = serde_json::Map::new();
            for (name, field) in fields {
                map.insert(name.clone(), render(field, r)?);
            }
            Json::Object(map)
        }
    })
}

#[cfg(test)]
mod tests;
