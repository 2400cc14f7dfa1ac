//! The consumer's context: librdkafka's callbacks (logs, client errors,
//! statistics, rebalances), which run on the consumer thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;

use super::state::State;
use super::{kafka_error, partition_name};
use crate::error::Error;

/// The consumer's context: librdkafka calls `rebalance` on the consumer
/// thread, inside `poll`, while the loop holds no lock.
pub(super) struct Context {
    pub(super) state: Mutex<State>,
    /// Whether the group has assigned partitions to this member once: the
    /// brokers accepted its TLS handshake and credentials.
    pub(super) joined: AtomicBool,
    /// The newest connection failure librdkafka logged (facility `FAIL`),
    /// which names the cause that an error code alone does not. Apart from
    /// `state`: librdkafka logs from inside calls made while `state` is held.
    pub(super) last_failure: Mutex<Option<String>>,
}

impl Context {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the state was held leaves nothing half-staged that
        // the lake would not resolve, so the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error to stop with when `error` is an authentication or TLS
    /// failure before the group ever assigned partitions: the credentials,
    /// mechanism or trusted certificates are wrong, and librdkafka's retries
    /// would repeat the failure forever while nothing is read. Later ones
    /// (a broker restarting with a new certificate, a credential rotation
    /// under way) are retried like any connection failure.
    pub(super) fn refused(&self, error: &KafkaError) -> Option<Error> {
        if self.joined.load(Ordering::Relaxed) {
            return None;
        }
        let problem = match error.rdkafka_error_code()? {
            RDKafkaErrorCode::Authentication => {
                "SASL authentication failed (check sasl.mechanism, sasl.username and the password)"
            }
            RDKafkaErrorCode::SSL => {
                "the TLS handshake failed (check ssl.ca.location and that the broker's certificate names the broker's host)"
            }
            _ => return None,
        };
        let cause = self
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| error.to_string());
        Some(kafka_error(
            &format!("cannot connect to the brokers: {problem}: {cause}"),
            error.clone(),
        ))
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "FAIL" {
            // Without librdkafka's `[thrd:…]: ` prefix.
            let failure = log_message
                .split_once("]: ")
                .map_or(log_message, |(_, m)| m);
            *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(failure.to_string());
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {log_message}"),
            _ => tracing::debug!(facility = fac, "librdkafka: {log_message}"),
        }
    }

    /// Client-wide errors; all brokers down makes the source not ready.
    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(refused) = self.refused(&error) {
            self.lock().fatal.get_or_insert(refused);
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.lock().shared.telemetry.source_answered(false);
        }
        tracing::warn!(%error, "librdkafka: {reason}");
    }

    /// Sets the lag gauge of every assigned partition: the broker's high
    /// watermark minus the next offset to stage.
    fn stats(&self, statistics: Statistics) {
        let state = self.lock();
        for ((topic, number), partition) in &state.partitions {
            let high = statistics
                .topics
                .get(&**topic)
                .and_then(|t| t.partitions.get(number))
                .map(|p| p.hi_offset);
            let next = partition.next_offset.or_else(|| {
                let first = partition.buffer.front()?.position();
                i64::try_from(first).ok()
            });
            if let (Some(next), Some(high)) = (next, high)
                && high >= 0
            {
                state
                    .shared
                    .telemetry
                    .kafka_lag(&partition_name(topic, *number), (high - next).max(0));
            }
        }
    }
}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut state = self.lock();
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.joined.store(true, Ordering::Relaxed);
                state.assign(consumer, tpl)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                state.revoke(consumer, tpl, consumer.assignment_lost())
            }
            other => {
                tracing::error!(error = ?other, "kafka rebalance failed; dropping the partitions");
                state.revoke(consumer, tpl, true)
            }
        };
        if let Err(error) = result {
            state.fatal.get_or_insert(error);
        }
        let revoked: Vec<String> = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Vec::new(),
            _ => tpl
                .elements()
                .iter()
                .map(|e| partition_name(e.topic(), e.partition()))
                .collect(),
        };
        state
            .shared
            .telemetry
            .kafka_rebalanced(state.partitions.len(), &revoked);
    }
}
