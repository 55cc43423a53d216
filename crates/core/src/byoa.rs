//! Bring Your Own Auth: verifying access tokens issued by a customer's authorization server
//! against its JWKS.
//!
//! Keys are cached per JWKS URI (10 minutes; a stale set keeps serving while one refresh runs in
//! the background), refetched at once when a token names an unknown `kid` (at most once every
//! 30 seconds per URI: the cool-down runs from the last such refetch or failed fetch, not from
//! a routine one, so a key the issuer starts using right after a routine fetch is picked up at
//! once), and bounded in number and size. The algorithm is pinned by the JWK (EC
//! P-256 → ES256, RSA → RS256, OKP Ed25519 → EdDSA), never taken from the token: `none` and
//! HMAC never pass.

use crate::oauth::cimd::DocumentFetcher;
use crate::{Clock, secret};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::sync::Cache;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEYS_TTL_SECS: i64 = 600;
const UNKNOWN_KID_COOLDOWN_SECS: i64 = 30;
const MAX_KEYS: usize = 50;
pub const LEEWAY_SECS: u64 = 60;

/// What the gateway needs from a verified BYOA token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByoaClaims {
    pub sub: String,
    pub client_id: String,
    /// Space-separated.
    pub scope: String,
    pub exp: i64,
}

struct KeySet {
    keys: Vec<Jwk>,
    fetched_at: i64,
    /// The last refetch forced by an unknown `kid`, or the last failed fetch: the cool-down
    /// runs from here.
    last_fetch_attempt: i64,
    refreshing: Arc<AtomicBool>,
}

pub struct ByoaVerifier {
    fetcher: Arc<dyn DocumentFetcher>,
    clock: Arc<dyn Clock>,
    sets: Mutex<std::collections::HashMap<String, Arc<Mutex<KeySet>>>>,
    /// Verified tokens by hash and the issuer/audience they were checked for.
    verified: Cache<String, Arc<ByoaClaims>>,
}

/// The algorithm a JWK may be used with.
pub fn pinned_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let from_key = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None, // symmetric keys and other curves: never
    };
    match jwk.common.key_algorithm {
        None => Some(from_key),
        Some(KeyAlgorithm::ES256) if from_key == Algorithm::ES256 => Some(from_key),
        Some(KeyAlgorithm::RS256) if from_key == Algorithm::RS256 => Some(from_key),
        Some(KeyAlgorithm::EdDSA) if from_key == Algorithm::EdDSA => Some(from_key),
        Some(_) => None,
    }
}

