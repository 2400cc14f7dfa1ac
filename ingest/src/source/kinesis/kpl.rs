//! De-aggregation of records written by the Kinesis Producer Library.
//!
//! An aggregated record is the magic `F3 89 9A C2`, a protobuf
//! `AggregatedRecord`, and the 16-byte MD5 of that protobuf:
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! ```
//!
//! Each user record is a message of its own, whose position includes its
//! index in the aggregate. A record that starts with the magic but does not
//! decode (truncated, wrong checksum, bad protobuf, a partition key index
//! out of range) is a dead letter, never passed on as data and never dropped.

use md5::{Digest, Md5};

/// The first four bytes of a KPL-aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

const DIGEST_LEN: usize = 16;

/// One user record of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord<'a> {
    /// Its partition key, from the aggregate's key table.
    pub partition_key: &'a str,
    /// Its data.
    pub data: &'a [u8],
}

/// The user records of `data` if it is a KPL aggregate, `Ok(None)` if it
/// is a plain record, and why not if it starts like an aggregate but is not
/// a valid one.
pub fn deaggregate(data: &[u8]) -> Result<Option<Vec<UserRecord<'_>>>, String> {
    let Some(rest) = data.strip_prefix(&MAGIC) else {
        return Ok(None);
    };
    if rest.len() < DIGEST_LEN {
        return Err(format!(
            "KPL aggregate of {} bytes is too short for its MD5 trailer",
            data.len()
        ));
    }
    let (body, digest) = rest.split_at(rest.len() - DIGEST_LEN);
    if Md5::digest(body).as_slice() != digest {
        return Err("KPL aggregate's MD5 trailer does not match its body".into());
    }
    let mut keys: Vec<&str> = Vec::new();
    let mut raw: Vec<(u64, &[u8])> = Vec::new();
    let mut reader = Reader { buf: body, at: 0 };
    while let Some((field, wire)) = reader.key()? {
        match (field, wire) {
            (1, 2) => {
                let key = reader.bytes()?;
                keys.push(std::str::from_utf8(key).map_err(|_| {
                    format!("KPL aggregate: partition key {} is not UTF-8", keys.len())
                })?);
            }
            (3, 2) => {
                let record = reader.bytes()?;
                raw.push(record_fields(record, raw.len())?);
            }
            _ => reader.skip(wire)?,
        }
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, (key, data))| {
            let partition_key = usize::try_from(key)
                .ok()
                .and_then(|k| keys.get(k))
                .ok_or_else(|| {
                    format!(
                        "KPL aggregate: record {i} names partition key {key}; the table has {}",
                        keys.len()
                    )
                })?;
            Ok(UserRecord {
                partition_key,
                data,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Some)
}

/// The partition key index and data of the `index`th `Record`.
fn record_fields(buf: &[u8], index: usize) -> Result<(u64, &[u8]), String> {
    let mut reader = Reader { buf, at: 0 };
    let (mut key, mut data) = (None, None);
    while let Some((field, wire)) = reader.key()? {
        match (field, wire) {
            (1, 0) => key = Some(reader.varint()?),
            (3, 2) => data = Some(reader.bytes()?),
            _ => reader.skip(wire)?,
        }
    }
    match (key, data) {
        (Some(key), Some(data)) => Ok((key, data)),
        _ => Err(format!(
            "KPL aggregate: record {index} lacks its partition key index or data"
        )),
    }
}

/// A protobuf reader over one message.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// The next field number and wire type, `None` at the end.
    fn key(&mut self) -> Result<Option<(u64, u8)>, String> {
        if self.at >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        Ok(Some((key >> 3, (key & 7) as u8)))
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.at)
                .ok_or_else(|| format!("KPL aggregate: truncated varint at byte {}", self.at))?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!(
            "KPL aggregate: varint too long at byte {}",
            self.at
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.varint()?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| self.at.checked_add(l))
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "KPL aggregate: a field of {len} bytes at byte {} runs past the end ({})",
                    self.at,
                    self.buf.len()
                )
            })?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        let width = match wire {
            0 => return self.varint().map(drop),
            2 => return self.bytes().map(drop),
            1 => 8,
            5 => 4,
            other => {
                return Err(format!(
                    "KPL aggregate: unsupported protobuf wire type {other} at byte {}",
                    self.at
                ));
            }
        };
        if self.at + width > self.buf.len() {
            return Err(format!(
                "KPL aggregate: truncated field at byte {}",
                self.at
            ));
        }
        self.at += width;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
        varint(out, number << 3 | 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// A KPL aggregate of `records` (partition key, data).
    pub(crate) fn aggregate(records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut keys: Vec<&str> = Vec::new();
        let mut body = Vec::new();
        for (key, _) in records {
            if !keys.contains(key) {
                keys.push(key);
                field(&mut body, 1, key.as_bytes());
            }
        }
        for (key, data) in records {
            let mut record = Vec::new();
            varint(&mut record, 1 << 3);
            varint(
                &mut record,
                keys.iter().position(|k| k == key).unwrap() as u64,
            );
            field(&mut record, 3, data);
            // A tag, which is skipped.
            field(&mut record, 4, b"\x0a\x01k");
            field(&mut body, 3, &record);
        }
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&Md5::digest(&body));
        out
    }

    #[test]
    fn aggregates_round_trip_and_plain_records_pass() {
        let agg = aggregate(&[("a", b"one"), ("b", b""), ("a", b"three")]);
        let records = deaggregate(&agg).unwrap().unwrap();
        assert_eq!(
            records,
            vec![
                UserRecord {
                    partition_key: "a",
                    data: b"one"
                },
                UserRecord {
                    partition_key: "b",
                    data: b""
                },
                UserRecord {
                    partition_key: "a",
                    data: b"three"
                },
            ]
        );
        assert_eq!(deaggregate(b"{\"plain\":1}").unwrap(), None);
        assert_eq!(deaggregate(&MAGIC[..3]).unwrap(), None);
    }

    #[test]
    fn corrupt_aggregates_are_errors_that_say_why() {
        let mut agg = aggregate(&[("a", b"one")]);
        let last = agg.len() - 1;
        agg[last] ^= 1;
        assert!(deaggregate(&agg).unwrap_err().contains("MD5"));
        assert!(deaggregate(&MAGIC).unwrap_err().contains("too short"));
        // A valid checksum over a truncated protobuf body.
        let body = [0x1a, 0x10, 0x08];
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&body);
        bad.extend_from_slice(&Md5::digest(body));
        assert!(deaggregate(&bad).unwrap_err().contains("runs past the end"));
        // A record naming a partition key the table lacks.
        let mut record = Vec::new();
        varint(&mut record, 1 << 3);
        varint(&mut record, 7);
        field(&mut record, 3, b"x");
        let mut body = Vec::new();
        field(&mut body, 3, &record);
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&body);
        bad.extend_from_slice(&Md5::digest(&body));
        assert!(deaggregate(&bad).unwrap_err().contains("partition key 7"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_after_the_magic_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut data = MAGIC.to_vec();
            data.extend_from_slice(&bytes);
            let _ = deaggregate(&data);
            // With a valid checksum the protobuf parser itself is exercised.
            let mut data = MAGIC.to_vec();
            data.extend_from_slice(&bytes);
            data.extend_from_slice(&Md5::digest(&bytes));
            let _ = deaggregate(&data);
        }
    }
}
