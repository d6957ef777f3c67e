//! Every contract suite of `stovepipe-contract` against the SQL backend: one
//! test per case on SQLite (a temp-file database each) and on Postgres (a
//! schema each, when `STOVEPIPE_TEST_POSTGRES_URL` is set).
//!
//! The case lists are spelled out so each case is its own test; every
//! suite's `every_case_is_listed` fails when the contract crate gains a case
//! that is not listed here.

mod common;

use common::{Kind, TestDb};
use std::sync::Arc;
use stovepipe_contract::{FeedFixture, HookFixture, MqFixture, StoreFixture};

fn stores(db: &TestDb) -> StoreFixture {
    let b = db.backend.clone();
    StoreFixture {
        stores: b.clone(),
        read_model: b.clone(),
        feed: b.clone(),
        messages: b.clone(),
        hooks: b,
    }
}

fn mq(db: &TestDb) -> MqFixture {
    let clock = db.clock.clone();
    MqFixture {
        queue: db.backend.clone(),
        advance: Arc::new(move |d| clock.advance(d)),
    }
}

fn feed(db: &TestDb) -> FeedFixture {
    FeedFixture {
        feed: db.backend.clone(),
        live_buffer: common::FEED_BUFFER,
    }
}

fn hooks(db: &TestDb) -> HookFixture {
    HookFixture {
        hooks: db.backend.clone(),
        feed: db.backend.clone(),
    }
}

fn queue_configs(db: &TestDb) -> stovepipe_contract::queue_config::Fixture {
    db.backend.clone()
}

macro_rules! suite {
    ($suite:ident, $make:path, [$($case:ident),* $(,)?]) => {
        mod $suite {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn every_case_is_listed() {
                assert_eq!(
                    common::names(&stovepipe_contract::$suite::cases()),
                    [$(stringify!($case)),*],
                    "the contract suite's cases changed: update tests/contract.rs"
                );
            }

            mod sqlite {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        common::run_case(
                            Kind::Sqlite,
                            stovepipe_contract::$suite::cases(),
                            stringify!($case),
                            $make,
                        )
                        .await;
                    }
                )*
            }

            mod postgres {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        common::run_case(
                            Kind::Postgres,
                            stovepipe_contract::$suite::cases(),
                            stringify!($case),
                            $make,
                        )
                        .await;
                    }
                )*
            }
        }
    };
}

