//! The rules of one run: `[retention]` merged with the rules object, turned
//! into cut-off dates for today, and the row predicates that follow from
//! them.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Date32Type};
use deltalake::arrow::record_batch::RecordBatch;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Deserialize;
use tributary_config::{RetentionConfig, TenantRule};
use tributary_lake::Lake;

use crate::error::{Error, Result};
use crate::rewrite::Erase;
use crate::table::PARTITION_COLUMN;

/// The rules object's content.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesObject {
    #[serde(default)]
    tenants: Vec<TenantRule>,
}

/// The rules a run applies: the table-wide maximum age, and the per-tenant
/// rules of the configuration and of the rules object (which wins for the
/// same column and value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Days rows are kept table-wide.
    pub max_age_days: Option<u32>,
    /// Per-tenant rules, one per (column, value).
    pub tenants: Vec<TenantRule>,
}

impl Rules {
    /// The configuration's rules, then those of the rules object
    /// (`config.rules_object` under the table), read now: operators change
    /// it without restarting anything. A missing object adds nothing; an
    /// invalid one is an error naming it.
    pub async fn load(config: &RetentionConfig, lake: &Lake) -> Result<Rules> {
        let path = Path::from(config.rules_object.trim_matches('/'));
        let from_object = match lake.store().get(&path).await {
            Ok(got) => {
                let bytes = got
                    .bytes()
                    .await
                    .map_err(|e| tributary_lake::Error::store(&path, e))?;
                Self::parse_object(&bytes, &path)?
            }
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(tributary_lake::Error::store(&path, e).into()),
        };
        Ok(Self::merge(config, from_object))
    }

    /// The tenant rules of a rules object's bytes, checked.
    fn parse_object(bytes: &[u8], path: &Path) -> Result<Vec<TenantRule>> {
        let invalid = |source: Box<dyn std::error::Error + Send + Sync>| Error::RetentionRules {
            path: path.to_string(),
            source,
        };
        let object: RulesObject =
            serde_json::from_slice(bytes).map_err(|e| invalid(Box::new(e)))?;
        for (i, rule) in object.tenants.iter().enumerate() {
            rule.validate(&format!("{path}: tenants[{i}]"))
                .map_err(|e| invalid(Box::new(e)))?;
        }
        Ok(object.tenants)
    }

    /// The configuration's rules with `from_object` added; a rule of the
    /// object replaces the configuration's for the same column and value.
    fn merge(config: &RetentionConfig, from_object: Vec<TenantRule>) -> Rules {
        let mut tenants: BTreeMap<(String, String), TenantRule> = BTreeMap::new();
        for rule in config.tenants.iter().cloned().chain(from_object) {
            tenants.insert((rule.column.clone(), rule.value.clone()), rule);
        }
        Rules {
            max_age_days: config.max_age_days,
            tenants: tenants.into_values().collect(),
        }
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.max_age_days.is_none() && self.tenants.is_empty()
    }
}

/// The rules as dates: what is dated before a cut-off has expired.
#[derive(Debug, Clone)]
pub struct Cutoffs {
    /// Partitions dated before this are removed whole.
    pub table: Option<NaiveDate>,
    /// Each tenant rule with its cut-off, earliest cut-off first.
    pub tenants: Vec<(TenantRule, NaiveDate)>,
}

impl Cutoffs {
    /// The cut-offs of `rules` on `today` (UTC): a rule keeping rows `n`
    /// days keeps dates from `today - n` on.
    pub fn new(rules: &Rules, today: NaiveDate) -> Self {
        let before = |days: u32| today - chrono::Days::new(u64::from(days));
        let mut tenants: Vec<(TenantRule, NaiveDate)> = rules
            .tenants
            .iter()
            .map(|r| (r.clone(), before(r.keep_days)))
            .collect();
        tenants.sort_by_key(|(_, cutoff)| *cutoff);
        Cutoffs {
            table: rules.max_age_days.map(before),
            tenants,
        }
    }

    /// Whether every row dated `date` has expired.
    pub fn date_expired(&self, date: NaiveDate) -> bool {
        self.table.is_some_and(|cutoff| date < cutoff)
    }

    /// The tenant rules under which rows dated `date` have expired, as the
    /// index of the first (they are the rules from it on, since the rules
    /// are ordered by cut-off); `None` when no rule applies.
    pub fn tenant_rules_from(&self, date: NaiveDate) -> Option<usize> {
        let first = self.tenants.partition_point(|(_, cutoff)| *cutoff <= date);
        (first < self.tenants.len()).then_some(first)
    }

