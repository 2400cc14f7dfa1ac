//! Where events go: an HTTP webhook receiving each event as a JSON `POST`,
//! a Kafka topic receiving it as a message keyed by its id, or an Amazon
//! EventBridge bus receiving it through `PutEvents` (EventBridge has no
//! idempotency key: a rule's target deduplicates by `detail.id`).

use std::time::Duration;

use hmac::{KeyInit, Mac};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tributary_aws::JsonApi;
use tributary_config::{
    EventBridgeConfig, KafkaSinkConfig, SinkConfig, WebhookConfig, librdkafka_options,
};

use super::Event;

/// Header with the event's idempotency key (its `id`).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Header with `sha256=<hex HMAC-SHA256 of the body>` when the sink has a
/// secret.
pub const SIGNATURE_HEADER: &str = "X-Tributary-Signature";

/// A configured sink, ready to deliver.
pub(crate) enum Sink {
    Webhook(Webhook),
    Kafka(Kafka),
    EventBridge(EventBridge),
}

impl Sink {
    /// The sink `config` describes; an error names what is missing.
    pub(crate) async fn new(config: &SinkConfig) -> Result<Self, String> {
        let name = &config.name;
        if let Some(webhook) = &config.webhook {
            Webhook::new(name, webhook).map(Self::Webhook)
        } else if let Some(kafka) = &config.kafka {
            Kafka::new(name, kafka).map(Self::Kafka)
        } else if let Some(eventbridge) = &config.eventbridge {
            EventBridge::new(name, eventbridge)
                .await
                .map(Self::EventBridge)
        } else {
            Err(format!(
                "sink {name} has no webhook, kafka or eventbridge table"
            ))
        }
    }

    /// The longest one delivery may take.
    pub(crate) fn timeout(&self) -> Duration {
        match self {
            Self::Webhook(webhook) => webhook.timeout,
            Self::Kafka(kafka) => kafka.timeout,
            Self::EventBridge(eventbridge) => eventbridge.timeout,
        }
    }

    /// Delivers `event`: `Ok` once the sink acknowledged it.
    pub(crate) async fn deliver(&self, event: &Event) -> Result<(), String> {
        let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        match self {
            Self::Webhook(webhook) => webhook.deliver(event, body).await,
            Self::Kafka(kafka) => kafka.deliver(event, body).await,
            Self::EventBridge(eventbridge) => eventbridge.deliver(event, body).await,
        }
    }
}

/// An HTTP endpoint.
pub(crate) struct Webhook {
    http: reqwest::Client,
    url: String,
    secret: Option<Vec<u8>>,
    timeout: Duration,
}

impl Webhook {
    fn new(name: &str, webhook: &WebhookConfig) -> Result<Self, String> {
        let secret = match &webhook.secret_env {
            Some(variable) => Some(
                std::env::var(variable)
                    .map_err(|_| {
                        format!(
                            "events.sinks.webhook.secret_env of sink {name}: environment variable `{variable}` is not set"
                        )
                    })?
                    .into_bytes(),
            ),
            None => None,
        };
        let timeout = Duration::from_millis(webhook.timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build an HTTP client for sink {name}: {e}"))?;
        Ok(Self {
            http,
            url: webhook.url.clone(),
            secret,
            timeout,
        })
    }

    /// `Ok` once the endpoint answered 2xx.
    async fn deliver(&self, event: &Event, body: Vec<u8>) -> Result<(), String> {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header(IDEMPOTENCY_HEADER, &event.id);
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, &body));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {}: {e}", self.url))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        Err(format!("POST {} answered {status}: {text}", self.url))
    }
}

/// A Kafka topic.
pub(crate) struct Kafka {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl Kafka {
    fn new(name: &str, kafka: &KafkaSinkConfig) -> Result<Self, String> {
        let section = format!("events.sinks.kafka (sink {name})");
        let options = librdkafka_options(&section, &kafka.options, &kafka.options_env)
            .map_err(|e| e.to_string())?;
        let mut config = ClientConfig::new();
        for (key, value) in options {
            config.set(key, value);
        }
        let producer = config
            .set("bootstrap.servers", &kafka.brokers)
            // Retries inside librdkafka never reorder or duplicate events.
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", kafka.timeout_ms.to_string())
            .create()
            .map_err(|e| format!("cannot create the Kafka producer of sink {name}: {e}"))?;
        Ok(Self {
            producer,
            topic: kafka.topic.clone(),
            timeout: Duration::from_millis(kafka.timeout_ms),
        })
    }

    /// `Ok` once the brokers acknowledged the message.
    async fn deliver(&self, event: &Event, body: Vec<u8>) -> Result<(), String> {
        let record = FutureRecord::to(&self.topic).key(&event.id).payload(&body);
        self.producer
            .send(record, Duration::ZERO)
            .await
            .map(|_| ())
            .map_err(|(e, _)| format!("producing to topic {}: {e}", self.topic))
    }
}

/// An Amazon EventBridge event bus.
pub(crate) struct EventBridge {
    api: JsonApi,
    bus: String,
    source: String,
    timeout: Duration,
}

impl EventBridge {
    async fn new(name: &str, config: &EventBridgeConfig) -> Result<Self, String> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let api = JsonApi::new(
            "events",
            config.region.clone(),
            config.endpoint.clone(),
            timeout,
            "events.sinks.eventbridge.region",
        )
        .await
        .map_err(|e| format!("sink {name}: {e}"))?;
        Ok(Self {
            api,
            bus: config.bus.clone(),
            source: config.source.clone(),
            timeout,
        })
    }

    /// `Ok` once EventBridge accepted the entry.
    async fn deliver(&self, event: &Event, body: Vec<u8>) -> Result<(), String> {
        let detail = String::from_utf8(body).map_err(|e| e.to_string())?;
        let request = serde_json::json!({
            "Entries": [{
                "EventBusName": self.bus,
                "Source": self.source,
                "DetailType": event.kind,
                "Detail": detail,
                "Resources": [],
            }]
        });
        let (status, answer) = self
            .api
            .call("AWSEvents.PutEvents", request.to_string())
            .await
            .map_err(|e| e.to_string())?;
        let entry = &answer["Entries"][0];
        if status.is_success() && answer["FailedEntryCount"].as_u64() == Some(0) {
            return Ok(());
        }
        let code = entry["ErrorCode"]
            .as_str()
            .or(answer["__type"].as_str())
            .unwrap_or_default();
        let message = entry["ErrorMessage"]
            .as_str()
            .or(answer["message"].as_str())
            .or(answer["Message"].as_str())
            .unwrap_or_default();
        Err(format!(
            "EventBridge PutEvents to bus {} (HTTP {status}): {code}: {message}",
            self.bus
        ))
    }
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
