//! Avro object container files: header, compressed blocks, sync markers.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use bytes::Bytes;
use serde_json::json;

use super::encoding::{Reader, write_bytes, write_long, write_value};
use super::schema::{Column, ColumnType, RowSchema, Value, ValueRef};
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"Obj\x01";
/// Uncompressed bytes per block before it is compressed and written out.
const BLOCK_BYTES: usize = 1 << 20;
/// Avro names the record type; readers (fastavro, Spark) show it.
const RECORD_NAME: &str = "tributary.Row";

/// Compression of a row file's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Avro `zstandard`.
    Zstd,
    /// Avro `deflate` (raw RFC 1951).
    Deflate,
    /// Avro `null`: uncompressed. Read, never written by Tributary.
    Null,
}

impl Codec {
    fn avro_name(self) -> &'static str {
        match self {
            Codec::Zstd => "zstandard",
            Codec::Deflate => "deflate",
            Codec::Null => "null",
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
            Codec::Null => Ok(data.to_vec()),
        }
    }

    fn decompress(self, data: &[u8]) -> Result<Vec<u8>> {
        let err = |source| Error::Codec {
            codec: self.avro_name(),
            source,
        };
        let mut out = Vec::new();
        match self {
            Codec::Zstd => {
                zstd::stream::read::Decoder::new(data)
                    .map_err(err)?
                    .read_to_end(&mut out)
                    .map_err(err)?;
            }
            Codec::Deflate => {
                flate2::read::DeflateDecoder::new(data)
                    .read_to_end(&mut out)
                    .map_err(err)?;
            }
            Codec::Null => out.extend_from_slice(data),
        }
        Ok(out)
    }
}

/// Writes a row file into memory; [`RowFileWriter::finish`] returns its bytes.
///
/// ```
/// use tributary_lake::rowfile::{Codec, Column, ColumnType, RowFile, RowFileWriter, RowSchema, Value};
///
/// let schema = RowSchema { columns: vec![
///     Column::required("_position", ColumnType::Long),
///     Column::nullable("level", ColumnType::String),
/// ]};
/// let mut writer = RowFileWriter::new(schema, Codec::Zstd, [("tributary.last_position", "7")]);
/// writer.append(&[Value::Long(7), Value::String("INFO".into())]).unwrap();
/// let bytes = writer.finish().unwrap();
///
/// let file = RowFile::decode(&bytes, "<memory>").unwrap();
/// assert_eq!(file.rows, vec![vec![Value::Long(7), Value::String("INFO".into())]]);
/// assert_eq!(file.metadata_str("tributary.last_position"), Some("7"));
/// ```
pub struct RowFileWriter {
    schema: RowSchema,
    codec: Codec,
    out: Vec<u8>,
    block: Vec<u8>,
    block_rows: i64,
    rows: u64,
    sync: [u8; 16],
}

impl RowFileWriter {
    /// Starts a file with `schema`, compressed with `codec`, whose header
    /// carries the `metadata` pairs (besides `avro.schema` and `avro.codec`).
    pub fn new<K: Into<String>, V: Into<String>>(
        schema: RowSchema,
        codec: Codec,
        metadata: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut meta: BTreeMap<String, Vec<u8>> = metadata
            .into_iter()
            .map(|(k, v)| (k.into(), v.into().into_bytes()))
            .collect();
        meta.insert("avro.schema".into(), avro_schema_json(&schema).into_bytes());
        meta.insert("avro.codec".into(), codec.avro_name().as_bytes().to_vec());

        // The sync marker only has to be unlikely to occur in block data; one
        // derived from the header keeps output deterministic for tests.
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

        let mut out = Vec::with_capacity(BLOCK_BYTES);
        out.extend_from_slice(MAGIC);
        write_long(&mut out, meta.len() as i64);
        for (k, v) in &meta {
            write_bytes(&mut out, k.as_bytes());
            write_bytes(&mut out, v);
        }
        write_long(&mut out, 0);
        out.extend_from_slice(&sync);
        Self {
            schema,
            codec,
            out,
            block: Vec::with_capacity(BLOCK_BYTES),
            block_rows: 0,
            rows: 0,
            sync,
        }
    }

