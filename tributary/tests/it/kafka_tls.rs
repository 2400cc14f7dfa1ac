//! The Kafka source over TLS with SASL/SCRAM authentication, the way
//! production clusters (MSK, Confluent Cloud) are reached, with the password
//! read through `[ingest.kafka] options_env`.
//!
//! tansu 0.6.0 authenticates clients (`--authentication`, SCRAM-SHA-256 and
//! -512) but cannot serve TLS: its `--cert` and `--key` flags exclude each
//! other and its TLS acceptor is never used. So TLS is terminated by a small
//! proxy in front of it (Python's `ssl`), as a load balancer in front of
//! brokers would, with a certificate authority the test makes (`trustme`);
//! the broker advertises the proxy's address.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::compaction::assert_keys;
use crate::kafka::{Broker, SMALL_BATCHES, compact_until_complete, config, produce, wait_produced};
use crate::operations::{Processes, free_port, wait_for};
use crate::{envelopes, python, run_ok, run_python, tributary};

/// Writes a certificate authority (`ca.pem`), a certificate it signs for
/// `localhost` and `127.0.0.1` with its key (`server.pem`), and a second,
/// unrelated authority (`other-ca.pem`) into `sys.argv[1]`.
const CERTIFICATES: &str = r#"
import sys, trustme
out = sys.argv[1]
ca = trustme.CA()
ca.cert_pem.write_to_path(f"{out}/ca.pem")
ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(f"{out}/server.pem")
trustme.CA().cert_pem.write_to_path(f"{out}/other-ca.pem")
"#;

/// Accepts TLS on `127.0.0.1:<argv[1]>` with the key and certificates in
/// `argv[2]` and forwards the plaintext to `127.0.0.1:<argv[3]>`.
const TLS_PROXY: &str = r#"
import asyncio, ssl, sys
port, pem, upstream = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(pem)
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        writer.close()
async def connect(client_reader, client_writer):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", upstream)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))
async def main():
    server = await asyncio.start_server(connect, "127.0.0.1", port, ssl=tls, ssl_handshake_timeout=10)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"#;

const USER: &str = "tributary";
const PASSWORD: &str = "s3cret-scram-password";
const PASSWORD_VARIABLE: &str = "TRIBUTARY_TEST_KAFKA_PASSWORD";

/// A configuration reading `events` from the TLS address `localhost:<port>`
/// as [`USER`], trusting the authority in `ca`, with the password from
/// [`PASSWORD_VARIABLE`].
fn secure_config(dir: &Path, broker: &Broker, table: &Path, port: u16, ca: &Path) -> String {
    let plain = config(dir, broker, "events", table, "", SMALL_BATCHES);
    let security = format!(
        r#"[ingest.kafka.options]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "{USER}"
"ssl.ca.location" = "{ca}"
"#,
        ca = ca.display()
    );
    let text = std::fs::read_to_string(&plain)
        .unwrap()
        .replace(&broker.address(), &format!("localhost:{port}"))
        .replace(
            "[ingest.kafka]\n",
            &format!(
                "[ingest.kafka]\noptions_env = {{ \"sasl.password\" = \"{PASSWORD_VARIABLE}\" }}\n"
            ),
        )
        .replace("[ingest.kafka.options]\n", &security);
    let path = table.with_extension("toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Runs `tributary ingest` with `password` and expects it to exit non-zero
/// within 60 s, staging nothing; returns its standard error.
fn ingest_refused(config: &str, password: &str, table: &Path) -> String {
    let mut processes = Processes::default();
    let child = processes.spawn(
        tributary()
            .args(["ingest", "--config", config])
            .env(PASSWORD_VARIABLE, password)
            .stderr(Stdio::piped()),
    );
    let exited = wait_for(Duration::from_secs(60), "ingest to give up", || {
        child.try_wait().unwrap()
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        !exited.success(),
        "ingest must fail, but exited 0: {stderr}"
    );
    let staged = walk_files(table);
    assert!(staged.is_empty(), "nothing may be staged, found {staged:?}");
    stderr
}

/// Every file under `dir` (none if it does not exist).
fn walk_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            if e.path().is_dir() {
                walk_files(&e.path())
            } else {
                vec![e.path().display().to_string()]
            }
        })
        .collect()
}

/// Starts the TLS proxy on `port` in front of `broker`.
fn start_proxy(processes: &mut Processes, port: u16, pem: &Path, broker: &Broker) {
    processes.spawn(
        Command::new(python())
            .arg("-c")
            .arg(TLS_PROXY)
            .arg(port.to_string())
            .arg(pem)
            .arg(broker.port().to_string()),
    );
    wait_for(Duration::from_secs(30), "the TLS proxy to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

/// Over TLS with SCRAM-SHA-512 every record reaches the table; a wrong
/// password and an untrusted certificate each stop ingest at start with an
/// error naming the problem, a non-zero exit and nothing staged.
#[test]
fn tls_and_sasl_connect_and_bad_credentials_or_certificates_fail_at_start() {
    let dir = tempfile::tempdir().unwrap();
    run_python(CERTIFICATES, &[dir.path().to_str().unwrap()]);
    let mut broker = Broker::start(dir.path());
    broker.create_topic("events", 2);
    broker.create_user(USER, PASSWORD);
    let (lines, expected) = envelopes(0, 3_000);
    wait_produced(produce(dir.path(), &broker, "events", 2, &lines, 0, 0));

    let port = free_port();
    broker.require_authentication(format!("localhost:{port}"));
    let mut processes = Processes::default();
    start_proxy(
        &mut processes,
        port,
        &dir.path().join("server.pem"),
        &broker,
    );

    let refused_table = dir.path().join("refused");
    let trusted = secure_config(
        dir.path(),
        &broker,
        &refused_table,
        port,
        &dir.path().join("ca.pem"),
    );
    let stderr = ingest_refused(&trusted, "not-the-password", &refused_table);
    assert!(
        stderr.contains("SASL authentication failed"),
        "the error must name the authentication failure: {stderr}"
    );

    let untrusting_table = dir.path().join("untrusting");
    let untrusting = secure_config(
        dir.path(),
        &broker,
        &untrusting_table,
        port,
        &dir.path().join("other-ca.pem"),
    );
    let stderr = ingest_refused(&untrusting, PASSWORD, &untrusting_table);
    assert!(
        stderr.contains("TLS handshake failed") && stderr.contains("certificate verify failed"),
        "the error must name the untrusted certificate: {stderr}"
    );

    let table = dir.path().join("table");
    let config = secure_config(
        dir.path(),
        &broker,
        &table,
        port,
        &dir.path().join("ca.pem"),
    );
    processes.spawn(
        tributary()
            .args(["ingest", "--config", &config])
            .env(PASSWORD_VARIABLE, PASSWORD),
    );
    compact_until_complete(
        Path::new(&config),
        &table,
        &expected,
        Duration::from_secs(120),
    );
    drop(processes);
    run_ok(&["compact", "--config", &config, "--once"]);
    assert_keys(&table, &expected);
}
