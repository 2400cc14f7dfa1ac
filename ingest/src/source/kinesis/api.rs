//! The three Kinesis Data Streams calls the source needs (ListShards,
//! GetShardIterator, GetRecords), made through `aws-sdk-kinesis`: the SDK's
//! default credential chain (environment, profile, ECS task role, EKS IRSA,
//! with refresh), region chain, endpoint resolution (FIPS and dual-stack
//! through `AWS_USE_FIPS_ENDPOINT` / `AWS_USE_DUALSTACK_ENDPOINT`, or an
//! explicit `endpoint`), retry configuration and typed errors.
//!
//! Two retry layers, on purpose: the SDK retries each call (standard mode,
//! `max_attempts` tries, its own backoff and retry quota); when it gives up
//! on an error that can pass (throttling, a timeout, a server error), the
//! shard reader pauses with its own backoff up to `max_backoff_ms` and tries
//! again, stopping at once if its lease is lost or the process shuts down,
//! and counting the retry in `tributary_kinesis_retries_total`.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::get_records::GetRecordsError;
use aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorError;
use aws_sdk_kinesis::operation::list_shards::ListShardsError;
use aws_sdk_kinesis::types::ShardIteratorType;
use tributary_config::KinesisSourceConfig;

/// A failed Kinesis call.
#[derive(Debug, thiserror::Error)]
#[error("Kinesis {operation}: {kind}: {message}")]
pub struct ApiError {
    /// The operation, e.g. `GetRecords`.
    pub operation: &'static str,
    /// Kinesis's error code (`ProvisionedThroughputExceededException`, …),
    /// `HTTP <status>` without one, or what failed before an answer came
    /// (`timeout`, `connection`, `request`, `configuration`).
    pub kind: String,
    /// What Kinesis or the SDK said.
    pub message: String,
    class: Class,
}

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A throughput limit was hit: slow down and try again.
    Throttled,
    /// The shard iterator is older than five minutes: get a new one.
    ExpiredIterator,
    /// No answer, or a server error: try again after a pause.
    Transient,
    /// Retrying will not help (access denied, no such stream, bad request).
    Fatal,
}

impl ApiError {
    /// The shard's or stream's throughput limit was hit: slow down.
    pub fn is_throttling(&self) -> bool {
        self.class == Class::Throttled
    }

    /// The shard iterator is older than five minutes: get a new one.
    pub fn is_expired_iterator(&self) -> bool {
        self.class == Class::ExpiredIterator
    }

    /// Worth retrying after a pause: throttling, no answer, or a server error.
    pub fn is_retryable(&self) -> bool {
        matches!(self.class, Class::Throttled | Class::Transient)
    }

    /// The `kind` label of `tributary_kinesis_retries_total`: the throttling
    /// error's code, `connection` (no answer) or `server`.
    pub fn retry_label(&self) -> &str {
        match self.class {
            Class::Throttled => &self.kind,
            _ if matches!(self.kind.as_str(), "timeout" | "connection") => "connection",
            _ => "server",
        }
    }

    fn setup(message: String) -> Self {
        Self {
            operation: "setup",
            kind: "configuration".into(),
            message,
            class: Class::Fatal,
        }
    }

    /// Classifies an SDK error: `classify` names the operation's typed
    /// errors that can pass; any other answer with a 5xx status is transient
    /// too, and so is a call that got no answer.
    fn from_sdk<E>(
        operation: &'static str,
        error: SdkError<E, HttpResponse>,
        classify: impl Fn(&E) -> Class,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let detail = aws_sdk_kinesis::error::DisplayErrorContext(&error).to_string();
        let (kind, class) = match &error {
            SdkError::ServiceError(context) => {
                let e = context.err();
                let class = match classify(e) {
                    Class::Fatal if context.raw().status().is_server_error() => Class::Transient,
                    class => class,
                };
                let kind = e.code().unwrap_or("unknown error").to_string();
                let message = e.message().map_or(detail, str::to_string);
                return Self {
                    operation,
                    kind,
                    message,
                    class,
                };
            }
            SdkError::TimeoutError(_) => ("timeout", Class::Transient),
            SdkError::DispatchFailure(failure) if failure.is_user() => ("request", Class::Fatal),
            SdkError::DispatchFailure(_) => ("connection", Class::Transient),
            SdkError::ResponseError(_) => ("invalid answer", Class::Transient),
            _ => ("request", Class::Fatal),
        };
        Self {
            operation,
            kind: kind.into(),
            message: detail,
            class,
        }
    }
}

/// Throttling codes Kinesis may answer with outside an operation's model.
fn throttling_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ThrottlingException"
                | "Throttling"
                | "RequestLimitExceeded"
                | "LimitExceededException"
                | "ProvisionedThroughputExceededException"
        )
    )
}

