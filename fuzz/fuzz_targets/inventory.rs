//! cargo-fuzz target `inventory`: the properties of `hostctl_fuzz::inventory` (a broken one panics).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = hostctl_fuzz::inventory::check(data) {
        panic!("inventory: {broken}");
    }
});
