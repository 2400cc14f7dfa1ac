//! Object store faults: ingest and compaction on S3 through a proxy
//! (scripts/s3_fault_proxy.py) that answers some requests 503 SlowDown,
//! delays some, lets some time out (before or after the server acted on
//! them) and cuts some connections after the server acted on the request.
//! Retries carry the runs through, and every record lands in the table
//! exactly once.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::{python, s3, table_keys, tributary, write_config, write_records};

/// The client's request timeout in the test; the proxy holds a "timed out"
/// request twice as long.
const REQUEST_TIMEOUT_MS: u64 = 750;

/// Runs of one command before the test gives up. A run fails only when a
/// Delta commit (a conditional write, which no client repeats after a
/// timeout) times out, or is repeated after a cut connection and finds its
/// own first attempt; the next run resumes from the lake, as after a crash.
const MAX_RUNS: usize = 8;

/// The fault-injecting proxy in front of the test S3 server, stopped when
/// dropped.
struct FaultProxy {
    child: Child,
    /// Held open: the proxy exits when it closes.
    _stdin: ChildStdin,
    port: u16,
}

impl FaultProxy {
    fn start(upstream: &str, seed: u64, rates: &[(&str, f64)]) -> FaultProxy {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3_fault_proxy.py");
        let mut cmd = std::process::Command::new(python());
        cmd.arg(script)
            .args(["--upstream", upstream, "--seed", &seed.to_string()])
            .args([
                "--timeout-hold-ms",
                &(2 * REQUEST_TIMEOUT_MS).to_string(),
                "--slow-min-ms",
                "100",
                "--slow-max-ms",
                &(REQUEST_TIMEOUT_MS / 2).to_string(),
                "--exit-on-stdin-eof",
            ]);
        for (kind, rate) in rates {
            cmd.arg(format!("--{kind}-rate")).arg(rate.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the proxy printed {line:?}, not its port"));
        FaultProxy {
            _stdin: child.stdin.take().unwrap(),
            child,
            port,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The proxy's counters: requests, forwarded, and one per fault kind.
    fn counts(&self) -> serde_json::Value {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .write_all(b"GET /__faults HTTP/1.0\r\nHost: proxy\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
        serde_json::from_str(body).unwrap()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tributary <args>` against S3 through `proxy` until it succeeds, at
/// most [`MAX_RUNS`] times. Returns the number of runs and the last stdout.
fn run_through(proxy: &FaultProxy, args: &[&str]) -> (usize, Vec<u8>) {
    for run in 1..=MAX_RUNS {
        let out = tributary()
            .args(args)
            .env("TRIBUTARY_LAKE__S3__ENDPOINT", proxy.endpoint())
            .env(
                "TRIBUTARY_LAKE__S3__REQUEST_TIMEOUT_MS",
                REQUEST_TIMEOUT_MS.to_string(),
            )
            .output()
            .unwrap();
        if out.status.success() {
            return (run, out.stdout);
        }
        // The error, without the log lines before it.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        eprintln!("tributary {args:?} run {run} failed: {error:?}");
    }
    panic!("tributary {args:?} failed {MAX_RUNS} times; see above");
}

/// Ingest and compaction through 503s, slow answers, timeouts and cut
/// connections: each record is in the table once, nothing is left staged,
/// and the proxy did inject every kind of fault.
#[test]
fn s3_faults_lose_and_duplicate_nothing() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let table = s3::new_table("faults");
    let mut expected = write_records(&input.join("a.ndjson"), 0, 2_500, false);
    expected.extend(write_records(
        &input.join("b.ndjson.gz"),
        2_500,
        2_000,
        true,
    ));
    expected.extend(write_records(&input.join("c.ndjson"), 4_500, 1_500, false));
    // Small batches (of envelopes, ~100 records): ~60 row files, compacted
    // 15 to a commit, so that commits meet faults too. The records span ~70
    // days (Parquet files). About 500 requests in all.
    let config = write_config(
        dir.path(),
        &input,
        &table,
        "[ingest.batch]\nmax_records = 20\n\n[compact]\nmax_files_per_commit = 15\n",
    );
    let config = config.to_str().unwrap();

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000;
    eprintln!("fault proxy seed {seed}");
    let proxy = FaultProxy::start(
        &s3::endpoint(),
        seed,
        &[
            ("error", 0.10),
            ("slow", 0.03),
            ("timeout", 0.02),
            ("timeout-after-forward", 0.02),
            ("reset-after-forward", 0.02),
        ],
    );

    let (ingest_runs, _) = run_through(&proxy, &["ingest", "--config", config, "--once"]);
    let (compact_runs, report) = run_through(&proxy, &["compact", "--config", config, "--once"]);
    let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
    let counts = proxy.counts();
    eprintln!(
        "faults {counts}; ingest runs {ingest_runs}, compact runs {compact_runs}; \
         last compaction {report}; {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Read back directly from the S3 server, not through the proxy.
    let keys = table_keys(&table);
    let unique: HashSet<&String> = keys.iter().collect();
    assert_eq!(
        unique.len(),
        keys.len(),
        "duplicates in the table (seed {seed})"
    );
    let expected: HashSet<&String> = expected.iter().collect();
    let missing = expected.difference(&unique).count();
    let extra = unique.difference(&expected).count();
    assert_eq!((missing, extra), (0, 0), "missing/extra keys (seed {seed})");
    assert_eq!(
        s3::object_keys(&table, "_tributary/staging/"),
        Vec::<String>::new()
    );
    for kind in [
        "error",
        "slow",
        "timeout",
        "timeout_after_forward",
        "reset_after_forward",
    ] {
        assert!(
            counts[kind].as_u64().unwrap() > 0,
            "the proxy injected no {kind} fault: {counts} (seed {seed})"
        );
    }
}