/// What to do about an error code no operation's model names: slow down on
/// throttling, retry a stream being updated, else give up.
fn unmodelled(code: Option<&str>) -> Class {
    if throttling_code(code) {
        Class::Throttled
    } else if code == Some("ResourceInUseException") {
        Class::Transient
    } else {
        Class::Fatal
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
    /// Its data.
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

/// A Kinesis client for one stream.
pub struct KinesisApi {
    client: Client,
    stream_name: String,
}

impl KinesisApi {
    /// A client for `config`'s stream: region, endpoint, credentials and
    /// retries from the configuration and the AWS SDK's default chains.
    pub async fn new(config: &KinesisSourceConfig) -> Result<Self, ApiError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let timeout = Duration::from_millis(config.request_timeout_ms);
        loader = loader.timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(timeout)
                .operation_attempt_timeout(timeout)
                .build(),
        );
        if let Some(attempts) = config.max_attempts {
            loader = loader.retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(attempts),
            );
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(ApiError::setup(
                "no AWS region: set ingest.kinesis.region or AWS_REGION".into(),
            ));
        }
        let mut kinesis = aws_sdk_kinesis::config::Builder::from(&sdk);
        if let Some(endpoint) = &config.endpoint {
            kinesis = kinesis.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(kinesis.build()),
            stream_name: config.stream_name.clone(),
        })
    }

    /// Every shard of the stream, open and closed (ListShards, all pages).
    pub async fn list_shards(&self) -> Result<Vec<Shard>, ApiError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // With a NextToken, ListShards rejects the stream name.
            let request = match token {
                None => self.client.list_shards().stream_name(&self.stream_name),
                Some(t) => self.client.list_shards().next_token(t),
            };
            let answer = request.send().await.map_err(|e| {
                ApiError::from_sdk("ListShards", e, |e| match e {
                    ListShardsError::LimitExceededException(_) => Class::Throttled,
                    // The listing restarts in the next round.
                    ListShardsError::ResourceInUseException(_)
                    | ListShardsError::ExpiredNextTokenException(_) => Class::Transient,
                    e => unmodelled(e.code()),
                })
            })?;
            shards.extend(answer.shards.unwrap_or_default().into_iter().map(|s| {
                Shard {
                    closed: s
                        .sequence_number_range
                        .is_some_and(|r| r.ending_sequence_number.is_some()),
                    id: s.shard_id,
                    parent: s.parent_shard_id,
                    adjacent_parent: s.adjacent_parent_shard_id,
                }
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
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream_name)
            .shard_id(shard);
        let request = match start {
            IteratorStart::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            IteratorStart::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            IteratorStart::AfterSequence(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
        };
        let answer = request.send().await.map_err(|e| {
            ApiError::from_sdk("GetShardIterator", e, |e| match e {
                GetShardIteratorError::ProvisionedThroughputExceededException(_) => {
                    Class::Throttled
                }
                GetShardIteratorError::InternalFailureException(_) => Class::Transient,
                e => unmodelled(e.code()),
            })
        })?;
        answer.shard_iterator.ok_or_else(|| ApiError {
            operation: "GetShardIterator",
            kind: "invalid answer".into(),
            message: format!("no shard iterator for {shard}"),
            class: Class::Transient,
        })
    }

    /// Up to `limit` records from `iterator`.
    pub async fn get_records(&self, iterator: &str, limit: u32) -> Result<Records, ApiError> {
        let answer = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| {
                ApiError::from_sdk("GetRecords", e, |e| match e {
                    GetRecordsError::ProvisionedThroughputExceededException(_)
                    | GetRecordsError::KmsThrottlingException(_) => Class::Throttled,
                    GetRecordsError::ExpiredIteratorException(_) => Class::ExpiredIterator,
                    GetRecordsError::InternalFailureException(_) => Class::Transient,
                    e => unmodelled(e.code()),
                })
            })?;
        let mut bytes = 0;
        let records = answer
            .records
            .into_iter()
            .map(|r| {
                let data = r.data.into_inner();
                bytes += data.len() as u64;
                Record {
                    sequence: r.sequence_number,
                    data,
                    partition_key: r.partition_key.unwrap_or_default(),
                    arrival_ms: r
                        .approximate_arrival_timestamp
                        .and_then(|t| t.to_millis().ok()),
                }
            })
            .collect();
        Ok(Records {
            records,
            next_iterator: answer.next_shard_iterator,
            millis_behind_latest: answer
                .millis_behind_latest
                .map(|ms| u64::try_from(ms).unwrap_or(0)),
            bytes,
        })
    }
}
