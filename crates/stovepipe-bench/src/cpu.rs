//! CPU time, read from `/proc` (Linux): the bench process's own, the whole
//! local Postgres server's, and the machine's.
//!
//! The pipeline target is stated as database work: at most four pgbench
//! transactions of it per validated request. Transactions per fact count
//! statements, not work (a pgbench statement and a write with its outbox
//! are not the same size), so the pipeline benchmark also measures the
//! server's CPU time over its windows and over the pgbench run beside it,
//! and divides each by what was done: CPU per validated request over CPU
//! per pgbench transaction is that budget, measured.
//!
//! The server's CPU is the postmaster's own and its reaped children's
//! (`cutime`/`cstime`, where a backend's time goes when it exits) plus every
//! live child's, so backends that come and go (pgbench's) are counted once.

use std::process::Command;

use serde::Serialize;

/// A point-in-time reading of the counters, in seconds of CPU.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    /// The Postgres server, when it runs on this machine.
    postgres: Option<f64>,
    this_process: f64,
    /// This process's children that it has waited for (`pgbench`, `git`).
    reaped_children: f64,
    /// Clock ticks of all CPUs, busy (not idle, not waiting for I/O) and in
    /// all (kept whole, so a share of them is exact).
    machine_busy: u64,
    machine_total: u64,
}

/// CPU used between two samples.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUse {
    pub postgres_seconds: Option<f64>,
    pub this_process_seconds: f64,
    /// Of the children this process waited for meanwhile (a `pgbench` run).
    pub reaped_children_seconds: f64,
    /// Share of the machine's CPU time that was busy (0–1).
    pub machine_busy_share: f64,
}

impl CpuSample {
    pub fn until(&self, later: &CpuSample) -> CpuUse {
        let total = later.machine_total.saturating_sub(self.machine_total);
        let busy = later.machine_busy.saturating_sub(self.machine_busy);
        CpuUse {
            postgres_seconds: self.postgres.zip(later.postgres).map(|(a, b)| b - a),
            this_process_seconds: later.this_process - self.this_process,
            reaped_children_seconds: later.reaped_children - self.reaped_children,
            machine_busy_share: if total > 0 {
                busy.min(total) as f64 / total as f64
            } else {
                0.0
            },
        }
    }
}

impl CpuUse {
    /// The server's CPU in milliseconds per one of `count` things done (a
    /// request, a transaction), when it was measured and `count` is not 0.
    pub fn server_ms_per(&self, count: u64) -> Option<f64> {
        self.postgres_seconds
            .and_then(|s| crate::support::per(s * 1e3, count))
    }

    /// This process's CPU in milliseconds per one of `count` things done.
    pub fn this_process_ms_per(&self, count: u64) -> Option<f64> {
        crate::support::per(self.this_process_seconds * 1e3, count)
    }

    /// The reaped children's CPU in milliseconds per one of `count` things
    /// done (a `pgbench` run's transactions).
    pub fn reaped_children_ms_per(&self, count: u64) -> Option<f64> {
        crate::support::per(self.reaped_children_seconds * 1e3, count)
    }

    /// The CPU of one of a baseline's `transactions` (its client's, a
    /// child this process reaped, and Postgres's) over the CPU of one of
    /// the `done` things of this stretch (this process's, whatever load it
    /// drove included, and Postgres's): the throughput ratio a machine both
    /// kept equally busy would show. `None` without Postgres's figures or a
    /// count.
    pub fn ratio_to_baseline(
        &self,
        done: u64,
        baseline: &CpuUse,
        transactions: u64,
    ) -> Option<f64> {
        let thing = self.this_process_ms_per(done)? + self.server_ms_per(done)?;
        let transaction = baseline.reaped_children_ms_per(transactions)?
            + baseline.server_ms_per(transactions)?;
        Some(crate::support::ratio(transaction, thing))
    }

