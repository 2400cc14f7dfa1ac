//! The handlers of `/config`: reading, setting and removing the global and
//! subject compatibility levels.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::Shared;
use super::responses::{ApiError, ApiResult, flag, reply};
use crate::schema::Compatibility;
use crate::store::RegistryError;

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

pub(super) async fn get_global_config(State(api): Shared) -> ApiResult {
    let level = api
        .registry
        .compatibility(None)
        .await
        .map_err(|e| api.failed(e))?
        .unwrap_or_default();
    Ok(reply(json!({ "compatibilityLevel": level.as_str() })))
}

pub(super) async fn put_global_config(State(api): Shared, body: Bytes) -> ApiResult {
    let level = level_from(&body)?;
    api.registry
        .set_compatibility(None, level)
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(json!({ "compatibility": level.as_str() })))
}

pub(super) async fn delete_global_config(State(api): Shared) -> ApiResult {
    let previous = api
        .registry
        .delete_compatibility(None)
        .await
        .map_err(|e| api.failed(e))?
        .unwrap_or_default();
    Ok(reply(json!({ "compatibilityLevel": previous.as_str() })))
}

pub(super) async fn get_subject_config(
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

pub(super) async fn put_subject_config(
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

pub(super) async fn delete_subject_config(
    State(api): Shared,
    Path(subject): Path<String>,
) -> ApiResult {
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
