//! `hostctl bundle HOST -o FILE`: the host's whole closure and its deployment record as
//! one file signed with the fleet key (format: `hostctl_schemas::api::bundles`), for a
//! host without network. Nothing is sent to any host.
//!
//! The whole closure goes in: there is no agent to ask which paths it lacks. The file is
//! written next to its final name and renamed, so a reader never sees half a bundle.

use std::path::PathBuf;
use std::sync::Arc;

use hostctl_nix::Nix;
use hostctl_schemas::api::bundles::{header, Manifest};
use hostctl_schemas::ids::{HostName, StorePath};
use hostctl_schemas::inventory::Mode;
use hostctl_schemas::text::plural;
use schemars::JsonSchema;
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;

use crate::context::FleetContext;
use crate::error::Error;
use crate::pipeline::{eval_and_build, EvalOptions};
use crate::push::{LocalStore, NixStore};
use crate::report::{Fields, HostReport, HostResult, Report};
use crate::select::Selection;

/// `bundle`'s options: a host known to the inventory.
#[derive(Debug, Clone)]
pub struct BundleOptions {
    pub host: HostName,
    /// The bundle file to write.
    pub output: PathBuf,
    /// The activation mode the bundle asks for.
    pub mode: Mode,
}

/// A `bundle` entry's own fields.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BundleFields {
    /// The file written.
    pub bundle: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Store paths in it.
    pub paths: usize,
}

impl Fields for BundleFields {}

/// Runs `bundle`; the signing key has been read.
pub async fn bundle(
    eval: &EvalOptions,
    opts: &BundleOptions,
    ctx: &FleetContext,
    nix: Arc<Nix>,
) -> Result<Report<BundleFields>, Error> {
    let key = ctx.signing_key()?;
    let mut built = eval_and_build(eval, ctx, nix.clone(), &Selection::one(opts.host.clone())).await?;
    let mut report = Report::default();
    let entry = match built.remove(&opts.host) {
        Some(Ok(t)) => match write(ctx, opts, &key, NixStore::new(nix), &t.out_path).await {
            Ok((paths, bytes)) => {
                let bundle = opts.output.display().to_string();
                let mut e = HostReport::base(ctx, HostResult::Built).with(BundleFields {
                    bundle: bundle.clone(),
                    bytes,
                    paths,
                });
                e.toplevel = Some(t.out_path.to_string());
                e.summary =
                    Some(format!("{bundle} ({}, {})", plural(paths, "path", "paths"), crate::progress::bytes(bytes)));
                e
            }
            Err(message) => HostReport::failed(ctx, format!("{}: {message}", opts.host)),
        },
        Some(Err(failure)) => HostReport::failed(ctx, failure.message),
        None => HostReport::failed(ctx, format!("{}: not built", opts.host)),
    };
    report.hosts.insert(opts.host.to_string(), entry);
    Ok(report)
}

/// Exports the closure of `toplevel` and writes the signed bundle; (paths, file bytes).
async fn write(
    ctx: &FleetContext,
    opts: &BundleOptions,
    key: &hostctl_schemas::signing::SecretKey,
    store: NixStore,
    toplevel: &StorePath,
) -> Result<(usize, u64), String> {
    let paths = store.closure(toplevel).await?;
    let mut body = store.export(&paths).await?;
    let manifest = Manifest {
        host: opts.host.clone(),
        toplevel: toplevel.clone(),
        rev: ctx.rev(),
        lock: ctx.lock_id().cloned(),
        mode: opts.mode,
        created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        paths,
        export_sha256: body.sha256.clone(),
        export_len: body.len,
    };
    let head = header(&manifest, key).map_err(|e| format!("cannot encode the manifest: {e}"))?;
    let out = &opts.output;
    let io = |e: std::io::Error| format!("cannot write {}: {e}", out.display());
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let tmp = tempfile::Builder::new().prefix(".hostctl-bundle-").tempfile_in(dir).map_err(io)?;
    let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(io)?);
    file.write_all(&head).await.map_err(io)?;
    let copied = tokio::io::copy(&mut body.file, &mut file).await.map_err(io)?;
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    if copied != body.len {
        return Err(format!("the export changed while it was copied ({copied} of {} bytes)", body.len));
    }
    tmp.persist(out).map_err(|e| io(e.error))?;
    Ok((manifest.paths.len(), head.len() as u64 + copied))
}
