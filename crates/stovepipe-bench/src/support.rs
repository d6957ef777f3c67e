//! What every benchmark shares: statistics, the machine description,
//! resident set size, scratch Postgres databases and `pgbench` runs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::cpu::{CpuMeter, CpuUse};

/// The Postgres server benchmarks use (an admin-capable URL; benchmarks
/// create and drop their own databases on it), over plain TCP unless the
/// URL names its own `sslmode` ([`without_tls_unless_told`]).
pub fn postgres_admin_url() -> String {
    without_tls_unless_told(
        &std::env::var("STOVEPIPE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
    )
}

/// `url` with `sslmode=disable` added when it names no `sslmode`.
///
/// Both the pipeline (sqlx) and the baselines (`pgbench`, libpq) default
/// to `sslmode=prefer`: TLS whenever the server offers it, as Debian's
/// Postgres does out of the box. TLS costs `pgbench -N`, whose transaction
/// is seven small round trips, far more than the pipeline, whose
/// statements ride in batches: on the 2026-12-07 fifteenth session's
/// machine it took pgbench -N from about 6 500 to 5 150 TPS and left the
/// pipeline where it was, so the ratio read ×1.12–1.40 higher with TLS
/// than without (docs/benchmarks.md). The benchmarks compare database
/// work, not transports, so they connect the same way every time whatever
/// the server offers; a URL that names its `sslmode` is used as given.
fn without_tls_unless_told(url: &str) -> String {
    match url.split_once('?') {
        Some((_, query)) if query.split('&').any(|p| p.starts_with("sslmode=")) => url.to_owned(),
        Some(_) => format!("{url}&sslmode=disable"),
        None => format!("{url}?sslmode=disable"),
    }
}

/// Says on stderr how a run is going, between its tables on stdout: a
/// benchmark runs for a minute or more, and its tables come at the end.
/// Takes what `format!` takes.
macro_rules! progress {
    ($($line:tt)*) => {
        eprintln!("  … {}", format_args!($($line)*))
    };
}
pub(crate) use progress;

/// The median of `values` (0 when empty).
/// The `[database]` setting line of `write_lanes` lanes, or nothing for
/// the server's default.
pub fn write_lanes_setting(write_lanes: Option<usize>) -> String {
    write_lanes.map_or_else(String::new, |n| format!("write_lanes = {n}\n"))
}

pub fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

/// The `q`-quantile (nearest rank) of `values` (0 when empty).
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `amount` per one of `count` things (none when there were none).
pub fn per(amount: f64, count: u64) -> Option<f64> {
    (count > 0).then(|| amount / count as f64)
}

/// `a / b`, or 0 when nothing of `b` was measured.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// `amount` in `unit`s, when both were measured and the unit is not zero
/// (a run too short for one clock tick of the server).
pub fn in_units(amount: Option<f64>, unit: Option<f64>) -> Option<f64> {
    amount.zip(unit.filter(|u| *u > 0.0)).map(|(a, u)| a / u)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The machine a run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub memory_mb: u64,
    pub cpu: String,
    pub kernel: String,
    pub postgres: String,
    /// How the benchmarks' connections reach Postgres: `TLS <version>` or
    /// `no TLS` (`postgres_admin_url`).
    pub postgres_transport: String,
}

impl Machine {
    pub fn describe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let memory_kb = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_default();
        // The server's version and how this connection reaches it, in one
        // `psql` (a version never holds `|`, psql's column separator).
        let (postgres, postgres_transport) = psql(
            &postgres_admin_url(),
            "SELECT current_setting('server_version'), \
               CASE WHEN ssl THEN 'TLS ' || version ELSE 'no TLS' END \
             FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .map_or_else(
            |e| (format!("unavailable ({e})"), "unavailable".to_owned()),
            |row| match row.split_once('|') {
                Some((version, transport)) => (version.to_owned(), transport.to_owned()),
                None => (row, "unknown".to_owned()),
            },
        );
        Self {
            nproc: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            memory_mb: memory_kb / 1024,
            cpu,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            postgres,
            postgres_transport,
        }
    }

    pub fn print(&self) {
        println!(
            "machine: {} cores ({}), {} MB RAM, kernel {}, PostgreSQL {} ({})",
            self.nproc,
            self.cpu,
            self.memory_mb,
            self.kernel,
            self.postgres,
            self.postgres_transport
        );
    }
}

