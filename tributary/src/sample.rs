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

/// The Avro schema of sample envelopes, version 1.
pub const AVRO_SCHEMA_V1: &str = r#"{"type": "record", "name": "Envelope", "namespace": "tributary.sample",
 "fields": [
  {"name": "service", "type": "string"},
  {"name": "host", "type": "string"},
  {"name": "region", "type": "string"},
  {"name": "batch_id", "type": "string"},
  {"name": "sent_at", "type": "string"},
  {"name": "messages", "type": {"type": "array", "items": {"type": "record", "name": "Message", "fields": [
    {"name": "id", "type": "string"},
    {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "level", "type": "string"},
    {"name": "message", "type": "string"},
    {"name": "user", "type": {"type": "record", "name": "User", "fields": [
      {"name": "id", "type": "string"}, {"name": "email", "type": "string"}]}},
    {"name": "http", "type": {"type": "record", "name": "Http", "fields": [
      {"name": "method", "type": "string"}, {"name": "path", "type": "string"},
      {"name": "status", "type": "int"}, {"name": "latency_ms", "type": "double"},
      {"name": "bytes", "type": "long"}]}},
    {"name": "tags", "type": {"type": "array", "items": "string"}}]}}}]}"#;

/// Version 2: each message gains `trace_id`, with a default (a
/// backward-compatible change).
pub fn avro_schema_v2() -> String {
    AVRO_SCHEMA_V1.replace(
        r#"{"name": "tags", "type": {"type": "array", "items": "string"}}]"#,
        r#"{"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "trace_id", "type": ["null", "string"], "default": null}]"#,
    )
}

/// One log record of an envelope.
struct Record {
    id: String,
    timestamp: i64,
    level: &'static str,
    message: &'static str,
    user: u64,
    method: &'static str,
    path: &'static str,
    status: i64,
    latency_ms: f64,
    bytes: u64,
    tags: [&'static str; 2],
}

/// One envelope: where it comes from and its records.
struct Envelope {
    service: &'static str,
    host: String,
    region: &'static str,
    batch_id: String,
    sent_at: i64,
    records: Vec<Record>,
}

/// The next envelope of at most `left` records, numbered `number`.
fn next_envelope(rng: &mut SplitMix, left: u64, number: u64) -> Envelope {
    let count = (7 + rng.below(19)).min(left);
    let service = rng.pick(&SERVICES);
    let host = format!("{service}-{:02}", rng.below(12));
    let base = START_MILLIS + rng.below(SPAN_MILLIS) as i64;
    let records = (0..count)
        .map(|i| {
            let user = rng.below(50_000);
            let status = match rng.below(20) {
                0 => 500,
                1..=2 => 404,
                _ => 200,
            };
            Record {
                id: format!("{number:08x}-{i:02x}-{:012x}", rng.next_u64() >> 16),
                timestamp: base + (i * 37) as i64,
                level: rng.pick(&LEVELS),
                message: rng.pick(&TEXTS),
                user,
                method: rng.pick(&METHODS),
                path: rng.pick(&PATHS),
                status,
                latency_ms: (rng.below(250_000) as f64) / 1000.0,
                bytes: rng.below(100_000),
                tags: [service, rng.pick(&["canary", "stable", "stable"])],
            }
        })
        .collect();
    Envelope {
        service,
        host,
        region: rng.pick(&REGIONS),
        batch_id: format!("b-{number:010}"),
        sent_at: base + 1_000,
        records,
    }
}

impl Envelope {
    fn to_json(&self) -> serde_json::Value {
        let messages: Vec<_> = self
            .records
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "timestamp": rfc3339(r.timestamp),
                    "level": r.level,
                    "message": r.message,
                    "user": {"id": format!("u-{:05}", r.user), "email": format!("user{}@example.com", r.user)},
                    "http": {
                        "method": r.method,
                        "path": r.path,
                        "status": r.status,
                        "latency_ms": r.latency_ms,
                        "bytes": r.bytes,
                    },
                    "tags": r.tags,
                })
            })
            .collect();
        json!({
            "service": self.service,
            "host": self.host,
            "region": self.region,
            "batch_id": self.batch_id,
            "sent_at": rfc3339(self.sent_at),
            "messages": messages,
        })
    }

    /// The Avro binary encoding, by schema version 1 or (with `trace`) 2.
    fn to_avro(&self, trace: bool, out: &mut Vec<u8>) {
        let mut avro = AvroOut(out);
        avro.string(self.service);
        avro.string(&self.host);
        avro.string(self.region);
        avro.string(&self.batch_id);
        avro.string(&rfc3339(self.sent_at));
        avro.long(self.records.len() as i64);
        for r in &self.records {
            avro.string(&r.id);
            avro.long(r.timestamp);
            avro.string(r.level);
            avro.string(r.message);
            avro.string(&format!("u-{:05}", r.user));
            avro.string(&format!("user{}@example.com", r.user));
            avro.string(r.method);
            avro.string(r.path);
            avro.long(r.status);
            avro.0.extend_from_slice(&r.latency_ms.to_le_bytes());
            avro.long(r.bytes as i64);
            avro.long(2);
            avro.string(r.tags[0]);
            avro.string(r.tags[1]);
            avro.long(0);
            if trace {
                // Union branch 1 (string).
                avro.long(1);
                avro.string(&format!("t-{}", &r.id[..8]));
            }
        }
        if !self.records.is_empty() {
            avro.long(0);
        }
    }
}

