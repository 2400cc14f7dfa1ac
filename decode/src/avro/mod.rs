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

use std::collections::HashSet;
use std::sync::Arc;

use apache_avro::Schema;

mod compile;
mod read;

pub(crate) use compile::PlanColumns;
pub use compile::push_segment;
use compile::{Compiler, names};
pub use read::hex;
use read::{Reader, run};

pub use crate::Val;

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

    pub(crate) fn clear(&mut self) {
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
            columns: PlanColumns::default(),
            stack: Vec::new(),
        };
        let mut used = HashSet::new();
        let root = compiler.compile(
            writer,
            reader.unwrap_or(writer),
            &mut String::new(),
            Some(0),
            &mut used,
        )?;
        Ok(Self {
            columns: compiler.columns.finish(&used)?,
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

#[cfg(test)]
mod tests;
