//! Several tables from one configuration: `[tables.NAME]` overrides,
//! `[ingest.routing]` (which topic feeds which table), and the resolution of
//! one table's settings ([`ResolvedTable`]).
//!
//! Routing is on when `lake.table_uri` ends in the segment `${table}`:
//! `[lake]`, `[compact]` and `[ingest.flatten]` then hold the defaults every
//! table inherits, and `[tables.NAME]` overrides them for one table.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Result, invalid};
use crate::{CompactConfig, Config, FlattenConfig, LakeConfig, Tombstones, UpsertConfig};

/// The placeholder of `lake.table_uri` that a table's name replaces.
pub const TABLE_PLACEHOLDER: &str = "${table}";
/// The placeholder of `ingest.routing.template` that a topic's safe name
/// replaces.
pub const TOPIC_PLACEHOLDER: &str = "${topic}";

/// `[tables.NAME]`: one table's overrides of the `[lake]`, `[compact]` and
/// `[ingest.flatten]` defaults. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The table's location. Default: `lake.table_uri` with `${table}`
    /// replaced by the table's name.
    pub table_uri: Option<String>,
    /// Replaces `lake.subject_columns`.
    pub subject_columns: Option<Vec<String>>,
    /// Replaces `lake.redact_columns`.
    pub redact_columns: Option<Vec<String>>,
    /// Replaces `lake.partition_by`.
    pub partition_by: Option<Vec<String>>,
    /// Replaces `lake.max_partition_values`.
    pub max_partition_values: Option<usize>,
    /// Replaces `compact.sort_columns`.
    pub sort_columns: Option<Vec<String>>,
    /// Replaces `[ingest.flatten]` for the topics routed to this table.
    pub flatten: Option<FlattenConfig>,
    /// Replaces `[lake.upsert]`: this table is an upsert table.
    pub upsert: Option<UpsertConfig>,
}

/// `[ingest.routing]`: which table each Kafka topic feeds. A topic is looked
/// up in `fields` (routed per row by a field's value), then `topics`, then
/// `patterns` (first match), then given the table `template` names; a topic
/// none of them routes is an error at assignment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// `[[ingest.routing.fields]]`: topics whose rows go to a table chosen
    /// by the value of one of their columns.
    #[serde(default)]
    pub fields: Vec<FieldRoute>,
    /// The table of a topic that `topics` and `patterns` do not route, with
    /// `${topic}` standing for the topic's name made safe for object paths
    /// (letters, digits, `_`, `-`, `.`; other names get `_` and a hash
    /// suffix). Example: `"${topic}"`, `"raw_${topic}"`. Default: none.
    pub template: Option<String>,
    /// Exact topic → table name. Wins over `patterns` and `template`.
    #[serde(default)]
    pub topics: BTreeMap<String, String>,
    /// Regular expressions (Rust `regex` syntax) on the topic name, each
    /// with its table, tried in order.
    #[serde(default)]
    pub patterns: Vec<RoutePattern>,
    /// Most tables one ingest process writes to; a topic that would open one
    /// more is an error naming it. A guard against a template over a
    /// topic pattern that matches far more topics than intended. Default 100.
    #[serde(default = "default_max_tables")]
    pub max_tables: usize,
}

/// One entry of `ingest.routing.patterns`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutePattern {
    /// The regular expression a topic name must match (anywhere: anchor it
    /// with `^…$` to match the whole name).
    pub pattern: String,
    /// The table of the matching topics.
    pub table: String,
}

fn default_max_tables() -> usize {
    100
}

