use tributary_lake::rowfile::{Codec, Column, ColumnType, RowFileWriter, RowSchema, Value};

use crate::run_python;

/// Row files are standard Avro: `fastavro` reads every type we write, with
/// both codecs, and sees the metadata.
#[test]
fn fastavro_reads_row_files() {
    let dir = tempfile::tempdir().unwrap();
    let schema = RowSchema {
        columns: vec![
            Column::required("_key", ColumnType::String),
            Column::required("_position", ColumnType::Long),
            Column::nullable("date", ColumnType::String),
            Column::nullable("ok", ColumnType::Boolean),
            Column::nullable("ms", ColumnType::Double),
            Column::nullable("tags", ColumnType::List(Box::new(ColumnType::Long))),
            Column::nullable("raw", ColumnType::Bytes),
        ],
    };
    let rows = [
        vec![
            Value::String("k1".into()),
            Value::Long(-5),
            Value::String("2026-11-22".into()),
            Value::Boolean(true),
            Value::Double(1.5),
            Value::List(vec![Value::Long(1), Value::Null, Value::Long(i64::MAX)]),
            Value::Bytes(vec![0, 255]),
        ],
        vec![
            Value::String("ü€".into()),
            Value::Long(1 << 40),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::List(vec![]),
            Value::Null,
        ],
    ];
    for (codec, name) in [(Codec::Zstd, "z.avro"), (Codec::Deflate, "d.avro")] {
        let mut writer =
            RowFileWriter::new(schema.clone(), codec, [("tributary.last_position", "42")]);
        for row in &rows {
            writer.append(row).unwrap();
        }
        // Many rows force several blocks.
        for i in 0..30_000 {
            writer
                .append(&[Value::String(format!("bulk{i}")), Value::Long(i)])
                .unwrap();
        }
        let path = dir.path().join(name);
        std::fs::write(&path, writer.finish().unwrap()).unwrap();
        let out = run_python(
            "import sys, json, fastavro\n\
             r = fastavro.reader(open(sys.argv[1], 'rb'))\n\
             recs = list(r)\n\
             head = [dict(x, raw=list(x['raw']) if x['raw'] is not None else None) for x in recs[:2]]\n\
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
                {"_key": "k1", "_position": -5, "date": "2026-11-22", "ok": true, "ms": 1.5, "tags": [1, null, i64::MAX], "raw": [0, 255]},
                {"_key": "ü€", "_position": 1_i64 << 40, "date": null, "ok": null, "ms": null, "tags": [], "raw": null}
            ])
        );
    }
}
