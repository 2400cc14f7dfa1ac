//! Which table a source partition's records go to.
//!
//! An unrouted configuration has one table, which every partition feeds. With
//! `[ingest.routing]` (Kafka only) a topic listed in `fields` is routed row
//! by row by a field's value (see `fanout`: every batch goes to every table
//! of the route, each on its own position chain); any other topic goes to
//! one table: an exact `topics` entry, else the first matching `patterns`
//! entry, else the `template` (`${topic}` made a safe name). A Kafka
//! partition belongs to one topic, and a topic routed as a whole to one
//! table, so its position chain lives in that one table exactly as it does
//! without routing; several topics in one table are just several partitions
//! of it.
//!
//! A topic that matches no route is an error at assignment
//! ([`Error::Unrouted`]), never a silent drop: its messages stay in Kafka
//! until the routing covers it.

use std::fmt;
use std::sync::Arc;

use tributary_config::{Route, TopicRouter};

use crate::error::{Error, Result};

/// A table's name: the `${table}` segment of its URI (or the last segment of
/// an unrouted `lake.table_uri`). The `table` label of ingest's metrics.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId(Arc<str>);

impl TableId {
    /// The id of table `name`.
    pub fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// The table's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where partitions' records go: the one table, or a table per topic.
#[derive(Debug)]
pub(crate) enum Router {
    /// An unrouted configuration: every partition feeds this table.
    Single(TableId),
    /// `[ingest.routing]`: a table per topic.
    Topics(TopicRouter),
}

impl Router {
    /// Where `topic`'s records go (any partition of a source that has no
    /// topics, with [`Router::Single`]).
    pub(crate) fn route_of(&self, topic: &str) -> Result<Route> {
        match self {
            Router::Single(table) => Ok(Route::Table(table.to_string())),
            Router::Topics(router) => router.route_of(topic).ok_or_else(|| Error::Unrouted {
                topic: topic.to_string(),
            }),
        }
    }

    /// The one table of an unrouted configuration, or `None`.
    pub(crate) fn single(&self) -> Option<&TableId> {
        match self {
            Router::Single(table) => Some(table),
            Router::Topics(_) => None,
        }
    }
}
