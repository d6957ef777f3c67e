//! The in-memory hook registry.
//!
//! Owns: hook identities, release version minting (decided under the state
//! lock, so concurrent identical releases mint one version and distinct ones
//! mint 1..N without gaps), the live pointer, and runs (idempotent by id,
//! each first record appending a `hook.run` change). Does not own: delivery
//! (see `RecordingHookSink`) or dispatch policy.

use super::MemoryBackend;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use stovepipe_entity::{
    ChangeKind, EventType, Hook, HookContract, HookName, HookRelease, HookReleaseSpec, HookRun,
    NewChange, QueueName, Timestamp,
};
use stovepipe_ports::{HookError, HookRegistry, ReleaseOutcome, StoreError, UpsertOutcome};

#[derive(Default)]
pub(crate) struct HookState {
    hooks: BTreeMap<HookName, HookData>,
    run_ids: HashMap<String, HookName>,
}

struct HookData {
    hook: Hook,
    /// Index i holds version i+1.
    releases: Vec<HookRelease>,
    /// In recording order.
    runs: Vec<HookRun>,
}

fn unknown_hook(name: &HookName) -> HookError {
    HookError::NotFound(format!("hook {name}"))
}

impl HookState {
    /// Whether some hook has a live release (hook events are published only
    /// then; see the store port's `Outbox`).
    pub(crate) fn any_live(&self) -> bool {
        self.hooks.values().any(|d| d.hook.live_version.is_some())
    }

    fn data(&self, name: &HookName) -> Result<&HookData, HookError> {
        self.hooks.get(name).ok_or_else(|| unknown_hook(name))
    }

    fn data_mut(&mut self, name: &HookName) -> Result<&mut HookData, HookError> {
        self.hooks.get_mut(name).ok_or_else(|| unknown_hook(name))
    }
}

#[async_trait]
impl HookRegistry for MemoryBackend {
    async fn upsert_hook(
        &self,
        name: &HookName,
        contract: &HookContract,
        now: Timestamp,
    ) -> Result<(Hook, UpsertOutcome), HookError> {
        self.shared.write(|st, _| {
            if let Some(existing) = st.hooks.hooks.get(name) {
                return if &existing.hook.contract == contract {
                    Ok((existing.hook.clone(), UpsertOutcome::Unchanged))
                } else {
                    Err(HookError::ContractConflict(name.to_string()))
                };
            }
            let hook = Hook {
                name: name.clone(),
                contract: contract.clone(),
                live_version: None,
                created_at: now,
            };
            st.hooks.hooks.insert(
                name.clone(),
                HookData {
                    hook: hook.clone(),
                    releases: Vec::new(),
                    runs: Vec::new(),
                },
            );
            Ok((hook, UpsertOutcome::Created))
        })
    }

    async fn create_release(
        &self,
        name: &HookName,
        spec: &HookReleaseSpec,
        created_by: &str,
        now: Timestamp,
    ) -> Result<ReleaseOutcome, HookError> {
        spec.validate()?;
        let digest = spec.digest();
        self.shared.write(|st, _| {
            let data = st.hooks.data_mut(name)?;
            if let Some(existing) = data.releases.iter().find(|r| r.digest == digest) {
                return Ok(ReleaseOutcome {
                    release: existing.clone(),
                    created: false,
                });
            }
            let version = u32::try_from(data.releases.len() + 1)
                .map_err(|_| StoreError::Backend(format!("hook {name}: too many releases")))?;
            let release = HookRelease {
                hook: name.clone(),
                version,
                spec: spec.clone(),
                digest,
                created_by: created_by.to_owned(),
                created_at: now,
            };
            data.releases.push(release.clone());
            data.hook.live_version = Some(version);
            Ok(ReleaseOutcome {
                release,
                created: true,
            })
        })
    }

    async fn set_live(&self, name: &HookName, version: u32) -> Result<Hook, HookError> {
        self.shared.write(|st, _| {
            let data = st.hooks.data_mut(name)?;
            if version == 0 || version as usize > data.releases.len() {
                return Err(HookError::NotFound(format!(
                    "hook {name} version {version}"
                )));
            }
            data.hook.live_version = Some(version);
            Ok(data.hook.clone())
        })
    }

    async fn get(&self, name: &HookName) -> Result<Option<Hook>, HookError> {
        Ok(self
            .shared
            .read(|st| st.hooks.hooks.get(name).map(|d| d.hook.clone())))
    }

    async fn list(&self) -> Result<Vec<Hook>, HookError> {
        Ok(self
            .shared
            .read(|st| st.hooks.hooks.values().map(|d| d.hook.clone()).collect()))
    }

    async fn list_releases(&self, name: &HookName) -> Result<Vec<HookRelease>, HookError> {
        self.shared.read(|st| {
            Ok(st
                .hooks
                .data(name)?
                .releases
                .iter()
                .rev()
                .cloned()
                .collect())
        })
    }

    async fn get_release(
        &self,
        name: &HookName,
        version: u32,
    ) -> Result<Option<HookRelease>, HookError> {
        Ok(self.shared.read(|st| {
            let data = st.hooks.hooks.get(name)?;
            let index = usize::try_from(version).ok()?.checked_sub(1)?;
            data.releases.get(index).cloned()
        }))
    }

    async fn resolve_live(
        &self,
        event: EventType,
        queue: Option<QueueName>,
    ) -> Result<Vec<(Hook, HookRelease)>, HookError> {
        Ok(self.shared.read(|st| {
            st.hooks
                .hooks
                .values()
                .filter(|d| d.hook.contract.matches(event, queue.as_ref()))
                .filter_map(|d| {
                    let live = d.hook.live_version?;
                    let release = d.releases.get(live as usize - 1)?;
                    Some((d.hook.clone(), release.clone()))
                })
                .collect()
        }))
    }

    async fn record_run(&self, run: &HookRun) -> Result<bool, HookError> {
        self.shared.write(|st, now| {
            if st.hooks.run_ids.contains_key(&run.id) {
                return Ok(false);
            }
            let data = st.hooks.data_mut(&run.hook)?;
            data.runs.push(run.clone());
            st.hooks.run_ids.insert(run.id.clone(), run.hook.clone());
            let change = NewChange {
                queue: None,
                kind: ChangeKind::HookRun,
                subject: run.id.clone(),
                data: serde_json::to_value(run).unwrap_or(serde_json::Value::Null),
            };
            st.append_changes(vec![change], now);
            Ok(true)
        })
    }

    async fn list_runs(&self, name: &HookName, limit: usize) -> Result<Vec<HookRun>, HookError> {
        self.shared.read(|st| {
            let mut runs: Vec<(usize, &HookRun)> =
                st.hooks.data(name)?.runs.iter().enumerate().collect();
            // Newest first: by start time, then by recording order.
            runs.sort_by(|(ia, a), (ib, b)| (b.started_at, ib).cmp(&(a.started_at, ia)));
            Ok(runs
                .into_iter()
                .take(limit)
                .map(|(_, r)| r.clone())
                .collect())
        })
    }
}