/// Resident set size and its peak, in kB, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rss {
    pub vm_rss_kb: u64,
    pub vm_hwm_kb: u64,
}

impl Rss {
    pub fn of(pid: &str) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            vm_rss_kb: field("VmRSS:"),
            vm_hwm_kb: field("VmHWM:"),
        })
    }

    pub fn this_process() -> anyhow::Result<Self> {
        Self::of("self")
    }

    pub fn rss_mb(&self) -> f64 {
        self.vm_rss_kb as f64 / 1024.0
    }

    pub fn hwm_mb(&self) -> f64 {
        self.vm_hwm_kb as f64 / 1024.0
    }
}

/// Runs one SQL statement with `psql` and returns its unaligned output.
pub fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .context("running psql (is the PostgreSQL client installed?)")?;
    if !out.status.success() {
        bail!(
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A database created for one benchmark and dropped when it goes away,
/// unless [`KEEP_SCRATCH`] is set: then it is kept, and its name printed,
/// for a look at its tables, indexes and statistics after the run.
#[derive(Debug)]
pub struct ScratchDb {
    admin: String,
    pub name: String,
    pub url: String,
}

impl ScratchDb {
    pub fn create(purpose: &str) -> anyhow::Result<Self> {
        let admin = postgres_admin_url();
        let name = format!("stovepipe_bench_{purpose}_{}", std::process::id());
        psql(
            &admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        psql(&admin, &format!("CREATE DATABASE {name}"))?;
        let url = with_database(&admin, &name)?;
        Ok(Self { admin, name, url })
    }
}

/// Environment variable that keeps scratch databases after a run.
const KEEP_SCRATCH: &str = "STOVEPIPE_BENCH_KEEP_DATABASES";

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if keep_requested(std::env::var_os(KEEP_SCRATCH).as_deref()) {
            eprintln!(
                "kept scratch database {} ({KEEP_SCRATCH} is set)",
                self.name
            );
            return;
        }
        if let Err(e) = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            eprintln!("warning: could not drop scratch database: {e}");
        }
    }
}

/// Whether [`KEEP_SCRATCH`]'s value asks to keep scratch databases: set
/// and not empty.
fn keep_requested(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

/// `url` with its database path replaced by `db`.
fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").context("database URL without a scheme")? + 3;
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    Ok(match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    })
}

/// One `pgbench` run: the overall TPS and the median of its per-second
/// progress reports.
#[derive(Debug, Clone, Serialize)]
pub struct PgbenchRun {
    pub args: String,
    pub tps: f64,
    /// "number of transactions actually processed".
    pub transactions: u64,
    pub median_tps_per_second: f64,
    pub mean_latency_ms: f64,
}

/// `d` as pgbench's `-T`: rounded up to whole seconds, at least one.
pub fn pgbench_seconds(d: Duration) -> u32 {
    let up = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(up).unwrap_or(u32::MAX).max(1)
}

