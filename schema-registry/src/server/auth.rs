//! Authentication: the bearer tokens the API accepts ([`Auth`]), what each
//! may do ([`Scope`]), and the middleware that checks a request's token
//! against the scope its route needs.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::Shared;
use super::responses::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read, look up, test compatibility.
    Read,
    /// Everything, including register, delete and configure.
    Write,
}

/// The bearer tokens the API accepts, by SHA-256 digest. Empty: no
/// authentication.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<(String, [u8; 32], Scope)>,
}

impl Auth {
    /// No authentication.
    pub fn open() -> Self {
        Self::default()
    }

    /// Accepts the token whose SHA-256 is `sha256_hex`, for `scope`; `name`
    /// is for logs. Fails when the digest is not 64 hex digits.
    pub fn with_token(
        mut self,
        name: impl Into<String>,
        sha256_hex: &str,
        scope: Scope,
    ) -> Result<Self, String> {
        let mut digest = [0u8; 32];
        let valid = sha256_hex.len() == 64
            && digest.iter_mut().enumerate().all(|(i, byte)| {
                sha256_hex
                    .get(2 * i..2 * i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .map(|b| *byte = b)
                    .is_some()
            });
        if !valid {
            return Err(format!("`{sha256_hex}` is not a SHA-256 digest in hex"));
        }
        self.tokens.push((name.into(), digest, scope));
        Ok(self)
    }

    /// The scope of a presented token, if it is one of ours.
    fn scope_of(&self, token: &str) -> Option<(&str, Scope)> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.tokens
            .iter()
            .find(|(_, d, _)| *d == digest)
            .map(|(name, _, scope)| (name.as_str(), *scope))
    }
}

pub(super) async fn authenticate(State(api): Shared, request: Request, next: Next) -> Response {
    if api.auth.tokens.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some((name, scope)) = presented.and_then(|t| api.auth.scope_of(t)) else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            40101,
            "a valid bearer token is required (Authorization: Bearer <token>)",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", |p| p.as_str());
    let needs = needed_scope(request.method(), route);
    if scope < needs {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            40301,
            format!(
                "token `{name}` has the read scope; {} {route} needs write",
                request.method()
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Reads are `GET`, looking a schema up and testing compatibility.
fn needed_scope(method: &Method, route: &str) -> Scope {
    let read = *method == Method::GET
        || (*method == Method::POST
            && (route == "/subjects/{subject}" || route.starts_with("/compatibility/")));
    if read { Scope::Read } else { Scope::Write }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_methods_and_routes() {
        assert_eq!(needed_scope(&Method::GET, "/subjects"), Scope::Read);
        assert_eq!(
            needed_scope(&Method::POST, "/subjects/{subject}"),
            Scope::Read
        );
        assert_eq!(
            needed_scope(&Method::POST, "/compatibility/subjects/{subject}/versions"),
            Scope::Read
        );
        assert_eq!(
            needed_scope(&Method::POST, "/subjects/{subject}/versions"),
            Scope::Write
        );
        assert_eq!(needed_scope(&Method::PUT, "/config"), Scope::Write);
        assert_eq!(
            needed_scope(&Method::DELETE, "/subjects/{subject}"),
            Scope::Write
        );
    }

    #[test]
    fn tokens_are_matched_by_digest() {
        // SHA-256("secret").
        let digest = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        let auth = Auth::open().with_token("ci", digest, Scope::Read).unwrap();
        assert_eq!(auth.scope_of("secret"), Some(("ci", Scope::Read)));
        assert_eq!(auth.scope_of("Secret"), None);
        assert!(Auth::open().with_token("x", "secret", Scope::Read).is_err());
    }
}
