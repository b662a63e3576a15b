//! Deployments whose request names a binary cache (`hostctl apply --via-cache`): the
//! toplevel's closure is fetched from that cache (`nix copy --from`) before anything
//! else, instead of arriving through `POST /v1/paths/import`.
//!
//! **Which caches.** Only URLs listed in the agent's `caches` (exact match); any other is
//! a 400 when the request comes. The signature check alone would keep forged systems
//! out, but a controller key alone must not make hosts open arbitrary URLs (internal
//! HTTP services, other buckets with the host's S3 credentials, local files), nor turn a
//! host into a client of a cache its operator never chose.
//!
//! **Which paths.** `nix copy` accepts only paths signed by a key in `trusted_keys` (the
//! fleet keys, Nix's key format) or `pull.trusted_public_keys`, with `require-sigs` on
//! whatever `nix.conf` says; content-addressed paths need no signature (their name is
//! their hash). An unsigned or wrongly signed path fails the fetch.
//!
//! **Journal.** The fetch runs in the deployment's task under phase `substituting`
//! (state `queued`), journaled before `nix copy` starts; the profile and the running
//! system are not touched until it succeeded. A failure ends the deployment `failed`
//! with `end_reason` `cache-fetch-failed` and an error starting `cache <URL>: ` and Nix's
//! own message; a restart during the fetch ends it the same way (`recovery.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hostctl_nix::Nix;
use hostctl_schemas::api::deployments::EndReason;
use hostctl_schemas::ids::StorePath;
use hostctl_schemas::inventory::CacheUrl;
use hostctl_schemas::key::PublicKey;

use crate::deploy_error::DeployError;
use crate::transition::Failure;

/// `cache <URL>: ` (or `cache: ` when unknown), the start of every fetch error.
pub(crate) fn cache_error_start(cache: Option<&CacheUrl>) -> String {
    match cache {
        Some(url) => format!("cache {url}: "),
        None => "cache: ".to_owned(),
    }
}

/// Fetches systems from the caches the agent lists; it knows nothing of the journal
/// (the deployer passes what journals the `substituting` phase).
#[derive(Debug)]
pub struct Substituter {
    nix: Arc<Nix>,
    /// The agent's `caches`.
    caches: Vec<CacheUrl>,
    /// What fetched paths must be signed with.
    keys: Vec<PublicKey>,
}

impl Substituter {
    pub fn new(nix: Arc<Nix>, caches: Vec<CacheUrl>, keys: Vec<PublicKey>) -> Self {
        Self { nix, caches, keys }
    }

