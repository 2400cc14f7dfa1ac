//! The four Kinesis Data Streams calls the source needs (ListShards,
//! GetShardIterator, GetRecords), made on Kinesis's JSON 1.1 API and signed
//! with SigV4, with the AWS SDK's default credential chain (environment,
//! profile, ECS task role, EKS IRSA).
//!
//! Not `aws-sdk-kinesis`: measured here (1.130, default features off,
//! `rt-tokio` + `default-https-client`, release, one job), the crate alone
//! took 87 CPU-seconds to compile, and with the smithy HTTP client stack
//! and feature variants it adds to this tree, 4.7 CPU-minutes of new
//! compilation — for three calls whose JSON is small and stable. Signing is
//! what the SDK would add, and `aws-sigv4` (already in the tree for Glue)
//! does it, as `schema-registry/src/glue.rs` does for Glue.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use serde::Deserialize;
use tributary_config::KinesisSourceConfig;

/// A failed Kinesis call: the error type Kinesis named (or none, when the
/// call did not get an answer) and its message.
#[derive(Debug, thiserror::Error)]
#[error("Kinesis {operation}: {kind}: {message}")]
pub struct ApiError {
    /// The operation, e.g. `GetRecords`.
    pub operation: &'static str,
    /// Kinesis's error type (`ProvisionedThroughputExceededException`, …),
    /// `HTTP <status>` without one, or `connection` when no answer came.
    pub kind: String,
    /// What Kinesis or the HTTP client said.
    pub message: String,
    /// HTTP status, if an answer came.
    pub status: Option<u16>,
}

impl ApiError {
    /// The shard's or stream's throughput limit was hit: slow down.
    pub fn is_throttling(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "ProvisionedThroughputExceededException"
                | "LimitExceededException"
                | "ThrottlingException"
                | "KMSThrottlingException"
        )
    }

    /// The shard iterator is older than five minutes: get a new one.
    pub fn is_expired_iterator(&self) -> bool {
        self.kind == "ExpiredIteratorException"
    }

    /// Worth retrying after a pause: throttling, no answer, or a server error.
    pub fn is_retryable(&self) -> bool {
        self.is_throttling()
            || self.status.is_none_or(|s| s >= 500)
            || matches!(
                self.kind.as_str(),
                "InternalFailure" | "ServiceUnavailable" | "ResourceInUseException"
            )
    }
}

/// A shard as ListShards describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// `shardId-000000000000`.
    pub id: String,
    /// The shard it was split from, or the first of the two it was merged from.
    pub parent: Option<String>,
    /// The second shard of a merge.
    pub adjacent_parent: Option<String>,
    /// Whether the shard is closed (split or merged away): it ends at a
    /// last sequence number, after which GetRecords reports `SHARD_END`.
    pub closed: bool,
}

impl Shard {
    /// The shard's parents (none, one after a split, two after a merge).
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.parent
            .iter()
            .chain(&self.adjacent_parent)
            .map(String::as_str)
    }
}

/// Where a shard iterator starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IteratorStart {
    /// The oldest record kept.
    TrimHorizon,
    /// After the newest record.
    Latest,
    /// Right after the record with this sequence number.
    AfterSequence(String),
}

/// One record as GetRecords returns it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its sequence number (decimal, up to 128 digits).
    pub sequence: String,
    /// Its data (base64-decoded).
    pub data: Vec<u8>,
    /// Its partition key.
    pub partition_key: String,
    /// When Kinesis received it, in milliseconds since the Unix epoch.
    pub arrival_ms: Option<i64>,
}

/// A GetRecords answer.
#[derive(Debug)]
pub struct Records {
    /// The records, in sequence order.
    pub records: Vec<Record>,
    /// Where the next call continues; `None` at `SHARD_END`.
    pub next_iterator: Option<String>,
    /// How far the records are behind the shard's tip.
    pub millis_behind_latest: Option<u64>,
    /// Bytes of record data in the answer.
    pub bytes: u64,
}

/// A Kinesis endpoint and the credentials to call it with.
pub struct KinesisApi {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: SharedCredentialsProvider,
    stream_name: String,
}

