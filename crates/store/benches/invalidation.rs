//! How long a change takes to reach another node: one store publishes an invalidation, a second
//! store on the same PostgreSQL database (another node) hears it. Prints a table.
//!
//! `cargo bench -p ezforge-store --bench invalidation`
//!
//! `BENCH_MESSAGES` (default 2,000) messages one at a time (each published when the previous
//! one was heard: the latency of one change), then the same number published back to back
//! (the rate a node can take them in). PostgreSQL is the tests' (`EZFORGE_TEST_POSTGRES_URL`).

use ezforge_core::invalidation::Invalidation;
use ezforge_core::store::Store;
use ezforge_store::SqlStore;
use ezforge_testkit::TestDb;
use std::time::{Duration, Instant};

fn messages() -> usize {
    std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
        .max(1)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

async fn run() {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("PostgreSQL is unreachable: nothing to measure");
        return;
    };
    let n = messages();
    let publisher = SqlStore::open(&db.url, 2)
        .await
        .expect("open the publishing node");
    let listener = SqlStore::open(&db.url, 2)
        .await
        .expect("open the listening node");
    let mut heard = listener
        .subscribe_invalidations()
        .await
        .expect("subscribe")
        .expect("PostgreSQL listens");
    // The first message says the node has started listening.
    assert_eq!(heard.recv().await, Some(Invalidation::Everything));

    let mut one_at_a_time = Vec::with_capacity(n);
    for i in 0..n {
        let change = Invalidation::Grant(format!("grt_{i:026}"));
        let start = Instant::now();
        publisher
            .publish_invalidation(&change)
            .await
            .expect("publish");
        assert_eq!(heard.recv().await, Some(change));
        one_at_a_time.push(start.elapsed());
    }
    one_at_a_time.sort();

    let start = Instant::now();
    let receive = async {
        for _ in 0..n {
            heard.recv().await.expect("heard");
        }
    };
    let send = async {
        for i in 0..n {
            publisher
                .publish_invalidation(&Invalidation::ApiKey(format!("{i:064}")))
                .await
                .expect("publish");
        }
    };
    tokio::join!(receive, send);
    let burst = start.elapsed();

    println!("| measure | value |");
    println!("|---|---|");
    println!("| messages | {n} |");
    println!(
        "| one at a time: publish → heard, median ms | {} |",
        ms(percentile(&one_at_a_time, 0.5))
    );
    println!(
        "| one at a time: p99 ms | {} |",
        ms(percentile(&one_at_a_time, 0.99))
    );
    println!(
        "| one at a time: max ms | {} |",
        ms(*one_at_a_time.last().expect("at least one message"))
    );
    println!(
        "| back to back: messages/s heard | {:.0} |",
        n as f64 / burst.as_secs_f64()
    );
    publisher.close().await;
    listener.close().await;
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}