/// `pgbench -i -s <scale>` on `url`.
pub fn pgbench_init(url: &str, scale: u32) -> anyhow::Result<()> {
    let out = Command::new("pgbench")
        .args(["-i", "-q", "-s", &scale.to_string(), url])
        .output()
        .context("running pgbench (is the PostgreSQL client installed?)")?;
    if !out.status.success() {
        bail!(
            "pgbench -i: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// [`pgbench`] off the async runtime, and the CPU it took by `meter`
/// (Postgres's and pgbench's own, a child this process reaps).
pub async fn pgbench_measured(
    meter: &CpuMeter,
    url: &str,
    mode: &str,
    seconds: u32,
) -> anyhow::Result<(PgbenchRun, CpuUse)> {
    let before = meter.sample();
    let (url, mode) = (url.to_owned(), mode.to_owned());
    let run = tokio::task::spawn_blocking(move || pgbench(&url, &mode, seconds)).await??;
    Ok((run, before.until(&meter.sample())))
}

/// `pgbench <mode> -c 8 -j 2 -T <seconds> -P 1` on `url`.
pub fn pgbench(url: &str, mode: &str, seconds: u32) -> anyhow::Result<PgbenchRun> {
    let args = [
        mode,
        "-c",
        "8",
        "-j",
        "2",
        "-T",
        &seconds.to_string(),
        "-P",
        "1",
    ];
    let out = Command::new("pgbench")
        .args(args)
        .arg(url)
        .output()
        .context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("pgbench {mode}: {}", stderr.trim());
    }
    let number_after = |text: &str, key: &str| {
        text.split_once(key).and_then(|(_, rest)| {
            rest.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
    };
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| number_after(l, "tps = "))
        .context("pgbench printed no tps")?;
    let transactions = stdout
        .lines()
        .find_map(|l| number_after(l, "number of transactions actually processed: "))
        .context("pgbench printed no transaction count")? as u64;
    let mean_latency_ms = stdout
        .lines()
        .find_map(|l| number_after(l, "latency average = "))
        .unwrap_or(0.0);
    // "progress: 3.0 s, 1234.5 tps, lat 6.4 ms stddev 2.1, 0 failed"
    let per_second: Vec<f64> = stderr
        .lines()
        .filter(|l| l.starts_with("progress:"))
        .filter_map(|l| {
            l.split(',')
                .nth(1)
                .and_then(|part| part.trim().strip_suffix("tps"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    Ok(PgbenchRun {
        args: format!("pgbench {}", args.join(" ")),
        tps,
        transactions,
        median_tps_per_second: median(&per_second),
        mean_latency_ms,
    })
}

/// Bytes of WAL the server has written so far (its insert position; the
/// whole cluster's, so read it around work nothing else runs beside).
pub fn wal_position(url: &str) -> anyhow::Result<u64> {
    let bytes = psql(url, "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")?;
    bytes.parse().context("WAL position")
}

/// Writes `value` as `<dir>/<name>.json`.
pub fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pgbench_run_lasts_whole_seconds_and_at_least_one() {
        assert_eq!(pgbench_seconds(Duration::from_secs(5)), 5);
        assert_eq!(pgbench_seconds(Duration::from_millis(1_500)), 2);
        assert_eq!(pgbench_seconds(Duration::from_millis(200)), 1);
        assert_eq!(pgbench_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn scratch_databases_are_kept_only_when_asked() {
        use std::ffi::OsStr;
        assert!(!keep_requested(None));
        assert!(!keep_requested(Some(OsStr::new(""))));
        assert!(keep_requested(Some(OsStr::new("1"))));
    }

    #[test]
    fn connections_go_without_tls_unless_the_url_says() {
        assert_eq!(
            without_tls_unless_told("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
        );
        assert_eq!(
            without_tls_unless_told("postgres://h/test?application_name=b"),
            "postgres://h/test?application_name=b&sslmode=disable"
        );
        for told in [
            "postgres://h/test?sslmode=require",
            "postgres://h/test?application_name=b&sslmode=prefer",
        ] {
            assert_eq!(without_tls_unless_told(told), told, "{told}");
        }
    }

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h", "x").unwrap(),
            "postgres://h/x"
        );
    }

    #[test]
    fn a_unit_measured_as_nothing_gives_no_figure() {
        assert_eq!(in_units(Some(6.0), Some(2.0)), Some(3.0));
        assert_eq!(in_units(Some(6.0), Some(0.0)), None);
        assert_eq!(in_units(None, Some(2.0)), None);
        assert_eq!(in_units(Some(6.0), None), None);
        assert!((ratio(3.0, 4.0) - 0.75).abs() < f64::EPSILON);
        assert!(ratio(3.0, 0.0).abs() < f64::EPSILON);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&v, 0.5) - 50.0).abs() < f64::EPSILON);
        assert!((percentile(&v, 0.99) - 99.0).abs() < f64::EPSILON);
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
    }
}
