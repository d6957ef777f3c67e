//! Contract of `QueueConfigStore`: get/list/upsert of operator
//! configuration; upsert replaces the whole configuration.
//!
//! Does not own: parsing configuration files (the server does).

use crate::fixtures::{queue, queue_a, queue_b};
use std::sync::Arc;
use std::time::Duration;
use stovepipe_entity::QueueConfig;
use stovepipe_ports::QueueConfigStore;

/// The queue configuration suite runs against the store alone.
pub type Fixture = Arc<dyn QueueConfigStore>;

crate::suite!($, queue_config, queue_config_tests, Fixture, [
    get_unknown_is_none,
    upsert_then_get,
    upsert_replaces_the_whole_configuration,
    list_is_ordered_by_name,
]);

async fn get_unknown_is_none(store: Fixture) {
    assert_eq!(store.get(&queue_a()).await.unwrap(), None);
    assert!(store.list().await.unwrap().is_empty());
}

async fn upsert_then_get(store: Fixture) {
    let c = QueueConfig::new(queue_a(), "/srv/repo", "main");
    store.upsert(&c).await.unwrap();
    assert_eq!(store.get(&queue_a()).await.unwrap(), Some(c));
    assert_eq!(store.get(&queue_b()).await.unwrap(), None);
}

async fn upsert_replaces_the_whole_configuration(store: Fixture) {
    let mut c = QueueConfig::new(queue_a(), "/srv/repo", "main");
    c.promotion_ref = Some("refs/heads/verified".into());
    c.build.settings.insert("token_env".into(), "TOKEN".into());
    store.upsert(&c).await.unwrap();
    let mut replacement = QueueConfig::new(queue_a(), "/srv/other", "trunk");
    replacement.max_concurrent = 4;
    replacement.poll_interval = Duration::from_millis(1500);
    store.upsert(&replacement).await.unwrap();
    assert_eq!(
        store.get(&queue_a()).await.unwrap(),
        Some(replacement),
        "no field of the old configuration survives"
    );
    assert_eq!(store.list().await.unwrap().len(), 1);
}

async fn list_is_ordered_by_name(store: Fixture) {
    for name in ["zeta", "alpha/main", "mid"] {
        store
            .upsert(&QueueConfig::new(queue(name), "/r", "main"))
            .await
            .unwrap();
    }
    let names: Vec<_> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name.to_string())
        .collect();
    assert_eq!(names, ["alpha/main", "mid", "zeta"]);
}
