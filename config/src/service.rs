use std::net::SocketAddr;

use serde::Deserialize;

use crate::error::{Result, invalid};

/// `[service]`: how a long-running process (`ingest`, `compact`) is operated:
/// its HTTP endpoint and its shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Address of the HTTP endpoint that serves `/metrics` (Prometheus text
    /// format), `/healthz` and `/readyz`. Port 0 picks a free port, which is
    /// logged at start.
    #[serde(default = "default_listen_addr")]
    pub listen_addr: SocketAddr,
    /// Longest time from SIGTERM (or SIGINT) to exit, in milliseconds. The
    /// process stops reading, stages what it has buffered, finishes the
    /// current commit and exits 0; if that takes longer it exits with code 3.
    /// Keep it below the container's grace period (Kubernetes
    /// `terminationGracePeriodSeconds`, ECS `stopTimeout`).
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

fn default_listen_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9500))
}
fn default_shutdown_grace_ms() -> u64 {
    25_000
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            listen_addr: default_listen_addr(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
        }
    }
}

impl ServiceConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.shutdown_grace_ms == 0 {
            return Err(invalid(
                "service.shutdown_grace_ms",
                0,
                "must be at least 1; a process needs time to stage what it has buffered",
            ));
        }
        Ok(())
    }
}
