//! Where events go: an HTTP webhook receiving each event as a JSON `POST`.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use tributary_config::SinkConfig;

use super::Event;

/// Header with the event's idempotency key (its `id`).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Header with `sha256=<hex HMAC-SHA256 of the body>` when the sink has a
/// secret.
pub const SIGNATURE_HEADER: &str = "X-Tributary-Signature";

/// A configured sink, ready to deliver.
pub(crate) struct Sink {
    http: reqwest::Client,
    url: String,
    secret: Option<Vec<u8>>,
}

impl Sink {
    /// The sink `config` describes; an error names what is missing.
    pub(crate) fn new(config: &SinkConfig) -> Result<Self, String> {
        let webhook = config
            .webhook
            .as_ref()
            .ok_or_else(|| format!("sink {} has no [events.sinks.webhook]", config.name))?;
        let secret = match &webhook.secret_env {
            Some(variable) => Some(
                std::env::var(variable)
                    .map_err(|_| {
                        format!(
                            "events.sinks.webhook.secret_env of sink {}: environment variable `{variable}` is not set",
                            config.name
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
            .map_err(|e| format!("cannot build an HTTP client for sink {}: {e}", config.name))?;
        Ok(Self {
            http,
            url: webhook.url.clone(),
            secret,
        })
    }

    /// Delivers `event`: `Ok` once the endpoint answered 2xx.
    pub(crate) async fn deliver(&self, event: &Event) -> Result<(), String> {
        let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
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