    /// The tenant rules from `first` on, as erasures (one per column).
    pub fn erasures(&self, first: usize) -> Vec<Erase> {
        let mut by_column: BTreeMap<&str, Erase> = BTreeMap::new();
        for (rule, _) in &self.tenants[first..] {
            by_column
                .entry(&rule.column)
                .or_insert_with(|| Erase {
                    column: rule.column.clone(),
                    values: Default::default(),
                })
                .values
                .insert(rule.value.clone());
        }
        by_column.into_values().collect()
    }

    /// Which rows of `batch` (rows with a `date` column: staged rows) have
    /// expired: those dated before the table cut-off, and those of a tenant
    /// dated before its rule's cut-off. Rows without a date never expire.
    pub fn expired_rows(&self, batch: &RecordBatch) -> Vec<bool> {
        let mut expired = vec![false; batch.num_rows()];
        let Some(dates) = batch
            .column_by_name(PARTITION_COLUMN)
            .and_then(|c| cast(c, &DataType::Date32).ok())
        else {
            return expired;
        };
        let dates = dates.as_primitive::<Date32Type>();
        if let Some(cutoff) = self.table.map(epoch_day) {
            for (e, d) in expired.iter_mut().zip(dates.iter()) {
                *e |= d.is_some_and(|d| d < cutoff);
            }
        }
        for (rule, cutoff) in &self.tenants {
            let cutoff = epoch_day(*cutoff);
            let Some(values) = batch
                .column_by_name(&rule.column)
                .and_then(|c| c.as_string_opt::<i32>())
            else {
                continue;
            };
            for (i, e) in expired.iter_mut().enumerate() {
                *e |= values.is_valid(i)
                    && values.value(i) == rule.value
                    && dates.is_valid(i)
                    && dates.value(i) < cutoff;
            }
        }
        expired
    }

    /// The latest cut-off of any rule: nothing dated on or after it expires.
    pub fn latest(&self) -> Option<NaiveDate> {
        self.tenants.iter().map(|(_, c)| *c).chain(self.table).max()
    }

    /// Whether a dead letter written on `written` (UTC) has expired under
    /// the table-wide age: its event was on that day or before.
    pub fn letter_expired(&self, written: NaiveDate) -> bool {
        self.date_expired(written)
    }

    /// Whether a dead letter written on `written` whose payload is
    /// `payload` has expired under a tenant rule: it was written before the
    /// rule's cut-off and the payload holds the tenant's value as bytes (a
    /// dead letter is not parsed) not glued to a letter or digit, so that
    /// `acme` does not remove the letters of `acmecorp`, nor `7` every
    /// letter with a 17 in it (`acme-eu` still holds `acme` as a word).
    pub fn letter_expired_for_tenant(&self, written: NaiveDate, payload: &[u8]) -> bool {
        self.tenants
            .iter()
            .any(|(rule, cutoff)| written < *cutoff && holds_word(payload, rule.value.as_bytes()))
    }
}

/// Whether `value` occurs in `bytes` with no letter or digit (nor a byte of
/// a multi-byte character) right before or after it, where its own edge is
/// a letter or digit.
fn holds_word(bytes: &[u8], value: &[u8]) -> bool {
    let (Some(&first), Some(&last)) = (value.first(), value.last()) else {
        return false;
    };
    let word = |b: u8| b.is_ascii_alphanumeric() || !b.is_ascii();
    bytes.windows(value.len()).enumerate().any(|(at, w)| {
        w == value
            && !(word(first) && at > 0 && word(bytes[at - 1]))
            && !(word(last) && bytes.get(at + value.len()).is_some_and(|&b| word(b)))
    })
}

/// `date` as an Arrow `Date32`: days since 1970-01-01 (`NaiveDate`'s
/// default).
fn epoch_day(date: NaiveDate) -> i32 {
    (date - NaiveDate::default()).num_days() as i32
}

