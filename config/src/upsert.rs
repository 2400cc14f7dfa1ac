use serde::Deserialize;

use crate::error::{Result, invalid};

/// `[lake.upsert]`: the table holds at most one row per record key. Its
/// presence turns upsert mode on (insert-only is the default).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertConfig {
    /// The column that orders a key's versions: a flattened column of type
    /// long, double, timestamp or string (an event time or a version
    /// number), or `"_position"` for arrival order. Of two versions of a key
    /// the one with the higher value wins, the higher source position on a
    /// tie; a null value ranks lowest.
    pub order_by: String,
}

impl UpsertConfig {
    pub(crate) fn validate(&self, partition_by: &[String], keyless: bool) -> Result<()> {
        let column = self.order_by.as_str();
        let problem = if column.trim().is_empty() {
            Some("must name a column")
        } else if column != "_position" && crate::RESERVED_COLUMNS.contains(&column) {
            Some("names a column Tributary reserves (of those, only \"_position\" orders versions)")
        } else if partition_by.iter().any(|c| c == column) || column == crate::HOUR_COLUMN {
            Some("is a partition column (lake.partition_by): name a column of the rows")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(invalid("lake.upsert.order_by", column, problem));
        }
        if keyless {
            return Err(invalid(
                "lake.upsert.order_by",
                column,
                "upsert mode replaces rows by record key: set ingest.flatten.key_field",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn load(upsert: &str, key_field: bool) -> crate::Result<Config> {
        let key = if key_field { "key_field = \"id\"" } else { "" };
        Config::from_toml_str(
            &format!(
                "[lake]\ntable_uri = \"/tmp/t\"\n{upsert}\n[ingest]\nstream = \"s\"\n\
                 [ingest.kafka]\nbrokers = \"b:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\
                 [ingest.flatten]\n{key}\n"
            ),
            std::iter::empty(),
        )
    }

    #[test]
    fn upsert_is_off_by_default_and_turns_kafka_tombstones_into_deletes() {
        use crate::Tombstones;
        let insert = load("", true).unwrap();
        assert_eq!(insert.compact.upsert, None);
        let kafka = insert.ingest.unwrap().kafka.unwrap();
        assert_eq!(kafka.tombstones, None);

        let upsert = load("[lake.upsert]\norder_by = \"version\"", true).unwrap();
        assert_eq!(
            upsert.compact.upsert.as_ref().map(|u| u.order_by.as_str()),
            Some("version")
        );
        let kafka = upsert.ingest.unwrap().kafka.unwrap();
        assert_eq!(kafka.tombstones, Some(Tombstones::Delete));
    }

    #[test]
    fn a_bad_order_column_or_a_missing_key_field_is_named() {
        for (bad, key_field) in [("_key", true), ("date", true), ("", true), ("ts", false)] {
            let err = load(&format!("[lake.upsert]\norder_by = \"{bad}\""), key_field)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("lake.upsert.order_by") && err.contains(&format!("{bad:?}")),
                "{err}"
            );
        }
        let err = load("[lake.upsert]\norderby = \"ts\"", true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid configuration"), "{err}");
        load("[lake.upsert]\norder_by = \"_position\"", true).unwrap();
    }
}
