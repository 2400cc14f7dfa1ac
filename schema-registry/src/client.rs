//! The registry client of ingest: schema references to prepared decoders.
//!
//! * A bounded LRU cache maps a reference (UUID, Confluent id or
//!   fingerprint) to the parsed definition and its compiled [`Plan`]; nothing
//!   is parsed or compiled per message.
//! * One fetch per reference at a time: concurrent lookups of a missing
//!   reference wait for the first one's answer.
//! * A reference the registry says it does not know is remembered as unknown
//!   for `unknown_ttl`, then asked again (it may have been registered since).
//! * Schema versions are immutable, so a cached entry never expires: an
//!   outage only affects references not seen before, and
//!   [`Client::resolve_waiting`] retries those with backoff until the
//!   registry answers. An outage never makes a schema "unknown".

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::schema::{Definition, Imports, Parsed, Reference, SchemaType};
use tributary_decode::avro::{FlattenRules, Plan, PlanError};
use tributary_decode::json_schema::JsonValidator;
use tributary_decode::protobuf;
use tributary_decode::wire::SchemaRef;

/// A schema ready to decode with.
#[derive(Debug)]
pub struct Prepared {
    /// The definition.
    pub definition: Definition,
    /// How data written with it decodes.
    pub decoding: Decoding,
}

/// How data written with a schema decodes.
#[derive(Debug)]
#[non_exhaustive]
pub enum Decoding {
    /// As JSON text; with the JSON Schema compiled to validate payloads
    /// (or why it cannot validate).
    Json(Result<JsonValidator, String>),
    /// With the compiled Avro plan, or not (why the schema cannot be
    /// flattened).
    Avro(Result<Plan, PlanError>),
    /// With the compiled plans of the file's message types.
    Protobuf(protobuf::Plan),
}

/// The answer for one reference.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The schema, prepared.
    Found(Arc<Prepared>),
    /// The registry confirmed it does not know the reference (the reason).
    Unknown(Arc<str>),
}

/// The registry could not be asked (unreachable, timeout, 5xx, throttling).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the schema registry is unavailable: {0}")]
pub struct Unavailable(pub String);

/// A registry's answer before preparation.
pub(crate) enum Answer {
    /// The definition, the versions it references and what they import.
    Found {
        kind: SchemaType,
        text: String,
        references: Vec<Reference>,
        imports: Imports,
    },
    Unknown(String),
}

impl Answer {
    /// A definition that references nothing.
    pub(crate) fn found(kind: SchemaType, text: String) -> Self {
        Answer::Found {
            kind,
            text,
            references: Vec::new(),
            imports: Imports::new(),
        }
    }
}

/// Where schemas are fetched from.
enum Backend {
    /// Tributary's registry, or any Confluent-compatible one.
    Http {
        base: String,
        token: Option<String>,
        http: reqwest::Client,
    },
    /// AWS Glue Schema Registry.
    Glue(crate::glue::Glue),
    /// A fixed set of schemas (an embedded registry, benchmarks).
    Fixed(HashMap<SchemaRef, (SchemaType, String)>),
}

/// The client's settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How records are flattened (compiled into every plan).
    pub rules: FlattenRules,
    /// The reader schema every Avro record is resolved to, if any.
    pub reader: Option<apache_avro::Schema>,
    /// Most entries kept.
    pub capacity: usize,
    /// How long an unknown reference stays unknown before it is asked again.
    pub unknown_ttl: Duration,
    /// Longest wait between retries during an outage.
    pub max_backoff: Duration,
}

/// Resolves schema references, caching prepared decoders.
pub struct Client {
    backend: Backend,
    options: ClientOptions,
    cache: Mutex<Lru>,
    inflight: tokio::sync::Mutex<HashMap<SchemaRef, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.backend {
            Backend::Http { base, .. } => base.as_str(),
            Backend::Glue(_) => "AWS Glue",
            Backend::Fixed(_) => "fixed",
        };
        f.debug_struct("Client").field("backend", &backend).finish()
    }
}

