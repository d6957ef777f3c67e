//! `cargo xtask <task>`: project automation written in Rust, never shell
//! scripts that drift.
//!
//! - `openapi` writes `api/openapi.json` from the server code;
//!   `openapi --check` fails when the checked-in file differs (CI).
//! - `bench <name>|all [--quick] [--queues N] [--write-lanes N]` builds
//!   `stovepipe-bench` (and, for `memory`, the `stovepipe` binary) in
//!   release and runs it; results go to `target/bench/<name>.json` (see
//!   `docs/benchmarks.md`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};

fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root. `cargo run` sets
    // CARGO_MANIFEST_DIR for the program too, naming the checkout it was
    // run in; the value compiled in names the checkout that built this
    // binary, which with a target directory shared between clones (as
    // `.ci/run` sets up) can be another one.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn openapi(check: bool) -> anyhow::Result<()> {
    let path = workspace_root().join("api/openapi.json");
    let mut spec = stovepipe_server::api::spec_json();
    if !spec.ends_with('\n') {
        spec.push('\n');
    }
    if check {
        let current = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if current != spec {
            bail!(
                "{} is out of date with the server code: run `cargo xtask openapi` and commit the result",
                path.display()
            );
        }
        println!("{} is up to date", path.display());
    } else {
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        std::fs::write(&path, spec).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Benchmarks are meaningless in a debug build: build and run in release.
fn bench(args: &[&str]) -> anyhow::Result<()> {
    if args.iter().any(|a| matches!(*a, "memory" | "all")) {
        // The memory benchmark starts the real server binary.
        cargo(&[
            "build",
            "--release",
            "-p",
            "stovepipe-server",
            "--bin",
            "stovepipe",
        ])?;
    }
    let out = workspace_root().join("target/bench");
    let out = out.to_string_lossy();
    // Options go to every benchmark; `--queues` and `--write-lanes` take
    // the next argument as their value.
    let mut options: Vec<&str> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    let mut rest = args.iter().copied();
    while let Some(arg) = rest.next() {
        if matches!(arg, "--queues" | "--write-lanes") {
            options.push(arg);
            options.extend(rest.next());
        } else if arg.starts_with("--") {
            options.push(arg);
        } else {
            names.push(arg);
        }
    }
    if names.contains(&"all") {
        names = BENCHES.to_vec();
    }
    // One process per benchmark, so one's memory never shows in another's.
    for name in names {
        let mut run = vec!["run", "--release", "-p", "stovepipe-bench", "--", name];
        run.extend_from_slice(&options);
        run.extend_from_slice(&["--out", &out]);
        cargo(&run)?;
    }
    Ok(())
}

const BENCHES: [&str; 5] = ["pipeline", "latency", "api", "ancestry", "memory"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["help" | "--help" | "-h"] => {
            println!(
                "usage: cargo xtask <task>\n\ntasks:\n  openapi [--check]   write (or check) api/openapi.json\n  bench <name>|all [--quick] [--queues N] [--write-lanes N]\n                      run a benchmark in release (pipeline, latency, api, ancestry, memory)"
            );
            return ExitCode::SUCCESS;
        }
        ["openapi"] => openapi(false),
        ["openapi", "--check"] => openapi(true),
        ["bench", rest @ ..] if !rest.is_empty() => bench(rest),
        other => {
            eprintln!("unknown task {other:?}; run `cargo xtask help`");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
