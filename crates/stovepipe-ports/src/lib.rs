//! Stovepipe's ports: every boundary between the application and the
//! outside world, as `async_trait` traits.
//!
//! Each trait documents the error contract an implementation MUST follow;
//! `stovepipe-contract` checks it. Errors are typed and classified once,
//! where they are produced: [`Classify::is_retryable`] tells the consumer
//! runtime whether to retry with backoff or dead-letter at once.
//!
//! With feature `mock`, every trait has a mockall mock (`MockRequestStore`…).
//!
//! Does not own: any implementation (see the adapter crates) or any business
//! rule (see `stovepipe-app`).

mod clock;
mod error;
mod feed;
mod hooks;
mod messaging;
mod runner;
mod scm;
mod store;

pub use clock::{Clock, SystemClock};
pub use error::{Classify, FeedError, HookError, MqError, RunnerError, ScmError, StoreError};
pub use feed::{ChangeFeed, ChangeStream};
pub use hooks::{DeliveryOutcome, HookRegistry, HookSink, ReleaseOutcome, UpsertOutcome};
pub use messaging::{DeadLetter, Delivery, MessageQueue, OutgoingMessage, Topic};
pub use runner::{BuildRunner, BuildRunnerFactory, TriggerRequest};
pub use scm::{ChangeInfo, HistoryPage, PromoteOutcome, SourceControl, SourceControlFactory};
pub use store::{
    BuildStore, CommitHook, CommitRecord, EntityWrite, FactStore, JointWriter, Outbox,
    QueueConfigStore, QueueStore, ReadModel, RequestStore, RequestUriStore, StoreFactory, Stores,
};

#[cfg(feature = "mock")]
pub use {
    clock::MockClock, feed::MockChangeFeed, hooks::MockHookRegistry, hooks::MockHookSink,
    messaging::MockMessageQueue, runner::MockBuildRunner, runner::MockBuildRunnerFactory,
    scm::MockSourceControl, scm::MockSourceControlFactory, store::MockBuildStore,
    store::MockFactStore, store::MockJointWriter, store::MockQueueConfigStore,
    store::MockQueueStore, store::MockReadModel, store::MockRequestStore,
    store::MockRequestUriStore, store::MockStoreFactory,
};
