//! `apply --via-cache URL` (or `cache:` in fleet.yaml): the built closures go once to a
//! Nix binary cache, signed with the fleet key, and each agent fetches its system from
//! there instead of receiving a stream from the controller.
//!
//! The push is one `nix copy --to 'URL?secret-key=KEY&compression=zstd' TOPLEVEL...` of
//! every selected host's toplevel, run when the first host needs it (a run where every
//! host is unchanged pushes nothing); concurrent hosts wait for that one push. The cache
//! store signs each path it receives with the fleet key (`secret-key`, the same Nix
//! key file that signs the requests), so nothing in the local store changes and no
//! trusted-user rights are needed. Paths the cache already has are skipped and keep the
//! signatures they have: agents refuse those unless a key they trust signed them.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hostctl_nix::Nix;
use hostctl_schemas::ids::StorePath;
use hostctl_schemas::inventory::{CacheUrl, FleetCache};
use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::OnceCell;

/// The cache one `apply` goes through.
#[derive(Debug)]
pub struct ViaCache {
    /// Where the closures are pushed (`cache.url` or `--via-cache`).
    pub url: CacheUrl,
    /// What the agents are told to fetch from (`cache.substituter`, else `url`).
    pub substituter: CacheUrl,
    job: Option<PushJob>,
    pushed: OnceCell<Result<f64, String>>,
}

/// The one `nix copy --to` of a run.
#[derive(Debug)]
struct PushJob {
    nix: Arc<Nix>,
    /// `url` with `secret-key` (and `compression`) added.
    target: String,
    toplevels: Vec<StorePath>,
}

/// Why a signing key path cannot go into a store URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the signing key path {0} is not valid UTF-8; it cannot be named in a cache URL")]
pub struct KeyPathError(pub String);

impl ViaCache {
    /// The cache to use: `--via-cache` (agents fetch from that URL too), else the fleet's
    /// `cache:`; `None` when neither is set.
    pub fn choose(cli: Option<&CacheUrl>, fleet: Option<&FleetCache>) -> Option<(CacheUrl, CacheUrl)> {
        match (cli, fleet) {
            (Some(url), _) => Some((url.clone(), url.clone())),
            (None, Some(cache)) => Some((cache.url.clone(), cache.substituter().clone())),
            (None, None) => None,
        }
    }

    /// A cache that pushes to `url`, signed with the key in `key_file`; checked before
    /// anything is evaluated. The toplevels come once they are built
    /// ([`ViaCache::set_toplevels`]).
    pub fn new((url, substituter): (CacheUrl, CacheUrl), nix: Arc<Nix>, key_file: &Path) -> Result<Self, KeyPathError> {
        let target = push_target(&url, key_file)?;
        let job = Some(PushJob { nix, target, toplevels: Vec::new() });
        Ok(Self { url, substituter, job, pushed: OnceCell::new() })
    }

    /// The systems the push copies (their closures), each once.
    pub fn set_toplevels(&mut self, mut toplevels: Vec<StorePath>) {
        toplevels.sort();
        toplevels.dedup();
        if let Some(job) = &mut self.job {
            job.toplevels = toplevels;
        }
    }

    /// A cache whose closures are already there (unit tests of the orchestration).
    #[cfg(test)]
    pub fn prepared(url: CacheUrl) -> Self {
        Self { substituter: url.clone(), url, job: None, pushed: OnceCell::new() }
    }

    /// Pushes every toplevel once per run; later and concurrent callers get the first
    /// result. The error names the cache and carries Nix's own message.
    pub async fn ensure_pushed(&self) -> Result<(), String> {
        let result = self.pushed.get_or_init(|| self.push()).await;
        result.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    async fn push(&self) -> Result<f64, String> {
        let Some(job) = &self.job else { return Ok(0.0) };
        let started = Instant::now();
        tracing::info!(cache = %self.url, toplevels = job.toplevels.len(), "pushing the closures to the cache");
        let line = format!("pushing {} closures to the cache {}", job.toplevels.len(), self.url);
        // A closed stderr is ignored: progress is optional.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
        job.nix.copy_to(&job.target, &job.toplevels).await.map_err(|e| {
            let why = e.nix_message().map_or_else(|| e.to_string(), str::to_owned);
            format!("pushing the closures to the cache {} failed: {why}", self.url)
        })?;
        Ok(started.elapsed().as_secs_f64())
    }

    /// The report's top-level `via_cache`.
    pub fn report(&self) -> ViaCacheReport {
        let (pushed, seconds, error) = match self.pushed.get() {
            None => (false, None, None),
            Some(Ok(s)) => (true, Some((s * 1000.0).round() / 1000.0), None),
            Some(Err(e)) => (true, None, Some(e.clone())),
        };
        ViaCacheReport {
            error,
            pushed,
            seconds,
            substituter: self.substituter.as_str().to_owned(),
            url: self.url.as_str().to_owned(),
        }
    }
}

/// `apply`'s top-level `via_cache`: the cache the closures went through.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ViaCacheReport {
    /// Why the push failed.
    pub error: Option<String>,
    /// Whether the push ran (no host needed it otherwise).
    pub pushed: bool,
    /// How long the push took.
    pub seconds: Option<f64>,
    /// Where the agents fetch from.
    pub substituter: String,
    /// Where the closures were pushed.
    pub url: String,
}