impl Client {
    /// A client of the registry at `base` (e.g. `http://registry:8081`).
    pub fn http(
        base: &str,
        token: Option<String>,
        timeout: Duration,
        options: ClientOptions,
    ) -> Result<Self, Unavailable> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| Unavailable(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self::new(
            Backend::Http {
                base: base.trim_end_matches('/').to_string(),
                token,
                http,
            },
            options,
        ))
    }

    /// A client of AWS Glue Schema Registry, with the AWS SDK's default
    /// credential chain, `region` (or the default region chain) and an
    /// optional endpoint override.
    pub async fn glue(
        region: Option<String>,
        endpoint: Option<String>,
        timeout: Duration,
        options: ClientOptions,
    ) -> Result<Self, Unavailable> {
        let glue = crate::glue::Glue::new(region, endpoint, timeout).await?;
        Ok(Self::new(Backend::Glue(glue), options))
    }

    /// A client that knows exactly `schemas` and nothing else: for an
    /// embedded registry and for benchmarks.
    pub fn fixed(
        schemas: impl IntoIterator<Item = (SchemaRef, SchemaType, String)>,
        options: ClientOptions,
    ) -> Self {
        let schemas = schemas
            .into_iter()
            .map(|(r, kind, text)| (r, (kind, text)))
            .collect();
        Self::new(Backend::Fixed(schemas), options)
    }

    fn new(backend: Backend, options: ClientOptions) -> Self {
        let cache = Mutex::new(Lru::new(options.capacity));
        Self {
            backend,
            options,
            cache,
            inflight: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The cached answer for `reference`, if it is cached and current.
    pub fn cached(&self, reference: SchemaRef) -> Option<Lookup> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let lookup = match cache.get(&reference)? {
            Entry::Found(prepared) => Lookup::Found(prepared.clone()),
            Entry::Unknown { reason, until } if Instant::now() < *until => {
                Lookup::Unknown(reason.clone())
            }
            Entry::Unknown { .. } => {
                // Expired: ask again, and free its slot meanwhile.
                cache.remove(&reference);
                return None;
            }
        };
        Some(lookup)
    }

    /// Resolves `reference`: from the cache, or with one fetch (shared with
    /// concurrent callers).
    pub async fn resolve(&self, reference: SchemaRef) -> Result<Lookup, Unavailable> {
        if let Some(hit) = self.cached(reference) {
            return Ok(hit);
        }
        let gate = {
            let mut inflight = self.inflight.lock().await;
            inflight.entry(reference).or_default().clone()
        };
        let _turn = gate.lock().await;
        // Whoever held the gate before us may have filled the cache.
        if let Some(hit) = self.cached(reference) {
            return Ok(hit);
        }
        let answer = match self.fetch(reference).await {
            Ok(answer) => answer,
            Err(e) => {
                self.inflight.lock().await.remove(&reference);
                return Err(e);
            }
        };
        let entry = match answer {
            Answer::Found {
                kind,
                text,
                references,
                imports,
            } => match Definition::parse_with_references(kind, &text, references, imports) {
                Ok(definition) => Entry::Found(Arc::new(self.prepare(definition))),
                Err(e) => Entry::unknown(
                    format!(
                        "the registry's definition of {} is invalid: {e}",
                        describe(reference)
                    ),
                    self.options.unknown_ttl,
                ),
            },
            Answer::Unknown(reason) => Entry::unknown(reason, self.options.unknown_ttl),
        };
        let lookup = match &entry {
            Entry::Found(prepared) => Lookup::Found(prepared.clone()),
            Entry::Unknown { reason, .. } => Lookup::Unknown(reason.clone()),
        };
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(reference, entry);
        // Only now, with the answer cached, may a new caller start a fetch.
        self.inflight.lock().await.remove(&reference);
        Ok(lookup)
    }

    /// Resolves `reference`, retrying with exponential backoff (from 100 ms
    /// to `max_backoff`) for as long as the registry is unavailable.
    /// `on_retry` hears about each failed attempt and the wait before the
    /// next one.
    pub async fn resolve_waiting(
        &self,
        reference: SchemaRef,
        mut on_retry: impl FnMut(&Unavailable, Duration),
    ) -> Lookup {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.resolve(reference).await {
                Ok(lookup) => return lookup,
                Err(e) => {
                    on_retry(&e, wait);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.options.max_backoff);
                }
            }
        }
    }

    fn prepare(&self, definition: Definition) -> Prepared {
        let rules = &self.options.rules;
        let decoding = match definition.parsed() {
            Parsed::Avro(writer) => {
                Decoding::Avro(Plan::compile(writer, self.options.reader.as_ref(), rules))
            }
            Parsed::Protobuf(file) => Decoding::Protobuf(protobuf::Plan::compile(file, rules)),
            Parsed::Json(schema) => Decoding::Json(JsonValidator::compile(schema)),
        };
        Prepared {
            definition,
            decoding,
        }
    }

    async fn fetch(&self, reference: SchemaRef) -> Result<Answer, Unavailable> {
        match &self.backend {
            Backend::Fixed(schemas) => Ok(match schemas.get(&reference) {
                Some((kind, text)) => Answer::found(*kind, text.clone()),
                None => Answer::Unknown(format!("{} is not registered", describe(reference))),
            }),
            Backend::Http { base, token, http } => {
                fetch_http(base, token.as_deref(), http, reference).await
            }
            Backend::Glue(glue) => glue.fetch(reference).await,
        }
    }
}

