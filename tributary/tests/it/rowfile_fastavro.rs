use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array,
    ListArray, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;
use tributary_lake::rowfile::{self, Codec, RowFile};

use crate::run_python;

/// Row files are standard Avro: `fastavro` reads every type we write
/// (logical types included), with both codecs, and sees the metadata; and
/// they read back into the same Arrow batch.
#[test]
fn fastavro_reads_row_files() {
    fn nulls<T>(n: usize) -> impl Iterator<Item = Option<T>> {
        std::iter::repeat_with(|| None).take(n)
    }
    let dir = tempfile::tempdir().unwrap();
    // Two rows with values, then many more (several blocks) with nulls.
    let bulk = 30_000;
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let tags = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
    let schema = Schema::new(vec![
        Field::new("_key", DataType::Utf8, false),
        Field::new("_position", DataType::Int64, false),
        Field::new("date", DataType::Utf8, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("ms", DataType::Float64, true),
        Field::new("tags", tags, true),
        Field::new("raw", DataType::Binary, true),
        Field::new("ts", utc, true),
        Field::new("day", DataType::Date32, true),
        Field::new("amount", DataType::Decimal128(10, 2), true),
    ]);
    let keys = ["k1".to_string(), "ü€".to_string()]
        .into_iter()
        .chain((0..bulk).map(|i| format!("bulk{i}")));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(keys)),
        Arc::new(Int64Array::from_iter_values(
            [-5, 1 << 40].into_iter().chain(0..bulk as i64),
        )),
        Arc::new(StringArray::from_iter(
            [Some("2026-11-22"), None].into_iter().chain(nulls(bulk)),
        )),
        Arc::new(BooleanArray::from_iter(
            [Some(true), None].into_iter().chain(nulls(bulk)),
        )),
        Arc::new(Float64Array::from_iter(
            [Some(1.5), None].into_iter().chain(nulls(bulk)),
        )),
        Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
            [Some(vec![Some(1), None, Some(i64::MAX)]), Some(vec![])]
                .into_iter()
                .chain(nulls(bulk)),
        )),
        Arc::new(BinaryArray::from_iter(
            [Some(&[0u8, 255][..]), None].into_iter().chain(nulls(bulk)),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter(
                [Some(1_795_000_000_123_456), None]
                    .into_iter()
                    .chain(nulls(bulk)),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Date32Array::from_iter(
            [Some(20_779), None].into_iter().chain(nulls(bulk)),
        )),
        Arc::new(
            Decimal128Array::from_iter([Some(-12_345), None].into_iter().chain(nulls(bulk)))
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema), columns).unwrap();
    for (codec, name) in [(Codec::Zstd, "z.avro"), (Codec::Deflate, "d.avro")] {
        let bytes = rowfile::write(&batch, codec, [("tributary.last_position", "42")]).unwrap();
        // The same columns come back (the reader adds field metadata, such
        // as a decimal's precision).
        assert_eq!(
            RowFile::read(&bytes, name).unwrap().batch.columns(),
            batch.columns()
        );
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = run_python(
            "import sys, json, fastavro, decimal\n\
             def plain(v):\n\
             \x20   if isinstance(v, bytes): return list(v)\n\
             \x20   if isinstance(v, decimal.Decimal): return str(v)\n\
             \x20   if hasattr(v, 'isoformat'): return v.isoformat()\n\
             \x20   return v\n\
             r = fastavro.reader(open(sys.argv[1], 'rb'))\n\
             recs = list(r)\n\
             head = [{k: plain(v) for k, v in x.items()} for x in recs[:2]]\n\
             print(json.dumps({'meta': r.metadata['tributary.last_position'], 'n': len(recs), 'head': head, 'last': recs[-1]['_key']}))",
            &[path.to_str().unwrap()],
        );
        let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(got["meta"], "42");
        assert_eq!(got["n"], 30_002);
        assert_eq!(got["last"], "bulk29999");
        assert_eq!(
            got["head"],
            serde_json::json!([
                {"_key": "k1", "_position": -5, "date": "2026-11-22", "ok": true, "ms": 1.5,
                 "tags": [1, null, i64::MAX], "raw": [0, 255], "ts": "2026-11-18T11:06:40.123456+00:00",
                 "day": "2026-11-22", "amount": "-123.45"},
                {"_key": "ü€", "_position": 1_i64 << 40, "date": null, "ok": null, "ms": null,
                 "tags": [], "raw": null, "ts": null, "day": null, "amount": null}
            ])
        );
    }
}
