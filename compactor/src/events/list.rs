//! `tributary events list`: recent events and where each sink stands.

use serde::Serialize;
use tributary_config::SinkConfig;
use tributary_lake::Lake;

use super::store::read_cursor;
use super::{Event, read_events, table_uri};
use crate::error::Result;

/// What `tributary events list` prints.
#[derive(Debug, Serialize)]
pub struct Listing {
    /// The table's URI.
    pub table: String,
    /// Its newest version (`null` before it exists).
    pub latest_version: Option<u64>,
    /// Where each configured sink stands.
    pub sinks: Vec<SinkPosition>,
    /// The events of the versions listed, oldest first.
    pub events: Vec<Listed>,
}

/// Where one sink stands.
#[derive(Debug, Serialize)]
pub struct SinkPosition {
    /// The sink's name.
    pub name: String,
    /// The next version it will be told of (`null`: it has not started).
    pub next_version: Option<u64>,
    /// Versions from there to the newest (`null`: it has not started).
    pub pending_versions: Option<u64>,
}

/// One listed event and the sinks that have not received it yet.
#[derive(Debug, Serialize)]
pub struct Listed {
    /// The event as sinks receive it.
    #[serde(flatten)]
    pub event: Event,
    /// Configured sinks it is still pending for.
    pub pending_for: Vec<String>,
}

/// The events of versions `since` to the newest, at most `limit` of them
/// (by default from the newest `limit` versions), and where each of `sinks` stands.
pub async fn list(
    lake: &Lake,
    sinks: &[SinkConfig],
    since: Option<u64>,
    limit: usize,
) -> Result<Listing> {
    let latest = lake.load_table().await?.and_then(|t| t.version());
    let mut positions = Vec::new();
    for sink in sinks {
        let next_version = read_cursor(lake, &sink.name).await?.map(|c| c.next_version);
        positions.push(SinkPosition {
            name: sink.name.clone(),
            next_version,
            pending_versions: next_version
                .map(|next| latest.map_or(0, |l| (l + 1).saturating_sub(next))),
        });
    }
    let mut events = Vec::new();
    if let Some(latest) = latest {
        let since = since.unwrap_or_else(|| (latest + 1).saturating_sub(limit as u64));
        for version in since..=latest {
            if events.len() >= limit {
                break;
            }
            let pending_for: Vec<String> = positions
                .iter()
                .filter(|p| p.next_version.is_none_or(|next| next <= version))
                .map(|p| p.name.clone())
                .collect();
            let listed = read_events(lake, version).await?.unwrap_or_default();
            for event in listed.into_iter().take(limit - events.len()) {
                let pending_for = pending_for.clone();
                events.push(Listed { event, pending_for });
            }
        }
    }
    Ok(Listing {
        table: table_uri(lake).to_string(),
        latest_version: latest,
        sinks: positions,
        events,
    })
}
