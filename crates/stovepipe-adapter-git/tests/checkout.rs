//! Checkouts: the tree of the commit and nothing else, directories reused
//! across builds, different queues checking out concurrently, a locked slot
//! answering `Unavailable`.

// Fixtures panic on a broken setup, as the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestRepo, data_dir, paths_of, queue};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use stovepipe_adapter_git::GitScmFactory;
use stovepipe_ports::{ScmError, SourceControl};

#[tokio::test]
async fn checkout_is_clean_and_reused() {
    let repo = TestRepo::new();
    let a = repo.commit_on(
        "main",
        &[
            ("README", Some("v1\n")),
            ("src/lib.rs", Some("fn a() {}\n")),
            (".gitignore", Some("target/\n")),
        ],
        "a\n",
    );
    let b = repo.commit_on(
        "main",
        &[
            ("src/lib.rs", Some("fn b() {}\n")),
            ("README", None),
            ("docs/new.md", Some("new\n")),
        ],
        "b\n",
    );
    let data = data_dir();
    let factory = GitScmFactory::new(data.path().to_owned());
    let scm = factory
        .git_for_queue(&queue("mono/main", &repo.path_string(), "main", None))
        .await
        .unwrap();
    let ua = scm.resolve(&a.to_string()).await.unwrap();
    let ub = scm.resolve(&b.to_string()).await.unwrap();

    let dir = scm.checkout(&ua, 0).await.unwrap();
    assert_eq!(
        dir,
        data.path().join("checkouts").join("mono%2Fmain").join("0")
    );
    assert_eq!(
        paths_of(&dir),
        [
            PathBuf::from(".gitignore"),
            PathBuf::from("README"),
            PathBuf::from("src/lib.rs")
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("src/lib.rs")).unwrap(),
        "fn a() {}\n"
    );
    let git_dir_inode = std::fs::metadata(dir.join(".git")).unwrap().ino();

    // A build dirties the tree: edits, untracked and ignored files.
    std::fs::write(dir.join("src/lib.rs"), "edited").unwrap();
    std::fs::write(dir.join("untracked.txt"), "junk").unwrap();
    std::fs::create_dir_all(dir.join("target/debug")).unwrap();
    std::fs::write(dir.join("target/debug/out"), "artifact").unwrap();

    let again = scm.checkout(&ub, 0).await.unwrap();
    assert_eq!(again, dir);
    assert_eq!(
        paths_of(&dir),
        [
            PathBuf::from(".gitignore"),
            PathBuf::from("docs/new.md"),
            PathBuf::from("src/lib.rs")
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("src/lib.rs")).unwrap(),
        "fn b() {}\n"
    );
    assert_eq!(
        std::fs::metadata(dir.join(".git")).unwrap().ino(),
        git_dir_inode,
        "the directory is reused, not recloned"
    );
    // The checkout is a git tree of the commit, as the CLI sees it.
    assert_eq!(common::git_in(&dir, &["rev-parse", "HEAD"]), b.to_string());
    assert_eq!(common::git_in(&dir, &["status", "--porcelain"]), "");

    // Back to an older commit, same slot; another slot is another directory.
    scm.checkout(&ua, 0).await.unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("README")).unwrap(), "v1\n");
    let other = scm.checkout(&ub, 1).await.unwrap();
    assert_ne!(other, dir);
    assert_eq!(
        std::fs::read_to_string(other.join("docs/new.md")).unwrap(),
        "new\n"
    );

    let unknown = stovepipe_entity::Uri::new(format!(
        "git://{}/main/{}",
        repo.path_string(),
        "ab".repeat(20)
    ))
    .unwrap();
    assert!(matches!(
        scm.checkout(&unknown, 0).await,
        Err(ScmError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkouts_of_two_queues_run_concurrently() {
    let repo_x = TestRepo::new();
    let repo_y = TestRepo::new();
    let xs = repo_x.linear("main", 8);
    let ys = repo_y.linear("main", 8);
    let data = data_dir();
    let factory = GitScmFactory::new(data.path().to_owned());
    let x = factory
        .git_for_queue(&queue("team/x", &repo_x.path_string(), "main", None))
        .await
        .unwrap();
    let y = factory
        .git_for_queue(&queue("team/y", &repo_y.path_string(), "main", None))
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for round in 0..4 {
        for (scm, commits, name) in [(&x, &xs, "x"), (&y, &ys, "y")] {
            for slot in 0..2u32 {
                let scm = std::sync::Arc::clone(scm);
                let i = round * 2 + slot as usize;
                let oid = commits[i];
                tasks.push(tokio::spawn(async move {
                    let uri = scm.resolve(&oid.to_string()).await.unwrap();
                    let dir = scm.checkout(&uri, slot).await.unwrap();
                    // commit i adds file<i>.txt on top of all earlier files.
                    let files = paths_of(&dir);
                    assert_eq!(files.len(), i + 1, "{name} slot {slot} commit {i}");
                    assert_eq!(
                        std::fs::read_to_string(dir.join(format!("file{i}.txt"))).unwrap(),
                        format!("content {i}\n")
                    );
                    (name, slot, dir)
                }));
            }
        }
        // Rounds reuse the same slot directories one after another; within a
        // round the four checkouts (two queues × two slots) overlap.
        let mut dirs = Vec::new();
        for t in tasks.drain(..) {
            dirs.push(t.await.unwrap());
        }
        let mut unique: Vec<_> = dirs.iter().map(|d| d.2.clone()).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4);
    }
}

#[tokio::test]
async fn a_locked_slot_is_unavailable() {
    let repo = TestRepo::new();
    repo.linear("main", 1);
    let data = data_dir();
    let factory = GitScmFactory::new(data.path().to_owned());
    let scm = factory
        .git_for_queue(&queue("mono/main", &repo.path_string(), "main", None))
        .await
        .unwrap();
    let head = scm.latest().await.unwrap();
    let dir = scm.checkout_dir(3);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let holder = std::fs::File::create(dir.with_extension("lock")).unwrap();
    holder.lock().unwrap();
    let err = scm.checkout(&head, 3).await.unwrap_err();
    assert!(matches!(err, ScmError::Unavailable(_)), "{err}");
    drop(holder);
    // Another test's child process, between its fork and exec, may still
    // share our lock's open file for a moment (flock belongs to the open
    // file, which a fork duplicates): allow that moment, not more.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match scm.checkout(&head, 3).await {
            Ok(got) => {
                assert_eq!(got, dir);
                break;
            }
            Err(ScmError::Unavailable(e)) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("checkout after the lock was released: {e}"),
        }
    }
}
