//! Signed calls to AWS JSON 1.1 APIs: one HTTP `POST` per operation, signed
//! with SigV4 using the AWS SDK's default credential chain and region
//! (environment, profile, ECS task role, EKS IRSA).
//!
//! Used where Tributary makes one or two calls of a service (Glue's
//! `GetSchemaVersion`, EventBridge's `PutEvents`): the SDK's generated
//! client of a service takes minutes of CPU to compile, and everything this
//! needs is already in the tree through `deltalake-aws`.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;

/// What a failure's cause is boxed as.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a call could not be made or answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither the configuration nor the SDK's chain names a region.
    #[error("no AWS region: set {key}")]
    NoRegion {
        /// The configuration key that sets it.
        key: String,
    },
    /// The SDK's chain has no credentials provider.
    #[error("no AWS credentials provider")]
    NoCredentials,
    /// The HTTP client could not be built.
    #[error("cannot build an HTTP client")]
    Client(#[source] reqwest::Error),
    /// The call failed before an answer: credentials, signing, the
    /// connection.
    #[error("AWS {target}: {source}")]
    Call {
        /// The operation, e.g. `AWSEvents.PutEvents`.
        target: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A failure status with an answer that is not JSON.
    #[error("AWS {target}: HTTP {status}: {body}")]
    Status {
        /// The operation.
        target: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The answer's start.
        body: String,
    },
}

/// One AWS service's JSON API in one region.
pub struct JsonApi {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    service: &'static str,
    credentials: SharedCredentialsProvider,
}

impl JsonApi {
    /// The API of `service` (its signing name and endpoint prefix, e.g.
    /// `glue`, `events`) in `region` (else the SDK chain's region; the error
    /// names `region_key` when there is none), at `endpoint` (else the
    /// service's regional endpoint), each call limited to `timeout`.
    pub async fn new(
        service: &'static str,
        region: Option<String>,
        endpoint: Option<String>,
        timeout: Duration,
        region_key: &str,
    ) -> Result<Self, Error> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region));
        }
        let config = loader.load().await;
        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| Error::NoRegion {
                key: region_key.to_string(),
            })?;
        let credentials = config.credentials_provider().ok_or(Error::NoCredentials)?;
        let endpoint =
            endpoint.unwrap_or_else(|| format!("https://{service}.{region}.amazonaws.com"));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(Error::Client)?;
        Ok(Self {
            http,
            endpoint: format!("{}/", endpoint.trim_end_matches('/')),
            region,
            service,
            credentials,
        })
    }

    /// Calls operation `target` (e.g. `AWSGlue.GetSchemaVersion`) with the
    /// JSON `body`: the HTTP status and the JSON answer (`null` for an empty
    /// answer to a success). A failure status without a JSON answer is an
    /// error that quotes the answer's start.
    pub async fn call(
        &self,
        target: &str,
        body: String,
    ) -> Result<(reqwest::StatusCode, serde_json::Value), Error> {
        let fail = |source: BoxError| Error::Call {
            target: target.to_string(),
            source,
        };
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| fail(e.into()))?;
        let identity: Identity = credentials.into();
        let params = SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| fail(e.into()))?
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
        .map_err(|e| fail(e.into()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| fail(e.into()))?
            .into_parts();
        let mut request = self.http.post(&self.endpoint).body(body);
        for (name, value) in headers.into_iter().chain(instructions.headers()) {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| fail(e.into()))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| fail(e.into()))?;
        let answer = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if !status.is_success() && answer.is_null() {
            return Err(Error::Status {
                target: target.to_string(),
                status,
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
            });
        }
        Ok((status, answer))
    }
}