/// Avro's binary encoding of longs (zig-zag varints) and strings.
struct AvroOut<'a>(&'a mut Vec<u8>);

impl AvroOut<'_> {
    fn long(&mut self, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            self.0.push((z as u8) | 0x80);
            z >>= 7;
        }
        self.0.push(z as u8);
    }

    fn string(&mut self, s: &str) {
        self.long(s.len() as i64);
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// Writes envelopes holding exactly `records` log records, as JSON lines, to
/// `out`, numbering envelopes from `first_envelope`. Returns the number of
/// envelopes written. (The quickstart writes Avro; the compaction benchmark
/// writes JSON lines with this.)
#[allow(dead_code)]
pub fn write_envelopes(
    out: &mut impl Write,
    rng: &mut SplitMix,
    records: u64,
    first_envelope: u64,
) -> std::io::Result<u64> {
    let mut left = records;
    let mut number = first_envelope;
    while left > 0 {
        let envelope = next_envelope(rng, left, number);
        serde_json::to_writer(&mut *out, &envelope.to_json())?;
        out.write_all(b"\n")?;
        left -= envelope.records.len() as u64;
        number += 1;
    }
    Ok(number - first_envelope)
}

/// Calls `emit` with the Avro encoding of envelopes holding exactly
/// `records` log records, numbered from `first_envelope`: by schema version
/// 2 (with `trace_id`) when `v2` says so for the envelope's number, else by
/// version 1. Returns the number of envelopes.
pub fn avro_envelopes(
    rng: &mut SplitMix,
    records: u64,
    first_envelope: u64,
    v2: impl Fn(u64) -> bool,
    mut emit: impl FnMut(u64, bool, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let mut left = records;
    let mut number = first_envelope;
    let mut buffer = Vec::new();
    while left > 0 {
        let envelope = next_envelope(rng, left, number);
        let trace = v2(number);
        buffer.clear();
        envelope.to_avro(trace, &mut buffer);
        emit(number, trace, &buffer)?;
        left -= envelope.records.len() as u64;
        number += 1;
    }
    Ok(number - first_envelope)
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

    #[test]
    fn avro_envelopes_match_their_schemas() {
        use tributary_decode::apache_avro::{Schema, from_avro_datum, types::Value};
        let v1 = Schema::parse_str(AVRO_SCHEMA_V1).unwrap();
        let v2 = Schema::parse_str(&avro_schema_v2()).unwrap();
        let mut seen = [0; 2];
        avro_envelopes(
            &mut SplitMix::new(3),
            500,
            0,
            |n| n % 2 == 1,
            |_, trace, bytes| {
                let schema = if trace { &v2 } else { &v1 };
                let value = from_avro_datum(schema, &mut &bytes[..], None).unwrap();
                let Value::Record(fields) = value else {
                    panic!("not a record")
                };
                assert_eq!(fields[0].0, "service");
                seen[usize::from(trace)] += 1;
                Ok(())
            },
        )
        .unwrap();
        assert!(seen[0] > 0 && seen[1] > 0);
    }
}
