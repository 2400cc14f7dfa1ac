//! The `frame` target: the input is one message, in any framing or none.

use tributary_decode::wire::{self, FrameError, Framing, SchemaRef};
use uuid::Uuid;

/// The inflation cap of zlib payloads: small, so that a zlib bomb of a few
/// hundred bytes can exceed it and inflating one stays cheap (ingest's cap is
/// larger; the code path is the same).
pub const MAX_PAYLOAD_BYTES: u64 = 64 << 10;

/// Length of a Glue header (`03`, compression byte, 16-byte UUID).
const GLUE_HEADER: usize = 18;

/// Parses `message` every way ingest can and checks what comes back.
pub fn check(message: &[u8]) {
    check_parse(message);
    check_header(message);
    check_round_trip(message);
}

/// [`wire::parse`]: a payload within the cap, the framing the first byte
/// says, the same schema as [`wire::schema_of`], a borrowed payload that is
/// the message's tail.
fn check_parse(message: &[u8]) {
    let zlib = message.len() >= GLUE_HEADER && message[..2] == [0x03, 0x05];
    let parsed = wire::parse(message, MAX_PAYLOAD_BYTES);
    match &parsed {
        Ok(frame) => {
            assert!(
                frame.payload.len() as u64 <= MAX_PAYLOAD_BYTES,
                "a payload of {} bytes passed the cap of {MAX_PAYLOAD_BYTES}",
                frame.payload.len()
            );
            let framing = match message[0] {
                0x03 => Framing::Glue,
                0x00 | 0x01 => Framing::Confluent,
                0xC3 => Framing::SingleObject,
                _ => Framing::Json,
            };
            assert_eq!(frame.framing, framing);
            assert_eq!(frame.schema.is_none(), framing == Framing::Json);
            assert_eq!(wire::schema_of(message), frame.schema);
            if !zlib {
                assert!(message.ends_with(&frame.payload));
            }
        }
        // Only inflating fails after the header was read.
        Err(FrameError::Zlib(_) | FrameError::TooLarge { .. }) => assert!(zlib),
        Err(_) => assert_eq!(wire::schema_of(message), None),
    }
    assert_eq!(
        wire::parse_with_header(message, None, MAX_PAYLOAD_BYTES),
        parsed
    );
}

/// [`wire::parse_with_header`] with the message's tail as the
/// `__value_schema_id` header, in each of the header's lengths.
fn check_header(message: &[u8]) {
    let header_len = [5, 16, 17, 36][message.len() % 4];
    let Some(split) = message.len().checked_sub(header_len) else {
        return;
    };
    let (payload, header) = message.split_at(split);
    match wire::parse_with_header(payload, Some(header), MAX_PAYLOAD_BYTES) {
        Ok(frame) => {
            assert!(frame.schema.is_some());
            assert_eq!(frame.framing, Framing::Confluent);
            assert_eq!(&*frame.payload, payload);
        }
        Err(e) => {
            assert_eq!(e, FrameError::BadHeader { len: header_len });
            assert_ne!(header_len, 16, "any 16 bytes are a UUID");
        }
    }
}

/// [`wire::glue_frame`] then [`wire::parse`] gives the message back, and a
/// cap one byte short of it refuses the zlib form. The zlib form is checked
/// for one input length in eight only: setting up a zlib encoder costs more
/// than all the other checks together (ten times the executions per second
/// without it).
fn check_round_trip(message: &[u8]) {
    let mut id = [0u8; 16];
    let n = message.len().min(16);
    id[..n].copy_from_slice(&message[..n]);
    let id = Uuid::from_bytes(id);
    let len = message.len() as u64;
    let forms: &[bool] = if message.len().is_multiple_of(8) {
        &[false, true]
    } else {
        &[false]
    };
    for &zlib in forms {
        let framed = wire::glue_frame(id, message, zlib);
        let frame = match wire::parse(&framed, len) {
            Ok(frame) => frame,
            Err(e) => panic!("a Glue frame (zlib: {zlib}) does not parse back: {e}"),
        };
        assert_eq!(frame.schema, Some(SchemaRef::Uuid(id)));
        assert_eq!(frame.framing, Framing::Glue);
        assert_eq!(&*frame.payload, message);
        if zlib && len > 0 {
            assert_eq!(
                wire::parse(&framed, len - 1),
                Err(FrameError::TooLarge { limit: len - 1 })
            );
        }
    }
}
