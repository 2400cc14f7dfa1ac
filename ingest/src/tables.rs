//! The tables one ingest process writes, each opened when the first partition
//! feeding it is assigned (a `${topic}` template or a pattern names tables
//! only as topics appear), with its own column types, batch settings and
//! flattening.
//!
//! Without routing there is one table, opened at start, and ingest behaves
//! exactly as it did before routing existed. With `[ingest.routing]`:
//!
//! * table `NAME` is [`Config::table`]: `[lake]`, `[compact]` and
//!   `[ingest.flatten]` with `[tables.NAME]`'s overrides (a
//!   `[tables.NAME.flatten]` replaces `[ingest.flatten]` as a whole);
//! * its column types start from its own declared schema and the columns its
//!   Delta table already has, never another table's;
//! * its dead letters go to its own `_tributary/dead-letter/`, and its
//!   position chains and watermarks are its own;
//! * a Kafka tombstone is a delete in a table with upsert mode unless
//!   `ingest.kafka.tombstones` says otherwise;
//! * at most `ingest.routing.max_tables` tables are opened (it bounds the
//!   `table` label of the metrics and the clients held); one more is an
//!   error naming the key.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use tributary_config::{Config, FlattenConfig, IngestConfig, LakeConfig, Route, Tombstones};
use tributary_lake::{Lake, columns};
use tributary_schema_registry::client::Client;

use crate::batch::{BatchSettings, ColumnTypes};
use crate::error::{Error, Result};
use crate::fanout::{Destination, FanOut};
use crate::route::{Router, TableId};
use crate::schemas;

/// One table ingest writes, and how its batches are made.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) id: TableId,
    pub(crate) lake: Lake,
    pub(crate) settings: BatchSettings,
    /// Column types every partition of this table starts from: declared
    /// and in the table.
    pub(crate) types: ColumnTypes,
    /// The table's flattening (`[tables.NAME.flatten]`, else
    /// `[ingest.flatten]`).
    pub(crate) flatten: FlattenConfig,
    /// What a Kafka tombstone becomes in this table.
    pub(crate) tombstones: Tombstones,
    /// The delete marker a tombstone's row carries (`compact.delete_column`
    /// = `compact.delete_value`).
    pub(crate) delete_marker: (String, String),
    /// The registry client, shared by the tables that explode the same path.
    pub(crate) registry: Option<Arc<Client>>,
}

/// The tables of one ingest process. Cheap to clone (shared).
#[derive(Clone)]
pub struct Tables {
    inner: Arc<Inner>,
}

struct Inner {
    ingest: IngestConfig,
    router: Router,
    /// How a table's settings are found.
    resolve: Resolve,
    /// `ingest.routing.max_tables` (1 without routing).
    max_tables: usize,
    /// Tables opened or being opened: two partitions of one new table open
    /// it once, several new tables open side by side.
    opened: Mutex<BTreeMap<TableId, Arc<OnceCell<Arc<Table>>>>>,
    /// The opened tables' lakes, for readiness probes (which must not wait
    /// for a table being opened).
    lakes: Mutex<BTreeMap<TableId, Lake>>,
    /// Routed: the directory above the tables, probed before any is open.
    root: Option<Lake>,
    /// Registry clients by explode path: its plans are compiled for it.
    registries: tokio::sync::Mutex<HashMap<Option<String>, Arc<Client>>>,
}

enum Resolve {
    /// The one table of an unrouted configuration.
    Single { lake: Box<Lake> },
    /// A table per route: [`Config::table`].
    Routed(Box<Config>),
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables")
            .field("router", &self.inner.router)
            .field("max_tables", &self.inner.max_tables)
            .finish_non_exhaustive()
    }
}

