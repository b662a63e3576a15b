//! The `nix-store --export` stream format, validated completely before anything is
//! imported: `nix-store --import` registers each path as soon as it has read it (Nix 2.8
//! and later), so a stream that breaks half-way would otherwise leave paths behind.
//!
//! Format (all integers u64 little-endian; strings are a length, the bytes, and zero
//! padding to a multiple of 8): a sequence of items, each `1`, a NAR (`nix-archive-1`),
//! `0x4558494e` ("NIXE"), the store path, the references (count + strings), the deriver
//! (empty for none) and `0` (or `1` + a legacy signature); the stream ends with `0`.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};

use hostctl_schemas::ids::StorePath;

/// Marker of the metadata after each NAR: "NIXE" as a little-endian u64.
const EXPORT_MAGIC: u64 = 0x4558_494e;
const NAR_MAGIC: &str = "nix-archive-1";
/// Longest NAR entry name (a file name) and symlink target / store path Nix produces.
const MAX_NAME: u64 = 255;
const MAX_PATH: u64 = 4096;
/// Short tokens such as `type`, `regular`, `entry`.
const MAX_TOKEN: u64 = 32;
const MAX_REFERENCES: u64 = 1 << 20;
/// Deeper directory nesting is refused (bounds recursion; real store paths nest far less).
const MAX_DEPTH: usize = 256;

/// One path of a valid stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedPath {
    pub path: StorePath,
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    /// Size of its NAR serialisation in bytes.
    pub nar_size: u64,
}

/// Why a stream is not a complete, well-formed export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the import stream is truncated (it ends at byte {offset} of the uncompressed stream)")]
    Truncated { offset: u64 },
    #[error("the import stream is malformed at byte {offset}: {problem}")]
    Malformed { offset: u64, problem: String },
    #[error("the import stream has data after its end marker (byte {offset})")]
    TrailingData { offset: u64 },
    #[error("cannot read the import stream: {0}")]
    Read(#[source] io::Error),
}

/// A reader that counts bytes, for error offsets and NAR sizes.
struct Wire<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Wire<R> {
    fn malformed(&self, problem: impl Into<String>) -> ExportError {
        ExportError::Malformed { offset: self.offset, problem: problem.into() }
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), ExportError> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => return Err(ExportError::Truncated { offset: self.offset }),
                Ok(n) => {
                    done += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // zstd reports a stream cut inside a frame as an error of its own.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(ExportError::Truncated { offset: self.offset })
                }
                Err(e) => return Err(ExportError::Read(e)),
            }
        }
        Ok(())
    }

    fn u64(&mut self) -> Result<u64, ExportError> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn padding(&mut self, len: u64) -> Result<(), ExportError> {
        // Always below 8, so the cast cannot truncate.
        let pad = ((8 - len % 8) % 8) as usize;
        let mut b = [0u8; 8];
        self.fill(&mut b[..pad])?;
        if b.iter().any(|&x| x != 0) {
            return Err(self.malformed("non-zero padding"));
        }
        Ok(())
    }

    /// A string of at most `max` bytes.
    fn bytes(&mut self, max: u64, what: &str) -> Result<Vec<u8>, ExportError> {
        let len = self.u64()?;
        if len > max {
            return Err(self.malformed(format!("{what} is {len} bytes long (at most {max} expected)")));
        }
        let mut buf = vec![0u8; usize::try_from(len).map_err(|_| self.malformed("length overflow"))?];
        self.fill(&mut buf)?;
        self.padding(len)?;
        Ok(buf)
    }

    fn string(&mut self, max: u64, what: &str) -> Result<String, ExportError> {
        let bytes = self.bytes(max, what)?;
        String::from_utf8(bytes).map_err(|_| self.malformed(format!("{what} is not UTF-8")))
    }

    fn expect(&mut self, token: &str) -> Result<(), ExportError> {
        let got = self.bytes(MAX_TOKEN, "a NAR token")?;
        if got != token.as_bytes() {
            return Err(self.malformed(format!("expected `{token}`, found `{}`", String::from_utf8_lossy(&got))));
        }
        Ok(())
    }

    /// File contents: copied through without being held in memory.
    fn skip_contents(&mut self) -> Result<(), ExportError> {
        let len = self.u64()?;
        let copied = io::copy(&mut (&mut self.inner).take(len), &mut io::sink()).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                ExportError::Truncated { offset: self.offset }
            } else {
                ExportError::Read(e)
            }
        })?;
        self.offset += copied;
        if copied < len {
            return Err(ExportError::Truncated { offset: self.offset });
        }
        self.padding(len)
    }
}

