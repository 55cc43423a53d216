//! Latency histograms with log-scale buckets: four buckets per doubling, so any percentile read
//! from them is within about 9% of the exact value, and buckets from many batches, nodes and
//! minutes add up by plain summing (which SQL can do).

/// The bucket of a latency in microseconds: `floor(4 * log2(us))`, 0 for anything under 1 µs.
pub fn bucket(latency_us: i64) -> i64 {
    if latency_us <= 1 {
        return 0;
    }
    ((latency_us as f64).log2() * 4.0).floor() as i64
}

/// A representative latency of a bucket, in milliseconds: the geometric middle of its bounds.
pub fn bucket_ms(bucket: i64) -> f64 {
    2f64.powf((bucket as f64 + 0.5) / 4.0) / 1000.0
}

/// The `q`-quantile (0 < q ≤ 1) of a histogram given as (bucket, count) pairs in any order.
pub fn quantile(buckets: &[(i64, u64)], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().map(|(_, c)| *c).sum();
    if total == 0 {
        return None;
    }
    let mut sorted: Vec<(i64, u64)> = buckets.to_vec();
    sorted.sort_unstable_by_key(|(b, _)| *b);
    // The rank of the quantile, 1-based: the smallest value with at least q of all at or below.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (b, c) in sorted {
        seen += c;
        if seen >= rank {
            return Some(round3(bucket_ms(b)));
        }
    }
    None
}

fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_within_ten_percent() {
        for us in [2, 10, 137, 1_000, 25_000, 1_234_567, 60_000_000] {
            let ms = bucket_ms(bucket(us));
            let exact = us as f64 / 1000.0;
            assert!(
                (ms - exact).abs() / exact < 0.10,
                "{us} µs read back as {ms} ms"
            );
        }
    }

    #[test]
    fn quantiles_pick_the_right_bucket() {
        // 90 fast requests (1 ms) and 10 slow ones (100 ms).
        let h = vec![(bucket(100_000), 10), (bucket(1_000), 90)];
        let p50 = quantile(&h, 0.50).unwrap();
        let p95 = quantile(&h, 0.95).unwrap();
        assert!((0.9..1.1).contains(&p50), "p50 {p50}");
        assert!((90.0..110.0).contains(&p95), "p95 {p95}");
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[(bucket(1_000), 0)], 0.5), None);
    }
}
