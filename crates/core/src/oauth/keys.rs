//! Signing keys: ES256, private halves sealed with the master key, rotated without a gap.
//!
//! A new key is published (in the JWKS) `key_publish_secs` before it signs, so every verifier
//! that caches the JWKS knows it before meeting a token it signed. A retired key stays published
//! until every token it signed has expired, then it is deleted.

use super::{OAuth, OAuthError};
use crate::ids;
use crate::invalidation::{self, Invalidation};
use crate::jwt::{Jwk, SigningKey};
use crate::oauth::model::SigningKeyRow;
use std::sync::{Arc, RwLock};

const SEAL_CONTEXT: &str = "ezforge-signing-key-v1";

struct Loaded {
    row: SigningKeyRow,
    key: Arc<SigningKey>,
    jwk: Jwk,
}

#[derive(Default)]
pub struct KeyRing {
    keys: RwLock<Vec<Loaded>>,
}

/// A key as listed to operators.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub kid: String,
    pub created_at: i64,
    pub signs_from: i64,
    pub retired_at: Option<i64>,
    pub signing: bool,
}

impl OAuth {
    /// Loads the keys; if none can sign now or soon, creates one that signs at once.
    pub(super) async fn ensure_signing_key(&self) -> Result<(), OAuthError> {
        self.reload_keys().await?;
        let now = self.now();
        let usable = self
            .keys
            .keys
            .read()
            .map_err(poisoned)?
            .iter()
            .any(|k| k.row.retired_at.is_none_or(|r| r > now));
        if !usable {
            self.create_key(now).await?;
            self.reload_keys().await?;
            invalidation::publish(&*self.store, Invalidation::SigningKeys).await;
        }
        Ok(())
    }

    async fn create_key(&self, signs_from: i64) -> Result<SigningKeyRow, OAuthError> {
        let kid = ids::new_id("es256");
        let (key, pkcs8) =
            SigningKey::generate(kid.clone()).map_err(|e| OAuthError::Server(e.to_string()))?;
        let row = SigningKeyRow {
            kid,
            public_jwk: serde_json::to_string(&key.jwk())
                .map_err(|e| OAuthError::Server(e.to_string()))?,
            private_key: self
                .master
                .seal(SEAL_CONTEXT, &pkcs8)
                .map_err(|e| OAuthError::Server(e.to_string()))?,
            created_at: self.now(),
            signs_from,
            retired_at: None,
        };
        self.store.insert_signing_key(&row).await?;
        tracing::info!(kid = %row.kid, signs_from, "signing key created");
        Ok(row)
    }

    /// Re-reads the keys from the database (other nodes may have rotated).
    pub async fn reload_keys(&self) -> Result<(), OAuthError> {
        let rows = self.store.signing_keys().await?;
        let mut loaded = Vec::with_capacity(rows.len());
        for row in rows {
            let pkcs8 = self.master.open(SEAL_CONTEXT, &row.private_key).map_err(|_| {
                OAuthError::Server(format!(
                    "signing key {} cannot be decrypted: the master key is not the one it was sealed with",
                    row.kid
                ))
            })?;
            let key = SigningKey::from_pkcs8(row.kid.clone(), &pkcs8)
                .map_err(|e| OAuthError::Server(e.to_string()))?;
            loaded.push(Loaded {
                jwk: key.jwk(),
                key: Arc::new(key),
                row,
            });
        }
        *self.keys.keys.write().map_err(poisoned)? = loaded;
        Ok(())
    }

    /// The key to sign with now: the newest that has started signing and is not retired.
    pub(super) fn current_key(&self) -> Result<Arc<SigningKey>, OAuthError> {
        let now = self.now();
        let keys = self.keys.keys.read().map_err(poisoned)?;
        keys.iter()
            .filter(|k| k.row.signs_from <= now && k.row.retired_at.is_none_or(|r| r > now))
            .max_by_key(|k| (k.row.signs_from, k.row.created_at))
            .or_else(|| {
                keys.iter()
                    .filter(|k| k.row.signs_from <= now)
                    .max_by_key(|k| k.row.signs_from)
            })
            .map(|k| k.key.clone())
            .ok_or_else(|| OAuthError::Server("no signing key".into()))
    }

    /// Every published public key, for `jwks_uri`.
    pub fn jwks(&self) -> Result<Vec<Jwk>, OAuthError> {
        Ok(self
            .keys
            .keys
            .read()
            .map_err(poisoned)?
            .iter()
            .map(|k| k.jwk.clone())
            .collect())
    }

    pub fn find_jwk(&self, kid: &str) -> Option<Jwk> {
        self.keys
            .keys
            .read()
            .ok()?
            .iter()
            .find(|k| k.row.kid == kid)
            .map(|k| k.jwk.clone())
    }

    pub fn key_infos(&self) -> Result<Vec<KeyInfo>, OAuthError> {
        let current = self.current_key()?.kid.clone();
        Ok(self
            .keys
            .keys
            .read()
            .map_err(poisoned)?
            .iter()
            .map(|k| KeyInfo {
                kid: k.row.kid.clone(),
                created_at: k.row.created_at,
                signs_from: k.row.signs_from,
                retired_at: k.row.retired_at,
                signing: k.row.kid == current,
            })
            .collect())
    }

    /// Starts a rotation: a new key, published now, signing after `key_publish_secs`; the current
    /// keys retire at that moment.
    pub async fn rotate_signing_key(&self) -> Result<KeyInfo, OAuthError> {
        let signs_from = self.now() + self.settings.key_publish_secs;
        let row = self.create_key(signs_from).await?;
        self.store.retire_signing_keys(&row.kid, signs_from).await?;
        self.reload_keys().await?;
        invalidation::publish(&*self.store, Invalidation::SigningKeys).await;
        Ok(KeyInfo {
            kid: row.kid,
            created_at: row.created_at,
            signs_from,
            retired_at: None,
            signing: false,
        })
    }

    /// Deletes keys retired long enough that no unexpired token can carry them.
    pub(super) async fn prune_keys(&self) -> Result<(), OAuthError> {
        let cutoff = self.now() - self.settings.access_token_ttl_secs - 300;
        for row in self.store.signing_keys().await? {
            if row.retired_at.is_some_and(|r| r < cutoff) {
                self.store.delete_signing_key(&row.kid).await?;
                tracing::info!(kid = %row.kid, "signing key unpublished");
            }
        }
        Ok(())
    }
}

fn poisoned<T>(_: T) -> OAuthError {
    OAuthError::Server("key ring lock poisoned".into())
}
