//! The query side over the in-memory rows.
//!
//! Owns: ordering (requests by number, never by id text), filtering and
//! limits of the listings. Does not own: any write.

use super::{MemoryBackend, QueueData};
use async_trait::async_trait;
use stovepipe_entity::{
    Build, BuildId, Fact, ProjectName, Queue, QueueName, Request, RequestId, RequestState, Uri,
};
use stovepipe_ports::{CommitRecord, ReadModel, StoreError};

impl MemoryBackend {
    fn with_queue<T: Default>(&self, queue: &QueueName, f: impl FnOnce(&QueueData) -> T) -> T {
        self.shared
            .read(|st| st.queues.get(queue).map(f).unwrap_or_default())
    }
}

#[async_trait]
impl ReadModel for MemoryBackend {
    async fn queues(&self) -> Result<Vec<Queue>, StoreError> {
        Ok(self
            .shared
            .read(|st| st.queues.values().filter_map(|q| q.row.clone()).collect()))
    }

    async fn requests(
        &self,
        queue: &QueueName,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Request>, StoreError> {
        Ok(self.with_queue(queue, |q| {
            let upper = before.unwrap_or(u64::MAX);
            q.requests
                .range(..upper)
                .rev()
                .take(limit)
                .map(|(_, r)| r.clone())
                .collect()
        }))
    }

    async fn open_requests(
        &self,
        queue: &QueueName,
        limit: usize,
    ) -> Result<Vec<Request>, StoreError> {
        Ok(self.with_queue(queue, |q| {
            q.requests
                .values()
                .filter(|r| !r.state.is_terminal())
                .take(limit)
                .cloned()
                .collect()
        }))
    }

    async fn requests_missing_fact(
        &self,
        queue: &QueueName,
        limit: usize,
    ) -> Result<Vec<Request>, StoreError> {
        let whole = ProjectName::whole_repo();
        Ok(self.with_queue(queue, |q| {
            q.requests
                .values()
                .filter(|r| {
                    matches!(r.state, RequestState::Succeeded | RequestState::Failed)
                        && !r.failed_closed
                        && !q.facts.contains_key(&(r.uri.clone(), whole.clone()))
                })
                .take(limit)
                .cloned()
                .collect()
        }))
    }

    async fn requests_for_uris(
        &self,
        queue: &QueueName,
        uris: &[Uri],
    ) -> Result<Vec<Request>, StoreError> {
        Ok(self.with_queue(queue, |q| {
            q.requests
                .values()
                .filter(|r| uris.contains(&r.uri))
                .cloned()
                .collect()
        }))
    }

    async fn facts_for_uris(
        &self,
        queue: &QueueName,
        uris: &[Uri],
    ) -> Result<Vec<Fact>, StoreError> {
        Ok(self.with_queue(queue, |q| {
            q.facts
                .values()
                .filter(|f| uris.contains(&f.uri))
                .cloned()
                .collect()
        }))
    }

    async fn facts_of_request(
        &self,
        queue: &QueueName,
        request_id: &RequestId,
    ) -> Result<Vec<Fact>, StoreError> {
        Ok(self.with_queue(queue, |q| {
            q.facts
                .values()
                .filter(|f| &f.request_id == request_id)
                .cloned()
                .collect()
        }))
    }

    async fn find_build(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        Ok(self.shared.read(|st| {
            st.queues
                .values()
                .find_map(|q| q.builds.get(id).map(|(_, b)| b.clone()))
        }))
    }

    async fn commit_record(
        &self,
        queue: &QueueName,
        uri: &Uri,
        project: &ProjectName,
    ) -> Result<CommitRecord, StoreError> {
        Ok(self.with_queue(queue, |q| CommitRecord {
            fact: q.facts.get(&(uri.clone(), project.clone())).cloned(),
            request: q
                .uris
                .get(uri)
                .and_then(|id| q.requests.get(&id.number()))
                .filter(|r| &r.uri == uri)
                .cloned(),
        }))
    }
}
