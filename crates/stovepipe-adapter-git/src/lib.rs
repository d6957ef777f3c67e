//! Stovepipe's git `SourceControl` adapter, over git2.
//!
//! Owns: the URI format (`git://<repo>/<branch>/<sha>`, see the `uri` module for its
//! escaping rules), reading a queue's branch (head, history, ancestry,
//! changed paths), moving promotion refs, mirroring remote repositories
//! under a data directory, and clean per-slot checkouts for local runners.
//!
//! Does not own: deciding what is green or when to promote (the pipeline
//! does), or any network transport beyond libgit2's local one: git2 is built
//! without https/ssh (no OpenSSL), so repositories are local paths or
//! `file://` URLs, and other URLs are refused with a clear `Invalid` error.
//!
//! URIs: `git://<repo>/<branch>/<sha>`, `<repo>` the configured repository
//! string as written (a path or a `file://` URL), `<branch>` the branch name,
//! `<sha>` the full 40-hex commit id. Both names are percent-encoded outside
//! `[A-Za-z0-9-._~:@+=,]` (plus `/` in the repository part only), so a URI
//! never holds whitespace and splits unambiguously at its last two `/`:
//! `git:///srv/git/mono.git/release%2F1.x/<sha>`.
//!
//! Decisions the port leaves open (details in each module):
//! - `resolve` and promotion only accept commits reachable from the branch
//!   head; the other calls take any commit still in the repository, so URIs
//!   stored before a force push stay describable;
//! - history cursors pin the head of their first page: paging is stable
//!   while the branch moves; a new first page sees the new head.
//!
//! Entry points: [`GitScmFactory`] (the `SourceControlFactory`, one cached
//! adapter per queue) and [`GitSourceControl::open`].
//!
//! Data directory layout:
//! - `<data_dir>/mirrors/<sanitised-url>`: bare mirrors of remote repositories;
//! - `<data_dir>/checkouts/<queue with / as %2F>/<slot>`: reusable checkouts;
//! - `<data_dir>/ancestry/<queue with / as %2F>.fpi`: the saved first-parent
//!   index of the queue's branch (a cache; see the `ancestry` module).

mod adapter;
mod ancestry;
mod checkout;
mod error;
mod factory;
mod history;
mod location;
mod uri;

pub use adapter::{GitOptions, GitSourceControl};
pub use factory::GitScmFactory;
