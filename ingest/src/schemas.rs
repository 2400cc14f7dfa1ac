//! The schemas of a batch's framed messages, resolved before the batch is
//! decoded: decoding runs off the reactor and never waits for the registry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tributary_config::{
    FlattenConfig, IngestConfig, RESERVED_COLUMNS, RegistryClientConfig, SOURCE_COLUMN_PREFIXES,
};
use tributary_decode::avro::FlattenRules;
use tributary_decode::wire::SchemaRef;
use tributary_schema_registry::client::{Client, ClientOptions, Lookup, Prepared, describe};

use crate::batch::SourceItem;
use crate::error::{Error, Result};

/// Resolved schemas by reference.
#[derive(Debug, Default, Clone)]
pub struct Schemas {
    resolved: HashMap<SchemaRef, Lookup>,
}

impl Schemas {
    /// Resolves every schema named by `items`. While the registry is
    /// unavailable it waits and retries (calling `on_retry` each time); it
    /// returns only once every reference is found or confirmed unknown.
    pub async fn resolve(
        client: Option<&Client>,
        items: &[SourceItem],
        mut on_retry: impl FnMut(SchemaRef, &str, Duration),
    ) -> Self {
        let mut resolved = HashMap::new();
        let Some(client) = client else {
            return Self { resolved };
        };
        for item in items {
            let SourceItem::Message(message) = item else {
                continue;
            };
            let Some(reference) = message.schema() else {
                continue;
            };
            if resolved.contains_key(&reference) {
                continue;
            }
            let lookup = client
                .resolve_waiting(reference, |e, wait| on_retry(reference, &e.0, wait))
                .await;
            resolved.insert(reference, lookup);
        }
        Self { resolved }
    }

    /// The prepared schema `reference` names, or why there is none.
    pub fn get(&self, reference: SchemaRef) -> std::result::Result<&Arc<Prepared>, String> {
        match self.resolved.get(&reference) {
            Some(Lookup::Found(prepared)) => Ok(prepared),
            Some(Lookup::Unknown(reason)) => Err(reason.to_string()),
            None => Err(format!(
                "the message names {} but no [ingest.registry] is configured",
                describe(reference)
            )),
        }
    }
}

/// The rules Avro plans are compiled for: the same explode path and reserved
/// names as JSON flattening.
pub fn flatten_rules(config: &FlattenConfig) -> FlattenRules {
    let strings = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
    FlattenRules {
        explode: config
            .explode
            .as_deref()
            .map(|p| p.split('.').map(str::to_string).collect())
            .unwrap_or_default(),
        reserved: strings(&RESERVED_COLUMNS),
        reserved_prefixes: strings(&SOURCE_COLUMN_PREFIXES),
    }
}

/// The registry client `config` asks for, if any.
pub async fn client(config: &IngestConfig) -> Result<Option<Client>> {
    client_for(config, &config.flatten).await
}

/// The registry client `config` asks for, compiling plans for `flatten`
/// (a routed table's own flattening), if any.
pub async fn client_for(config: &IngestConfig, flatten: &FlattenConfig) -> Result<Option<Client>> {
    let Some(registry) = &config.registry else {
        return Ok(None);
    };
    let options = ClientOptions {
        rules: flatten_rules(flatten),
        reader: reader_schema(registry)?,
        capacity: registry.cache_capacity,
        unknown_ttl: Duration::from_millis(registry.unknown_retry_ms),
        max_backoff: Duration::from_millis(registry.max_backoff_ms),
    };
    let timeout = Duration::from_millis(registry.request_timeout_ms);
    if let Some(glue) = &registry.glue {
        let client = Client::glue(glue.region.clone(), glue.endpoint.clone(), timeout, options)
            .await
            .map_err(|e| Error::Registry {
                message: e.to_string(),
            })?;
        return Ok(Some(client));
    }
    let url = registry.url.as_deref().unwrap_or_default();
    let token = match &registry.token_env {
        Some(name) => Some(std::env::var(name).map_err(|_| Error::Registry {
            message: format!(
                "ingest.registry.token_env names environment variable `{name}`, which is not set"
            ),
        })?),
        None => None,
    };
    let client = Client::http(url, token, timeout, options).map_err(|e| Error::Registry {
        message: e.to_string(),
    })?;
    Ok(Some(client))
}

fn reader_schema(
    registry: &RegistryClientConfig,
) -> Result<Option<tributary_schema_registry::apache_avro::Schema>> {
    let Some(path) = &registry.reader_schema else {
        return Ok(None);
    };
    let bad = |why: String| Error::Registry {
        message: format!("ingest.registry.reader_schema `{}`: {why}", path.display()),
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    tributary_schema_registry::apache_avro::Schema::parse_str(&text)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}
