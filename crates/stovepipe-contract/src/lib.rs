//! Contract suites for Stovepipe's ports.
//!
//! Owns: one async suite per port, each a list of named cases that check
//! the MUST clauses of the port's documentation against any implementation.
//! A suite is generic over a factory that builds a *fresh* fixture (the
//! adapter under test) for every case, so the memory adapter, the SQL
//! adapters and an embedder's own adapters all prove the same behaviour.
//!
//! Does not own: any implementation, and no test of adapter-specific
//! behaviour (URI formats, SQL, HTTP): those live with each adapter.
//!
//! # Use
//!
//! Run a whole suite (panics listing every failed case):
//!
//! ```text
//! stovepipe_contract::request_store::run(|| async { my_store_fixture() }).await;
//! ```
//!
//! or generate one `#[tokio::test]` per case (the crate using it needs
//! `tokio` with the `macros` and `rt-multi-thread` features):
//!
//! ```text
//! stovepipe_contract::contract_tests!(request_store, || async { my_store_fixture() });
//! ```
//!
//! Every suite module exposes `cases()` (the named cases), `run(factory)`
//! and `run_case(name, factory)`.

// This crate is test code: an unmet expectation must panic with a message
// naming what was expected, which is what `expect`/`unwrap` do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fixtures;

pub mod build_runner;
pub mod build_store;
pub mod change_feed;
pub mod clock;
pub mod fact_store;
pub mod hook_registry;
pub mod hook_sink;
pub mod joint_writer;
pub mod message_queue;
pub mod queue_config;
pub mod queue_store;
pub mod read_model;
pub mod request_store;
pub mod source_control;
pub mod uri_store;

pub use fixtures::{
    Advance, FeedFixture, HookFixture, MqFixture, RunnerFixture, ScmCapabilities, ScmFixture,
    SinkFixture, StoreFixture,
};

use futures::FutureExt;
use futures::future::BoxFuture;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// One named case of a suite: an async check run on a fresh fixture.
pub struct Case<F> {
    pub name: &'static str,
    pub run: fn(F) -> BoxFuture<'static, ()>,
}

impl<F> std::fmt::Debug for Case<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(non-string panic)".to_owned())
}

/// Runs every case of `suite`, each on a fresh fixture, and panics once at
/// the end naming every case that failed (so one broken case does not hide
/// the others).
pub async fn run_cases<F, Fut>(suite: &str, cases: &[Case<F>], factory: impl Fn() -> Fut)
where
    Fut: Future<Output = F>,
{
    let mut failed = Vec::new();
    for case in cases {
        let fixture = factory().await;
        if let Err(panic) = AssertUnwindSafe((case.run)(fixture)).catch_unwind().await {
            failed.push(format!(
                "  {suite}::{}: {}",
                case.name,
                panic_message(panic.as_ref())
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "contract suite {suite}: {} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

/// Runs the case `name` of `suite` on a fresh fixture; the panic names it.
pub async fn run_one<F, Fut>(suite: &str, name: &str, cases: &[Case<F>], factory: impl Fn() -> Fut)
where
    Fut: Future<Output = F>,
{
    let case = cases
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("contract suite {suite} has no case {name:?}"));
    let fixture = factory().await;
    if let Err(panic) = AssertUnwindSafe((case.run)(fixture)).catch_unwind().await {
        panic!(
            "contract case {suite}::{name} failed: {}",
            panic_message(panic.as_ref())
        );
    }
}

/// Declares a suite module's `cases`, `run` and `run_case`, and exports a
/// macro that expands to one `#[tokio::test]` per case. `$d` is a literal
/// `$`, so the generated macro can have metavariables of its own.
macro_rules! suite {
    ($d:tt, $suite:ident, $tests:ident, $fixture:ty, [$($case:ident),* $(,)?]) => {
        /// Every case of this suite, in order.
        pub fn cases() -> Vec<$crate::Case<$fixture>> {
            vec![$($crate::Case {
                name: stringify!($case),
                run: |fx| ::futures::FutureExt::boxed($case(fx)),
            }),*]
        }

        /// Runs every case, each on a fresh fixture from `factory`; panics
        /// naming every failed case.
        pub async fn run<F, Fut>(factory: F)
        where
            F: Fn() -> Fut,
            Fut: ::std::future::Future<Output = $fixture>,
        {
            $crate::run_cases(stringify!($suite), &cases(), factory).await;
        }

        /// Runs one case by name on a fresh fixture.
        pub async fn run_case<F, Fut>(name: &str, factory: F)
        where
            F: Fn() -> Fut,
            Fut: ::std::future::Future<Output = $fixture>,
        {
            $crate::run_one(stringify!($suite), name, &cases(), factory).await;
        }

        #[doc = concat!("One `#[tokio::test]` per case of the `", stringify!($suite),
            "` suite, in a module of that name; the argument is the factory.")]
        #[macro_export]
        macro_rules! $tests {
            ($d factory:expr) => {
                mod $suite {
                    #[allow(unused_imports)]
                    use super::*;
                    $(
                        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $case() {
                            $crate::$suite::run_case(stringify!($case), $d factory).await;
                        }
                    )*
                }
            };
        }
    };
}
pub(crate) use suite;

/// One `#[tokio::test]` per case of the named suite:
/// `contract_tests!(message_queue, || async { … })`.
#[macro_export]
macro_rules! contract_tests {
    (request_store, $factory:expr) => {
        $crate::request_store_tests!($factory);
    };
    (uri_store, $factory:expr) => {
        $crate::uri_store_tests!($factory);
    };
    (queue_store, $factory:expr) => {
        $crate::queue_store_tests!($factory);
    };
    (build_store, $factory:expr) => {
        $crate::build_store_tests!($factory);
    };
    (fact_store, $factory:expr) => {
        $crate::fact_store_tests!($factory);
    };
    (joint_writer, $factory:expr) => {
        $crate::joint_writer_tests!($factory);
    };
    (read_model, $factory:expr) => {
        $crate::read_model_tests!($factory);
    };
    (queue_config, $factory:expr) => {
        $crate::queue_config_tests!($factory);
    };
    (message_queue, $factory:expr) => {
        $crate::message_queue_tests!($factory);
    };
    (change_feed, $factory:expr) => {
        $crate::change_feed_tests!($factory);
    };
    (hook_registry, $factory:expr) => {
        $crate::hook_registry_tests!($factory);
    };
    (clock, $factory:expr) => {
        $crate::clock_tests!($factory);
    };
    (source_control, $factory:expr) => {
        $crate::source_control_tests!($factory);
    };
    (build_runner, $factory:expr) => {
        $crate::build_runner_tests!($factory);
    };
    (hook_sink, $factory:expr) => {
        $crate::hook_sink_tests!($factory);
    };
}
