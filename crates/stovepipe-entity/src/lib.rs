//! Stovepipe's domain model.
//!
//! Owns: validated names and identifiers (parse, don't validate: a [`QueueName`]
//! in hand is valid), the entities of the greenness pipeline and the state
//! machines that move them. Every transition is a method that refuses an
//! illegal move with a [`TransitionError`]; no other crate mutates entity
//! state by hand.
//!
//! Does not own: storage, time (callers pass a [`Timestamp`]), IO of any kind.
//! Nothing here is async.

mod build;
mod change;
mod config;
mod degree;
mod error;
mod fact;
mod hook;
mod ids;
mod names;
mod queue;
mod request;
mod time;

pub use build::{Build, BuildReport, BuildStatus, BuildUpdate, TargetResult, TargetStatus};
pub use change::{ChangeEvent, ChangeKind, EventEnvelope, EventType, NewChange};
pub use config::{BuildConfig, ProjectConfig, QueueConfig, RunnerKind};
pub use degree::Degree;
pub use error::{InvalidValue, TransitionError};
pub use fact::{Culprit, Fact, FactKey};
pub use hook::{
    Hook, HookContract, HookName, HookRelease, HookReleaseSpec, HookRun, HookRunStatus, hook_run_id,
};
pub use ids::{BuildId, RequestId, Uri, compare_request_id};
pub use names::{ProjectName, QueueName};
pub use queue::{Bookmark, BookmarkMove, Queue};
pub use request::{BuildStrategy, Origin, Request, RequestState};
pub use time::Timestamp;
