//! cargo-fuzz target `export_stream`: the properties of `hostctl_fuzz::export_stream` (a broken one panics).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = hostctl_fuzz::export_stream::check(data) {
        panic!("export_stream: {broken}");
    }
});