/// A reference in words, for errors.
pub fn describe(reference: SchemaRef) -> String {
    match reference {
        SchemaRef::Uuid(uuid) => format!("schema {uuid}"),
        SchemaRef::ConfluentId(id) => format!("schema id {id}"),
        SchemaRef::Fingerprint(fp) => format!("schema with fingerprint {fp:016x}"),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaResponse {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

/// Schemas import each other at most this deep.
const MAX_IMPORT_DEPTH: usize = 32;

async fn fetch_http(
    base: &str,
    token: Option<&str>,
    http: &reqwest::Client,
    reference: SchemaRef,
) -> Result<Answer, Unavailable> {
    let url = match reference {
        SchemaRef::Uuid(uuid) => format!("{base}/schemas/guids/{uuid}"),
        SchemaRef::ConfluentId(id) => format!("{base}/schemas/ids/{id}"),
        SchemaRef::Fingerprint(fp) => format!("{base}/schemas/fingerprints/{fp:016x}"),
    };
    let fetch = Fetch { token, http };
    let Some(parsed) = fetch.get(&url).await? else {
        return Ok(Answer::Unknown(format!(
            "the registry at {base} does not know {}",
            describe(reference)
        )));
    };
    let mut imports = Imports::new();
    match fetch
        .imports(base, &parsed.references, &mut imports, 0)
        .await
    {
        Ok(()) => {}
        Err(ImportError::Unavailable(e)) => return Err(e),
        Err(ImportError::Refused(why)) => {
            return Ok(Answer::Unknown(format!("{}: {why}", describe(reference))));
        }
    }
    Ok(match schema_type(&parsed) {
        Ok(kind) => Answer::Found {
            kind,
            text: parsed.schema,
            references: parsed.references,
            imports,
        },
        Err(e) => Answer::Unknown(format!("{}: {e}", describe(reference))),
    })
}

fn schema_type(response: &SchemaResponse) -> Result<SchemaType, crate::schema::SchemaError> {
    response
        .schema_type
        .as_deref()
        .map_or(Ok(SchemaType::Avro), str::parse)
}

/// Why a schema's references could not be imported.
enum ImportError {
    /// The registry could not be asked.
    Unavailable(Unavailable),
    /// A reference cannot be imported (the reason).
    Refused(String),
}

impl From<Unavailable> for ImportError {
    fn from(e: Unavailable) -> Self {
        ImportError::Unavailable(e)
    }
}

/// GET requests to an HTTP registry.
struct Fetch<'a> {
    token: Option<&'a str>,
    http: &'a reqwest::Client,
}

impl Fetch<'_> {
    /// The schema at `url`; `None` when the registry answers 404.
    async fn get(&self, url: &str) -> Result<Option<SchemaResponse>, Unavailable> {
        let mut request = self.http.get(url);
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Unavailable(format!("GET {url}: {e}")))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| Unavailable(format!("GET {url}: {e}")))?;
        if !status.is_success() {
            return Err(Unavailable(format!(
                "GET {url}: HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| Unavailable(format!("GET {url}: unreadable answer: {e}")))
    }

    /// Adds what `references` import (the referenced versions, and what they
    /// import) to `imports`.
    async fn imports(
        &self,
        base: &str,
        references: &[Reference],
        imports: &mut Imports,
        depth: usize,
    ) -> Result<(), ImportError> {
        let refused = |why: String| Err(ImportError::Refused(why));
        if depth > MAX_IMPORT_DEPTH && !references.is_empty() {
            return refused(format!("imports nest deeper than {MAX_IMPORT_DEPTH}"));
        }
        for reference in references {
            if imports.contains_key(&reference.name) {
                continue;
            }
            let mut url = match reqwest::Url::parse(base) {
                Ok(url) => url,
                Err(e) => return refused(format!("registry URL {base}: {e}")),
            };
            if let Ok(mut path) = url.path_segments_mut() {
                path.pop_if_empty()
                    .extend(["subjects", &reference.subject, "versions"])
                    .push(&reference.version.to_string());
            }
            let Some(found) = self.get(url.as_str()).await? else {
                return refused(format!(
                    "the registry has no version {} of subject `{}`, imported as `{}`",
                    reference.version, reference.subject, reference.name
                ));
            };
            let kind = match schema_type(&found) {
                Ok(kind) => kind,
                Err(e) => return refused(format!("import `{}`: {e}", reference.name)),
            };
            imports.insert(reference.name.clone(), (kind, found.schema.clone()));
            Box::pin(self.imports(base, &found.references, imports, depth + 1)).await?;
        }
        Ok(())
    }
}

/// What the cache holds for a reference.
enum Entry {
    Found(Arc<Prepared>),
    Unknown { reason: Arc<str>, until: Instant },
}

impl Entry {
    fn unknown(reason: String, ttl: Duration) -> Self {
        Entry::Unknown {
            reason: reason.into(),
            until: Instant::now() + ttl,
        }
    }
}

/// A least-recently-used map: a use stamp per entry, entries by stamp.
struct Lru {
    entries: HashMap<SchemaRef, (Entry, u64)>,
    by_use: BTreeMap<u64, SchemaRef>,
    next: u64,
    capacity: usize,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
            next: 0,
            capacity: capacity.max(1),
        }
    }

    fn get(&mut self, key: &SchemaRef) -> Option<&Entry> {
        let (_, stamp) = self.entries.get_mut(key)?;
        self.by_use.remove(stamp);
        *stamp = self.next;
        self.by_use.insert(self.next, *key);
        self.next += 1;
        self.entries.get(key).map(|(entry, _)| entry)
    }

    fn remove(&mut self, key: &SchemaRef) {
        if let Some((_, stamp)) = self.entries.remove(key) {
            self.by_use.remove(&stamp);
        }
    }

    fn insert(&mut self, key: SchemaRef, entry: Entry) {
        self.remove(&key);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.entries.insert(key, (entry, self.next));
        self.by_use.insert(self.next, key);
        self.next += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INT: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;

    fn options(capacity: usize) -> ClientOptions {
        ClientOptions {
            rules: FlattenRules::default(),
            reader: None,
            capacity,
            unknown_ttl: Duration::from_millis(50),
            max_backoff: Duration::from_millis(100),
        }
    }

    fn id(n: u32) -> SchemaRef {
        SchemaRef::ConfluentId(n)
    }

    #[tokio::test]
    async fn found_unknown_and_evicted_entries() {
        let client = Client::fixed(
            (1..=3).map(|n| (id(n), SchemaType::Avro, INT.to_string())),
            options(2),
        );
        let Lookup::Found(prepared) = client.resolve(id(1)).await.unwrap() else {
            panic!("id 1 is known");
        };
        assert!(matches!(prepared.decoding, Decoding::Avro(Ok(_))));
        assert!(matches!(
            client.resolve(id(9)).await.unwrap(),
            Lookup::Unknown(_)
        ));
        assert!(matches!(client.cached(id(9)), Some(Lookup::Unknown(_))));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(client.cached(id(9)).is_none(), "unknown entries expire");

        client.resolve(id(2)).await.unwrap();
        client.cached(id(1)); // 1 is now more recent than 2
        client.resolve(id(3)).await.unwrap();
        assert!(client.cached(id(1)).is_some());
        assert!(
            client.cached(id(2)).is_none(),
            "the least recently used entry goes"
        );
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_unavailable_never_unknown() {
        // Nothing listens on port 9 of localhost (discard), so connecting fails.
        let client = Client::http(
            "http://127.0.0.1:9",
            None,
            Duration::from_millis(200),
            options(4),
        )
        .unwrap();
        assert!(client.resolve(id(1)).await.is_err());
        let mut retries = 0;
        let waited = tokio::time::timeout(
            Duration::from_millis(500),
            client.resolve_waiting(id(1), |_, _| retries += 1),
        )
        .await;
        assert!(waited.is_err(), "it keeps waiting");
        assert!(retries >= 2);
    }
}
