//! The files source: newline-delimited JSON files in a directory, or stdin.
//!
//! Each file is a source partition named after the file; a message's position
//! is the byte offset where its line starts (in the decompressed stream for
//! `.gz` files). Plain files are re-opened and read from the last staged
//! offset whenever they grow; a trailing line without a newline is read once
//! the file has not changed for `settle_ms`. `.gz` files are read once they
//! have settled, as one stream.
//!
//! Standard input is the single partition `stdin`; its positions are byte
//! offsets too, so piping the same data again is recognised as already
//! ingested.

use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use flate2::read::MultiGzDecoder;
use tributary_config::FileFormat;
use tributary_lake::PartitionId;

use super::lines::{Line, LineLimits, read_line};
use crate::batch::SourceItem;
use tributary_lake::dead_letter::{DeadLetter, Reason};

const READ_BUFFER_BYTES: usize = 1 << 20;

/// Limits of one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Most items.
    pub max_records: usize,
    /// Most message bytes.
    pub max_bytes: u64,
    /// Longest wait for a batch to fill (stdin only; files return what they have).
    pub max_latency: Duration,
    /// Longest message.
    pub max_message_bytes: u64,
    /// Most payload bytes kept in a dead letter.
    pub dead_letter_max_payload_bytes: u64,
    /// How long a file must be unchanged to count as complete.
    pub settle: Duration,
    /// How messages are delimited.
    pub format: FileFormat,
}

impl ReadLimits {
    fn lines(&self) -> LineLimits {
        LineLimits {
            max_message_bytes: self.max_message_bytes,
            dead_letter_max_payload_bytes: self.dead_letter_max_payload_bytes,
            format: self.format,
        }
    }
}

/// What one read produced.
#[derive(Debug, Default)]
pub struct PartitionRead {
    /// Items in position order; empty when nothing new is available.
    pub items: Vec<SourceItem>,
    /// Where the next read starts once these items are staged.
    pub end: u64,
    /// The partition ended (a settled `.gz` file read to its end, or stdin closed).
    pub finished: bool,
    /// The file is empty and settled: the caller records it as a dead letter once.
    pub empty_file: bool,
}

/// Where the next read of a partition begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// After the message at this position (from the chain), or from the start.
    After(Option<u64>),
    /// At this byte offset.
    At(u64),
}

/// A decompressing reader kept open between batches of a `.gz` file.
struct GzStream {
    reader: BufReader<MultiGzDecoder<File>>,
    offset: u64,
    /// Items at or before this position were staged already.
    skip_through: Option<u64>,
}

/// One file of the watched directory.
pub struct FilePartition {
    id: PartitionId,
    path: PathBuf,
    gz: bool,
    next: Next,
    stream: Option<GzStream>,
    finished: bool,
    empty_reported: bool,
}

impl std::fmt::Debug for FilePartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilePartition")
            .field("id", &self.id)
            .field("next", &self.next)
            .finish()
    }
}