    /// The file's schema.
    pub fn schema(&self) -> &RowSchema {
        &self.schema
    }

    /// Appends one row: one value per column, in schema order. A row shorter
    /// than the schema is padded with nulls (columns added to the schema after
    /// the row was built).
    pub fn append(&mut self, row: &[Value]) -> Result<()> {
        let mark = self.block.len();
        for (i, column) in self.schema.columns.iter().enumerate() {
            let value = row.get(i).unwrap_or(&Value::Null);
            if let Err(e) = write_value(&mut self.block, column, value) {
                self.block.truncate(mark);
                return Err(e);
            }
        }
        self.block_rows += 1;
        self.rows += 1;
        if self.block.len() >= BLOCK_BYTES {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Rows appended so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.block_rows == 0 {
            return Ok(());
        }
        let compressed = self.codec.compress(&self.block)?;
        write_long(&mut self.out, self.block_rows);
        write_bytes(&mut self.out, &compressed);
        self.out.extend_from_slice(&self.sync);
        self.block.clear();
        self.block_rows = 0;
        Ok(())
    }

    /// Writes the last block and returns the file.
    pub fn finish(mut self) -> Result<Bytes> {
        self.flush_block()?;
        Ok(Bytes::from(self.out))
    }
}

/// The Avro schema of a row file: a record of the columns, nullable ones as
/// `["null", T]` unions with a `null` default.
fn avro_schema_json(schema: &RowSchema) -> String {
    fn avro_type(ty: &ColumnType) -> serde_json::Value {
        match ty {
            ColumnType::Boolean => json!("boolean"),
            ColumnType::Long => json!("long"),
            ColumnType::Double => json!("double"),
            ColumnType::String => json!("string"),
            ColumnType::Bytes => json!("bytes"),
            ColumnType::List(item) => json!({"type": "array", "items": ["null", avro_type(item)]}),
        }
    }
    let fields: Vec<_> = schema
        .columns
        .iter()
        .map(|c| {
            if c.nullable {
                json!({"name": c.name, "type": ["null", avro_type(&c.ty)], "default": null})
            } else {
                json!({"name": c.name, "type": avro_type(&c.ty)})
            }
        })
        .collect();
    json!({"type": "record", "name": RECORD_NAME, "fields": fields}).to_string()
}

/// Reads back a schema Tributary wrote; anything else is an error.
fn parse_avro_schema(text: &[u8]) -> std::result::Result<RowSchema, String> {
    fn parse_type(v: &serde_json::Value) -> std::result::Result<ColumnType, String> {
        match v {
            serde_json::Value::String(s) => match s.as_str() {
                "boolean" => Ok(ColumnType::Boolean),
                "long" => Ok(ColumnType::Long),
                "double" => Ok(ColumnType::Double),
                "string" => Ok(ColumnType::String),
                "bytes" => Ok(ColumnType::Bytes),
                other => Err(format!("unsupported type {other:?}")),
            },
            serde_json::Value::Object(o) if o.get("type") == Some(&json!("array")) => {
                match o.get("items").and_then(|i| i.as_array()).map(Vec::as_slice) {
                    Some([null, item]) if null == "null" => {
                        Ok(ColumnType::List(Box::new(parse_type(item)?)))
                    }
                    _ => Err("array items must be [\"null\", T]".into()),
                }
            }
            other => Err(format!("unsupported type {other}")),
        }
    }
    let root: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("schema is not JSON: {e}"))?;
    let fields = root
        .get("fields")
        .and_then(|f| f.as_array())
        .ok_or("schema is not a record with fields")?;
    let columns = fields
        .iter()
        .map(|f| {
            let name = f
                .get("name")
                .and_then(|n| n.as_str())
                .ok_or("field without a name")?;
            let ty = f
                .get("type")
                .ok_or_else(|| format!("field `{name}` has no type"))?;
            Ok(match ty.as_array().map(Vec::as_slice) {
                Some([null, inner]) if null == "null" => Column::nullable(name, parse_type(inner)?),
                _ => Column::required(name, parse_type(ty)?),
            })
        })
        .collect::<std::result::Result<_, String>>()?;
    Ok(RowSchema { columns })
}

