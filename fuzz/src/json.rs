//! The `json` target: the input is a batch of JSON lines, decoded and
//! flattened into one Arrow batch as ingest does, with an explode path, a
//! key field, an event-time field and a declared column type, so that
//! collisions, rejected types, event times and widening across messages are
//! all reachable.

use std::collections::BTreeMap;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use tributary_config::{ColumnTypeName, FlattenConfig};
use tributary_decode::builder::{BatchBuilder, Outcome};
use tributary_decode::columns::ColumnTypes;
use tributary_decode::flatten::Flattener;
use tributary_decode::{Decoder, Format};

/// Messages per batch: enough for types to widen across messages.
const MAX_MESSAGES: usize = 32;

/// Decodes each line of `input` as one message and checks that the batch
/// finishes, and that each message's rows are in it exactly when the
/// builder said so: all of them, none (a dead letter), or all but its
/// rejected elements.
pub fn check(input: &[u8]) {
    let config = FlattenConfig {
        explode: Some("messages".into()),
        key_field: Some("id".into()),
        event_time_field: Some("ts".into()),
        schema: BTreeMap::from([("n".to_string(), ColumnTypeName::Long)]),
        infer_undeclared: true,
    };
    let flattener = Flattener::new(&config);
    let mut types = ColumnTypes::from_config(&config);
    let mut builder = BatchBuilder::new(config.key_field.clone(), config.event_time_field.clone());
    let mut expected = Vec::new();
    {
        let mut decoder = Decoder::new(&flattener, &types);
        for (position, line) in input.split(|b| *b == b'\n').take(MAX_MESSAGES).enumerate() {
            let before = builder.rows();
            builder.begin_message(position as u64);
            let live = match decoder.decode(Format::Json, line, &mut builder) {
                Err(_) => {
                    builder.abort_message();
                    0
                }
                Ok(()) => {
                    let outcome = builder.end_message();
                    let rows = builder.rows() - before;
                    assert!(rows >= 1, "a decoded message has at least one row");
                    match outcome {
                        Outcome::Rows => rows,
                        Outcome::Rejected(_) => 0,
                        Outcome::Elements(rejected) => {
                            assert!(!rejected.is_empty() && rejected.len() <= rows);
                            rows - rejected.len()
                        }
                    }
                }
            };
            expected.push(live);
        }
    }
    let batch = match builder.finish("fuzz/0", &mut types) {
        Ok(batch) => batch,
        Err(e) => panic!("the batch does not finish: {e}"),
    };
    assert_eq!(batch.num_rows(), expected.iter().sum::<usize>());
    let positions = batch
        .column_by_name("_position")
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .expect("every batch has an int64 `_position` column");
    assert_eq!(positions.null_count(), 0);
    let mut rows_of = vec![0; expected.len()];
    for position in positions.values() {
        rows_of[*position as usize] += 1;
    }
    assert_eq!(rows_of, expected, "rows per message");
}
