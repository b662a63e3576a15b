//! `hostctl bundle HOST -o FILE`: the host's whole closure and its deployment record as
//! one file signed with the fleet key (format: `hostctl_schemas::api::bundles`), for a
//! host without network. Nothing is sent to any host.
//!
//! The whole closure goes in: there is no agent to ask which paths it lacks. The file is
//! written next to its final name and renamed, so a reader never sees half a bundle.

use std::sync::Arc;

use hostctl_nix::Nix;
use hostctl_schemas::api::bundles::{header, Manifest};
use hostctl_schemas::ids::StorePath;
use tokio::io::AsyncWriteExt as _;

use crate::cli::{BundleArgs, Cli, Select};
use crate::client::load_signing_key;
use crate::commands::{base_entry, eval_and_build, failed};
use crate::context::FleetContext;
use crate::error::Error;
use crate::push::{LocalStore, NixStore};
use crate::report::{HostResult, Report};

/// Runs `bundle`.
pub async fn bundle(cli: &Cli, args: &BundleArgs, ctx: &FleetContext, nix: Arc<Nix>) -> Result<Report, Error> {
    let key = load_signing_key(ctx, cli.key.as_deref())?;
    ctx.host(&args.host)?;
    let select = Select { on: vec![args.host.to_string()] };
    let mut built = eval_and_build(cli, ctx, nix.clone(), &select).await?;
    let mut report = Report::default();
    let entry = match built.remove(&args.host) {
        Some(Ok(t)) => match write(ctx, args, &key, NixStore::new(nix), &t.out_path).await {
            Ok((paths, bytes)) => {
                let mut e = base_entry(ctx, HostResult::Built)
                    .field("bundle", args.output.display().to_string())
                    .field("paths", paths)
                    .field("bytes", bytes);
                e.toplevel = Some(t.out_path.to_string());
                e.summary =
                    Some(format!("{} ({paths} paths, {})", args.output.display(), crate::progress::bytes(bytes)));
                e
            }
            Err(message) => failed(ctx, format!("{}: {message}", args.host)),
        },
        Some(Err(failure)) => failed(ctx, failure.message),
        None => failed(ctx, format!("{}: not built", args.host)),
    };
    report.hosts.insert(args.host.to_string(), entry);
    Ok(report)
}

/// Exports the closure of `toplevel` and writes the signed bundle; (paths, file bytes).
async fn write(
    ctx: &FleetContext,
    args: &BundleArgs,
    key: &hostctl_schemas::signing::SecretKey,
    store: NixStore,
    toplevel: &StorePath,
) -> Result<(usize, u64), String> {
    let paths = store.closure(toplevel).await?;
    let mut body = store.export(&paths).await?;
    let manifest = Manifest {
        host: args.host.clone(),
        toplevel: toplevel.clone(),
        rev: ctx.rev(),
        lock: ctx.lock_id().cloned(),
        mode: args.mode.unwrap_or(ctx.fleet.defaults.mode),
        created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        paths,
        export_sha256: body.sha256.clone(),
        export_len: body.len,
    };
    let head = header(&manifest, key).map_err(|e| format!("cannot encode the manifest: {e}"))?;
    let out = &args.output;
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
