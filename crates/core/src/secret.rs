//! Secrets: generation, hashing for storage, constant-time comparison.
//!
//! Every secret ezForge issues (session tokens, API keys, invite codes) carries at least 190 bits
//! of entropy, so a single SHA-256 is the right hash for storage: nothing to brute-force, and the
//! lookup by hash costs microseconds. Passwords, chosen by people, use argon2id instead.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// 32 random bytes, base64url without padding (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Lowercase hex SHA-256: the form in which secrets are stored and looked up.
pub fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
        out.push(char::from_digit((b & 0xf) as u32, 16).unwrap_or('0'));
    }
    out
}

/// Constant-time equality of two strings (length is not secret).
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The CSRF token of a session: derived from the session secret, so nothing more is stored,
/// and one-way, so the token reveals nothing about the cookie.
pub fn csrf_token(session_token: &str) -> String {
    let digest = Sha256::digest(format!("ezforge-csrf-v1:{session_token}").as_bytes());
    URL_SAFE_NO_PAD.encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_hashes_are_stable() {
        let a = random_token();
        let b = random_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn ct_eq_compares_whole_strings() {
        assert!(ct_eq("same", "same"));
        assert!(!ct_eq("same", "sane"));
        assert!(!ct_eq("same", "same!"));
    }

    #[test]
    fn csrf_token_depends_on_the_session_and_does_not_contain_it() {
        let t = random_token();
        assert_eq!(csrf_token(&t), csrf_token(&t));
        assert_ne!(csrf_token(&t), csrf_token(&random_token()));
        assert!(!csrf_token(&t).contains(&t));
    }
}
