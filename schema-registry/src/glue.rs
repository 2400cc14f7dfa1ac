//! AWS Glue Schema Registry as a backend: `GetSchemaVersion` by UUID, a
//! SigV4-signed call to Glue's JSON API ([`tributary_aws`]).

use std::time::Duration;

use tributary_aws::JsonApi;

use crate::client::{Answer, Unavailable, describe};
use crate::schema::SchemaType;
use tributary_decode::wire::SchemaRef;

/// A Glue Schema Registry endpoint and the credentials to call it with.
pub(crate) struct Glue {
    api: JsonApi,
}

impl Glue {
    pub(crate) async fn new(
        region: Option<String>,
        endpoint: Option<String>,
        timeout: Duration,
    ) -> Result<Self, Unavailable> {
        let api = JsonApi::new(
            "glue",
            region,
            endpoint,
            timeout,
            "ingest.registry.glue.region",
        )
        .await
        .map_err(|e| Unavailable(e.to_string()))?;
        Ok(Self { api })
    }

    /// Fetches a schema version by UUID; other references are unknown to Glue.
    pub(crate) async fn fetch(&self, reference: SchemaRef) -> Result<Answer, Unavailable> {
        let SchemaRef::Uuid(uuid) = reference else {
            return Ok(Answer::Unknown(format!(
                "{} cannot be resolved: AWS Glue Schema Registry names schemas by UUID only",
                describe(reference)
            )));
        };
        let body = serde_json::json!({ "SchemaVersionId": uuid.to_string() }).to_string();
        let (status, answer) = self
            .api
            .call("AWSGlue.GetSchemaVersion", body)
            .await
            .map_err(|e| Unavailable(e.to_string()))?;
        if !status.is_success() {
            let kind = answer["__type"].as_str().unwrap_or_default();
            let kind = kind.rsplit('#').next().unwrap_or(kind);
            let message = answer["message"]
                .as_str()
                .or(answer["Message"].as_str())
                .unwrap_or_default();
            return match kind {
                "EntityNotFoundException" | "InvalidInputException" => {
                    Ok(Answer::Unknown(format!(
                        "AWS Glue Schema Registry does not know schema version {uuid}: {kind}: {message}"
                    )))
                }
                _ => Err(Unavailable(format!(
                    "AWS Glue GetSchemaVersion {uuid}: HTTP {status}: {kind}: {message}"
                ))),
            };
        }
        let kind = match answer["DataFormat"].as_str().map(str::parse::<SchemaType>) {
            Some(Ok(kind)) => kind,
            _ => {
                return Ok(Answer::Unknown(format!(
                    "schema version {uuid} has data format {:?}; AVRO, JSON and PROTOBUF are \
                     supported",
                    answer["DataFormat"]
                )));
            }
        };
        match answer["SchemaDefinition"].as_str() {
            Some(text) => Ok(Answer::found(kind, text.to_string())),
            None => Ok(Answer::Unknown(format!(
                "AWS Glue returned schema version {uuid} without a definition"
            ))),
        }
    }
}
