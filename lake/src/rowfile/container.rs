//! The Avro object container around a row file's rows.
//!
//! arrow-avro encodes each block's rows from the batch's Arrow arrays and
//! decodes whole files back into Arrow arrays. Its own file writer cannot put
//! extra keys into the header, and the position chain lives in those keys
//! (`tributary.*`), so this module writes the container itself: the header
//! (magic, metadata map, sync marker), then blocks of arrow-avro-encoded rows,
//! each compressed and followed by the sync marker.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};

use arrow_avro::codec::Tz;
use arrow_avro::reader::ReaderBuilder;
use arrow_avro::schema::SCHEMA_METADATA_KEY;
use arrow_avro::writer::WriterBuilder;
use arrow_avro::writer::format::AvroBinaryFormat;
use bytes::Bytes;
use deltalake::arrow::compute::concat_batches;
use deltalake::arrow::datatypes::{Schema, SchemaRef};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"Obj\x01";
/// Rows per block: blocks are compressed one at a time, and readers hold one
/// decompressed block at a time.
const BLOCK_ROWS: usize = 8192;
/// Rows per batch when reading.
const READ_BATCH_ROWS: usize = 8192;

/// Compression of a row file's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Avro `zstandard`.
    Zstd,
    /// Avro `deflate` (raw RFC 1951).
    Deflate,
}

impl Codec {
    fn avro_name(self) -> &'static str {
        match self {
            Codec::Zstd => "zstandard",
            Codec::Deflate => "deflate",
        }
    }

    fn compress(self, data: &[u8]) -> Result<Vec<u8>> {
        let err = |source| Error::Codec {
            codec: self.avro_name(),
            source,
        };
        match self {
            Codec::Zstd => zstd::bulk::compress(data, 3).map_err(err),
            Codec::Deflate => {
                let mut enc =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(data).map_err(err)?;
                enc.finish().map_err(err)
            }
        }
    }
}

/// Encodes `batch` as a row file compressed with `codec`, whose header
/// carries the `metadata` pairs besides `avro.schema` and `avro.codec`.
///
/// Columns map to Avro as arrow-avro maps them: nullable columns are
/// `["null", T]` unions, `Timestamp(µs, UTC)` is `timestamp-micros`, `Date32`
/// is `date`, `Decimal128` is a `bytes` `decimal`, lists are arrays of
/// nullable items. The record is named `tributary.Row`.
///
/// ```
/// use std::sync::Arc;
/// use deltalake::arrow::array::{Int64Array, StringArray};
/// use deltalake::arrow::datatypes::{DataType, Field, Schema};
/// use deltalake::arrow::record_batch::RecordBatch;
/// use tributary_lake::rowfile::{self, Codec, RowFile};
///
/// let schema = Schema::new(vec![
///     Field::new("_position", DataType::Int64, false),
///     Field::new("level", DataType::Utf8, true),
/// ]);
/// let batch = RecordBatch::try_new(Arc::new(schema), vec![
///     Arc::new(Int64Array::from(vec![7])),
///     Arc::new(StringArray::from(vec![Some("INFO")])),
/// ]).unwrap();
/// let bytes = rowfile::write(&batch, Codec::Zstd, [("tributary.last_position", "7")]).unwrap();
///
/// let file = RowFile::read(&bytes, "<memory>").unwrap();
/// assert_eq!(file.batch.columns(), batch.columns());
/// assert_eq!(file.metadata_str("tributary.last_position"), Some("7"));
/// ```
pub fn write<K: Into<String>, V: Into<String>>(
    batch: &RecordBatch,
    codec: Codec,
    metadata: impl IntoIterator<Item = (K, V)>,
) -> Result<Bytes> {
    let avro_err = |source: arrow_avro::errors::AvroError| Error::RowFile {
        path: "<memory>".into(),
        source: source.into(),
    };
    let named = Schema::new_with_metadata(
        batch.schema().fields().clone(),
        [
            ("avro.name".to_string(), "Row".to_string()),
            ("avro.namespace".to_string(), "tributary".to_string()),
        ]
        .into(),
    );
    let mut encoder = WriterBuilder::new(named)
        .build_encoder::<AvroBinaryFormat>()
        .map_err(avro_err)?;
    let avro_schema = encoder
        .schema()
        .metadata()
        .get(SCHEMA_METADATA_KEY)
        .cloned()
        .ok_or_else(|| Error::CorruptRowFile {
            path: "<memory>".into(),
            reason: "arrow-avro gave no Avro schema for the batch".into(),
        })?;

    let mut meta: BTreeMap<String, Vec<u8>> = metadata
        .into_iter()
        .map(|(k, v)| (k.into(), v.into().into_bytes()))
        .collect();
    meta.insert("avro.schema".into(), avro_schema.into_bytes());
    meta.insert("avro.codec".into(), codec.avro_name().as_bytes().to_vec());
    let sync = sync_marker(&meta);

    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    write_long(&mut out, meta.len() as i64);
    for (k, v) in &meta {
        write_bytes(&mut out, k.as_bytes());
        write_bytes(&mut out, v);
    }
    write_long(&mut out, 0);
    out.extend_from_slice(&sync);

    let mut offset = 0;
    while offset < batch.num_rows() {
        let rows = BLOCK_ROWS.min(batch.num_rows() - offset);
        encoder
            .encode(&batch.slice(offset, rows))
            .map_err(avro_err)?;
        let encoded = encoder.flush();
        write_long(&mut out, encoded.len() as i64);
        write_bytes(&mut out, &codec.compress(encoded.bytes())?);
        out.extend_from_slice(&sync);
        offset += rows;
    }
    Ok(Bytes::from(out))
}

