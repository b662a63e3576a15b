//! `hostctl-agent`: the per-host daemon.
fn main() {}