impl ByoaVerifier {
    pub fn new(fetcher: Arc<dyn DocumentFetcher>, clock: Arc<dyn Clock>) -> Self {
        ByoaVerifier {
            fetcher,
            clock,
            sets: Mutex::new(Default::default()),
            verified: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    async fn fetch(&self, jwks_uri: &str) -> Result<Vec<Jwk>, String> {
        let url = url::Url::parse(jwks_uri).map_err(|e| e.to_string())?;
        let body = self.fetcher.fetch(&url).await?;
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("the JWKS is malformed: {e}"))?;
        Ok(set
            .keys
            .into_iter()
            .filter(|k| pinned_algorithm(k).is_some())
            .take(MAX_KEYS)
            .collect())
    }

    fn entry(&self, jwks_uri: &str) -> Option<Arc<Mutex<KeySet>>> {
        self.sets.lock().ok()?.get(jwks_uri).cloned()
    }

    /// The key named `kid`, fetching or refetching the JWKS as the rules above allow.
    async fn key(self: &Arc<Self>, jwks_uri: &str, kid: &str) -> Result<Jwk, String> {
        let now = self.clock.now();
        let find = |set: &KeySet| {
            set.keys
                .iter()
                .find(|k| k.common.key_id.as_deref() == Some(kid))
                .cloned()
        };
        if let Some(entry) = self.entry(jwks_uri) {
            let (found, stale, may_refetch, refreshing) = {
                let set = entry.lock().map_err(|_| "poisoned".to_string())?;
                (
                    find(&set),
                    now - set.fetched_at > KEYS_TTL_SECS,
                    now - set.last_fetch_attempt >= UNKNOWN_KID_COOLDOWN_SECS,
                    set.refreshing.clone(),
                )
            };
            if let Some(key) = found {
                if stale && !refreshing.swap(true, Ordering::SeqCst) {
                    // Serve the stale set now; refresh it in the background.
                    let me = self.clone();
                    let uri = jwks_uri.to_string();
                    tokio::spawn(async move {
                        let _ = me.refetch(&uri, false).await;
                        refreshing.store(false, Ordering::SeqCst);
                    });
                }
                return Ok(key);
            }
            if !may_refetch {
                return Err(format!("no key `{kid}` in the issuer's JWKS"));
            }
        }
        let keys = self.refetch(jwks_uri, true).await?;
        keys.iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .cloned()
            .ok_or_else(|| format!("no key `{kid}` in the issuer's JWKS"))
    }

    /// Fetches the JWKS again; `forced` when a token named a `kid` the cached set lacks (or
    /// nothing is cached yet), which starts the cool-down.
    async fn refetch(&self, jwks_uri: &str, forced: bool) -> Result<Vec<Jwk>, String> {
        let now = self.clock.now();
        let mut previous_attempt = i64::MIN / 2;
        if let Some(entry) = self.entry(jwks_uri)
            && let Ok(mut set) = entry.lock()
        {
            if forced {
                set.last_fetch_attempt = now;
            }
            previous_attempt = set.last_fetch_attempt;
        }
        let fetched = self.fetch(jwks_uri).await;
        let mut sets = self.sets.lock().map_err(|_| "poisoned".to_string())?;
        let keys = match fetched {
            Ok(keys) => keys,
            Err(e) => {
                // Remember the attempt even when nothing was ever fetched, so that a failing
                // issuer is not hit once per incoming request.
                sets.entry(jwks_uri.to_string()).or_insert_with(|| {
                    Arc::new(Mutex::new(KeySet {
                        keys: Vec::new(),
                        fetched_at: now,
                        last_fetch_attempt: now,
                        refreshing: Default::default(),
                    }))
                });
                return Err(e);
            }
        };
        if sets.len() > 10_000 {
            sets.clear();
        }
        let refreshing = sets
            .get(jwks_uri)
            .and_then(|e| e.lock().ok().map(|s| s.refreshing.clone()))
            .unwrap_or_default();
        // The first fetch of a URI (nothing cached) does not start the cool-down: a token naming
        // a key published just after it may still cause one refetch.
        sets.insert(
            jwks_uri.to_string(),
            Arc::new(Mutex::new(KeySet {
                keys: keys.clone(),
                fetched_at: now,
                last_fetch_attempt: previous_attempt,
                refreshing,
            })),
        );
        Ok(keys)
    }

    /// Verifies `token` for a server whose issuer and JWKS are `issuer` and `jwks_uri` and whose
    /// resource URI is `resource`.
    pub async fn verify(
        self: &Arc<Self>,
        token: &str,
        issuer: &str,
        jwks_uri: &str,
        resource: &str,
    ) -> Result<ByoaClaims, String> {
        let cache_key = secret::hash(&format!("{issuer}\n{jwks_uri}\n{resource}\n{token}"));
        if let Some(claims) = self.verified.get(&cache_key) {
            if claims.exp + LEEWAY_SECS as i64 > self.clock.now() {
                return Ok((*claims).clone());
            }
            return Err("the token expired".into());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        let kid = header.kid.ok_or("the token names no key (kid)")?;
        let jwk = self.key(jwks_uri, &kid).await?;
        let alg = pinned_algorithm(&jwk).ok_or("the key's type cannot verify tokens")?;
        if header.alg != alg {
            return Err(format!(
                "the token says {:?} but its key is for {alg:?}",
                header.alg
            ));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[resource]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| format!("refused: {e}"))?;
        let c = data.claims;
        let scope = match (c.get("scope"), c.get("scp")) {
            (Some(Value::String(s)), _) => s.clone(),
            (_, Some(Value::Array(a))) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            (_, Some(Value::String(s))) => s.clone(),
            _ => String::new(),
        };
        let sub = c
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("the token names no subject (sub)")?;
        let claims = ByoaClaims {
            sub: sub.to_string(),
            client_id: c
                .get("client_id")
                .or_else(|| c.get("azp"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            scope,
            exp: c.get("exp").and_then(Value::as_i64).unwrap_or_default(),
        };
        self.verified.insert(cache_key, Arc::new(claims.clone()));
        Ok(claims)
    }
}