/// `url` plus `secret-key=<absolute key path>` (percent-encoded: Nix decodes store
/// parameters) and `compression=zstd` unless the URL chooses one (Nix's default, xz,
/// costs seconds per 100 MB; zstd is read by every Nix hostctl supports).
fn push_target(url: &CacheUrl, key_file: &Path) -> Result<String, KeyPathError> {
    let absolute = std::path::absolute(key_file).unwrap_or_else(|_| key_file.to_path_buf());
    let key = absolute.to_str().ok_or_else(|| KeyPathError(absolute.display().to_string()))?;
    let mut target = url.as_str().to_owned();
    target.push(if url.has_params() { '&' } else { '?' });
    target.push_str("secret-key=");
    target.push_str(&percent_encode(key));
    if !url.has_param("compression") {
        target.push_str("&compression=zstd");
    }
    Ok(target)
}

/// Every byte but `A-Z a-z 0-9 / . _ ~ -` as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/._~-".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::tests_support::FakeStore;

    fn url(s: &str) -> CacheUrl {
        s.parse().unwrap()
    }

    #[test]
    fn the_push_url_names_the_key_and_zstd() {
        let key = Path::new("/etc/hostctl/my key&x.sec");
        assert_eq!(
            push_target(&url("file:///var/cache/fleet"), key).unwrap(),
            "file:///var/cache/fleet?secret-key=/etc/hostctl/my%20key%26x.sec&compression=zstd"
        );
        assert_eq!(
            push_target(&url("s3://b?region=eu-west-1&compression=xz"), Path::new("/k.sec")).unwrap(),
            "s3://b?region=eu-west-1&compression=xz&secret-key=/k.sec"
        );
        let relative = push_target(&url("file:///c"), Path::new("keys/fleet.sec")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert!(
            relative.contains(&format!("secret-key={}", percent_encode(&cwd.join("keys/fleet.sec").to_string_lossy())))
        );
    }

    #[test]
    fn cli_overrides_the_fleet_cache() {
        let fleet = FleetCache { url: url("s3://b"), substituter: Some(url("https://c.example.com")) };
        assert_eq!(ViaCache::choose(None, None), None);
        assert_eq!(ViaCache::choose(None, Some(&fleet)), Some((url("s3://b"), url("https://c.example.com"))));
        let cli = url("file:///tmp/c");
        assert_eq!(ViaCache::choose(Some(&cli), Some(&fleet)), Some((cli.clone(), cli)));
    }

    #[tokio::test]
    async fn a_failed_push_names_the_cache_and_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let nix = Arc::new(Nix::new().with_bin_dir(dir.path()));
        let mut cache = ViaCache::new((url("file:///c"), url("file:///c")), nix, Path::new("/k")).unwrap();
        cache.set_toplevels(vec![FakeStore::toplevel(), FakeStore::toplevel()]);
        assert_eq!(cache.job.as_ref().unwrap().toplevels, [FakeStore::toplevel()]);
        assert!(!cache.report().pushed);
        let err = cache.ensure_pushed().await.unwrap_err();
        assert!(err.starts_with("pushing the closures to the cache file:///c failed: cannot run"), "{err}");
        assert_eq!(cache.ensure_pushed().await.unwrap_err(), err);
        let report = serde_json::to_value(cache.report()).unwrap();
        assert_eq!((report["pushed"].as_bool(), report["error"].as_str()), (Some(true), Some(err.as_str())));
    }
}
