use serde::{Deserialize, Serialize};

use crate::error::{Result, invalid};

/// `[retention]`: how long rows are kept, by their event date (the table's
/// `date` partition column). Expired rows are removed from the table, the
/// staged row files and the dead letters, as completely as `tributary
/// forget` erases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Rows whose event date is more than this many days before today (UTC)
    /// expire, whole partitions at a time. Default: none (kept forever).
    pub max_age_days: Option<u32>,
    /// How often the long-running compactor applies the rules, in
    /// milliseconds; 0 leaves it to `tributary retention` (a CronJob).
    /// Default: 1 hour.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// How long table files replaced or removed by retention stay for
    /// running readers before they are deleted, in milliseconds. Default:
    /// 1 hour.
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
    /// The object (a path under the table) holding more per-tenant rules as
    /// JSON, `{"tenants": [{"column": …, "value": …, "keep_days": …}]}`,
    /// read at every run so operators can change rules without a restart.
    /// A missing object means no more rules. Default:
    /// `_tributary/retention/rules.json`.
    #[serde(default = "default_rules_object")]
    pub rules_object: String,
    /// Per-tenant rules: rows whose `column` holds `value` are kept
    /// `keep_days` days.
    #[serde(default)]
    pub tenants: Vec<TenantRule>,
}

/// A per-tenant retention rule: rows whose `column` is `value` expire
/// `keep_days` days after their event date.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRule {
    /// A string column of the table (e.g. `messages_account_id`).
    pub column: String,
    /// The tenant's value in it.
    pub value: String,
    /// Days its rows are kept: rows dated more than this many days before
    /// today (UTC) expire. At least 1.
    pub keep_days: u32,
}

/// The default rules object, under the table root.
pub const DEFAULT_RULES_OBJECT: &str = "_tributary/retention/rules.json";

fn default_interval_ms() -> u64 {
    3_600_000
}
fn default_grace_ms() -> u64 {
    3_600_000
}
fn default_rules_object() -> String {
    DEFAULT_RULES_OBJECT.into()
}

impl Default for RetentionConfig {
    /// No rules, with every setting at its default.
    fn default() -> Self {
        Self {
            max_age_days: None,
            interval_ms: default_interval_ms(),
            grace_ms: default_grace_ms(),
            rules_object: default_rules_object(),
            tenants: Vec::new(),
        }
    }
}

impl RetentionConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_age_days == Some(0) {
            return Err(invalid(
                "retention.max_age_days",
                0,
                "must be at least 1 (leave it out to keep rows forever)",
            ));
        }
        let object = self.rules_object.trim_matches('/');
        if object.is_empty() || object.split('/').any(|p| p.is_empty() || p == "..") {
            return Err(invalid(
                "retention.rules_object",
                &self.rules_object,
                "must be a path under the table, such as _tributary/retention/rules.json",
            ));
        }
        for (i, rule) in self.tenants.iter().enumerate() {
            rule.validate(&format!("retention.tenants[{i}]"))?;
        }
        Ok(())
    }
}

impl TenantRule {
    /// Checks the rule; `key` names it in errors (`retention.tenants[0]`,
    /// or the rules object).
    pub fn validate(&self, key: &str) -> Result<()> {
        if self.column.trim().is_empty() {
            return Err(invalid(
                &format!("{key}.column"),
                &self.column,
                "must name a column",
            ));
        }
        if self.keep_days == 0 {
            return Err(invalid(
                &format!("{key}.keep_days"),
                0,
                format!(
                    "must be at least 1 (rows of {}={:?})",
                    self.column, self.value
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn parse(retention: &str) -> crate::Result<Config> {
        Config::from_toml_str(
            &format!("[lake]\ntable_uri = \"/tmp/t\"\n\n[retention]\n{retention}"),
            std::iter::empty(),
        )
    }

    #[test]
    fn rules_parse_with_defaults_and_reach_the_compactor() {
        let config = parse(
            "max_age_days = 90\n\
             [[retention.tenants]]\ncolumn = \"account_id\"\nvalue = \"acme\"\nkeep_days = 30\n",
        )
        .unwrap();
        let retention = &config.retention;
        assert_eq!(retention.max_age_days, Some(90));
        assert_eq!(retention.interval_ms, 3_600_000);
        assert_eq!(retention.rules_object, super::DEFAULT_RULES_OBJECT);
        assert_eq!(retention.tenants.len(), 1);
        assert_eq!(retention.tenants[0].keep_days, 30);
        assert_eq!(config.compact.retention.max_age_days, Some(90));
        assert_eq!(config.compact.retention.tenants, retention.tenants);
    }

    #[test]
    fn no_section_means_no_rules() {
        let config =
            Config::from_toml_str("[lake]\ntable_uri = \"/tmp/t\"\n", std::iter::empty()).unwrap();
        assert_eq!(config.retention.max_age_days, None);
        assert!(config.retention.tenants.is_empty());
        assert_eq!(config.retention.interval_ms, 3_600_000);
    }

    #[test]
    fn bad_rules_are_rejected_naming_the_key() {
        let zero = parse("max_age_days = 0\n").unwrap_err().to_string();
        assert!(zero.contains("retention.max_age_days"), "{zero}");
        let tenant = parse("[[retention.tenants]]\ncolumn = \"a\"\nvalue = \"x\"\nkeep_days = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            tenant.contains("retention.tenants[0].keep_days"),
            "{tenant}"
        );
        let escape = parse("rules_object = \"../other/rules.json\"\n")
            .unwrap_err()
            .to_string();
        assert!(escape.contains("retention.rules_object"), "{escape}");
        let misspelled = format!(
            "{:#}",
            anyhow_like(parse("max_age_dayz = 3\n").unwrap_err())
        );
        assert!(misspelled.contains("max_age_dayz"), "{misspelled}");
    }

    /// The error and its sources, as one line.
    fn anyhow_like(error: crate::ConfigError) -> String {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    }
}