    /// The CPU of several stretches together; the machine's busy share is
    /// their mean (the stretches are of about equal length).
    pub fn sum<'a>(uses: impl IntoIterator<Item = &'a CpuUse>) -> CpuUse {
        let mut total = CpuUse {
            postgres_seconds: Some(0.0),
            this_process_seconds: 0.0,
            reaped_children_seconds: 0.0,
            machine_busy_share: 0.0,
        };
        let mut n = 0;
        for u in uses {
            total.postgres_seconds = total
                .postgres_seconds
                .zip(u.postgres_seconds)
                .map(|(a, b)| a + b);
            total.this_process_seconds += u.this_process_seconds;
            total.reaped_children_seconds += u.reaped_children_seconds;
            total.machine_busy_share += u.machine_busy_share;
            n += 1;
        }
        if n == 0 {
            total.postgres_seconds = None;
        } else {
            total.machine_busy_share /= f64::from(n);
        }
        total
    }
}

/// Reads [`CpuSample`]s; finds the server's postmaster once.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    ticks_per_second: f64,
    postmaster: Option<u32>,
}

impl CpuMeter {
    /// `admin_url`: the server whose CPU to count. When it is not on this
    /// machine (or `/proc` cannot be read) samples carry no server figure.
    pub fn new(admin_url: &str) -> Self {
        let ticks_per_second = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0);
        Self {
            ticks_per_second,
            postmaster: local_postmaster(admin_url),
        }
    }

    pub fn sample(&self) -> CpuSample {
        let seconds = |ticks: u64| ticks as f64 / self.ticks_per_second;
        let own = ProcStat::at("/proc/self/stat");
        let this_process = own.as_ref().map_or(0, |s| s.utime + s.stime);
        let reaped_children = own.as_ref().map_or(0, |s| s.cutime + s.cstime);
        let (machine_busy, machine_total) = machine_ticks();
        CpuSample {
            postgres: self.postmaster.and_then(server_ticks).map(seconds),
            this_process: seconds(this_process),
            reaped_children: seconds(reaped_children),
            machine_busy,
            machine_total,
        }
    }
}

/// The pid of `admin_url`'s postmaster, when it runs on this machine: the
/// parent of the server's checkpointer (which lives as long as the server),
/// provided that process is a `postgres` and, where both can be read,
/// works in the server's data directory (a pid the server reports is
/// someone else's here when the server runs elsewhere).
fn local_postmaster(admin_url: &str) -> Option<u32> {
    let row = crate::support::psql(
        admin_url,
        // The data directory is readable with `pg_read_all_settings`
        // only; without it, empty (not checked).
        "SELECT pid, CASE WHEN pg_has_role('pg_read_all_settings', 'USAGE') \
           THEN current_setting('data_directory') END \
         FROM pg_stat_activity WHERE backend_type = 'checkpointer'",
    )
    .ok()?;
    let (checkpointer, data_directory) = row.split_once('|')?;
    let postmaster = ProcStat::read(checkpointer.parse().ok()?)?.ppid;
    let comm = std::fs::read_to_string(format!("/proc/{postmaster}/comm")).ok()?;
    let cwd = std::fs::read_link(format!("/proc/{postmaster}/cwd")).ok();
    let elsewhere = !data_directory.is_empty()
        && cwd.is_some_and(|cwd| cwd != std::path::Path::new(data_directory));
    (comm.trim() == "postgres" && !elsewhere).then_some(postmaster)
}

/// The postmaster's own and reaped children's ticks plus its live
/// children's. Read again when a child was reaped during the scan (it
/// would be counted twice).
fn server_ticks(postmaster: u32) -> Option<u64> {
    for _ in 0..5 {
        let before = ProcStat::read(postmaster)?;
        let mut children = 0;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some(stat) = ProcStat::read(pid)
                && stat.ppid == postmaster
            {
                children += stat.utime + stat.stime;
            }
        }
        let after = ProcStat::read(postmaster)?;
        if after.cutime + after.cstime == before.cutime + before.cstime {
            return Some(after.utime + after.stime + after.cutime + after.cstime + children);
        }
    }
    None
}

