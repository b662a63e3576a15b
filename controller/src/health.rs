//! Health gates: a host's `health` checks from fleet.yaml decide whether its new system
//! is confirmed. `http` checks run here, on the controller, after the agent reports
//! `awaiting-confirmation` and before the confirmation; `command` checks travel in the
//! deployment request and run on the agent. A failing http check means: no
//! confirmation, and the agent is asked to roll back at once rather than at the end of
//! its window (`POST /v1/rollback {"to": "previous"}` ends a pending deployment).

use hostctl_schemas::api::deployments::HealthFailure;
use hostctl_schemas::api::rollback::{Previous, RollbackRequest, RollbackTarget};
use hostctl_schemas::duration::Duration;
use hostctl_schemas::ids::HostName;
use hostctl_schemas::inventory::{HealthCheck, HealthKind, Mode};
use hostctl_schemas::text::plural;
use serde::Serialize;

use crate::client::deployment_id;
use crate::host::Host;
use crate::progress;

/// How one http check went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct CheckReport {
    /// The URL.
    pub http: String,
    pub ok: bool,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
    /// The last attempt's failure.
    pub error: Option<String>,
}

/// What the gate found for one deployment: the checks run, and the first failure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    /// Whether the checks have run (they run once per deployment).
    pub ran: bool,
    pub checks: Vec<CheckReport>,
    /// `health check GET <url> failed after N attempts: ...`.
    pub failure: Option<String>,
}

/// The checks the agent runs: sent in `DeploymentRequest.health`.
pub fn command_checks(checks: &[HealthCheck]) -> Vec<HealthCheck> {
    checks.iter().filter(|c| matches!(c.kind, HealthKind::Command(_))).cloned().collect()
}

/// Whether a deployment in `mode` runs the new system, so that probing it means
/// something (`boot` and `dry-activate` leave the old system running).
pub fn probes_new_system(mode: Mode) -> bool {
    matches!(mode, Mode::Switch | Mode::Test)
}

/// The longest the http checks can take: every attempt timing out, plus the pauses.
pub fn worst_case(checks: &[HealthCheck]) -> std::time::Duration {
    checks
        .iter()
        .filter(|c| matches!(c.kind, HealthKind::Http(_)))
        .map(|c| c.timeout.as_std() * (c.retries + 1) + c.interval.as_std() * c.retries)
        .sum()
}

/// The warnings `apply` and `rollback` print once, before anything is sent, about
/// health checks that cannot do their job with these settings.
pub fn warnings<'a>(
    hosts: impl IntoIterator<Item = (&'a HostName, &'a [HealthCheck])>,
    mode: Mode,
    confirm_timeout: Duration,
) -> Vec<String> {
    let hosts: Vec<_> = hosts.into_iter().filter(|(_, checks)| !checks.is_empty()).collect();
    let has_http = |checks: &[HealthCheck]| checks.iter().any(|c| matches!(c.kind, HealthKind::Http(_)));
    if hosts.is_empty() {
        return Vec::new();
    }
    if !probes_new_system(mode) {
        let any_http = hosts.iter().any(|(_, c)| has_http(c));
        return any_http
            .then(|| format!("http health checks are skipped in mode {mode}: the new system is not running"))
            .into_iter()
            .collect();
    }
    if confirm_timeout.as_std().is_zero() {
        return vec!["health checks cannot gate anything without a confirmation window (confirm_timeout is 0s): \
                     a failing check marks the host failed and stops the rollout, but nothing is rolled back"
            .to_owned()];
    }
    let mut out = Vec::new();
    for (name, checks) in hosts {
        let worst = worst_case(checks);
        if worst > confirm_timeout.as_std() {
            out.push(format!(
                "{name}: its http health checks can take up to {}, longer than confirm_timeout {confirm_timeout}: \
                 the agent rolls back if they have not passed by then",
                Duration::from(worst)
            ));
        }
    }
    out
}

/// Runs the http checks in order, stopping at the first that fails for good.
pub async fn run<H: Host>(host: &H, checks: &[HealthCheck]) -> Gate {
    let mut gate = Gate { ran: true, ..Gate::default() };
    for check in checks {
        let HealthKind::Http(url) = &check.kind else { continue };
        progress::step(host.name(), format!("health check GET {url}"));
        let report = probe(host, url, check).await;
        if !report.ok {
            let error = report.error.clone().unwrap_or_default();
            let tries =
                if report.attempts == 1 { "1 attempt".to_owned() } else { format!("{} attempts", report.attempts) };
            gate.failure = Some(format!("health check GET {url} failed after {tries}: {error}"));
        }
        gate.checks.push(report);
        if gate.failure.is_some() {
            break;
        }
    }
    gate
}