impl KinesisApi {
    /// A client for `config`'s stream: region, endpoint and credentials from
    /// the configuration and the AWS SDK's default chains.
    pub async fn new(config: &KinesisSourceConfig) -> Result<Self, ApiError> {
        let fail = |message: String| ApiError {
            operation: "setup",
            kind: "configuration".into(),
            message,
            status: None,
        };
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| fail("no AWS region: set ingest.kinesis.region or AWS_REGION".into()))?;
        let credentials = sdk
            .credentials_provider()
            .ok_or_else(|| fail("no AWS credentials provider".into()))?;
        let endpoint = config
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://kinesis.{region}.amazonaws.com"));
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| fail(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            http,
            endpoint: format!("{}/", endpoint.trim_end_matches('/')),
            region,
            credentials,
            stream_name: config.stream_name.clone(),
        })
    }

    /// Every shard of the stream, open and closed (ListShards, all pages).
    pub async fn list_shards(&self) -> Result<Vec<Shard>, ApiError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Answer {
            shards: Vec<ShardJson>,
            next_token: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct ShardJson {
            shard_id: String,
            parent_shard_id: Option<String>,
            adjacent_parent_shard_id: Option<String>,
            sequence_number_range: Range,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Range {
            ending_sequence_number: Option<String>,
        }
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // With a NextToken, ListShards rejects the stream name.
            let body = match &token {
                None => serde_json::json!({ "StreamName": self.stream_name }),
                Some(t) => serde_json::json!({ "NextToken": t }),
            };
            let answer: Answer = self.call("ListShards", body).await?;
            shards.extend(answer.shards.into_iter().map(|s| Shard {
                id: s.shard_id,
                parent: s.parent_shard_id,
                adjacent_parent: s.adjacent_parent_shard_id,
                closed: s.sequence_number_range.ending_sequence_number.is_some(),
            }));
            match answer.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(shards),
            }
        }
    }

    /// A shard iterator for `shard` starting at `start`.
    pub async fn shard_iterator(
        &self,
        shard: &str,
        start: &IteratorStart,
    ) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Answer {
            shard_iterator: String,
        }
        let mut body = serde_json::json!({ "StreamName": self.stream_name, "ShardId": shard });
        match start {
            IteratorStart::TrimHorizon => body["ShardIteratorType"] = "TRIM_HORIZON".into(),
            IteratorStart::Latest => body["ShardIteratorType"] = "LATEST".into(),
            IteratorStart::AfterSequence(seq) => {
                body["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER".into();
                body["StartingSequenceNumber"] = seq.as_str().into();
            }
        }
        let answer: Answer = self.call("GetShardIterator", body).await?;
        Ok(answer.shard_iterator)
    }

    /// Up to `limit` records from `iterator`.
    pub async fn get_records(&self, iterator: &str, limit: u32) -> Result<Records, ApiError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Answer {
            records: Vec<RecordJson>,
            next_shard_iterator: Option<String>,
            millis_behind_latest: Option<u64>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct RecordJson {
            sequence_number: String,
            data: String,
            partition_key: String,
            approximate_arrival_timestamp: Option<f64>,
        }
        let body = serde_json::json!({ "ShardIterator": iterator, "Limit": limit });
        let answer: Answer = self.call("GetRecords", body).await?;
        let mut records = Vec::with_capacity(answer.records.len());
        let mut bytes = 0;
        for r in answer.records {
            let data = base64::engine::general_purpose::STANDARD
                .decode(r.data.as_bytes())
                .map_err(|e| ApiError {
                    operation: "GetRecords",
                    kind: "invalid answer".into(),
                    message: format!(
                        "record {} has data that is not base64: {e}",
                        r.sequence_number
                    ),
                    status: None,
                })?;
            bytes += data.len() as u64;
            records.push(Record {
                sequence: r.sequence_number,
                data,
                partition_key: r.partition_key,
                arrival_ms: r
                    .approximate_arrival_timestamp
                    .map(|s| (s * 1000.0).round() as i64),
            });
        }
        Ok(Records {
            records,
            next_iterator: answer.next_shard_iterator,
            millis_behind_latest: answer.millis_behind_latest,
            bytes,
        })
    }

    /// Calls one operation of the JSON 1.1 API, signed with SigV4.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        body: serde_json::Value,
    ) -> Result<T, ApiError> {
        let fail = |kind: &str, e: &dyn std::fmt::Display| ApiError {
            operation,
            kind: kind.to_string(),
            message: e.to_string(),
            status: None,
        };
        let body = body.to_string();
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| fail("credentials", &e))?;
        let identity: Identity = credentials.into();
        let params = SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kinesis")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| fail("signing", &e))?
            .into();
        let target = format!("Kinesis_20131202.{operation}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| fail("signing", &e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| fail("signing", &e))?
            .into_parts();
        let mut request = self.http.post(&self.endpoint).body(body);
        for (name, value) in headers.into_iter().chain(instructions.headers()) {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| fail("connection", &e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| fail("connection", &e))?;
        if !status.is_success() {
            let answer: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            let kind = answer["__type"].as_str().unwrap_or_default();
            let kind = kind.rsplit('#').next().unwrap_or(kind);
            let message = answer["message"]
                .as_str()
                .or(answer["Message"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into());
            return Err(ApiError {
                operation,
                kind: if kind.is_empty() {
                    format!("HTTP {}", status.as_u16())
                } else {
                    kind.to_string()
                },
                message,
                status: Some(status.as_u16()),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiError {
            operation,
            kind: "invalid answer".into(),
            message: e.to_string(),
            status: Some(status.as_u16()),
        })
    }
}
