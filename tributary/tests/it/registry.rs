//! `tributary registry serve`: replicas racing on one store (a local
//! directory and S3), deletes, auth scopes, error codes, and Confluent's own
//! Python client (`confluent-kafka`'s `SchemaRegistryClient`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::operations::{Processes, free_port, wait_for};
use crate::{run_python, s3};

/// One HTTP/1.1 request; returns the status and the body (JSON `null` when
/// the body is not JSON). `None` when the server cannot be reached.
fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\
         Content-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8(response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

fn call(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    request(port, method, path, None, body)
        .unwrap_or_else(|| panic!("{method} {path}: no answer from port {port}"))
}

/// Starts a replica on `store_uri`; returns its port once it is ready.
pub(crate) fn start(processes: &mut Processes, dir: &Path, store_uri: &str, extra: &str) -> u16 {
    let port = free_port();
    let config = dir.join(format!("registry-{port}.toml"));
    let s3 = if store_uri.starts_with("s3://") {
        format!(
            "[registry.s3]\nendpoint = \"{}\"\nallow_http = true\npath_style = true\nregion = \"us-east-1\"\n",
            s3::endpoint()
        )
    } else {
        String::new()
    };
    std::fs::write(
        &config,
        format!("[registry]\nname = \"it\"\nstore_uri = \"{store_uri}\"\n{extra}\n{s3}"),
    )
    .unwrap();
    processes.spawn(
        Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(["registry", "serve", "--config"])
            .arg(&config)
            .env("TRIBUTARY_LOG", "warn")
            .env(
                "TRIBUTARY_REGISTRY__LISTEN_ADDR",
                format!("127.0.0.1:{port}"),
            ),
    );
    wait_for(Duration::from_secs(30), "the registry to be ready", || {
        let (status, _) = request(port, "GET", "/readyz", None, None)?;
        (status == 200).then_some(())
    });
    port
}

/// An Avro record `R` with a `long` field `id` and optional string fields
/// (each with a default, so every such schema can read the others' data).
fn record(fields: &[String]) -> Value {
    let mut all = vec![json!({"name": "id", "type": "long"})];
    all.extend(
        fields
            .iter()
            .map(|f| json!({"name": f, "type": "string", "default": ""})),
    );
    let schema = json!({"type": "record", "name": "R", "fields": all});
    json!({ "schema": schema.to_string() })
}

/// Each replica's client registers, per subject, a growing sequence of
/// schemas; half are the same on both sides, half differ. Both replicas end
/// with the same history, which holds every answer either gave.
fn replicas_agree(store_uri: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut processes = Processes::default();
    let ports = [
        start(&mut processes, dir.path(), store_uri, ""),
        start(&mut processes, dir.path(), store_uri, ""),
    ];
    let subjects: Vec<String> = (0..4).map(|i| format!("orders-{i}-value")).collect();
    let answers: Vec<Vec<(String, String, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ports
            .iter()
            .enumerate()
            .map(|(side, &port)| {
                let subjects = &subjects;
                scope.spawn(move || {
                    let mut answers = Vec::new();
                    for step in 0..6 {
                        for subject in subjects {
                            // Even steps: the same schema on both sides;
                            // odd steps: each side its own field.
                            let mut fields: Vec<String> = (0..step)
                                .filter(|s| s % 2 == 0)
                                .map(|s| format!("shared_{s}"))
                                .collect();
                            if step % 2 == 1 {
                                fields.push(format!("side{side}_{step}"));
                            }
                            let path = format!("/subjects/{subject}/versions");
                            let (status, body) = call(port, "POST", &path, Some(&record(&fields)));
                            assert_eq!(status, 200, "{subject} step {step}: {body}");
                            answers.push((
                                subject.clone(),
                                body["guid"].as_str().unwrap().to_string(),
                                body["id"].as_u64().unwrap(),
                            ));
                        }
                    }
                    answers
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut id_of_guid: BTreeMap<String, u64> = BTreeMap::new();
    for subject in &subjects {
        let histories: Vec<Vec<(u64, String, u64)>> = ports
            .iter()
            .map(|&port| {
                let (status, versions) =
                    call(port, "GET", &format!("/subjects/{subject}/versions"), None);
                assert_eq!(status, 200, "{versions}");
                versions
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| {
                        let v = v.as_u64().unwrap();
                        let path = format!("/subjects/{subject}/versions/{v}");
                        let (status, body) = call(port, "GET", &path, None);
                        assert_eq!(status, 200, "{body}");
                        assert_eq!(body["subject"], json!(subject));
                        (
                            v,
                            body["guid"].as_str().unwrap().to_string(),
                            body["id"].as_u64().unwrap(),
                        )
                    })
                    .collect()
            })
            .collect();
        assert_eq!(histories[0], histories[1], "both replicas see one history");
        let history = &histories[0];
        let numbers: Vec<u64> = history.iter().map(|(v, _, _)| *v).collect();
        assert_eq!(
            numbers,
            (1..=history.len() as u64).collect::<Vec<_>>(),
            "versions are numbered without gaps"
        );
        let guids: BTreeSet<&String> = history.iter().map(|(_, g, _)| g).collect();
        assert_eq!(guids.len(), history.len(), "a schema is registered once");
        // Shared steps register once, own steps once per side: 3 + 3 × 2.
        assert_eq!(history.len(), 9, "{history:?}");
        for (subject_of_answer, guid, id) in answers.iter().flatten() {
            if subject_of_answer == subject {
                assert!(guids.contains(guid), "answered {guid} is in the history");
                let ids = history.iter().find(|(_, g, _)| g == guid).unwrap().2;
                assert_eq!(ids, *id, "one id per schema");
            }
        }
        for (_, guid, id) in history {
            assert_eq!(*id_of_guid.entry(guid.clone()).or_insert(*id), *id);
        }
    }
    // Ids name one schema each, and every replica serves them the same.
    let ids: BTreeSet<u64> = id_of_guid.values().copied().collect();
    assert_eq!(
        ids.len(),
        id_of_guid.len(),
        "distinct schemas get distinct ids"
    );
    for (guid, id) in &id_of_guid {
        for &port in &ports {
            let (status, body) = call(port, "GET", &format!("/schemas/ids/{id}"), None);
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["guid"], json!(guid));
            let (status, body) = call(port, "GET", &format!("/schemas/guids/{guid}"), None);
            assert_eq!((status, &body["id"]), (200, &json!(id)), "{body}");
        }
    }
}

#[test]
fn registry_replicas_on_one_directory_agree_on_one_history() {
    let dir = tempfile::tempdir().unwrap();
    replicas_agree(dir.path().join("store").to_str().unwrap());
}

#[test]
fn registry_replicas_on_s3_agree_on_one_history() {
    let uri = s3::new_table("registry");
    replicas_agree(uri.to_str().unwrap());
}

#[test]
fn registry_deletes_and_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut processes = Processes::default();
    let store = dir.path().join("store");
    let port = start(&mut processes, dir.path(), store.to_str().unwrap(), "");
    let code = |(status, body): (u16, Value)| (status, body["error_code"].as_u64().unwrap_or(0));

    let v1 = record(&[]);
    let v2 = record(&["name".into()]);
    let (_, first) = call(port, "POST", "/subjects/s/versions", Some(&v1));
    let (_, second) = call(port, "POST", "/subjects/s/versions", Some(&v2));
    let guid = first["guid"].as_str().unwrap().to_string();

    // Lookups, raw schema, fingerprint.
    let (status, found) = call(port, "POST", "/subjects/s", Some(&v2));
    assert_eq!((status, &found["version"]), (200, &json!(2)), "{found}");
    assert_eq!(found["id"], second["id"]);
    let (status, latest) = call(port, "GET", "/subjects/s/versions/latest", None);
    assert_eq!((status, &latest["version"]), (200, &json!(2)));
    assert!(
        latest.get("schemaType").is_none(),
        "AVRO is implied: {latest}"
    );
    let (status, raw) = call(port, "GET", "/subjects/s/versions/1/schema", None);
    assert_eq!((status, &raw["type"]), (200, &json!("record")), "{raw}");
    let fingerprint = run_python(
        "import fastavro, json, sys\n\
         s = fastavro.parse_schema(json.loads(sys.argv[1]))\n\
         from fastavro.schema import fingerprint, to_parsing_canonical_form\n\
         fp = fingerprint(to_parsing_canonical_form(s), 'CRC-64-AVRO')\n\
         # fastavro prints the header's little-endian bytes; the API takes the number.\n\
         print(bytes.fromhex(fp)[::-1].hex())",
        &[v1["schema"].as_str().unwrap()],
    );
    let (status, by_fingerprint) = call(
        port,
        "GET",
        &format!("/schemas/fingerprints/{}", fingerprint.trim()),
        None,
    );
    assert_eq!((status, &by_fingerprint["guid"]), (200, &json!(guid)));

    // Errors, each with its code and the bad value named.
    assert_eq!(
        code(call(port, "GET", "/subjects/none/versions", None)),
        (404, 40401)
    );
    assert_eq!(
        code(call(port, "GET", "/subjects/s/versions/7", None)),
        (404, 40402)
    );
    let (status, body) = call(port, "GET", "/subjects/s/versions/zero", None);
    assert_eq!((status, body["error_code"].as_u64()), (422, Some(42202)));
    assert!(body["message"].as_str().unwrap().contains("zero"), "{body}");
    assert_eq!(
        code(call(port, "GET", "/schemas/ids/999", None)),
        (404, 40403)
    );
    let unknown = "/schemas/guids/00000000-0000-8000-8000-000000000000";
    assert_eq!(code(call(port, "GET", unknown, None)), (404, 40403));
    let unknown = "/schemas/fingerprints/0123456789abcdef";
    assert_eq!(code(call(port, "GET", unknown, None)), (404, 40403));
    let (status, body) = call(
        port,
        "PUT",
        "/config",
        Some(&json!({"compatibility": "SIDEWAYS"})),
    );
    assert_eq!((status, body["error_code"].as_u64()), (422, Some(42203)));
    assert!(
        body["message"].as_str().unwrap().contains("SIDEWAYS"),
        "{body}"
    );
    let bad = json!({"schema": "{\"type\": \"record\", \"name\": \"R\"}"});
    assert_eq!(
        code(call(port, "POST", "/subjects/s/versions", Some(&bad))),
        (422, 42201)
    );
    let long = json!({"schema": format!("\"{}\"", "x".repeat(170_001))});
    let (status, body) = call(port, "POST", "/subjects/big/versions", Some(&long));
    assert_eq!((status, body["error_code"].as_u64()), (422, Some(42201)));
    assert!(
        body["message"].as_str().unwrap().contains("170000"),
        "{body}"
    );
    let incompatible = json!({"schema": json!({"type": "record", "name": "R",
        "fields": [{"name": "id", "type": "string"}]}).to_string()});
    let (status, body) = call(port, "POST", "/subjects/s/versions", Some(&incompatible));
    assert_eq!(
        (status, body["error_code"].as_u64()),
        (409, Some(409)),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("id"), "{body}");

    // Compatibility tests and configuration.
    let (status, body) = call(
        port,
        "POST",
        "/compatibility/subjects/s/versions/latest",
        Some(&incompatible),
    );
    assert_eq!(
        (status, &body["is_compatible"]),
        (200, &json!(false)),
        "{body}"
    );
    assert!(!body["messages"].as_array().unwrap().is_empty());
    let (_, body) = call(
        port,
        "PUT",
        "/config/s",
        Some(&json!({"compatibility": "NONE"})),
    );
    assert_eq!(body, json!({"compatibility": "NONE"}));
    let (_, body) = call(port, "GET", "/config/s", None);
    assert_eq!(body, json!({"compatibilityLevel": "NONE"}));
    assert_eq!(code(call(port, "GET", "/config/other", None)), (404, 40408));
    let (_, body) = call(port, "GET", "/config", None);
    assert_eq!(body, json!({"compatibilityLevel": "BACKWARD"}));
    let (status, _) = call(port, "POST", "/subjects/s/versions", Some(&incompatible));
    assert_eq!(status, 200, "NONE accepts anything");

    // Deletes: a version, then the subject; permanent only after soft.
    assert_eq!(
        code(call(
            port,
            "DELETE",
            "/subjects/s/versions/1?permanent=true",
            None
        )),
        (404, 40407)
    );
    assert_eq!(
        call(port, "DELETE", "/subjects/s/versions/1", None),
        (200, json!(1))
    );
    assert_eq!(
        code(call(port, "DELETE", "/subjects/s/versions/1", None)),
        (404, 40406)
    );
    assert_eq!(
        code(call(port, "GET", "/subjects/s/versions/1", None)),
        (404, 40402)
    );
    let (status, _) = call(port, "GET", "/subjects/s/versions/1?deleted=true", None);
    assert_eq!(status, 200);
    assert_eq!(
        call(port, "GET", "/subjects/s/versions", None),
        (200, json!([2, 3]))
    );
    assert_eq!(
        code(call(port, "DELETE", "/subjects/s?permanent=true", None)),
        (404, 40405)
    );
    assert_eq!(
        call(port, "DELETE", "/subjects/s", None),
        (200, json!([2, 3]))
    );
    assert_eq!(
        code(call(port, "DELETE", "/subjects/s", None)),
        (404, 40404)
    );
    assert_eq!(call(port, "GET", "/subjects", None), (200, json!([])));
    assert_eq!(
        call(port, "GET", "/subjects?deleted=true", None),
        (200, json!(["s"]))
    );
    // Lookups by UUID and id keep working after a soft delete …
    let (status, _) = call(port, "GET", &format!("/schemas/guids/{guid}"), None);
    assert_eq!(status, 200);
    assert_eq!(
        call(port, "DELETE", "/subjects/s?permanent=true", None),
        (200, json!([1, 2, 3]))
    );
    assert_eq!(
        code(call(port, "GET", "/subjects/s/versions?deleted=true", None)),
        (404, 40401)
    );
    // … and after a permanent one (other subjects or data may use them).
    let (status, _) = call(port, "GET", &format!("/schemas/ids/{}", first["id"]), None);
    assert_eq!(status, 200);

    // Metrics count requests by route and status.
    let metrics = wait_for(Duration::from_secs(5), "metrics", || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(stream, "GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    });
    assert!(
        metrics.contains(
            r#"tributary_registry_requests_total{method="POST",route="/subjects/{subject}/versions",status="409"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("tributary_registry_registrations_total 3"),
        "{metrics}"
    );
}

#[test]
fn registry_tokens_have_read_and_write_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let mut processes = Processes::default();
    let store = dir.path().join("store");
    let digest = |token: &str| {
        run_python(
            "import hashlib, sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())",
            &[token],
        )
        .trim()
        .to_string()
    };
    let tokens = format!(
        "[[registry.tokens]]\nname = \"reader\"\nsha256 = \"{}\"\nscope = \"read\"\n\
         [[registry.tokens]]\nname = \"writer\"\nsha256 = \"{}\"\nscope = \"write\"\n",
        digest("reader-token"),
        digest("writer-token")
    );
    let port = start(&mut processes, dir.path(), store.to_str().unwrap(), &tokens);
    let schema = record(&[]);
    let register =
        |token| request(port, "POST", "/subjects/s/versions", token, Some(&schema)).unwrap();
    let code = |(status, body): (u16, Value)| (status, body["error_code"].as_u64().unwrap_or(0));

    assert_eq!(code(register(None)), (401, 40101));
    assert_eq!(code(register(Some("wrong"))), (401, 40101));
    let (status, body) = register(Some("reader-token"));
    assert_eq!((status, body["error_code"].as_u64()), (403, Some(40301)));
    assert!(
        body["message"].as_str().unwrap().contains("reader"),
        "{body}"
    );
    assert_eq!(register(Some("writer-token")).0, 200);

    let read = |token| request(port, "GET", "/subjects", token, None).unwrap();
    assert_eq!(code(read(None)), (401, 40101));
    assert_eq!(read(Some("reader-token")), (200, json!(["s"])));
    assert_eq!(read(Some("writer-token")), (200, json!(["s"])));
    // Looking up and testing compatibility are reads.
    let lookup = request(
        port,
        "POST",
        "/subjects/s",
        Some("reader-token"),
        Some(&schema),
    );
    assert_eq!(lookup.unwrap().0, 200);
    let config = json!({"compatibility": "FULL"});
    let put = request(port, "PUT", "/config", Some("reader-token"), Some(&config));
    assert_eq!(code(put.unwrap()), (403, 40301));
    // Probes and scrapers need no token.
    assert_eq!(request(port, "GET", "/healthz", None, None).unwrap().0, 200);
    assert_eq!(request(port, "GET", "/metrics", None, None).unwrap().0, 200);
}

/// Confluent's Python client against our server: register, fetch by id and
/// GUID, latest version, compatibility, configuration, deletes.
#[test]
fn registry_serves_confluent_kafka_schema_registry_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut processes = Processes::default();
    let store = dir.path().join("store");
    let port = start(&mut processes, dir.path(), store.to_str().unwrap(), "");
    let out = run_python(
        r#"
import json, sys
from confluent_kafka.schema_registry import SchemaRegistryClient, Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

client = SchemaRegistryClient({"url": sys.argv[1]})
v1 = json.dumps({"type": "record", "name": "Order", "namespace": "shop",
                 "fields": [{"name": "id", "type": "long"}]})
v2 = json.dumps({"type": "record", "name": "Order", "namespace": "shop",
                 "fields": [{"name": "id", "type": "long"},
                            {"name": "note", "type": "string", "default": ""}]})
bad = json.dumps({"type": "record", "name": "Order", "namespace": "shop",
                  "fields": [{"name": "id", "type": "string"}]})

id1 = client.register_schema("orders-value", Schema(v1, "AVRO"))
full = client.register_schema_full_response("orders-value", Schema(v1, "AVRO"))
assert full.schema_id == id1 and full.guid, full
fetched = client.get_schema(id1)
assert json.loads(fetched.schema_str)["name"] == "Order", fetched
assert fetched.schema_type == "AVRO"
by_guid = client.get_schema_by_guid(full.guid)
assert json.loads(by_guid.schema_str) == json.loads(fetched.schema_str)

assert client.test_compatibility("orders-value", Schema(v2, "AVRO"))
assert not client.test_compatibility("orders-value", Schema(bad, "AVRO"))
assert client.test_compatibility_all_versions("orders-value", Schema(v2, "AVRO"))
id2 = client.register_schema("orders-value", Schema(v2, "AVRO"))
assert id2 != id1
latest = client.get_latest_version("orders-value")
assert (latest.version, latest.schema_id) == (2, id2), latest
assert client.get_versions("orders-value") == [1, 2]
found = client.lookup_schema("orders-value", Schema(v1, "AVRO"))
assert found.version == 1, found
assert client.get_subjects() == ["orders-value"]

try:
    client.register_schema("orders-value", Schema(bad, "AVRO"))
    raise AssertionError("an incompatible schema was registered")
except SchemaRegistryError as e:
    assert e.http_status_code == 409, e

assert client.get_compatibility() == "BACKWARD"
client.set_compatibility(level="FULL")
assert client.get_compatibility() == "FULL"
client.set_compatibility("orders-value", "NONE")
assert client.get_compatibility("orders-value") == "NONE"
client.register_schema("orders-value", Schema(bad, "AVRO"))

try:
    client.get_schema(4242)
    raise AssertionError("an unknown id was found")
except SchemaRegistryError as e:
    assert (e.http_status_code, e.error_code) == (404, 40403), e

assert client.delete_version("orders-value", 1) == 1
assert client.get_versions("orders-value") == [2, 3]
assert client.delete_subject("orders-value") == [2, 3]
assert client.delete_subject("orders-value", permanent=True) == [1, 2, 3]
assert client.get_subjects() == []
assert json.loads(SchemaRegistryClient({"url": sys.argv[1]}).get_schema(id1).schema_str)["name"] == "Order"

# Schemas with decimals (bytes and fixed) evolve like any other; a decimal
# whose precision changes does not.
money = lambda extra, precision=10: json.dumps({"type": "record", "name": "Payment", "fields": [
    {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": 2}},
    {"name": "amount", "type": {"type": "fixed", "name": "Amount", "size": 8,
                                "logicalType": "decimal", "precision": 18, "scale": 4}}] + extra})
client.register_schema("payments-value", Schema(money([]), "AVRO"))
added = [{"name": "note", "type": "string", "default": ""}]
assert client.test_compatibility("payments-value", Schema(money(added), "AVRO"))
client.register_schema("payments-value", Schema(money(added), "AVRO"))
assert client.get_versions("payments-value") == [1, 2]
assert not client.test_compatibility("payments-value", Schema(money(added, precision=12), "AVRO"))

js = json.dumps({"type": "object", "properties": {"a": {"type": "string"}}})
jid = client.register_schema("events-value", Schema(js, "JSON"))
assert SchemaRegistryClient({"url": sys.argv[1]}).get_schema(jid).schema_type == "JSON"
print("ok")
"#,
        &[&format!("http://127.0.0.1:{port}")],
    );
    assert_eq!(out.trim(), "ok");
}
