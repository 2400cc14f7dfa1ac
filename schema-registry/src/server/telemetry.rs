//! The API's metrics ([`RegistryTelemetry`]) and the middleware that counts
//! requests by route, method and status.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{IntCounter, IntCounterVec, Opts};

use super::Shared;

/// The API's metrics.
#[derive(Debug, Clone)]
pub struct RegistryTelemetry {
    requests: IntCounterVec,
    pub(super) registrations: IntCounter,
    pub(super) store_errors: IntCounter,
}

impl RegistryTelemetry {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "tributary_registry_requests_total",
                "Schema registry API requests, by route, method and HTTP status",
            ),
            &["route", "method", "status"],
        )?;
        let registrations = IntCounter::new(
            "tributary_registry_registrations_total",
            "Successful registrations (including repeats of a registered schema)",
        )?;
        let store_errors = IntCounter::new(
            "tributary_registry_store_errors_total",
            "Requests that failed because the object store failed",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(registrations.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        Ok(Self {
            requests,
            registrations,
            store_errors,
        })
    }
}

pub(super) async fn count(State(api): Shared, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let response = next.run(request).await;
    api.telemetry
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), response.status().as_str()])
        .inc();
    response
}