/// Reads `reader` to its end and checks it is one complete export stream; returns its
/// paths in stream order. Nothing is imported here.
pub fn validate_export<R: Read>(reader: R) -> Result<Vec<ExportedPath>, ExportError> {
    let mut items = ExportItems::new(reader);
    let mut paths = Vec::new();
    while let Some(item) = items.next_item()? {
        paths.push(item);
    }
    Ok(paths)
}

/// An export stream read one path at a time. After [`ExportItems::next_item`] returns a
/// path, exactly that path's bytes (its leading `1` through its metadata) have been read
/// from the inner reader, so a reader that copies what passes through it can cut the
/// stream into one self-contained piece per path (concatenated pieces plus the `0` end
/// marker are again a valid export).
pub struct ExportItems<R> {
    wire: Wire<R>,
    ended: bool,
}

impl<R> std::fmt::Debug for ExportItems<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportItems").field("offset", &self.wire.offset).field("ended", &self.ended).finish()
    }
}

impl<R: Read> ExportItems<R> {
    pub fn new(reader: R) -> Self {
        Self { wire: Wire { inner: reader, offset: 0 }, ended: false }
    }

    /// The next path, or `None` once the end marker was read and nothing follows it.
    pub fn next_item(&mut self) -> Result<Option<ExportedPath>, ExportError> {
        if self.ended {
            return Ok(None);
        }
        let w = &mut self.wire;
        match w.u64()? {
            0 => {
                self.ended = true;
                check_at_end(w).map(|()| None)
            }
            1 => read_item(w).map(Some),
            other => Err(w.malformed(format!("expected 1 (another path) or 0 (end), found {other}"))),
        }
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.wire.offset
    }

    /// The inner reader (e.g. to take the last piece a copying reader collected).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.wire.inner
    }
}

/// Nothing may follow the end marker.
fn check_at_end<R: Read>(w: &mut Wire<R>) -> Result<(), ExportError> {
    let mut extra = [0u8; 1];
    loop {
        match w.inner.read(&mut extra) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(ExportError::TrailingData { offset: w.offset }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(ExportError::Truncated { offset: w.offset })
            }
            Err(e) => return Err(ExportError::Read(e)),
        }
    }
}

fn store_path<R: Read>(w: &Wire<R>, text: String, what: &str) -> Result<StorePath, ExportError> {
    text.parse::<StorePath>().map_err(|e| w.malformed(format!("{what}: {e}")))
}

fn read_item<R: Read>(w: &mut Wire<R>) -> Result<ExportedPath, ExportError> {
    let nar_start = w.offset;
    w.expect(NAR_MAGIC)?;
    read_node(w, 0)?;
    let nar_size = w.offset - nar_start;
    if w.u64()? != EXPORT_MAGIC {
        return Err(w.malformed("missing the NIXE marker after a NAR"));
    }
    let path = w.string(MAX_PATH, "store path")?;
    let path = store_path(w, path, "exported path")?;
    let count = w.u64()?;
    if count > MAX_REFERENCES {
        return Err(w.malformed(format!("{count} references")));
    }
    let mut references = Vec::new();
    for _ in 0..count {
        let reference = w.string(MAX_PATH, "reference")?;
        references.push(store_path(w, reference, "reference")?);
    }
    let deriver = w.string(MAX_PATH, "deriver")?;
    let deriver = if deriver.is_empty() { None } else { Some(store_path(w, deriver, "deriver")?) };
    match w.u64()? {
        0 => {}
        1 => {
            w.bytes(MAX_PATH, "legacy signature")?;
        }
        other => return Err(w.malformed(format!("expected 0 or 1 (signature flag), found {other}"))),
    }
    Ok(ExportedPath { path, references, deriver, nar_size })
}

