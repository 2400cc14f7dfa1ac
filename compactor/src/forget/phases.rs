//! The phases of a forget run: their times for the report, and the crash
//! tests' pause hook ([`PAUSE_AFTER_VARIABLE`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::PAUSE_AFTER_VARIABLE;

/// The phases of a run: their times, and the crash tests' pause hook.
pub(super) struct Phases {
    started: Instant,
    pause_after: Option<String>,
    /// The request ids, for the log.
    pub(super) label: String,
    /// Milliseconds per phase.
    pub(super) timings_ms: BTreeMap<String, u64>,
}

impl Phases {
    pub(super) fn new() -> Phases {
        Phases {
            started: Instant::now(),
            pause_after: std::env::var(PAUSE_AFTER_VARIABLE).ok(),
            label: String::new(),
            timings_ms: BTreeMap::new(),
        }
    }

    /// Ends phase `name` (as [`PAUSE_AFTER_VARIABLE`] names it): its time
    /// goes to `timing`, less `part`, which goes to its own name. Then waits
    /// to be killed when the hook names this phase.
    pub(super) async fn end(&mut self, name: &str, timing: &str, part: Option<(&str, Duration)>) {
        let mut elapsed = self.started.elapsed();
        if let Some((part, time)) = part {
            elapsed = elapsed.saturating_sub(time);
            self.timings_ms
                .insert(part.to_string(), time.as_millis() as u64);
        }
        self.timings_ms
            .insert(timing.to_string(), elapsed.as_millis() as u64);
        tracing::info!(request = %self.label, phase = name, "forget phase done");
        if self.pause_after.as_deref() == Some(name) {
            // For the crash tests: wait here to be killed.
            eprintln!("forget paused after phase {name}");
            std::future::pending::<()>().await;
        }
        self.started = Instant::now();
    }
}