/// Busy and total ticks of all CPUs (`/proc/stat`'s `cpu` line).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let total: u64 = fields.iter().take(8).sum();
    // user nice system idle iowait irq softirq steal
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The fields of `/proc/<pid>/stat` used here, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

impl ProcStat {
    fn read(pid: u32) -> Option<Self> {
        Self::at(&format!("/proc/{pid}/stat"))
    }

    fn at(path: &str) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// `pid (comm) state ppid … utime stime cutime cstime …`; `comm` may
    /// hold spaces and parentheses, so fields are counted after the last
    /// `)`.
    fn parse(stat: &str) -> Option<Self> {
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
        Some(Self {
            ppid: u32::try_from(field(1)?).ok()?,
            utime: field(11)?,
            stime: field(12)?,
            cutime: field(13)?,
            cstime: field(14)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(server: Option<f64>, process: f64, busy: f64) -> CpuUse {
        CpuUse {
            postgres_seconds: server,
            this_process_seconds: process,
            reaped_children_seconds: 0.0,
            machine_busy_share: busy,
        }
    }

    #[test]
    fn stretches_add_their_seconds_and_average_their_busy_share() {
        let total = CpuUse::sum(&[used(Some(1.5), 0.5, 0.8), used(Some(2.5), 1.0, 0.6)]);
        assert_eq!(total.postgres_seconds, Some(4.0));
        assert!((total.this_process_seconds - 1.5).abs() < 1e-9);
        assert!((total.machine_busy_share - 0.7).abs() < 1e-9);
        // A stretch without the server's figure leaves the sum without one.
        let partial = CpuUse::sum(&[used(Some(1.0), 0.5, 0.5), used(None, 0.5, 0.5)]);
        assert_eq!(partial.postgres_seconds, None);
        assert_eq!(CpuUse::sum(&[]).postgres_seconds, None);
    }

    #[test]
    fn server_ms_per_thing_needs_the_server_s_figure_and_a_count() {
        assert_eq!(used(Some(1.5), 0.0, 0.0).server_ms_per(500), Some(3.0));
        assert_eq!(used(Some(1.5), 0.0, 0.0).server_ms_per(0), None);
        assert_eq!(used(None, 0.0, 0.0).server_ms_per(500), None);
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (postgres: a (b) c) S 17 4242 4242 0 -1 4194560 900 0 0 0 \
                    31 7 5 3 20 0 1 0 12345 1000 200 18446744073709551615";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                ppid: 17,
                utime: 31,
                stime: 7,
                cutime: 5,
                cstime: 3,
            })
        );
        assert_eq!(ProcStat::parse("4242 (truncated) S 17 1"), None);
    }

    #[test]
    fn this_process_and_the_machine_are_measured() {
        let meter = CpuMeter {
            ticks_per_second: 100.0,
            postmaster: None,
        };
        let before = meter.sample();
        // Spin for 300 ms: with even a sixth of a core (tests run side by
        // side on two), that is five clock ticks of this process.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let used = before.until(&meter.sample());
        assert!(used.this_process_seconds >= 0.05, "{used:?}");
        assert!(
            used.machine_busy_share > 0.0 && used.machine_busy_share <= 1.0,
            "{used:?}"
        );
        assert_eq!(used.postgres_seconds, None);
    }

    /// The work of a backend that has exited by the second sample (what
    /// pgbench's are when its run ends) is counted.
    #[test]
    fn the_work_of_an_exited_backend_is_counted() {
        let url = crate::support::postgres_admin_url();
        let meter = CpuMeter::new(&url);
        assert!(
            meter.postmaster.is_some(),
            "no local postmaster found through {url}"
        );
        let before = meter.sample();
        // psql's backend does this and exits.
        crate::support::psql(&url, "SELECT count(*) FROM generate_series(1, 5000000)").unwrap();
        let used = before.until(&meter.sample());
        let server = used.postgres_seconds.expect("a server figure");
        assert!(server >= 0.1, "{used:?}");
    }
}
