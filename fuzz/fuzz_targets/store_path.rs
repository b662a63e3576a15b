//! cargo-fuzz target `store_path`: the properties of `hostctl_fuzz::store_path` (a broken one panics).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = hostctl_fuzz::store_path::check(data) {
        panic!("store_path: {broken}");
    }
});
