//! Ingest (pipeline.md, "ingest"): validate, resolve, dedup, ensure the
//! row, advance latest, publish process.

use stovepipe_app::{IngestError, IngestOutcome, IngestService};
use stovepipe_entity::{ChangeKind, Origin, Queue, Request, RequestState};
use stovepipe_ports::{ScmError, StoreError};

use crate::mocks::{
    Fixture, Journal, NOW, QUEUE_VERSION, T0, changes, process_message, queue, queue_name, request,
    rid, uri,
};

async fn ingest(
    f: Fixture,
    queue: &str,
    rev: Option<&str>,
) -> (Result<IngestOutcome, IngestError>, Journal) {
    let (deps, log) = f.deps();
    let out = IngestService::new(deps).ingest(queue, rev).await;
    (out, log)
}

/// The branch head is commit `n`.
fn head_is(f: &mut Fixture, n: u64) {
    f.scm.expect_latest().times(1).returning(move || Ok(uri(n)));
}

#[tokio::test]
async fn invalid_queue_name_is_rejected_before_any_call() {
    let too_long = "x".repeat(201);
    for bad in ["", "/main", "main/", "a//b", "a b", too_long.as_str()] {
        let (out, log) = ingest(Fixture::new(), bad, None).await;
        assert!(
            matches!(out, Err(IngestError::InvalidQueue(_))),
            "{bad:?}: {out:?}"
        );
        assert!(log.writes().is_empty());
    }
}