/// The files in `dir` that are partitions: regular files whose names do not
/// start with `.`, sorted by name.
pub fn list_files(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.file_type()?.is_file() {
            files.push((name, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

impl FilePartition {
    /// A partition of `stream` for the file at `path`; it starts after
    /// `resume_after` (from the chain), or from the beginning.
    pub fn new(stream: &str, name: &str, path: PathBuf, resume_after: Option<u64>) -> Self {
        Self {
            id: PartitionId::new(stream, name),
            gz: name.ends_with(".gz"),
            path,
            next: Next::After(resume_after),
            stream: None,
            finished: false,
            empty_reported: false,
        }
    }

    /// The partition id.
    pub fn id(&self) -> &PartitionId {
        &self.id
    }

    /// Whether the file was read to its end and cannot grow (settled `.gz`).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The items of the last read were staged: continue at `end`.
    pub fn committed(&mut self, end: u64) {
        if !self.gz {
            self.next = Next::At(end);
        }
    }

    /// Another writer staged up to `last`: continue after it. Reopens `.gz`
    /// streams, since ours may be behind or ahead of `last`.
    pub fn resume_after(&mut self, last: u64) {
        self.next = Next::After(Some(last));
        self.stream = None;
        self.finished = false;
    }

    /// Bytes of the file not read and staged yet: those after the next read
    /// offset of a plain file; the whole (compressed) size of a `.gz` file
    /// until it has been read to its end. Blocking I/O (one `stat`).
    pub fn unread_bytes(&self) -> io::Result<u64> {
        if self.finished {
            return Ok(0);
        }
        let size = std::fs::metadata(&self.path)?.len();
        if self.gz {
            return Ok(size);
        }
        let offset = match self.next {
            Next::At(offset) | Next::After(Some(offset)) => offset,
            Next::After(None) => 0,
        };
        Ok(size.saturating_sub(offset))
    }

    /// Reads the next batch of complete messages (blocking I/O).
    pub fn read(&mut self, limits: &ReadLimits) -> io::Result<PartitionRead> {
        if self.finished {
            return Ok(PartitionRead {
                finished: true,
                ..Default::default()
            });
        }
        let meta = std::fs::metadata(&self.path)?;
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok());
        let settled = age.is_some_and(|a| a >= limits.settle);
        if meta.len() == 0 {
            // Reported once per process; the dead-letter object is overwritten, not duplicated.
            let report = settled && !self.empty_reported;
            self.empty_reported |= report;
            return Ok(PartitionRead {
                empty_file: report,
                ..Default::default()
            });
        }
        if self.gz {
            if !settled {
                return Ok(PartitionRead::default());
            }
            self.read_gz(limits)
        } else {
            self.read_plain(limits, settled)
        }
    }

    fn read_plain(&mut self, limits: &ReadLimits, settled: bool) -> io::Result<PartitionRead> {
        let mut file = File::open(&self.path)?;
        let (mut offset, skip) = match self.next {
            Next::At(offset) => (offset, None),
            Next::After(None) => (0, None),
            Next::After(Some(position)) => (position, Some(position)),
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
        if skip.is_some() {
            // The message at the resume position was staged: step over its line.
            match read_line(&mut reader, offset, limits.lines(), settled)? {
                Line::Item(_, end) | Line::Blank(end) => {
                    offset = end;
                    self.next = Next::At(end);
                }
                Line::Partial | Line::Eof => {
                    return Ok(PartitionRead {
                        end: offset,
                        ..Default::default()
                    });
                }
            }
        }
        let mut read = PartitionRead::default();
        let mut bytes = 0;
        while read.items.len() < limits.max_records && bytes < limits.max_bytes {
            match read_line(&mut reader, offset, limits.lines(), settled)? {
                Line::Item(item, end) => {
                    bytes += end - offset;
                    offset = end;
                    read.items.push(item);
                }
                Line::Blank(end) => offset = end,
                Line::Partial | Line::Eof => break,
            }
        }
        read.end = offset;
        if read.items.is_empty() {
            // Only blank lines: nothing to stage, but no need to read them again.
            self.next = Next::At(offset);
        }
        Ok(read)
    }

    fn read_gz(&mut self, limits: &ReadLimits) -> io::Result<PartitionRead> {
        if self.stream.is_none() {
            let file = File::open(&self.path)?;
            self.stream = Some(GzStream {
                reader: BufReader::with_capacity(READ_BUFFER_BYTES, MultiGzDecoder::new(file)),
                offset: 0,
                skip_through: match self.next {
                    Next::After(p) => p,
                    Next::At(_) => None,
                },
            });
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(PartitionRead::default());
        };
        let skip_through = stream.skip_through;
        let mut read = PartitionRead::default();
        let mut bytes = 0;
        while read.items.len() < limits.max_records && bytes < limits.max_bytes {
            match read_line(&mut stream.reader, stream.offset, limits.lines(), true) {
                Ok(Line::Item(item, end)) => {
                    let position = item.position();
                    bytes += end - stream.offset;
                    stream.offset = end;
                    if skip_through.is_none_or(|s| position > s) {
                        read.items.push(item);
                    }
                }
                Ok(Line::Blank(end)) => stream.offset = end,
                Ok(Line::Partial | Line::Eof) => {
                    read.finished = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // A corrupt or truncated stream ends the partition here.
                    let position = stream.offset;
                    if skip_through.is_none_or(|s| position > s) {
                        read.items.push(SourceItem::Bad(DeadLetter::new(
                            position,
                            Reason::Source,
                            format!("gzip stream cannot be read past this position: {e}"),
                            &[],
                            0,
                        )));
                    }
                    read.finished = true;
                    break;
                }
            }
        }
        read.end = stream.offset;
        if read.finished {
            self.finished = true;
            self.stream = None;
        }
        Ok(read)
    }
}

/// Standard input as the single partition `stdin`.
pub struct StdinPartition {
    id: PartitionId,
    lines: mpsc::Receiver<io::Result<(SourceItem, u64)>>,
    skip_through: Option<u64>,
    finished: bool,
}

impl StdinPartition {
    /// Starts a thread reading standard input; messages at or before
    /// `resume_after` are skipped.
    pub fn spawn(stream: &str, resume_after: Option<u64>, limits: &ReadLimits) -> Self {
        let (tx, rx) = mpsc::sync_channel(limits.max_records.clamp(1, 65_536));
        let line_limits = limits.lines();
        std::thread::spawn(move || {
            let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, io::stdin().lock());
            let mut offset = 0;
            loop {
                let step = match read_line(&mut reader, offset, line_limits, true) {
                    Ok(Line::Item(item, end)) => Ok((item, end)),
                    Ok(Line::Blank(end)) => {
                        offset = end;
                        continue;
                    }
                    Ok(Line::Partial | Line::Eof) => return,
                    Err(e) => Err(e),
                };
                let failed = step.is_err();
                if let Ok((_, end)) = &step {
                    offset = *end;
                }
                if tx.send(step).is_err() || failed {
                    return;
                }
            }
        });
        Self {
            id: PartitionId::new(stream, "stdin"),
            lines: rx,
            skip_through: resume_after,
            finished: false,
        }
    }

    /// The partition id.
    pub fn id(&self) -> &PartitionId {
        &self.id
    }

    /// Whether standard input is closed and everything was read.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Reads the next batch: waits up to `poll` for a first message, then up
    /// to `limits.max_latency` for the batch to fill (blocking).
    pub fn read(&mut self, limits: &ReadLimits, poll: Duration) -> io::Result<PartitionRead> {
        let mut read = PartitionRead::default();
        let mut bytes = 0;
        let mut deadline = Instant::now() + poll;
        while read.items.len() < limits.max_records && bytes < limits.max_bytes {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(wait) {
                Ok(Ok((item, end))) => {
                    if self.skip_through.is_some_and(|s| item.position() <= s) {
                        continue;
                    }
                    if read.items.is_empty() {
                        deadline = Instant::now() + limits.max_latency;
                    }
                    bytes += end - item.position();
                    read.end = end;
                    read.items.push(item);
                }
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.finished = true;
                    read.finished = true;
                    break;
                }
            }
        }
        Ok(read)
    }
}
