//! The agent's version as it reports it (`GET /v1/status` `version`, which `hostctl
//! status` compares with its own): the crate's version, kept in one static after a fixed
//! marker ([`MARKER`], then [`VERSION_LEN`] bytes, NUL-padded) and read from there at run
//! time, so a built binary can be stamped with another version by rewriting those bytes.
//! The VM lane does so to ship a second agent that differs only in its version
//! (tests/src/vm/upgrade.rs).

/// What precedes the version bytes in the binary (once).
pub const MARKER: &[u8; 32] = b"\0hostctl-agent version stamp:\0\0\0";

/// Room for the version after the marker, NUL-padded.
pub const VERSION_LEN: usize = 32;

#[used]
static STAMP: [u8; 64] = stamp(env!("CARGO_PKG_VERSION"));

/// The marker followed by `version` NUL-padded to [`VERSION_LEN`] bytes (cut there).
pub const fn stamp(version: &str) -> [u8; 64] {
    let mut out = [0u8; 64];
    let mut i = 0;
    while i < MARKER.len() {
        out[i] = MARKER[i];
        i += 1;
    }
    let bytes = version.as_bytes();
    let mut j = 0;
    while j < bytes.len() && j < VERSION_LEN {
        out[MARKER.len() + j] = bytes[j];
        j += 1;
    }
    out
}

/// The version the binary holds (read through `black_box`, so it is the bytes in the
/// file, not a constant the compiler folded in).
pub fn version() -> String {
    let stamp: &[u8; 64] = std::hint::black_box(&STAMP);
    let bytes = &stamp[MARKER.len()..];
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(VERSION_LEN);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stamp_is_the_crate_version() {
        assert_eq!(super::version(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn a_stamp_is_the_marker_then_the_version_nul_padded_and_cut_at_its_length() {
        let s = super::stamp("1.2.3");
        assert_eq!(&s[..32], super::MARKER);
        assert_eq!(&s[32..38], b"1.2.3\0");
        assert_eq!(&super::stamp(&"x".repeat(40))[32..], [b'x'; super::VERSION_LEN]);
    }
}
