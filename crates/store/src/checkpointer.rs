//! WAL checkpoints of an SQLite file, on a thread of their own.
//!
//! By default SQLite checkpoints in the connection whose commit brings the WAL past 1,000
//! pages, inside that commit: it copies the pages into the database file and, at
//! `synchronous = NORMAL`, syncs the WAL before and the database file after. On the token
//! endpoint's connection (`sqlite_tokens`) that commit is a batch's, so every request waiting
//! for the executor waited for two `fsync`s too, and meanwhile the machine sat idle:
//! `perf record -a -e sched:sched_switch` during a refresh phase showed the executor blocked in
//! `walCheckpoint` → `fsync` (docs/benchmarks.md).
//!
//! So that connection nudges this thread after each commit, and the thread, on its own
//! connection, runs a passive checkpoint (which never blocks a writer nor waits for a reader)
//! at most every `GAP`; it copies the WAL's pages as they come. A passive checkpoint cannot
//! finish the WAL while commits keep coming, though: the writer adds frames while it copies,
//! and the WAL starts again from its beginning only when a write finds every frame copied. A
//! run with the writer's own checkpoints switched off grew the WAL past 500 MB. So the writer
//! keeps a checkpoint of its own, at `WRITER_CHECKPOINT_PAGES` (ten times SQLite's default):
//! in its commit nothing else writes, so it copies what the thread has not copied yet (at
//! most about `GAP`'s worth), and the next write starts the WAL again.
//!
//! Durability is that of `synchronous = NORMAL` in WAL mode, with a bound it lacked before: a
//! commit's WAL is synced by the checkpoint that follows within `GAP`, not only once 1,000
//! pages have accumulated.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The shortest time between two checkpoints. Pages written again and again within it are
/// copied once; at this endpoint's rates it is about as often as SQLite's own 1,000-page rule.
const GAP: Duration = Duration::from_millis(100);

/// The writer's own auto-checkpoint, in WAL pages (about 40 MB of 4 KiB pages): the bound on
/// the WAL under steady writes, reached about twice a second at the token endpoint's peak.
pub(crate) const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

/// What the thread has done, for tests and diagnostics.
#[derive(Debug, Default)]
pub(crate) struct CheckpointStats {
    /// Checkpoints that ran to the end (whether or not readers kept some frames back).
    pub runs: AtomicU64,
    /// Frames in the WAL at the last checkpoint, and how many of them it copied.
    pub wal_frames: AtomicI64,
    pub copied_frames: AtomicI64,
}

pub(crate) struct Checkpointer {
    /// Dropped to stop the thread.
    wake: Mutex<Option<mpsc::Sender<()>>>,
    /// Set by a nudge, cleared by the thread before it checkpoints: a commit that finds it set
    /// is covered by a checkpoint still to come, and need not wake the thread.
    pending: Arc<AtomicBool>,
    stats: Arc<CheckpointStats>,
}

