//! Stovepipe's build runners: how a queue's validation builds are started,
//! watched and cancelled.
//!
//! Owns: the four [`BuildRunner`](stovepipe_ports::BuildRunner)
//! implementations a queue can pick with `[queue.build] runner`, and
//! [`CiRunnerFactory`], which builds (and caches) the right one per queue:
//!
//! - [`CommandRunner`] (`command`): runs `sh -c <command>` in a clean
//!   checkout on this machine, keeps a bounded log and survives restarts;
//! - [`ExternalRunner`] (`external`): the outside CI reports statuses through
//!   the API; the runner only mints ids;
//! - [`GithubActionsRunner`] (`github-actions`): workflow dispatch + run
//!   polling over the GitHub REST API;
//! - [`BuildkiteRunner`] (`buildkite`): build creation + polling over the
//!   Buildkite REST API.
//!
//! Does not own: checkouts and commit ids (the queue's `SourceControl`), the
//! build store, or deciding what a status means for greenness (the pipeline).

mod buildkite;
mod command;
mod env;
mod external;
mod factory;
mod github;
mod http;
mod scm;
mod targets;

pub use buildkite::BuildkiteRunner;
pub use command::{CommandRunner, DEFAULT_LOG_LIMIT, LOST_REASON};
pub use env::Env;
pub use external::ExternalRunner;
pub use factory::CiRunnerFactory;
pub use github::GithubActionsRunner;
pub use targets::parse_targets_report;
