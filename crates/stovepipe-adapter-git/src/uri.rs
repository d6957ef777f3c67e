//! The URI format: the only code that mints and reads commit URIs.
//!
//! A URI is `git://<repo>/<branch>/<sha>`:
//! - `<repo>` is the queue's configured repository string (a local path or a
//!   URL) with every byte outside `[A-Za-z0-9-._~/:@+=,]` percent-encoded
//!   (`%` itself included), so spaces and control characters never reach
//!   `Uri::new`;
//! - `<branch>` is the branch name encoded the same way and, in addition,
//!   with `/` encoded as `%2F` (`release%2F1.x`);
//! - `<sha>` is the full 40-hex lowercase commit id.
//!
//! Why this is unambiguous: neither the branch part nor the sha contains a
//! raw `/`, so splitting at the last two `/` always yields the three parts,
//! whatever slashes the repository path has. A queue compares a URI with its
//! own prefix byte for byte, so one commit has exactly one URI per queue.
//!
//! Does not own: deciding whether the commit exists or is on the branch
//! (the adapter does, with the repository at hand).

use git2::Oid;
use std::fmt::Write as _;
use stovepipe_entity::{InvalidValue, Uri};

const SCHEME: &str = "git://";

/// Percent-encodes `value`, keeping `/` only when `keep_slash`.
fn escape(value: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'_' | b'~' | b':' | b'@' | b'+' | b'=' | b','
            )
            || (keep_slash && b == b'/');
        if plain {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` sequences; `None` on a malformed escape or non-UTF-8 result.
fn unescape(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URI scheme of one queue: mints URIs and recognises its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UriScheme {
    /// `git://<repo>/<branch>/`, escaped.
    prefix: String,
}

/// What a foreign or malformed URI says about itself, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Foreign {
    /// Not of the form `git://<repo>/<branch>/<sha>`.
    Malformed,
    /// Well formed, but minted for another repository or branch.
    Other { repo: String, branch: String },
}

impl UriScheme {
    /// The scheme of a queue on `repo` and `branch`. Fails when a URI of
    /// this queue would not be a valid [`Uri`] (too long).
    pub(crate) fn new(repo: &str, branch: &str) -> Result<Self, InvalidValue> {
        let scheme = Self {
            prefix: format!("{SCHEME}{}/{}/", escape(repo, true), escape(branch, false)),
        };
        // Mint one URI now so a queue whose URIs cannot be valid fails at
        // open time rather than on its first commit.
        scheme.mint(Oid::zero())?;
        Ok(scheme)
    }

    /// The URI of commit `oid` in this queue.
    pub(crate) fn mint(&self, oid: Oid) -> Result<Uri, InvalidValue> {
        Uri::new(format!("{}{oid}", self.prefix))
    }

    /// The commit id of a URI minted by this scheme, or why it is not one.
    pub(crate) fn parse(&self, uri: &str) -> Result<Oid, Foreign> {
        if let Some(sha) = uri.strip_prefix(&self.prefix) {
            if is_full_sha(sha) {
                return Oid::from_str(sha).map_err(|_| Foreign::Malformed);
            }
            return Err(Foreign::Malformed);
        }
        describe(uri)
    }
}

/// Parses any git URI to name its repository and branch in a message.
fn describe(uri: &str) -> Result<Oid, Foreign> {
    let rest = uri.strip_prefix(SCHEME).ok_or(Foreign::Malformed)?;
    let (rest, sha) = rest.rsplit_once('/').ok_or(Foreign::Malformed)?;
    let (repo, branch) = rest.rsplit_once('/').ok_or(Foreign::Malformed)?;
    if !is_full_sha(sha) {
        return Err(Foreign::Malformed);
    }
    match (unescape(repo), unescape(branch)) {
        (Some(repo), Some(branch)) => Err(Foreign::Other { repo, branch }),
        _ => Err(Foreign::Malformed),
    }
}

/// 40 lowercase hex digits: the only commit id form a URI carries.
pub(crate) fn is_full_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn check(repo: &str, branch: &str, expected: &str) {
        let scheme = UriScheme::new(repo, branch).unwrap();
        let oid = Oid::from_str(SHA).unwrap();
        let uri = scheme.mint(oid).unwrap();
        assert_eq!(uri.as_str(), expected);
        assert_eq!(scheme.parse(uri.as_str()), Ok(oid));
        // Any other queue reads it as foreign, naming the original parts.
        let other = UriScheme::new("/elsewhere", "main").unwrap();
        assert_eq!(
            other.parse(uri.as_str()),
            Err(Foreign::Other {
                repo: repo.to_owned(),
                branch: branch.to_owned()
            })
        );
    }

    #[test]
    fn mints_and_parses() {
        check(
            "/srv/git/mono.git",
            "main",
            &format!("git:///srv/git/mono.git/main/{SHA}"),
        );
        check(
            "/srv/git/mono.git",
            "release/1.x",
            &format!("git:///srv/git/mono.git/release%2F1.x/{SHA}"),
        );
        check(
            "file:///tmp/my repo",
            "feature/a b",
            &format!("git://file:///tmp/my%20repo/feature%2Fa%20b/{SHA}"),
        );
        check("/tmp/100%/r", "m", &format!("git:///tmp/100%25/r/m/{SHA}"));
        check(
            "/tmp/ünï",
            "m",
            &format!("git:///tmp/%C3%BCn%C3%AF/m/{SHA}"),
        );
    }

    #[test]
    fn rejects_malformed() {
        let scheme = UriScheme::new("/r", "main").unwrap();
        for bad in [
            "",
            "git://",
            "http://x/main/0123",
            "git:///r/main/0123",
            &format!("git:///r/main/{}", SHA.to_uppercase()),
            &format!("git:///r/main/{SHA}0"),
            "git:///r/main/%zz",
        ] {
            assert_eq!(scheme.parse(bad), Err(Foreign::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn too_long_repository_is_invalid() {
        assert!(UriScheme::new(&"/x".repeat(1100), "main").is_err());
    }
}
