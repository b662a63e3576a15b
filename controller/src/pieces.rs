//! Export pieces shared between hosts: each store path is exported and compressed once
//! per run, however many hosts lack it; a host's import body is assembled from pieces.
//!
//! `nix-store --export` of several paths is the export of each path, back to back, plus
//! an end marker (`hostctl_nix::export_stream`), and concatenated zstd frames are one
//! zstd stream. So every path becomes its own zstd frame in one spool file, and a body is
//! the frames of its paths in the asked order plus a frame holding the end marker: exactly
//! what the agent would have received from one `nix-store --export`, compressed.
//!
//! Invariant: a piece is recorded only once its whole item has been read and its frame
//! finished; a failed export leaves the pieces before it usable and nothing else.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

use hostctl_nix::export_stream::ExportItems;
use hostctl_nix::Nix;
use hostctl_schemas::ids::StorePath;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::host::ExportBody;

/// zstd level: fast enough not to be the bottleneck on a LAN, still ~3x on store paths.
const ZSTD_LEVEL: i32 = 3;
/// Read buffer for the export stream and for copying pieces.
const BUFFER: usize = 256 * 1024;

/// Where a path's frame is in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    offset: u64,
    len: u64,
}

/// The spool file and what is in it.
#[derive(Debug, Default)]
struct Spool {
    /// Created with the first piece.
    file: Option<File>,
    /// End of the last complete frame; anything after it is an unfinished frame.
    end: u64,
    pieces: HashMap<StorePath, Piece>,
    /// How many `nix-store --export` runs filled it (for tests and logs).
    exports: usize,
}

/// The pieces of one run. Exports run one at a time (they compete for the same CPU
/// anyway), so two hosts lacking the same path wait for one export of it.
#[derive(Debug, Default)]
pub struct Pieces {
    spool: Arc<Mutex<Spool>>,
    exporting: tokio::sync::Mutex<()>,
}

fn locked(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    // Poisoned only by a panic elsewhere; `end` and `pieces` change together, after the
    // frame is complete, so the data is consistent.
    spool.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pieces {
    /// How many `nix-store --export` runs this run needed.
    #[cfg(test)]
    pub fn exports(&self) -> usize {
        locked(&self.spool).exports
    }

    /// The compressed export of `paths` (in this order), from pieces; paths without a
    /// piece are exported first, in one `nix-store --export`.
    pub async fn body(&self, nix: &Nix, paths: &[StorePath]) -> Result<ExportBody, String> {
        self.ensure(nix, paths).await?;
        let (spool, paths) = (self.spool.clone(), paths.to_vec());
        let assembled = tokio::task::spawn_blocking(move || assemble(&spool, &paths))
            .await
            .map_err(|e| format!("assembling the export failed: {e}"))?;
        let (file, sha256, len) = assembled.map_err(|e| format!("assembling the export: {e}"))?;
        Ok(ExportBody { file: tokio::fs::File::from_std(file), sha256, len })
    }

    async fn ensure(&self, nix: &Nix, paths: &[StorePath]) -> Result<(), String> {
        let _one_at_a_time = self.exporting.lock().await;
        let todo: Vec<StorePath> = {
            let spool = locked(&self.spool);
            paths.iter().filter(|p| !spool.pieces.contains_key(*p)).cloned().collect()
        };
        if todo.is_empty() {
            return Ok(());
        }
        let mut export = nix.export(&todo).map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let spool = self.spool.clone();
        let splitter = tokio::task::spawn_blocking(move || split_into_pieces(&spool, ChannelReader::new(rx)));
        let mut buf = vec![0u8; BUFFER];
        let read_result = loop {
            match export.stdout().read(&mut buf).await {
                Ok(0) => break Ok(()),
                // The splitter stopped early (malformed stream): its error says why.
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).await.is_err() {
                        break Ok(());
                    }
                }
                Err(e) => break Err(format!("reading nix-store --export: {e}")),
            }
        };
        drop(tx);
        let split = splitter.await.map_err(|e| format!("splitting the export failed: {e}"))?;
        let finished = export.finish().await.map_err(|e| e.to_string());
        read_result?;
        finished?;
        split.map_err(|e| format!("splitting nix-store --export output: {e}"))?;
        let spool = locked(&self.spool);
        match todo.iter().find(|p| !spool.pieces.contains_key(*p)) {
            Some(p) => Err(format!("nix-store --export did not export {p}")),
            None => Ok(()),
        }
    }
}

