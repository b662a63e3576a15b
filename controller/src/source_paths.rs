//! Nix names the flake's files by their copy in the store (`/nix/store/…-source/hosts/web1.nix`);
//! the messages hostctl prints name the working-tree file (`/srv/infra/hosts/web1.nix`) an
//! editor can open. Only the flake's own source is mapped, never an input's `-source`.

use std::path::Path;

/// `message` with every occurrence of the store path `store` (as a whole path component)
/// replaced by `root`.
pub fn replace_store_prefix(message: &str, store: &str, root: &Path) -> String {
    let root = root.display().to_string();
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(store) {
        let after = &rest[at + store.len()..];
        let whole = !after.starts_with(|c: char| c.is_ascii_alphanumeric() || "-._+?=".contains(c));
        out.push_str(&rest[..at]);
        out.push_str(if whole { &root } else { store });
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::replace_store_prefix;
    use std::path::Path;

    #[test]
    fn maps_the_flake_source_only() {
        let store = "/nix/store/0a5kvy1fr2x8wmp6gvs4srqscpz4kf48-source";
        let message = format!(
            "error: undefined variable 'pkgs'\n       at {store}/hosts/web1.nix:3:5:\n       \
             … while evaluating /nix/store/zzzzvy1fr2x8wmp6gvs4srqscpz4kf48-source/lib/default.nix\n\
             in {store}-other/x and «{store}»"
        );
        assert_eq!(
            replace_store_prefix(&message, store, Path::new("/srv/infra")),
            "error: undefined variable 'pkgs'\n       at /srv/infra/hosts/web1.nix:3:5:\n       \
             … while evaluating /nix/store/zzzzvy1fr2x8wmp6gvs4srqscpz4kf48-source/lib/default.nix\n\
             in /nix/store/0a5kvy1fr2x8wmp6gvs4srqscpz4kf48-source-other/x and «/srv/infra»"
        );
    }
}
