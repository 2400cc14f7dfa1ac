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
//! | `DELETE /subjects/{s}/versions/{v}[?permanent=true]` | the version number |
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

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus::{IntCounter, IntCounterVec, Opts};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::schema::{Compatibility, Definition, SchemaType};
use crate::store::{RegistryError, SchemaRegistry, StoredSchema, SubjectVersion, VersionRef};

/// The content type of every answer.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read, look up, test compatibility.
    Read,
    /// Everything, including register, delete and configure.
    Write,
}

/// The bearer tokens the API accepts, by SHA-256 digest. Empty: no
/// authentication.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<(String, [u8; 32], Scope)>,
}

impl Auth {
    /// No authentication.
    pub fn open() -> Self {
        Self::default()
    }

    /// Accepts the token whose SHA-256 is `sha256_hex`, for `scope`; `name`
    /// is for logs. Fails when the digest is not 64 hex digits.
    pub fn with_token(
        mut self,
        name: impl Into<String>,
        sha256_hex: &str,
        scope: Scope,
    ) -> Result<Self, String> {
        let mut digest = [0u8; 32];
        let valid = sha256_hex.len() == 64
            && digest.iter_mut().enumerate().all(|(i, byte)| {
                sha256_hex
                    .get(2 * i..2 * i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .map(|b| *byte = b)
                    .is_some()
            });
        if !valid {
            return Err(format!("`{sha256_hex}` is not a SHA-256 digest in hex"));
        }
        self.tokens.push((name.into(), digest, scope));
        Ok(self)
    }

    /// The scope of a presented token, if it is one of ours.
    fn scope_of(&self, token: &str) -> Option<(&str, Scope)> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.tokens
            .iter()
            .find(|(_, d, _)| *d == digest)
            .map(|(name, _, scope)| (name.as_str(), *scope))
    }
}

/// The API's metrics.
#[derive(Debug, Clone)]
pub struct RegistryTelemetry {
    requests: IntCounterVec,
    registrations: IntCounter,
    store_errors: IntCounter,
}

impl RegistryTelemetry {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "tributary_registry_requests_total",
                "Schema registry API requests, by route, method and HTTP status",
            ),
            &["route", "method", "status"],
        )?;
        let registrations = IntCounter::new(
            "tributary_registry_registrations_total",
            "Successful registrations (including repeats of a registered schema)",
        )?;
        let store_errors = IntCounter::new(
            "tributary_registry_store_errors_total",
            "Requests that failed because the object store failed",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(registrations.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        Ok(Self {
            requests,
            registrations,
            store_errors,
        })
    }
}

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
            "/schemas/types",
            get(|| async { reply(json!(["AVRO", "JSON"])) }),
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

// ----- middleware -----

async fn count(State(api): Shared, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let response = next.run(request).await;
    api.telemetry
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), response.status().as_str()])
        .inc();
    response
}

