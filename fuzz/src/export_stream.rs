//! Target `export_stream`: the `nix-store --export` reader the agent validates every
//! import with (`hostctl_nix::export_stream::ExportItems`, `validate_export`), on the
//! uncompressed stream.
//!
//! Properties: a refusal's offset lies within the input; an accepted stream ends with
//! the 8-byte end marker, each path's bytes end where the reader said (so the stream
//! cuts into pieces that are valid exports of exactly that path, as `hostctl bundle`
//! and the push use them), every strict prefix is refused as truncated, and the stream
//! satisfies `check_against_header` with its own path list.

use std::io::Cursor;

use hostctl_nix::export_stream::{check_against_header, validate_export, ExportError, ExportItems, ExportedPath};

use super::{ensure, Verdict};

/// Whether `validate_export` accepts the stream.
pub fn accepts(data: &[u8]) -> bool {
    validate_export(data).is_ok()
}

pub fn check(data: &[u8]) -> Verdict {
    let mut items = ExportItems::new(Cursor::new(data));
    let mut paths: Vec<(ExportedPath, u64, u64)> = Vec::new();
    loop {
        let start = items.offset();
        match items.next_item() {
            Ok(Some(item)) => paths.push((item, start, items.offset())),
            Ok(None) => break,
            Err(e) => return refusal(&e, data.len()),
        }
    }
    ensure(items.offset() == data.len() as u64 && data.ends_with(&[0; 8]), || {
        format!("accepted stream of {} bytes ends at {} without the end marker", data.len(), items.offset())
    })?;
    let listed: Vec<_> = paths.iter().map(|(p, _, _)| p.clone()).collect();
    pieces(data, &paths)?;
    truncations(data)?;
    let header: Vec<_> = listed.iter().map(|p| p.path.clone()).collect();
    let unique = header.iter().collect::<std::collections::HashSet<_>>().len() == header.len();
    let against = check_against_header(&listed, &header);
    if unique && against.is_err() {
        // Allowed only for a referrer before its reference, which the header check refuses.
        let why = against.err().unwrap_or_default();
        ensure(why.contains("comes before its reference"), || format!("own path list refused: {why}"))?;
    }
    Ok(())
}

fn refusal(err: &ExportError, len: usize) -> Verdict {
    let offset = match err {
        ExportError::Truncated { offset } | ExportError::Malformed { offset, .. } => *offset,
        ExportError::TrailingData { offset } => *offset,
        ExportError::Read(e) => return Err(format!("reading from memory failed: {e}")),
    };
    ensure(offset <= len as u64, || format!("refusal at byte {offset} of a {len}-byte stream: {err}"))
}

/// Each piece plus the end marker is a valid export of exactly its path.
fn pieces(data: &[u8], paths: &[(ExportedPath, u64, u64)]) -> Verdict {
    for (item, start, end) in paths {
        let (start, end) = (usize::try_from(*start).unwrap_or(usize::MAX), usize::try_from(*end).unwrap_or(0));
        let mut piece =
            data.get(start..end).ok_or_else(|| format!("piece {start}..{end} outside the stream"))?.to_vec();
        piece.extend_from_slice(&[0; 8]);
        let again =
            validate_export(piece.as_slice()).map_err(|e| format!("piece of {} is not an export: {e}", item.path))?;
        ensure(again.as_slice() == std::slice::from_ref(item), || {
            format!("piece of {} reads as {again:?}", item.path)
        })?;
    }
    Ok(())
}

/// A stream cut anywhere (here: at a few places) is refused as truncated.
fn truncations(data: &[u8]) -> Verdict {
    let len = data.len();
    for cut in [len - 1, len - 8, len / 2, len / 3, 8].into_iter().filter(|c| *c < len) {
        match validate_export(&data[..cut]) {
            Err(ExportError::Truncated { offset }) if offset as usize == cut => {}
            other => return Err(format!("stream cut at {cut} of {len}: {other:?}")),
        }
    }
    Ok(())
}
