//! The [`Host`] trait: what the controller asks of one host's agent, with the transport
//! hidden (colmena-style). [`crate::client::HttpHost`] implements it over agent API v1;
//! the orchestration in `deploy`/`rollout` only sees this trait, so its unit tests can
//! drive it with a fake transport while end-to-end tests use real agents.

use std::future::Future;

use std::time::Duration;

use hostctl_schemas::api::deployments::{Deployment, DeploymentRequest};
use hostctl_schemas::api::generations::GenerationsResponse;
use hostctl_schemas::api::paths::ImportResponse;
use hostctl_schemas::api::rollback::RollbackRequest;
use hostctl_schemas::api::status::StatusResponse;
use hostctl_schemas::api::ErrorCode;
use hostctl_schemas::ids::{HostName, StorePath};

/// A prepared import body: a zstd-compressed `nix-store --export` stream in a temporary
/// file (deleted when dropped), with its SHA-256, which the signature covers and so must
/// be known before the first byte is sent.
#[derive(Debug)]
pub struct ExportBody {
    pub file: tokio::fs::File,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// Compressed length: the bytes that go over the wire.
    pub len: u64,
}

/// Why a call to an agent failed. Every variant names the host and the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No answer: cannot connect, connection broken, timed out. Retrying may help (an
    /// agent restarted by its own switch answers again shortly).
    #[error("{host}: {endpoint}: {message}")]
    Transport { host: String, endpoint: String, message: String },
    /// The agent answered with an error status; `message` is the agent's own.
    #[error("{host}: {endpoint}: HTTP {status}{}: {message}", code.map(|c| format!(" ({})", code_name(c))).unwrap_or_default())]
    Api { host: String, endpoint: String, status: u16, code: Option<ErrorCode>, message: String },
    /// The agent answered, but not with what API v1 promises.
    #[error("{host}: {endpoint}: HTTP {status}: bad answer: {problem}")]
    Protocol { host: String, endpoint: String, status: u16, problem: String },
    /// The agent's TLS identity is not the one pinned for the host (or none is pinned):
    /// the connection was closed after the handshake, nothing was sent.
    #[error(
        "{host}: the agent shows identity {seen}, {}; nothing was sent. Confirm the key on the host \
         (`hostctl-agent identity`); if it is right, run: {fix}",
        pinned.as_ref().map_or("none pinned (fleet.yaml `agent_key` or known_agents)".to_owned(), |p| format!("but {p} is pinned for this host"))
    )]
    Identity { host: String, pinned: Option<String>, seen: String, fix: String },
}

impl HostError {
    /// Whether the failure is about reaching the agent rather than what it answered.
    pub fn is_transport(&self) -> bool {
        matches!(self, HostError::Transport { .. })
    }

    /// The HTTP status the agent answered with, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            HostError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether an agent answered at all (an error status or an answer API v1 does not
    /// allow): it is reachable, whatever went wrong.
    pub fn answered(&self) -> bool {
        matches!(self, HostError::Api { .. } | HostError::Protocol { .. })
    }

    /// What happened, in a word or two for a host's report line (the full text is the
    /// error below it): `unreachable` only when nothing answered; `refused` (HTTP 401),
    /// `HTTP 500` (or another status the agent answered), `bad answer` (not what API v1
    /// promises), `wrong identity` (not the pinned agent).
    pub fn what_happened(&self) -> String {
        match self {
            HostError::Transport { .. } => "unreachable".to_owned(),
            HostError::Api { status: 401, .. } => "refused".to_owned(),
            HostError::Api { status, .. } => format!("HTTP {status}"),
            HostError::Protocol { .. } => "bad answer".to_owned(),
            HostError::Identity { .. } => "wrong identity".to_owned(),
        }
    }
}

/// The error code as the agent writes it (`bad-request`, ...).
fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// One host's agent. Futures are `Send` so hosts can be driven from spawned tasks.
pub trait Host: Send + Sync {
    /// The host's name in the inventory.
    fn name(&self) -> &HostName;