async fn authenticate(State(api): Shared, request: Request, next: Next) -> Response {
    if api.auth.tokens.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some((name, scope)) = presented.and_then(|t| api.auth.scope_of(t)) else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            40101,
            "a valid bearer token is required (Authorization: Bearer <token>)",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", |p| p.as_str());
    let needs = needed_scope(request.method(), route);
    if scope < needs {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            40301,
            format!(
                "token `{name}` has the read scope; {} {route} needs write",
                request.method()
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Reads are `GET`, looking a schema up and testing compatibility.
fn needed_scope(method: &Method, route: &str) -> Scope {
    let read = *method == Method::GET
        || (*method == Method::POST
            && (route == "/subjects/{subject}" || route.starts_with("/compatibility/")));
    if read { Scope::Read } else { Scope::Write }
}

// ----- errors and answers -----

/// An error answer: `{"error_code", "message"}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        let code = error.code();
        let status_digits = if code >= 1000 { code / 100 } else { code };
        let status = u16::try_from(status_digits)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if error.is_store_error() {
            tracing::error!(error = %ErrorChain(&error), "schema registry store error");
        }
        Self {
            status,
            code,
            message: ErrorChain(&error).to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error_code": self.code, "message": self.message });
        let mut response = (self.status, body.to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

/// An error and its sources, `a: b: c`.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

type ApiResult = Result<Response, ApiError>;

fn reply(value: Json) -> Response {
    let mut response = value.to_string().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// `{"schema", "id", "guid"}` (+ `schemaType` unless Avro).
fn schema_json(schema: &StoredSchema) -> Json {
    let mut out = json!({
        "schema": schema.definition.text(),
        "id": schema.id,
        "guid": schema.uuid.to_string(),
    });
    add_type(&mut out, schema.definition.kind());
    out
}

fn version_json(version: &SubjectVersion) -> Json {
    let mut out = json!({
        "subject": version.subject,
        "id": version.schema.id,
        "version": version.version,
        "schema": version.schema.definition.text(),
        "guid": version.schema.uuid.to_string(),
    });
    add_type(&mut out, version.schema.definition.kind());
    out
}

fn add_type(out: &mut Json, kind: SchemaType) {
    if kind != SchemaType::Avro
        && let Some(map) = out.as_object_mut()
    {
        map.insert("schemaType".into(), kind.as_str().into());
    }
}

/// The body of register, look up and compatibility requests.
#[derive(Debug, Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    references: Option<Vec<Json>>,
}

fn definition(subject: &str, body: &[u8]) -> Result<Definition, ApiError> {
    let request: SchemaRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("the request body is not {{\"schema\": \"…\"}}: {e}"),
        )
    })?;
    if request.references.as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(RegistryError::ReferencesUnsupported {
            subject: subject.to_string(),
        }
        .into());
    }
    let kind = match request.schema_type.as_deref() {
        None => SchemaType::Avro,
        Some(name) => name
            .parse()
            .map_err(|source| RegistryError::InvalidSchema { source })?,
    };
    Ok(SchemaRegistry::parse(kind, &request.schema)?)
}

// ----- subjects and versions -----

async fn register(State(api): Shared, Path(subject): Path<String>, body: Bytes) -> ApiResult {
    let definition = definition(&subject, &body)?;
    let version = api
        .registry
        .register(&subject, &definition)
        .await
        .map_err(|e| api.failed(e))?;
    api.telemetry.registrations.inc();
    Ok(reply(json!({
        "id": version.schema.id,
        "guid": version.schema.uuid.to_string(),
    })))
}

async fn lookup(
    State(api): Shared,
    Path(subject): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    let definition = definition(&subject, &body)?;
    let version = api
        .registry
        .lookup(&subject, &definition, flag(&query, "deleted"))
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(version_json(&version)))
}

async fn list_subjects(
    State(api): Shared,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let subjects = api
        .registry
        .subjects(flag(&query, "deleted"))
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(json!(subjects)))
}

async fn list_versions(
    State(api): Shared,
    Path(subject): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let versions = api
        .registry
        .versions(&subject, flag(&query, "deleted"))
        .await
        .map_err(|e| api.failed(e))?;
    let numbers: Vec<u32> = versions.iter().map(|v| v.version).collect();
    Ok(reply(json!(numbers)))
}

async fn get_version(
    State(api): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let version = VersionRef::parse(&version)?;
    let found = api
        .registry
        .version(&subject, version, flag(&query, "deleted"))
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(version_json(&found)))
}

async fn get_version_schema(
    State(api): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let version = VersionRef::parse(&version)?;
    let found = api
        .registry
        .version(&subject, version, flag(&query, "deleted"))
        .await
        .map_err(|e| api.failed(e))?;
    let mut response = found.schema.definition.text().to_string().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

async fn delete_version(
    State(api): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let version = VersionRef::parse(&version)?;
    let deleted = api
        .registry
        .delete_version(&subject, version, flag(&query, "permanent"))
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(json!(deleted)))
}

async fn delete_subject(
    State(api): Shared,
    Path(subject): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let deleted = api
        .registry
        .delete_subject(&subject, flag(&query, "permanent"))
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(json!(deleted)))
}

// ----- schemas -----

async fn schema_by_id(State(api): Shared, Path(id): Path<String>) -> ApiResult {
    let Ok(id) = id.parse::<u32>() else {
        return Err(not_found(format!("id {id}")));
    };
    let schema = api
        .registry
        .schema_by_id(id)
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(schema_json(&schema)))
}

async fn schema_by_guid(State(api): Shared, Path(guid): Path<String>) -> ApiResult {
    let Ok(uuid) = Uuid::parse_str(&guid) else {
        return Err(not_found(format!("guid {guid}")));
    };
    let schema = api
        .registry
        .schema_by_uuid(uuid)
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(schema_json(&schema)))
}

async fn schema_by_fingerprint(State(api): Shared, Path(hex): Path<String>) -> ApiResult {
    let parsed = (hex.len() == 16)
        .then(|| u64::from_str_radix(&hex, 16).ok())
        .flatten();
    let Some(fingerprint) = parsed else {
        return Err(not_found(format!("fingerprint {hex}")));
    };
    let schema = api
        .registry
        .schema_by_fingerprint(fingerprint)
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(schema_json(&schema)))
}

fn not_found(what: String) -> ApiError {
    RegistryError::SchemaNotFound { what }.into()
}

// ----- configuration -----