/// One `[[ingest.routing.fields]]` entry: the rows of one topic go to a
/// table chosen by the value of one column. Every batch of the topic is
/// staged into every table of the route (a table that gets none of its
/// rows gets a file without rows), so each table's position chain stays
/// contiguous; see `docs/routing-and-upsert-design.md` §1.3.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRoute {
    /// The Kafka topic (exact name); for a files source, `ingest.stream`.
    pub topic: String,
    /// The flattened column whose value picks a row's table (for an
    /// exploded path, an element's column such as `messages_service`). Its
    /// value is compared as text (a number as it is written in JSON).
    pub field: String,
    /// Value → table.
    pub values: BTreeMap<String, String>,
    /// What happens to a row whose value is not in `values` (or is null):
    /// `"default"` puts it in `default_table`, `"dead-letter"` makes its
    /// message a dead letter of `dead_letter_table` (reason `unrouted`).
    #[serde(default)]
    pub unlisted: Unlisted,
    /// The table of unlisted values; required with `unlisted = "default"`.
    pub default_table: Option<String>,
    /// The table that gets the topic's dead letters (messages that do not
    /// decode, unlisted values with `unlisted = "dead-letter"`). Default:
    /// `default_table`. Its row file of a batch is staged after every other
    /// table's, so it marks the batch as staged everywhere; it is the
    /// route's *lead*, whose flattening and column types decode the topic.
    pub dead_letter_table: Option<String>,
}

/// `ingest.routing.fields[].unlisted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unlisted {
    /// To `default_table`.
    #[default]
    Default,
    /// A dead letter of `dead_letter_table`.
    DeadLetter,
}

impl FieldRoute {
    /// The table of unlisted values, if they have one.
    pub fn unlisted_table(&self) -> Option<&str> {
        match self.unlisted {
            Unlisted::Default => self.default_table.as_deref(),
            Unlisted::DeadLetter => None,
        }
    }

    /// The route's lead: the table of its dead letters.
    pub fn lead(&self) -> &str {
        self.dead_letter_table
            .as_deref()
            .or(self.default_table.as_deref())
            .unwrap_or_default()
    }

    /// Every table of the route, each once, the lead last.
    pub fn tables(&self) -> Vec<&str> {
        let lead = self.lead();
        let mut tables: Vec<&str> = self
            .values
            .values()
            .map(String::as_str)
            .chain(self.unlisted_table())
            .filter(|t| *t != lead)
            .collect();
        tables.sort_unstable();
        tables.dedup();
        tables.push(lead);
        tables
    }

    fn validate(&self, key: &str) -> Result<()> {
        if self.field.is_empty() {
            return Err(invalid(&format!("{key}.field"), "", "names no column"));
        }
        if self.values.is_empty() {
            return Err(invalid(
                &format!("{key}.values"),
                "{}",
                "routes no value: map at least one value to a table",
            ));
        }
        for (value, table) in &self.values {
            check_table_name(&format!("{key}.values.{value}"), table)?;
        }
        match (self.unlisted, &self.default_table, &self.dead_letter_table) {
            (Unlisted::Default, None, _) => {
                return Err(invalid(
                    &format!("{key}.default_table"),
                    "(unset)",
                    "unlisted = \"default\" needs the table of unlisted values",
                ));
            }
            (Unlisted::DeadLetter, _, None) => {
                return Err(invalid(
                    &format!("{key}.dead_letter_table"),
                    "(unset)",
                    "unlisted = \"dead-letter\" needs the table that holds the dead letters",
                ));
            }
            _ => {}
        }
        for (name, table) in [
            ("default_table", &self.default_table),
            ("dead_letter_table", &self.dead_letter_table),
        ] {
            if let Some(table) = table {
                check_table_name(&format!("{key}.{name}"), table)?;
            }
        }
        Ok(())
    }
}

/// Where one topic's records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Every record to this table.
    Table(String),
    /// Each row to the table its field's value picks.
    Field(FieldRoute),
}

/// `ingest.routing` compiled: topic → route.
#[derive(Debug, Clone)]
pub struct TopicRouter {
    fields: BTreeMap<String, FieldRoute>,
    topics: BTreeMap<String, String>,
    patterns: Vec<(regex_lite::Regex, String)>,
    template: Option<String>,
}

