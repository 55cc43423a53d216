//! Refresh-token families: one stored row per chain of rotations, updated in place.
//!
//! A refresh token reads `ezf_rt_` + family + `.` + generation + `.` + tag. The family is 16
//! random bytes (base64url), the generation counts the family's rotations from 0, and the tag
//! is an HMAC of both with a key derived from the master key, so that a token is checked before
//! the database is read and no generation can be made up. The row (in `oauth_refresh_tokens`)
//! is found by the family's *key*, another HMAC of the family: neither the row nor the master
//! key alone yields a token, and no string a client can present hashes to a family's key, so
//! the row of a family is out of reach of a token looked up the old way (by SHA-256).
//!
//! The row keeps the current generation. A rotation moves it from g to g + 1 in one update of
//! unindexed columns (no insert, no index entry, no foreign-key check); the successor of
//! generation g is the same token at g + 1, made from the presented token alone, so a retry
//! gets the same successor. A token of an older generation than the row's was spent: one
//! generation behind, it is the previous token (the grace rule applies), further behind, it
//! is a reuse, and its family is revoked.
//!
//! Tokens issued before families (`ezf_rt_` + 43 base64url characters, no `.`) keep their rows
//! per token, looked up by SHA-256, until they expire.

use crate::{crypto, secret};
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const PREFIX: &str = "ezf_rt_";
const TAG_PURPOSE: &str = "ezforge-refresh-family-tag-v1";
const KEY_PURPOSE: &str = "ezforge-refresh-family-key-v1";
/// base64url of 16 bytes.
const FAMILY_LEN: usize = 22;

/// A refresh token as presented, told apart by its form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Presented {
    /// A family's token whose tag checks out.
    Family(FamilyToken),
    /// A token of the kind issued before families, looked up by its SHA-256.
    Legacy,
    /// Shaped like a family's token, with a tag this instance did not make: never looked up.
    Forged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FamilyToken {
    pub family: String,
    pub generation: i64,
}

/// The two keys families need, derived from the master key once.
pub(crate) struct FamilyKeys {
    tag: hmac::Key,
    key: hmac::Key,
}

impl FamilyKeys {
    pub(crate) fn new(master: &crypto::MasterKey) -> Self {
        FamilyKeys {
            tag: master.derive(TAG_PURPOSE),
            key: master.derive(KEY_PURPOSE),
        }
    }

    /// A new family, at generation 0.
    pub(crate) fn start(&self) -> FamilyToken {
        let random = secret::random_token();
        FamilyToken {
            family: random[..FAMILY_LEN].to_string(),
            generation: 0,
        }
    }

    /// The family at generation 0 named by `seed` (base64url, at least 22 characters): a
    /// family derived from something else, such as a token of the old kind.
    pub(crate) fn derived(&self, seed: &str) -> FamilyToken {
        FamilyToken {
            family: seed.chars().take(FAMILY_LEN).collect(),
            generation: 0,
        }
    }

    /// The token of `t`'s family at `t`'s generation.
    pub(crate) fn token(&self, t: &FamilyToken) -> String {
        let body = format!("{}.{}", t.family, t.generation);
        let tag = URL_SAFE_NO_PAD.encode(hmac::sign(&self.tag, body.as_bytes()).as_ref());
        format!("{PREFIX}{body}.{tag}")
    }

    /// The key a family's row is stored under (hex, as token hashes are).
    pub(crate) fn row_key(&self, family: &str) -> String {
        let mac = hmac::sign(&self.key, family.as_bytes());
        let mut out = String::with_capacity(64);
        for b in mac.as_ref() {
            out.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
            out.push(char::from_digit((b & 0xf) as u32, 16).unwrap_or('0'));
        }
        out
    }

    pub(crate) fn parse(&self, token: &str) -> Presented {
        if !token.contains('.') {
            return Presented::Legacy;
        }
        let Some(rest) = token.strip_prefix(PREFIX) else {
            return Presented::Forged;
        };
        let mut parts = rest.split('.');
        let (Some(family), Some(generation_text), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Presented::Forged;
        };
        let well_formed = family.len() == FAMILY_LEN
            && family
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        // Only the canonical spelling of a generation: one token per generation.
        let generation = match generation_text.parse::<i64>() {
            Ok(g) if g >= 0 && g.to_string() == generation_text => g,
            _ => return Presented::Forged,
        };
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
            return Presented::Forged;
        };
        let body = format!("{family}.{generation_text}");
        if !well_formed || hmac::verify(&self.tag, body.as_bytes(), &tag).is_err() {
            return Presented::Forged;
        }
        Presented::Family(FamilyToken {
            family: family.to_string(),
            generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> FamilyKeys {
        FamilyKeys::new(&crypto::MasterKey::generate().unwrap())
    }

    #[test]
    fn tokens_parse_back_to_their_family_and_generation() {
        let k = keys();
        let start = k.start();
        assert_eq!(start.generation, 0);
        for generation in [0, 1, 41, i64::MAX] {
            let t = FamilyToken {
                generation,
                ..start.clone()
            };
            let token = k.token(&t);
            assert!(token.starts_with("ezf_rt_"));
            assert_eq!(k.parse(&token), Presented::Family(t));
        }
        assert_ne!(k.start().family, start.family);
    }

    #[test]
    fn a_changed_or_foreign_token_is_forged() {
        let (k, other) = (keys(), keys());
        let t = k.start();
        let token = k.token(&t);
        assert_eq!(other.parse(&token), Presented::Forged, "another master key");
        let next = FamilyToken {
            generation: 1,
            ..t.clone()
        };
        let tag_of_0 = token.rsplit('.').next().unwrap();
        let bumped = format!("ezf_rt_{}.1.{tag_of_0}", t.family);
        assert_eq!(k.parse(&bumped), Presented::Forged, "a generation made up");
        assert_eq!(k.parse(&k.token(&next)), Presented::Family(next));
        for bad in [
            format!("ezf_rt_{}.01.{tag_of_0}", t.family),
            format!("ezf_rt_{}.+0.{tag_of_0}", t.family),
            format!("ezf_rt_{}.-1.{tag_of_0}", t.family),
            format!("ezf_rt_{}.0.{tag_of_0}.x", t.family),
            format!("ezf_rt_{}.0", t.family),
            format!("ezf_rt_{}x.0.{tag_of_0}", t.family),
            format!("ezf_at_{}.0.{tag_of_0}", t.family),
            format!("ezf_rt_{}.0.{tag_of_0}!", t.family),
            token.replace("ezf_rt_", "ezf_rt_a"),
        ] {
            assert_eq!(k.parse(&bad), Presented::Forged, "{bad}");
        }
    }

    #[test]
    fn tokens_without_a_dot_are_the_old_kind() {
        let k = keys();
        assert_eq!(
            k.parse(&format!("ezf_rt_{}", secret::random_token())),
            Presented::Legacy
        );
        assert_eq!(k.parse("anything"), Presented::Legacy);
    }

    #[test]
    fn row_keys_differ_by_family_and_by_master_key() {
        let (k, other) = (keys(), keys());
        let f = k.start().family;
        assert_eq!(k.row_key(&f), k.row_key(&f));
        assert_eq!(k.row_key(&f).len(), 64);
        assert_ne!(k.row_key(&f), other.row_key(&f));
        assert_ne!(k.row_key(&f), k.row_key(&k.start().family));
        assert_ne!(k.row_key(&f), secret::hash(&f));
    }
}
