//! Splitting a byte stream into newline-delimited messages without ever
//! buffering more than `max_message_bytes` of one line.

use std::io::{self, BufRead};

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
}

/// Reads the line starting at `offset`. With `final_line`, a last line
/// without a newline is a message; otherwise it is [`Line::Partial`].
pub(crate) fn read_line(
    reader: &mut impl BufRead,
    offset: u64,
    limits: LineLimits,
    final_line: bool,
) -> io::Result<Line> {
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
    let item = if content_len > limits.max_message_bytes {
        let mut letter = DeadLetter::new(
            offset,
            Reason::Oversized,
            format!(
                "message of {content_len} bytes exceeds ingest.max_message_bytes ({})",
                limits.max_message_bytes
            ),
            &line,
            limits.dead_letter_max_payload_bytes,
        );
        letter.payload_bytes = content_len;
        SourceItem::Bad(letter)
    } else {
        SourceItem::Message(Message {
            position: offset,
            payload: line,
        })
    };
    Ok(Line::Item(item, end))
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
    };

    fn all(input: &[u8], final_line: bool) -> Vec<String> {
        let mut reader = io::BufReader::with_capacity(4, input);
        let mut offset = 0;
        let mut out = Vec::new();
        loop {
            match read_line(&mut reader, offset, LIMITS, final_line).unwrap() {
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
}