#[tokio::test]
async fn unknown_queue_is_reported() {
    let (out, log) = ingest(Fixture::new(), "other/main", None).await;
    assert_eq!(out, Err(IngestError::UnknownQueue("other/main".into())));
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn unknown_revision_is_reported() {
    let mut f = Fixture::new();
    f.scm
        .expect_resolve()
        .withf(|rev| rev == "deadbeef")
        .times(1)
        .returning(|_| Err(ScmError::NotFound("no commit deadbeef".into())));
    let (out, log) = ingest(f, "monorepo/main", Some("deadbeef")).await;
    assert_eq!(
        out,
        Err(IngestError::UnknownRevision {
            queue: "monorepo/main".into(),
            rev: "deadbeef".into(),
            detail: "no commit deadbeef".into(),
        })
    );
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn source_control_unavailable_is_unavailable() {
    let mut f = Fixture::new();
    f.scm
        .expect_latest()
        .times(1)
        .returning(|| Err(ScmError::Unavailable("fetch".into())));
    let (out, log) = ingest(f, "monorepo/main", None).await;
    assert!(matches!(out, Err(IngestError::Unavailable(_))), "{out:?}");
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn new_head_mints_indexes_creates_advances_and_publishes() {
    let mut f = Fixture::new();
    head_is(&mut f, 1);
    f.expect_mint(1);
    f.expect_queue_create();
    f.expect_joint();
    let (out, log) = ingest(f, "monorepo/main", None).await;
    assert_eq!(
        out,
        Ok(IngestOutcome {
            request_id: rid(1),
            uri: uri(1),
            state: RequestState::Accepted,
            created: true,
        })
    );
    let w = log.writes();
    assert_eq!(
        log.names(),
        ["request_uris.mint", "queues.create", "joint.write_all"],
        "a new queue has no latest request to dedup on; a minted id has no row to look for; \
         its row, latest and process are one write"
    );
    assert_eq!(
        w[0],
        crate::mocks::Write::Mint {
            uri: uri(1),
            id: rid(1)
        }
    );
    let crate::mocks::Write::QueueCreate { queue: created } = &w[1] else {
        panic!("{w:#?}")
    };
    assert_eq!(created, &Queue::new(queue_name(), NOW));

    let (r, expected) = w[2].joint_request();
    assert_eq!(expected, None, "a create");
    assert_eq!(
        r,
        &Request::accepted(rid(1), queue_name(), uri(1), Origin::Ingest, NOW)
    );
    assert_eq!(r.version, 1);
    let (advanced, expected) = w[2].joint_queue().unwrap();
    assert_eq!(expected, 1);
    assert_eq!(advanced.latest_request_id, Some(rid(1)));
    assert_eq!(advanced.version, 2);

    let outbox = w[2].joint().1;
    assert_eq!(
        changes(outbox),
        [(ChangeKind::RequestCreated, rid(1).to_string())]
    );
    let [message] = outbox.messages.as_slice() else {
        panic!("one process hop: {outbox:?}")
    };
    assert_eq!(message, &process_message(1));
    assert_eq!(message.partition_key, "monorepo/main", "partition = queue");
    assert_eq!(
        message.message_id, "request/monorepo/main/1",
        "message id = request id"
    );
}

#[tokio::test]
async fn new_head_on_an_existing_queue_only_moves_latest() {
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Processing))
        .with_queue(queue(Some(3), &[3], Some(1)));
    head_is(&mut f, 4);
    f.expect_mint(4);
    f.expect_joint();
    let (out, log) = ingest(f, "monorepo/main", None).await;
    assert!(out.unwrap().created);
    let w = log.writes();
    assert_eq!(
        log.names(),
        ["request_uris.mint", "joint.write_all"],
        "the latest request is of another commit: the head is minted"
    );
    let (q, expected) = w[1].joint_queue().unwrap();
    assert_eq!(expected, QUEUE_VERSION);
    let mut want = queue(Some(4), &[3], Some(1));
    want.version = QUEUE_VERSION + 1;
    want.updated_at = NOW;
    assert_eq!(q, &want);
    assert_eq!(w[1].joint().1.messages, [process_message(4)]);
}

/// A new request older than the latest one (ingested after it): latest
/// stays, and the process hop rides in the request's create alone.
#[tokio::test]
async fn new_request_behind_latest_is_created_with_its_hop_alone() {
    let mut f = Fixture::new().with_queue(queue(Some(5), &[], None));
    head_is(&mut f, 4);
    f.expect_mint(4);
    f.expect_joint();
    let (out, log) = ingest(f, "monorepo/main", None).await;
    assert!(out.unwrap().created);
    let w = log.writes();
    assert_eq!(log.names(), ["request_uris.mint", "joint.write_all"]);
    assert_eq!(w[1].joint_queue(), None, "latest does not move back");
    assert_eq!(w[1].joint_request().1, None);
    assert_eq!(w[1].joint().1.messages, [process_message(4)]);
}

#[tokio::test]
async fn explicit_revision_is_resolved_instead_of_latest() {
    let mut f = Fixture::new().with_queue(queue(Some(1), &[], None));
    f.scm
        .expect_resolve()
        .withf(|rev| rev == "abc123")
        .times(1)
        .returning(|_| Ok(uri(2)));
    f.expect_mint(2);
    f.expect_joint();
    let (out, _) = ingest(f, "monorepo/main", Some("abc123")).await;
    let out = out.unwrap();
    assert_eq!((out.request_id, out.uri), (rid(2), uri(2)));
}

/// A poller's common call: the head has not moved. The queue's latest
/// request is of that commit and answers without the URI index (which
/// the fixture leaves empty: a mint would fail the test).
#[tokio::test]
async fn head_polled_again_reuses_the_latest_request_without_minting() {
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(queue(Some(3), &[], None));
    head_is(&mut f, 3);
    f.expect_publish();
    let (out, log) = ingest(f, "monorepo/main", None).await;
    assert_eq!(
        out,
        Ok(IngestOutcome {
            request_id: rid(3),
            uri: uri(3),
            state: RequestState::Accepted,
            created: false,
        })
    );
    assert_eq!(
        log.names(),
        ["mq.publish"],
        "nothing numbered or indexed, no row, latest already there; process again (deduplicated by the queue)"
    );
    assert_eq!(log.writes()[0].published(), &process_message(3));
}

#[tokio::test]
async fn dedup_hit_past_accepted_does_not_publish_process() {
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Processing))
        .with_queue(queue(Some(3), &[3], None));
    head_is(&mut f, 3);
    let (out, log) = ingest(f, "monorepo/main", None).await;
    let out = out.unwrap();
    assert_eq!((out.state, out.created), (RequestState::Processing, false));
    assert!(log.writes().is_empty());
}