impl Tables {
    /// The tables `config` names: its one table (`lake.table_uri`), or with
    /// `[ingest.routing]` a table per topic, opened as topics are assigned.
    pub fn new(config: &Config) -> Result<Self> {
        let ingest = config.require_ingest()?.clone();
        let Some(routing) = ingest.routing.as_ref().filter(|_| config.is_routed()) else {
            let table = config.single_table()?;
            return Ok(Self::with(
                ingest,
                Router::Single(TableId::new(&table.name)),
                Resolve::Single {
                    lake: Box::new(Lake::open(&table.lake)?),
                },
                1,
                None,
            ));
        };
        let router = Router::Topics(routing.router()?);
        let root = config
            .table_root()
            .map(|uri| {
                Lake::open(&LakeConfig {
                    table_uri: uri,
                    ..config.lake.clone()
                })
            })
            .transpose()?;
        let max_tables = routing.max_tables;
        Ok(Self::with(
            ingest,
            router,
            Resolve::Routed(Box::new(config.clone())),
            max_tables,
            root,
        ))
    }

    /// The one table `lake`, written as `config` says (no routing): what
    /// [`run()`](fn@crate::run) uses.
    pub fn single(config: &IngestConfig, lake: &Lake) -> Self {
        // As `Config::single_table` names it: the location's last segment.
        let name = lake
            .table_url()
            .path_segments()
            .and_then(|mut s| s.rfind(|s| !s.is_empty()))
            .map_or_else(|| "table".to_string(), tributary_config::safe_name);
        Self::with(
            config.clone(),
            Router::Single(TableId::new(&name)),
            Resolve::Single {
                lake: Box::new(lake.clone()),
            },
            1,
            None,
        )
    }

