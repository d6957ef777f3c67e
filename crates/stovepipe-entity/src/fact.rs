//! Facts: immutable greenness records, and culprits.

use crate::degree::Degree;
use crate::ids::{BuildId, RequestId, Uri};
use crate::names::{ProjectName, QueueName};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Identity of a fact: `(queue, uri, project)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FactKey {
    pub queue: QueueName,
    pub uri: Uri,
    pub project: ProjectName,
}

/// "Scope `project` of `queue` at `uri` has `degree`." Created once, first
/// writer wins; never updated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    pub queue: QueueName,
    pub uri: Uri,
    pub project: ProjectName,
    pub degree: Degree,
    pub request_id: RequestId,
    pub build_id: Option<BuildId>,
    pub created_at: Timestamp,
}

impl Fact {
    pub fn key(&self) -> FactKey {
        FactKey {
            queue: self.queue.clone(),
            uri: self.uri.clone(),
            project: self.project.clone(),
        }
    }

    pub fn is_green(&self) -> bool {
        self.degree.is_green()
    }
}

/// The first broken commit found by bisecting between a green baseline and a
/// broken head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Culprit {
    pub queue: QueueName,
    pub culprit_uri: Uri,
    pub last_green_uri: Uri,
    pub first_broken_uri: Uri,
    pub builds_used: u32,
    pub created_at: Timestamp,
}