    /// `GET /v1/status`.
    fn status(&self) -> impl Future<Output = Result<StatusResponse, HostError>> + Send;

    /// `POST /v1/paths/missing`: the subset of `paths` the host lacks, in the same order.
    fn missing(&self, paths: &[StorePath]) -> impl Future<Output = Result<Vec<StorePath>, HostError>> + Send;

    /// `POST /v1/paths/import` of `paths`, whose export `body` carries.
    fn import(
        &self,
        paths: &[StorePath],
        body: ExportBody,
    ) -> impl Future<Output = Result<ImportResponse, HostError>> + Send;

    /// `POST /v1/deployments`: starts a deployment.
    fn deploy(&self, request: &DeploymentRequest) -> impl Future<Output = Result<Deployment, HostError>> + Send;

    /// `GET /v1/deployments/{id}`.
    fn deployment(&self, id: &str) -> impl Future<Output = Result<Deployment, HostError>> + Send;

    /// `POST /v1/deployments/{id}/confirm`. Implementations must use a new connection:
    /// a successful confirm is the proof that the new configuration still lets the
    /// controller in, which a connection opened before the switch would not show.
    /// Returns the deployment as the agent recorded it after the confirmation.
    fn confirm(&self, id: &str) -> impl Future<Output = Result<Deployment, HostError>> + Send;

    /// `GET /v1/generations`: the profile's generations and the agent's deployments.
    fn generations(&self) -> impl Future<Output = Result<GenerationsResponse, HostError>> + Send;

    /// `POST /v1/rollback`: returns the rollback's deployment (202), to be followed and
    /// confirmed like any other.
    fn rollback(&self, request: &RollbackRequest) -> impl Future<Output = Result<Deployment, HostError>> + Send;

    /// One attempt of an `http` health check of this host: `GET url` within `timeout`,
    /// over a new connection; the HTTP status, or why there was none. Not an agent call:
    /// it lives here so the health gate can be driven by the fake transport in tests.
    fn probe(&self, url: &str, timeout: Duration) -> impl Future<Output = Result<u16, String>> + Send;
}

/// A fake transport for unit tests of the orchestration: it records every call and
/// answers from a script. The real agent is covered by the end-to-end tests.
#[cfg(test)]
pub mod fake {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use hostctl_schemas::api::deployments::DeploymentState;
    use hostctl_schemas::api::rollback::RollbackTarget;

    use super::*;

    /// How a fake host behaves.
    #[derive(Debug, Clone, Default)]
    pub struct Script {
        /// `status` fails as an unreachable host would.
        pub unreachable: bool,
        /// What `status` reports as running.
        pub current: Option<StorePath>,
        /// Paths `missing` reports (those of the request that are in this list).
        pub lacks: Vec<StorePath>,
        /// The deployment ends `failed` with this error and log.
        pub activation_fails: Option<(String, String)>,
        /// ... and this `end_reason`.
        pub end_reason: Option<hostctl_schemas::api::deployments::EndReason>,
        /// The deployment waits for confirmation before it is `confirmed`.
        pub needs_confirmation: bool,
        /// Answers of successive `probe` calls (then 200 for ever).
        pub probes: VecDeque<Result<u16, String>>,
        /// What `generations` answers.
        pub history: Option<GenerationsResponse>,
        /// `rollback` of anything but a pending deployment answers 404 (not in the store).
        pub rollback_not_found: bool,
        /// The toplevel a started rollback returns to.
        pub rollback_to: Option<StorePath>,
        /// What `status` reports as free on the store's file system.
        pub store_free: Option<u64>,
        /// What `status` reports as free on the boot partition.
        pub boot_free: Option<u64>,
    }

