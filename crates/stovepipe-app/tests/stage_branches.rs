//! Stage tests with mocks (quality.md, layer 2): one test per branch of each
//! stage algorithm in pipeline.md ("Stages"), asserting the exact writes
//! (store method, entity state and version, outbox), publishes, holds and
//! the retryable/permanent classification. Every port is a strict mockall
//! mock: a write the test did not expect panics, so "no write" is asserted
//! by setting no expectation.

mod mocks;

#[path = "stage_branches/build.rs"]
mod build;
#[path = "stage_branches/buildsignal.rs"]
mod buildsignal;
#[path = "stage_branches/dead_letter.rs"]
mod dead_letter;
#[path = "stage_branches/ingest.rs"]
mod ingest;
#[path = "stage_branches/process.rs"]
mod process;
#[path = "stage_branches/record.rs"]
mod record;
