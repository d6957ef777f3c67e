//! In-memory adapters of every Stovepipe port: stateful fakes, not mocks.
//!
//! Owns:
//! - [`MemoryBackend`]: one shared state behind the stores
//!   ([`StoreFactory`](stovepipe_ports::StoreFactory)), read model, queue
//!   configuration, message queue, change feed and hook registry, with
//!   transactional outboxes and fault injection for crash tests;
//! - [`ManualClock`]: time that moves only when a test moves it;
//! - [`ScriptedRepo`] / [`ScriptedScmFactory`]: a scripted commit graph per
//!   queue behind `SourceControl`;
//! - [`ScriptedBuildRunner`] / [`ScriptedRunnerFactory`]: a build runner whose
//!   outcomes a test dictates;
//! - [`RecordingHookSink`]: a hook sink that records deliveries and answers
//!   as scripted.
//!
//! Does not own: any pipeline rule. Every adapter here passes the contract
//! suites of `stovepipe-contract` (see `tests/contract.rs`).

mod backend;
mod clock;
mod runner;
mod scm;
mod sink;

pub use backend::{DEFAULT_FEED_BUFFER, MemoryBackend};
pub use clock::ManualClock;
pub use runner::{ScriptedBuildRunner, ScriptedRunnerFactory};
pub use scm::{CommitSpec, DEFAULT_PROMOTION_REF, ScriptedRepo, ScriptedScmFactory};
pub use sink::RecordingHookSink;