    /// A fake host; `calls` lists `"status"`, `"missing"`, `"import"`, `"deploy"`, ...
    #[derive(Debug)]
    pub struct FakeHost {
        pub name: HostName,
        pub script: Script,
        pub calls: Mutex<Vec<String>>,
        /// Bodies of `deploy` and `rollback` requests, in order.
        pub deploys: Mutex<Vec<DeploymentRequest>>,
        pub rollbacks: Mutex<Vec<RollbackRequest>>,
        probes: Mutex<VecDeque<Result<u16, String>>>,
        deployment: Mutex<Option<Deployment>>,
    }

    impl FakeHost {
        pub fn new(name: &str, script: Script) -> Self {
            let name = name.parse().unwrap();
            let probes = Mutex::new(script.probes.clone());
            Self {
                name,
                script,
                calls: Mutex::new(Vec::new()),
                deploys: Mutex::new(Vec::new()),
                rollbacks: Mutex::new(Vec::new()),
                probes,
                deployment: Mutex::new(None),
            }
        }

        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn record(&self, call: &str) {
            self.calls.lock().unwrap().push(call.to_owned());
        }

        fn not_found(&self, endpoint: &str, message: &str) -> HostError {
            HostError::Api {
                host: self.name.to_string(),
                endpoint: endpoint.into(),
                status: 404,
                code: Some(ErrorCode::NotFound),
                message: message.into(),
            }
        }
    }

    impl Host for FakeHost {
        fn name(&self) -> &HostName {
            &self.name
        }

        async fn status(&self) -> Result<StatusResponse, HostError> {
            self.record("status");
            if self.script.unreachable {
                return Err(HostError::Transport {
                    host: self.name.to_string(),
                    endpoint: "GET /v1/status".into(),
                    message: "cannot connect: connection refused".into(),
                });
            }
            Ok(StatusResponse {
                generation: self.script.current.as_ref().map(|_| 1),
                toplevel: self.script.current.as_ref().map(ToString::to_string),
                version: "fake".into(),
                store_free_bytes: self.script.store_free,
                boot_free_bytes: self.script.boot_free,
                ..StatusResponse::idle(self.name.as_str())
            })
        }

        async fn missing(&self, paths: &[StorePath]) -> Result<Vec<StorePath>, HostError> {
            self.record("missing");
            Ok(paths.iter().filter(|p| self.script.lacks.contains(p)).cloned().collect())
        }

        async fn import(&self, paths: &[StorePath], _body: ExportBody) -> Result<ImportResponse, HostError> {
            self.record("import");
            Ok(ImportResponse { imported: paths.to_vec() })
        }

        async fn deploy(&self, request: &DeploymentRequest) -> Result<Deployment, HostError> {
            self.record("deploy");
            self.deploys.lock().unwrap().push(request.clone());
            let d = Deployment::queued(request, self.script.current.clone(), 0);
            *self.deployment.lock().unwrap() = Some(d.clone());
            Ok(d)
        }

        async fn deployment(&self, id: &str) -> Result<Deployment, HostError> {
            self.record("deployment");
            let mut guard = self.deployment.lock().unwrap();
            let d = guard.as_mut().filter(|d| d.id == id).unwrap();
            d.state = match (d.state, &self.script.activation_fails) {
                (DeploymentState::Queued, Some((error, log))) => {
                    d.error = Some(error.clone());
                    d.log_tail = log.clone();
                    d.end_reason = self.script.end_reason;
                    DeploymentState::Failed
                }
                (DeploymentState::Queued, None) if self.script.needs_confirmation => {
                    DeploymentState::AwaitingConfirmation
                }
                (DeploymentState::Queued, None) => DeploymentState::Confirmed,
                (state, _) => state,
            };
            // As the agent does: the generation exists once activation ran.
            if matches!(d.state, DeploymentState::AwaitingConfirmation | DeploymentState::Confirmed) {
                d.generation = Some(2);
            }
            Ok(d.clone())
        }

