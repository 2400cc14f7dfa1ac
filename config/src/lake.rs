use serde::Deserialize;

use crate::error::{Result, invalid};

/// `[lake]`: the Delta table and Tributary's objects beside it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Location of the Delta table: a local directory path (relative paths are
    /// resolved against the working directory) or a `file://` URI. Row files,
    /// dead letters and other bookkeeping live under `<table_uri>/_tributary/`.
    pub table_uri: String,
}

impl LakeConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.table_uri.trim().is_empty() {
            return Err(invalid(
                "lake.table_uri",
                &self.table_uri,
                "must not be empty",
            ));
        }
        Ok(())
    }
}
