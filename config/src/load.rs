//! Reading a configuration: TOML text, then environment overrides, then checks.

use std::path::Path;

use crate::Config;
use crate::error::{ConfigError, Result};

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "TRIBUTARY_";

impl Config {
    /// Reads `path`, applies `TRIBUTARY_…` overrides from the process
    /// environment and validates the result.
    pub fn load(path: &Path) -> Result<Self> {
        load_file(path)
    }

    /// Parses `text`, applies overrides from `env` (pairs of variable name and
    /// value; only names with [`ENV_PREFIX`] and a `__` are used) and validates.
    pub fn from_toml_str(text: &str, env: impl Iterator<Item = (String, String)>) -> Result<Self> {
        parse(text, None, env)
    }
}

impl crate::registry::RegistryFile {
    /// Reads `path`, applies `TRIBUTARY_…` overrides from the process
    /// environment and validates the result.
    pub fn load(path: &Path) -> Result<Self> {
        load_file(path)
    }

    /// Parses `text`, applies overrides from `env` and validates.
    pub fn from_toml_str(text: &str, env: impl Iterator<Item = (String, String)>) -> Result<Self> {
        parse(text, None, env)
    }
}

/// A whole configuration file: [`Config`], or the registry's file.
pub(crate) trait ConfigFile: serde::de::DeserializeOwned {
    /// Checks every section.
    fn validate(&self) -> Result<()>;
    /// Fills defaults that depend on other sections.
    fn complete(&mut self) {}
}

impl ConfigFile for Config {
    fn validate(&self) -> Result<()> {
        Config::validate(self)
    }
    fn complete(&mut self) {
        Config::complete(self)
    }
}

fn load_file<T: ConfigFile>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, Some(path.display().to_string()), std::env::vars())
}

fn parse<T: ConfigFile>(
    text: &str,
    origin: Option<String>,
    env: impl Iterator<Item = (String, String)>,
) -> Result<T> {
    let parse_error = |origin: Option<String>| {
        move |source| ConfigError::Parse {
            origin,
            source: Box::new(source),
        }
    };
    let mut table: toml::Table = toml::from_str(text).map_err(parse_error(origin.clone()))?;
    let mut overridden = false;
    for (variable, value) in env {
        if let Some(path) = override_path(&variable) {
            apply_override(&mut table, &variable, &path, &value)?;
            overridden = true;
        }
    }
    let origin = if overridden {
        origin.map(|o| format!("{o} (with {ENV_PREFIX}… overrides)"))
    } else {
        origin
    };
    let mut config: T = table.try_into().map_err(parse_error(origin))?;
    config.validate()?;
    config.complete();
    Ok(config)
}

/// `TRIBUTARY_INGEST__BATCH__MAX_RECORDS` → `["ingest", "batch", "max_records"]`.
fn override_path(variable: &str) -> Option<Vec<String>> {
    let rest = variable.strip_prefix(ENV_PREFIX)?;
    if !rest.contains("__") {
        return None;
    }
    Some(rest.split("__").map(str::to_ascii_lowercase).collect())
}

fn apply_override(
    table: &mut toml::Table,
    variable: &str,
    path: &[String],
    value: &str,
) -> Result<()> {
    let conflict = || ConfigError::EnvOverride {
        variable: variable.to_string(),
        key: path.join("."),
        value: value.to_string(),
    };
    let (last, parents) = path.split_last().ok_or_else(conflict)?;
    let mut current = table;
    for segment in parents {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(conflict)?;
    }
    let typed = match current.get(last) {
        // Keep strings strings: `TRIBUTARY_INGEST__STREAM=2024` names a stream.
        Some(toml::Value::String(_)) => toml::Value::String(value.to_string()),
        _ => scalar(value),
    };
    current.insert(last.clone(), typed);
    Ok(())
}

