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
//! run with the writer's own checkpoints switched off grew the WAL past 500 MB. So every
//! connection keeps a checkpoint of its own, at `WRITER_CHECKPOINT_PAGES` (ten times SQLite's
//! default; the pool's connections too, or with the WAL now often past 1,000 pages their
//! commits would checkpoint instead). Run by the token connection after its commit, while no
//! other batch can write, it copies what the thread has not copied yet, and the WAL can start
//! again.
//!
//! Durability is that of `synchronous = NORMAL` in WAL mode: a commit is on disk once a
//! checkpoint has synced the WAL past it, and otherwise survives a crash of the process but
//! not of the machine.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The shortest time between two checkpoints. Pages written again and again within it are
/// copied once; at this endpoint's rates it is about as often as SQLite's own 1,000-page rule.
const GAP: Duration = Duration::from_millis(100);

/// How often a checkpoint that keeps failing is logged.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The connections' own auto-checkpoint, in WAL pages (about 40 MB of 4 KiB pages): the bound
/// on the WAL under steady writes, reached about twice a second at the token endpoint's peak.
pub(crate) const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

/// The last checkpoint that ran to the end, for tests and diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckpointRecord {
    /// Checkpoints that ran to the end (whether or not readers kept some frames back).
    pub runs: u64,
    /// Frames in the WAL at the last one, and how many of them it copied.
    pub wal_frames: i64,
    pub copied_frames: i64,
    /// How many nudges had come when the last one started: the commits it covers.
    pub covered: u64,
}

#[derive(Default)]
struct Shared {
    /// Set by a nudge, cleared by the thread before it checkpoints: a commit that finds it set
    /// is covered by a checkpoint still to come, and need not wake the thread.
    pending: AtomicBool,
    nudges: AtomicU64,
    record: Mutex<CheckpointRecord>,
}

