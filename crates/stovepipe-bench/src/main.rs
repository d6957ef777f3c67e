//! `stovepipe-bench <name>`: Stovepipe's benchmarks, each measured beside a
//! baseline in the same run and reported as medians and ratios
//! (`shared/design/quality.md`, "Benchmarks"). Run them through
//! `cargo xtask bench <name>`, which builds in release; `cargo test` never
//! runs them.
//!
//! - `pipeline`: facts per second, 32 queues (`--queues N` for another
//!   load), SQLite and Postgres, beside `pgbench -N` on the same Postgres;
//! - `latency`: ingest-to-fact p50/p99, one queue, sequential;
//! - `api`: greenness reads and dedup ingests through the HTTP server,
//!   beside `pgbench -S` on the same database;
//! - `ancestry`: the git adapter beside the git CLI, 200 000 commits;
//! - `memory`: RSS of an idle server and at the end of a pipeline run.
//!
//! Each prints a table and writes `<out>/<name>.json` (default
//! `target/bench`). `--queues N` sets how many queues the `pipeline` and
//! `memory` benchmarks drive at once (each a closed loop of one request in
//! flight): the default leaves part of a 2-core machine idle, a larger
//! count measures the pipeline at saturation. `--write-lanes N` sets the
//! `database.write_lanes` of their servers and the `api` benchmark's
//! (Postgres; the server's default otherwise).

mod ancestry;
mod api;
mod cpu;
mod http1;
mod memory;
mod pipeline;
mod recorder;
mod support;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use serde_json::json;

use cpu::CpuMeter;
use pipeline::Load;
use recorder::StageTime;
use support::{
    Machine, ScratchDb, median, per, pgbench_init, postgres_admin_url, ratio, write_json,
};

const NAMES: [&str; 5] = ["pipeline", "latency", "api", "ancestry", "memory"];
/// What the `pipeline` and `memory` benchmarks drive unless told: 32
/// queues on the server's default write lanes.
const DEFAULT_LOAD: Load = Load {
    queues: 32,
    write_lanes: None,
};

/// Durations of one run; `--quick` shrinks them for a smoke test.
#[derive(Debug, Clone, Copy)]
struct Plan {
    warmup: Duration,
    windows: usize,
    window: Duration,
    latency_samples: usize,
    api_rounds: usize,
    api_round: Duration,
    commits: usize,
    /// Queues and write lanes of the `pipeline` and `memory` benchmarks.
    load: Load,
}

impl Plan {
    fn full() -> Self {
        Self {
            warmup: Duration::from_secs(3),
            windows: 5,
            window: Duration::from_secs(3),
            latency_samples: 300,
            api_rounds: 3,
            api_round: Duration::from_secs(5),
            commits: 200_000,
            load: DEFAULT_LOAD,
        }
    }

