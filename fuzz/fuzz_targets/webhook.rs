//! cargo-fuzz target `webhook`: the properties of `hostctl_fuzz::webhook` (a broken one panics).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = hostctl_fuzz::webhook::check(data) {
        panic!("webhook: {broken}");
    }
});
