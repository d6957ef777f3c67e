//! `cargo xtask <task>`: project automation written in Rust.
//!
//! Tasks land with the issues that need them (openapi, bench…); unknown
//! tasks are a usage error.

use std::process::ExitCode;

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        None | Some("help" | "--help" | "-h") => {
            println!("usage: cargo xtask <task>\n\ntasks: (none yet)");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("unknown task {other:?}; run `cargo xtask help`");
            ExitCode::from(2)
        }
    }
}
