//! Rate-limit windows shared by every node, on a fresh SQLite file and a fresh PostgreSQL
//! database; two stores on one database stand for two nodes.

use ezforge_core::store::Store;
use ezforge_store::SqlStore;

async fn open(url: &str) -> SqlStore {
    SqlStore::open(url, 4).await.expect("open store")
}

ezforge_testkit::backend_tests! {
    async fn a_window_counts_until_it_ends_then_starts_again(db) {
        let s = open(&db.url).await;
        assert_eq!(s.count_event("k", 1_000, 60).await.unwrap(), (1, 1_060));
        assert_eq!(s.count_event("k", 1_010, 60).await.unwrap(), (2, 1_060));
        // Another key has its own count.
        assert_eq!(s.count_event("other", 1_010, 60).await.unwrap(), (1, 1_070));
        assert_eq!(s.count_event("k", 1_059, 60).await.unwrap(), (3, 1_060));
        // Ended: a new window from now.
        assert_eq!(s.count_event("k", 1_060, 60).await.unwrap(), (1, 1_120));
        s.close().await;
    }

    async fn uncounting_never_goes_below_zero_nor_makes_a_window(db) {
        let s = open(&db.url).await;
        s.count_event("k", 1_000, 60).await.unwrap();
        s.uncount_event("k", 1_001).await.unwrap();
        s.uncount_event("k", 1_002).await.unwrap();
        assert_eq!(s.count_event("k", 1_003, 60).await.unwrap(), (1, 1_060));
        // Nothing to take back from: no window appears.
        s.uncount_event("absent", 1_003).await.unwrap();
        assert_eq!(s.count_event("absent", 1_004, 60).await.unwrap(), (1, 1_064));
        s.close().await;
    }

    async fn clearing_and_purging_windows(db) {
        let s = open(&db.url).await;
        s.count_event("a", 1_000, 60).await.unwrap();
        s.count_event("a", 1_000, 60).await.unwrap();
        s.clear_events("a").await.unwrap();
        assert_eq!(s.count_event("a", 1_001, 60).await.unwrap(), (1, 1_061));
        s.count_event("b", 1_030, 60).await.unwrap();
        // `a` ended at 1,061; `b` runs until 1,090.
        assert_eq!(s.purge_event_windows(1_061).await.unwrap(), 1);
        assert_eq!(s.count_event("b", 1_062, 60).await.unwrap(), (2, 1_090));
        assert_eq!(s.count_event("a", 1_062, 60).await.unwrap(), (1, 1_122));
        s.close().await;
    }

    async fn parallel_events_on_two_nodes_each_get_their_own_count(db) {
        let (a, b) = (open(&db.url).await, open(&db.url).await);
        let events = (0..40).map(|i| {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { node.count_event("k", 1_000, 60).await })
        });
        let mut counts = Vec::new();
        for e in events {
            counts.push(e.await.expect("task").expect("count").0);
        }
        counts.sort();
        assert_eq!(counts, (1..=40).collect::<Vec<i64>>());
        a.close().await;
        b.close().await;
    }
}
