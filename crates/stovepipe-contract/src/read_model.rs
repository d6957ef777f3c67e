//! Contract of `ReadModel`: the listings the API and reconcilers read.
//! Requests order by their *number*, never by id text (`…/10` is newer
//! than `…/9`); listings stay inside their queue.
//!
//! Does not own: writes (the store suites check those).

use crate::fixtures::{
    StoreFixture, T0, build, build_id, fact, project, queue_a, queue_b, request, request_for,
    request_id, uri,
};
use stovepipe_entity::{BuildStrategy, ProjectName, Queue, Request, RequestState, Timestamp};
use stovepipe_ports::{CommitRecord, Outbox};

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
    commit_record_is_the_fact_of_the_project_and_the_indexed_request,
    commit_record_of_an_unknown_commit_is_empty,
    commit_record_request_comes_from_the_uri_index_only,
    commit_record_stays_in_its_queue,
    commit_record_reads_the_current_request,
    commit_records_read_at_once_are_each_their_own,
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

/// Indexes `r`'s URI to it and stores it, as ingest does.
async fn ingested(fx: &StoreFixture, r: &Request) {
    let s = fx.stores.for_queue(&r.queue);
    s.request_uris.create(&r.uri, &r.id).await.unwrap();
    s.requests.create(r, Outbox::none()).await.unwrap();
}

async fn commit_record_is_the_fact_of_the_project_and_the_indexed_request(fx: StoreFixture) {
    // Every optional column set, so the record decodes all of them.
    let mut r = request(&queue_a(), 7);
    r.state = RequestState::Failed;
    r.failed_closed = true;
    r.failure_reason = Some("runner vanished".to_owned());
    r.build_strategy = Some(BuildStrategy::IncrementalSinceGreen);
    r.base_uri = Some(uri("c3"));
    r.updated_at = Timestamp(T0.0 + 99);
    r.version = 4;
    ingested(&fx, &r).await;
    let whole = ProjectName::whole_repo();
    let mut whole_fact = fact(&queue_a(), &r.uri, &whole, 0.25, 7);
    whole_fact.build_id = Some(build_id("b-7"));
    let payments_fact = fact(&queue_a(), &r.uri, &project("payments"), 1.0, 7);
    let facts = fx.stores.for_queue(&queue_a()).facts;
    for f in [&whole_fact, &payments_fact] {
        facts.create(f, Outbox::none()).await.unwrap();
    }
    let record = |p: ProjectName| {
        let rm = fx.read_model.clone();
        let u = r.uri.clone();
        async move { rm.commit_record(&queue_a(), &u, &p).await.unwrap() }
    };
    assert_eq!(
        record(whole.clone()).await,
        CommitRecord {
            fact: Some(whole_fact),
            request: Some(r.clone()),
        },
        "the whole-repository fact and the request, every field as stored"
    );
    assert_eq!(
        record(project("payments")).await,
        CommitRecord {
            fact: Some(payments_fact),
            request: Some(r.clone()),
        },
        "the asked project's fact"
    );
    assert_eq!(
        record(project("web")).await,
        CommitRecord {
            fact: None,
            request: Some(r),
        },
        "no fact for a project without one, the request all the same"
    );
}

async fn commit_record_of_an_unknown_commit_is_empty(fx: StoreFixture) {
    let whole = ProjectName::whole_repo();
    assert_eq!(
        fx.read_model
            .commit_record(&queue_a(), &uri("c-unknown"), &whole)
            .await
            .unwrap(),
        CommitRecord::default(),
        "nothing stored: an empty record, not an error"
    );
    // A fact without a request (nothing indexed its URI).
    let f = fact(&queue_a(), &uri("c2"), &whole, 1.0, 2);
    fx.stores
        .for_queue(&queue_a())
        .facts
        .create(&f, Outbox::none())
        .await
        .unwrap();
    assert_eq!(
        fx.read_model
            .commit_record(&queue_a(), &uri("c2"), &whole)
            .await
            .unwrap(),
        CommitRecord {
            fact: Some(f),
            request: None,
        }
    );
}