/// Reads an export stream from `reader`, writing each item as its own zstd frame at the
/// spool's end and recording it once complete.
fn split_into_pieces(spool: &Mutex<Spool>, reader: ChannelReader) -> io::Result<()> {
    let (file, start) = {
        let mut s = locked(spool);
        s.exports += 1;
        let file = match &s.file {
            Some(file) => file.try_clone()?,
            None => s.file.insert(tempfile::tempfile()?).try_clone()?,
        };
        (file, s.end)
    };
    let mut tee = Tee { inner: reader, frame: Some(new_frame(Positioned { file, start, written: 0 })?) };
    let mut items = ExportItems::new(&mut tee);
    while let Some(item) = items.next_item().map_err(io::Error::other)? {
        let tee = items.get_mut();
        let done = tee.frame.take().ok_or_else(|| io::Error::other("no open frame"))?.finish()?;
        let piece = Piece { offset: done.start, len: done.written };
        {
            let mut s = locked(spool);
            s.end = piece.offset + piece.len;
            s.pieces.insert(item.path, piece);
        }
        // The next item's frame starts where this one ended.
        tee.frame = Some(new_frame(Positioned { file: done.file, start: piece.offset + piece.len, written: 0 })?);
    }
    // What followed the last item (the end marker) is not a piece; cut it off.
    drop(tee.frame.take());
    let s = locked(spool);
    match &s.file {
        Some(file) => file.set_len(s.end),
        None => Ok(()),
    }
}

fn new_frame(target: Positioned) -> io::Result<zstd::stream::write::Encoder<'static, Positioned>> {
    zstd::stream::write::Encoder::new(target, ZSTD_LEVEL)
}

/// Writes at `start + written` of the spool, whatever else moved the file's cursor.
#[derive(Debug)]
struct Positioned {
    file: File,
    start: u64,
    written: u64,
}

impl Write for Positioned {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        let n = self.file.write_at(buf, self.start + self.written)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Passes reads through, compressing everything read into the current frame.
struct Tee {
    inner: ChannelReader,
    frame: Option<zstd::stream::write::Encoder<'static, Positioned>>,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let frame = self.frame.as_mut().ok_or_else(|| io::Error::other("no open frame"))?;
        frame.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Blocking reads over chunks sent from the async side.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        Self { rx, chunk: Vec::new(), pos: 0 }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => (self.chunk, self.pos) = (chunk, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Copies the pieces of `paths` and the end frame into a new temporary file, hashing
/// them; returns the rewound file, its SHA-256 and length.
fn assemble(spool: &Mutex<Spool>, paths: &[StorePath]) -> io::Result<(File, String, u64)> {
    let (source, pieces) = {
        let s = locked(spool);
        let pieces: Option<Vec<Piece>> = paths.iter().map(|p| s.pieces.get(p).copied()).collect();
        let pieces = pieces.ok_or_else(|| io::Error::other("a path has no export piece"))?;
        let file = s.file.as_ref().ok_or_else(|| io::Error::other("the export spool was never created"))?;
        (file.try_clone()?, pieces)
    };
    let end_frame = zstd::encode_all(&0u64.to_le_bytes()[..], ZSTD_LEVEL)?;
    let mut out = tempfile::tempfile()?;
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; BUFFER];
    for piece in pieces {
        let mut left = piece.len;
        let mut at = piece.offset;
        while left > 0 {
            use std::os::unix::fs::FileExt as _;
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let n = source.read_at(&mut buf[..want], at)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the export spool is shorter than its index"));
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            (left, at, len) = (left - n as u64, at + n as u64, len + n as u64);
        }
    }
    hasher.update(&end_frame);
    out.write_all(&end_frame)?;
    len += end_frame.len() as u64;
    out.flush()?;
    out.seek(SeekFrom::Start(0))?;
    Ok((out, hex::encode(hasher.finalize()), len))
}

#[cfg(test)]
#[path = "pieces_tests.rs"]
mod tests;