    fn quick() -> Self {
        Self {
            warmup: Duration::from_secs(1),
            windows: 3,
            window: Duration::from_secs(1),
            latency_samples: 30,
            api_rounds: 3,
            api_round: Duration::from_secs(1),
            commits: 2_000,
            load: DEFAULT_LOAD,
        }
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// The median of `values` with their least and greatest, as
/// "median (least–greatest)".
fn spread(values: &[f64], decimals: usize) -> String {
    if values.is_empty() {
        return "n/a".to_owned();
    }
    let least = values.iter().copied().fold(f64::INFINITY, f64::min);
    let greatest = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{:.decimals$} ({least:.decimals$}–{greatest:.decimals$})",
        median(values)
    )
}

async fn bench_pipeline(plan: Plan, machine: &Machine) -> anyhow::Result<serde_json::Value> {
    let meter = CpuMeter::new(&postgres_admin_url());
    let sqlite = pipeline::throughput(
        "sqlite",
        None,
        &meter,
        plan.load,
        plan.warmup,
        plan.windows,
        plan.window,
        None,
    )
    .await?;
    println!(
        "pipeline on SQLite: {:.0} facts/s",
        sqlite.median_per_second
    );
    // Postgres: each window of the pipeline is followed by a pgbench -N
    // run of the same length on the same server (`pipeline::Baseline`).
    let pgbench_db = ScratchDb::create("pgbench")?;
    pgbench_init(&pgbench_db.url, 10)?;
    let postgres = {
        let db = ScratchDb::create("pipeline")?;
        pipeline::throughput(
            "postgres",
            Some(&db.url),
            &meter,
            plan.load,
            plan.warmup,
            plan.windows,
            plan.window,
            Some(pipeline::Baseline {
                url: &pgbench_db.url,
                mode: "-N",
                seconds: support::pgbench_seconds(plan.window),
            }),
        )
        .await?
    };
    drop(pgbench_db);
    let rounds = &postgres.rounds;
    let pgbench_tps: Vec<f64> = rounds.iter().map(|r| r.baseline.tps).collect();
    let ratios: Vec<f64> = rounds.iter().map(pipeline::PairedRound::ratio).collect();
    // A figure of every round that has it.
    let measured = |figure: fn(&pipeline::PairedRound) -> Option<f64>| -> Vec<f64> {
        rounds.iter().filter_map(figure).collect()
    };
    let works = measured(pipeline::PairedRound::work);
    let wals = measured(pipeline::PairedRound::wal);
    let cpu_ratios = measured(pipeline::PairedRound::cpu_ratio);
    let busy_ratios: Vec<f64> = rounds
        .iter()
        .map(pipeline::PairedRound::busy_ratio)
        .collect();
    let transactions: u64 = rounds.iter().map(|r| r.baseline.transactions).sum();
    let pgbench_cpu = cpu::CpuUse::sum(rounds.iter().map(|r| &r.baseline_cpu));
    // The server's CPU per pgbench transaction: the unit of the target.
    let pgbench_cpu_ms = pgbench_cpu.server_ms_per(transactions);
    let pgbench_wal_bytes = per(
        rounds.iter().map(|r| r.baseline_wal_bytes as f64).sum(),
        transactions,
    );
    println!(
        "pipeline on Postgres: {:.0} facts/s, {} database transactions per fact; pgbench -N between its windows: {:.0} tps",
        postgres.median_per_second,
        postgres
            .db_transactions_per_fact
            .map_or_else(|| "?".to_owned(), |n| format!("{n:.1}")),
        median(&pgbench_tps)
    );
    for t in [&sqlite, &postgres] {
        if let Some(reads) = t.row_cache_reads_per_fact {
            println!(
                "row cache reads per validated request, {}: {:.2} kept, {:.2} kept after waiting for a write, {:.2} fetched, {:.2} fetched during a write",
                t.backend,
                reads.kept,
                reads.kept_after_write,
                reads.fetched,
                reads.fetched_during_write
            );
        }
        print_stage_times(&t.backend, &t.stage_times, t.latency_p50_ms);
    }
    let pg_ratio = median(&ratios);
    let work = (!works.is_empty()).then(|| median(&works));
    let sqlite_ratio = ratio(sqlite.median_per_second, postgres.median_per_second);
    let show = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"));
    let show_ms = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3} ms"));
    println!();
    println!(
        "| pipeline, {} queues, instant runner | validated requests/s (median of {} × {:.0} s windows) | ingest-to-fact p50 / p99 | RSS at end | write lanes |",
        plan.load.queues,
        plan.windows,
        plan.window.as_secs_f64()
    );
    println!("|---|---:|---:|---:|---:|");
    for t in [&sqlite, &postgres] {
        println!(
            "| {} | {:.0} | {:.1} / {:.1} ms | {:.1} MB | {} |",
            t.backend,
            t.median_per_second,
            t.latency_p50_ms,
            t.latency_p99_ms,
            t.rss_end.rss_mb(),
            t.write_lanes
        );
    }
    println!();
    println!(
        "| Postgres round | requests/s | pgbench -N tps | ratio | server CPU per request / per pgbench txn | database work (pgbench txns per request) | WAL per request / per txn | machine busy (pipeline / pgbench) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.0} | {:.3} | {} / {} | {} | {:.0} / {:.0} B | {:.0} / {:.0} % |",
            i + 1,
            r.pipeline_per_second,
            r.baseline.tps,
            r.ratio(),
            show_ms(r.server_ms_per_fact()),
            show_ms(r.server_ms_per_transaction()),
            show(r.work()),
            r.wal_bytes_per_fact().unwrap_or(0.0),
            r.wal_bytes_per_transaction().unwrap_or(0.0),
            r.pipeline_cpu.machine_busy_share * 100.0,
            r.baseline_cpu.machine_busy_share * 100.0,
        );
    }
    println!();
    println!("| CPU | Postgres server | bench process | machine busy |");
    println!("|---|---:|---:|---:|");
    println!(
        "| per pgbench -N transaction | {} | | {:.0} % |",
        show_ms(pgbench_cpu_ms),
        pgbench_cpu.machine_busy_share * 100.0
    );
    for t in [&sqlite, &postgres] {
        println!(
            "| per validated request, {} | {} | {} | {:.0} % |",
            t.backend,
            show_ms(t.postgres_cpu_ms_per_fact),
            show_ms(t.bench_cpu_ms_per_fact),
            t.cpu.machine_busy_share * 100.0
        );
    }
    println!(
        "database work per validated request = {} pgbench -N transactions, median (least–greatest) of the rounds (target ≤ 4: {})",
        spread(&works, 1),
        work.map_or("n/a", |w| verdict(w <= 4.0))
    );
    println!(
        "WAL per validated request = {} × pgbench -N's per transaction ({} against {} bytes over all rounds)",
        spread(&wals, 1),
        show(postgres.wal_bytes_per_fact),
        show(pgbench_wal_bytes)
    );
    println!(
        "pipeline(Postgres) / pgbench -N = {} (target ≥ 0.25: {}); SQLite / Postgres = {sqlite_ratio:.2} (target ≥ 1: {})",
        spread(&ratios, 3),
        verdict(pg_ratio >= 0.25),
        verdict(sqlite_ratio >= 1.0)
    );
    println!(
        "… of which CPU ratio {} (a pgbench -N transaction's CPU, pgbench's and the server's, over a request's, this process's and the server's) × busy ratio {} (the machine busy under the pipeline over under pgbench)",
        spread(&cpu_ratios, 3),
        spread(&busy_ratios, 2)
    );
    Ok(json!({
        "machine": machine,
        "cpu_ratio_to_pgbench_n_per_round": cpu_ratios,
        "busy_ratio_to_pgbench_n_per_round": busy_ratios,
        "pgbench_n_median_tps": median(&pgbench_tps),
        "pgbench_n_cpu": pgbench_cpu,
        "pgbench_n_postgres_cpu_ms_per_transaction": pgbench_cpu_ms,
        "pgbench_n_wal_bytes_per_transaction": pgbench_wal_bytes,
        "postgres_work_in_pgbench_n_transactions_per_request": work,
        "postgres_work_per_round": works,
        "ratio_postgres_to_pgbench_n_per_round": ratios,
        "sqlite": sqlite,
        "postgres": postgres,
        "ratio_postgres_to_pgbench_n": pg_ratio,
        "ratio_sqlite_to_postgres": sqlite_ratio,
        "targets": {
            "postgres_to_pgbench_n_at_least": 0.25,
            "sqlite_to_postgres_at_least": 1.0,
            "postgres_work_in_pgbench_n_transactions_per_request_at_most": 4.0,
        },
    }))
}