async fn commit_record_request_comes_from_the_uri_index_only(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let whole = ProjectName::whole_repo();
    let record = |c: &'static str| {
        let rm = fx.read_model.clone();
        let w = whole.clone();
        async move { rm.commit_record(&queue_a(), &uri(c), &w).await.unwrap() }
    };
    // Stored but not indexed.
    put(&fx, &[request(&queue_a(), 1)]).await;
    assert_eq!(record("c1").await.request, None, "unindexed URI");
    // Indexed, not stored yet (ingest indexes before it stores).
    s.request_uris
        .create(&uri("c2"), &request_id(&queue_a(), 2))
        .await
        .unwrap();
    assert_eq!(
        record("c2").await.request,
        None,
        "indexed request not stored"
    );
    put(&fx, &[request(&queue_a(), 2)]).await;
    assert_eq!(
        record("c2").await.request,
        Some(request(&queue_a(), 2)),
        "found once stored"
    );
    // Indexed to a request of another commit.
    s.request_uris
        .create(&uri("c9"), &request_id(&queue_a(), 1))
        .await
        .unwrap();
    assert_eq!(
        record("c9").await.request,
        None,
        "never another commit's request"
    );
}

async fn commit_record_stays_in_its_queue(fx: StoreFixture) {
    let whole = ProjectName::whole_repo();
    let theirs = request(&queue_b(), 1);
    ingested(&fx, &theirs).await;
    fx.stores
        .for_queue(&queue_b())
        .facts
        .create(
            &fact(&queue_b(), &theirs.uri, &whole, 1.0, 1),
            Outbox::none(),
        )
        .await
        .unwrap();
    assert_eq!(
        fx.read_model
            .commit_record(&queue_a(), &theirs.uri, &whole)
            .await
            .unwrap(),
        CommitRecord::default(),
        "queue b's fact and request are not queue a's"
    );
    let mine = request(&queue_a(), 1);
    ingested(&fx, &mine).await;
    assert_eq!(
        fx.read_model
            .commit_record(&queue_a(), &mine.uri, &whole)
            .await
            .unwrap(),
        CommitRecord {
            fact: None,
            request: Some(mine),
        }
    );
}

async fn commit_record_reads_the_current_request(fx: StoreFixture) {
    let whole = ProjectName::whole_repo();
    let mut r = request(&queue_a(), 1);
    ingested(&fx, &r).await;
    let read = || {
        let rm = fx.read_model.clone();
        let (u, w) = (r.uri.clone(), whole.clone());
        async move { rm.commit_record(&queue_a(), &u, &w).await.unwrap() }
    };
    assert_eq!(
        read().await.request.map(|r| r.state),
        Some(RequestState::Accepted)
    );
    let s = fx.stores.for_queue(&queue_a());
    let expected = r.version;
    r.state = RequestState::Processing;
    r.version += 1;
    s.requests
        .update(&r, expected, Outbox::none())
        .await
        .unwrap();
    assert_eq!(
        read().await.request,
        Some(r.clone()),
        "the request as it is now, not as it was first read"
    );
    let f = fact(&queue_a(), &r.uri, &whole, 1.0, 1);
    s.facts.create(&f, Outbox::none()).await.unwrap();
    assert_eq!(read().await.fact, Some(f), "a fact recorded since");
}

/// Many commit records read at once (a backend may answer them in one
/// statement) are each the record of its own key, in whatever order they
/// come back.
async fn commit_records_read_at_once_are_each_their_own(fx: StoreFixture) {
    let whole = ProjectName::whole_repo();
    let mut expected = Vec::new();
    for n in 1..=12_u64 {
        let r = request(&queue_a(), n);
        let c = format!("c{n}");
        // Requests 1 to 8; a fact for each even one; 9 to 12 unknown.
        let stored = (n <= 8).then(|| r.clone());
        if stored.is_some() {
            ingested(&fx, &r).await;
        }
        let f = (n % 2 == 0 && n <= 8).then(|| fact(&queue_a(), &r.uri, &whole, 1.0, n));
        if let Some(f) = &f {
            let facts = fx.stores.for_queue(&queue_a()).facts;
            facts.create(f, Outbox::none()).await.unwrap();
        }
        expected.push((
            queue_a(),
            c.clone(),
            CommitRecord {
                fact: f,
                request: stored,
            },
        ));
        // The same commit in another queue: nothing there.
        expected.push((queue_b(), c, CommitRecord::default()));
    }
    let reads = expected.iter().map(|(q, c, _)| {
        let (rm, w) = (fx.read_model.clone(), whole.clone());
        async move { rm.commit_record(q, &uri(c), &w).await.unwrap() }
    });
    let records = futures::future::join_all(reads).await;
    for ((q, c, want), got) in expected.iter().zip(&records) {
        assert_eq!(got, want, "{q} {c}");
    }
}
