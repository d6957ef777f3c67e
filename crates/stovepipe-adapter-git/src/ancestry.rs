//! A first-parent index of the branch: commit id → position on the chain
//! of first parents from the root to the branch head.
//!
//! Why: `is_ancestor` is asked on every admission, mostly about commits of
//! the branch itself, and git2's `graph_descendant_of` walks the graph (a
//! full walk for a far ancestor of a big repository). On the first-parent
//! chain, `a` is an ancestor of `d` exactly when `pos(a) <= pos(d)`: a commit
//! later on the chain is a descendant of an earlier one, and both directions
//! at once would be a cycle. So commits on the chain answer in O(1), and the
//! adapter falls back to git2 only for commits off the chain (second parents
//! of merges, rewritten history).
//!
//! The index is built once (one walk of the chain) and then follows the
//! head: a head that moved forward extends it by the new commits only; a
//! rewritten head truncates it to the point where the new chain meets the
//! old one and extends from there.
//!
//! Building it walks every commit of the branch (as `git merge-base` does
//! for a far ancestor), so the chain is also saved under the data directory
//! (`<data_dir>/ancestry/<queue>.fpi`) after any walk of many commits, and a
//! restarted process starts from the saved chain and walks only what is new.
//! The file is a cache: a missing, unreadable or stale one (its head gone
//! from the repository) is ignored and rebuilt, and a saved chain the branch
//! has since rewritten is truncated like any other.

use git2::{Oid, Repository};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;

/// Save the chain after a walk of at least this many commits.
const SAVE_AFTER: usize = 1024;
const MAGIC: &[u8] = b"stovepipe first-parent index v1\n";

#[derive(Debug, Default)]
pub(crate) struct FirstParentIndex {
    /// Root first, head last.
    chain: Vec<Oid>,
    position: HashMap<Oid, usize, OidHash>,
    /// Where the chain is saved, if anywhere.
    file: Option<PathBuf>,
    /// Whether the saved chain was read (once, on first use).
    loaded: bool,
}

impl FirstParentIndex {
    /// An index saved in and restored from `file`.
    pub(crate) fn saved_in(file: PathBuf) -> Self {
        Self {
            file: Some(file),
            ..Self::default()
        }
    }

    pub(crate) fn head(&self) -> Option<Oid> {
        self.chain.last().copied()
    }

    /// Position of `oid` on the chain, root = 0.
    pub(crate) fn position(&self, oid: Oid) -> Option<usize> {
        self.position.get(&oid).copied()
    }

    /// Brings the index to `head`, walking only the first parents not yet
    /// indexed.
    pub(crate) fn update(&mut self, repo: &Repository, head: Oid) -> Result<(), git2::Error> {
        if !self.loaded {
            self.loaded = true;
            self.load(repo);
        }
        if self.head() == Some(head) {
            return Ok(());
        }
        let odb = repo.odb()?;
        let mut fresh = Vec::new();
        let mut next = Some(head);
        let mut meets_at = None;
        while let Some(oid) = next {
            if let Some(at) = self.position(oid) {
                meets_at = Some(at);
                break;
            }
            fresh.push(oid);
            next = first_parent(&odb, oid)?;
        }
        // Drop what the new head no longer reaches by first parents (all of
        // it when the chains share no commit).
        let keep = meets_at.map_or(0, |at| at + 1);
        for gone in self.chain.drain(keep..) {
            self.position.remove(&gone);
        }
        self.chain.reserve(fresh.len());
        self.position.reserve(fresh.len());
        let walked = fresh.len();
        for oid in fresh.into_iter().rev() {
            self.position.insert(oid, self.chain.len());
            self.chain.push(oid);
        }
        if walked >= SAVE_AFTER {
            self.save();
        }
        Ok(())
    }

