//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document): a `client_id`
//! that is an https URL names a JSON document, fetched by the server, that describes the client.
//!
//! The fetching itself (SSRF-hardened: no private targets, no redirects, size cap, timeout)
//! lives in the HTTP layer behind [`DocumentFetcher`]; this module validates and caches.

use super::clients::{ClientMetadata, client_row, normalize};
use super::model::{ClientKind, ClientRow};
use super::{OAuth, OAuthError};
use async_trait::async_trait;
use moka::sync::Cache;
use std::sync::Arc;
use std::time::Duration;

/// Fetches a client's metadata document. Errors are human-readable reasons.
#[async_trait]
pub trait DocumentFetcher: Send + Sync {
    async fn fetch(&self, url: &url::Url) -> Result<Vec<u8>, String>;
}

/// Fetched documents, good or bad, kept for a while so that a client id is fetched at most once
/// per period however often it is presented.
pub struct CimdCache {
    fetcher: Arc<dyn DocumentFetcher>,
    entries: Cache<String, Result<Arc<ClientRow>, String>>,
    failures: Cache<String, String>,
    /// Fetches in flight at once, and fetches started per minute, instance-wide: the server
    /// must not become a way to send many requests to somebody else's host.
    in_flight: tokio::sync::Semaphore,
    started: crate::ratelimit::WindowLimiter,
}

impl CimdCache {
    pub fn new(fetcher: Arc<dyn DocumentFetcher>) -> Self {
        CimdCache {
            fetcher,
            entries: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            failures: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            in_flight: tokio::sync::Semaphore::new(8),
            started: crate::ratelimit::WindowLimiter::new(120, 60, 16),
        }
    }
}

/// Whether `client_id` is a URL (and so names a metadata document).
pub fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// The draft's rules for a client id URL: https, a path, no fragment, no user information, no
/// dot segments. `allow_http` admits plain http (operators testing on loopback).
pub fn parse_client_id_url(client_id: &str, allow_http: bool) -> Result<url::Url, String> {
    let url =
        url::Url::parse(client_id).map_err(|e| format!("the client_id is not a valid URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ => return Err("a client_id URL must use https".into()),
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err("a client_id URL must not contain a fragment or user information".into());
    }
    let raw_path = client_id
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("");
    let path = raw_path.split(['?', '#']).next().unwrap_or("");
    if path.len() <= 1 {
        return Err("a client_id URL must have a path".into());
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("a client_id URL must not contain dot segments".into());
    }
    Ok(url)
}

impl OAuth {
    /// The client described by the document at `client_id`, fetched or from the cache.
    /// The name in this node's copy of a client's document, if it holds one; fetches nothing.
    pub(super) fn cached_document_name(&self, client_id: &str) -> Option<String> {
        match self.cimd.as_ref()?.entries.get(client_id) {
            Some(Ok(client)) => client.client_name.clone(),
            _ => None,
        }
    }

    pub(super) async fn document_client(
        &self,
        client_id: &str,
    ) -> Result<Arc<ClientRow>, OAuthError> {
        let cache = self.cimd.as_ref().ok_or_else(|| {
            OAuthError::InvalidClient("client metadata documents are not enabled".into())
        })?;
        if let Some(reason) = cache.failures.get(client_id) {
            return Err(OAuthError::InvalidClient(reason));
        }
        if let Some(Ok(client)) = cache.entries.get(client_id) {
            return Ok(client);
        }
        if cache.started.hit("fetches", self.now()).is_err() {
            return Err(OAuthError::InvalidClient(
                "too many client metadata documents are being fetched right now; try again in a minute".into(),
            ));
        }
        let _permit = cache
            .in_flight
            .acquire()
            .await
            .map_err(|_| OAuthError::Server("fetch limiter closed".into()))?;
        match self.fetch_document(cache, client_id).await {
            Ok(client) => {
                let client = Arc::new(client);
                cache
                    .entries
                    .insert(client_id.to_string(), Ok(client.clone()));
                Ok(client)
            }
            Err(reason) => {
                tracing::info!(client_id, %reason, "client metadata document refused");
                cache.failures.insert(client_id.to_string(), reason.clone());
                Err(OAuthError::InvalidClient(reason))
            }
        }
    }

    async fn fetch_document(
        &self,
        cache: &CimdCache,
        client_id: &str,
    ) -> Result<ClientRow, String> {
        let url = parse_client_id_url(client_id, self.settings.cimd_allow_private)?;
        let body = cache.fetcher.fetch(&url).await?;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("the client metadata document is not JSON: {e}"))?;
        if doc.get("client_id").and_then(|v| v.as_str()) != Some(client_id) {
            return Err("the document's client_id does not equal its URL".into());
        }
        for forbidden in ["client_secret", "client_secret_expires_at"] {
            if doc.get(forbidden).is_some() {
                return Err(format!(
                    "a client metadata document must not contain {forbidden}"
                ));
            }
        }
        let mut metadata: ClientMetadata = serde_json::from_value(doc)
            .map_err(|e| format!("the client metadata document is malformed: {e}"))?;
        match metadata.token_endpoint_auth_method.as_deref() {
            None | Some("none") => metadata.token_endpoint_auth_method = Some("none".into()),
            Some(other) => {
                return Err(format!(
                    "token_endpoint_auth_method `{other}` is not supported for metadata documents; use none"
                ));
            }
        }
        if metadata.grant_types.is_none() {
            metadata.grant_types = Some(vec!["authorization_code".into(), "refresh_token".into()]);
        }
        let normalized = normalize(&metadata).map_err(|e| e.description())?;
        Ok(client_row(
            client_id.to_string(),
            ClientKind::Document,
            metadata.client_name.clone(),
            normalized,
            self.now(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_client_id_url;

    #[test]
    fn client_id_url_rules() {
        assert!(parse_client_id_url("https://app.example.com/oauth/client.json", false).is_ok());
        assert!(parse_client_id_url("https://app.example.com/c?v=1", false).is_ok());
        for bad in [
            "http://app.example.com/client.json",
            "https://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/a/../client.json",
            "https://u@app.example.com/client.json",
            "https://app.example.com/client.json#x",
        ] {
            assert!(parse_client_id_url(bad, false).is_err(), "{bad}");
        }
        assert!(parse_client_id_url("http://127.0.0.1:9000/client.json", true).is_ok());
    }
}
