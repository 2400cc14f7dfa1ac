use serde::Deserialize;

use crate::error::{Result, invalid};

/// `[lake]`: the Delta table and Tributary's objects beside it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Location of the Delta table: `s3://bucket/prefix`, a local directory
    /// path (relative paths are resolved against the working directory) or a
    /// `file://` URI. Row files, dead letters and other bookkeeping live under
    /// `<table_uri>/_tributary/`.
    pub table_uri: String,
    /// How to reach S3 when `table_uri` is an `s3://` URI. Credentials are
    /// never configured here: they come from the AWS credential chain
    /// (environment, profile, ECS task role, EKS IRSA).
    #[serde(default)]
    pub s3: S3Config,
    /// Columns that identify the person a row is about (e.g.
    /// `messages_user_id`, `messages_user_email`). Parquet files get bloom
    /// filters on them (as on `_key`), the compactor sorts by them first, and
    /// `tributary forget` erases by their values. Default: none.
    #[serde(default)]
    pub subject_columns: Vec<String>,
}

/// `[lake.s3]`: the S3 (or S3-compatible) endpoint of an `s3://` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The AWS region, e.g. `eu-west-1`. Default: from the environment
    /// (`AWS_REGION`) or profile.
    pub region: Option<String>,
    /// Endpoint URL of an S3-compatible server, e.g. `http://127.0.0.1:5000`.
    /// Default: AWS S3 of the region.
    pub endpoint: Option<String>,
    /// Allow `http://` endpoints (test servers). Default false.
    #[serde(default)]
    pub allow_http: bool,
    /// Address buckets as `endpoint/bucket` (path style) instead of
    /// `bucket.endpoint` (virtual-hosted style). Most S3-compatible servers
    /// need it. Default false.
    #[serde(default)]
    pub path_style: bool,
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
        if let Some(empty) = self.subject_columns.iter().find(|c| c.trim().is_empty()) {
            return Err(invalid(
                "lake.subject_columns",
                format!("{empty:?}"),
                "column names must not be empty",
            ));
        }
        if let Some(endpoint) = &self.s3.endpoint {
            let scheme_ok = endpoint.starts_with("https://")
                || (endpoint.starts_with("http://") && self.s3.allow_http);
            if !scheme_ok {
                return Err(invalid(
                    "lake.s3.endpoint",
                    endpoint,
                    "must start with https:// (or http:// with lake.s3.allow_http = true)",
                ));
            }
        }
        Ok(())
    }
}
