//! Tests of the export-stream validator: real `nix-store --export` output from a private
//! `local?root=` store, cut at many points, plus hand-made streams for the cases Nix never
//! writes (bad order, wrong header, trailing data).

use std::io::Read;

use crate::Nix;

use super::*;

/// A path in a private store plus its export stream.
pub(crate) struct RealExport {
    _root: tempfile::TempDir,
    pub paths: Vec<StorePath>,
    pub stream: Vec<u8>,
}

/// Adds two small trees (nested dirs, a symlink, an executable, a file of odd length) to a
/// fresh `local?root=` store and exports them with the real `nix-store --export`.
pub(crate) async fn real_export() -> RealExport {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    std::fs::create_dir_all(src.join("tree/sub/deeper")).unwrap();
    std::fs::write(src.join("tree/a"), "hello\n").unwrap();
    std::fs::write(src.join("tree/sub/deeper/seven"), "1234567").unwrap();
    std::os::unix::fs::symlink("a", src.join("tree/link")).unwrap();
    std::fs::write(src.join("tree/run"), "#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(src.join("tree/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(src.join("single"), vec![b'x'; 100_000]).unwrap();
    let store = format!("local?root={}", root.path().join("store").display());
    let nix = Nix::new().with_store(store);
    let tree = nix.add_to_store(&src.join("tree")).await.unwrap();
    let single = nix.add_to_store(&src.join("single")).await.unwrap();
    let paths = vec![tree, single];
    let mut export = nix.export(&paths).unwrap();
    let mut stream = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(export.stdout(), &mut stream).await.unwrap();
    export.finish().await.unwrap();
    RealExport { _root: root, paths, stream }
}

#[tokio::test]
async fn a_real_export_validates_and_every_cut_is_refused() {
    let real = real_export().await;
    let items = validate_export(real.stream.as_slice()).unwrap();
    // `nix-store --export` sorts its arguments topologically, so compare as sets.
    let mut got: Vec<_> = items.iter().map(|i| i.path.clone()).collect();
    let mut want = real.paths.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(items.iter().all(|i| i.references.is_empty() && i.deriver.is_none()));
    assert!(items.iter().any(|i| i.nar_size > 100_000));
    assert_eq!(check_against_header(&items, &real.paths).unwrap(), Vec::<StorePath>::new());

    // Cut everywhere in the first 2 KiB (every field of the first item), then coarser.
    let len = real.stream.len();
    let cuts = (0..2048.min(len)).chain((2048..len).step_by(997)).chain([len - 8, len - 1]);
    for cut in cuts {
        match validate_export(&real.stream[..cut]) {
            Err(ExportError::Truncated { offset }) => assert!(offset <= cut as u64),
            other => panic!("cut at {cut} of {len}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn zstd_compressed_streams_cut_short_are_refused() {
    let real = real_export().await;
    let compressed = zstd::encode_all(real.stream.as_slice(), 3).unwrap();
    let decoder = zstd::Decoder::new(compressed.as_slice()).unwrap();
    assert_eq!(validate_export(decoder).unwrap().len(), 2);
    for cut in [1, 10, compressed.len() / 2, compressed.len() - 1] {
        let err = match zstd::Decoder::new(&compressed[..cut]) {
            Ok(decoder) => validate_export(decoder).unwrap_err(),
            Err(_) => continue,
        };
        assert!(matches!(err, ExportError::Truncated { .. } | ExportError::Read(_)), "cut {cut}: {err:?}");
    }
}

#[tokio::test]
async fn the_header_must_list_exactly_the_streamed_paths() {
    let real = real_export().await;
    let items = validate_export(real.stream.as_slice()).unwrap();
    let err = check_against_header(&items, &real.paths[..1]).unwrap_err();
    assert!(err.contains("which x-hostctl-paths does not list"), "{err}");
    let mut more = real.paths.clone();
    more.push(OTHER.parse().unwrap());
    let err = check_against_header(&items, &more).unwrap_err();
    assert!(err.contains("which the stream does not carry"), "{err}");
    let mut stream = real.stream.clone();
    stream.push(0);
    assert!(matches!(validate_export(stream.as_slice()), Err(ExportError::TrailingData { .. })));
}

const A: &str = "/nix/store/zr2knphxg8yyy2mkq8akf2hfknjvdiz7-a";
const B: &str = "/nix/store/mh3rz2qzm0lrcxk22g2b1kifak7q2nj9-b";
const OTHER: &str = "/nix/store/00000000000000000000000000000000-other";

/// Writes export streams by hand, in Nix's wire format.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn int(&mut self, n: u64) -> &mut Self {
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.int(s.len() as u64);
        self.0.extend_from_slice(s);
        self.0.resize(self.0.len().next_multiple_of(8), 0);
        self
    }
    fn strs(&mut self, items: &[&str]) -> &mut Self {
        for s in items {
            self.str(s.as_bytes());
        }
        self
    }
    /// One item whose NAR is a single regular file.
    fn item(&mut self, path: &str, references: &[&str]) -> &mut Self {
        self.int(1).strs(&["nix-archive-1", "(", "type", "regular", "contents", "hi", ")"]);
        self.int(EXPORT_MAGIC).str(path.as_bytes()).int(references.len() as u64).strs(references);
        self.str(b"").int(0)
    }
}

#[test]
fn references_come_first_or_must_be_in_the_store() {
    let mut w = Writer::default();
    w.item(A, &[]).item(B, &[A, B, OTHER]).int(0);
    let items = validate_export(w.0.as_slice()).unwrap();
    let header: Vec<StorePath> = [A, B].iter().map(|p| p.parse().unwrap()).collect();
    assert_eq!(check_against_header(&items, &header).unwrap(), [OTHER.parse::<StorePath>().unwrap()]);

    let mut w = Writer::default();
    w.item(B, &[A]).item(A, &[]).int(0);
    let items = validate_export(w.0.as_slice()).unwrap();
    let err = check_against_header(&items, &header).unwrap_err();
    assert!(err.contains("comes before its reference"), "{err}");

    let mut w = Writer::default();
    w.item(A, &[]).item(A, &[]).int(0);
    let items = validate_export(w.0.as_slice()).unwrap();
    assert!(check_against_header(&items, &header[..1]).unwrap_err().contains("twice"));
}

#[test]
fn malformed_streams_are_refused() {
    let check = |w: &Writer, want: &str| {
        let err = validate_export(w.0.as_slice()).unwrap_err().to_string();
        assert!(err.contains(want), "want {want:?}: {err}");
    };
    let mut w = Writer::default();
    w.int(2);
    check(&w, "expected 1 (another path) or 0 (end), found 2");

    let mut w = Writer::default();
    w.int(1).strs(&["nix-archive-2"]);
    check(&w, "expected `nix-archive-1`");

    let mut w = Writer::default();
    w.int(1).strs(&["nix-archive-1", "(", "type", "directory", "entry", "(", "name", "b", "node"]);
    w.strs(&["(", "type", "regular", "contents", "", ")", ")"]);
    w.strs(&["entry", "(", "name", "a", "node", "(", "type", "symlink", "target", "b", ")", ")", ")"]);
    check(&w, "not sorted");

    let mut w = Writer::default();
    w.int(1).strs(&["nix-archive-1", "(", "type", "directory", "entry", "(", "name", "..", "node"]);
    check(&w, "invalid entry name `..`");

    let mut w = Writer::default();
    w.int(1).strs(&["nix-archive-1", "(", "type", "fifo", ")"]);
    check(&w, "unknown NAR node type `fifo`");

    let mut w = Writer::default();
    w.int(1).strs(&["nix-archive-1", "(", "type", "regular", "contents", "hi", ")"]).int(7);
    check(&w, "NIXE");

    let mut w = Writer::default();
    w.int(1).strs(&["nix-archive-1", "(", "type", "regular", "contents", "hi", ")"]);
    w.int(EXPORT_MAGIC).str(b"/nix/store/../etc/passwd");
    check(&w, "`..` is not allowed");

    let mut w = Writer::default();
    w.int(1).strs(&["nix-archive-1", "(", "type", "regular", "contents"]);
    w.int(1).0.extend_from_slice(b"x\x01\0\0\0\0\0\0");
    check(&w, "non-zero padding");

    // A length field claiming more than the format allows is refused before allocating.
    let mut w = Writer::default();
    w.int(1).int(u64::MAX);
    check(&w, "at most 32 expected");
}

#[test]
fn contents_are_streamed_not_buffered() {
    // A 64 MiB file in a stream read through a reader that counts its biggest request.
    struct Counting<R>(R, usize);
    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.1 = self.1.max(buf.len());
            self.0.read(buf)
        }
    }
    let mut w = Writer::default();
    w.int(1).strs(&["nix-archive-1", "(", "type", "regular", "contents"]);
    w.str(&vec![0u8; 64 << 20]).strs(&[")"]).int(EXPORT_MAGIC).str(A.as_bytes()).int(0).str(b"").int(0).int(0);
    let mut reader = Counting(w.0.as_slice(), 0);
    assert_eq!(validate_export(&mut reader).unwrap()[0].nar_size, (64 << 20) + 112);
    assert!(reader.1 <= 1 << 16, "largest read {}", reader.1);
}