/// One NAR node: `( type regular|symlink|directory ... )`.
fn read_node<R: Read>(w: &mut Wire<R>, depth: usize) -> Result<(), ExportError> {
    if depth > MAX_DEPTH {
        return Err(w.malformed(format!("directories nest deeper than {MAX_DEPTH}")));
    }
    w.expect("(")?;
    w.expect("type")?;
    match w.string(MAX_TOKEN, "node type")?.as_str() {
        "regular" => {
            let mut tag = w.string(MAX_TOKEN, "a NAR token")?;
            if tag == "executable" {
                w.expect("")?;
                tag = w.string(MAX_TOKEN, "a NAR token")?;
            }
            if tag != "contents" {
                return Err(w.malformed(format!("expected `contents`, found `{tag}`")));
            }
            w.skip_contents()?;
        }
        "symlink" => {
            w.expect("target")?;
            if w.bytes(MAX_PATH, "symlink target")?.is_empty() {
                return Err(w.malformed("empty symlink target"));
            }
        }
        // A directory's entries run up to the node's own closing `)`.
        "directory" => return read_entries(w, depth),
        other => return Err(w.malformed(format!("unknown NAR node type `{other}`"))),
    }
    w.expect(")")
}

/// Directory entries, then the directory node's closing `)`.
fn read_entries<R: Read>(w: &mut Wire<R>, depth: usize) -> Result<(), ExportError> {
    let mut previous: Option<Vec<u8>> = None;
    loop {
        let tag = w.bytes(MAX_TOKEN, "a NAR token")?;
        match tag.as_slice() {
            b")" => return Ok(()),
            b"entry" => {}
            other => {
                return Err(w.malformed(format!("expected `entry` or `)`, found `{}`", String::from_utf8_lossy(other))))
            }
        }
        w.expect("(")?;
        w.expect("name")?;
        let name = w.bytes(MAX_NAME, "entry name")?;
        let bad = name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0);
        if bad {
            return Err(w.malformed(format!("invalid entry name `{}`", String::from_utf8_lossy(&name))));
        }
        if previous.as_ref().is_some_and(|p| *p >= name) {
            return Err(w.malformed("directory entries are not sorted"));
        }
        w.expect("node")?;
        read_node(w, depth + 1)?;
        w.expect(")")?;
        previous = Some(name);
    }
}

/// What a validated stream must satisfy relative to the request: exactly the paths of the
/// `x-hostctl-paths` header, each once, referrers after their references. Returns the
/// references found neither in the stream nor as the path itself: they must already be
/// valid in the host's store.
pub fn check_against_header(exported: &[ExportedPath], header: &[StorePath]) -> Result<Vec<StorePath>, String> {
    let mut position: HashMap<&StorePath, usize> = HashMap::new();
    for (i, item) in exported.iter().enumerate() {
        if position.insert(&item.path, i).is_some() {
            return Err(format!("the stream carries {} twice", item.path));
        }
    }
    let wanted: HashSet<&StorePath> = header.iter().collect();
    if let Some(extra) = exported.iter().find(|p| !wanted.contains(&p.path)) {
        return Err(format!("the stream carries {}, which x-hostctl-paths does not list", extra.path));
    }
    if let Some(missing) = header.iter().find(|p| !position.contains_key(p)) {
        return Err(format!("x-hostctl-paths lists {missing}, which the stream does not carry"));
    }
    let mut external = Vec::new();
    for (i, item) in exported.iter().enumerate() {
        for reference in item.references.iter().filter(|r| **r != item.path) {
            match position.get(reference) {
                Some(&j) if j < i => {}
                Some(_) => return Err(format!("{} comes before its reference {reference} in the stream", item.path)),
                None => {
                    if !external.contains(reference) {
                        external.push(reference.clone());
                    }
                }
            }
        }
    }
    Ok(external)
}

#[cfg(test)]
#[path = "export_stream_tests.rs"]
mod tests;
