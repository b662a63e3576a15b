//! cargo-fuzz target `agent_config`: the properties of `hostctl_fuzz::agent_config` (a broken one panics).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = hostctl_fuzz::agent_config::check(data) {
        panic!("agent_config: {broken}");
    }
});