/// One line of where a request's time went: each stage's mean wait for its
/// hop, from the hop's publish (stamped as the write that carries it is
/// built, so the wait includes that write's batch, which the stage before
/// counts as handling too) to the stage's handler, and the mean time in
/// the stage's handler (its ack not counted).
fn print_stage_times(backend: &str, stages: &[StageTime], p50_ms: f64) {
    if stages.is_empty() {
        return;
    }
    let each: Vec<String> = stages.iter().map(StageTime::summary).collect();
    println!(
        "time by stage, {backend} (from a hop's publish to its handler + the handler's own time, means): {}; ingest-to-fact p50 {p50_ms:.1} ms",
        each.join(", ")
    );
}

async fn bench_latency(plan: Plan, machine: &Machine) -> anyhow::Result<serde_json::Value> {
    let sqlite = pipeline::latency("sqlite", None, 20, plan.latency_samples).await?;
    let postgres = {
        let db = ScratchDb::create("latency")?;
        pipeline::latency("postgres", Some(&db.url), 20, plan.latency_samples).await?
    };
    println!();
    println!("| latency, one queue, sequential ingests | samples | p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    for l in [&sqlite, &postgres] {
        println!(
            "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
            l.backend, l.samples, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    for l in [&sqlite, &postgres] {
        print_stage_times(&l.backend, &l.stage_times, l.p50_ms);
    }
    for l in [&sqlite, &postgres] {
        println!(
            "{}: p50 {:.1} ms = {:.2} × target 50 ms ({}), p99 {:.1} ms = {:.2} × target 200 ms ({})",
            l.backend,
            l.p50_ms,
            l.p50_ms / 50.0,
            verdict(l.p50_ms <= 50.0),
            l.p99_ms,
            l.p99_ms / 200.0,
            verdict(l.p99_ms <= 200.0)
        );
    }
    Ok(json!({
        "machine": machine,
        "sqlite": sqlite,
        "postgres": postgres,
        "targets": { "p50_ms_at_most": 50.0, "p99_ms_at_most": 200.0 },
    }))
}

async fn bench_api(plan: Plan, machine: &Machine) -> anyhow::Result<serde_json::Value> {
    let run = api::run(plan.api_rounds, plan.api_round, plan.load.write_lanes).await?;
    let pg = &run.pgbench_select;
    let us = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0} µs"));
    let times = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"));
    println!();
    println!(
        "| api, Postgres, {} keep-alive workers, write lanes {} | requests/s (median of {} × {:.0} s) | ratio to pgbench -S (median (least–greatest) of the paired rounds) | p50 | p99 | CPU per request: this process / Postgres | CPU ratio |",
        run.workers,
        run.write_lanes
            .map_or_else(|| "default".to_owned(), |n| n.to_string()),
        plan.api_rounds,
        plan.api_round.as_secs_f64()
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for e in &run.endpoints {
        println!(
            "| {} | {:.0} | {} | {:.2} ms | {:.2} ms | {} / {} | {} |",
            e.what,
            e.median_per_second,
            spread(&e.ratios(), 3),
            e.p50_ms,
            e.p99_ms,
            us(e.bench_us_per_request()),
            us(e.postgres_us_per_request()),
            times(e.cpu_ratio()),
        );
    }
    println!(
        "| pgbench -S -c 8 -j 2, one run after each round | {} | 1 | | | {} / {} (pgbench / Postgres) | 1 |",
        spread(&pg.runs.iter().map(|r| r.tps).collect::<Vec<_>>(), 0),
        us(pg.pgbench_us_per_transaction()),
        us(pg.postgres_us_per_transaction()),
    );
    println!(
        "CPU ratio: a pgbench -S transaction's CPU (pgbench's and Postgres's, over the endpoint's paired runs) over a request's (this process's, its clients included, and Postgres's); the throughput ratio a machine kept busy by both would show"
    );
    for e in run
        .endpoints
        .iter()
        .filter(|e| e.what.starts_with("greenness"))
    {
        let r = e.ratio();
        println!(
            "{}: {r:.3} × pgbench -S (target ≥ 0.5: {}), p99 {:.2} ms (target ≤ 10 ms: {})",
            e.what,
            verdict(r >= 0.5),
            e.p99_ms,
            verdict(e.p99_ms <= 10.0)
        );
    }
    let ratios: Vec<_> = run
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "what": e.what,
                "ratio_to_pgbench_s": e.ratio(),
                "ratios_of_rounds": e.ratios(),
                "bench_us_per_request": e.bench_us_per_request(),
                "postgres_us_per_request": e.postgres_us_per_request(),
                "cpu_ratio_to_pgbench_s": e.cpu_ratio(),
            })
        })
        .collect();
    Ok(json!({
        "machine": machine,
        "run": run,
        "pgbench_us_per_transaction": pg.pgbench_us_per_transaction(),
        "postgres_us_per_transaction": pg.postgres_us_per_transaction(),
        "ratios": ratios,
        "targets": { "reads_to_pgbench_s_at_least": 0.5, "p99_ms_at_most": 10.0 },
    }))
}

