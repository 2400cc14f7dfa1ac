//! The handlers of `/subjects`: registering and looking up a schema in a
//! subject, listing subjects and versions, reading and deleting versions.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::responses::{ApiResult, definition, flag, reply, version_json};
use super::{CONTENT_TYPE, Shared};
use crate::store::VersionRef;

pub(super) async fn register(
    State(api): Shared,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let definition = definition(&api.registry, &body).await?;
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

pub(super) async fn lookup(
    State(api): Shared,
    Path(subject): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    let definition = definition(&api.registry, &body).await?;
    let version = api
        .registry
        .lookup(&subject, &definition, flag(&query, "deleted"))
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(version_json(&version)))
}

pub(super) async fn list_subjects(
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

pub(super) async fn list_versions(
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

pub(super) async fn get_version(
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

pub(super) async fn get_version_schema(
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

pub(super) async fn referenced_by(
    State(api): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let version = VersionRef::parse(&version)?;
    let found = api
        .registry
        .version(&subject, version, true)
        .await
        .map_err(|e| api.failed(e))?;
    let ids = api
        .registry
        .referenced_by(&subject, found.version)
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(json!(ids)))
}

pub(super) async fn delete_version(
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

pub(super) async fn delete_subject(
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
