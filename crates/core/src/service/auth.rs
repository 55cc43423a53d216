//! Sign-up, sign-in, sessions, invites and API key verification.

use super::{Core, SignupMode};
use crate::error::CoreError;
use crate::model::{ApiKeyRow, InviteRow, SessionRow, UserRow};
use crate::principal::Principal;
use crate::store::UserAdmission;
use crate::{api_key, ids, password, secret, validate};
use std::sync::Arc;

/// A session just created: the cookie value (shown to the client once) and its stored row.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: String,
    pub row: SessionRow,
    pub user: UserRow,
}

impl Core {
    /// Creates an account and signs it in. The first user of an instance is always admitted and
    /// becomes its admin; after that the sign-up mode decides.
    pub async fn signup(
        &self,
        email: &str,
        pass: &str,
        invite_code: Option<&str>,
    ) -> Result<NewSession, CoreError> {
        let email = validate::email(email)?;
        password::validate(pass)?;
        let now = self.clock.now();
        let admission = match (self.settings.signup, invite_code) {
            (_, Some(code)) => UserAdmission::Invite {
                code_hash: secret::hash(code),
                now,
            },
            (SignupMode::Open, None) => UserAdmission::Open,
            (SignupMode::Invite | SignupMode::Closed, None) => UserAdmission::FirstUserOnly,
        };
        let mut email_verified = false;
        if let UserAdmission::Invite { code_hash, .. } = &admission {
            // Check the invite's email binding before paying for argon2.
            let invite = self
                .store
                .invite_by_hash(code_hash)
                .await?
                .ok_or(CoreError::InviteInvalid)?;
            if invite.email.as_deref().is_some_and(|e| e != email) {
                return Err(CoreError::InviteInvalid);
            }
            email_verified = invite.email.as_deref() == Some(email.as_str());
        }
        let user = UserRow {
            id: ids::user_id(),
            email,
            password_hash: password::hash(pass.to_string()).await?,
            is_admin: false,
            email_verified,
            created_at: now,
        };
        let refused = match &admission {
            UserAdmission::Invite { .. } => CoreError::InviteInvalid,
            _ if self.settings.signup == SignupMode::Invite => CoreError::InviteRequired,
            _ => CoreError::SignupClosed,
        };
        let user = self
            .store
            .insert_user(&user, admission)
            .await
            .map_err(|e| match e {
                crate::StoreError::Conflict(_) => {
                    CoreError::Conflict("an account with this email already exists".into())
                }
                other => other.into(),
            })?;
        let user = user.ok_or(refused)?;
        tracing::info!(user_id = %user.id, admin = user.is_admin, "user signed up");
        self.start_session(user).await
    }

