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
