//! What the compactor's unit tests share.

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use tributary_lake::rowfile::{self, Codec};
use tributary_lake::{Lake, PartitionId, chain};

/// Stages a row file of `partition` whose rows are at positions `first..`,
/// one per row of `columns` (which hold every column but `_position`).
/// Returns the file's last position.
pub(crate) async fn stage(
    lake: &Lake,
    partition: &PartitionId,
    first: u64,
    columns: Vec<(&str, ArrayRef)>,
) -> u64 {
    let rows = columns.first().map_or(0, |(_, c)| c.len()) as u64;
    let last = first + rows.saturating_sub(1);
    let positions: ArrayRef = Arc::new(Int64Array::from_iter_values(
        (first..first + rows).map(|n| n as i64),
    ));
    let batch =
        RecordBatch::try_from_iter(columns.into_iter().chain([("_position", positions)])).unwrap();
    let metadata = chain::file_metadata(partition, first, last);
    let file = rowfile::write(&batch, Codec::Zstd, metadata).unwrap();
    chain::stage(lake.store().as_ref(), partition, first, file)
        .await
        .unwrap();
    last
}
