//! Errors and answers: the `{"error_code", "message"}` error answer and how
//! registry errors become one, the JSON bodies of schemas and versions, and
//! the parsing of request bodies and query flags the handlers share.

use std::collections::HashMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::CONTENT_TYPE;
use crate::schema::{Definition, Reference, SchemaType};
use crate::store::{RegistryError, SchemaRegistry, StoredSchema, SubjectVersion};

/// An error answer: `{"error_code", "message"}`.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
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

pub(super) type ApiResult = Result<Response, ApiError>;

pub(super) fn reply(value: Json) -> Response {
    let mut response = value.to_string().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

pub(super) fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// `{"schema", "id", "guid"}` (+ `schemaType` unless Avro).
pub(super) fn schema_json(schema: &StoredSchema) -> Json {
    let mut out = json!({
        "schema": schema.definition.text(),
        "id": schema.id,
        "guid": schema.uuid.to_string(),
    });
    add_type(&mut out, &schema.definition);
    out
}

pub(super) fn version_json(version: &SubjectVersion) -> Json {
    let mut out = json!({
        "subject": version.subject,
        "id": version.schema.id,
        "version": version.version,
        "schema": version.schema.definition.text(),
        "guid": version.schema.uuid.to_string(),
    });
    add_type(&mut out, &version.schema.definition);
    out
}

/// Adds `schemaType` (unless Avro) and `references` (if any), as
/// Confluent's API does.
fn add_type(out: &mut Json, definition: &Definition) {
    let Some(map) = out.as_object_mut() else {
        return;
    };
    if definition.kind() != SchemaType::Avro {
        map.insert("schemaType".into(), definition.kind().as_str().into());
    }
    if !definition.references().is_empty() {
        map.insert("references".into(), json!(definition.references()));
    }
}

/// The body of register, look up and compatibility requests.
#[derive(Debug, Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

/// The definition a request body holds, with the versions it references.
pub(super) async fn definition(
    registry: &SchemaRegistry,
    body: &[u8],
) -> Result<Definition, ApiError> {
    let request: SchemaRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("the request body is not {{\"schema\": \"…\"}}: {e}"),
        )
    })?;
    let kind = match request.schema_type.as_deref() {
        None => SchemaType::Avro,
        Some(name) => name
            .parse()
            .map_err(|source| RegistryError::InvalidSchema { source })?,
    };
    Ok(registry
        .parse(kind, &request.schema, request.references)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Compatibility;

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