async fn bench_ancestry(plan: Plan, machine: &Machine) -> serde_json::Value {
    let run = ancestry::run(plan.commits).await;
    json!({ "machine": machine, "run": run })
}

async fn bench_memory(plan: Plan, machine: &Machine) -> anyhow::Result<serde_json::Value> {
    let run = memory::run(plan.load, plan.warmup, plan.windows, plan.window).await?;
    println!();
    println!("| memory | VmRSS | target | ratio to target |");
    println!("|---|---:|---:|---:|");
    for i in &run.idle {
        println!(
            "| idle `stovepipe serve`, {} | {:.1} MB | 40 MB | {:.2} |",
            i.backend,
            i.rss.rss_mb(),
            i.rss.rss_mb() / 40.0
        );
    }
    let end = run.bench_process_end_of_pipeline;
    println!(
        "| bench process before the pipeline | {:.1} MB | | |",
        run.bench_process_before_pipeline.rss_mb()
    );
    println!(
        "| bench process at the end of the pipeline ({} queues, Postgres, {:.0} facts/s) | {:.1} MB (peak {:.1} MB) | 150 MB | {:.2} |",
        run.pipeline_queues,
        run.pipeline_facts_per_second,
        end.rss_mb(),
        end.hwm_mb(),
        end.rss_mb() / 150.0
    );
    Ok(json!({
        "machine": machine,
        "run": run,
        "targets": { "idle_mb_at_most": 40.0, "pipeline_mb_at_most": 150.0 },
    }))
}

