//! Compatibility configuration: the global level, each subject's own level,
//! and the level that applies to a subject.

use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::error::{corrupt, store_error};
use super::objects::{decode, to_json};
use super::{Result, SchemaRegistry};
use crate::schema::Compatibility;

/// `config/….json`.
#[derive(Debug, Serialize, Deserialize)]
struct ConfigRecord {
    compatibility: String,
}

impl SchemaRegistry {
    /// The level configured for `subject` (`None`: the global one), if any.
    pub async fn compatibility(&self, subject: Option<&str>) -> Result<Option<Compatibility>> {
        let path = match subject {
            Some(subject) => self.subject_config_path(subject)?,
            None => self.path(&["config", "global.json"]),
        };
        let Some(bytes) = self.read_opt(&path).await? else {
            return Ok(None);
        };
        let record: ConfigRecord = decode(&path, &bytes)?;
        record
            .compatibility
            .parse()
            .map(Some)
            .map_err(|e| corrupt(&path, e))
    }

    /// The level that applies to `subject`: its own, else the global one,
    /// else BACKWARD.
    pub async fn effective_compatibility(&self, subject: &str) -> Result<Compatibility> {
        if let Some(level) = self.compatibility(Some(subject)).await? {
            return Ok(level);
        }
        Ok(self.compatibility(None).await?.unwrap_or_default())
    }

    /// Sets the level of `subject` (`None`: the global one).
    pub async fn set_compatibility(
        &self,
        subject: Option<&str>,
        level: Compatibility,
    ) -> Result<()> {
        let path = match subject {
            Some(subject) => self.subject_config_path(subject)?,
            None => self.path(&["config", "global.json"]),
        };
        let record = ConfigRecord {
            compatibility: level.as_str().to_string(),
        };
        self.store
            .put(&path, PutPayload::from(to_json(&record)))
            .await
            .map(drop)
            .map_err(|source| store_error(&path, source))
    }

    /// Removes the level of `subject` (`None`: the global one); returns the
    /// level it had.
    pub async fn delete_compatibility(
        &self,
        subject: Option<&str>,
    ) -> Result<Option<Compatibility>> {
        let previous = self.compatibility(subject).await?;
        let path = match subject {
            Some(subject) => self.subject_config_path(subject)?,
            None => self.path(&["config", "global.json"]),
        };
        self.delete_opt(&path).await?;
        Ok(previous)
    }
}
