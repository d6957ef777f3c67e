//! [`GitScmFactory`]: the `SourceControlFactory` that hands each queue its
//! [`GitSourceControl`], one per queue, reused across calls so the
//! repository handle, the ancestry index and the history walks stay warm.
//! A queue whose repository, branch or promotion ref changed gets a fresh
//! adapter.

use crate::adapter::{GitOptions, GitSourceControl};
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use stovepipe_entity::{QueueConfig, QueueName};
use stovepipe_ports::{ScmError, SourceControl, SourceControlFactory};

/// What an adapter was opened from; a change means reopening.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    repo: String,
    branch: String,
    promotion_ref: Option<String>,
}

impl Binding {
    fn of(config: &QueueConfig) -> Self {
        Self {
            repo: config.repo.clone(),
            branch: config.branch.clone(),
            promotion_ref: config.promotion_ref.clone(),
        }
    }
}

/// Builds and caches the git `SourceControl` of each queue. Mirrors and
/// checkouts live under `data_dir`.
#[derive(Debug)]
pub struct GitScmFactory {
    data_dir: PathBuf,
    options: GitOptions,
    adapters: Mutex<HashMap<QueueName, (Binding, Arc<GitSourceControl>)>>,
}

impl GitScmFactory {
    pub fn new(data_dir: PathBuf) -> Self {
        Self::with_options(data_dir, GitOptions::default())
    }

    pub fn with_options(data_dir: PathBuf, options: GitOptions) -> Self {
        Self {
            data_dir,
            options,
            adapters: Mutex::new(HashMap::new()),
        }
    }

    /// The concrete adapter of a queue (what `for_queue` returns, typed).
    pub async fn git_for_queue(
        &self,
        config: &QueueConfig,
    ) -> Result<Arc<GitSourceControl>, ScmError> {
        let binding = Binding::of(config);
        if let Some(cached) = self.cached(&config.name, &binding) {
            return Ok(cached);
        }
        let (config_owned, data_dir, options) =
            (config.clone(), self.data_dir.clone(), self.options);
        let opened = tokio::task::spawn_blocking(move || {
            GitSourceControl::open_with(&config_owned, &data_dir, options)
        })
        .await
        .map_err(|e| ScmError::Backend(format!("git task failed: {e}")))??;
        let mut adapters = self.adapters.lock().unwrap_or_else(PoisonError::into_inner);
        // Another caller may have opened the same queue meanwhile: keep the
        // first so every caller shares one adapter.
        if let Some((b, existing)) = adapters.get(&config.name)
            && *b == binding
        {
            return Ok(Arc::clone(existing));
        }
        let opened = Arc::new(opened);
        adapters.insert(config.name.clone(), (binding, Arc::clone(&opened)));
        Ok(opened)
    }

    fn cached(&self, queue: &QueueName, binding: &Binding) -> Option<Arc<GitSourceControl>> {
        let adapters = self.adapters.lock().unwrap_or_else(PoisonError::into_inner);
        adapters
            .get(queue)
            .filter(|(b, _)| b == binding)
            .map(|(_, scm)| Arc::clone(scm))
    }
}

#[async_trait]
impl SourceControlFactory for GitScmFactory {
    async fn for_queue(&self, config: &QueueConfig) -> Result<Arc<dyn SourceControl>, ScmError> {
        let scm: Arc<dyn SourceControl> = self.git_for_queue(config).await?;
        Ok(scm)
    }
}
