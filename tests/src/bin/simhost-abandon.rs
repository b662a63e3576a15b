//! Test helper for `simhost::a_slot_left_by_a_killed_test_process_is_reclaimed`: creates a
//! simulated host, prints its netns and root, and waits to be killed (SIGKILL, so its
//! `Drop` never runs: exactly what a test killed from outside leaves behind).

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "abandoned".to_owned());
    let host = hostctl_tests::simhost::SimHost::create(&name);
    println!("{} {}", host.netns, host.root.display());
    loop {
        std::thread::park();
    }
}