/// A decoded row file.
#[derive(Debug, Clone)]
pub struct RowFile {
    /// Its columns.
    pub schema: RowSchema,
    /// Header metadata (including `avro.schema` and `avro.codec`).
    pub metadata: BTreeMap<String, Vec<u8>>,
    /// The rows, one value per column.
    pub rows: Vec<Vec<Value>>,
}

impl RowFile {
    /// Decodes a whole file. `name` is only used in error messages.
    pub fn decode(bytes: &[u8], name: &str) -> Result<RowFile> {
        let (schema, metadata) = Self::decode_header(bytes, name)?;
        let mut rows = Vec::new();
        Self::for_each_row(bytes, name, |row| {
            rows.push(row.iter().map(ValueRef::to_value).collect());
            Ok(())
        })?;
        Ok(RowFile {
            schema,
            metadata,
            rows,
        })
    }

    /// Calls `f` with every row of the file, in order, as values borrowed
    /// from the file's data: no allocation per value. `name` is only used in
    /// error messages; an error of `f` stops decoding and is returned.
    pub fn for_each_row(
        bytes: &[u8],
        name: &str,
        mut f: impl FnMut(&[ValueRef<'_>]) -> Result<()>,
    ) -> Result<()> {
        let corrupt = |reason: String| Error::CorruptRowFile {
            path: name.to_string(),
            reason,
        };
        let mut reader = Reader::new(bytes);
        let (schema, _, codec, sync) = read_header(&mut reader).map_err(corrupt)?;
        while !reader.is_empty() {
            let block = (|| -> std::result::Result<_, String> {
                let count = reader.length()?;
                let data = reader.bytes()?;
                if reader.take(16)? != sync {
                    return Err("sync marker mismatch".into());
                }
                Ok((count, data))
            })();
            let (count, data) = block.map_err(corrupt)?;
            let data = codec.decompress(data)?;
            let mut block = Reader::new(&data);
            // Borrows from this block's data, so one per block.
            let mut row = Vec::with_capacity(schema.columns.len());
            for _ in 0..count {
                row.clear();
                for column in &schema.columns {
                    row.push(block.value_ref(column).map_err(corrupt)?);
                }
                f(&row)?;
            }
        }
        Ok(())
    }

    /// Decodes only the header: schema and metadata, no rows.
    pub fn decode_header(
        bytes: &[u8],
        name: &str,
    ) -> Result<(RowSchema, BTreeMap<String, Vec<u8>>)> {
        let (schema, metadata, _, _) =
            read_header(&mut Reader::new(bytes)).map_err(|reason| Error::CorruptRowFile {
                path: name.to_string(),
                reason,
            })?;
        Ok((schema, metadata))
    }

    /// A metadata entry as text.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata
            .get(key)
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

type Header = (RowSchema, BTreeMap<String, Vec<u8>>, Codec, [u8; 16]);

fn read_header(reader: &mut Reader<'_>) -> std::result::Result<Header, String> {
    if reader
        .take(4)
        .map_err(|_| "too short for an Avro file".to_string())?
        != MAGIC
    {
        return Err("not an Avro object container file (bad magic)".into());
    }
    let mut metadata = BTreeMap::new();
    loop {
        let mut count = reader.long()?;
        if count == 0 {
            break;
        }
        if count < 0 {
            count = count.checked_neg().ok_or("invalid metadata block count")?;
            reader.long()?;
        }
        for _ in 0..count {
            let key = String::from_utf8(reader.bytes()?.to_vec())
                .map_err(|_| "metadata key is not UTF-8")?;
            metadata.insert(key, reader.bytes()?.to_vec());
        }
    }
    let mut sync = [0u8; 16];
    sync.copy_from_slice(reader.take(16)?);
    let schema = parse_avro_schema(
        metadata
            .get("avro.schema")
            .ok_or("no avro.schema in header")?,
    )?;
    let codec = match metadata.get("avro.codec").map(Vec::as_slice) {
        None | Some(b"null") => Codec::Null,
        Some(b"zstandard") => Codec::Zstd,
        Some(b"deflate") => Codec::Deflate,
        Some(other) => {
            return Err(format!(
                "unsupported codec {:?}",
                String::from_utf8_lossy(other)
            ));
        }
    };
    Ok((schema, metadata, codec, sync))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schema() -> RowSchema {
        RowSchema {
            columns: vec![
                Column::required("_key", ColumnType::String),
                Column::nullable("n", ColumnType::Long),
                Column::nullable("x", ColumnType::Double),
                Column::nullable("b", ColumnType::Boolean),
                Column::nullable("tags", ColumnType::List(Box::new(ColumnType::String))),
                Column::nullable("raw", ColumnType::Bytes),
            ],
        }
    }

    fn value() -> impl Strategy<Value = Vec<Value>> {
        (
            ".*",
            proptest::option::of(any::<i64>()),
            proptest::option::of(-1e300f64..1e300),
            proptest::option::of(any::<bool>()),
            proptest::option::of(proptest::collection::vec(
                proptest::option::of(".{0,8}"),
                0..4,
            )),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        )
            .prop_map(|(k, n, x, b, tags, raw)| {
                vec![
                    Value::String(k),
                    n.map_or(Value::Null, Value::Long),
                    x.map_or(Value::Null, Value::Double),
                    b.map_or(Value::Null, Value::Boolean),
                    tags.map_or(Value::Null, |t| {
                        Value::List(
                            t.into_iter()
                                .map(|s| s.map_or(Value::Null, Value::String))
                                .collect(),
                        )
                    }),
                    raw.map_or(Value::Null, Value::Bytes),
                ]
            })
    }

    proptest! {
        #[test]
        fn rows_round_trip(rows in proptest::collection::vec(value(), 0..50), deflate in any::<bool>()) {
            let codec = if deflate { Codec::Deflate } else { Codec::Zstd };
            let mut w = RowFileWriter::new(schema(), codec, [("k", "v")]);
            for r in &rows {
                w.append(r).unwrap();
            }
            let bytes = w.finish().unwrap();
            let file = RowFile::decode(&bytes, "t").unwrap();
            prop_assert_eq!(&file.schema, &schema());
            prop_assert_eq!(&file.rows, &rows);
            prop_assert_eq!(file.metadata_str("k"), Some("v"));
        }

        #[test]
        fn corrupt_files_are_errors_not_panics(cut in 0usize..400, flip in any::<u8>()) {
            let mut w = RowFileWriter::new(schema(), Codec::Zstd, [("k", "v")]);
            w.append(&[Value::String("a".into()), Value::Long(1), Value::Null, Value::Null, Value::Null, Value::Null]).unwrap();
            let mut bytes = w.finish().unwrap().to_vec();
            let at = cut % bytes.len();
            bytes[at] ^= flip | 1;
            let _ = RowFile::decode(&bytes, "t");
            let _ = RowFile::decode(&bytes[..at], "t");
        }
    }

    #[test]
    fn values_widen_on_write() {
        let schema = RowSchema {
            columns: vec![
                Column::nullable("s", ColumnType::String),
                Column::nullable("d", ColumnType::Double),
            ],
        };
        let mut w = RowFileWriter::new(schema, Codec::Zstd, Vec::<(String, String)>::new());
        w.append(&[Value::Long(5), Value::Long(2)]).unwrap();
        let err = w
            .append(&[Value::Null, Value::String("x".into())])
            .unwrap_err();
        assert!(err.to_string().contains("column `d` is double"), "{err}");
        let file = RowFile::decode(&w.finish().unwrap(), "t").unwrap();
        assert_eq!(
            file.rows,
            vec![vec![Value::String("5".into()), Value::Double(2.0)]]
        );
    }
}
