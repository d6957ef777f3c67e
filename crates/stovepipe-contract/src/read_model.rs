//! Contract of `ReadModel`: the listings the API and reconcilers read.
//! Requests order by their *number*, never by id text (`…/10` is newer
//! than `…/9`); listings stay inside their queue.
//!
//! Does not own: writes (the store suites check those).

use crate::fixtures::{
    StoreFixture, T0, build, build_id, fact, project, queue_a, queue_b, request, request_for,
    request_id, uri,
};
use stovepipe_entity::{ProjectName, Queue, Request, RequestState};
use stovepipe_ports::Outbox;

crate::suite!($, read_model, read_model_tests, StoreFixture, [
    queues_are_listed_by_name,
    requests_are_newest_first_by_number,
    requests_before_cursor_pages_by_number,
    requests_stay_in_their_queue,
    open_requests_are_the_non_terminal_ones_oldest_first,
    requests_missing_fact_are_build_verdicts_without_whole_repo_fact,
    requests_for_uris_match_exactly,
    facts_for_uris_cover_every_project_of_the_queue,
    facts_of_request_are_only_that_requests,
    find_build_searches_every_queue,
]);

async fn put(fx: &StoreFixture, requests: &[Request]) {
    for r in requests {
        fx.stores
            .for_queue(&r.queue)
            .requests
            .create(r, Outbox::none())
            .await
            .unwrap();
    }
}

fn numbers(requests: &[Request]) -> Vec<u64> {
    requests.iter().map(|r| r.id.number()).collect()
}

fn in_state(n: u64, state: RequestState) -> Request {
    let mut r = request(&queue_a(), n);
    r.state = state;
    r
}

async fn queues_are_listed_by_name(fx: StoreFixture) {
    for q in [queue_b(), queue_a()] {
        fx.stores
            .for_queue(&q)
            .queues
            .create(&Queue::new(q.clone(), T0))
            .await
            .unwrap();
    }
    let names: Vec<_> = fx
        .read_model
        .queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, [queue_a(), queue_b()]);
}

async fn requests_are_newest_first_by_number(fx: StoreFixture) {
    let order = [3, 10, 1, 12, 9, 2, 11, 5, 4, 8, 6, 7];
    let rs: Vec<_> = order.iter().map(|n| request(&queue_a(), *n)).collect();
    put(&fx, &rs).await;
    let listed = fx.read_model.requests(&queue_a(), None, 100).await.unwrap();
    assert_eq!(
        numbers(&listed),
        [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1],
        "newest first by request number (request 10 before 9, not text order)"
    );
    let top = fx.read_model.requests(&queue_a(), None, 2).await.unwrap();
    assert_eq!(numbers(&top), [12, 11], "limit keeps the newest");
}

async fn requests_before_cursor_pages_by_number(fx: StoreFixture) {
    let rs: Vec<_> = (1..=11).map(|n| request(&queue_a(), n)).collect();
    put(&fx, &rs).await;
    let page = |before, limit| {
        let rm = fx.read_model.clone();
        async move { numbers(&rm.requests(&queue_a(), Some(before), limit).await.unwrap()) }
    };
    assert_eq!(page(11, 3).await, [10, 9, 8], "strictly below the cursor");
    assert_eq!(page(8, 3).await, [7, 6, 5]);
    assert_eq!(page(3, 10).await, [2, 1]);
    assert!(page(1, 10).await.is_empty());
}

async fn requests_stay_in_their_queue(fx: StoreFixture) {
    put(
        &fx,
        &[
            request(&queue_a(), 1),
            request(&queue_b(), 2),
            request(&queue_b(), 3),
        ],
    )
    .await;
    let a = fx.read_model.requests(&queue_a(), None, 10).await.unwrap();
    assert_eq!(a, [request(&queue_a(), 1)]);
    let open = fx.read_model.open_requests(&queue_a(), 10).await.unwrap();
    assert_eq!(open, [request(&queue_a(), 1)]);
}

async fn open_requests_are_the_non_terminal_ones_oldest_first(fx: StoreFixture) {
    put(
        &fx,
        &[
            in_state(10, RequestState::Accepted),
            in_state(2, RequestState::Superseded),
            in_state(9, RequestState::Accepted),
            in_state(3, RequestState::Processing),
            in_state(4, RequestState::Succeeded),
            in_state(5, RequestState::Failed),
            in_state(6, RequestState::Cancelled),
            in_state(1, RequestState::Accepted),
        ],
    )
    .await;
    let open = fx.read_model.open_requests(&queue_a(), 10).await.unwrap();
    assert_eq!(numbers(&open), [1, 3, 9, 10], "oldest first by number");
    let first_two = fx.read_model.open_requests(&queue_a(), 2).await.unwrap();
    assert_eq!(numbers(&first_two), [1, 3], "limit keeps the oldest");
}