    /// Restores the saved chain when it is readable and its head is still a
    /// commit of `repo` whose first parent is the saved one; otherwise
    /// starts empty. Never fails: the file is only a cache.
    fn load(&mut self, repo: &Repository) {
        let Some(file) = &self.file else { return };
        let Ok(bytes) = std::fs::read(file) else {
            return;
        };
        let Some(body) = bytes.strip_prefix(MAGIC) else {
            tracing::warn!(file = %file.display(), "ignoring an unreadable first-parent index");
            return;
        };
        if body.is_empty() || body.len() % 20 != 0 {
            tracing::warn!(file = %file.display(), "ignoring a truncated first-parent index");
            return;
        }
        let chain: Vec<Oid> = body
            .chunks_exact(20)
            .filter_map(|c| Oid::from_bytes(c).ok())
            .collect();
        let (Some(&head), Ok(odb)) = (chain.last(), repo.odb()) else {
            return;
        };
        let expected_parent = chain.len().checked_sub(2).map(|i| chain[i]);
        let consistent = matches!(first_parent(&odb, head), Ok(p) if p == expected_parent);
        if !consistent {
            tracing::info!(file = %file.display(), "saved first-parent index is stale; rebuilding");
            return;
        }
        self.position = chain.iter().enumerate().map(|(i, oid)| (*oid, i)).collect();
        self.chain = chain;
    }

    /// Saves the chain (write to a temporary file, then rename, so a reader
    /// never sees half a file). Failures are logged: the file is a cache.
    fn save(&self) {
        let Some(file) = &self.file else { return };
        let mut bytes = Vec::with_capacity(MAGIC.len() + self.chain.len() * 20);
        bytes.extend_from_slice(MAGIC);
        for oid in &self.chain {
            bytes.extend_from_slice(oid.as_bytes());
        }
        let tmp = file.with_extension(format!("fpi.{}.tmp", std::process::id()));
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, &bytes))
            .and_then(|()| std::fs::rename(&tmp, file));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(file = %file.display(), error = %e, "could not save the first-parent index");
        }
    }

    /// `Some(answer)` when both commits are on the chain, `None` when the
    /// index cannot tell.
    pub(crate) fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> Option<bool> {
        Some(self.position(ancestor)? <= self.position(descendant)?)
    }
}

/// Hashes an object id by its leading bytes. An id is already a
/// cryptographic hash, so its first eight bytes are as evenly spread as any
/// hasher's output, and the index (200 000 inserts for a big branch) skips
/// SipHash, which was a tenth of the walk's time.
type OidHash = BuildHasherDefault<OidHasher>;

#[derive(Debug, Default)]
struct OidHasher(u64);

impl Hasher for OidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `Oid` hashes as its 20 bytes (in one call); fold anything else in.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

/// The first parent of commit `oid`, read from the raw object: the index
/// walks every commit of the branch once, and skipping git2's full commit
/// parse (and its object cache) makes that walk markedly faster.
fn first_parent(odb: &git2::Odb<'_>, oid: Oid) -> Result<Option<Oid>, git2::Error> {
    let object = odb.read(oid)?;
    if object.kind() != git2::ObjectType::Commit {
        return Err(git2::Error::from_str(&format!("{oid} is not a commit")));
    }
    // A commit's header is `tree <hex>`, then zero or more `parent <hex>`
    // lines in order, then the rest; the header ends at the first blank line.
    for line in object.data().split(|b| *b == b'\n') {
        if line.is_empty() {
            break;
        }
        if let Some(hex) = line.strip_prefix(b"parent ") {
            let hex = std::str::from_utf8(hex)
                .map_err(|_| git2::Error::from_str(&format!("commit {oid}: bad parent line")))?;
            return Oid::from_str(hex).map(Some);
        }
        if !line.starts_with(b"tree ") {
            // Parents come right after the tree: past them, there are none.
            break;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    #[test]
    fn object_ids_hash_apart() {
        let ids: Vec<Oid> = (0..10_000u32)
            .map(|i| Oid::hash_object(git2::ObjectType::Blob, &i.to_le_bytes()).unwrap())
            .collect();
        let hashes: HashSet<u64> = ids
            .iter()
            .map(|id| OidHash::default().hash_one(id))
            .collect();
        assert_eq!(hashes.len(), ids.len(), "distinct ids, distinct hashes");
        // And the bucket bits hashbrown uses (the top 7 and the low ones) spread.
        let low: HashSet<u64> = hashes.iter().map(|h| h & 0x3ff).collect();
        assert!(
            low.len() > 1000 * 9 / 10,
            "{} of 1024 low buckets",
            low.len()
        );
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(top.len(), 128, "every top-7-bit tag is used");
    }
}