/// The event date of a partition value (`2026-11-22`).
pub fn parse_date(value: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{ArrayRef, Date32Array, StringArray};
    use deltalake::arrow::datatypes::{Field, Schema};

    use super::*;

    fn rule(column: &str, value: &str, keep_days: u32) -> TenantRule {
        TenantRule {
            column: column.into(),
            value: value.into(),
            keep_days,
        }
    }

    fn date(text: &str) -> NaiveDate {
        parse_date(text).unwrap()
    }

    fn cutoffs() -> Cutoffs {
        let rules = Rules {
            max_age_days: Some(30),
            tenants: vec![rule("account", "acme", 7), rule("account", "globex", 14)],
        };
        Cutoffs::new(&rules, date("2026-11-30"))
    }

    #[test]
    fn a_rule_of_n_days_keeps_the_last_n_days_and_today() {
        let c = cutoffs();
        assert_eq!(c.table, Some(date("2026-10-31")));
        assert!(c.date_expired(date("2026-10-30")));
        assert!(!c.date_expired(date("2026-10-31")));
        // Tenant rules, earliest cut-off first: globex (14 days), acme (7).
        assert_eq!(c.tenants[0].1, date("2026-11-16"));
        assert_eq!(c.tenants[1].1, date("2026-11-23"));
        assert_eq!(c.tenant_rules_from(date("2026-11-10")), Some(0));
        assert_eq!(c.tenant_rules_from(date("2026-11-16")), Some(1));
        assert_eq!(c.tenant_rules_from(date("2026-11-22")), Some(1));
        assert_eq!(c.tenant_rules_from(date("2026-11-23")), None);
        let erase = c.erasures(0);
        assert_eq!(erase.len(), 1);
        assert_eq!(erase[0].column, "account");
        assert_eq!(erase[0].values.len(), 2);
        assert_eq!(c.erasures(1)[0].values.len(), 1);
        assert!(c.erasures(1)[0].values.contains("acme"));
    }

    #[test]
    fn staged_rows_expire_by_date_and_tenant() {
        let day = |t: &str| epoch_day(date(t));
        let schema = Arc::new(Schema::new(vec![
            Field::new("date", DataType::Date32, true),
            Field::new("account", DataType::Utf8, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Date32Array::from(vec![
                Some(day("2026-10-01")), // past the table-wide age
                Some(day("2026-11-20")), // acme past 7 days
                Some(day("2026-11-20")), // globex within 14 days
                Some(day("2026-11-25")), // acme within 7 days
                None,                    // undated: kept
                Some(day("2026-11-01")), // no tenant, within 30 days
            ])),
            Arc::new(StringArray::from(vec![
                Some("x"),
                Some("acme"),
                Some("globex"),
                Some("acme"),
                Some("acme"),
                None,
            ])),
        ];
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        assert_eq!(
            cutoffs().expired_rows(&batch),
            [true, true, false, false, false, false]
        );
    }

    #[test]
    fn dead_letters_expire_by_their_day_and_the_tenant_in_their_payload() {
        let c = cutoffs();
        assert_eq!(c.latest(), Some(date("2026-11-23")));
        assert!(c.letter_expired(date("2026-10-30")));
        assert!(!c.letter_expired(date("2026-11-29")));
        let payload = br#"{"account":"acme","msg":"x"}"#;
        assert!(c.letter_expired_for_tenant(date("2026-11-20"), payload));
        assert!(!c.letter_expired_for_tenant(date("2026-11-25"), payload));
        assert!(!c.letter_expired_for_tenant(date("2026-11-20"), b"initech"));
        // Only as a word: not inside another tenant's name.
        let other = br#"{"account":"acmecorp","msg":"x"}"#;
        assert!(!c.letter_expired_for_tenant(date("2026-11-20"), other));
        assert!(!holds_word(b"took 17 ms", b"7"));
        assert!(holds_word(b"n=7;", b"7"));
        assert!(!holds_word("caf\u{e9}7".as_bytes(), b"7"));
    }

    #[test]
    fn the_rules_object_adds_rules_and_wins_for_the_same_tenant() {
        let config = RetentionConfig {
            max_age_days: Some(90),
            tenants: vec![rule("account", "acme", 30), rule("account", "initech", 5)],
            ..RetentionConfig::default()
        };
        let path = Path::from("_tributary/retention/rules.json");
        let object = br#"{"tenants": [{"column": "account", "value": "acme", "keep_days": 3},
                                      {"column": "org", "value": "acme", "keep_days": 10}]}"#;
        let rules = Rules::merge(&config, Rules::parse_object(object, &path).unwrap());
        assert_eq!(rules.max_age_days, Some(90));
        assert_eq!(
            rules.tenants,
            [
                rule("account", "acme", 3),
                rule("account", "initech", 5),
                rule("org", "acme", 10)
            ]
        );

        for bad in [
            &br#"{"tenants": [{"column": "a", "value": "b", "keep_days": 0}]}"#[..],
            br#"{"tenant": []}"#,
            b"not json",
        ] {
            let error = Rules::parse_object(bad, &path).unwrap_err();
            let text = format!("{error}: {}", std::error::Error::source(&error).unwrap());
            assert!(text.contains("_tributary/retention/rules.json"), "{text}");
        }
    }
}
