//! What the compactor's benchmarks share: `TRIBUTARY_BENCH_*` settings, the
//! directory they work in, the runtime, staging synthetic rows and copying
//! a table. Each benchmark is its own crate and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use deltalake::arrow::array::{ArrayRef, Int64Array, StringArray};
use deltalake::arrow::record_batch::RecordBatch;
use tributary_lake::rowfile::{self, Codec};
use tributary_lake::{Lake, PartitionId, chain};

#[path = "../../../tributary/src/process.rs"]
pub mod process;

/// Environment variable `name` as a number (`_` separators allowed);
/// `None` when it is not set.
pub fn env_number<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(text) => {
            Ok(Some(text.replace('_', "").parse().with_context(|| {
                format!("{name}={text:?} is not a number")
            })?))
        }
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(e).context(name.to_string()),
    }
}

/// Where a benchmark builds its lake: `TRIBUTARY_BENCH_DIR` (kept
/// afterwards), else a temporary directory removed when the returned guard
/// drops.
pub fn work_dir() -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    match std::env::var_os("TRIBUTARY_BENCH_DIR") {
        Some(dir) => Ok((None, PathBuf::from(dir))),
        None => {
            let temp = tempfile::tempdir()?;
            let path = temp.path().to_path_buf();
            Ok((Some(temp), path))
        }
    }
}

/// A multi-threaded Tokio runtime, as the binary runs.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Copies the directory tree `from` to `to`.
pub fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The synthetic rows `first..=last` of one staged row file.
pub struct Rows {
    /// Its first row number.
    pub first: u64,
    /// Its last row number.
    pub last: u64,
    /// Per row, a cheap mix of its number, so that users and dates are
    /// spread, not in runs.
    pub mixed: Vec<u64>,
}

impl Rows {
    /// A string column: `f(row number, mix)` for each row.
    pub fn text(&self, f: impl Fn(u64, u64) -> String) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            (self.first..=self.last)
                .zip(&self.mixed)
                .map(|(n, m)| f(n, *m)),
        ))
    }
}

/// Stages synthetic rows `first..end` as row files of `rows_per_file` rows
/// of one source partition: keys `k<n>` (12 digits), positions `n`, and the
/// columns `columns` makes of each file's rows.
pub async fn stage_rows(
    lake: &Lake,
    (mut first, end): (u64, u64),
    rows_per_file: u64,
    columns: impl Fn(&Rows) -> Vec<(&'static str, ArrayRef)>,
) -> anyhow::Result<()> {
    let partition = PartitionId::new("bench", "synthetic");
    while first < end {
        let last = (first + rows_per_file).min(end) - 1;
        let rows = Rows {
            first,
            last,
            mixed: (first..=last)
                .map(|n| n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20)
                .collect(),
        };
        let fixed = [
            ("_key", rows.text(|n, _| format!("k{n:012}"))),
            (
                "_position",
                Arc::new(Int64Array::from_iter_values(
                    (first..=last).map(|n| n as i64),
                )) as ArrayRef,
            ),
        ];
        let batch = RecordBatch::try_from_iter(fixed.into_iter().chain(columns(&rows)))?;
        let file = rowfile::write(
            &batch,
            Codec::Zstd,
            chain::file_metadata(&partition, first, last),
        )?;
        chain::stage(lake.store().as_ref(), &partition, first, file).await?;
        first = last + 1;
    }
    Ok(())
}
