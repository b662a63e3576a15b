//! Collecting the results of per-host tasks run in parallel.

use std::collections::BTreeMap;

use tokio::task::JoinSet;

/// Waits for every task and keys its result. A task that panicked is a bug: it is logged
/// and its key is missing from the map, which callers report as a failure of that host
/// ("did not finish") rather than hiding it.
pub async fn collect_keyed<K: Ord + 'static, V: 'static>(mut set: JoinSet<(K, V)>, what: &str) -> BTreeMap<K, V> {
    let mut results = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((key, value)) => {
                results.insert(key, value);
            }
            Err(e) => tracing::error!("{what} task failed: {e}"),
        }
    }
    results
}