#[derive(Debug, Deserialize)]
struct ConfigRequest {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

fn level_from(body: &[u8]) -> Result<Compatibility, ApiError> {
    let request: ConfigRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            format!("the request body is not {{\"compatibility\": \"…\"}}: {e}"),
        )
    })?;
    let Some(level) = request.compatibility.or(request.compatibility_level) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            "the request body has no \"compatibility\"",
        ));
    };
    Ok(level
        .parse()
        .map_err(|source| RegistryError::InvalidCompatibility { source })?)
}

async fn get_global_config(State(api): Shared) -> ApiResult {
    let level = api
        .registry
        .compatibility(None)
        .await
        .map_err(|e| api.failed(e))?
        .unwrap_or_default();
    Ok(reply(json!({ "compatibilityLevel": level.as_str() })))
}

async fn put_global_config(State(api): Shared, body: Bytes) -> ApiResult {
    let level = level_from(&body)?;
    api.registry
        .set_compatibility(None, level)
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(json!({ "compatibility": level.as_str() })))
}

async fn delete_global_config(State(api): Shared) -> ApiResult {
    let previous = api
        .registry
        .delete_compatibility(None)
        .await
        .map_err(|e| api.failed(e))?
        .unwrap_or_default();
    Ok(reply(json!({ "compatibilityLevel": previous.as_str() })))
}

async fn get_subject_config(
    State(api): Shared,
    Path(subject): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let level = if flag(&query, "defaultToGlobal") {
        api.registry.effective_compatibility(&subject).await
    } else {
        api.registry
            .compatibility(Some(&subject))
            .await
            .and_then(|level| {
                level.ok_or(RegistryError::SubjectCompatibilityNotConfigured {
                    subject: subject.clone(),
                })
            })
    }
    .map_err(|e| api.failed(e))?;
    Ok(reply(json!({ "compatibilityLevel": level.as_str() })))
}

async fn put_subject_config(
    State(api): Shared,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let level = level_from(&body)?;
    api.registry
        .set_compatibility(Some(&subject), level)
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(json!({ "compatibility": level.as_str() })))
}

async fn delete_subject_config(State(api): Shared, Path(subject): Path<String>) -> ApiResult {
    let previous = api
        .registry
        .delete_compatibility(Some(&subject))
        .await
        .map_err(|e| api.failed(e))?;
    let Some(previous) = previous else {
        return Err(api.failed(RegistryError::SubjectNotFound { subject }));
    };
    Ok(reply(json!({ "compatibilityLevel": previous.as_str() })))
}

// ----- compatibility tests -----

async fn test_all_versions(
    State(api): Shared,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let definition = definition(&subject, &body)?;
    let messages = api
        .registry
        .test_compatibility(&subject, None, &definition)
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(compatibility_json(messages)))
}

async fn test_version(
    State(api): Shared,
    Path((subject, version)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let version = VersionRef::parse(&version)?;
    let definition = definition(&subject, &body)?;
    let messages = api
        .registry
        .test_compatibility(&subject, Some(version), &definition)
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(compatibility_json(messages)))
}

fn compatibility_json(messages: Vec<String>) -> Json {
    json!({ "is_compatible": messages.is_empty(), "messages": messages })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_methods_and_routes() {
        assert_eq!(needed_scope(&Method::GET, "/subjects"), Scope::Read);
        assert_eq!(
            needed_scope(&Method::POST, "/subjects/{subject}"),
            Scope::Read
        );
        assert_eq!(
            needed_scope(&Method::POST, "/compatibility/subjects/{subject}/versions"),
            Scope::Read
        );
        assert_eq!(
            needed_scope(&Method::POST, "/subjects/{subject}/versions"),
            Scope::Write
        );
        assert_eq!(needed_scope(&Method::PUT, "/config"), Scope::Write);
        assert_eq!(
            needed_scope(&Method::DELETE, "/subjects/{subject}"),
            Scope::Write
        );
    }

    #[test]
    fn tokens_are_matched_by_digest() {
        // SHA-256("secret").
        let digest = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        let auth = Auth::open().with_token("ci", digest, Scope::Read).unwrap();
        assert_eq!(auth.scope_of("secret"), Some(("ci", Scope::Read)));
        assert_eq!(auth.scope_of("Secret"), None);
        assert!(Auth::open().with_token("x", "secret", Scope::Read).is_err());
    }

    #[test]
    fn error_codes_give_statuses() {
        let error: ApiError = RegistryError::SubjectNotFound {
            subject: "s".into(),
        }
        .into();
        assert_eq!((error.status.as_u16(), error.code), (404, 40401));
        assert!(error.message.contains("`s`"));
        let error: ApiError = RegistryError::Incompatible {
            subject: "s".into(),
            level: Compatibility::Backward,
            messages: vec!["x".into()],
        }
        .into();
        assert_eq!((error.status.as_u16(), error.code), (409, 409));
    }
}
