use std::path::PathBuf;

/// A configuration that cannot be used, with the key and value at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key, or a value of the wrong type.
    /// The message of `source` names the key and shows the offending line.
    #[error("invalid configuration{}", origin.as_ref().map(|o| format!(" in {o}")).unwrap_or_default())]
    Parse {
        /// The file or environment variable the text came from, if known.
        origin: Option<String>,
        /// The parser's error, which names the key.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// An environment override names a path that cannot hold a value.
    #[error(
        "environment variable {variable}: key `{key}` is not a table and cannot hold `{value}`"
    )]
    EnvOverride {
        /// The variable, e.g. `TRIBUTARY_LAKE__TABLE_URI`.
        variable: String,
        /// The configuration key it maps to.
        key: String,
        /// Its value.
        value: String,
    },
    /// A key has a value that parses but is not allowed.
    #[error("invalid value for `{key}`: {value:?} ({reason})")]
    Invalid {
        /// The dotted key, e.g. `ingest.batch.max_records`.
        key: String,
        /// The rejected value as written.
        value: String,
        /// What an allowed value looks like.
        reason: String,
    },
    /// A section the process needs is absent.
    #[error("the configuration has no [{section}] section, which this command needs")]
    MissingSection {
        /// The section name.
        section: &'static str,
    },
}

/// The result type of this crate.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Builds [`ConfigError::Invalid`].
pub(crate) fn invalid(key: &str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}