impl RoutingConfig {
    /// Compiles the patterns.
    pub fn router(&self) -> Result<TopicRouter> {
        let patterns = self
            .patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let regex = regex_lite::Regex::new(&p.pattern).map_err(|e| {
                    invalid(
                        &format!("ingest.routing.patterns[{i}].pattern"),
                        &p.pattern,
                        e,
                    )
                })?;
                Ok((regex, p.table.clone()))
            })
            .collect::<Result<_>>()?;
        Ok(TopicRouter {
            fields: self
                .fields
                .iter()
                .map(|route| (route.topic.clone(), route.clone()))
                .collect(),
            topics: self.topics.clone(),
            patterns,
            template: self.template.clone(),
        })
    }

    /// The table names the routes name explicitly (`fields`, `topics`,
    /// `patterns`).
    fn named_tables(&self) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .flat_map(FieldRoute::tables)
            .chain(self.topics.values().map(String::as_str))
            .chain(self.patterns.iter().map(|p| p.table.as_str()))
    }

    fn validate(&self) -> Result<()> {
        self.router()?;
        let mut field_topics = std::collections::BTreeSet::new();
        for (i, route) in self.fields.iter().enumerate() {
            let key = format!("ingest.routing.fields[{i}]");
            route.validate(&key)?;
            if !field_topics.insert(&route.topic) || self.topics.contains_key(&route.topic) {
                return Err(invalid(
                    &format!("{key}.topic"),
                    &route.topic,
                    "is routed twice (another fields entry or ingest.routing.topics)",
                ));
            }
        }
        for (topic, table) in &self.topics {
            check_table_name(&format!("ingest.routing.topics.{topic}"), table)?;
        }
        for (i, p) in self.patterns.iter().enumerate() {
            check_table_name(&format!("ingest.routing.patterns[{i}].table"), &p.table)?;
        }
        if let Some(template) = &self.template {
            if !template.contains(TOPIC_PLACEHOLDER) {
                return Err(invalid(
                    "ingest.routing.template",
                    template,
                    "must contain ${topic} (a fixed table belongs in `topics` or `patterns`)",
                ));
            }
            check_table_name(
                "ingest.routing.template",
                &template.replace(TOPIC_PLACEHOLDER, "t"),
            )?;
        }
        if self.template.is_none()
            && self.topics.is_empty()
            && self.patterns.is_empty()
            && self.fields.is_empty()
        {
            return Err(invalid(
                "ingest.routing",
                "{}",
                "routes no topic: set template, topics, patterns or fields",
            ));
        }
        if self.max_tables == 0 {
            return Err(invalid(
                "ingest.routing.max_tables",
                0,
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl TopicRouter {
    /// Where `topic`'s records go, or `None` when no route matches it.
    pub fn route_of(&self, topic: &str) -> Option<Route> {
        if let Some(route) = self.fields.get(topic) {
            return Some(Route::Field(route.clone()));
        }
        self.table_of(topic).map(Route::Table)
    }

    /// The table a topic routed as a whole (not by a field) feeds.
    fn table_of(&self, topic: &str) -> Option<String> {
        if let Some(table) = self.topics.get(topic) {
            return Some(table.clone());
        }
        if let Some((_, table)) = self.patterns.iter().find(|(r, _)| r.is_match(topic)) {
            return Some(table.clone());
        }
        let template = self.template.as_ref()?;
        Some(template.replace(TOPIC_PLACEHOLDER, &safe_name(topic)))
    }
}

/// One table's settings: `[lake]`, `[compact]` and `[ingest.flatten]` with
/// the table's `[tables.NAME]` overrides applied and the defaults that depend
/// on other keys filled in.
#[derive(Debug, Clone)]
pub struct ResolvedTable {
    /// The table's name: its `${table}` value, or for a configuration
    /// without routing the last segment of `lake.table_uri`.
    pub name: String,
    /// The table's lake settings; `table_uri` is concrete.
    pub lake: LakeConfig,
    /// The table's compactor settings.
    pub compact: CompactConfig,
    /// How the records of the table's topics are flattened.
    pub flatten: FlattenConfig,
}

/// Whether `name` can be used as it is in an object path: letters, digits,
/// `_`, `-` and `.`, not empty and not `.` or `..`.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `name` made safe for an object path: unchanged when it already is (see
/// [`is_safe_name`]); otherwise every other character becomes `_` and a hash
/// of the original name is appended, so distinct names stay distinct.
pub fn safe_name(name: &str) -> String {
    if is_safe_name(name) {
        return name.to_string();
    }
    let mut safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    safe.push_str(&format!("-{hash:016x}"));
    safe
}

fn check_table_name(key: &str, name: &str) -> Result<()> {
    if is_safe_name(name) {
        Ok(())
    } else {
        Err(invalid(
            key,
            name,
            "a table name uses letters, digits, '_', '-' and '.' only",
        ))
    }
}

impl Config {
    /// Whether `lake.table_uri` has the `${table}` segment, so that this
    /// configuration describes several tables.
    pub fn is_routed(&self) -> bool {
        self.lake.table_uri.contains(TABLE_PLACEHOLDER)
    }

    /// For a routed configuration, the URI the tables' locations share:
    /// `lake.table_uri` without its `/${table}` segment. A compactor with
    /// `compact.tables = "*"` lists it to discover tables.
    pub fn table_root(&self) -> Option<String> {
        let root = self.lake.table_uri.strip_suffix(TABLE_PLACEHOLDER)?;
        Some(root.trim_end_matches('/').to_string())
    }

    /// The one table of a configuration without routing.
    pub fn single_table(&self) -> Result<ResolvedTable> {
        if self.is_routed() {
            return Err(invalid(
                "lake.table_uri",
                &self.lake.table_uri,
                "describes several tables (${table}): name one (--table)",
            ));
        }
        let name = self
            .lake
            .table_uri
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .find(|s| !s.is_empty())
            .unwrap_or("table");
        Ok(ResolvedTable {
            name: safe_name(name),
            lake: self.lake.clone(),
            compact: self.compact.clone(),
            flatten: self.ingest_flatten(),
        })
    }

    /// The settings of table `name`: for a routed configuration, the
    /// defaults with `[tables.NAME]`'s overrides; otherwise the single table,
    /// which must have that name.
    pub fn table(&self, name: &str) -> Result<ResolvedTable> {
        if !self.is_routed() {
            let table = self.single_table()?;
            if table.name != name {
                return Err(invalid(
                    "--table",
                    name,
                    format!(
                        "this configuration's only table is {:?} (lake.table_uri)",
                        table.name
                    ),
                ));
            }
            return Ok(table);
        }
        check_table_name("table name", name)?;
        let overrides = self.tables.get(name).cloned().unwrap_or_default();
        let mut lake = self.lake.clone();
        lake.table_uri = match overrides.table_uri {
            Some(uri) => uri,
            None => self.lake.table_uri.replace(TABLE_PLACEHOLDER, name),
        };
        replace(&mut lake.subject_columns, overrides.subject_columns);
        replace(&mut lake.redact_columns, overrides.redact_columns);
        replace(&mut lake.partition_by, overrides.partition_by);
        replace(
            &mut lake.max_partition_values,
            overrides.max_partition_values,
        );
        if overrides.upsert.is_some() {
            lake.upsert = overrides.upsert;
        }
        let flatten = overrides.flatten.unwrap_or_else(|| self.ingest_flatten());
        let mut compact = self.compact.clone();
        if overrides.sort_columns.is_some() {
            compact.sort_columns = overrides.sort_columns;
        }
        complete_compact(&mut compact, &lake, &flatten, &self.retention);
        Ok(ResolvedTable {
            name: name.to_string(),
            lake,
            compact,
            flatten,
        })
    }

    /// Every table this configuration names: `compact.tables` when it lists
    /// them; otherwise the `[tables.*]` sections and the tables
    /// `ingest.routing.topics` and `.patterns` name (sorted, each once).
    /// Tables the template makes from topic names are found by listing
    /// [`Config::table_root`]. Empty without routing.
    pub fn named_tables(&self) -> Vec<String> {
        if !self.is_routed() {
            return Vec::new();
        }
        if let crate::CompactTables::Listed(tables) = &self.compact.tables {
            return tables.clone();
        }
        let routes = self.ingest.as_ref().and_then(|i| i.routing.as_ref());
        let mut names: Vec<String> = self
            .tables
            .keys()
            .map(String::as_str)
            .chain(routes.into_iter().flat_map(RoutingConfig::named_tables))
            .map(String::from)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// `[ingest.flatten]`, or the default flattening without `[ingest]`.
    pub(crate) fn ingest_flatten(&self) -> FlattenConfig {
        self.ingest
            .as_ref()
            .map(|i| i.flatten.clone())
            .unwrap_or_default()
    }

    /// The routing checks: where `${table}` may appear, that the routes and
    /// table names are valid, and each named table's own settings.
    pub(crate) fn validate_routing(&self) -> Result<()> {
        let uri = &self.lake.table_uri;
        let routed = self.is_routed();
        if routed
            && (uri.matches(TABLE_PLACEHOLDER).count() != 1
                || !uri.ends_with(&format!("/{TABLE_PLACEHOLDER}")))
        {
            return Err(invalid(
                "lake.table_uri",
                uri,
                "${table} must appear once, as the last path segment (s3://bucket/logs/${table})",
            ));
        }
        let routing = self.ingest.as_ref().and_then(|i| i.routing.as_ref());
        if !routed {
            if let Some(name) = self.tables.keys().next() {
                return Err(invalid(
                    &format!("tables.{name}"),
                    name,
                    "per-table settings need lake.table_uri ending in /${table}",
                ));
            }
            if routing.is_some() {
                return Err(invalid(
                    "ingest.routing",
                    "[ingest.routing]",
                    "routing needs lake.table_uri ending in /${table}",
                ));
            }
            if let crate::CompactTables::Listed(tables) = &self.compact.tables {
                return Err(invalid(
                    "compact.tables",
                    format!("{tables:?}"),
                    "a list of tables needs lake.table_uri ending in /${table}",
                ));
            }
            return Ok(());
        }
        if let Some(ingest) = &self.ingest {
            let Some(routing) = routing else {
                return Err(invalid(
                    "lake.table_uri",
                    uri,
                    "describes several tables (${table}): [ingest.routing] must say which topic feeds which",
                ));
            };
            // A files source is one stream: routed by a field, or not at all.
            let by_field_only = ingest.files.is_some()
                && routing.template.is_none()
                && routing.topics.is_empty()
                && routing.patterns.is_empty()
                && routing.fields.iter().all(|f| f.topic == ingest.stream);
            if ingest.kafka.is_none() && !by_field_only {
                return Err(invalid(
                    "ingest.routing",
                    "[ingest.routing]",
                    "routes Kafka topics: the ingest source must be [ingest.kafka]; a files source can only be routed by a field, with [[ingest.routing.fields]] topic = ingest.stream (use one configuration with a concrete lake.table_uri per Kinesis stream)",
                ));
            }
            routing.validate()?;
            for (i, route) in routing.fields.iter().enumerate() {
                // One decode feeds every table of the route: the lead's.
                let lead = route.lead();
                if let Some(table) = route.tables().into_iter().find(|t| {
                    *t != lead && self.tables.get(*t).is_some_and(|t| t.flatten.is_some())
                }) {
                    return Err(invalid(
                        &format!("tables.{table}.flatten"),
                        "set",
                        format!(
                            "table {table} is fed by ingest.routing.fields[{i}], whose messages are \
                             decoded once with the flattening of its lead table {lead} \
                             (dead_letter_table, else default_table)"
                        ),
                    ));
                }
            }
        }
        for (name, table) in &self.tables {
            check_table_name(&format!("tables.{name}"), name)?;
            if let Some(uri) = &table.table_uri
                && uri.contains(TABLE_PLACEHOLDER)
            {
                return Err(invalid(
                    &format!("tables.{name}.table_uri"),
                    uri,
                    "is one table's location: ${table} has no meaning here",
                ));
            }
        }
        if let crate::CompactTables::Listed(tables) = &self.compact.tables {
            if tables.is_empty() {
                return Err(invalid(
                    "compact.tables",
                    "[]",
                    "lists no table: name at least one, or \"*\" for all",
                ));
            }
            for name in tables {
                check_table_name("compact.tables", name)?;
            }
        }
        // Each named table, and the defaults as an unnamed table gets them.
        let names = self.named_tables();
        for name in names.iter().map(String::as_str).chain(["default"]) {
            let table = self.table(name)?;
            let prefix = match self.tables.contains_key(name) {
                true => format!("tables.{name}"),
                false => "lake".to_string(),
            };
            table
                .lake
                .validate()
                .map_err(|e| rename_key(e, "lake", &prefix))?;
            validate_table(&table.lake, &table.flatten, self.ingest.is_some())
                .map_err(|e| rename_key(e, "lake", &prefix))?;
        }
        Ok(())
    }
}

/// The checks of one table's settings that depend on its flattening: an
/// hour partition needs an event time, upsert needs a record key.
pub(crate) fn validate_table(
    lake: &LakeConfig,
    flatten: &FlattenConfig,
    has_ingest: bool,
) -> Result<()> {
    if lake.partition_by.iter().any(|c| c == "hour") && flatten.event_time_field.is_none() {
        return Err(invalid(
            "lake.partition_by",
            format!("{:?}", lake.partition_by),
            "\"hour\" is the event time's hour: set ingest.flatten.event_time_field",
        ));
    }
    if let Some(upsert) = &lake.upsert {
        // A compactor's configuration may leave `[ingest]` out.
        let keyless = has_ingest && flatten.key_field.is_none();
        upsert.validate(&lake.partition_by, keyless)?;
    }
    Ok(())
}

/// Points an error about a `[lake]` key at the `[tables.NAME]` section the
/// value came from.
fn rename_key(error: crate::ConfigError, from: &str, to: &str) -> crate::ConfigError {
    match error {
        crate::ConfigError::Invalid { key, value, reason } if to != from => {
            let key = match key.strip_prefix(from) {
                Some(rest) => format!("{to}{rest}"),
                None => key,
            };
            crate::ConfigError::Invalid { key, value, reason }
        }
        other => other,
    }
}

fn replace<T>(value: &mut T, with: Option<T>) {
    if let Some(with) = with {
        *value = with;
    }
}

/// Fills the compactor settings that come from the table's other settings:
/// `sort_columns` defaults to the subject columns then the event time, and
/// the event time column, upsert mode and retention are copied in.
pub(crate) fn complete_compact(
    compact: &mut CompactConfig,
    lake: &LakeConfig,
    flatten: &FlattenConfig,
    retention: &crate::RetentionConfig,
) {
    let event_time = flatten.event_time_field.clone();
    if compact.sort_columns.is_none() {
        let columns = lake
            .subject_columns
            .iter()
            .cloned()
            .chain(event_time.clone());
        compact.sort_columns = Some(columns.collect());
    }
    compact.event_time_column = event_time;
    compact.upsert = lake.upsert.clone();
    compact.retention = retention.clone();
}

impl ResolvedTable {
    /// What a Kafka tombstone becomes in this table: `ingest.kafka.tombstones`
    /// when set, else `delete` for an upsert table and `dead_letter`
    /// otherwise.
    pub fn tombstones(&self, kafka: &crate::KafkaSourceConfig) -> Tombstones {
        match (kafka.tombstones, &self.lake.upsert) {
            (Some(set), _) => set,
            (None, Some(_)) => Tombstones::Delete,
            (None, None) => Tombstones::DeadLetter,
        }
    }
}

#[cfg(test)]
mod tests;