        async fn confirm(&self, id: &str) -> Result<Deployment, HostError> {
            self.record("confirm");
            let mut guard = self.deployment.lock().unwrap();
            let d = guard.as_mut().filter(|d| d.id == id).unwrap();
            d.state = DeploymentState::Confirmed;
            Ok(d.clone())
        }

        async fn generations(&self) -> Result<GenerationsResponse, HostError> {
            self.record("generations");
            self.script.history.clone().ok_or_else(|| HostError::Transport {
                host: self.name.to_string(),
                endpoint: "GET /v1/generations".into(),
                message: "cannot connect: connection refused".into(),
            })
        }

        /// As the agent documents it: `"previous"` while a deployment awaits confirmation
        /// rolls that one back at once; anything else starts a rollback deployment.
        async fn rollback(&self, request: &RollbackRequest) -> Result<Deployment, HostError> {
            self.record("rollback");
            self.rollbacks.lock().unwrap().push(request.clone());
            let mut guard = self.deployment.lock().unwrap();
            if let Some(d) = guard.as_mut().filter(|d| d.state == DeploymentState::AwaitingConfirmation) {
                if matches!(request.to, RollbackTarget::Previous(_)) {
                    d.state = DeploymentState::RolledBack;
                    d.error = Some("rolled back on request".into());
                    d.end_reason = Some(hostctl_schemas::api::deployments::EndReason::RollbackRequested);
                    return Ok(d.clone());
                }
            }
            if self.script.rollback_not_found {
                return Err(self.not_found("POST /v1/rollback", "no deployment with this lock in the store"));
            }
            let toplevel = self.script.rollback_to.clone().unwrap();
            let start = DeploymentRequest {
                id: request.id.clone().unwrap_or_else(|| "rollback-1".into()),
                toplevel,
                rev: Some("0123456789abcdef0123456789abcdef01234567".into()),
                lock: Some("a".repeat(64).parse().unwrap()),
                mode: hostctl_schemas::inventory::Mode::Switch,
                confirm_timeout: request.confirm_timeout.unwrap_or_default(),
                health: Vec::new(),
                cache: None,
                commit_signature: None,
                retention: None,
                reboot: false,
            };
            let d = Deployment::queued(&start, self.script.current.clone(), 0);
            *guard = Some(d.clone());
            Ok(d)
        }

        async fn probe(&self, _url: &str, _timeout: Duration) -> Result<u16, String> {
            self.record("probe");
            self.probes.lock().unwrap().pop_front().unwrap_or(Ok(200))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HostError;

    /// Only a host whose agent said nothing is `unreachable`: an error status, a bad
    /// answer and a wrong identity each say what happened.
    #[test]
    fn what_happened_tells_silence_from_an_answer() {
        let (host, endpoint) = ("web1".to_owned(), "GET /v1/status".to_owned());
        let api = |status| HostError::Api {
            host: host.clone(),
            endpoint: endpoint.clone(),
            status,
            code: None,
            message: "cannot read the profile".into(),
        };
        let cases = [
            (
                HostError::Transport { host: host.clone(), endpoint: endpoint.clone(), message: "x".into() },
                "unreachable",
                false,
            ),
            (api(401), "refused", true),
            (api(500), "HTTP 500", true),
            (
                HostError::Protocol {
                    host: host.clone(),
                    endpoint: endpoint.clone(),
                    status: 200,
                    problem: "x".into(),
                },
                "bad answer",
                true,
            ),
            (
                HostError::Identity { host: host.clone(), pinned: None, seen: "k".into(), fix: "f".into() },
                "wrong identity",
                false,
            ),
        ];
        for (error, words, answered) in cases {
            assert_eq!((error.what_happened().as_str(), error.answered()), (words, answered), "{error}");
        }
        let bad = HostError::Protocol { host, endpoint, status: 200, problem: "expected value at line 1".into() };
        assert_eq!(bad.to_string(), "web1: GET /v1/status: HTTP 200: bad answer: expected value at line 1");
    }
}
