//! Runs every contract suite against the memory adapters: one test per
//! case, each on a fresh backend.

use std::sync::Arc;
use stovepipe_adapter_memory::{ManualClock, MemoryBackend};
use stovepipe_contract::{FeedFixture, HookFixture, MqFixture, StoreFixture, contract_tests};
use stovepipe_ports::{Clock, SystemClock};

/// Small enough for the lag case to overflow quickly.
const FEED_BUFFER: usize = 8;

fn backend() -> (Arc<MemoryBackend>, ManualClock) {
    let clock = ManualClock::default();
    let backend = MemoryBackend::with_feed_buffer(Arc::new(clock.clone()), FEED_BUFFER);
    (backend, clock)
}

async fn stores() -> StoreFixture {
    let (b, _) = backend();
    StoreFixture {
        stores: b.clone(),
        read_model: b.clone(),
        feed: b.clone(),
        messages: b.clone(),
        hooks: b,
    }
}

async fn mq() -> MqFixture {
    let (b, clock) = backend();
    MqFixture {
        queue: b,
        advance: Arc::new(move |d| clock.advance(d)),
    }
}

async fn feed() -> FeedFixture {
    let (b, _) = backend();
    FeedFixture {
        feed: b,
        live_buffer: FEED_BUFFER,
    }
}

async fn hooks() -> HookFixture {
    let (b, _) = backend();
    HookFixture {
        hooks: b.clone(),
        feed: b,
    }
}

async fn queue_configs() -> stovepipe_contract::queue_config::Fixture {
    backend().0
}

async fn manual_clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::default())
}

contract_tests!(request_store, stores);
contract_tests!(uri_store, stores);
contract_tests!(queue_store, stores);
contract_tests!(build_store, stores);
contract_tests!(fact_store, stores);
contract_tests!(joint_writer, stores);
contract_tests!(read_model, stores);
contract_tests!(queue_config, queue_configs);
contract_tests!(message_queue, mq);
contract_tests!(change_feed, feed);
contract_tests!(hook_registry, hooks);
contract_tests!(clock, manual_clock);

/// The whole-suite runner works too, and the system clock passes.
#[tokio::test]
async fn system_clock_and_whole_suite_runner() {
    stovepipe_contract::clock::run(|| async { Arc::new(SystemClock::default()) as Arc<dyn Clock> })
        .await;
    stovepipe_contract::uri_store::run(stores).await;
}

// --- source control, build runner, hook sink --------------------------------

#[allow(
    clippy::expect_used,
    reason = "fixture set-up panics on a broken setup, as the tests do"
)]
mod scm {
    use async_trait::async_trait;
    use std::sync::Arc;
    use stovepipe_adapter_memory::{
        CommitSpec, DEFAULT_PROMOTION_REF, ScriptedRepo, ScriptedScmFactory,
    };
    use stovepipe_contract::{ScmFixture, fixtures};
    use stovepipe_entity::{QueueConfig, Uri};
    use stovepipe_ports::{SourceControl, SourceControlFactory};

    /// A scripted repository, served directly or through the factory.
    pub struct Repo {
        repo: ScriptedRepo,
        factory: Option<ScriptedScmFactory>,
    }

    /// The commit name of a `mem://<queue>/<name>` URI.
    fn name_of(uri: &Uri) -> String {
        uri.as_str()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    #[async_trait]
    impl ScmFixture for Repo {
        async fn commit(&self, name: &str, parents: &[&str], files: &[(&str, &str)]) {
            self.repo
                .commit_with(name, parents, CommitSpec::files(files));
        }

        async fn set_head(&self, name: &str) {
            self.repo.set_head(name);
        }

        fn id(&self, name: &str) -> String {
            name.to_owned()
        }

        async fn source_control(&self) -> Arc<dyn SourceControl> {
            match &self.factory {
                None => Arc::new(self.repo.clone()),
                Some(factory) => {
                    let mut config =
                        QueueConfig::new(self.repo.queue().clone(), "scripted", "main");
                    config.promotion_ref = Some(DEFAULT_PROMOTION_REF.to_owned());
                    factory
                        .for_queue(&config)
                        .await
                        .expect("the scripted queue")
                }
            }
        }

        async fn promotion_target(&self) -> Option<String> {
            self.repo.promoted().as_ref().map(name_of)
        }

        async fn ref_target(&self, reference: &str) -> Option<String> {
            self.repo.ref_target(reference).as_ref().map(name_of)
        }
    }

    pub async fn direct() -> Arc<dyn ScmFixture> {
        Arc::new(Repo {
            repo: ScriptedRepo::new(fixtures::queue_a()),
            factory: None,
        })
    }

    pub async fn via_factory() -> Arc<dyn ScmFixture> {
        let repo = ScriptedRepo::new(fixtures::queue_a());
        let factory = ScriptedScmFactory::new().with(repo.clone());
        Arc::new(Repo {
            repo,
            factory: Some(factory),
        })
    }
}

mod runner {
    use async_trait::async_trait;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use stovepipe_adapter_memory::ScriptedBuildRunner;
    use stovepipe_contract::{RunnerFixture, fixtures};
    use stovepipe_entity::BuildStatus;
    use stovepipe_ports::{BuildRunner, TriggerRequest};