async fn run_one(name: &str, plan: Plan, machine: &Machine) -> anyhow::Result<serde_json::Value> {
    println!("== {name} ==");
    match name {
        "pipeline" => bench_pipeline(plan, machine).await,
        "latency" => bench_latency(plan, machine).await,
        "api" => bench_api(plan, machine).await,
        "ancestry" => Ok(bench_ancestry(plan, machine).await),
        "memory" => bench_memory(plan, machine).await,
        other => bail!("unknown benchmark {other:?}; expected one of {NAMES:?} or all"),
    }
}

/// The value of a count option (`--queues`, `--write-lanes`): a whole
/// number of `what`, at least 1. The server's own bounds apply after.
fn parse_count(option: &str, what: &str, value: Option<&str>) -> anyhow::Result<usize> {
    let value = value.ok_or_else(|| anyhow::anyhow!("{option} needs a number of {what}"))?;
    match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => bail!("{option} {value:?}: expected a whole number of {what}, at least 1"),
    }
}

/// The command line: the benchmarks to run, where their JSON goes, and
/// the plan they run by.
#[derive(Debug)]
struct Options {
    names: Vec<String>,
    out: PathBuf,
    plan: Plan,
}

fn parse_options(args: &[String]) -> anyhow::Result<Options> {
    let mut out = PathBuf::from("target/bench");
    let mut quick = false;
    let mut load = DEFAULT_LOAD;
    let mut names = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // `--option=value` reads as `--option value`.
        let (option, inline) = match arg.split_once('=') {
            Some((option, value)) if option.starts_with("--") => (option, Some(value)),
            _ => (arg.as_str(), None),
        };
        let mut value = || inline.or_else(|| it.next().map(String::as_str));
        match option {
            "--out" => {
                out = PathBuf::from(
                    value().ok_or_else(|| anyhow::anyhow!("--out needs a directory"))?,
                );
            }
            "--quick" => quick = true,
            "--queues" => load.queues = parse_count(option, "queues", value())?,
            "--write-lanes" => load.write_lanes = Some(parse_count(option, "lanes", value())?),
            "all" => names.extend(NAMES.iter().map(|n| (*n).to_owned())),
            name => names.push(name.to_owned()),
        }
    }
    if names.is_empty() {
        bail!(
            "usage: stovepipe-bench <{}|all> [--quick] [--queues N] [--write-lanes N] [--out DIR]",
            NAMES.join("|")
        );
    }
    let plan = Plan {
        load,
        ..if quick { Plan::quick() } else { Plan::full() }
    };
    Ok(Options { names, out, plan })
}

