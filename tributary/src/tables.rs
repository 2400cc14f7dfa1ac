//! Which table(s) a table command works on: `--table NAME`, or every table.
//!
//! An unrouted configuration has one table; `--table` is then only a guard
//! against the wrong configuration (it must be that table's name). A routed
//! one (`lake.table_uri` ending in `/${table}`) has many: `--table NAME`
//! picks one of them, and without it the commands that can run over several
//! run over every table (the named ones and those found under the
//! template's parent, whatever `compact.tables` says: a person's records
//! can be in any of them); the commands that only make sense for one table
//! ask for the flag.

use std::collections::BTreeMap;

use serde::Serialize;
use tributary_compactor::{ServedTable, Tables};
use tributary_config::{Config, ConfigError};

/// The tables a command works on: `--table NAME` (checked), or every table.
pub(crate) async fn selected(
    config: &Config,
    table: Option<&str>,
) -> anyhow::Result<Vec<ServedTable>> {
    match table {
        None if config.is_routed() => Ok(Tables::every(config).list().await?),
        table => Ok(vec![one(config, table, "").await?]),
    }
}

/// The one table a command works on. On a routed configuration `--table`
/// is required (`command` says what for) and must name an existing table;
/// on an unrouted one it is optional and must be the table's name.
pub(crate) async fn one(
    config: &Config,
    table: Option<&str>,
    command: &str,
) -> anyhow::Result<ServedTable> {
    let invalid = |value: &str, reason: String| ConfigError::Invalid {
        key: "--table".into(),
        value: value.to_string(),
        reason,
    };
    if !config.is_routed() {
        let single = config.single_table()?;
        if let Some(name) = table.filter(|t| *t != single.name) {
            return Err(invalid(
                name,
                format!("the configuration's table is {:?}", single.name),
            )
            .into());
        }
        return Ok(ServedTable::open(config, &single.name)?);
    }
    let Some(name) = table else {
        let reason = format!(
            "the configuration routes to several tables ({}); {command} works on one: \
             name it with --table NAME",
            config.lake.table_uri
        );
        return Err(invalid("", reason).into());
    };
    if !tributary_config::is_safe_name(name) {
        return Err(invalid(
            name,
            "a table name is letters, digits, `_`, `-` and `.`".into(),
        )
        .into());
    }
    let names = Tables::every(config).names().await?;
    if !names.iter().any(|n| n == name) {
        return Err(invalid(
            name,
            format!("no such table; the tables are: {}", names.join(", ")),
        )
        .into());
    }
    Ok(ServedTable::open(config, name)?)
}

/// A report per table, printed as one JSON object for a routed
/// configuration (`{"tables": {"name": report, ...}, "failed": {...}}`).
#[derive(Debug, Serialize)]
pub(crate) struct PerTable<T> {
    /// Each table's report, by name.
    pub tables: BTreeMap<String, T>,
    /// The tables where the command failed, with the error.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
}

impl<T> PerTable<T> {
    pub(crate) fn new() -> Self {
        Self {
            tables: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    /// Records `table`'s outcome (an error is logged too).
    pub(crate) fn record<E: std::fmt::Display>(&mut self, table: &str, outcome: Result<T, E>) {
        match outcome {
            Ok(report) => {
                self.tables.insert(table.to_string(), report);
            }
            Err(error) => {
                let error = format!("{error:#}");
                tracing::error!(table, error, "the command failed for this table");
                self.failed.insert(table.to_string(), error);
            }
        }
    }
}

/// Runs `command` on every table of `tables`, one after the other, and
/// prints the result: for an unrouted configuration the one table's report
/// as today; else a [`PerTable`] report, and an error naming the tables
/// that failed.
pub(crate) async fn run_each<T, F, Fut>(
    config: &Config,
    tables: Vec<ServedTable>,
    mut command: F,
) -> anyhow::Result<()>
where
    T: Serialize,
    F: FnMut(ServedTable) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    if !config.is_routed() {
        for table in tables {
            crate::print_json(&command(table).await?)?;
        }
        return Ok(());
    }
    let count = tables.len();
    let mut reports = PerTable::new();
    for (done, table) in tables.into_iter().enumerate() {
        eprintln!("table {} ({}/{count})", table.name, done + 1);
        let name = table.name.clone();
        reports.record(&name, command(table).await);
    }
    crate::print_json(&reports)?;
    if !reports.failed.is_empty() {
        anyhow::bail!(
            "failed for table(s) {}; see the report",
            reports
                .failed
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