impl Checkpointer {
    /// Opens a connection to `path` (an existing database in WAL mode) and starts the thread.
    pub(crate) fn start(path: &Path) -> Result<Checkpointer, String> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .and_then(|c| {
                // Its own commits (none) would not checkpoint either; the syncs are NORMAL's.
                c.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;")?;
                Ok(c)
            })
            .map_err(|e| e.to_string())?;
        let (wake, rx) = mpsc::channel();
        let pending = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(CheckpointStats::default());
        let (p, s) = (pending.clone(), stats.clone());
        std::thread::Builder::new()
            .name("ezforge-sqlite-checkpoint".into())
            .spawn(move || run(conn, rx, &p, &s))
            .map_err(|e| e.to_string())?;
        Ok(Checkpointer {
            wake: Mutex::new(Some(wake)),
            pending,
            stats,
        })
    }

    /// Called after a commit: a checkpoint follows within `GAP`.
    pub(crate) fn nudge(&self) {
        if self.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wake) = wake.as_ref() {
            // The thread only stops when this sender is dropped.
            let _ = wake.send(());
        }
    }

    pub(crate) fn stats(&self) -> &CheckpointStats {
        &self.stats
    }

    /// Stops the thread; it closes its connection after the checkpoint it may be running.
    pub(crate) fn stop(&self) {
        drop(self.wake.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(conn: Connection, wake: mpsc::Receiver<()>, pending: &AtomicBool, stats: &CheckpointStats) {
    let mut last: Option<Instant> = None;
    while wake.recv().is_ok() {
        if let Some(wait) = last.and_then(|t| GAP.checked_sub(t.elapsed())) {
            std::thread::sleep(wait);
        }
        // Commits from here on nudge again, and get a checkpoint of their own.
        pending.store(false, Ordering::Release);
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        }) {
            Ok((busy, frames, copied)) => {
                if busy == 0 {
                    stats.runs.fetch_add(1, Ordering::Relaxed);
                }
                stats.wal_frames.store(frames, Ordering::Relaxed);
                stats.copied_frames.store(copied, Ordering::Relaxed);
            }
            // Another connection checkpointing at the same time: the next nudge retries.
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy => {}
            Err(e) => tracing::warn!(error = %e, "checkpointing the SQLite WAL failed"),
        }
        last = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_db(dir: &Path) -> (std::path::PathBuf, Connection) {
        let path = dir.join("db.sqlite");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (x BLOB);",
        )
        .expect("set up");
        (path, conn)
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_nudge_is_followed_by_a_checkpoint_of_every_frame() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, conn) = wal_db(dir.path());
        let cp = Checkpointer::start(&path).expect("start");
        for _ in 0..50 {
            conn.execute("INSERT INTO t VALUES (zeroblob(3000))", [])
                .expect("insert");
        }
        assert_eq!(
            cp.stats().runs.load(Ordering::Relaxed),
            0,
            "not before a nudge"
        );
        cp.nudge();
        wait_for("a checkpoint", || {
            cp.stats().runs.load(Ordering::Relaxed) >= 1
        });
        let frames = cp.stats().wal_frames.load(Ordering::Relaxed);
        assert!(
            frames >= 50,
            "the WAL held the inserts' pages ({frames} frames)"
        );
        assert_eq!(cp.stats().copied_frames.load(Ordering::Relaxed), frames);

        // The next write starts the WAL again from its beginning, and the next checkpoint
        // sees only what was written since.
        conn.execute("INSERT INTO t VALUES (zeroblob(10))", [])
            .expect("insert");
        cp.nudge();
        wait_for("a second checkpoint", || {
            cp.stats().runs.load(Ordering::Relaxed) >= 2
        });
        let frames = cp.stats().wal_frames.load(Ordering::Relaxed);
        assert!(
            (1..10).contains(&frames),
            "a restarted WAL ({frames} frames)"
        );
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 51);
    }

    #[test]
    fn a_burst_of_nudges_is_checkpointed_at_most_once_per_gap_and_then_rests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, conn) = wal_db(dir.path());
        let cp = Checkpointer::start(&path).expect("start");
        let runs = || cp.stats().runs.load(Ordering::Relaxed);
        let start = Instant::now();
        for _ in 0..200 {
            conn.execute("INSERT INTO t VALUES (2)", [])
                .expect("insert");
            cp.nudge();
        }
        let burst = start.elapsed();
        wait_for("the burst's checkpoint", || runs() >= 1);
        std::thread::sleep(GAP * 3);
        let after_burst = runs();
        // One checkpoint per `GAP` while the burst lasted, and one for its last commits.
        let allowed = 2 + (burst.as_millis() / GAP.as_millis()) as u64;
        assert!(
            after_burst <= allowed,
            "{after_burst} checkpoints, at most {allowed}"
        );
        assert_eq!(
            cp.stats().copied_frames.load(Ordering::Relaxed),
            cp.stats().wal_frames.load(Ordering::Relaxed),
            "the last checkpoint copied every frame"
        );
        // Nudges are not queued up: without commits, no more checkpoints come.
        std::thread::sleep(GAP * 5);
        assert_eq!(runs(), after_burst);
    }

    /// Under steady writes the thread's passive checkpoints never finish the WAL (frames come
    /// in while they copy); the writer's own rare checkpoint does, and the WAL starts again.
    #[test]
    fn steady_writes_keep_the_wal_bounded_by_the_writers_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, conn) = wal_db(dir.path());
        let writer_pages = 100;
        conn.pragma_update(None, "wal_autocheckpoint", writer_pages)
            .expect("pragma");
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("page size");
        let cp = Checkpointer::start(&path).expect("start");
        for _ in 0..2_000 {
            conn.execute("INSERT INTO t VALUES (zeroblob(3000))", [])
                .expect("insert");
            cp.nudge();
        }
        assert!(cp.stats().runs.load(Ordering::Relaxed) >= 1);
        // The WAL file keeps the size it once reached (it is written over, not truncated).
        // 2,000 inserts of most of a page each, never restarted, would be 2,000 frames or more.
        let wal = std::fs::metadata(dir.path().join("db.sqlite-wal"))
            .expect("the WAL")
            .len() as i64;
        let frames = wal / (page + 24);
        assert!(
            frames < 5 * writer_pages,
            "the WAL reached {frames} frames; the writer checkpoints at {writer_pages}"
        );
    }

    #[test]
    fn a_stopped_checkpointer_lets_go_of_its_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _conn) = wal_db(dir.path());
        let cp = Checkpointer::start(&path).expect("start");
        cp.stop();
        // Nudges after a stop are ignored rather than queued for nobody.
        cp.nudge();
        cp.nudge();
        assert!(cp.wake.lock().expect("lock").is_none());
    }
}
