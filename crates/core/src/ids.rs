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

/// An identifier that sorts (as text, in any collation) in the order this process made it:
/// 16 hex digits of a strictly increasing microsecond count, then 8 random characters. Logs
/// order by time and then by id, so entries made within one clock tick keep their order.
pub fn ordered_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    let seq = loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(p) => prev = p,
        }
    };
    // Written into one buffer: the request log makes one of these per request.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(prefix.len() + 25);
    id.push_str(prefix);
    id.push('_');
    for shift in (0..16).rev() {
        id.push(HEX[((seq >> (shift * 4)) & 0xf) as usize] as char);
    }
    // Eight base62 digits of one random u64 (47.6 of its 64 bits): they only tell apart ids
    // made in the same microsecond, so the slight bias of `%` does not matter here.
    let mut r: u64 = rand::rng().random();
    for _ in 0..8 {
        id.push(BASE62[(r % 62) as usize] as char);
        r /= 62;
    }
    id
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_ids_have_their_shape_and_sort_in_the_order_they_were_made() {
        let ids: Vec<String> = (0..1000).map(|_| ordered_id("req")).collect();
        for id in &ids {
            let rest = id.strip_prefix("req_").expect("prefix");
            assert_eq!(rest.len(), 24, "{id}");
            assert!(
                rest[..16]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(rest[16..].bytes().all(|b| BASE62.contains(&b)));
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
        // The counter part is the microsecond clock (or one past the last one made).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros() as u64;
        let last = u64::from_str_radix(&ids[999][4..20], 16).expect("hex");
        assert!(last.abs_diff(now) < 60_000_000, "{last} vs {now}");
    }
}
