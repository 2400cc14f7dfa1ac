//! The framings a message's bytes can arrive in, detected per message.
//!
//! | first bytes            | framing                                   | schema named by      |
//! |------------------------|-------------------------------------------|----------------------|
//! | `03 00` / `03 05`      | AWS Glue Schema Registry (none / zlib)    | 16-byte UUID         |
//! | `00` + 4 bytes         | Confluent                                 | 32-bit id (big end.) |
//! | `01` + 16 bytes        | Confluent, GUID form                      | 16-byte UUID         |
//! | `C3 01` + 8 bytes      | Avro single-object encoding               | CRC-64-AVRO (little) |
//! | printable ASCII        | plain JSON                                | none                 |
//!
//! A Kafka message may instead name its schema in the `__value_schema_id`
//! header (Confluent's header form); its payload is then bare. See
//! [`parse_with_header`].

use std::borrow::Cow;
use std::io::Read;

use uuid::Uuid;

/// How a message names its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaRef {
    /// A registry UUID (Glue framing, Confluent GUID framing or header).
    Uuid(Uuid),
    /// A Confluent 32-bit schema id.
    ConfluentId(u32),
    /// The CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form.
    Fingerprint(u64),
}

/// The family of framing a message arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// AWS Glue Schema Registry.
    Glue,
    /// Confluent (id or GUID, in the message or its header).
    Confluent,
    /// Avro single-object encoding.
    SingleObject,
    /// Plain JSON.
    Json,
}

/// A message's schema reference and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<'a> {
    /// The framing.
    pub framing: Framing,
    /// The schema, or `None` for plain JSON.
    pub schema: Option<SchemaRef>,
    /// The encoded record (decompressed if the framing compressed it).
    pub payload: Cow<'a, [u8]>,
}

/// Why a message's framing cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than its framing's header.
    #[error("truncated {framing} frame: {len} bytes, the header alone is {header}")]
    Truncated {
        /// The framing.
        framing: &'static str,
        /// The message's length.
        len: usize,
        /// The header's length.
        header: usize,
    },
    /// A first byte that starts no known framing.
    #[error("unknown framing: the message starts with byte 0x{0:02x}")]
    UnknownHeader(u8),
    /// A Glue compression byte other than `00` and `05`.
    #[error("unknown AWS Glue compression byte 0x{0:02x} (0x00 none and 0x05 zlib are known)")]
    UnknownCompression(u8),
    /// The zlib payload is corrupt.
    #[error("corrupt zlib payload: {0}")]
    Zlib(String),
    /// The zlib payload inflates past the limit.
    #[error("the zlib payload inflates to more than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// An empty message.
    #[error("empty message")]
    Empty,
    /// A `__value_schema_id` header of unknown form.
    #[error("unreadable __value_schema_id header ({len} bytes)")]
    BadHeader {
        /// The header's length.
        len: usize,
    },
}

const GLUE_HEADER: usize = 18;
const CONFLUENT_HEADER: usize = 5;
const CONFLUENT_GUID_HEADER: usize = 17;
const SINGLE_OBJECT_HEADER: usize = 10;

/// Reads the framing of `message`. A zlib payload is inflated up to
/// `max_payload_bytes`.
pub fn parse(message: &[u8], max_payload_bytes: u64) -> Result<Frame<'_>, FrameError> {
    let header = header(message)?;
    let body = &message[header.len..];
    let payload = if header.zlib {
        Cow::Owned(inflate(body, max_payload_bytes)?)
    } else {
        Cow::Borrowed(body)
    };
    Ok(Frame {
        framing: header.framing,
        schema: header.schema,
        payload,
    })
}

/// The schema `message` names, from its header alone (nothing is
/// inflated); `None` for plain JSON and for messages whose framing is bad
/// ([`parse`] reports why).
pub fn schema_of(message: &[u8]) -> Option<SchemaRef> {
    header(message).ok()?.schema
}

/// A framing's header: the schema, its length, whether the rest is zlib.
struct Header {
    framing: Framing,
    schema: Option<SchemaRef>,
    len: usize,
    zlib: bool,
}

