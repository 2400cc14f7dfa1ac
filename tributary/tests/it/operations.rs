//! Operability: metrics scraped by a real Prometheus, `promtool` on the
//! metrics and alert rules, the files under deploy/, and draining on SIGTERM.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{envelopes, python, run_ok, table_keys, tributary, write_config, write_records};

/// Child processes killed when the test ends, however it ends.
#[derive(Default)]
pub(crate) struct Processes(Vec<Child>);

impl Processes {
    pub(crate) fn spawn(&mut self, command: &mut Command) -> &mut Child {
        let child = command.stdout(Stdio::null()).spawn().unwrap();
        self.0.push(child);
        self.0.last_mut().unwrap()
    }

    /// Kills process `pid`, spawned here, with SIGKILL (`kill -9`), and
    /// reaps it: until then it is a zombie that still has a `/proc` entry,
    /// so its leases would not count as abandoned.
    pub(crate) fn kill9(&mut self, pid: u32) {
        let child = self
            .0
            .iter_mut()
            .find(|c| c.id() == pid)
            .expect("a process spawned here");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A Prometheus tool from the Debian package that scripts/test.sh installs.
fn prometheus_tool(name: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh, which installs Debian's prometheus package",
        path.display()
    );
    path
}

/// Fails the test with the command's output unless it exited 0.
pub(crate) fn assert_succeeded(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET; returns the status code and the body.
pub(crate) fn http_get(port: u16, path_and_query: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `limit`.
pub(crate) fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of the metric `series` (a name, optionally with labels such as
/// `name{sink="x"}`) in a `/metrics` body: the sum over every sample of that
/// name that has at least these labels (so a compactor metric sums over its
/// `table` label unless the series names one); `None` when there is none.
pub(crate) fn sample(body: &str, series: &str) -> Option<f64> {
    let (name, labels) = split_series(series);
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((line_series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (line_name, line_labels) = split_series(line_series);
        if line_name == name
            && labels.iter().all(|l| line_labels.contains(l))
            && let Ok(value) = value.parse::<f64>()
        {
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

/// `name{a="x",b="y"}` → (`name`, [`a="x"`, `b="y"`]).
fn split_series(series: &str) -> (&str, Vec<&str>) {
    match series.split_once('{') {
        Some((name, labels)) => (
            name,
            labels
                .trim_end_matches('}')
                .split(',')
                .filter(|l| !l.is_empty())
                .collect(),
        ),
        None => (series, Vec::new()),
    }
}

/// Ingest (following `input`) and a compactor on the given ports.
fn start_services(processes: &mut Processes, config: &Path, ingest_port: u16, compactor_port: u16) {
    let config = config.to_str().unwrap();
    for (command, port) in [("ingest", ingest_port), ("compact", compactor_port)] {
        processes.spawn(tributary().args([command, "--config", config]).env(
            "TRIBUTARY_SERVICE__LISTEN_ADDR",
            format!("127.0.0.1:{port}"),
        ));
    }
}

/// A table directory with `records` good records in `envelopes` lines plus
/// one malformed line. Returns (config, messages written, records).
fn pipeline_input(dir: &Path) -> (PathBuf, u64, u64) {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let (lines, ids) = envelopes(0, 4_000);
    let mut text = lines.join("\n");
    text.push_str("\nthis line is not JSON\n");
    std::fs::write(input.join("app.ndjson"), text).unwrap();
    let config = write_config(dir, &input, &dir.join("table"), "");
    (config, lines.len() as u64 + 1, ids.len() as u64)
}

#[test]
fn prometheus_scrapes_ingest_and_compactor() {
    let dir = tempfile::tempdir().unwrap();
    let (config, messages, records) = pipeline_input(dir.path());
    let (ingest_port, compactor_port, prometheus_port) = (free_port(), free_port(), free_port());
    let mut processes = Processes::default();
    start_services(&mut processes, &config, ingest_port, compactor_port);

    let prometheus_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n\
             \x20 - job_name: tributary-ingest\n    static_configs:\n      - targets: ['127.0.0.1:{ingest_port}']\n\
             \x20 - job_name: tributary-compactor\n    static_configs:\n      - targets: ['127.0.0.1:{compactor_port}']\n",
            rules = repo_root().join("deploy/prometheus/alerts.yml").display(),
        ),
    )
    .unwrap();
    processes.spawn(
        Command::new(prometheus_tool("prometheus"))
            .arg(format!("--config.file={}", prometheus_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stderr(Stdio::null()),
    );

    // What Prometheus scraped, through its query API.
    let query = |expr: &str| -> Option<f64> {
        let (status, body) = http_get(
            prometheus_port,
            &format!("/api/v1/query?query={}", expr.replace('"', "%22")),
        )?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200).then_some(())?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let received = wait_for(
        Duration::from_secs(90),
        "the received-records counter",
        || {
            query(
                r#"tributary_ingest_received_records_total{job="tributary-ingest",stream="test"}"#,
            )
            .filter(|v| *v == messages as f64)
        },
    );
    assert_eq!(received, messages as f64);
    assert_eq!(
        query(r#"tributary_ingest_dead_lettered_records_total{reason="malformed_json"}"#),
        Some(1.0)
    );
    wait_for(
        Duration::from_secs(60),
        "the compacted-rows counter",
        || {
            query(r#"tributary_compactor_compacted_rows_total{job="tributary-compactor"}"#)
                .filter(|v| *v == records as f64)
        },
    );
    assert_eq!(query(r#"up{job="tributary-compactor"}"#), Some(1.0));

    // The alert rules loaded into this Prometheus, and none of them fires.
    let (_, rules) = http_get(prometheus_port, "/api/v1/rules").unwrap();
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let loaded = rules["data"]["groups"][0]["rules"].as_array().unwrap();
    let in_file = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yml"))
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(loaded.len(), in_file, "{rules}");
    assert!(
        loaded
            .iter()
            .all(|r| r["health"] == "ok" && r["state"] == "inactive"),
        "{rules}"
    );
}

#[test]
fn promtool_checks_scraped_metrics_and_deploy_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, records) = pipeline_input(dir.path());
    let (ingest_port, compactor_port) = (free_port(), free_port());
    let mut processes = Processes::default();
    start_services(&mut processes, &config, ingest_port, compactor_port);

    let ready = |port| http_get(port, "/readyz").filter(|(status, _)| *status == 200);
    let (_, readiness) = wait_for(Duration::from_secs(30), "ingest /readyz", || {
        ready(ingest_port)
    });
    assert!(readiness.contains(r#""source":"ok""#), "{readiness}");
    wait_for(Duration::from_secs(30), "compactor /readyz", || {
        ready(compactor_port)
    });
    assert_eq!(http_get(ingest_port, "/healthz").unwrap().0, 200);
    let compactor = wait_for(Duration::from_secs(60), "a compaction commit", || {
        let (_, body) = http_get(compactor_port, "/metrics")?;
        (sample(&body, "tributary_compactor_compacted_rows_total")? == records as f64)
            .then_some(body)
    });
    let (_, ingest) = http_get(ingest_port, "/metrics").unwrap();
    assert_eq!(
        sample(
            &ingest,
            r#"tributary_ingest_staged_rows_total{stream="test",table="table"}"#
        ),
        Some(records as f64)
    );
    assert_eq!(
        sample(
            &ingest,
            r#"tributary_ingest_source_lag_bytes{stream="test"}"#
        ),
        Some(0.0)
    );

    for body in [&ingest, &compactor] {
        let mut promtool = Command::new(prometheus_tool("promtool"))
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        assert_succeeded(
            "promtool check metrics",
            &promtool.wait_with_output().unwrap(),
        );
    }

    // Every metric the alert rules and the dashboard use is one we export.
    let deploy = repo_root().join("deploy");
    let exported: HashSet<&str> = ingest
        .lines()
        .chain(compactor.lines())
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for file in ["prometheus/alerts.yml", "grafana/tributary-dashboard.json"] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        let used: HashSet<&str> = text
            .match_indices("tributary_")
            .map(|(i, _)| {
                let rest = &text[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        assert!(used.len() > 5, "{file} uses too few metrics: {used:?}");
        for metric in used {
            assert!(
                exported.contains(metric),
                "{file} uses {metric}, which no process exports"
            );
        }
    }

    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new(prometheus_tool("promtool"))
            .args(args)
            .current_dir(deploy.join("prometheus"))
            .output()
            .unwrap();
        assert_succeeded(&format!("promtool {args:?}"), &out);
    }
}

#[test]
fn deploy_files_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(repo_root().join("scripts/check_deploy.py"))
        .arg("--emit-config")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_succeeded("scripts/check_deploy.py", &out);
    // The ConfigMap's files are configurations Tributary accepts.
    let config = tributary_config::Config::load(&dir.path().join("configmap.toml")).unwrap();
    config.require_ingest().unwrap();
    tributary_config::RegistryFile::load(&dir.path().join("registry.toml")).unwrap();
}

/// SIGTERM while records keep arriving: ingest stages what it read and exits
/// 0 well within the grace period; a restart then picks up exactly where it
/// stopped.
#[test]
fn sigterm_drains_within_grace_and_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (input, table) = (dir.path().join("in"), dir.path().join("table"));
    std::fs::create_dir_all(&input).unwrap();
    let config = write_config(
        dir.path(),
        &input,
        &table,
        "[ingest.batch]\nmax_records = 500\n[service]\nshutdown_grace_ms = 5000\n",
    );
    let config = config.to_str().unwrap();

    // A producer appending complete lines to a growing file.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (path, stop) = (input.join("live.ndjson"), stop.clone());
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(path).unwrap();
            let (mut ids, mut next) = (Vec::new(), 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (lines, batch_ids) = envelopes(next, 300);
                next += 300;
                file.write_all(format!("{}\n", lines.join("\n")).as_bytes())
                    .unwrap();
                ids.extend(batch_ids);
                std::thread::sleep(Duration::from_millis(20));
            }
            ids
        })
    };

    let port = free_port();
    let mut processes = Processes::default();
    let ingest = processes.spawn(tributary().args(["ingest", "--config", config]).env(
        "TRIBUTARY_SERVICE__LISTEN_ADDR",
        format!("127.0.0.1:{port}"),
    ));
    let pid = ingest.id().to_string();
    // Steady ingestion: several row files staged already.
    wait_for(Duration::from_secs(30), "staged row files", || {
        let (_, body) = http_get(port, "/metrics")?;
        (sample(
            &body,
            r#"tributary_ingest_staged_files_total{stream="test",table="table"}"#,
        )? >= 5.0)
            .then_some(())
    });

    let signalled = Instant::now();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let status = ingest.wait().unwrap();
    let drained_in = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "ingest exit status after SIGTERM");
    assert!(
        drained_in < Duration::from_secs(5),
        "drain took {drained_in:?}, more than the 5 s grace"
    );

    // More records arrive while ingest is down; then everything is ingested.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut expected = producer.join().unwrap();
    expected.extend(write_records(
        &input.join("after.ndjson"),
        10_000_000,
        1_000,
        false,
    ));
    run_ok(&["ingest", "--config", config, "--once"]);
    run_ok(&["compact", "--config", config, "--once"]);

    let keys = table_keys(&table);
    let unique: HashSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "duplicates in the table");
    let expected: HashSet<&String> = expected.iter().collect();
    assert_eq!(unique, expected);
}

/// Records may hold personal data: no log line, even at `trace`, shows a
/// record's content, good or bad.
#[test]
fn logs_never_show_record_content() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let secret = "alice@example.com";
    std::fs::write(
        input.join("pii.ndjson"),
        format!(
            "{{\"messages\":[{{\"id\":\"k1\",\"email\":\"{secret}\"}}]}}\n\
             {{\"messages\":[{{\"id\":\"k2\",\"email\":\"{secret}\"\n\
             [\"{secret}\"]\n\
             {{\"date\":\"{secret}\",\"messages\":[{{\"id\":\"k3\"}}]}}\n"
        ),
    )
    .unwrap();
    let config = write_config(dir.path(), &input, &dir.path().join("table"), "");
    let config = config.to_str().unwrap();
    for command in ["ingest", "compact"] {
        let out = tributary()
            .args([command, "--config", config, "--once"])
            .env("TRIBUTARY_LOG", "trace")
            .output()
            .unwrap();
        assert!(out.status.success(), "{command} failed");
        let logs = String::from_utf8_lossy(&out.stderr);
        // Something to search: ingest logs each staged file (debug) and its
        // end; the compactor its table and round.
        assert!(
            logs.lines().count() >= 2,
            "{command} logged almost nothing: {logs}"
        );
        assert!(
            !logs.contains(secret),
            "{command} logged a record's content"
        );
    }
    // The record itself did arrive.
    assert_eq!(crate::table_keys(&dir.path().join("table")), ["k1"]);
}

/// A round that fails (here: a corrupt staged row file) is counted, logged
/// and retried with backoff; the compactor keeps running and stays live.
#[test]
fn failed_compaction_rounds_are_counted_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, _) = pipeline_input(dir.path());
    run_ok(&["ingest", "--config", config.to_str().unwrap(), "--once"]);
    let staged = find_files(&dir.path().join("table/_tributary/staging"), "avro");
    assert_eq!(staged.len(), 1, "{staged:?}");
    std::fs::write(&staged[0], b"Obj\x01 not really a row file").unwrap();

    let port = free_port();
    let mut processes = Processes::default();
    let compactor = processes.spawn(
        tributary()
            .args(["compact", "--config", config.to_str().unwrap()])
            .env(
                "TRIBUTARY_SERVICE__LISTEN_ADDR",
                format!("127.0.0.1:{port}"),
            ),
    );
    let metrics = wait_for(Duration::from_secs(30), "two failed rounds", || {
        let (_, body) = http_get(port, "/metrics")?;
        (sample(&body, "tributary_compactor_failed_rounds_total")? >= 2.0).then_some(body)
    });
    assert_eq!(
        sample(&metrics, "tributary_compactor_commits_total"),
        Some(0.0)
    );
    assert!(
        compactor.try_wait().unwrap().is_none(),
        "the compactor exited"
    );
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
}

/// Files under `dir` (recursively) whose names end with `.{extension}`.
fn find_files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(find_files(&path, extension));
        } else if path.extension().is_some_and(|e| e == extension) {
            found.push(path);
        }
    }
    found
}
