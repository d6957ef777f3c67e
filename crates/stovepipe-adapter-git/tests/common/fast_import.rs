//! A linear repository of `n` commits generated with `git fast-import` (a
//! generated stream, seconds even for 200 000 commits), cached under the
//! system temp dir keyed by size so repeated runs reuse it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The path of a bare repository whose `main` is a linear chain of `n`
/// commits (commit `i` changes `counter.txt`), built once per size.
pub fn linear_repo(n: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stovepipe-git-linear-{n}"));
    if dir.join("stovepipe-complete").exists() {
        return dir;
    }
    // Build beside the final place and rename, so a concurrent or
    // interrupted run never sees a half-made repository as complete.
    let building = std::env::temp_dir().join(format!(
        "stovepipe-git-linear-{n}.{}.tmp",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&building);
    generate(&building, n);
    std::fs::write(building.join("stovepipe-complete"), b"").unwrap();
    if std::fs::rename(&building, &dir).is_err() {
        // Another run finished first; use its repository.
        let _ = std::fs::remove_dir_all(&building);
    }
    dir
}

/// Creates at `dir` a bare repository whose `main` is `n` linear commits.
pub fn generate(dir: &Path, n: usize) {
    let status = Command::new("git")
        .args(["init", "--quiet", "--bare", "--initial-branch=main"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["fast-import", "--quiet", "--depth=10"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().unwrap());
        for i in 1..=n {
            let message = format!("commit {i}\n");
            let content = format!("{i}\n");
            writeln!(stdin, "commit refs/heads/main").unwrap();
            writeln!(stdin, "mark :{i}").unwrap();
            writeln!(
                stdin,
                "committer Bench <bench@example.com> {} +0000",
                1_600_000_000 + i
            )
            .unwrap();
            write!(stdin, "data {}\n{message}", message.len()).unwrap();
            if i > 1 {
                writeln!(stdin, "from :{}", i - 1).unwrap();
            }
            write!(
                stdin,
                "M 644 inline counter.txt\ndata {}\n{content}\n",
                content.len()
            )
            .unwrap();
        }
        stdin.flush().unwrap();
    }
    assert!(child.wait().unwrap().success(), "git fast-import failed");
}
