//! Where a benchmark's CPU went: every process's CPU time (from `/proc`), grouped by program,
//! read before and after a timed phase, and the machine's idle share over it.
//!
//! Throughput alone does not say whether a server was bound by the machine or by waiting: on
//! two cores shared by the load generator, the server and its database, the split of CPU per
//! request and the idle share do. Linux only; elsewhere (or without `/proc`) nothing is read:
//! every figure is 0 and the idle share shows as —.
//!
//! Shared by the token endpoint's and the gateway's benchmarks; each uses only a part.
#![allow(dead_code)]

use std::collections::HashMap;

/// CPU ticks per program, and the machine's total and idle ticks, at one moment.
pub struct Snapshot {
    by_program: HashMap<String, u64>,
    machine: Option<(u64, u64)>,
}

/// What a phase cost: CPU microseconds per request for each program, and idle share.
pub struct Usage {
    /// Program name (as `/proc/PID/comm` gives it) and microseconds of CPU per request, most
    /// first.
    pub per_request_us: Vec<(String, f64)>,
    /// Share of the machine's CPU time that was idle over the phase, in percent.
    pub idle_percent: Option<f64>,
}

/// The kernel's clock ticks per second for `/proc` times: `USER_HZ`, 100 on every Linux
/// architecture this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

impl Snapshot {
    pub fn take() -> Snapshot {
        let mut by_program = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let name = entry.file_name();
                if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                // A process that exits between listing and reading is simply not counted.
                if let Some((program, ticks, reaped)) = process_ticks(&entry.path().join("stat")) {
                    *by_program.entry(reaped_by(&program)).or_insert(0) += reaped;
                    *by_program.entry(program).or_insert(0) += ticks;
                }
            }
        }
        Snapshot {
            by_program,
            machine: machine_ticks(),
        }
    }

    /// The usage between `self` and now, over `requests` requests. Programs that used less
    /// than 1 µs per request are left out.
    pub fn usage_since(&self, requests: usize) -> Usage {
        let now = Snapshot::take();
        let requests = requests.max(1) as f64;
        let mut per_request_us: Vec<(String, f64)> = now
            .by_program
            .iter()
            .map(|(program, &ticks)| {
                let before = self.by_program.get(program).copied().unwrap_or(0);
                let seconds = ticks.saturating_sub(before) as f64 / TICKS_PER_SECOND;
                (program.clone(), seconds * 1e6 / requests)
            })
            .filter(|(_, us)| *us >= 1.0)
            .collect();
        per_request_us.sort_by(|a, b| b.1.total_cmp(&a.1));
        let idle_percent = match (self.machine, now.machine) {
            (Some((t0, i0)), Some((t1, i1))) if t1 > t0 => {
                Some(100.0 * i1.saturating_sub(i0) as f64 / (t1 - t0) as f64)
            }
            _ => None,
        };
        Usage {
            per_request_us,
            idle_percent,
        }
    }
}

impl Usage {
    /// One program's CPU per request; 0 when it used none.
    pub fn of(&self, program: &str) -> f64 {
        self.per_request_us
            .iter()
            .filter(|(p, _)| p == program)
            .map(|(_, us)| us)
            .fold(0.0, |a, b| a + b)
    }

    /// Everything but the named programs, per request.
    pub fn others(&self, named: &[&str]) -> f64 {
        self.per_request_us
            .iter()
            .filter(|(p, _)| !named.contains(&p.as_str()))
            .map(|(_, us)| us)
            .fold(0.0, |a, b| a + b)
    }

    /// The program that used the most CPU besides the named ones, if any did.
    pub fn top_other(&self, named: &[&str]) -> Option<&str> {
        self.per_request_us
            .iter()
            .find(|(p, _)| !named.contains(&p.as_str()))
            .map(|(p, _)| p.as_str())
    }
}

/// This process's program name, as `/proc` shows it to `Usage::of`.
pub fn own_program() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default()
}

/// The name under which the CPU of `program`'s children that have exited (and been waited
/// for) is counted: a load generator such as wrk runs as a child and is gone before the run's
/// second snapshot, its time then counted in its parent's `cutime` and `cstime`.
pub fn reaped_by(program: &str) -> String {
    format!("{program} (exited children)")
}

/// The program name, user + system ticks of one process (all its threads), and those of its
/// exited children.
fn process_ticks(stat: &std::path::Path) -> Option<(String, u64, u64)> {
    let text = std::fs::read_to_string(stat).ok()?;
    // `PID (comm) state …`: the name may hold spaces and parentheses, so split at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let program = text.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime); the slice starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Fields 16 and 17 (cutime, cstime): children waited for.
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some((program, utime + stime, cutime + cstime))
}

/// The machine's total and idle (idle + iowait) ticks, from `/proc/stat`'s `cpu` line.
fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total = values.iter().sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total, idle))
}
