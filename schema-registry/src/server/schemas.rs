//! The handlers of `/schemas`: a schema by Confluent id, UUID or Avro
//! fingerprint.

use axum::extract::{Path, State};
use uuid::Uuid;

use super::Shared;
use super::responses::{ApiError, ApiResult, reply, schema_json};
use crate::store::RegistryError;

pub(super) async fn schema_by_id(State(api): Shared, Path(id): Path<String>) -> ApiResult {
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

pub(super) async fn schema_by_guid(State(api): Shared, Path(guid): Path<String>) -> ApiResult {
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

pub(super) async fn schema_by_fingerprint(
    State(api): Shared,
    Path(hex): Path<String>,
) -> ApiResult {
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
