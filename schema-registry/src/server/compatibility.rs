//! The handlers of `/compatibility`: testing a definition against a
//! subject's versions, or against one of them.

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Value as Json, json};

use super::Shared;
use super::responses::{ApiResult, definition, reply};
use crate::store::VersionRef;

pub(super) async fn test_all_versions(
    State(api): Shared,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let definition = definition(&api.registry, &body).await?;
    let messages = api
        .registry
        .test_compatibility(&subject, None, &definition)
        .await
        .map_err(|e| api.failed(e))?;
    Ok(reply(compatibility_json(messages)))
}

pub(super) async fn test_version(
    State(api): Shared,
    Path((subject, version)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let version = VersionRef::parse(&version)?;
    let definition = definition(&api.registry, &body).await?;
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
