//! Collecting the results of per-host tasks run in parallel.

use std::collections::BTreeMap;

use hostctl_schemas::ids::HostName;
use tokio::task::JoinSet;

use crate::host::HostError;

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

/// Asks each of `hosts`' agents one thing in parallel (`ask` builds the request for a
/// host and its client) and returns the answers in `hosts`' order. A host that cannot be
/// asked (no pin, ...) gets that error; a task that did not finish (a bug, logged) gets a
/// transport error naming `endpoint`.
pub async fn ask_each_agent<'h, T, F, Fut>(
    ctx: &crate::context::FleetContext,
    hosts: impl IntoIterator<Item = &'h HostName>,
    endpoint: &str,
    mut ask: F,
) -> Result<Vec<(HostName, Result<T, HostError>)>, crate::error::Error>
where
    T: Send + 'static,
    F: FnMut(&HostName, crate::client::HttpHost) -> Fut,
    Fut: std::future::Future<Output = Result<T, HostError>> + Send + 'static,
{
    let mut set = JoinSet::new();
    let mut order = Vec::new();
    for host in hosts {
        let answer = ctx.agent(host)?.map(|client| ask(host, client));
        let key = host.clone();
        set.spawn(async move {
            let answer = match answer {
                Ok(asked) => asked.await,
                Err(e) => Err(e),
            };
            (key, answer)
        });
        order.push(host.clone());
    }
    let mut answers = collect_keyed(set, endpoint).await;
    Ok(order
        .into_iter()
        .map(|host| {
            let answer = answers.remove(&host).unwrap_or_else(|| {
                Err(HostError::Transport {
                    host: host.to_string(),
                    endpoint: endpoint.to_owned(),
                    message: "the request did not finish".into(),
                })
            });
            (host, answer)
        })
        .collect())
}
