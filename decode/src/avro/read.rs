//! Running a plan: reading Avro binary data with the compiled operations.

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat};
use serde_json::Value as Json;

pub use crate::Val;
use crate::value::decimal_text;

use super::{DecodeError, Num, Op, Read, Shape, Sink};

pub(super) struct Reader<'a> {
    pub(super) data: &'a [u8],
    pub(super) at: usize,
    /// Array and map items the record may still hold (see [`Reader::blocks`]).
    pub(super) items_left: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn invalid(&self, what: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            at: self.at,
            what: what.into(),
        }
    }

    pub(super) fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .data
            .get(self.at)
            .ok_or(DecodeError::Truncated(self.at))?;
        self.at += 1;
        Ok(b)
    }

    pub(super) fn long(&mut self) -> Result<i64, DecodeError> {
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

    pub(super) fn int(&mut self) -> Result<i64, DecodeError> {
        let v = self.long()?;
        if i32::try_from(v).is_err() {
            return Err(self.invalid(format!("int {v} is out of range")));
        }
        Ok(v)
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or(DecodeError::Truncated(self.data.len()))?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    pub(super) fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| self.invalid(format!("negative length {n}")))
    }

    pub(super) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }

    pub(super) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.at;
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|e| DecodeError::Invalid {
            at,
            what: format!("string is not UTF-8: {e}"),
        })
    }

    pub(super) fn f32(&mut self) -> Result<f32, DecodeError> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn f64(&mut self) -> Result<f64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    pub(super) fn branch(&mut self, count: usize) -> Result<usize, DecodeError> {
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .filter(|i| *i < count)
            .ok_or_else(|| self.invalid(format!("union branch {i} of {count}")))
    }

    /// Calls `item` for every item of an array or map, block by block.
    pub(super) fn blocks(
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

pub(super) fn num(value: i64, how: Num, r: &Reader<'_>) -> Result<Val<'static>, DecodeError> {
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

pub(super) fn read_scalar<'a>(read: &Read, r: &mut Reader<'a>) -> Result<Val<'a>, DecodeError> {
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
pub(super) fn unscaled(bytes: &[u8]) -> Option<i128> {
    if bytes.len() > 16 {
        return None;
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut buf = [if negative { 0xff } else { 0 }; 16];
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(buf))
}

pub(super) fn run<'a>(
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

pub(super) fn skip(shape: &Shape, r: &mut Reader<'_>) -> Result<(), DecodeError> {
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

pub(super) fn render(shape: &Shape, r: &mut Reader<'_>) -> Result<Json, DecodeError> {
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