    /// Checks email and password, with brute-force limits per account and per client address.
    pub async fn login(
        &self,
        email: &str,
        pass: &str,
        client: &str,
    ) -> Result<NewSession, CoreError> {
        let now = self.clock.now();
        let email = email.trim().to_lowercase();
        let account_key = format!("acct:{email}");
        let client_key = format!("ip:{}", crate::ratelimit::address_key(client));
        // Counted before the password is checked, on every node alike: parallel guesses, on
        // one node or spread over several, cannot slip past the limit. The address first: a
        // request it refuses touches no account's count (so a spray of new emails from one
        // address stops at its limit); one an account refuses still counts for the address.
        let store = &*self.store;
        let limited = |retry_after| CoreError::RateLimited { retry_after };
        if let Some(retry_after) = self
            .login_by_client
            .attempt(store, &client_key, now)
            .await?
        {
            return Err(limited(retry_after));
        }
        if let Some(retry_after) = self
            .login_by_account
            .attempt(store, &account_key, now)
            .await?
        {
            return Err(limited(retry_after));
        }
        let user = self.store.user_by_email(&email).await?;
        let ok = password::verify(
            pass.to_string(),
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await?;
        match user {
            Some(user) if ok => {
                // The password was right: a failure to clear the counts only leaves them
                // stricter for a while, and should not cost the user this sign-in.
                if let Err(e) = self.login_by_account.reset(store, &account_key).await {
                    tracing::warn!(error = %e, "cannot clear an account's sign-in failures");
                }
                if let Err(e) = self.login_by_client.forgive(store, &client_key, now).await {
                    tracing::warn!(error = %e, "cannot take back a sign-in attempt");
                }
                self.start_session(user).await
            }
            _ => {
                tracing::info!(client, "failed sign-in");
                Err(CoreError::InvalidCredentials)
            }
        }
    }

    async fn start_session(&self, user: UserRow) -> Result<NewSession, CoreError> {
        let now = self.clock.now();
        let token = secret::random_token();
        let row = SessionRow {
            token_hash: secret::hash(&token),
            user_id: user.id.clone(),
            created_at: now,
            expires_at: now + self.settings.session_ttl_secs,
        };
        self.store.insert_session(&row).await?;
        Ok(NewSession { token, row, user })
    }

    /// The principal behind a session cookie.
    pub async fn authenticate_session(&self, token: &str) -> Result<Principal, CoreError> {
        let session = self
            .store
            .session_by_hash(&secret::hash(token))
            .await?
            .ok_or(CoreError::SessionInvalid)?;
        if session.expires_at <= self.clock.now() {
            return Err(CoreError::SessionExpired);
        }
        let user = self
            .store
            .user_by_id(&session.user_id)
            .await?
            .ok_or(CoreError::SessionInvalid)?;
        Ok(Principal::User { user, session })
    }

    /// Ends the caller's session.
    pub async fn logout(&self, principal: &Principal) -> Result<(), CoreError> {
        match principal {
            Principal::User { session, .. } => {
                self.store.delete_session(&session.token_hash).await?;
                Ok(())
            }
            Principal::ApiKey(_) => Err(CoreError::SessionRequired),
        }
    }

    /// Ends every session of the caller's account, on every device.
    pub async fn logout_everywhere(&self, principal: &Principal) -> Result<u64, CoreError> {
        let user = principal.user()?;
        Ok(self.store.delete_user_sessions(&user.id).await?)
    }

    /// Deletes sessions that expired more than a day ago (kept that long so that a late request
    /// is told "expired" rather than "invalid").
    pub async fn purge_expired_sessions(&self) -> Result<u64, CoreError> {
        Ok(self
            .store
            .purge_sessions(self.clock.now() - 24 * 3600)
            .await?)
    }

    /// Creates an invite code (admins only).
    pub async fn create_invite(
        &self,
        principal: &Principal,
        email: Option<&str>,
    ) -> Result<(InviteRow, String), CoreError> {
        let user = principal.user()?;
        if !user.is_admin {
            return Err(CoreError::Forbidden(
                "only the instance's admin can create invites".into(),
            ));
        }
        let email = email.map(validate::email).transpose()?;
        let now = self.clock.now();
        let code = format!("ezf_inv_{}", ids::random_base62(32));
        let invite = InviteRow {
            id: ids::invite_id(),
            code_hash: secret::hash(&code),
            email,
            created_by: user.id.clone(),
            created_at: now,
            expires_at: now + self.settings.invite_ttl_secs,
        };
        self.store.insert_invite(&invite).await?;
        Ok((invite, code))
    }

    /// Verifies a presented API key: shape and checksum offline, then the stored hash (from
    /// memory when recently verified), then revocation and expiry — which are checked on every
    /// call, cache or not.
    pub async fn authenticate_api_key(&self, token: &str) -> Result<Principal, CoreError> {
        api_key::parse(token)?;
        let hash = secret::hash(token);
        // Read before the cache and the database: a revocation heard after this point makes
        // the row read below not be kept (`TtlCache::insert_loaded`).
        let generation = self.key_cache.as_ref().map_or(0, |c| c.generation());
        let key = match self.key_cache.as_ref().and_then(|c| c.get(&hash)) {
            Some(key) => key,
            None => {
                let key = Arc::new(
                    self.store
                        .api_key_by_hash(&hash)
                        .await?
                        .ok_or(CoreError::ApiKeyUnknown)?,
                );
                if let Some(cache) = &self.key_cache {
                    cache.insert_loaded(generation, hash.clone(), key.clone());
                }
                key
            }
        };
        // The lookup was by hash; compare again in constant time so that no code path ever
        // decides on a variable-time comparison of secret material.
        if !secret::ct_eq(&key.secret_hash, &hash) {
            return Err(CoreError::ApiKeyUnknown);
        }
        let now = self.clock.now();
        if key.revoked_at.is_some() {
            return Err(CoreError::ApiKeyRevoked);
        }
        if key.expires_at.is_some_and(|at| at <= now) {
            return Err(CoreError::ApiKeyExpired);
        }
        self.note_key_use(&key, &hash, now, generation);
        Ok(Principal::ApiKey(key))
    }

    /// Records `last_used_at` at a coarse resolution, off the request path.
    fn note_key_use(&self, key: &Arc<ApiKeyRow>, hash: &str, now: i64, generation: u64) {
        let stale = key
            .last_used_at
            .is_none_or(|t| now - t >= self.settings.last_used_resolution_secs);
        if !stale {
            return;
        }
        let mut updated = (**key).clone();
        updated.last_used_at = Some(now);
        // The cached row learns of its use without living longer than it was loaded to.
        if let Some(cache) = &self.key_cache {
            cache.update_loaded(generation, hash.to_string(), Arc::new(updated));
        }
        let store = self.store.clone();
        let id = key.id.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = store.touch_api_key(&id, now).await {
                    tracing::warn!(key_id = %id, error = %e, "could not record API key use");
                }
            });
        }
    }

    /// Drops this node's copy of a verified API key (revoked here or on another node).
    pub fn forget_key(&self, secret_hash: &str) {
        if let Some(cache) = &self.key_cache {
            cache.invalidate(secret_hash);
        }
    }
}
