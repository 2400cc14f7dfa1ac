//! The columns of a Delta table as column types. The record path's column
//! types and their Arrow types are defined in `tributary_decode::columns`,
//! re-exported here.

use deltalake::DeltaTable;
pub use tributary_decode::columns::{arrow_type, column_type, json_text};

use crate::error::Result;
use crate::rowfile::ColumnType;

/// The table's columns with a type Tributary can write (others are left to
/// their writers and never touched).
pub fn table_columns(table: &DeltaTable) -> Result<Vec<(String, ColumnType)>> {
    let snapshot = table.snapshot().map_err(|e| crate::Error::Delta {
        url: table.table_url().to_string(),
        source: Box::new(e),
    })?;
    let schema = snapshot.snapshot().arrow_schema();
    Ok(schema
        .fields()
        .iter()
        .filter_map(|f| Some((f.name().clone(), column_type(f.data_type())?)))
        .collect())
}