/// One check: up to `1 + retries` attempts, `interval` apart; healthy on a 2xx.
async fn probe<H: Host>(host: &H, url: &str, check: &HealthCheck) -> CheckReport {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match host.probe(url, check.timeout.as_std()).await {
            Ok(status) if (200..300).contains(&status) => {
                return CheckReport { http: url.to_owned(), ok: true, attempts, error: None };
            }
            Ok(status) => format!("HTTP {status}"),
            Err(e) => e,
        };
        if attempts > check.retries {
            return CheckReport { http: url.to_owned(), ok: false, attempts, error: Some(error) };
        }
        tracing::info!(host = %host.name(), url, attempts, "health check failed, retrying: {error}");
        tokio::time::sleep(check.interval.as_std()).await;
    }
}

/// Asks the agent to roll its pending deployment back now, naming the check that failed
/// (kept in the deployment's `health_failure`). If the request does not get through,
/// nothing is lost: without a confirmation the agent rolls back when its window ends, so
/// the caller keeps following the deployment either way. An agent older than
/// `health_failure` refuses the field (400): it is asked again without it.
pub async fn reject<H: Host>(host: &H, gate: &Gate) {
    progress::step(host.name(), "health check failed: not confirming, asking the agent to roll back");
    let mut request = RollbackRequest {
        to: RollbackTarget::Previous(Previous::Previous),
        id: Some(deployment_id(host.name())),
        confirm_timeout: None,
        health_failure: failed_check(gate),
    };
    let mut answer = host.rollback(&request).await;
    if matches!(&answer, Err(e) if e.status() == Some(400)) && request.health_failure.is_some() {
        request.health_failure = None;
        answer = host.rollback(&request).await;
    }
    if let Err(e) = answer {
        progress::step(host.name(), format!("rollback request failed ({e}); the confirmation window will end it"));
    }
}

/// The gate's failing check, as the agent journals it.
fn failed_check(gate: &Gate) -> Option<HealthFailure> {
    let check = gate.checks.iter().find(|c| !c.ok)?;
    let tries = plural(check.attempts, "attempt", "attempts");
    let error = check.error.as_deref().unwrap_or("failed");
    Some(HealthFailure::new(format!("GET {}", check.http), format!("{error} ({tries})")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::{FakeHost, Script};

    // The probes go to the fake transport (`host::fake`): no HTTP here.

    fn http(url: &str, retries: u32) -> HealthCheck {
        let mut c = HealthCheck::new(HealthKind::Http(url.into()));
        (c.retries, c.interval) = (retries, Duration::from_millis(1));
        c
    }

    #[tokio::test]
    async fn retries_until_healthy_and_stops_at_the_first_failure() {
        let probes = [Err("cannot connect: refused".to_owned()), Ok(503), Ok(204)].into_iter().collect();
        let host = FakeHost::new("web1", Script { probes, ..Script::default() });
        let gate = run(&host, &[http("http://web1/a", 3)]).await;
        assert!(gate.ran && gate.failure.is_none(), "{gate:?}");
        assert_eq!(gate.checks, [CheckReport { http: "http://web1/a".into(), ok: true, attempts: 3, error: None }]);

        let probes = [Ok(500), Ok(502)].into_iter().collect();
        let host = FakeHost::new("web1", Script { probes, ..Script::default() });
        let command = HealthCheck::new(HealthKind::Command(vec!["true".into()]));
        let gate = run(&host, &[command, http("http://web1/a", 1), http("http://web1/b", 0)]).await;
        assert_eq!(gate.failure.as_deref(), Some("health check GET http://web1/a failed after 2 attempts: HTTP 502"));
        assert_eq!(gate.checks.len(), 1, "later checks are not run");
        assert_eq!(host.calls(), ["probe", "probe"], "command checks are the agent's");
    }

    #[test]
    fn command_checks_and_worst_case() {
        let command = HealthCheck::new(HealthKind::Command(vec!["true".into()]));
        let checks = [http("http://x/", 2), command.clone()];
        assert_eq!(command_checks(&checks), [command]);
        // 3 attempts of 5 s plus 2 pauses of 1 ms.
        assert_eq!(worst_case(&checks), std::time::Duration::from_millis(15_002));
        assert!(probes_new_system(Mode::Test) && !probes_new_system(Mode::Boot));
    }

    #[test]
    fn warns_when_checks_cannot_gate() {
        let (web1, web2): (HostName, HostName) = ("web1".parse().unwrap(), "web2".parse().unwrap());
        let slow = [http("http://web1/", 9)];
        let hosts = || [(&web1, &slow[..]), (&web2, &[][..])];
        let w = warnings(hosts(), Mode::Switch, Duration::from_secs(0));
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("health checks cannot gate anything without a confirmation window"), "{w:?}");
        let w = warnings(hosts(), Mode::Boot, Duration::from_secs(30));
        assert_eq!(w, ["http health checks are skipped in mode boot: the new system is not running"]);
        let w = warnings(hosts(), Mode::Switch, Duration::from_secs(30));
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("web1: its http health checks can take up to 50s9ms, longer than confirm_timeout 30s"));
        assert!(warnings(hosts(), Mode::Switch, Duration::from_secs(60)).is_empty());
        assert!(warnings([(&web2, &[][..])], Mode::Switch, Duration::from_secs(0)).is_empty());
    }
}
