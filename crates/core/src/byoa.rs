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

#[cfg(test)]
mod tests {
    //! The key cache's rules, against a JWKS served from memory: the clock is the test's, the
    //! tokens' `exp` and `nbf` are checked against real time (as jsonwebtoken does).
    use super::*;
    use crate::clock::ManualClock;
    use crate::jwt::SigningKey;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Semaphore;

    const ISSUER: &str = "https://idp.example";
    const JWKS: &str = "https://idp.example/jwks.json";
    const RESOURCE: &str = "https://ezforge.example/mcp/s";

    /// Serves whatever keys it holds; counts fetches; when gated, each fetch waits for a permit.
    struct Jwks {
        keys: Mutex<Vec<crate::jwt::Jwk>>,
        fetches: AtomicUsize,
        gate: Option<Arc<Semaphore>>,
    }

    #[async_trait::async_trait]
    impl DocumentFetcher for Jwks {
        async fn fetch(&self, _: &url::Url) -> Result<Vec<u8>, String> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                gate.acquire().await.map_err(|e| e.to_string())?.forget();
            }
            let keys = self.keys.lock().unwrap().clone();
            Ok(serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap())
        }
    }

    fn key(kid: &str) -> SigningKey {
        SigningKey::generate(kid.into()).unwrap().0
    }

    fn now() -> i64 {
        crate::clock::SystemClock.now()
    }

    /// A token for `RESOURCE`, unique (its `jti`) so that no verified-token cache answers for it.
    fn token(key: &SigningKey, extra: Value) -> String {
        let mut claims = serde_json::json!({
            "iss": ISSUER, "aud": RESOURCE, "sub": "u1", "scope": "mcp:read",
            "exp": now() + 300, "jti": crate::ids::new_id("t"),
        });
        if let (Some(c), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        key.sign("at+jwt", &claims).unwrap()
    }

    fn verifier(
        keys: Vec<crate::jwt::Jwk>,
        gate: Option<Arc<Semaphore>>,
    ) -> (Arc<ByoaVerifier>, Arc<Jwks>, ManualClock) {
        let jwks = Arc::new(Jwks {
            keys: Mutex::new(keys),
            fetches: AtomicUsize::new(0),
            gate,
        });
        let clock = ManualClock::new();
        let v = Arc::new(ByoaVerifier::new(jwks.clone(), Arc::new(clock.clone())));
        (v, jwks, clock)
    }

    async fn verify(v: &Arc<ByoaVerifier>, token: &str) -> Result<ByoaClaims, String> {
        v.verify(token, ISSUER, JWKS, RESOURCE).await
    }

    #[tokio::test]
    async fn a_stale_key_set_keeps_serving_while_one_refresh_runs() {
        let (k1, k2) = (key("k1"), key("k2"));
        let gate = Arc::new(Semaphore::new(1));
        let (v, jwks, clock) = verifier(vec![k1.jwk()], Some(gate.clone()));
        assert!(verify(&v, &token(&k1, Value::Null)).await.is_ok());
        assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);

        // Past the set's ten minutes, the issuer has rotated to k2, and its JWKS is slow.
        clock.advance(KEYS_TTL_SECS + 1);
        *jwks.keys.lock().unwrap() = vec![k2.jwk()];
        for _ in 0..3 {
            assert!(
                verify(&v, &token(&k1, Value::Null)).await.is_ok(),
                "the stale set answers at once"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(
            jwks.fetches.load(Ordering::SeqCst),
            2,
            "one refresh in flight, not one per request"
        );

        // The refresh lands: k2 is known without another fetch; k1 is gone, and a token naming
        // it refetches once (an unknown kid) and is refused.
        gate.add_permits(1);
        let mut waited = 0;
        while v
            .entry(JWKS)
            .is_none_or(|e| e.lock().unwrap().fetched_at != clock.now())
        {
            waited += 1;
            assert!(waited < 500, "the background refresh never landed");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(verify(&v, &token(&k2, Value::Null)).await.is_ok());
        assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2);
        gate.add_permits(10);
        assert!(verify(&v, &token(&k1, Value::Null)).await.is_err());
        assert_eq!(jwks.fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_at_most_once_per_cool_down() {
        let (k1, k2) = (key("k1"), key("k2"));
        let (v, jwks, clock) = verifier(vec![k1.jwk()], None);
        assert!(verify(&v, &token(&k1, Value::Null)).await.is_ok());
        let unknown = verify(&v, &token(&k2, Value::Null)).await.unwrap_err();
        assert!(unknown.contains("no key `k2`"), "{unknown}");
        assert_eq!(
            jwks.fetches.load(Ordering::SeqCst),
            2,
            "one refetch for the unknown kid"
        );

        // The issuer publishes k2; within the cool-down nobody fetches again, however many
        // tokens name it.
        jwks.keys.lock().unwrap().push(k2.jwk());
        for _ in 0..5 {
            assert!(verify(&v, &token(&k2, Value::Null)).await.is_err());
        }
        assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2);
        clock.advance(UNKNOWN_KID_COOLDOWN_SECS);
        assert!(verify(&v, &token(&k2, Value::Null)).await.is_ok());
        assert_eq!(jwks.fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_key_set_keeps_at_most_fifty_keys() {
        let keys: Vec<SigningKey> = (0..MAX_KEYS + 10).map(|i| key(&format!("k{i}"))).collect();
        let (v, _, _) = verifier(keys.iter().map(SigningKey::jwk).collect(), None);
        assert!(verify(&v, &token(&keys[0], Value::Null)).await.is_ok());
        assert!(
            verify(&v, &token(&keys[MAX_KEYS - 1], Value::Null))
                .await
                .is_ok()
        );
        let past = verify(&v, &token(&keys[MAX_KEYS], Value::Null))
            .await
            .unwrap_err();
        assert!(past.contains("no key"), "{past}");
    }

    #[tokio::test]
    async fn exp_and_nbf_have_sixty_seconds_of_leeway() {
        let k1 = key("k1");
        let (v, _, _) = verifier(vec![k1.jwk()], None);
        let leeway = LEEWAY_SECS as i64;
        for (claims, ok) in [
            (serde_json::json!({"exp": now() - leeway / 2}), true),
            (serde_json::json!({"exp": now() - leeway - 30}), false),
            (serde_json::json!({"nbf": now() + leeway / 2}), true),
            (serde_json::json!({"nbf": now() + leeway + 30}), false),
        ] {
            let got = verify(&v, &token(&k1, claims.clone())).await;
            assert_eq!(got.is_ok(), ok, "{claims}: {got:?}");
        }
    }
}
