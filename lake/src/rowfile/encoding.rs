//! Avro binary encoding of the few types row files use.
//!
//! Avro's full generality (any schema, resolved at run time per value) is what
//! makes generic Avro libraries slow; row files only ever hold records of
//! nullable scalars and lists of nullable scalars, so this module encodes and
//! decodes exactly that, straight from and into [`Value`]s.

use super::schema::{Column, ColumnType, Value, ValueRef};
use crate::error::{Error, Result};

pub(crate) fn write_long(out: &mut Vec<u8>, value: i64) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub(crate) fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

/// Writes `value` as a value of `column`, converting it as
/// [`ColumnType::widen`] allows.
pub(crate) fn write_value(out: &mut Vec<u8>, column: &Column, value: &Value) -> Result<()> {
    if column.nullable {
        if matches!(value, Value::Null) {
            out.push(0); // union branch 0: null
            return Ok(());
        }
        out.push(2); // union branch 1, zigzag-encoded
    }
    write_typed(out, &column.ty, value).map_err(|found| Error::ValueType {
        column: column.name.clone(),
        expected: column.ty.to_string(),
        found,
    })
}

fn write_typed(out: &mut Vec<u8>, ty: &ColumnType, value: &Value) -> Result<(), &'static str> {
    match (ty, value) {
        (ColumnType::Boolean, Value::Boolean(b)) => out.push(u8::from(*b)),
        (ColumnType::Long, Value::Long(i)) => write_long(out, *i),
        (ColumnType::Double, Value::Double(d)) => out.extend_from_slice(&d.to_le_bytes()),
        (ColumnType::Double, Value::Long(i)) => out.extend_from_slice(&(*i as f64).to_le_bytes()),
        (ColumnType::String, Value::String(s)) => write_bytes(out, s.as_bytes()),
        (
            ColumnType::String,
            v @ (Value::Boolean(_) | Value::Long(_) | Value::Double(_) | Value::List(_)),
        ) => write_bytes(out, v.to_json_text().as_bytes()),
        (ColumnType::Bytes, Value::Bytes(b)) => write_bytes(out, b),
        (ColumnType::List(item_type), Value::List(items)) => {
            if !items.is_empty() {
                write_long(out, items.len() as i64);
                for item in items {
                    match item {
                        Value::Null => out.push(0),
                        v => {
                            out.push(2);
                            write_typed(out, item_type, v)?;
                        }
                    }
                }
            }
            out.push(0); // end of array blocks
        }
        (_, other) => return Err(other.kind()),
    }
    Ok(())
}

/// A cursor over Avro-encoded bytes; every read checks bounds, so corrupt input
/// is an error, never a panic.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// Why decoding stopped.
pub(crate) type DecodeResult<T> = std::result::Result<T, String>;

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    pub(crate) fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("unexpected end of data at byte {}", self.pos))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    pub(crate) fn long(&mut self) -> DecodeResult<i64> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    pub(crate) fn length(&mut self) -> DecodeResult<usize> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| format!("negative length {n} at byte {}", self.pos))
    }

    pub(crate) fn bytes(&mut self) -> DecodeResult<&'a [u8]> {
        let n = self.length()?;
        self.take(n)
    }

    fn string(&mut self) -> DecodeResult<&'a str> {
        let at = self.pos;
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| format!("invalid UTF-8 in string at byte {at}"))
    }

    /// The next value of `column`, borrowing from the data.
    pub(crate) fn value_ref(&mut self, column: &Column) -> DecodeResult<ValueRef<'a>> {
        if column.nullable {
            match self.long()? {
                0 => return Ok(ValueRef::Null),
                1 => {}
                n => {
                    return Err(format!(
                        "union branch {n} out of range for column `{}`",
                        column.name
                    ));
                }
            }
        }
        self.typed(&column.ty)
    }

    fn typed(&mut self, ty: &ColumnType) -> DecodeResult<ValueRef<'a>> {
        Ok(match ty {
            ColumnType::Boolean => match self.take(1)?[0] {
                0 => ValueRef::Boolean(false),
                1 => ValueRef::Boolean(true),
                b => return Err(format!("invalid boolean byte {b}")),
            },
            ColumnType::Long => ValueRef::Long(self.long()?),
            ColumnType::Double => {
                let raw = self.take(8)?;
                let mut le = [0u8; 8];
                le.copy_from_slice(raw);
                ValueRef::Double(f64::from_le_bytes(le))
            }
            ColumnType::String => ValueRef::String(self.string()?),
            ColumnType::Bytes => ValueRef::Bytes(self.bytes()?),
            ColumnType::List(item) => {
                let mut items = Vec::new();
                loop {
                    let mut count = self.long()?;
                    if count == 0 {
                        break;
                    }
                    if count < 0 {
                        // A negative count is followed by the block's byte size.
                        count = count.checked_neg().ok_or("invalid array block count")?;
                        self.long()?;
                    }
                    for _ in 0..count {
                        items.push(match self.long()? {
                            0 => ValueRef::Null,
                            1 => self.typed(item)?,
                            n => return Err(format!("list item union branch {n} out of range")),
                        });
                    }
                }
                ValueRef::List(items)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn longs_round_trip(n in any::<i64>()) {
            let mut out = Vec::new();
            write_long(&mut out, n);
            prop_assert_eq!(Reader::new(&out).long().unwrap(), n);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let column = Column::nullable("c", ColumnType::List(Box::new(ColumnType::String)));
            let _ = Reader::new(&bytes).value_ref(&column);
        }
    }
}
