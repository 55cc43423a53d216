//! Public identifiers: a short type prefix and 20 random base62 characters, e.g. `prj_3kT9…`.

use rand::Rng;

pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` characters drawn uniformly from the base62 alphabet by the OS-seeded CSPRNG.
pub fn random_base62(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| BASE62[rng.random_range(0..62)] as char)
        .collect()
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_base62(20))
}

pub fn user_id() -> String {
    new_id("usr")
}
pub fn project_id() -> String {
    new_id("prj")
}
pub fn api_key_id() -> String {
    new_id("key")
}
pub fn server_id() -> String {
    new_id("srv")
}
pub fn invite_id() -> String {
    new_id("inv")
}
