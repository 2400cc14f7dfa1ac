//! `tributary forget`: one request from the command line, or every request
//! of an inbox in one pass; over one table, or every table of a routed
//! configuration (a request is complete once it is complete in each).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tributary_compactor::ServedTable;
use tributary_compactor::forget::{ForgetReport, forget};
use tributary_config::Config;
use tributary_lake::Lake;

use crate::print_json;

/// A request's outcome over the tables of a routed configuration.
#[derive(Debug, Serialize)]
struct TablesReport {
    /// The request id.
    request_id: String,
    /// Whether nothing was changed.
    dry_run: bool,
    /// Whether no copy is left in any table (each table's report is
    /// complete and none failed).
    complete: bool,
    /// Each table's report (also stored under that table's
    /// `_tributary/forget/`), by name.
    tables: BTreeMap<String, ForgetReport>,
    /// The tables where the request failed, with the error: run it again.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    failed: BTreeMap<String, String>,
}

impl TablesReport {
    fn new(request_id: &str, dry_run: bool) -> Self {
        Self {
            request_id: request_id.to_string(),
            dry_run,
            complete: true,
            tables: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    fn record(&mut self, table: &str, outcome: tributary_compactor::Result<ForgetReport>) {
        match outcome {
            Ok(report) => {
                self.complete &= report.complete;
                self.tables.insert(table.to_string(), report);
            }
            Err(error) => {
                let error = format!("{:#}", anyhow::Error::from(error));
                self.complete = false;
                self.failed.insert(table.to_string(), error);
            }
        }
    }
}

/// Runs one erasure request in each of `tables` (one after the other) and
/// prints its report: the one table's on an unrouted configuration, else
/// a [`TablesReport`]; fails when it failed in any table.
pub(crate) async fn run_forget(
    config: &Config,
    tables: &[ServedTable],
    input: tributary_compactor::forget::ForgetInput,
    request_id: String,
    dry_run: bool,
    grace: Duration,
) -> anyhow::Result<()> {
    tributary_compactor::forget::validate_request_id(&request_id).map_err(|reason| {
        tributary_config::ConfigError::Invalid {
            key: "request id".into(),
            value: request_id.clone(),
            reason,
        }
    })?;
    let options = tributary_compactor::forget::ForgetOptions {
        request_id,
        dry_run,
        grace,
    };
    if !config.is_routed() {
        for table in tables {
            print_json(&forget(&table.config, &table.lake, &input, &options).await?)?;
        }
        return Ok(());
    }
    let mut report = TablesReport::new(&options.request_id, dry_run);
    for (done, table) in tables.iter().enumerate() {
        eprintln!(
            "forget: table {} ({}/{})",
            table.name,
            done + 1,
            tables.len()
        );
        report.record(
            &table.name,
            forget(&table.config, &table.lake, &input, &options).await,
        );
    }
    print_json(&report)?;
    fail_on(&report.failed)
}

/// An error naming the tables where a request failed, if any did.
fn fail_on(failed: &BTreeMap<String, String>) -> anyhow::Result<()> {
    if failed.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = failed.keys().map(String::as_str).collect();
    anyhow::bail!(
        "failed in table(s) {}; see the report, and run it again",
        names.join(", ")
    )
}

/// `forget --audit` over `tables`: each table's audit report (as today on an
/// unrouted configuration, else by table); fails when any found residue.
pub(crate) async fn audit(config: &Config, tables: Vec<ServedTable>) -> anyhow::Result<()> {
    let mut residue = 0;
    let mut per_table = crate::tables::PerTable::new();
    for table in tables {
        let event_time = table.config.event_time_column.as_deref();
        let report = tributary_compactor::forget::audit(&table.lake, event_time).await?;
        if !report.clean {
            residue += report.residue.len().max(1);
        }
        per_table.tables.insert(table.name, report);
    }
    if config.is_routed() {
        print_json(&per_table)?;
    } else {
        per_table.tables.values().try_for_each(print_json)?;
    }
    if residue > 0 {
        anyhow::bail!(
            "the audit found identifiers of completed requests in {residue} place(s); see the report"
        );
    }
    Ok(())
}

/// A request dropped into the inbox.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InboxRequest {
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
}

/// Runs every `<request-id>.json` in `inbox` in one pass per table (one
/// planning, one table rewrite, one verification; a report per request);
/// deletes each once complete in every table. A request that fails is
/// reported and the others still run; the command fails at the end if any
/// did.
pub(crate) async fn forget_inbox(
    config: &Config,
    tables: &[ServedTable],
    inbox: &str,
    dry_run: bool,
    grace: Duration,
) -> anyhow::Result<()> {
    use std::collections::HashMap;

    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use tributary_compactor::forget::{ForgetInput, ForgetRequest, forget_batch};

    let inbox_lake = Lake::open(&tributary_config::LakeConfig {
        table_uri: inbox.to_string(),
        s3: config.lake.s3.clone(),
        subject_columns: Vec::new(),
        ..tributary_config::LakeConfig::new("")
    })?;
    let store = inbox_lake.store();
    let objects: Vec<_> = store
        .list(None)
        .try_collect()
        .await
        .context("cannot list the inbox")?;
    let mut failed = 0;
    let mut requests = Vec::new();
    let mut locations = HashMap::new();
    for meta in objects {
        let Some(id) = meta
            .location
            .filename()
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let id = id.to_string();
        let read = async {
            tributary_compactor::forget::validate_request_id(&id).map_err(anyhow::Error::msg)?;
            let body = tributary_lake::read_object(store.as_ref(), &meta.location).await?;
            let request: InboxRequest = serde_json::from_slice(&body)
                .with_context(|| format!("inbox request {id}.json is not valid"))?;
            anyhow::Ok(ForgetInput {
                subjects: request.subjects,
                keys: request.keys,
            })
        }
        .await;
        match read {
            Ok(input) => {
                locations.insert(id.clone(), meta.location);
                requests.push(ForgetRequest { id, input });
            }
            Err(error) => {
                tracing::error!(request = %id, error = format!("{error:#}"), "erasure request failed");
                failed += 1;
            }
        }
    }
    requests.sort_by(|a, b| a.id.cmp(&b.id));
    let mut reports: BTreeMap<String, TablesReport> = requests
        .iter()
        .map(|r| (r.id.clone(), TablesReport::new(&r.id, dry_run)))
        .collect();
    for table in tables {
        let outcomes = forget_batch(&table.config, &table.lake, &requests, dry_run, grace)
            .await
            .with_context(|| {
                format!(
                    "the pass over {} inbox request(s) failed in table {}",
                    requests.len(),
                    table.name
                )
            })?;
        for (id, outcome) in outcomes {
            if let Some(report) = reports.get_mut(&id) {
                report.record(&table.name, outcome);
            }
        }
    }
    for (id, report) in reports {
        let result = async {
            if report.complete
                && !dry_run
                && let Some(location) = locations.get(&id)
            {
                store.delete(location).await?;
            }
            if config.is_routed() {
                print_json(&report)?;
                return fail_on(&report.failed);
            }
            // An unrouted configuration: the one table's report, as before.
            if let Some(error) = report.failed.values().next() {
                anyhow::bail!("{error}");
            }
            report.tables.values().try_for_each(print_json)
        }
        .await;
        if let Err(error) = result {
            tracing::error!(request = %id, error = format!("{error:#}"), "erasure request failed");
            failed += 1;
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} erasure request(s) in the inbox failed; see the log");
    }
    Ok(())
}

/// Identifiers from a file (or stdin for `-`), one per line; blank lines are
/// skipped.
pub(crate) fn read_identifiers(path: Option<&std::path::Path>) -> anyhow::Result<Vec<String>> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read identifiers from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read identifiers from {}", path.display()))?
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}
