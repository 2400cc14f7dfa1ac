//! A deterministic sample log stream: envelopes from several services and
//! hosts, each carrying a `messages` array of 7–25 log records.

use std::io::Write;

use serde_json::json;

/// A small, fast, seeded generator (SplitMix64): the same seed gives the same
/// stream on every machine.
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const SERVICES: [&str; 6] = [
    "checkout",
    "search",
    "auth",
    "catalog",
    "payments",
    "notifications",
];
const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-2"];
const LEVELS: [&str; 5] = ["DEBUG", "INFO", "INFO", "WARN", "ERROR"];
const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
const PATHS: [&str; 6] = [
    "/api/cart",
    "/api/search",
    "/api/login",
    "/api/items",
    "/api/pay",
    "/healthz",
];
const TEXTS: [&str; 5] = [
    "request served",
    "cache miss, fetched from origin",
    "user session refreshed",
    "slow upstream response",
    "retrying after timeout",
];
/// 2026-11-18T00:00:00Z: the sample spans five days from here.
const START_MILLIS: i64 = 1_795_478_400_000;
const SPAN_MILLIS: u64 = 5 * 24 * 3600 * 1000;

fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Writes envelopes holding exactly `records` log records, as JSON lines, to
/// `out`, numbering envelopes from `first_envelope`. Returns the number of
/// envelopes written.
pub fn write_envelopes(
    out: &mut impl Write,
    rng: &mut SplitMix,
    records: u64,
    first_envelope: u64,
) -> std::io::Result<u64> {
    let mut left = records;
    let mut envelope = first_envelope;
    while left > 0 {
        let count = (7 + rng.below(19)).min(left);
        let service = rng.pick(&SERVICES);
        let host = format!("{service}-{:02}", rng.below(12));
        let base = START_MILLIS + rng.below(SPAN_MILLIS) as i64;
        let messages: Vec<_> = (0..count)
            .map(|i| {
                let user = rng.below(50_000);
                let status = match rng.below(20) {
                    0 => 500,
                    1..=2 => 404,
                    _ => 200,
                };
                json!({
                    "id": format!("{envelope:08x}-{i:02x}-{:012x}", rng.next_u64() >> 16),
                    "timestamp": rfc3339(base + (i * 37) as i64),
                    "level": rng.pick(&LEVELS),
                    "message": rng.pick(&TEXTS),
                    "user": {"id": format!("u-{user:05}"), "email": format!("user{user}@example.com")},
                    "http": {
                        "method": rng.pick(&METHODS),
                        "path": rng.pick(&PATHS),
                        "status": status,
                        "latency_ms": (rng.below(250_000) as f64) / 1000.0,
                        "bytes": rng.below(100_000),
                    },
                    "tags": [service, rng.pick(&["canary", "stable", "stable"])],
                })
            })
            .collect();
        let line = json!({
            "service": service,
            "host": host,
            "region": rng.pick(&REGIONS),
            "batch_id": format!("b-{envelope:010}"),
            "sent_at": rfc3339(base + 1_000),
            "messages": messages,
        });
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        left -= count;
        envelope += 1;
    }
    Ok(envelope - first_envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_with_exact_record_count() {
        let gen_with = |seed| {
            let mut out = Vec::new();
            write_envelopes(&mut out, &mut SplitMix::new(seed), 1_000, 0).unwrap();
            out
        };
        let a = gen_with(7);
        assert_eq!(a, gen_with(7));
        let records: usize = a
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice::<serde_json::Value>(l).unwrap()["messages"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .sum();
        assert_eq!(records, 1_000);
    }
}
