//! `hostctl logs HOST [DEPLOYMENT] [--follow]`: a deployment's whole activation log from
//! its agent (`GET /v1/deployments/{id}/log`, in pieces), the newest deployment's when
//! none is named. Human output is the log itself on stdout, written as it arrives; with
//! `--follow`, until the deployment has ended and its log is read to the end. `--json`:
//! one document once the log is read (`deployment`, `log`, `complete`). Read-only.

use std::io::Write as _;
use std::time::Duration;

use hostctl_schemas::ids::HostName;
use schemars::JsonSchema;
use serde::Serialize;

use crate::client::HttpHost;
use crate::context::FleetContext;
use crate::error::Error;
use crate::host::{Host, HostError};
use crate::report::{Fields, HostReport, HostResult, Report};

/// How often `--follow` asks again once it has read everything so far.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

/// A `logs` entry's own fields.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LogsFields {
    /// The deployment whose log this is; null when it could not be found.
    pub deployment: Option<String>,
    /// The log as read (all of it, or up to where it stood without `--follow`).
    pub log: String,
    /// The deployment had ended and its log was read to the end.
    pub complete: bool,
}

impl Fields for LogsFields {}

/// What to print.
#[derive(Debug, Clone)]
pub struct LogsOptions {
    pub host: HostName,
    pub deployment: Option<String>,
    pub follow: bool,
    /// Collect for one JSON document instead of writing the log as it comes.
    pub json: bool,
}

/// Runs `logs` (the deployment id was checked by the command line parser): exit 1 when
/// the agent cannot be asked or does not know the deployment.
pub async fn logs(opts: &LogsOptions, ctx: &FleetContext) -> Result<Report<LogsFields>, Error> {
    let mut fields = LogsFields { deployment: opts.deployment.clone(), log: String::new(), complete: false };
    let read = match ctx.agent(&opts.host)? {
        Ok(client) => read_log(&client, opts, &mut fields).await,
        Err(e) => Err(e),
    };
    let mut report = Report::default();
    let entry = match read {
        Ok(()) if opts.json => HostReport::new(HostResult::Ok, None, None).with(fields),
        // The log is on stdout already: nothing more to print for this host.
        Ok(()) => return Ok(report),
        Err(e) => {
            let mut entry = HostReport::new(HostResult::Failed, None, None).with(fields);
            entry.error = Some(e.to_string());
            entry
        }
    };
    report.hosts.insert(opts.host.to_string(), entry);
    Ok(report)
}

/// Reads the log piece by piece into `fields` (and, without `--json`, onto stdout).
async fn read_log(client: &HttpHost, opts: &LogsOptions, fields: &mut LogsFields) -> Result<(), HostError> {
    let id = match &opts.deployment {
        Some(id) => id.clone(),
        None => newest(client).await?,
    };
    fields.deployment = Some(id.clone());
    let mut offset = 0;
    loop {
        let piece = client.deployment_log(&id, offset).await?;
        if opts.json {
            fields.log.push_str(&piece.text);
        } else {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(piece.text.as_bytes()).and_then(|()| stdout.flush());
        }
        let caught_up = piece.next_offset == offset;
        offset = piece.next_offset;
        fields.complete = piece.complete;
        if piece.complete || (caught_up && !opts.follow) {
            return Ok(());
        }
        if caught_up {
            tokio::time::sleep(FOLLOW_INTERVAL).await;
        }
    }
}

/// The id of the host's newest deployment.
async fn newest(client: &HttpHost) -> Result<String, HostError> {
    let answer = client.generations().await?;
    answer.deployments.first().map(|d| d.id.clone()).ok_or_else(|| HostError::Api {
        host: client.name().to_string(),
        endpoint: "GET /v1/generations".into(),
        status: 404,
        code: None,
        message: "the agent has no deployments".into(),
    })
}