/// The sync marker only has to be unlikely to occur in block data; one
/// derived from the header keeps output deterministic for tests.
fn sync_marker(meta: &BTreeMap<String, Vec<u8>>) -> [u8; 16] {
    let mut sync = [0u8; 16];
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for (i, b) in meta
        .iter()
        .flat_map(|(k, v)| k.bytes().chain(v.iter().copied()))
        .enumerate()
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        sync[i % 16] ^= (h >> 24) as u8;
    }
    sync
}

fn write_long(out: &mut Vec<u8>, value: i64) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

/// A row file read back: its rows as one Arrow batch, and its header.
#[derive(Debug, Clone)]
pub struct RowFile {
    /// The rows. Timestamps come back as `Timestamp(µs, "UTC")`, lists with
    /// nullable items named `item`.
    pub batch: RecordBatch,
    /// Header metadata (including `avro.schema` and `avro.codec`).
    pub metadata: BTreeMap<String, Vec<u8>>,
}

impl RowFile {
    /// Reads a whole file (any Avro object container file of records). `name`
    /// is only used in error messages.
    pub fn read(bytes: &[u8], name: &str) -> Result<RowFile> {
        let (reader, metadata) = open(bytes, name)?;
        let schema = reader.schema();
        let batches = reader
            .collect::<std::result::Result<Vec<_>, ArrowError>>()
            .map_err(|source| Error::RowFile {
                path: name.to_string(),
                source,
            })?;
        let batch = concat_batches(&schema, &batches).map_err(|source| Error::RowFile {
            path: name.to_string(),
            source,
        })?;
        Ok(RowFile { batch, metadata })
    }

    /// Reads only the header: the rows' Arrow schema and the metadata.
    pub fn read_header(bytes: &[u8], name: &str) -> Result<(SchemaRef, BTreeMap<String, Vec<u8>>)> {
        let (reader, metadata) = open(bytes, name)?;
        Ok((reader.schema(), metadata))
    }

    /// A metadata entry as text.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata
            .get(key)
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

type Reader<'a> = arrow_avro::reader::Reader<Cursor<&'a [u8]>>;

fn open<'a>(bytes: &'a [u8], name: &str) -> Result<(Reader<'a>, BTreeMap<String, Vec<u8>>)> {
    let reader = ReaderBuilder::new()
        .with_batch_size(READ_BATCH_ROWS)
        .with_tz(Tz::Utc)
        .build(Cursor::new(bytes))
        .map_err(|source| Error::RowFile {
            path: name.to_string(),
            source,
        })?;
    let metadata = reader
        .avro_header()
        .metadata()
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.to_vec()))
        .collect();
    Ok((reader, metadata))
}