/// A mint that lost the race to index the URI answers the winner's id
/// (the store's contract); ingest takes it as it finds it, even when its
/// number is not the one the head would suggest.
#[tokio::test]
async fn a_mint_answering_another_request_adopts_it() {
    let winner = Request::accepted(rid(6), queue_name(), uri(7), Origin::Ingest, T0);
    // The latest request is a newer one (8), whose row is not kept: the
    // head goes to the mint.
    let mut f = Fixture::new()
        .with_uri_indexed(rid(6))
        .with_request(winner)
        .with_queue(queue(Some(8), &[], None));
    head_is(&mut f, 7);
    f.expect_publish();
    let (out, log) = ingest(f, "monorepo/main", None).await;
    assert_eq!(
        out,
        Ok(IngestOutcome {
            request_id: rid(6),
            uri: uri(7),
            state: RequestState::Accepted,
            created: false,
        })
    );
    assert_eq!(log.names(), ["mq.publish"], "no second row");
    assert_eq!(log.writes()[0].published(), &process_message(6));
}

/// An index entry written without its row (crash between the two) is
/// repaired by the next ingest of the same head.
#[tokio::test]
async fn indexed_uri_without_a_row_gets_its_row() {
    let mut f = Fixture::new()
        .with_uri_indexed(rid(4))
        .with_queue(queue(Some(3), &[], None));
    head_is(&mut f, 4);
    f.expect_request_create(Ok(()));
    f.expect_queue_update();
    let (out, log) = ingest(f, "monorepo/main", None).await;
    let out = out.unwrap();
    assert_eq!((out.request_id, out.created), (rid(4), false));
    assert_eq!(log.names(), ["requests.create", "queues.update"]);
    assert_eq!(
        log.writes()[1].queue_update().2.messages,
        [process_message(4)]
    );
}

#[tokio::test]
async fn request_row_created_concurrently_is_reread() {
    let mut f = Fixture::new().with_queue(queue(Some(4), &[], None));
    head_is(&mut f, 4);
    f.expect_mint(4);
    // A row for the id this call just minted (a racing writer): our create
    // finds it, and ingest reads it instead.
    let stored = request(4, RequestState::Processing);
    f.expect_joint_err(
        StoreError::AlreadyExists {
            entity: "request",
            key: rid(4).to_string(),
        },
        move |rows| *rows.request.lock().unwrap() = Some(stored.clone()),
    );
    let (out, log) = ingest(f, "monorepo/main", None).await;
    let out = out.unwrap();
    assert_eq!(
        (out.request_id, out.state, out.created),
        (rid(4), RequestState::Processing, true)
    );
    assert_eq!(
        log.names(),
        ["request_uris.mint", "joint.write_all"],
        "processing already: no process hop"
    );
}

#[tokio::test]
async fn older_head_does_not_move_latest_back() {
    let mut f = Fixture::new()
        .with_uri_indexed(rid(2))
        .with_request(request(2, RequestState::Accepted))
        .with_queue(queue(Some(5), &[], None));
    head_is(&mut f, 2);
    f.expect_publish();
    let (out, log) = ingest(f, "monorepo/main", None).await;
    assert_eq!(out.unwrap().request_id, rid(2));
    assert_eq!(log.names(), ["mq.publish"], "no queue write");
}

#[tokio::test]
async fn store_unavailable_is_unavailable() {
    let mut f = Fixture::new();
    head_is(&mut f, 1);
    f.uris
        .expect_mint()
        .times(1)
        .returning(|_| Err(StoreError::Unavailable("connection refused".into())));
    let (out, log) = ingest(f, "monorepo/main", None).await;
    assert!(
        matches!(&out, Err(IngestError::Unavailable(m)) if m.contains("connection refused")),
        "{out:?}"
    );
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn backend_error_is_internal() {
    let mut f = Fixture::new();
    head_is(&mut f, 1);
    f.uris
        .expect_mint()
        .times(1)
        .returning(|_| Err(StoreError::Backend("disk full".into())));
    let (out, _) = ingest(f, "monorepo/main", None).await;
    assert!(matches!(out, Err(IngestError::Internal(_))), "{out:?}");
}