/// Collects what passes through it, so the bytes of each item can be taken.
struct Collect<'a> {
    inner: &'a [u8],
    seen: Vec<u8>,
}

impl Read for Collect<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

#[tokio::test]
async fn items_cut_at_their_boundaries_are_exports_of_their_own() {
    let real = real_export().await;
    let mut items = ExportItems::new(Collect { inner: real.stream.as_slice(), seen: Vec::new() });
    let mut pieces = Vec::new();
    while let Some(item) = items.next_item().unwrap() {
        pieces.push((item.path, std::mem::take(&mut items.get_mut().seen)));
    }
    assert_eq!(items.offset(), real.stream.len() as u64);
    assert_eq!(items.get_mut().seen, 0u64.to_le_bytes(), "only the end marker follows the last item");
    assert_eq!(pieces.len(), 2);
    let end = 0u64.to_le_bytes();
    // Each piece plus the end marker is an export of that one path; all of them, in any
    // order, an export of both.
    for (path, piece) in &pieces {
        let alone = validate_export([piece.as_slice(), &end].concat().as_slice()).unwrap();
        assert_eq!(alone.iter().map(|i| &i.path).collect::<Vec<_>>(), [path]);
    }
    let reversed = [pieces[1].1.as_slice(), pieces[0].1.as_slice(), &end].concat();
    assert_eq!(validate_export(reversed.as_slice()).unwrap().len(), 2);
    assert!(items.next_item().unwrap().is_none(), "stays ended");
}
