//! cargo-fuzz target `bundle_header`: the properties of `hostctl_fuzz::bundle_header` (a broken one panics).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = hostctl_fuzz::bundle_header::check(data) {
        panic!("bundle_header: {broken}");
    }
});
