//! `cargo xtask <task>`: project automation written in Rust, never shell
//! scripts that drift.
//!
//! - `openapi` writes `api/openapi.json` from the server code;
//!   `openapi --check` fails when the checked-in file differs (CI).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
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
                "usage: cargo xtask <task>\n\ntasks:\n  openapi [--check]   write (or check) api/openapi.json"
            );
            return ExitCode::SUCCESS;
        }
        ["openapi"] => openapi(false),
        ["openapi", "--check"] => openapi(true),
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
