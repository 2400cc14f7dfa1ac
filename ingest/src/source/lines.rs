//! Splitting a byte stream into messages — newline-delimited, or each
//! prefixed by its 4-byte big-endian length — without ever buffering more
//! than `max_message_bytes` of one message.

use std::io::{self, BufRead};

use tributary_config::FileFormat;

use crate::batch::{Message, SourceItem};
use tributary_lake::dead_letter::{DeadLetter, Reason};

/// One step of reading lines.
#[derive(Debug)]
pub(crate) enum Line {
    /// A message or an oversized line, and the offset just after it.
    Item(SourceItem, u64),
    /// A blank line (skipped: it holds no message); the offset after it.
    Blank(u64),
    /// Bytes without a newline yet; nothing consumed.
    Partial,
    /// End of the stream.
    Eof,
}

/// Limits and settings of line reading.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineLimits {
    pub max_message_bytes: u64,
    pub dead_letter_max_payload_bytes: u64,
    pub format: FileFormat,
}

/// Reads the message starting at `offset`. With `final_line`, a last line
/// without a newline is a message (and a last length-prefixed message cut
/// short is a dead letter); otherwise both are [`Line::Partial`].
pub(crate) fn read_line(
    reader: &mut impl BufRead,
    offset: u64,
    limits: LineLimits,
    final_line: bool,
) -> io::Result<Line> {
    if limits.format == FileFormat::LengthPrefixed {
        return read_length_prefixed(reader, offset, limits, final_line);
    }
    let max = usize::try_from(limits.max_message_bytes).unwrap_or(usize::MAX);
    let mut line: Vec<u8> = Vec::new();
    let mut len: u64 = 0;
    let mut newline = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        let (take, found) = match memchr(chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = (max + 1).saturating_sub(line.len()).min(take);
        line.extend_from_slice(&chunk[..room]);
        len += take as u64;
        reader.consume(take);
        if found {
            newline = true;
            break;
        }
    }
    if len == 0 {
        return Ok(Line::Eof);
    }
    if !newline && !final_line {
        return Ok(Line::Partial);
    }
    let end = offset + len;
    let content_len = len - u64::from(newline);
    if newline {
        line.truncate(line.len().min(content_len as usize));
    }
    if line.iter().all(u8::is_ascii_whitespace) && content_len <= limits.max_message_bytes {
        return Ok(Line::Blank(end));
    }
    Ok(Line::Item(
        message_or_oversized(offset, line, content_len, limits),
        end,
    ))
}

/// The message of `len` bytes at `offset` whose first bytes are `kept`.
fn message_or_oversized(offset: u64, kept: Vec<u8>, len: u64, limits: LineLimits) -> SourceItem {
    if len <= limits.max_message_bytes {
        return SourceItem::Message(Message::new(offset, kept));
    }
    let mut letter = DeadLetter::new(
        offset,
        Reason::Oversized,
        format!(
            "message of {len} bytes exceeds ingest.max_message_bytes ({})",
            limits.max_message_bytes
        ),
        &kept,
        limits.dead_letter_max_payload_bytes,
    );
    letter.payload_bytes = len;
    SourceItem::Bad(letter)
}

/// Reads a 4-byte big-endian length and that many bytes, keeping at most
/// `max_message_bytes + 1` of them.
fn read_length_prefixed(
    reader: &mut impl BufRead,
    offset: u64,
    limits: LineLimits,
    final_line: bool,
) -> io::Result<Line> {
    let mut prefix = Vec::with_capacity(4);
    let got = read_up_to(reader, 4, 4, &mut prefix)?;
    if got == 0 {
        return Ok(Line::Eof);
    }
    let len = if got == 4 {
        u64::from(u32::from_be_bytes([
            prefix[0], prefix[1], prefix[2], prefix[3],
        ]))
    } else {
        0
    };
    let keep = limits.max_message_bytes.saturating_add(1).min(len);
    let mut kept = Vec::with_capacity(usize::try_from(keep.min(1 << 20)).unwrap_or(0));
    let body = if got == 4 {
        read_up_to(reader, len, keep, &mut kept)?
    } else {
        0
    };
    if got < 4 || body < len {
        if !final_line {
            return Ok(Line::Partial);
        }
        let read = got + body;
        let letter = DeadLetter::new(
            offset,
            Reason::Source,
            format!(
                "length-prefixed message cut short: the file ends {read} bytes after its start, \
                 the prefix announces {len} bytes after 4 bytes of length"
            ),
            &kept,
            limits.dead_letter_max_payload_bytes,
        );
        return Ok(Line::Item(SourceItem::Bad(letter), offset + read));
    }
    let end = offset + 4 + len;
    Ok(Line::Item(
        message_or_oversized(offset, kept, len, limits),
        end,
    ))
}