    /// A scripted runner; each head gets its own outcome.
    pub struct Runner {
        runner: ScriptedBuildRunner,
        heads: AtomicU64,
    }

    impl Runner {
        fn next_head(&self) -> TriggerRequest {
            let n = self.heads.fetch_add(1, Ordering::Relaxed);
            fixtures::trigger(fixtures::uri(&format!("head{n}")))
        }
    }

    #[async_trait]
    impl RunnerFixture for Runner {
        fn runner(&self) -> Arc<dyn BuildRunner> {
            Arc::new(self.runner.clone())
        }

        async fn head(&self, outcome: BuildStatus) -> TriggerRequest {
            let request = self.next_head();
            self.runner.set_outcome(&request.head, outcome);
            request
        }

        async fn slow_head(&self) -> TriggerRequest {
            let request = self.next_head();
            self.runner.set_never_finishes(&request.head);
            request
        }
    }

    fn fixture(runner: ScriptedBuildRunner) -> Arc<dyn RunnerFixture> {
        Arc::new(Runner {
            runner,
            heads: AtomicU64::new(0),
        })
    }

    pub async fn polled() -> Arc<dyn RunnerFixture> {
        let runner = ScriptedBuildRunner::new();
        // Builds run for a few polls, as real ones do.
        runner.set_polls_before_finish(2);
        fixture(runner)
    }

    pub async fn reported_via_api() -> Arc<dyn RunnerFixture> {
        let runner = ScriptedBuildRunner::new();
        runner.set_reports_via_api(true);
        fixture(runner)
    }
}

mod sink {
    use async_trait::async_trait;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use stovepipe_adapter_memory::RecordingHookSink;
    use stovepipe_contract::SinkFixture;
    use stovepipe_entity::EventEnvelope;
    use stovepipe_ports::{DeliveryOutcome, HookSink};

    /// A recording sink; a URL's script is what an HTTP receiver answering
    /// those statuses would make of them.
    pub struct Sink {
        sink: RecordingHookSink,
        urls: AtomicU64,
    }

    fn outcome(status: u16) -> DeliveryOutcome {
        match status {
            200..=299 => DeliveryOutcome::Delivered { status },
            408 | 429 | 500..=599 => DeliveryOutcome::Retryable {
                status: Some(status),
                error: format!("receiver answered {status}"),
            },
            _ => DeliveryOutcome::Failed {
                status: Some(status),
                error: format!("receiver answered {status}"),
            },
        }
    }

    #[async_trait]
    impl SinkFixture for Sink {
        fn sink(&self) -> Arc<dyn HookSink> {
            Arc::new(self.sink.clone())
        }

        async fn url_answering(&self, statuses: &[u16]) -> String {
            let n = self.urls.fetch_add(1, Ordering::Relaxed);
            let url = format!("http://receiver.invalid/hook/{n}");
            self.sink.script(&url, statuses.iter().map(|s| outcome(*s)));
            url
        }

        async fn received(&self, url: &str) -> Vec<EventEnvelope> {
            self.sink.deliveries_to(url)
        }
    }

    pub async fn recording() -> Arc<dyn SinkFixture> {
        Arc::new(Sink {
            sink: RecordingHookSink::new(),
            urls: AtomicU64::new(0),
        })
    }
}

mod direct_repo {
    use super::scm;
    stovepipe_contract::contract_tests!(source_control, scm::direct);
}

mod factory_repo {
    use super::scm;
    stovepipe_contract::contract_tests!(source_control, scm::via_factory);
}

mod polled_runner {
    use super::runner;
    stovepipe_contract::contract_tests!(build_runner, runner::polled);
}

mod api_reported_runner {
    use super::runner;
    stovepipe_contract::contract_tests!(build_runner, runner::reported_via_api);
}

contract_tests!(hook_sink, sink::recording);
