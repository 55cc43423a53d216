//! The master key: encrypts secrets that must be recoverable (signing keys, pending
//! authorization requests) and derives keys for deterministic secrets.
//!
//! AES-256-GCM with a random 96-bit nonce per message; the output is
//! `base64url(nonce || ciphertext || tag)`. Derived keys are HMAC-SHA256(master, purpose).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the master key must be 32 bytes, base64-encoded")]
    BadMasterKey,
    #[error("cannot decrypt: wrong master key, or the data was altered")]
    Decrypt,
    #[error("the random number generator failed")]
    Rng,
}

#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

impl MasterKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| CryptoError::Rng)?;
        Ok(MasterKey { bytes })
    }

    /// Parses the base64 (standard or URL-safe, padded or not) form.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        let decoded = URL_SAFE_NO_PAD
            .decode(
                text.trim_end_matches('=')
                    .replace('+', "-")
                    .replace('/', "_"),
            )
            .map_err(|_| CryptoError::BadMasterKey)?;
        let bytes: [u8; 32] = decoded.try_into().map_err(|_| CryptoError::BadMasterKey)?;
        Ok(MasterKey { bytes })
    }

    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.bytes)
    }

    fn aead(&self) -> LessSafeKey {
        // 32 bytes is always a valid AES-256 key.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.bytes).expect("32-byte AES-256 key"))
    }

    /// Encrypts `plaintext`; `context` is authenticated but not encrypted (binds the ciphertext
    /// to its purpose, so one kind of sealed value cannot be replayed as another).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<String, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CryptoError::Rng)?;
        let mut in_out = plaintext.to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| CryptoError::Rng)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&in_out);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, CryptoError> {
        let data = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| CryptoError::Decrypt)?;
        if data.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ciphertext) = data.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Decrypt)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(plain.to_vec())
    }

    /// A key for `purpose`, derived so that no two uses share key material.
    pub fn derive(&self, purpose: &str) -> hmac::Key {
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.bytes),
            purpose.as_bytes(),
        );
        hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref())
    }
}

/// base64url(HMAC-SHA256(key, message)).
pub fn mac(key: &hmac::Key, message: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(hmac::sign(key, message).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_and_detect_tampering() {
        let k = MasterKey::generate().unwrap();
        let sealed = k.seal("signing-key", b"secret").unwrap();
        assert_eq!(k.open("signing-key", &sealed).unwrap(), b"secret");
        assert_eq!(k.open("other-purpose", &sealed), Err(CryptoError::Decrypt));
        let other = MasterKey::generate().unwrap();
        assert_eq!(
            other.open("signing-key", &sealed),
            Err(CryptoError::Decrypt)
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            k.open("signing-key", &URL_SAFE_NO_PAD.encode(bytes)),
            Err(CryptoError::Decrypt)
        );
    }

    #[test]
    fn base64_forms_and_derivation() {
        let k = MasterKey::generate().unwrap();
        let again = MasterKey::from_base64(&k.to_base64()).unwrap();
        assert_eq!(mac(&k.derive("a"), b"m"), mac(&again.derive("a"), b"m"));
        assert_ne!(mac(&k.derive("a"), b"m"), mac(&k.derive("b"), b"m"));
        assert_eq!(
            MasterKey::from_base64("short").unwrap_err(),
            CryptoError::BadMasterKey
        );
    }
}
