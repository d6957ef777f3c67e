//! Where runners read secrets and settings from: the process environment
//! (tokens) and `[queue.build] settings` (everything else).
//!
//! Tokens are looked up through [`Env`] rather than `std::env` directly so an
//! embedder or a test can supply them without mutating the process
//! environment (which is `unsafe` in edition 2024 and racy in tests).

use std::collections::BTreeMap;
use std::sync::Arc;
use stovepipe_entity::QueueConfig;
use stovepipe_ports::RunnerError;

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// A source of environment variables (API tokens).
#[derive(Clone)]
pub struct Env(Arc<Lookup>);

impl Env {
    /// The real process environment.
    pub fn process() -> Self {
        Self(Arc::new(|name| std::env::var(name).ok()))
    }

    /// A fixed set of variables (tests, embedders with their own secret store).
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        let map: BTreeMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self(Arc::new(move |name| map.get(name).cloned()))
    }

    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::process()
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print values: they are tokens.
        f.write_str("Env(..)")
    }
}

/// One queue's `[queue.build] settings`, with errors that name the key an
/// operator has to fix.
pub(crate) struct Settings<'a> {
    config: &'a QueueConfig,
}

impl<'a> Settings<'a> {
    pub(crate) fn of(config: &'a QueueConfig) -> Self {
        Self { config }
    }

    /// A non-empty setting, or `Config` naming `queue.build.settings.<key>`.
    pub(crate) fn required(&self, key: &str) -> Result<&'a str, RunnerError> {
        self.optional(key).ok_or_else(|| {
            RunnerError::Config(format!(
                "queue {}: missing queue.build.settings.{key} (required by the {} runner)",
                self.config.name,
                self.config.build.runner.as_str()
            ))
        })
    }

    /// A setting that is absent or empty is `None`.
    pub(crate) fn optional(&self, key: &str) -> Option<&'a str> {
        self.config
            .build
            .settings
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// A required setting used as a URL path segment and build id part:
    /// non-empty, without `/` or whitespace.
    pub(crate) fn segment(&self, key: &str) -> Result<&'a str, RunnerError> {
        let value = self.required(key)?;
        if value.contains('/') || value.chars().any(char::is_whitespace) {
            return Err(RunnerError::Config(format!(
                "queue {}: queue.build.settings.{key} = {value:?}: expected a single name \
                 without '/' or spaces",
                self.config.name
            )));
        }
        Ok(value)
    }

    /// The name of the variable holding the API token.
    pub(crate) fn token_var(&self, default_var: &'a str) -> &'a str {
        self.optional("token_env").unwrap_or(default_var)
    }

    /// The API token, read from the variable named by `token_env`.
    pub(crate) fn token(&self, env: &Env, default_var: &str) -> Result<String, RunnerError> {
        let var = self.optional("token_env").unwrap_or(default_var);
        env.get(var).filter(|t| !t.trim().is_empty()).ok_or_else(|| {
            RunnerError::Config(format!(
                "queue {}: environment variable {var} (queue.build.settings.token_env) is not set; \
                 the {} runner needs an API token",
                self.config.name,
                self.config.build.runner.as_str()
            ))
        })
    }

    /// The API base URL without a trailing slash.
    pub(crate) fn api_url(&self, default: &str) -> String {
        self.optional("api_url")
            .unwrap_or(default)
            .trim_end_matches('/')
            .to_owned()
    }
}