    /// 400 unless `cache` is one of the agent's `caches`.
    pub fn check_listed(&self, cache: &CacheUrl) -> Result<(), DeployError> {
        if self.caches.contains(cache) {
            return Ok(());
        }
        let listed = if self.caches.is_empty() {
            "it lists none".to_owned()
        } else {
            self.caches.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        Err(DeployError::invalid(format!(
            "cache: `{cache}` is not one of this agent's `caches` (agent.yaml; {listed}); add it there to let \
             deployments fetch from it"
        )))
    }

    /// Whether the store lacks `toplevel`.
    pub async fn lacks(&self, toplevel: &StorePath) -> Result<bool, DeployError> {
        Ok(!self.nix.invalid_paths(std::slice::from_ref(toplevel)).await?.is_empty())
    }

    /// Fetches `toplevel` from `cache` for deployment `id` if the store lacks it, after
    /// `begin` (journaling the phase) succeeded; `program` is its
    /// `switch-to-configuration`, which must exist afterwards. `Err` is the deployment's
    /// error; nothing was changed but the store.
    pub async fn fetch_if_missing(
        &self,
        id: &str,
        cache: &CacheUrl,
        toplevel: &StorePath,
        program: &Path,
        begin: impl FnOnce() -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let start = cache_error_start(Some(cache));
        let failed = |why: String| Failure::new(EndReason::CacheFetchFailed, format!("{start}{why}"));
        let missing = self.nix.invalid_paths(std::slice::from_ref(toplevel)).await;
        if missing.map_err(|e| failed(format!("cannot ask the store for {toplevel}: {e}")))?.is_empty() {
            return Ok(());
        }
        begin()?;
        let started = Instant::now();
        tracing::info!(id, %cache, %toplevel, "fetching the system from the cache");
        self.copy_from(cache, toplevel).await.map_err(|why| failed(format!("fetching {toplevel} failed: {why}")))?;
        if !program.is_file() {
            return Err(failed(format!("{toplevel} has no bin/switch-to-configuration; is it a NixOS system?")));
        }
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(id, %cache, %toplevel, ms, "fetched the system from the cache");
        Ok(())
    }

    async fn copy_from(&self, cache: &CacheUrl, toplevel: &StorePath) -> Result<(), String> {
        // Nix would create a missing file:// cache directory (and read nothing from it):
        // say plainly that there is no cache there instead.
        if let Some(dir) = cache.file_dir() {
            let info = std::path::Path::new(dir).join("nix-cache-info");
            if !info.is_file() {
                return Err(format!("there is no binary cache at {dir} ({} does not exist)", info.display()));
            }
        }
        self.nix.copy_from(cache.as_str(), std::slice::from_ref(toplevel), &self.keys).await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use hostctl_schemas::api::deployments::DeploymentState;
    use hostctl_schemas::inventory::Mode;

    use super::*;
    use crate::deploy::tests::{ended, request, TestHost};
    use crate::deploy::DeployerOptions;

    fn url(s: &str) -> CacheUrl {
        s.parse().unwrap()
    }

    /// A cache in `dir` holding `paths` (from `source`'s store), signed by a fresh key;
    /// returns the cache and that key's public half.
    async fn cache_of(source: &TestHost, paths: &[StorePath], dir: &std::path::Path) -> (CacheUrl, String) {
        let out = std::process::Command::new("nix")
            .args(["--extra-experimental-features", "nix-command", "key", "generate-secret", "--key-name", "t-1"])
            .output()
            .unwrap();
        let key = dir.join("t.sec");
        std::fs::write(&key, &out.stdout).unwrap();
        let cache = url(&format!("file://{}", dir.join("cache").display()));
        let target = format!("{cache}?secret-key={}", key.display());
        source.nix.copy_to(&target, paths).await.unwrap();
        let public = std::process::Command::new("nix")
            .args(["--extra-experimental-features", "nix-command", "key", "convert-secret-to-public"])
            .stdin(std::fs::File::open(&key).unwrap())
            .output()
            .unwrap();
        (cache, String::from_utf8(public.stdout).unwrap().trim().to_owned())
    }

    #[tokio::test]
    async fn a_listed_cache_provides_the_system() {
        let (source, host) = (TestHost::new(), TestHost::new());
        let system = source.system("s1", 0).await;
        let (cache, public) = cache_of(&source, std::slice::from_ref(&system), source.dir.path()).await;
        let options = DeployerOptions {
            caches: vec![cache.clone()],
            cache_keys: vec![public.parse().unwrap()],
            ..DeployerOptions::default()
        };
        let deployer = host.deployer_with(options);
        let mut req = request("d1", &system, Mode::Switch, 0);
        req.cache = Some(cache);
        deployer.create(req).await.unwrap();
        let d = ended(&deployer, "d1").await;
        assert_eq!(d.state, DeploymentState::Confirmed, "{d:?}");
        assert_eq!(source.ran(), ["s1 switch"], "the system records its runs in its maker's directory");
        assert!(host.nix.invalid_paths(&[system]).await.unwrap().is_empty(), "fetched into the host's store");
    }

    #[tokio::test]
    async fn an_unlisted_cache_is_refused_and_a_missing_one_fails_the_deployment() {
        let (source, host) = (TestHost::new(), TestHost::new());
        let system = source.system("s1", 0).await;
        let listed = url(&format!("file://{}", host.dir.path().join("no-cache").display()));
        let deployer =
            host.deployer_with(DeployerOptions { caches: vec![listed.clone()], ..DeployerOptions::default() });
        let mut req = request("d1", &system, Mode::Switch, 0);
        req.cache = Some(url("https://elsewhere.example.com"));
        let err = deployer.create(req.clone()).await.unwrap_err();
        assert!(matches!(err, DeployError::Invalid(_)), "{err:?}");
        assert!(
            err.to_string().contains("`https://elsewhere.example.com` is not one of this agent's `caches`"),
            "{err:?}"
        );
        assert!(deployer.get("d1").is_none(), "nothing journaled");

        req.cache = Some(listed.clone());
        deployer.create(req).await.unwrap();
        let d = ended(&deployer, "d1").await;
        assert_eq!(d.state, DeploymentState::Failed);
        assert_eq!(d.end_reason, Some(EndReason::CacheFetchFailed));
        let error = d.error.unwrap();
        assert!(
            error.starts_with(&format!("cache {listed}: fetching {system} failed: there is no binary cache at")),
            "{error}"
        );
        assert!(host.ran().is_empty(), "nothing activated");
        assert_eq!(host.current(), None, "the profile was not touched");
        assert!(!host.dir.path().join("no-cache").exists(), "no cache directory made up");
    }

    #[tokio::test]
    async fn a_restart_while_fetching_fails_the_deployment_and_touches_nothing() {
        use hostctl_schemas::api::deployments::Deployment;
        let host = TestHost::new();
        let system = host.system("s1", 0).await;
        let cache = url("file:///var/cache/fleet");
        let mut req = request("d1", &system, Mode::Switch, 30);
        req.cache = Some(cache.clone());
        let mut record = crate::journal::Record::new(Deployment::queued(&req, None, 1), req.confirm_timeout);
        record.cache = Some(cache);
        record.apply(crate::transition::Transition::Substitute).unwrap();
        let deployer = host.recovered_with(record).await;
        let d = deployer.get("d1").unwrap();
        assert_eq!((d.state, d.end_reason), (DeploymentState::Failed, Some(EndReason::CacheFetchFailed)));
        assert_eq!(
            d.error.as_deref(),
            Some(
                "cache file:///var/cache/fleet: the agent restarted while fetching the system from it; nothing was \
                 activated"
            )
        );
        assert!(host.ran().is_empty() && host.current().is_none());
    }

    #[tokio::test]
    async fn a_system_already_in_the_store_is_not_fetched() {
        let host = TestHost::new();
        let system = host.system("s1", 0).await;
        let cache = url("https://unreachable.invalid");
        let deployer =
            host.deployer_with(DeployerOptions { caches: vec![cache.clone()], ..DeployerOptions::default() });
        let mut req = request("d1", &system, Mode::Test, 0);
        req.cache = Some(cache);
        deployer.create(req.clone()).await.unwrap();
        assert_eq!(ended(&deployer, "d1").await.state, DeploymentState::Confirmed);
        assert_eq!(deployer.create(req).await.unwrap().id, "d1", "a retry with the same cache is the same request");
    }
}