impl Shared {
    fn record(&self) -> MutexGuard<'_, CheckpointRecord> {
        // Plain data, whole after every write.
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct Checkpointer {
    /// Dropped to stop the thread.
    wake: Mutex<Option<mpsc::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl Checkpointer {
    /// Opens a connection to `path` (an existing database in WAL mode) and starts the thread.
    pub(crate) fn start(path: &Path) -> Result<Checkpointer, String> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .and_then(|c| {
                // It never commits; the syncs of its checkpoints are NORMAL's.
                c.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;")?;
                Ok(c)
            })
            .map_err(|e| e.to_string())?;
        let (wake, rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ezforge-sqlite-checkpoint".into())
            .spawn(move || run(conn, rx, &s))
            .map_err(|e| e.to_string())?;
        Ok(Checkpointer {
            wake: Mutex::new(Some(wake)),
            thread: Mutex::new(Some(thread)),
            shared,
        })
    }

    /// Called after a commit: a checkpoint that starts after it follows within about `GAP`.
    pub(crate) fn nudge(&self) {
        // Counted before `pending` is looked at: the thread clears `pending` before it reads
        // the count, so a nudge it does not count finds `pending` clear and wakes it again.
        self.shared.nudges.fetch_add(1, SeqCst);
        if self.shared.pending.swap(true, SeqCst) {
            return;
        }
        let wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wake) = wake.as_ref() {
            // The thread only stops when this sender is dropped.
            let _ = wake.send(());
        }
    }

    pub(crate) fn record(&self) -> CheckpointRecord {
        *self.shared.record()
    }

    /// Nudges so far.
    #[cfg(test)]
    fn nudges(&self) -> u64 {
        self.shared.nudges.load(SeqCst)
    }

    /// Stops the thread and waits for it: at most the checkpoint it is running. Its connection
    /// is closed when this returns.
    pub(crate) fn stop(&self) {
        drop(self.wake.lock().unwrap_or_else(|e| e.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the SQLite checkpoint thread panicked");
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `deadline`, letting messages pass; false if the checkpointer was stopped.
fn wait_until(wake: &mpsc::Receiver<()>, deadline: Instant) -> bool {
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Err(RecvTimeoutError::Disconnected) = wake.recv_timeout(left) {
            return false;
        }
    }
    true
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: `Some((frames in the WAL, frames copied))`, or `None` when
/// another connection was checkpointing (SQLite reports that as a row, busy = 1).
fn checkpoint(conn: &Connection) -> rusqlite::Result<Option<(i64, i64)>> {
    let (busy, frames, copied) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    Ok((busy == 0).then_some((frames, copied)))
}

fn run(conn: Connection, wake: mpsc::Receiver<()>, shared: &Shared) {
    let mut last: Option<Instant> = None;
    // A checkpoint that found another running is tried again after `GAP`, nudged or not, so
    // that the last commits before a quiet spell are not left out.
    let mut retry = false;
    let mut warned: Option<Instant> = None;
    loop {
        let woken = match retry {
            true => !matches!(wake.recv_timeout(GAP), Err(RecvTimeoutError::Disconnected)),
            false => wake.recv().is_ok(),
        };
        if !woken || !last.is_none_or(|t| wait_until(&wake, t + GAP)) {
            return;
        }
        // Commits from here on nudge again and get a checkpoint of their own; those counted
        // below committed before this checkpoint starts.
        shared.pending.store(false, SeqCst);
        let covered = shared.nudges.load(SeqCst);
        retry = false;
        match checkpoint(&conn) {
            Ok(Some((wal_frames, copied_frames))) => {
                let mut record = shared.record();
                *record = CheckpointRecord {
                    runs: record.runs + 1,
                    wal_frames,
                    copied_frames,
                    covered,
                };
            }
            Ok(None) => retry = true,
            Err(e) => {
                if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::warn!(error = %e, "checkpointing the SQLite WAL failed");
                    warned = Some(Instant::now());
                }
            }
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
        let until = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until a checkpoint that started after every nudge so far has run to the end.
    fn settled(cp: &Checkpointer) -> CheckpointRecord {
        wait_for("a checkpoint after the last nudge", || {
            cp.record().covered == cp.nudges()
        });
        cp.record()
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
        std::thread::sleep(GAP * 2);
        assert_eq!(cp.record().runs, 0, "not before a nudge");
        cp.nudge();
        let first = settled(&cp);
        assert_eq!(first.runs, 1);
        assert!(
            first.wal_frames >= 50,
            "the WAL held the inserts' pages ({} frames)",
            first.wal_frames
        );
        assert_eq!(first.copied_frames, first.wal_frames);

        // The next write starts the WAL again from its beginning, and the next checkpoint
        // sees only what was written since.
        conn.execute("INSERT INTO t VALUES (zeroblob(10))", [])
            .expect("insert");
        cp.nudge();
        let second = settled(&cp);
        assert_eq!(second.runs, 2);
        assert!(
            (1..10).contains(&second.wal_frames),
            "a restarted WAL ({} frames)",
            second.wal_frames
        );
        assert_eq!(second.copied_frames, second.wal_frames);
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
        let start = Instant::now();
        for _ in 0..200 {
            conn.execute("INSERT INTO t VALUES (2)", [])
                .expect("insert");
            cp.nudge();
        }
        let after_burst = settled(&cp);
        // One checkpoint per `GAP` from the first nudge until the last one was covered.
        let allowed = 1 + (start.elapsed().as_millis() / GAP.as_millis()) as u64;
        assert!(
            (1..=allowed).contains(&after_burst.runs),
            "{} checkpoints, at most {allowed}",
            after_burst.runs
        );
        assert_eq!(
            after_burst.copied_frames, after_burst.wal_frames,
            "the last checkpoint copied every frame"
        );
        // Nudges are not queued up: without commits, no more checkpoints come.
        std::thread::sleep(GAP * 5);
        assert_eq!(cp.record(), after_burst);
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
        assert!(settled(&cp).runs >= 1);
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
    fn a_stopped_checkpointer_has_ended_its_thread_and_ignores_nudges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, conn) = wal_db(dir.path());
        let cp = Checkpointer::start(&path).expect("start");
        conn.execute("INSERT INTO t VALUES (1)", [])
            .expect("insert");
        cp.nudge();
        cp.stop();
        assert!(cp.thread.lock().expect("lock").is_none(), "joined");
        let stopped = cp.record();
        conn.execute("INSERT INTO t VALUES (2)", [])
            .expect("insert");
        cp.nudge();
        std::thread::sleep(GAP * 3);
        assert_eq!(cp.record(), stopped);
    }
}
