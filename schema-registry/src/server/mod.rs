//! The REST API: a Confluent-compatible subset over [`SchemaRegistry`].
//!
//! | method and path | answer |
//! | --- | --- |
//! | `POST /subjects/{s}/versions` | register: `{"id", "guid"}` |
//! | `POST /subjects/{s}` | look up: `{"subject", "id", "version", "schema", "guid"}` |
//! | `GET /subjects` | subject names (`?deleted=true`: soft-deleted too) |
//! | `GET /subjects/{s}/versions` | version numbers |
//! | `GET /subjects/{s}/versions/{v\|latest}` | `{"subject", "id", "version", "schema", "guid"}` |
//! | `GET /subjects/{s}/versions/{v}/schema` | the definition itself |
//! | `GET /subjects/{s}/versions/{v}/referencedby` | ids of the schemas that import it by reference |
//! | `DELETE /subjects/{s}/versions/{v}[?permanent=true]` | the version number (42206 while referenced) |
//! | `DELETE /subjects/{s}[?permanent=true]` | the version numbers |
//! | `GET /schemas/ids/{id}`, `/schemas/guids/{uuid}`, `/schemas/fingerprints/{hex16}` | `{"schema", "id", "guid"}` |
//! | `GET/PUT/DELETE /config`, `/config/{s}` | `{"compatibilityLevel"}` (`PUT` takes and answers `{"compatibility"}`) |
//! | `POST /compatibility/subjects/{s}/versions[/{v}]` | `{"is_compatible", "messages"}` |
//!
//! `schemaType` is in answers for JSON Schema only (absent means AVRO, as in
//! Confluent's API). Errors are `{"error_code", "message"}` with Confluent's
//! codes; the HTTP status is the code's first three digits. A schema that is
//! not known answers 404 with code 40403, which clients take as "confirmed
//! unknown"; any other failure (such as 500 with 50001, the store failed) as
//! "unavailable, retry".
//!
//! With [`Auth`] tokens configured every request needs `Authorization:
//! Bearer <token>`: a `read` token may call `GET`, look up and test
//! compatibility; a `write` token may also register, delete and configure.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::middleware;
use axum::routing::{get, post};
use serde_json::json;
use uuid::Uuid;

use crate::schema::{Definition, SchemaType};
use crate::store::{RegistryError, SchemaRegistry};

mod auth;
mod compatibility;
mod config;
mod responses;
mod schemas;
mod subjects;
mod telemetry;

pub use auth::{Auth, Scope};
pub use telemetry::RegistryTelemetry;

use auth::authenticate;
use compatibility::{test_all_versions, test_version};
use config::{
    delete_global_config, delete_subject_config, get_global_config, get_subject_config,
    put_global_config, put_subject_config,
};
use responses::{ApiError, reply};
use schemas::{schema_by_fingerprint, schema_by_guid, schema_by_id};
use subjects::{
    delete_subject, delete_version, get_version, get_version_schema, list_subjects, list_versions,
    lookup, referenced_by, register,
};
use telemetry::count;

/// The content type of every answer.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

struct Api {
    registry: Arc<SchemaRegistry>,
    auth: Auth,
    telemetry: RegistryTelemetry,
}

type Shared = State<Arc<Api>>;

/// Serves an open registry (no tokens) named `name` on the local directory
/// `dir` (created if missing), in this process, on a free port of 127.0.0.1, with each of
/// `schemas` (Avro) registered under `subject` in order. Returns the address
/// and the versions' UUIDs. For the quickstart and benchmarks.
pub async fn serve_local(
    dir: &std::path::Path,
    name: &str,
    subject: &str,
    schemas: &[String],
) -> Result<(std::net::SocketAddr, Vec<Uuid>), Box<dyn std::error::Error + Send + Sync>> {
    std::fs::create_dir_all(dir)?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
    let registry = Arc::new(SchemaRegistry::new(
        Arc::new(store),
        object_store::path::Path::default(),
        name,
    ));
    let mut versions = Vec::new();
    for text in schemas {
        let definition = Definition::parse(SchemaType::Avro, text)?;
        versions.push(registry.register(subject, &definition).await?.schema.uuid);
    }
    let app = router(
        registry,
        Auth::open(),
        RegistryTelemetry::register(&prometheus::Registry::new())?,
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the local schema registry stopped");
        }
    });
    Ok((addr, versions))
}

/// The API's routes over `registry`.
pub fn router(registry: Arc<SchemaRegistry>, auth: Auth, telemetry: RegistryTelemetry) -> Router {
    let api = Arc::new(Api {
        registry,
        auth,
        telemetry,
    });
    Router::new()
        .route("/", get(|| async { reply(json!({})) }))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route(
            "/schemas/types",
            get(|| async { reply(json!(["AVRO", "JSON", "PROTOBUF"])) }),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/guids/{guid}", get(schema_by_guid))
        .route("/schemas/fingerprints/{hex}", get(schema_by_fingerprint))
        .route(
            "/config",
            get(get_global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(test_all_versions),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(test_version),
        )
        .route_layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .route_layer(middleware::from_fn_with_state(api.clone(), count))
        .with_state(api)
}

impl Api {
    /// Converts a registry error, counting store failures.
    fn failed(&self, error: RegistryError) -> ApiError {
        if error.is_store_error() {
            self.telemetry.store_errors.inc();
        }
        error.into()
    }
}