fn header(message: &[u8]) -> Result<Header, FrameError> {
    let need = |framing, len: usize| {
        if message.len() < len {
            Err(FrameError::Truncated {
                framing,
                len: message.len(),
                header: len,
            })
        } else {
            Ok(())
        }
    };
    let uuid_at = |at: usize| {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&message[at..at + 16]);
        Some(SchemaRef::Uuid(Uuid::from_bytes(bytes)))
    };
    let first = *message.first().ok_or(FrameError::Empty)?;
    let (framing, schema, len, zlib) = match first {
        0x03 => {
            need("AWS Glue", GLUE_HEADER)?;
            let zlib = match message[1] {
                0x00 => false,
                0x05 => true,
                other => return Err(FrameError::UnknownCompression(other)),
            };
            (Framing::Glue, uuid_at(2), GLUE_HEADER, zlib)
        }
        0x00 => {
            need("Confluent", CONFLUENT_HEADER)?;
            let id = u32::from_be_bytes([message[1], message[2], message[3], message[4]]);
            let schema = Some(SchemaRef::ConfluentId(id));
            (Framing::Confluent, schema, CONFLUENT_HEADER, false)
        }
        0x01 => {
            need("Confluent GUID", CONFLUENT_GUID_HEADER)?;
            (Framing::Confluent, uuid_at(1), CONFLUENT_GUID_HEADER, false)
        }
        0xC3 if message.get(1) == Some(&0x01) => {
            need("Avro single-object", SINGLE_OBJECT_HEADER)?;
            let mut fingerprint = [0u8; 8];
            fingerprint.copy_from_slice(&message[2..SINGLE_OBJECT_HEADER]);
            let schema = SchemaRef::Fingerprint(u64::from_le_bytes(fingerprint));
            (
                Framing::SingleObject,
                Some(schema),
                SINGLE_OBJECT_HEADER,
                false,
            )
        }
        // Text: plain JSON (whose own errors the JSON decoder reports).
        0x20..=0x7e | b'\t' | b'\r' | b'\n' => (Framing::Json, None, 0, false),
        other => return Err(FrameError::UnknownHeader(other)),
    };
    Ok(Header {
        framing,
        schema,
        len,
        zlib,
    })
}

/// Like [`parse`], but a `__value_schema_id` header (when present) names the
/// schema and the whole message is the payload. The header holds `01` + a
/// 16-byte GUID, `00` + a 4-byte id, a bare 16-byte GUID, or a GUID as text.
pub fn parse_with_header<'a>(
    message: &'a [u8],
    header: Option<&[u8]>,
    max_payload_bytes: u64,
) -> Result<Frame<'a>, FrameError> {
    let Some(header) = header else {
        return parse(message, max_payload_bytes);
    };
    let bad = || FrameError::BadHeader { len: header.len() };
    let schema = match header.len() {
        17 if header[0] == 0x01 => {
            SchemaRef::Uuid(Uuid::from_slice(&header[1..]).map_err(|_| bad())?)
        }
        16 => SchemaRef::Uuid(Uuid::from_slice(header).map_err(|_| bad())?),
        5 if header[0] == 0x00 => SchemaRef::ConfluentId(u32::from_be_bytes([
            header[1], header[2], header[3], header[4],
        ])),
        36 => SchemaRef::Uuid(
            std::str::from_utf8(header)
                .ok()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(bad)?,
        ),
        _ => return Err(bad()),
    };
    Ok(Frame {
        framing: Framing::Confluent,
        schema: Some(schema),
        payload: Cow::Borrowed(message),
    })
}

/// Inflates a zlib stream, refusing to produce more than `limit` bytes.
fn inflate(body: &[u8], limit: u64) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit as usize));
    flate2::read::ZlibDecoder::new(body)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| FrameError::Zlib(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(FrameError::TooLarge { limit });
    }
    Ok(out)
}