suite!(
    request_store,
    stores,
    [
        create_then_get_round_trips,
        get_unknown_is_none,
        duplicate_create_is_already_exists_and_keeps_the_first,
        update_with_expected_version_replaces_the_row,
        update_with_stale_version_is_mismatch_and_changes_nothing,
        update_of_missing_row_is_mismatch,
        successful_writes_commit_their_outbox,
        one_write_publishes_every_message_in_partition_order,
        failed_writes_commit_no_outbox,
        the_commit_hook_runs_once_at_commit_and_only_for_a_committed_write,
        hook_events_are_published_only_while_a_hook_is_live,
        entity_of_another_queue_is_wrong_queue,
        queues_are_isolated,
        concurrent_updates_from_one_version_have_one_winner,
    ]
);
suite!(
    uri_store,
    stores,
    [
        mint_numbers_from_one_and_then_finds_the_entry,
        mint_numbers_strictly_increase,
        concurrent_mints_of_distinct_uris_get_distinct_numbers,
        concurrent_mints_of_one_uri_index_it_once,
        mint_finds_an_entry_made_by_create,
        queues_number_independently,
        create_then_get,
        get_unindexed_is_none,
        indexed_uri_is_already_exists_and_keeps_the_first,
        request_id_of_another_queue_is_wrong_queue,
        queues_are_isolated,
    ]
);
suite!(
    queue_store,
    stores,
    [
        get_before_create_is_none,
        create_then_get,
        duplicate_create_is_already_exists,
        update_with_expected_version_commits_row_and_outbox,
        update_with_stale_version_is_mismatch_without_outbox,
        update_of_missing_row_is_mismatch,
        queue_of_another_name_is_wrong_queue,
    ]
);
suite!(
    build_store,
    stores,
    [
        create_then_get_and_unknown_is_none,
        duplicate_create_is_already_exists,
        update_is_a_conditional_write,
        update_of_missing_row_is_mismatch,
        outbox_commits_only_with_a_successful_write,
        list_for_request_is_oldest_first_and_only_that_request,
        entity_of_another_queue_is_wrong_queue,
        queues_are_isolated,
    ]
);
suite!(
    fact_store,
    stores,
    [
        create_then_get,
        get_without_fact_is_none,
        first_writer_wins,
        projects_are_distinct_facts,
        fact_of_another_queue_is_wrong_queue,
        queues_are_isolated,
    ]
);
suite!(
    joint_writer,
    stores,
    [
        every_write_and_the_outbox_commit_together,
        a_create_commits_with_the_updates,
        a_stale_update_writes_nothing,
        a_missing_row_is_a_mismatch_and_writes_nothing,
        a_taken_create_writes_nothing,
        a_create_beside_a_stale_update_writes_nothing,
        bad_lists_are_invalid_and_write_nothing,
        an_entity_of_another_queue_is_wrong_queue,
        concurrent_joint_writes_of_one_version_have_one_winner,
        joint_and_single_writes_of_one_row_have_one_winner,
    ]
);
suite!(
    read_model,
    stores,
    [
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
    ]
);
suite!(
    queue_config,
    queue_configs,
    [
        get_unknown_is_none,
        upsert_then_get,
        upsert_replaces_the_whole_configuration,
        list_is_ordered_by_name,
    ]
);
suite!(
    message_queue,
    mq,
    [
        publish_then_receive_delivers_attempt_one,
        duplicate_publish_is_deduplicated,
        same_id_in_another_partition_or_topic_is_distinct,
        partition_delivers_in_order_one_at_a_time,
        partitions_are_independent,
        receive_respects_max,
        hold_is_a_barrier_and_does_not_count_an_attempt,
        retry_counts_attempts_and_keeps_the_last_error,
        reject_dead_letters_and_copies_to_the_dlq_topic,
        reject_from_a_dlq_topic_only_parks_it,
        dead_letters_are_oldest_first_and_filter_by_topic,
        requeue_dead_letter_publishes_again_with_attempts_reset,
        purge_dead_letter_deletes_it,
        expired_lease_is_taken_over_and_the_old_holder_loses,
        expired_lease_counts_an_attempt_even_without_takeover,
        renew_extends_the_lease,
        concurrent_consumers_never_share_a_partition_head,
        concurrent_acks_each_get_their_own_answer,
        wake_makes_a_held_head_visible_now,
        wait_returns_promptly_after_a_publish,
        next_visible_at_reports_the_earliest_head,
    ]
);
suite!(
    change_feed,
    feed,
    [
        empty_log_has_no_sequence,
        sequence_increases_from_above_zero,
        read_after_pages_ascending,
        concurrent_appends_get_distinct_increasing_sequences,
        subscribe_yields_later_events_in_order,
        subscribers_share_each_event,
        slow_subscriber_gets_lagged_instead_of_a_gap,
    ]
);
suite!(
    hook_registry,
    hooks,
    [
        upsert_creates_then_is_unchanged_or_conflicts,
        concurrent_identical_upserts_never_fail,
        release_of_unknown_hook_is_not_found,
        releases_mint_versions_and_go_live,
        concurrent_identical_releases_mint_one_version,
        concurrent_distinct_releases_mint_versions_without_gaps,
        set_live_rolls_back_without_touching_history,
        resolve_live_matches_event_and_queue,
        record_run_is_idempotent_by_id,
        list_runs_is_newest_first,
        hooks_are_listed_by_name,
    ]
);