async fn run(args: &[String]) -> anyhow::Result<()> {
    let Options { names, out, plan } = parse_options(args)?;
    let machine = Machine::describe();
    machine.print();
    for name in &names {
        let value = run_one(name, plan, &machine).await?;
        write_json(&out, name, &value)?;
    }
    Ok(())
}

/// The `stovepipe` binary's allocator (see its `main.rs`): the bench runs
/// the production wiring, so it measures with the same one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    recorder::install();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_is_the_median_with_the_least_and_the_greatest() {
        assert_eq!(spread(&[14.0, 12.25, 15.5], 1), "14.0 (12.2–15.5)");
        assert_eq!(spread(&[0.0581], 3), "0.058 (0.058–0.058)");
        assert_eq!(spread(&[], 1), "n/a");
    }

    #[test]
    fn counts_are_a_whole_number_of_at_least_one() {
        assert_eq!(parse_count("--queues", "queues", Some("64")).unwrap(), 64);
        for bad in ["0", "-3", "many", "1.5", ""] {
            let message = parse_count("--write-lanes", "lanes", Some(bad))
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with("--write-lanes")
                    && message.contains(&format!("{bad:?}"))
                    && message.contains("lanes, at least 1"),
                "{bad}: {message}"
            );
        }
        assert!(
            parse_count("--queues", "queues", None)
                .unwrap_err()
                .to_string()
                .contains("--queues needs a number of queues")
        );
    }

    fn options(args: &[&str]) -> anyhow::Result<Options> {
        parse_options(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn the_load_options_take_their_value_after_a_space_or_an_equals_sign() {
        let o = options(&["pipeline", "--queues", "128", "--write-lanes=1"]).unwrap();
        assert_eq!(
            o.plan.load,
            Load {
                queues: 128,
                write_lanes: Some(1)
            }
        );
        assert_eq!(o.names, ["pipeline"]);
        let o = options(&["memory", "--queues=8", "--write-lanes", "3", "--out", "x"]).unwrap();
        assert_eq!(
            o.plan.load,
            Load {
                queues: 8,
                write_lanes: Some(3)
            }
        );
        assert_eq!(o.out, PathBuf::from("x"));
        let o = options(&["pipeline"]).unwrap();
        assert_eq!(
            o.plan.load, DEFAULT_LOAD,
            "the server's default lanes unless told"
        );
        let bad = options(&["pipeline", "--write-lanes"])
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("--write-lanes needs a number of lanes"),
            "{bad}"
        );
        assert!(
            options(&["--quick"])
                .unwrap_err()
                .to_string()
                .starts_with("usage:")
        );
    }
}
