use std::net::SocketAddr;

use serde::Deserialize;

use crate::ServiceConfig;
use crate::error::{Result, invalid};
use crate::lake::S3Config;
use crate::load::ConfigFile;

/// The configuration file of `tributary registry serve`: a `[registry]`
/// section and, optionally, `[service]` (of which the registry uses
/// `shutdown_grace_ms`; its API, metrics and health share
/// `registry.listen_addr`). Loaded like [`crate::Config`]: strictly, then
/// `TRIBUTARY_REGISTRY__…` overrides, then checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// The registry.
    pub registry: RegistryConfig,
    /// Shutdown settings.
    #[serde(default)]
    pub service: ServiceConfig,
}

impl ConfigFile for RegistryFile {
    fn validate(&self) -> Result<()> {
        self.registry.validate()?;
        self.service.validate()
    }
}

/// `[registry]`: the schema registry service (`tributary registry serve`).
///
/// Replicas are stateless: any number of processes with the same `name` and
/// `store_uri` serve one registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The registry's name. It goes into every schema UUID (a UUID is
    /// derived from the name and the normalized definition), so replicas of
    /// one registry must share it and it must never change once schemas are
    /// registered. `[A-Za-z0-9_.-]`, at most 100 characters.
    #[serde(default = "default_name")]
    pub name: String,
    /// Where schemas, subjects and versions are stored: `s3://bucket/prefix`,
    /// a local directory path (created if missing) or a `file://` URI.
    #[serde(default = "default_store_uri")]
    pub store_uri: String,
    /// How to reach S3 when `store_uri` is an `s3://` URI (same keys as
    /// `[lake.s3]`).
    #[serde(default)]
    pub s3: S3Config,
    /// Address of the REST API, which also serves `/metrics`, `/healthz` and
    /// `/readyz`. Port 0 picks a free port, which is logged at start.
    #[serde(default = "default_listen_addr")]
    pub listen_addr: SocketAddr,
    /// Bearer tokens allowed to call the API. None: the API is open to
    /// anyone who can reach it. `/metrics`, `/healthz` and `/readyz` never
    /// need a token.
    #[serde(default)]
    pub tokens: Vec<RegistryToken>,
}

/// `[[registry.tokens]]`: one bearer token, by its SHA-256 digest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryToken {
    /// Who holds the token; appears in logs, never the token itself.
    pub name: String,
    /// SHA-256 of the token, 64 hexadecimal digits (`printf %s "$TOKEN" |
    /// sha256sum`). The token itself is never written in configuration.
    pub sha256: String,
    /// What the token may do.
    pub scope: TokenScope,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Read schemas, subjects and configuration, and test compatibility.
    Read,
    /// Everything `read` may, and register, delete and configure.
    Write,
}

fn default_name() -> String {
    "tributary".into()
}
fn default_store_uri() -> String {
    "./tributary-data/registry".into()
}
fn default_listen_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8081))
}

impl RegistryConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 100
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !name_ok {
            return Err(invalid(
                "registry.name",
                &self.name,
                "must be 1 to 100 characters of [A-Za-z0-9_.-]",
            ));
        }
        if self.store_uri.trim().is_empty() {
            return Err(invalid(
                "registry.store_uri",
                &self.store_uri,
                "must not be empty",
            ));
        }
        if let Some(endpoint) = &self.s3.endpoint {
            let scheme_ok = endpoint.starts_with("https://")
                || (endpoint.starts_with("http://") && self.s3.allow_http);
            if !scheme_ok {
                return Err(invalid(
                    "registry.s3.endpoint",
                    endpoint,
                    "must start with https:// (or http:// with registry.s3.allow_http = true)",
                ));
            }
        }
        for token in &self.tokens {
            let digest_ok =
                token.sha256.len() == 64 && token.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !digest_ok {
                return Err(invalid(
                    "registry.tokens.sha256",
                    &token.sha256,
                    format!(
                        "token `{}`: must be the SHA-256 of the token, 64 hexadecimal digits \
                         (never the token itself)",
                        token.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{RegistryFile, TokenScope};

    fn load(text: &str) -> crate::Result<RegistryFile> {
        RegistryFile::from_toml_str(text, std::iter::empty())
    }

    #[test]
    fn defaults_and_overrides() {
        let file = load("[registry]\n").unwrap();
        assert_eq!(file.registry.name, "tributary");
        assert_eq!(file.registry.listen_addr.port(), 8081);
        assert!(file.registry.tokens.is_empty());
        assert!(load("").is_err(), "the [registry] section is required");
        let env = [(
            "TRIBUTARY_REGISTRY__STORE_URI".to_string(),
            "s3://bucket/registry".to_string(),
        )];
        let file = RegistryFile::from_toml_str("[registry]\n", env.into_iter()).unwrap();
        assert_eq!(file.registry.store_uri, "s3://bucket/registry");
    }

    #[test]
    fn tokens_are_digests_with_a_scope() {
        let digest = "a".repeat(64);
        let text = format!(
            "[registry]\n[[registry.tokens]]\nname = \"ci\"\nsha256 = \"{digest}\"\nscope = \"read\"\n"
        );
        let config = load(&text).unwrap();
        assert_eq!(config.registry.tokens[0].scope, TokenScope::Read);
        let err = load(&text.replace(&digest, "s3cr3t"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("registry.tokens.sha256") && err.contains("s3cr3t"),
            "{err}"
        );
        let err = load(&text.replace("scope = \"read\"", "scope = \"admin\""));
        assert!(err.is_err());
    }

    #[test]
    fn bad_names_and_misspelled_keys_are_refused() {
        let err = load("[registry]\nname = \"a/b\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("registry.name") && err.contains("a/b"),
            "{err}"
        );
        let err = load("[registry]\nstore_url = \"/tmp/r\"\n").unwrap_err();
        let message = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(message.contains("store_url"), "{message}");
    }
}
