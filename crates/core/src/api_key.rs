//! The API key format: `ezf_live_` or `ezf_test_`, 32 random base62 characters (190 bits), then
//! 6 base62 characters of CRC32 over everything before them.
//!
//! The checksum lets a secret scanner, or this server before it touches the database, reject a
//! random look-alike offline, as GitHub's token format does. It is not a security boundary: the
//! 190 random bits are.

use crate::error::CoreError;
use crate::ids::{BASE62, random_base62};
use ezforge_proto::Environment;

pub const LIVE_PREFIX: &str = "ezf_live_";
pub const TEST_PREFIX: &str = "ezf_test_";
pub const RANDOM_LEN: usize = 32;
pub const CHECKSUM_LEN: usize = 6;
/// Total length of a key: prefix (9) + random (32) + checksum (6).
pub const KEY_LEN: usize = 9 + RANDOM_LEN + CHECKSUM_LEN;
/// How much of a key is kept in clear to recognise it in listings: the prefix and 4 characters.
pub const DISPLAY_LEN: usize = 9 + 4;

pub fn prefix_for(env: Environment) -> &'static str {
    match env {
        Environment::Live => LIVE_PREFIX,
        Environment::Test => TEST_PREFIX,
    }
}

/// Generates a new key for `env`.
pub fn generate(env: Environment) -> String {
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str(prefix_for(env));
    key.push_str(&random_base62(RANDOM_LEN));
    let checksum = checksum(&key);
    key.push_str(&checksum);
    key
}

/// CRC32 of `body`, as exactly 6 base62 digits (62^6 > 2^32).
pub fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes()) as u64;
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits.iter().map(|&b| b as char).collect()
}

/// Checks a presented token's shape and checksum, offline, and returns its environment.
pub fn parse(token: &str) -> Result<Environment, CoreError> {
    let env = if token.starts_with(LIVE_PREFIX) {
        Environment::Live
    } else if token.starts_with(TEST_PREFIX) {
        Environment::Test
    } else if looks_like_prefixed_token(token) {
        return Err(CoreError::ApiKeyInvalidPrefix);
    } else {
        return Err(CoreError::ApiKeyMalformed(
            "expected `ezf_live_…` or `ezf_test_…`",
        ));
    };
    if token.len() != KEY_LEN {
        return Err(CoreError::ApiKeyMalformed("wrong length"));
    }
    let rest = &token[LIVE_PREFIX.len()..];
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(CoreError::ApiKeyMalformed("unexpected character"));
    }
    let (body, sum) = token.split_at(KEY_LEN - CHECKSUM_LEN);
    if checksum(body) != sum {
        return Err(CoreError::ApiKeyChecksumMismatch);
    }
    Ok(env)
}

/// `word_word_…` in the token alphabet: somebody else's key (`sk_live_…`, `ezf_prod_…`), or ours
/// with a typo in the prefix.
fn looks_like_prefixed_token(token: &str) -> bool {
    let mut parts = token.splitn(3, '_');
    let (Some(a), Some(b), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !a.is_empty()
        && !b.is_empty()
        && !rest.is_empty()
        && a.bytes().all(|c| c.is_ascii_alphanumeric())
        && b.bytes().all(|c| c.is_ascii_alphanumeric())
        && rest.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_prefixes_and_verify() {
        let live = generate(Environment::Live);
        let test = generate(Environment::Test);
        assert!(live.starts_with("ezf_live_"));
        assert!(test.starts_with("ezf_test_"));
        assert_eq!(live.len(), KEY_LEN);
        assert_eq!(parse(&live).unwrap(), Environment::Live);
        assert_eq!(parse(&test).unwrap(), Environment::Test);
    }

    /// A secret scanner must be able to tell a real key from a random look-alike without asking
    /// the server: of 10,000 look-alikes with a valid prefix, length and alphabet, the checksum
    /// rejects every one (the chance of a false accept is 2^-32 each).
    #[test]
    fn the_checksum_rejects_random_look_alikes_offline() {
        let mut accepted = 0;
        for _ in 0..10_000 {
            let fake = format!("ezf_live_{}", random_base62(RANDOM_LEN + CHECKSUM_LEN));
            if parse(&fake).is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 0);
    }

    #[test]
    fn a_single_changed_character_is_caught() {
        let key = generate(Environment::Live);
        for i in 9..KEY_LEN {
            let mut bytes = key.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            assert!(
                matches!(parse(&typo), Err(CoreError::ApiKeyChecksumMismatch)),
                "typo at {i} not caught"
            );
        }
    }

    #[test]
    fn shapes_are_told_apart() {
        assert!(matches!(
            parse("ezf_prod_abc"),
            Err(CoreError::ApiKeyInvalidPrefix)
        ));
        assert!(matches!(
            parse("sk_live_abcdef"),
            Err(CoreError::ApiKeyInvalidPrefix)
        ));
        assert!(matches!(parse("hello"), Err(CoreError::ApiKeyMalformed(_))));
        assert!(matches!(
            parse("ezf_live_short"),
            Err(CoreError::ApiKeyMalformed(_))
        ));
        let key = generate(Environment::Test);
        let bad = format!("{}!{}", &key[..20], &key[21..]);
        assert!(matches!(parse(&bad), Err(CoreError::ApiKeyMalformed(_))));
    }
}
