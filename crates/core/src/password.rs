//! Passwords: argon2id with the crate's default (OWASP-recommended) parameters. Hashing runs on
//! the blocking pool so that a burst of sign-ins does not stall the async workers.

use crate::error::CoreError;
use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};

pub const MIN_LEN: usize = 10;
pub const MAX_LEN: usize = 256;

pub fn validate(password: &str) -> Result<(), CoreError> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(CoreError::invalid(
            "password",
            format!("must be at least {MIN_LEN} characters"),
        ));
    }
    if n > MAX_LEN {
        return Err(CoreError::invalid(
            "password",
            format!("must be at most {MAX_LEN} characters"),
        ));
    }
    Ok(())
}

pub async fn hash(password: String) -> Result<String, CoreError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| CoreError::Internal(format!("argon2: {e}")))
    })
    .await
    .map_err(|e| CoreError::Internal(format!("argon2 task: {e}")))?
}

/// Verifies `password` against a stored PHC string. Without a stored hash (unknown email) it
/// verifies against a fixed dummy hash, so both cases take the same time.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, CoreError> {
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let parsed = PasswordHash::new(&phc)
            .map_err(|e| CoreError::Internal(format!("stored hash: {e}")))?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(ok && known)
    })
    .await
    .map_err(|e| CoreError::Internal(format!("argon2 task: {e}")))?
}

static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(b"ezforge-dummy-password", &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
});

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(
            verify("correct horse battery".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong horse battery".into(), Some(h)).await.unwrap());
        assert!(!verify("anything at all".into(), None).await.unwrap());
    }

    #[test]
    fn length_rules() {
        assert!(validate("short").is_err());
        assert!(validate("long enough!").is_ok());
        assert!(validate(&"x".repeat(300)).is_err());
    }
}