/// An override's value: a boolean or number when it reads as one, else a string.
fn scalar(value: &str) -> toml::Value {
    if let Ok(b) = value.parse::<bool>() {
        toml::Value::Boolean(b)
    } else if let Ok(i) = value.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(f) = value.parse::<f64>()
        && f.is_finite()
    {
        toml::Value::Float(f)
    } else {
        toml::Value::String(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [lake]
        table_uri = "/tmp/t"
        [ingest]
        stream = "app"
        [ingest.files]
        path = "/tmp/in"
    "#;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn misspelled_key_is_rejected_and_named() {
        let text = MINIMAL.replace(
            "[ingest.files]",
            "[ingest.batch]\nmax_recrods = 5\n[ingest.files]",
        );
        let err = Config::from_toml_str(&text, env(&[])).unwrap_err();
        let message = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(message.contains("max_recrods"), "{message}");
    }

    #[test]
    fn misspelled_env_override_is_rejected() {
        let err =
            Config::from_toml_str(MINIMAL, env(&[("TRIBUTARY_LAKE__TABLE_URL", "x")])).unwrap_err();
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("table_url"), "{source}");
    }

    #[test]
    fn env_overrides_keys_with_types() {
        let config = Config::from_toml_str(
            MINIMAL,
            env(&[
                ("TRIBUTARY_LAKE__TABLE_URI", "/data/other"),
                ("TRIBUTARY_INGEST__BATCH__MAX_RECORDS", "42"),
                ("TRIBUTARY_INGEST__STREAM", "2024"),
                ("TRIBUTARY_LOG", "debug"),
            ]),
        )
        .unwrap();
        assert_eq!(config.lake.table_uri, "/data/other");
        let ingest = config.ingest.unwrap();
        assert_eq!(ingest.batch.max_records, 42);
        assert_eq!(ingest.stream, "2024");
    }

    #[test]
    fn validation_names_key_and_value() {
        let text = MINIMAL.replace("stream = \"app\"", "stream = \"app/logs\"");
        let err = Config::from_toml_str(&text, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ingest.stream") && err.contains("app/logs"),
            "{err}"
        );

        let err = Config::from_toml_str(
            MINIMAL,
            env(&[("TRIBUTARY_INGEST__BATCH__MAX_BYTES", "1000")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("ingest.batch.max_bytes")
                && err.contains("1000")
                && err.contains("10485760"),
            "{err}"
        );
    }

    #[test]
    fn service_address_is_parsed_and_checked() {
        let config = Config::from_toml_str(
            MINIMAL,
            env(&[("TRIBUTARY_SERVICE__LISTEN_ADDR", "127.0.0.1:0")]),
        )
        .unwrap();
        assert_eq!(config.service.listen_addr.to_string(), "127.0.0.1:0");
        assert_eq!(config.service.shutdown_grace_ms, 25_000);

        let text = format!("{MINIMAL}\n[service]\nlisten_addr = \"localhost-9500\"\n");
        let err = Config::from_toml_str(&text, env(&[])).unwrap_err();
        let message = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(message.contains("listen_addr"), "{message}");
    }

    #[test]
    fn declared_schema_types_parse() {
        let text = format!(
            "{MINIMAL}\n[ingest.flatten.schema]\nstatus = \"long\"\ntags = \"list<string>\"\n"
        );
        let config = Config::from_toml_str(&text, env(&[])).unwrap();
        let schema = &config.ingest.unwrap().flatten.schema;
        assert_eq!(schema["status"], crate::ColumnTypeName::Long);
        assert_eq!(schema["tags"], crate::ColumnTypeName::StringList);
    }

    /// Every example under `config/` must load: they are what users copy.
    #[test]
    fn example_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml")
                && path.file_name() != Some("Cargo.toml".as_ref())
            {
                let text = std::fs::read_to_string(&path).unwrap();
                // The registry's files (`registry*.toml`) have their own sections.
                let registry = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("registry"));
                let parsed = if registry {
                    crate::RegistryFile::from_toml_str(&text, env(&[])).map(drop)
                } else {
                    Config::from_toml_str(&text, env(&[])).map(drop)
                };
                parsed.unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
                seen += 1;
            }
        }
        assert!(
            seen >= 1,
            "no example configuration found in {}",
            dir.display()
        );
    }
}
