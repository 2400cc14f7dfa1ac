//! `tributary forget`: one request from the command line, or every request
//! of an inbox in one pass.

use std::time::Duration;

use anyhow::Context as _;
use tributary_config::Config;
use tributary_lake::Lake;

use crate::print_json;

/// Runs one erasure request.
pub(crate) async fn run_forget(
    config: &Config,
    lake: &Lake,
    input: tributary_compactor::forget::ForgetInput,
    request_id: String,
    dry_run: bool,
    grace: Duration,
) -> anyhow::Result<tributary_compactor::forget::ForgetReport> {
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
    Ok(tributary_compactor::forget::forget(&config.compact, lake, &input, &options).await?)
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

/// Runs every `<request-id>.json` in `inbox` in one pass (one planning, one
/// table rewrite, one verification; a report per request); deletes each
/// once complete. A request that fails is reported and the others still
/// run; the command fails at the end if any did.
pub(crate) async fn forget_inbox(
    config: &Config,
    lake: &Lake,
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
    let outcomes = forget_batch(&config.compact, lake, &requests, dry_run, grace)
        .await
        .with_context(|| format!("the pass over {} inbox request(s) failed", requests.len()))?;
    for (id, outcome) in outcomes {
        let result = async {
            let report = outcome?;
            if report.complete
                && !dry_run
                && let Some(location) = locations.get(&id)
            {
                store.delete(location).await?;
            }
            print_json(&report)
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
