//! ES256 JSON Web Tokens: ezForge's own access tokens (RFC 9068) and their JWKS (RFC 7517).
//!
//! Verification accepts exactly `alg: ES256` with a `kid` naming one of our keys; the algorithm
//! is never taken from the token.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the token is not a JWT")]
    Malformed,
    #[error("the token's algorithm is not ES256")]
    Algorithm,
    #[error("the token names no known key")]
    UnknownKey,
    #[error("the token's signature is wrong")]
    Signature,
    #[error("cannot create or load a signing key")]
    Key,
}

/// A public key in JWK form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

impl Jwk {
    /// The 65-byte uncompressed point, for verification.
    pub fn point(&self) -> Option<Vec<u8>> {
        let x = URL_SAFE_NO_PAD.decode(&self.x).ok()?;
        let y = URL_SAFE_NO_PAD.decode(&self.y).ok()?;
        (x.len() == 32 && y.len() == 32).then(|| [&[4u8][..], &x, &y].concat())
    }
}

pub struct SigningKey {
    pub kid: String,
    pair: EcdsaKeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.kid)
    }
}

impl SigningKey {
    /// A new P-256 key; returns it with its PKCS#8 encoding (to be encrypted and stored).
    pub fn generate(kid: String) -> Result<(SigningKey, Vec<u8>), JwtError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| JwtError::Key)?;
        let pkcs8 = doc.as_ref().to_vec();
        Ok((Self::from_pkcs8(kid, &pkcs8)?, pkcs8))
    }

    pub fn from_pkcs8(kid: String, pkcs8: &[u8]) -> Result<SigningKey, JwtError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|_| JwtError::Key)?;
        Ok(SigningKey { kid, pair })
    }

    pub fn jwk(&self) -> Jwk {
        let point = self.pair.public_key().as_ref();
        Jwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: URL_SAFE_NO_PAD.encode(&point[1..33]),
            y: URL_SAFE_NO_PAD.encode(&point[33..65]),
            kid: self.kid.clone(),
            alg: "ES256".into(),
            use_: "sig".into(),
        }
    }

    /// Signs `claims` with header `{"alg":"ES256","typ":typ,"kid":…}`.
    /// `claims` is serialized as it is (a struct, or a `Value`): no intermediate `Value` on the
    /// token endpoint's path.
    pub fn sign(&self, typ: &str, claims: &impl serde::Serialize) -> Result<String, JwtError> {
        #[derive(serde::Serialize)]
        struct Header<'a> {
            alg: &'static str,
            typ: &'a str,
            kid: &'a str,
        }
        let header = Header {
            alg: "ES256",
            typ,
            kid: &self.kid,
        };
        let mut signing_input =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).map_err(|_| JwtError::Key)?);
        signing_input.push('.');
        URL_SAFE_NO_PAD.encode_string(
            serde_json::to_vec(claims).map_err(|_| JwtError::Key)?,
            &mut signing_input,
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| JwtError::Key)?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sig.as_ref())
        ))
    }
}

/// A decoded, signature-checked token. Claims are not yet validated (exp, aud, …).
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Value,
    pub claims: Value,
}

/// Checks the signature of an ES256 token against the key its `kid` names.
pub fn verify(token: &str, find_key: impl Fn(&str) -> Option<Jwk>) -> Result<Verified, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).map_err(|_| JwtError::Malformed)?)
            .map_err(|_| JwtError::Malformed)?;
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(JwtError::Algorithm);
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(JwtError::UnknownKey)?;
    let jwk = find_key(kid).ok_or(JwtError::UnknownKey)?;
    if jwk.kty != "EC" || jwk.crv != "P-256" {
        return Err(JwtError::Algorithm);
    }
    let point = jwk.point().ok_or(JwtError::UnknownKey)?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| JwtError::Signature)?;
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed)?)
            .map_err(|_| JwtError::Malformed)?;
    Ok(Verified { header, claims })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_and_refuse_forgeries() {
        let (key, pkcs8) = SigningKey::generate("k1".into()).unwrap();
        let again = SigningKey::from_pkcs8("k1".into(), &pkcs8).unwrap();
        assert_eq!(key.jwk(), again.jwk());
        let jwk = key.jwk();
        let find = |kid: &str| (kid == "k1").then(|| jwk.clone());
        let token = key
            .sign("at+jwt", &serde_json::json!({"sub": "u"}))
            .unwrap();
        let v = verify(&token, find).unwrap();
        assert_eq!(v.claims["sub"], "u");
        assert_eq!(v.header["typ"], "at+jwt");

        // Tampered payload.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(verify(&forged, find).unwrap_err(), JwtError::Signature);
        // alg none, HS256.
        for alg in ["none", "HS256", "RS256"] {
            let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"k1"}}"#));
            assert_eq!(
                verify(&format!("{h}.{}.{}", parts[1], parts[2]), find).unwrap_err(),
                JwtError::Algorithm
            );
        }
        // Unknown kid.
        let (other, _) = SigningKey::generate("k2".into()).unwrap();
        let t2 = other.sign("at+jwt", &serde_json::json!({})).unwrap();
        assert_eq!(verify(&t2, find).unwrap_err(), JwtError::UnknownKey);
        assert_eq!(verify("a.b", find).unwrap_err(), JwtError::Malformed);
    }
}
