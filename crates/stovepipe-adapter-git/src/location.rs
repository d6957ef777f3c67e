//! Where a queue's repository lives: a local repository used in place, or a
//! remote one mirrored under the data directory.
//!
//! Remote repositories are cloned as bare mirrors under
//! `<data_dir>/mirrors/<sanitised-url>` and only the queue's branch is
//! fetched (`+refs/heads/<branch>:refs/heads/<branch>`), so the promotion
//! refs the adapter writes in the mirror are never overwritten by a fetch.
//!
//! This build links git2 without its `https`/`ssh` features (no OpenSSL), so
//! the only transport is libgit2's local one: local paths and `file://` URLs.
//! Any other URL (`https://`, `ssh://`, `git://`, `user@host:path`) is
//! refused at open time with an `Invalid` error saying so.

use crate::error::{ctx, invalid};
use git2::{FetchOptions, Repository};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use stovepipe_ports::ScmError;

const UNSUPPORTED: &str = "a local path or a file:// URL (this build of git2 has no https/ssh \
                           transport)";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A repository on this machine, read and written in place.
    Local { path: PathBuf },
    /// A remote repository and the bare mirror that stands for it.
    Mirror { url: String, mirror: PathBuf },
}

impl Location {
    /// Decides where `repo` lives. Does no IO.
    pub(crate) fn classify(repo: &str, data_dir: &Path) -> Result<Self, ScmError> {
        if repo.trim().is_empty() {
            return Err(invalid("repository", repo, "a local path or a file:// URL"));
        }
        if let Some((scheme, _)) = repo.split_once("://") {
            if scheme.eq_ignore_ascii_case("file") {
                return Ok(Self::Mirror {
                    url: repo.to_owned(),
                    mirror: data_dir.join("mirrors").join(sanitise(repo)),
                });
            }
            return Err(invalid("repository", repo, UNSUPPORTED));
        }
        if looks_like_scp(repo) {
            return Err(invalid("repository", repo, UNSUPPORTED));
        }
        Ok(Self::Local {
            path: PathBuf::from(repo),
        })
    }

    /// Opens the repository, creating the mirror when missing; the mirror's
    /// first fetch is the caller's.
    pub(crate) fn open(&self, repo_setting: &str) -> Result<Repository, ScmError> {
        match self {
            Self::Local { path } => Repository::open(path).map_err(|e| {
                invalid(
                    "repository",
                    repo_setting,
                    format!("an existing git repository ({})", e.message()),
                )
            }),
            Self::Mirror { url, mirror } => {
                if let Some(source) = file_url_path(url)
                    && !source.exists()
                {
                    return Err(invalid(
                        "repository",
                        repo_setting,
                        "a file:// URL of an existing repository",
                    ));
                }
                if let Ok(repo) = Repository::open_bare(mirror) {
                    return Ok(repo);
                }
                std::fs::create_dir_all(mirror).map_err(|e| {
                    ScmError::Backend(format!("create mirror {}: {e}", mirror.display()))
                })?;
                Repository::init_bare(mirror)
                    .map_err(ctx(format_args!("create mirror {}", mirror.display())))
            }
        }
    }

    /// Fetches `branch` into the mirror; nothing to do for a local
    /// repository. A failed fetch is `Unavailable` (retryable).
    pub(crate) fn fetch(&self, repo: &Repository, branch: &str) -> Result<(), ScmError> {
        let Self::Mirror { url, .. } = self else {
            return Ok(());
        };
        let refspec = format!("+refs/heads/{branch}:refs/heads/{branch}");
        let mut remote = repo
            .remote_anonymous(url)
            .map_err(ctx(format_args!("remote {url}")))?;
        let mut options = FetchOptions::new();
        options.download_tags(git2::AutotagOption::None);
        remote
            .fetch(&[refspec.as_str()], Some(&mut options), None)
            .map_err(|e| {
                let message = format!("fetch {branch} from {url}: {}", e.message());
                if e.code() == git2::ErrorCode::NotFound {
                    ScmError::NotFound(message)
                } else {
                    ScmError::Unavailable(message)
                }
            })
    }

    /// Pushes `reference` (a full ref name) to the remote, forcing it, since
    /// a promotion ref may legitimately move backwards. Nothing to do for a
    /// local repository, whose ref was written in place.
    pub(crate) fn push(&self, repo: &Repository, reference: &str) -> Result<(), ScmError> {
        let Self::Mirror { url, .. } = self else {
            return Ok(());
        };
        let refspec = format!("+{reference}:{reference}");
        let mut remote = repo
            .remote_anonymous(url)
            .map_err(ctx(format_args!("remote {url}")))?;
        remote.push(&[refspec.as_str()], None).map_err(|e| {
            ScmError::Unavailable(format!("push {reference} to {url}: {}", e.message()))
        })
    }
}

/// `user@host:path` (scp-like ssh syntax): a colon before any slash.
fn looks_like_scp(repo: &str) -> bool {
    match (repo.find(':'), repo.find('/')) {
        (Some(colon), Some(slash)) => colon < slash && colon > 1,
        (Some(colon), None) => colon > 1,
        _ => false,
    }
}

/// The local path of a `file://` URL.
fn file_url_path(url: &str) -> Option<PathBuf> {
    let rest = url.get(7..)?;
    url[..7]
        .eq_ignore_ascii_case("file://")
        .then(|| PathBuf::from(rest))
}

/// A directory name for a URL: readable characters kept, the rest replaced,
/// and a hash of the whole URL appended so two URLs never share a mirror by
/// accident of sanitising.
pub(crate) fn sanitise(url: &str) -> String {
    let readable: String = url
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let readable = readable.trim_matches('_');
    let tail: String = readable
        .chars()
        .rev()
        .take(80)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let digest = Sha256::digest(url.as_bytes());
    format!("{tail}-{}", &hex::encode(digest)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_locations() {
        let data = Path::new("/data");
        assert_eq!(
            Location::classify("/srv/repo.git", data).unwrap(),
            Location::Local {
                path: PathBuf::from("/srv/repo.git")
            }
        );
        assert!(matches!(
            Location::classify("file:///srv/repo.git", data).unwrap(),
            Location::Mirror { .. }
        ));
        for refused in [
            "https://github.com/o/r.git",
            "ssh://git@host/r.git",
            "git@github.com:o/r.git",
            "",
        ] {
            let err = Location::classify(refused, data).unwrap_err();
            assert!(matches!(err, ScmError::Invalid(_)), "{refused}: {err}");
        }
        let err = Location::classify("https://github.com/o/r.git", data).unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
    }

    #[test]
    fn sanitised_names_are_distinct_and_plain() {
        let a = sanitise("file:///tmp/a b");
        let b = sanitise("file:///tmp/a_b");
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "{a}"
        );
    }
}
