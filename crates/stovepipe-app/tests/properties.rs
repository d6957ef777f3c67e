//! Property: for random interleavings of ingests, build outcomes and time,
//! every request ends terminal, the slots return to empty, the bookmark is
//! the newest green head in ingest order, the newest head is always
//! validated, and no fact is ever written twice.

mod support;

use proptest::prelude::*;
use std::collections::HashSet;
use stovepipe_entity::{BuildStatus, ChangeKind, RequestState};
use support::World;

#[derive(Debug, Clone)]
enum Action {
    /// Push a commit whose build succeeds (true) or fails, and ingest it.
    Push(bool),
    /// Ingest the current head again (a poller noticing nothing new).
    Reingest,
    /// Handle what is visible now.
    Step,
    /// Move time to the next pending message.
    Tick,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => any::<bool>().prop_map(Action::Push),
        1 => Just(Action::Reingest),
        2 => Just(Action::Step),
        2 => Just(Action::Tick),
    ]
}

async fn check(max_concurrent: u32, polls: u32, actions: Vec<Action>) -> Result<(), TestCaseError> {
    let w = World::new(|c| c.max_concurrent = max_concurrent).await;
    w.runner.set_polls_before_finish(polls);
    let mut pushed = 0;
    for a in actions {
        match a {
            Action::Push(green) => {
                pushed += 1;
                let uri = w.push(&format!("c{pushed}"));
                if !green {
                    w.runner.set_outcome(&uri, BuildStatus::Failed);
                }
                w.ingest().await;
            }
            Action::Reingest if pushed > 0 => {
                w.ingest().await;
            }
            Action::Reingest => {}
            Action::Step => w.step().await,
            Action::Tick => {
                w.tick().await;
            }
        }
    }
    w.settle().await;

    let requests = w.all_requests().await;
    prop_assert_eq!(requests.len(), pushed, "one request per pushed head");
    for r in &requests {
        prop_assert!(r.state.is_terminal(), "{} ended {}", r.id, r.state);
        prop_assert!(
            !r.failed_closed,
            "{} failed closed: {:?}",
            r.id,
            r.failure_reason
        );
    }
    if pushed == 0 {
        return Ok(());
    }
    let q = w.queue_row().await;
    prop_assert_eq!(q.in_flight_count(), 0);

    // Facts: one per validated request, never rewritten.
    let mut newest_green = None;
    for r in &requests {
        let fact = w.fact(&r.uri).await;
        if r.state.has_build_outcome() {
            let Some(fact) = fact else {
                return Err(TestCaseError::fail(format!(
                    "validated {} has no fact",
                    r.id
                )));
            };
            prop_assert_eq!(&fact.request_id, &r.id);
            prop_assert_eq!(fact.is_green(), r.state == RequestState::Succeeded);
            if fact.is_green() {
                newest_green = Some(r.uri.clone());
            }
        } else {
            prop_assert!(fact.is_none(), "skipped {} has no fact", r.id);
        }
    }
    let recorded: Vec<_> = w
        .changes()
        .await
        .into_iter()
        .filter(|c| c.kind == ChangeKind::ValidationRecorded)
        .map(|c| c.subject)
        .collect();
    let distinct: HashSet<_> = recorded.iter().collect();
    prop_assert_eq!(distinct.len(), recorded.len(), "a fact recorded twice");

    prop_assert_eq!(
        q.last_green.as_ref().map(|b| b.uri.clone()),
        newest_green.clone()
    );
    prop_assert_eq!(w.repo.promoted(), newest_green);
    if let Some(newest) = requests.last() {
        prop_assert!(
            newest.state.has_build_outcome(),
            "the newest head {} is always validated",
            newest.id
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_converge(
        max_concurrent in 1u32..=3,
        polls in 0u32..=2,
        actions in proptest::collection::vec(action(), 1..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check(max_concurrent, polls, actions))?;
    }
}
