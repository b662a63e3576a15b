//! cargo-fuzz target `flake_lock`: the properties of `hostctl_fuzz::flake_lock` (a broken one panics).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = hostctl_fuzz::flake_lock::check(data) {
        panic!("flake_lock: {broken}");
    }
});
