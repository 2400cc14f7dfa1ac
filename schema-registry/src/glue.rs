//! AWS Glue Schema Registry as a backend: `GetSchemaVersion` by UUID, a
//! SigV4-signed call to Glue's JSON API with the AWS SDK's default
//! credential chain (environment, profile, ECS task role, EKS IRSA).

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;

use crate::client::{Answer, Unavailable, describe};
use crate::schema::SchemaType;
use tributary_decode::wire::SchemaRef;

/// A Glue Schema Registry endpoint and the credentials to call it with.
pub(crate) struct Glue {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: SharedCredentialsProvider,
}

impl Glue {
    pub(crate) async fn new(
        region: Option<String>,
        endpoint: Option<String>,
        timeout: Duration,
    ) -> Result<Self, Unavailable> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region));
        }
        let config = loader.load().await;
        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| Unavailable("no AWS region: set ingest.registry.glue.region".into()))?;
        let credentials = config
            .credentials_provider()
            .ok_or_else(|| Unavailable("no AWS credentials provider".into()))?;
        let endpoint = endpoint.unwrap_or_else(|| format!("https://glue.{region}.amazonaws.com"));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| Unavailable(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            http,
            endpoint: format!("{}/", endpoint.trim_end_matches('/')),
            region,
            credentials,
        })
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
        let (status, answer) = self.call("AWSGlue.GetSchemaVersion", body).await?;
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
        let kind = match answer["DataFormat"].as_str() {
            Some("AVRO") => SchemaType::Avro,
            Some("JSON") => SchemaType::Json,
            other => {
                return Ok(Answer::Unknown(format!(
                    "schema version {uuid} has data format {other:?}; AVRO and JSON are supported"
                )));
            }
        };
        match answer["SchemaDefinition"].as_str() {
            Some(text) => Ok(Answer::Found(kind, text.to_string())),
            None => Ok(Answer::Unknown(format!(
                "AWS Glue returned schema version {uuid} without a definition"
            ))),
        }
    }

    /// Calls one operation of Glue's JSON 1.1 API, signed with SigV4.
    async fn call(
        &self,
        target: &str,
        body: String,
    ) -> Result<(reqwest::StatusCode, serde_json::Value), Unavailable> {
        let fail = |e: &dyn std::fmt::Display| Unavailable(format!("AWS Glue {target}: {e}"));
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| fail(&e))?;
        let identity: Identity = credentials.into();
        let params = SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("glue")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| fail(&e))?
            .into();
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target),
        ];
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| fail(&e))?;
        let (instructions, _) = sign(signable, &params).map_err(|e| fail(&e))?.into_parts();
        let mut request = self.http.post(&self.endpoint).body(body);
        for (name, value) in headers.into_iter().chain(instructions.headers()) {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| fail(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| fail(&e))?;
        let answer = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if !status.is_success() && answer.is_null() {
            return Err(fail(&format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )));
        }
        Ok((status, answer))
    }
}
