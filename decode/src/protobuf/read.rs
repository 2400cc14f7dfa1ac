//! Running a message plan: reading the Protobuf wire format.

use std::borrow::Cow;

use super::{Element, Field, Known, MessagePlan, Node, Scalar, text};
use crate::Val;
use crate::avro::{DecodeError, Sink};

/// The wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const I32: u8 = 5;

/// The largest field number (2^29 - 1): a tag past it is corrupt data.
const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

/// Groups nest at most this deep (a deeper message is refused, not
/// recursed into without end).
const MAX_GROUP_DEPTH: usize = 64;

/// A cursor over wire-format bytes.
pub(super) struct Wire<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Wire<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data, at: 0 }
    }

    pub(super) fn invalid(&self, what: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            at: self.at,
            what: what.into(),
        }
    }

    pub(super) fn rest(&self) -> &'a [u8] {
        &self.data[self.at..]
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }

    pub(super) fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self
                .data
                .get(self.at)
                .ok_or(DecodeError::Truncated(self.at))?;
            self.at += 1;
            // The tenth byte holds the 64th bit only: more is corrupt data,
            // not a value to truncate (prost and Go refuse it too).
            if shift == 63 && b & 0x7e != 0 {
                return Err(self.invalid("varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.invalid("varint longer than 10 bytes"))
    }

    pub(super) fn zigzag(&mut self) -> Result<i64, DecodeError> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
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

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.invalid(format!("length {len}")))?;
        self.take(len)
    }

    /// The next field's number and wire type.
    fn tag(&mut self) -> Result<(u32, u8), DecodeError> {
        let tag = self.varint()?;
        let number = u32::try_from(tag >> 3)
            .ok()
            .filter(|n| (1..=MAX_FIELD_NUMBER).contains(n))
            .ok_or_else(|| self.invalid(format!("field number {}", tag >> 3)))?;
        Ok((number, (tag & 7) as u8))
    }

    /// Skips a value of wire type `wire` (of field `number`).
    fn skip(&mut self, number: u32, wire: u8, depth: usize) -> Result<(), DecodeError> {
        match wire {
            VARINT => self.varint().map(drop),
            I64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            I32 => self.take(4).map(drop),
            START_GROUP if depth < MAX_GROUP_DEPTH => loop {
                let (inner, inner_wire) = self.tag()?;
                if inner_wire == END_GROUP {
                    if inner != number {
                        return Err(self.invalid(format!(
                            "group {number} ends with the end of group {inner}"
                        )));
                    }
                    return Ok(());
                }
                self.skip(inner, inner_wire, depth + 1)?;
            },
            START_GROUP => Err(self.invalid("groups nested too deep")),
            other => Err(self.invalid(format!("field {number} has wire type {other}"))),
        }
    }
}

/// What a column holds while its record is read.
#[derive(Debug, Clone, Default)]
enum Slot<'a> {
    #[default]
    Empty,
    Val(Val<'a>),
    /// The occurrences of a field rendered as JSON text.
    Raw(Vec<&'a [u8]>),
    /// A timestamp or (with `duration`) a duration, as read so far: a
    /// later occurrence of the field merges into it.
    Time {
        seconds: i64,
        nanos: i64,
        duration: bool,
    },
}

/// Decodes one message into `sink`: elements of the explode path as they
/// are met, the envelope's columns at the end.
pub(super) fn decode<'a>(
    plan: &'a MessagePlan,
    data: &'a [u8],
    sink: &mut impl Sink<'a>,
) -> Result<(), DecodeError> {
    let mut slots = vec![Slot::Empty; plan.columns.len()];
    let mut reading = Reading {
        plan,
        element: vec![Slot::Empty; plan.columns.len()],
    };
    reading.message(&plan.root, Wire::new(data), &mut slots, Some(sink))?;
    emit(plan, &mut slots, false, sink)
}

struct Reading<'a> {
    plan: &'a MessagePlan,
    /// The slots of the element being read (reused).
    element: Vec<Slot<'a>>,
}