async fn requests_missing_fact_are_build_verdicts_without_whole_repo_fact(fx: StoreFixture) {
    let mut closed = in_state(4, RequestState::Failed);
    closed.failed_closed = true;
    put(
        &fx,
        &[
            in_state(1, RequestState::Succeeded),
            in_state(2, RequestState::Succeeded),
            in_state(3, RequestState::Failed),
            closed,
            in_state(5, RequestState::Cancelled),
            in_state(6, RequestState::Processing),
            in_state(7, RequestState::Succeeded),
            in_state(8, RequestState::Superseded),
        ],
    )
    .await;
    let facts = fx.stores.for_queue(&queue_a()).facts;
    let whole = ProjectName::whole_repo();
    facts
        .create(
            &fact(&queue_a(), &uri("c1"), &whole, 0.0, 1),
            Outbox::none(),
        )
        .await
        .unwrap();
    // Only a project fact: the whole-repository fact is still missing.
    facts
        .create(
            &fact(&queue_a(), &uri("c7"), &project("payments"), 0.0, 7),
            Outbox::none(),
        )
        .await
        .unwrap();
    let mut missing = numbers(
        &fx.read_model
            .requests_missing_fact(&queue_a(), 10)
            .await
            .unwrap(),
    );
    missing.sort_unstable();
    assert_eq!(missing, [2, 3, 7]);
}

async fn requests_for_uris_match_exactly(fx: StoreFixture) {
    put(
        &fx,
        &[
            request_for(&queue_a(), 1, &uri("c1")),
            request_for(&queue_a(), 2, &uri("c2")),
            request_for(&queue_a(), 3, &uri("c3")),
            request_for(&queue_b(), 4, &uri("c1")),
        ],
    )
    .await;
    let mut found = numbers(
        &fx.read_model
            .requests_for_uris(&queue_a(), &[uri("c1"), uri("c3"), uri("c-unknown")])
            .await
            .unwrap(),
    );
    found.sort_unstable();
    assert_eq!(found, [1, 3]);
    assert!(
        fx.read_model
            .requests_for_uris(&queue_a(), &[])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn facts_for_uris_cover_every_project_of_the_queue(fx: StoreFixture) {
    let whole = ProjectName::whole_repo();
    let payments = project("payments");
    let a = fx.stores.for_queue(&queue_a()).facts;
    let b = fx.stores.for_queue(&queue_b()).facts;
    for f in [
        fact(&queue_a(), &uri("c1"), &whole, 0.0, 1),
        fact(&queue_a(), &uri("c1"), &payments, 1.0, 1),
        fact(&queue_a(), &uri("c2"), &whole, 0.0, 2),
        fact(&queue_a(), &uri("c3"), &whole, 0.0, 3),
    ] {
        a.create(&f, Outbox::none()).await.unwrap();
    }
    b.create(
        &fact(&queue_b(), &uri("c1"), &whole, 0.0, 1),
        Outbox::none(),
    )
    .await
    .unwrap();
    let mut found: Vec<_> = fx
        .read_model
        .facts_for_uris(&queue_a(), &[uri("c1"), uri("c2")])
        .await
        .unwrap()
        .into_iter()
        .map(|f| {
            assert_eq!(f.queue, queue_a(), "only facts of the queue");
            (f.uri.to_string(), f.project.to_string())
        })
        .collect();
    found.sort();
    let expect = |u: &str, p: &str| (uri(u).to_string(), p.to_owned());
    assert_eq!(
        found,
        [expect("c1", ""), expect("c1", "payments"), expect("c2", "")]
    );
}

async fn facts_of_request_are_only_that_requests(fx: StoreFixture) {
    let whole = ProjectName::whole_repo();
    let facts = fx.stores.for_queue(&queue_a()).facts;
    let mine = fact(&queue_a(), &uri("c1"), &whole, 0.0, 1);
    let mine_too = fact(&queue_a(), &uri("c1"), &project("payments"), 0.0, 1);
    let other = fact(&queue_a(), &uri("c2"), &whole, 0.0, 2);
    for f in [&mine, &other, &mine_too] {
        facts.create(f, Outbox::none()).await.unwrap();
    }
    let mut found: Vec<_> = fx
        .read_model
        .facts_of_request(&queue_a(), &request_id(&queue_a(), 1))
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.project.to_string())
        .collect();
    found.sort();
    assert_eq!(found, ["", "payments"]);
}

async fn find_build_searches_every_queue(fx: StoreFixture) {
    let in_a = build(&queue_a(), 1, "b-a");
    let in_b = build(&queue_b(), 1, "b-b");
    fx.stores
        .for_queue(&queue_a())
        .builds
        .create(&in_a, Outbox::none())
        .await
        .unwrap();
    fx.stores
        .for_queue(&queue_b())
        .builds
        .create(&in_b, Outbox::none())
        .await
        .unwrap();
    assert_eq!(
        fx.read_model.find_build(&in_a.id).await.unwrap(),
        Some(in_a)
    );
    assert_eq!(
        fx.read_model.find_build(&in_b.id).await.unwrap(),
        Some(in_b)
    );
    assert_eq!(
        fx.read_model.find_build(&build_id("b-none")).await.unwrap(),
        None
    );
}
