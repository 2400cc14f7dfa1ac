//! `tributary registry serve`: the schema registry's REST API, with
//! `/metrics`, `/healthz` and `/readyz` on the same listener.

use std::sync::Arc;

use anyhow::Context as _;
use prometheus::Registry;
use tokio::sync::watch;
use tributary_config::{LakeConfig, RegistryConfig, RegistryFile, TokenScope};
use tributary_lake::Lake;
use tributary_schema_registry::server::{self, Auth, RegistryTelemetry, Scope};
use tributary_schema_registry::store::SchemaRegistry;

use crate::service::{self, Check};

/// Serves the registry until `shutdown` turns true, then stops accepting
/// connections and finishes the requests in flight (within the service's
/// grace period).
pub async fn serve(config: &RegistryFile, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let settings = &config.registry;
    let store = open_store(settings)?;
    let registry = Arc::new(SchemaRegistry::new(
        store,
        object_store::path::Path::default(),
        settings.name.clone(),
    ));
    let metrics = Registry::new();
    let telemetry = RegistryTelemetry::register(&metrics)?;
    let auth = auth(settings)?;
    let reachable = registry.clone();
    let store_check: Check = Arc::new(move || {
        let registry = reachable.clone();
        Box::pin(async move { registry.check_reachable().await.map_err(|e| format!("{e}")) })
    });
    let app = server::router(registry, auth, telemetry).merge(service::router(
        metrics,
        vec![("object_store", store_check)],
        shutdown.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(settings.listen_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on registry.listen_addr {}",
                settings.listen_addr
            )
        })?;
    let bound = listener.local_addr()?;
    tracing::info!(
        address = %bound,
        name = %settings.name,
        store = %settings.store_uri,
        tokens = settings.tokens.len(),
        "serving the schema registry"
    );
    let mut stop = shutdown.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|stop| *stop).await;
    });
    let grace = std::time::Duration::from_millis(config.service.shutdown_grace_ms);
    crate::drain_for(grace, shutdown, async {
        server.await.context("the schema registry server failed")
    })
    .await?;
    tracing::info!("schema registry stopped");
    Ok(())
}

/// The object store at `registry.store_uri`, built like the lake's (the
/// same S3 client settings, retries and conditional writes).
fn open_store(settings: &RegistryConfig) -> anyhow::Result<Arc<dyn object_store::ObjectStore>> {
    let lake = Lake::open(&LakeConfig {
        table_uri: settings.store_uri.clone(),
        s3: settings.s3.clone(),
        subject_columns: Vec::new(),
        ..LakeConfig::new("")
    })
    .with_context(|| format!("cannot open registry.store_uri {}", settings.store_uri))?;
    Ok(lake.store().clone())
}

fn auth(settings: &RegistryConfig) -> anyhow::Result<Auth> {
    settings
        .tokens
        .iter()
        .try_fold(Auth::open(), |auth, token| {
            let scope = match token.scope {
                TokenScope::Read => Scope::Read,
                TokenScope::Write => Scope::Write,
            };
            auth.with_token(token.name.clone(), &token.sha256, scope)
                .map_err(|reason| {
                    anyhow::Error::new(tributary_config::ConfigError::Invalid {
                        key: "registry.tokens.sha256".into(),
                        value: token.sha256.clone(),
                        reason,
                    })
                })
        })
}