impl<'a> Reading<'a> {
    /// Reads the fields of `node` from `wire` into `slots`. Elements of the
    /// explode path go to `sink` (`None` inside an element).
    fn message<S: Sink<'a>>(
        &mut self,
        node: &'a Node,
        mut wire: Wire<'a>,
        slots: &mut [Slot<'a>],
        mut sink: Option<&mut S>,
    ) -> Result<(), DecodeError> {
        defaults(node, slots);
        while !wire.done() {
            let (number, wire_type) = wire.tag()?;
            let Some(field) = node.field(number) else {
                wire.skip(number, wire_type, 0)?;
                continue;
            };
            for col in node.oneof_others(number) {
                slots[*col as usize] = Slot::Empty;
            }
            let expect = |wire: &Wire<'a>, want: u8| {
                if wire_type == want {
                    Ok(())
                } else {
                    Err(wire.invalid(format!(
                        "field {number} has wire type {wire_type}, its type has {want}"
                    )))
                }
            };
            match field {
                Field::Scalar { col, kind, .. } => {
                    slots[*col as usize] = Slot::Val(scalar(&mut wire, kind, number, wire_type)?);
                }
                Field::List { col, kind } => {
                    let slot = &mut slots[*col as usize];
                    if !matches!(slot, Slot::Val(Val::List(_))) {
                        *slot = Slot::Val(Val::List(Vec::new()));
                    }
                    if let Slot::Val(Val::List(items)) = slot {
                        list_items(&mut wire, kind, number, wire_type, items)?;
                    }
                }
                Field::Message(inner) => {
                    expect(&wire, LEN)?;
                    let bytes = wire.len_delimited()?;
                    self.message(inner, Wire::new(bytes), slots, sink.as_deref_mut())?;
                }
                Field::Known { col, known } => {
                    expect(&wire, LEN)?;
                    let bytes = wire.len_delimited()?;
                    let slot = &mut slots[*col as usize];
                    *slot = read_known(known, Wire::new(bytes), std::mem::take(slot))?;
                }
                Field::Text { col, .. } => {
                    expect(&wire, LEN)?;
                    let bytes = wire.len_delimited()?;
                    match &mut slots[*col as usize] {
                        Slot::Raw(occurrences) => occurrences.push(bytes),
                        slot => *slot = Slot::Raw(vec![bytes]),
                    }
                }
                Field::Explode(element) => {
                    let Some(sink) = sink.as_deref_mut() else {
                        return Err(wire.invalid("an explode path inside an element"));
                    };
                    match &**element {
                        Element::Message(inner) => {
                            expect(&wire, LEN)?;
                            let bytes = wire.len_delimited()?;
                            let mut element_slots = std::mem::take(&mut self.element);
                            let read = self.message::<S>(
                                inner,
                                Wire::new(bytes),
                                &mut element_slots,
                                None,
                            );
                            sink.start_element();
                            let emitted =
                                read.and_then(|()| emit(self.plan, &mut element_slots, true, sink));
                            self.element = element_slots;
                            emitted?;
                        }
                        Element::Scalar(col, kind) => {
                            let mut values = Vec::new();
                            list_items(&mut wire, kind, number, wire_type, &mut values)?;
                            for value in values {
                                sink.start_element();
                                sink.value(true, *col, value);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Reads one occurrence of a repeated scalar field: one value, or (packed)
/// a run of them.
fn list_items<'a>(
    wire: &mut Wire<'a>,
    kind: &'a Scalar,
    number: u32,
    wire_type: u8,
    items: &mut Vec<Val<'a>>,
) -> Result<(), DecodeError> {
    if wire_type == LEN && !matches!(kind, Scalar::String | Scalar::Bytes) {
        let packed = wire.len_delimited()?;
        let mut run = Wire::new(packed);
        let item_wire = kind.wire_type();
        while !run.done() {
            items.push(scalar(&mut run, kind, number, item_wire)?);
        }
        return Ok(());
    }
    items.push(scalar(wire, kind, number, wire_type)?);
    Ok(())
}

/// Fills the default of every field without presence of a message that is
/// present (a value read later replaces it).
fn defaults<'a>(node: &'a Node, slots: &mut [Slot<'a>]) {
    for (_, field) in &node.fields {
        let (col, default) = match field {
            Field::Scalar {
                col,
                default: Some(default),
                ..
            } => (col, default.clone()),
            Field::List { col, .. } => (col, Val::List(Vec::new())),
            _ => continue,
        };
        let slot = &mut slots[*col as usize];
        if matches!(slot, Slot::Empty) {
            *slot = Slot::Val(default);
        }
    }
}

/// Hands the filled slots to `sink` (rendering JSON text) and empties them.
fn emit<'a>(
    plan: &'a MessagePlan,
    slots: &mut [Slot<'a>],
    element: bool,
    sink: &mut impl Sink<'a>,
) -> Result<(), DecodeError> {
    for (col, slot) in slots.iter_mut().enumerate() {
        let col = col as u32;
        match std::mem::take(slot) {
            Slot::Empty => {}
            Slot::Val(value) => sink.value(element, col, value),
            Slot::Raw(occurrences) => {
                let field = plan.texts.get(&col).ok_or_else(|| DecodeError::Invalid {
                    at: 0,
                    what: format!("column {col} is not rendered as text"),
                })?;
                let rendered = text::render(field, &occurrences)?;
                sink.value(element, col, Val::Str(Cow::Owned(rendered)));
            }
            Slot::Time {
                seconds,
                nanos,
                duration,
            } => {
                let micros = seconds
                    .checked_mul(1_000_000)
                    .and_then(|m| m.checked_add(nanos / 1_000))
                    .ok_or_else(|| DecodeError::Invalid {
                        at: 0,
                        what: format!(
                            "`{}`: {seconds} seconds is out of range",
                            plan.columns[col as usize]
                        ),
                    })?;
                let value = if duration {
                    Val::Long(micros)
                } else {
                    Val::Timestamp(micros)
                };
                sink.value(element, col, value);
            }
        }
    }
    Ok(())
}

/// Reads one scalar of `kind` sent with wire type `wire_type`.
fn scalar<'a>(
    wire: &mut Wire<'a>,
    kind: &'a Scalar,
    number: u32,
    wire_type: u8,
) -> Result<Val<'a>, DecodeError> {
    let want = kind.wire_type();
    if wire_type != want {
        return Err(wire.invalid(format!(
            "field {number} has wire type {wire_type}, its type has {want}"
        )));
    }
    Ok(match kind {
        Scalar::Double => Val::Double(f64::from_le_bytes(wire.fixed()?)),
        Scalar::Float => Val::Double(f64::from(f32::from_le_bytes(wire.fixed()?))),
        Scalar::Int { bits32, unsigned } => {
            let v = wire.varint()?;
            Val::Long(match (bits32, unsigned) {
                (true, true) => i64::from(v as u32),
                (true, false) => i64::from(v as i32),
                _ => v as i64,
            })
        }
        Scalar::UInt64 => unsigned(wire.varint()?),
        Scalar::SInt { bits32 } => {
            let v = wire.varint()?;
            // A `sint32` is the zigzag of 32 bits: higher bits of a longer
            // varint are dropped first (as prost and the C++ parser do),
            // so that the value stays in the 32-bit range.
            let v = if *bits32 { u64::from(v as u32) } else { v };
            Val::Long((v >> 1) as i64 ^ -((v & 1) as i64))
        }
        Scalar::Fixed32 => Val::Long(i64::from(u32::from_le_bytes(wire.fixed()?))),
        Scalar::SFixed32 => Val::Long(i64::from(i32::from_le_bytes(wire.fixed()?))),
        Scalar::Fixed64 => unsigned(u64::from_le_bytes(wire.fixed()?)),
        Scalar::SFixed64 => Val::Long(i64::from_le_bytes(wire.fixed()?)),
        Scalar::Bool => Val::Bool(wire.varint()? != 0),
        Scalar::String => {
            let at = wire.at;
            let bytes = wire.len_delimited()?;
            Val::Str(Cow::Borrowed(std::str::from_utf8(bytes).map_err(|e| {
                DecodeError::Invalid {
                    at,
                    what: format!(
                        "field {number} is not valid UTF-8 (at byte {} of the string)",
                        e.valid_up_to()
                    ),
                }
            })?))
        }
        Scalar::Bytes => Val::Bytes(Cow::Borrowed(wire.len_delimited()?)),
        Scalar::Enum(names) => {
            let number = wire.varint()? as i32;
            match names.get(&number) {
                Some(name) => Val::Str(Cow::Borrowed(name)),
                None => Val::Str(Cow::Owned(number.to_string())),
            }
        }
    })
}

/// A `uint64` as `decimal(20,0)`.
pub(super) fn unsigned(v: u64) -> Val<'static> {
    Val::Decimal {
        unscaled: i128::from(v),
        precision: 20,
        scale: 0,
    }
}

/// Reads a well-known message (its bytes in `wire`) into what the field's
/// `previous` occurrences left: a message that occurs again merges, each of
/// its fields keeping its last value (a later occurrence that lacks one
/// does not reset it).
fn read_known<'a>(
    known: &'a Known,
    mut wire: Wire<'a>,
    previous: Slot<'a>,
) -> Result<Slot<'a>, DecodeError> {
    if let Known::Wrapper(kind) = known {
        let mut value = match previous {
            Slot::Val(value) => value,
            _ => kind.default_value(),
        };
        while !wire.done() {
            let (number, wire_type) = wire.tag()?;
            if number == 1 {
                value = scalar(&mut wire, kind, number, wire_type)?;
            } else {
                wire.skip(number, wire_type, 0)?;
            }
        }
        return Ok(Slot::Val(value));
    }
    let (mut seconds, mut nanos) = match previous {
        Slot::Time { seconds, nanos, .. } => (seconds, nanos),
        _ => (0, 0),
    };
    while !wire.done() {
        let (number, wire_type) = wire.tag()?;
        match (number, wire_type) {
            (1, VARINT) => seconds = wire.varint()? as i64,
            (2, VARINT) => nanos = i64::from(wire.varint()? as i32),
            (1 | 2, other) => {
                return Err(wire.invalid(format!(
                    "field {number} of a timestamp or duration has wire type {other}, \
                     its type has {VARINT}"
                )));
            }
            _ => wire.skip(number, wire_type, 0)?,
        }
    }
    Ok(Slot::Time {
        seconds,
        nanos,
        duration: matches!(known, Known::Duration),
    })
}

impl Scalar {
    /// The wire type one value of this type is sent with.
    fn wire_type(&self) -> u8 {
        match self {
            Scalar::Double | Scalar::Fixed64 | Scalar::SFixed64 => I64,
            Scalar::Float | Scalar::Fixed32 | Scalar::SFixed32 => I32,
            Scalar::String | Scalar::Bytes => LEN,
            _ => VARINT,
        }
    }
}
