//! cargo-fuzz target `request_signature`: the properties of `hostctl_fuzz::request_signature` (a broken one panics).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = hostctl_fuzz::request_signature::check(data) {
        panic!("request_signature: {broken}");
    }
});