/// Encodes a Glue frame (the quickstart's generator and tests write these).
pub fn glue_frame(schema: Uuid, payload: &[u8], zlib: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(GLUE_HEADER + payload.len());
    out.push(0x03);
    out.push(if zlib { 0x05 } else { 0x00 });
    out.extend_from_slice(schema.as_bytes());
    if zlib {
        let mut encoder = flate2::write::ZlibEncoder::new(out, flate2::Compression::fast());
        // Writing into a Vec cannot fail.
        let _ = std::io::Write::write_all(&mut encoder, payload);
        return encoder.finish().unwrap_or_default();
    }
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Uuid = Uuid::from_bytes([7; 16]);

    #[test]
    fn every_framing_is_detected() {
        let glue = glue_frame(ID, b"avro", false);
        assert_eq!(
            parse(&glue, 100).unwrap(),
            Frame {
                framing: Framing::Glue,
                schema: Some(SchemaRef::Uuid(ID)),
                payload: Cow::Borrowed(b"avro")
            }
        );
        let zipped = glue_frame(ID, &[b'a'; 1000], true);
        assert!(zipped.len() < 100);
        assert_eq!(parse(&zipped, 1000).unwrap().payload.len(), 1000);

        let confluent = [0, 0, 0, 1, 2, 9, 9];
        assert_eq!(
            parse(&confluent, 100).unwrap().schema,
            Some(SchemaRef::ConfluentId(258))
        );
        let mut guid = vec![1];
        guid.extend_from_slice(ID.as_bytes());
        assert_eq!(parse(&guid, 100).unwrap().schema, Some(SchemaRef::Uuid(ID)));
        let single = [0xC3, 0x01, 1, 0, 0, 0, 0, 0, 0, 0, 42];
        let frame = parse(&single, 100).unwrap();
        assert_eq!(frame.schema, Some(SchemaRef::Fingerprint(1)));
        assert_eq!(&*frame.payload, &[42]);
        assert_eq!(parse(b" {\"a\":1}", 100).unwrap().schema, None);
    }

    #[test]
    fn bad_frames_are_errors_naming_the_problem() {
        assert_eq!(
            parse(&[3, 0, 1], 100),
            Err(FrameError::Truncated {
                framing: "AWS Glue",
                len: 3,
                header: 18
            })
        );
        let mut unknown = glue_frame(ID, b"x", false);
        unknown[1] = 0x07;
        assert_eq!(parse(&unknown, 100), Err(FrameError::UnknownCompression(7)));
        assert_eq!(parse(&[0x07], 100), Err(FrameError::UnknownHeader(0x07)));
        assert_eq!(
            parse(&[0xff, 0xfe], 100),
            Err(FrameError::UnknownHeader(0xff))
        );
        assert_eq!(parse(b"[1]", 100).unwrap().schema, None);
        assert_eq!(parse(&[], 100), Err(FrameError::Empty));
        let mut corrupt = glue_frame(ID, b"x", false);
        corrupt[1] = 0x05;
        assert!(matches!(parse(&corrupt, 100), Err(FrameError::Zlib(_))));
    }

    #[test]
    fn a_zlib_bomb_stops_at_the_limit() {
        let mut bomb = glue_frame(ID, b"", false);
        bomb[1] = 0x05;
        let mut zlib = flate2::write::ZlibEncoder::new(bomb, flate2::Compression::best());
        std::io::Write::write_all(&mut zlib, &vec![0u8; 10 << 20]).unwrap();
        let bomb = zlib.finish().unwrap();
        assert!(bomb.len() < (10 << 20) / 100, "{} bytes", bomb.len());
        assert_eq!(
            parse(&bomb, 1 << 20),
            Err(FrameError::TooLarge { limit: 1 << 20 })
        );
    }

    #[test]
    fn headers_name_the_schema_of_a_bare_payload() {
        let mut header = vec![1];
        header.extend_from_slice(ID.as_bytes());
        let frame = parse_with_header(b"\x02", Some(&header), 10).unwrap();
        assert_eq!(frame.schema, Some(SchemaRef::Uuid(ID)));
        assert_eq!(&*frame.payload, b"\x02");
        let text = ID.to_string();
        assert_eq!(
            parse_with_header(b"", Some(text.as_bytes()), 10)
                .unwrap()
                .schema,
            Some(SchemaRef::Uuid(ID))
        );
        assert_eq!(
            parse_with_header(b"", Some(b"xx"), 10),
            Err(FrameError::BadHeader { len: 2 })
        );
    }
}