    fn with(
        ingest: IngestConfig,
        router: Router,
        resolve: Resolve,
        max_tables: usize,
        root: Option<Lake>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                ingest,
                router,
                resolve,
                max_tables,
                opened: Mutex::new(BTreeMap::new()),
                lakes: Mutex::new(BTreeMap::new()),
                root,
                registries: tokio::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether the tables come from `[ingest.routing]`.
    pub fn is_routed(&self) -> bool {
        self.inner.router.single().is_none()
    }

    /// The lakes to probe for readiness: every opened table, or before any
    /// is opened the directory above them (routed) or the one table.
    pub fn probe_lakes(&self) -> Vec<Lake> {
        let opened = self.inner.lakes.lock().unwrap_or_else(|e| e.into_inner());
        if !opened.is_empty() {
            return opened.values().cloned().collect();
        }
        match (&self.inner.resolve, &self.inner.root) {
            (Resolve::Single { lake }, _) => vec![lake.as_ref().clone()],
            (Resolve::Routed(_), Some(root)) => vec![root.clone()],
            (Resolve::Routed(_), None) => Vec::new(),
        }
    }

    /// The one table of an unrouted configuration (Kinesis and files
    /// sources), opened on first use.
    pub(crate) async fn the_table(&self) -> Result<Arc<Table>> {
        let Some(id) = self.inner.router.single() else {
            // Validation allows routing for Kafka and files only (which
            // use `of_topic`); this is a guard.
            return Err(Error::Config(tributary_config::ConfigError::Invalid {
                key: "ingest.routing".into(),
                value: "set".into(),
                reason: "routing is for the Kafka and files sources only".into(),
            }));
        };
        self.open(id).await
    }

    /// Where `topic`'s records go, its tables opened on first use.
    pub(crate) async fn of_topic(&self, topic: &str) -> Result<Destination> {
        match self.inner.router.route_of(topic)? {
            Route::Table(name) => Ok(Destination::Table(self.open(&TableId::new(&name)).await?)),
            Route::Field(route) => {
                let tables = route.tables().into_iter().map(|name| self.open_named(name));
                let tables = futures::future::try_join_all(tables).await?;
                Ok(Destination::Fan(Arc::new(FanOut::new(&route, tables)?)))
            }
        }
    }

    async fn open_named(&self, name: &str) -> Result<Arc<Table>> {
        self.open(&TableId::new(name)).await
    }

    /// Table `id`, opened (lake, column types, settings) on first use.
    async fn open(&self, id: &TableId) -> Result<Arc<Table>> {
        let cell = {
            let mut opened = self.inner.opened.lock().unwrap_or_else(|e| e.into_inner());
            match opened.get(id) {
                Some(cell) => cell.clone(),
                None if opened.len() >= self.inner.max_tables => {
                    return Err(Error::TooManyTables {
                        table: id.to_string(),
                        max_tables: self.inner.max_tables,
                    });
                }
                None => opened.entry(id.clone()).or_default().clone(),
            }
        };
        cell.get_or_try_init(|| self.load(id)).await.cloned()
    }

    /// Opens table `id`: its lake, settings, and column types (declared and
    /// in its Delta table).
    async fn load(&self, id: &TableId) -> Result<Arc<Table>> {
        let ingest = &self.inner.ingest;
        let kafka = ingest.kafka.as_ref();
        let (lake, flatten, tombstones, delete_marker) = match &self.inner.resolve {
            Resolve::Single { lake } => (
                lake.as_ref().clone(),
                ingest.flatten.clone(),
                kafka.and_then(|k| k.tombstones).unwrap_or_default(),
                kafka.map(|k| k.delete_marker.clone()).unwrap_or_default(),
            ),
            Resolve::Routed(config) => {
                let table = config.table(id.as_str())?;
                let tombstones = kafka.map(|k| table.tombstones(k)).unwrap_or_default();
                (
                    Lake::open(&table.lake)?,
                    table.flatten.clone(),
                    tombstones,
                    (
                        table.compact.delete_column.clone(),
                        table.compact.delete_value.clone(),
                    ),
                )
            }
        };
        let mut types = ColumnTypes::from_config(&flatten);
        if let Some(delta) = lake.load_table().await? {
            for (name, ty) in columns::table_columns(&delta)? {
                types.fix_table_column(&name, ty);
            }
        }
        let registry = self.registry(&flatten).await?;
        let table = Arc::new(Table {
            id: id.clone(),
            settings: BatchSettings::for_table(ingest, &flatten),
            lake: lake.clone(),
            types,
            flatten,
            tombstones,
            delete_marker,
            registry,
        });
        if self.is_routed() {
            tracing::info!(table = %id, uri = %lake.table_url(), "table opened");
        }
        self.inner
            .lakes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), lake);
        Ok(table)
    }

    /// Closes the routed tables `in_use` says no partition feeds any more
    /// (their topics' partitions were revoked), so that they no longer
    /// count toward `ingest.routing.max_tables`; a batch still being staged
    /// into one keeps it until it is done. A table is opened again when a
    /// partition feeding it is assigned again.
    pub(crate) fn close_unused(&self, in_use: impl Fn(&TableId) -> bool) {
        if !self.is_routed() {
            return;
        }
        let mut opened = self.inner.opened.lock().unwrap_or_else(|e| e.into_inner());
        let mut lakes = self.inner.lakes.lock().unwrap_or_else(|e| e.into_inner());
        opened.retain(|id, _| {
            let keep = in_use(id);
            if !keep {
                lakes.remove(id);
                tracing::info!(table = %id, "table closed: no assigned partition feeds it");
            }
            keep
        });
    }

    /// The registry client for tables flattened by `flatten` (one per
    /// explode path: a schema's plan is compiled for it).
    async fn registry(&self, flatten: &FlattenConfig) -> Result<Option<Arc<Client>>> {
        if self.inner.ingest.registry.is_none() {
            return Ok(None);
        }
        let mut clients = self.inner.registries.lock().await;
        if let Some(client) = clients.get(&flatten.explode) {
            return Ok(Some(client.clone()));
        }
        let Some(client) = schemas::client_for(&self.inner.ingest, flatten).await? else {
            return Ok(None);
        };
        let client = Arc::new(client);
        clients.insert(flatten.explode.clone(), client.clone());
        Ok(Some(client))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tributary_lake::rowfile::ColumnType;

    use super::*;

    /// A routed configuration: tables under `dir`, table `typed` in upsert
    /// mode with its own flattening declaring `amount` a double, and
    /// `routing`.
    fn routed(dir: &Path, routing: &str) -> Config {
        Config::from_toml_str(
            &format!(
                r#"
[lake]
table_uri = "{dir}/${{table}}"

[tables.typed.flatten]
key_field = "id"
[tables.typed.flatten.schema]
amount = "double"
[tables.typed.upsert]
order_by = "_position"

[ingest]
stream = "s"

[ingest.kafka]
brokers = "127.0.0.1:9092"
group_id = "g"
topics = ["a", "b", "typed"]

[ingest.routing]
{routing}
"#,
                dir = dir.display()
            ),
            std::iter::empty(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn topics_open_their_own_tables_up_to_max_tables() {
        let dir = tempfile::tempdir().unwrap();
        let config = routed(dir.path(), "template = \"${topic}\"\nmax_tables = 2");
        let tables = Tables::new(&config).unwrap();
        assert!(tables.is_routed());
        let a = tables.of_topic("a").await.unwrap().lead().clone();
        assert_eq!(a.id.as_str(), "a");
        assert!(a.lake.table_url().path().ends_with("/a/"));
        assert!(Arc::ptr_eq(&a, tables.of_topic("a").await.unwrap().lead()));
        // Its own flattening and declared types; not the other table's.
        let typed = tables.of_topic("typed").await.unwrap().lead().clone();
        assert_eq!(typed.types.get("amount"), Some(&ColumnType::Double));
        assert_eq!(typed.settings.key_field.as_deref(), Some("id"));
        assert_eq!(a.types.get("amount"), None);
        // An upsert table's tombstones are deletes by default; not others'.
        assert_eq!(typed.tombstones, Tombstones::Delete);
        assert_eq!(a.tombstones, Tombstones::DeadLetter);
        assert_eq!(tables.probe_lakes().len(), 2);

        let error = tables.of_topic("b").await.unwrap_err().to_string();
        assert!(error.contains("ingest.routing.max_tables (2)"), "{error}");
        assert!(error.contains("`b`"), "{error}");
        // Once no partition feeds `a`, it no longer counts.
        tables.close_unused(|id| id.as_str() != "a");
        assert_eq!(tables.of_topic("b").await.unwrap().lead().id.as_str(), "b");
        assert_eq!(tables.probe_lakes().len(), 2);
        // Kinesis and files cannot use a routed configuration.
        assert!(tables.the_table().await.is_err());
    }

    #[tokio::test]
    async fn a_topic_without_a_route_is_an_error_naming_it_and_the_routing() {
        let dir = tempfile::tempdir().unwrap();
        let config = routed(dir.path(), "topics = { \"a\" = \"x\" }");
        let tables = Tables::new(&config).unwrap();
        assert_eq!(tables.of_topic("a").await.unwrap().lead().id.as_str(), "x");
        let error = tables.of_topic("b").await.unwrap_err().to_string();
        assert!(
            error.contains("topic `b`") && error.contains("ingest.routing"),
            "{error}"
        );
        // Nothing was opened for it.
        assert_eq!(tables.probe_lakes().len(), 1);
    }

    #[tokio::test]
    async fn an_unrouted_configuration_has_its_one_table_for_every_topic() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml_str(
            &format!(
                "[lake]\ntable_uri = \"{}/logs\"\n[ingest]\nstream = \"s\"\n\
                 [ingest.files]\npath = \"in\"\n",
                dir.path().display()
            ),
            std::iter::empty(),
        )
        .unwrap();
        let tables = Tables::new(&config).unwrap();
        assert!(!tables.is_routed());
        let table = tables.the_table().await.unwrap();
        assert_eq!(table.id.as_str(), "logs");
        assert!(Arc::ptr_eq(
            &table,
            tables.of_topic("any").await.unwrap().lead()
        ));
    }
}