/// Consumes up to `want` bytes, keeping the first `keep` of them in `out`;
/// returns how many were consumed (fewer only at the end of the stream).
fn read_up_to(
    reader: &mut impl BufRead,
    want: u64,
    keep: u64,
    out: &mut Vec<u8>,
) -> io::Result<u64> {
    let mut done = 0u64;
    while done < want {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        let take = chunk
            .len()
            .min(usize::try_from(want - done).unwrap_or(usize::MAX));
        let room = usize::try_from(keep.saturating_sub(done))
            .unwrap_or(usize::MAX)
            .min(take);
        out.extend_from_slice(&chunk[..room]);
        reader.consume(take);
        done += take as u64;
    }
    Ok(done)
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LineLimits = LineLimits {
        max_message_bytes: 8,
        dead_letter_max_payload_bytes: 3,
        format: FileFormat::Lines,
    };

    fn all(input: &[u8], final_line: bool) -> Vec<String> {
        all_in(input, final_line, LIMITS)
    }

    fn all_in(input: &[u8], final_line: bool, limits: LineLimits) -> Vec<String> {
        let mut reader = io::BufReader::with_capacity(4, input);
        let mut offset = 0;
        let mut out = Vec::new();
        loop {
            match read_line(&mut reader, offset, limits, final_line).unwrap() {
                Line::Item(SourceItem::Message(m), end) => {
                    out.push(format!(
                        "{}:{}",
                        m.position,
                        String::from_utf8_lossy(&m.payload)
                    ));
                    offset = end;
                }
                Line::Item(SourceItem::Bad(d), end) => {
                    out.push(format!(
                        "{}:{}:{}:{}",
                        d.position,
                        d.reason.as_str(),
                        d.payload_bytes,
                        String::from_utf8_lossy(&d.payload)
                    ));
                    offset = end;
                }
                Line::Blank(end) => offset = end,
                Line::Partial => {
                    out.push(format!("partial@{offset}"));
                    break;
                }
                Line::Eof => break,
            }
        }
        out
    }

    #[test]
    fn splits_positions_blank_and_oversized_lines() {
        assert_eq!(
            all(b"ab\n\n  \ncd\n0123456789abc\nxy", false),
            vec!["0:ab", "7:cd", "10:oversized:13:012", "partial@24"]
        );
        assert_eq!(all(b"ab\nxy", true), vec!["0:ab", "3:xy"]);
        assert_eq!(all(b"", true), Vec::<String>::new());
    }

    #[test]
    fn length_prefixed_messages_oversized_and_cut_short() {
        let limits = LineLimits {
            format: FileFormat::LengthPrefixed,
            ..LIMITS
        };
        let mut input = Vec::new();
        for body in [&b"ab"[..], b"", b"0123456789", b"\n\x00z"] {
            input.extend_from_slice(&(body.len() as u32).to_be_bytes());
            input.extend_from_slice(body);
        }
        let complete = input.len();
        input.extend_from_slice(&[0, 0, 0, 9, b'x']);
        assert_eq!(
            all_in(&input, false, limits),
            vec![
                "0:ab",
                "6:",
                "10:oversized:10:012",
                "24:\n\0z",
                "partial@31"
            ]
        );
        let ends = all_in(&input, true, limits);
        assert!(ends[4].starts_with("31:source:1:x"), "{ends:?}");
        assert_eq!(
            all_in(&input[..complete + 2], true, limits)[4],
            "31:source:0:"
        );
    }
}
