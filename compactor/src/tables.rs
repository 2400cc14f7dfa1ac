//! The tables one compactor serves: the one table of an unrouted
//! configuration; with routing (`lake.table_uri` ending in `/${table}`), the
//! tables `compact.tables` lists or, with `compact.tables = "*"`, every table
//! the configuration names plus those found under the template's parent.
//!
//! ```text
//! s3://lake/logs/            Config::table_root, listed with a delimiter
//!   payments/_delta_log/     a table (it has a Delta log)
//!   audit/_tributary/staging a table (rows staged, not compacted yet)
//!   tmp/                     not a table: skipped
//! ```
//!
//! A child counts as a table once ingest has staged a row file in it (or a
//! Delta log exists), so a table that a new topic started is served from the
//! next listing on; its name must be a safe name (`config::is_safe_name`).

use std::collections::BTreeSet;

use object_store::ObjectStore;
use object_store::path::Path;
use tributary_config::{CompactConfig, CompactTables, Config, LakeConfig};
use tributary_lake::Lake;

use crate::error::{Error, Result};

/// One table a compactor serves.
#[derive(Debug, Clone)]
pub struct ServedTable {
    /// The table's name (`[tables.<name>]`, the routed `${table}`, or the
    /// last segment of an unrouted `lake.table_uri`).
    pub name: String,
    /// The table's lake.
    pub lake: Lake,
    /// Its compaction settings (`[compact]` completed for this table).
    pub config: CompactConfig,
}

impl ServedTable {
    /// Opens table `name` of `config`.
    pub fn open(config: &Config, name: &str) -> Result<Self> {
        let resolved = config.table(name).map_err(|source| Error::Table {
            table: name.to_string(),
            source,
        })?;
        Ok(Self {
            lake: Lake::open(&resolved.lake)?,
            name: resolved.name,
            config: resolved.compact,
        })
    }
}

/// The set of tables a compactor serves, listed again as it runs.
#[derive(Debug, Clone)]
pub struct Tables {
    config: Config,
    /// Listing the template's parent finds tables beyond the named ones.
    discover: bool,
}

impl Tables {
    /// The tables of `config` (see the module docs).
    pub fn of(config: &Config) -> Self {
        Self {
            discover: config.is_routed() && matches!(config.compact.tables, CompactTables::All),
            config: config.clone(),
        }
    }

    /// Every table of `config`, whatever `compact.tables` says: on a routed
    /// configuration the named ones (`[tables.*]` included) and every table
    /// found under the template's parent. What `tributary forget` and
    /// `retention` run over: a person's records can be in any of them.
    pub fn every(config: &Config) -> Self {
        Self {
            discover: config.is_routed(),
            config: config.clone(),
        }
    }

    /// Whether the set can grow (`compact.tables = "*"` on a routed
    /// configuration), so it is worth listing again.
    pub fn discovers(&self) -> bool {
        self.discover
    }

    /// The configuration the tables come from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The names of every table now: the single table of an unrouted
    /// configuration; else the named ones plus, when discovering, those
    /// found under [`Config::table_root`]. Sorted, without repeats.
    pub async fn names(&self) -> Result<Vec<String>> {
        if !self.config.is_routed() {
            let table = self.config.single_table().map_err(|source| Error::Table {
                table: self.config.lake.table_uri.clone(),
                source,
            })?;
            return Ok(vec![table.name]);
        }
        let mut names: BTreeSet<String> = self.config.named_tables().into_iter().collect();
        if self.discover && matches!(self.config.compact.tables, CompactTables::Listed(_)) {
            // `Tables::every`: the configured tables beside the listed ones.
            names.extend(self.config.tables.keys().cloned());
        }
        if self.discover
            && let Some(root) = self.config.table_root()
        {
            names.extend(discover(&self.config.lake, &root).await?);
        }
        Ok(names.into_iter().collect())
    }

    /// The lake a readiness check probes: the table of an unrouted
    /// configuration, the template's parent of a routed one.
    pub fn home(&self) -> Result<Lake> {
        match self.config.table_root() {
            Some(root) => root_lake(&self.config.lake, &root),
            None => Ok(Lake::open(&self.config.lake)?),
        }
    }

    /// Every table now, opened (see [`Tables::names`]).
    pub async fn list(&self) -> Result<Vec<ServedTable>> {
        self.names()
            .await?
            .iter()
            .map(|name| ServedTable::open(&self.config, name))
            .collect()
    }
}

/// The names of the tables directly under `root`: children holding a
/// `_delta_log/` or a `_tributary/staging/`, whose names are safe.
pub async fn discover(lake: &LakeConfig, root: &str) -> Result<Vec<String>> {
    let store = root_lake(lake, root)?.store().clone();
    let children = list_children(store.as_ref(), None, root).await?;
    let mut names = Vec::new();
    for child in children {
        let Some(name) = child.filename().map(str::to_string) else {
            continue;
        };
        if !tributary_config::is_safe_name(&name) {
            tracing::debug!(%name, root, "not a table name; skipped");
            continue;
        }
        let inside = list_children(store.as_ref(), Some(&child), root).await?;
        let is_table = if inside.iter().any(|p| p.filename() == Some("_delta_log")) {
            true
        } else if inside
            .iter()
            .any(|p| p.filename() == Some(tributary_lake::layout::TRIBUTARY_DIR))
        {
            let bookkeeping = child.clone().join(tributary_lake::layout::TRIBUTARY_DIR);
            list_children(store.as_ref(), Some(&bookkeeping), root)
                .await?
                .iter()
                .any(|p| p.filename() == Some("staging"))
        } else {
            false
        };
        if is_table {
            names.push(name);
        }
    }
    Ok(names)
}

/// A lake at `root` with `lake`'s S3 settings, for listing.
fn root_lake(lake: &LakeConfig, root: &str) -> Result<Lake> {
    Ok(Lake::open(&LakeConfig {
        table_uri: root.to_string(),
        s3: lake.s3.clone(),
        ..LakeConfig::new("")
    })?)
}

/// The "directories" directly under `prefix`.
async fn list_children(
    store: &dyn ObjectStore,
    prefix: Option<&Path>,
    root: &str,
) -> Result<Vec<Path>> {
    let listing = store
        .list_with_delimiter(prefix)
        .await
        .map_err(|source| Error::ListTables {
            root: root.to_string(),
            source,
        })?;
    Ok(listing.common_prefixes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &std::path::Path, path: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[tokio::test]
    async fn a_child_with_a_delta_log_or_staged_rows_is_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(root, "compacted/_delta_log/00000000000000000000.json");
        touch(
            root,
            "staged/_tributary/staging/app/0/00000000000000000001.avro",
        );
        // Bookkeeping without rows (a forget request), loose files and a
        // name that is not a safe name are not tables.
        touch(root, "ledger_only/_tributary/forget/req.json");
        touch(root, "notes/readme.txt");
        touch(root, "bad name/_delta_log/00000000000000000000.json");
        touch(root, "loose.txt");
        let lake = LakeConfig::new("");
        let mut found = discover(&lake, root.to_str().unwrap()).await.unwrap();
        found.sort();
        assert_eq!(found, ["compacted", "staged"]);
    }
}
