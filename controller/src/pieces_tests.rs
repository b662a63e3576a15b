//! Tests of shared export pieces against a real private `local?root=` store: bodies are
//! valid exports of exactly the asked paths, and a path is exported once per run.

use hostctl_nix::export_stream::validate_export;
use tokio::io::AsyncReadExt as _;

use super::*;

/// Three small paths in a fresh private store.
async fn store_with_paths() -> (tempfile::TempDir, Nix, Vec<StorePath>) {
    let root = tempfile::tempdir().unwrap();
    let nix = Nix::new().with_store(format!("local?root={}", root.path().join("store").display()));
    let mut paths = Vec::new();
    for (name, text) in [("a", "alpha\n".repeat(1000)), ("b", "bravo".to_owned()), ("c", String::new())] {
        let file = root.path().join(name);
        std::fs::write(&file, text).unwrap();
        paths.push(nix.add_to_store(&file).await.unwrap());
    }
    (root, nix, paths)
}

/// The body's bytes, checked against its hash and length, decompressed and validated.
async fn exported(body: ExportBody) -> Vec<StorePath> {
    let mut file = body.file;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await.unwrap();
    assert_eq!(bytes.len() as u64, body.len);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), body.sha256);
    let stream = zstd::decode_all(bytes.as_slice()).unwrap();
    validate_export(stream.as_slice()).unwrap().into_iter().map(|i| i.path).collect()
}

#[tokio::test]
async fn bodies_are_exports_of_exactly_their_paths_in_order() {
    let (_root, nix, paths) = store_with_paths().await;
    let pieces = Pieces::default();
    let (a, b, c) = (paths[0].clone(), paths[1].clone(), paths[2].clone());
    assert_eq!(exported(pieces.body(&nix, &[a.clone(), b.clone()]).await.unwrap()).await, [a.clone(), b.clone()]);
    assert_eq!(pieces.exports(), 1);
    // Reordered and a subset: from pieces alone, no new export.
    assert_eq!(exported(pieces.body(&nix, &[b.clone(), a.clone()]).await.unwrap()).await, [b.clone(), a.clone()]);
    let just_b = exported(pieces.body(&nix, std::slice::from_ref(&b)).await.unwrap()).await;
    assert_eq!(just_b, std::slice::from_ref(&b));
    assert_eq!(pieces.exports(), 1);
    // One new path: one more export, of that path only, appended after the others.
    assert_eq!(exported(pieces.body(&nix, &[c.clone(), a.clone()]).await.unwrap()).await, [c, a]);
    assert_eq!(pieces.exports(), 2);
}

#[tokio::test]
async fn hosts_asking_at_once_share_one_export() {
    let (_root, nix, paths) = store_with_paths().await;
    let pieces = Pieces::default();
    let bodies = futures_join(&pieces, &nix, &paths).await;
    assert_eq!(pieces.exports(), 1, "the second host waited for the first one's export");
    assert_eq!(bodies[0].sha256, bodies[1].sha256, "identical bodies");
}

async fn futures_join(pieces: &Pieces, nix: &Nix, paths: &[StorePath]) -> [ExportBody; 2] {
    let (x, y) = tokio::join!(pieces.body(nix, paths), pieces.body(nix, paths));
    [x.unwrap(), y.unwrap()]
}

#[tokio::test]
async fn a_path_the_store_lacks_is_an_error_and_leaves_the_pieces_usable() {
    let (_root, nix, paths) = store_with_paths().await;
    let pieces = Pieces::default();
    let absent: StorePath = "/nix/store/00000000000000000000000000000000-absent".parse().unwrap();
    let err = pieces.body(&nix, &[paths[0].clone(), absent]).await.unwrap_err();
    assert!(err.contains("nix-store") && err.contains("--export"), "the failing command is named: {err}");
    assert_eq!(exported(pieces.body(&nix, &paths[..2]).await.unwrap()).await, paths[..2]);
}
