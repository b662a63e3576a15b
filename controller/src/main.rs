//! `hostctl`: the fleet controller CLI.
fn main() {}
