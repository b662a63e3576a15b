//! Benchmark (issue 15): how long a VM lane guest takes from power-on (qemu started) to
//! its agent answering HTTP, cold (a fresh overlay: first boot) and warm (a reboot of the
//! same guest). Needs the lane's environment: run it through `bench/vm-boot.sh [N]`,
//! which builds or reuses the image and picks the accelerator. Prints a Markdown table.
//! `bench/vm-boot.sh N uefi`: the same for the UEFI variant (OVMF, systemd-boot).
//! `bench/vm-boot.sh N resume`: guests resumed from the lane's template
//! (tests/src/vm/resume.rs) instead of booted: "power-on" is qemu started with the saved
//! state, "agent answering" comes after its own files went in over ssh and the agent
//! started (the template's own boot and save, once, is printed on stderr).

#![expect(clippy::expect_used, reason = "a benchmark binary: a failed step must stop it with its message")]

use std::time::Duration;

use hostctl_tests::vm::fleet::agent_yaml;
use hostctl_tests::vm::guest::Guest;
use hostctl_tests::vm::Lane;

fn seconds(d: &Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let mode = std::env::args().nth(2).unwrap_or_default();
    let create = match mode.as_str() {
        "uefi" => Guest::create_uefi,
        "resume" => hostctl_tests::vm::resume::create_resumed,
        _ => Guest::create,
    };
    let lane = Lane::from_env().expect("HOSTCTL_VM_IMAGE is not set: run bench/vm-boot.sh");
    let yaml = agent_yaml("bench1", "bench:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "");
    let first = if mode == "resume" {
        "resumed: qemu started → agent answering (s)"
    } else {
        "cold boot: power-on → agent answering (s)"
    };
    println!("| run | accelerator | {first} | reboot → agent answering (s) | load average (1 min) |");
    println!("|---|---|---|---|---|");
    for run in 1..=n {
        let mut guest = create(&lane, "bench1", &yaml, &[]);
        let cold = guest.boot();
        if run == 1 {
            // Where the boot went (to stderr: the table stays on stdout).
            let analysis = guest.ssh("systemd-analyze; systemd-analyze critical-chain hostctl-agent.service; uptime");
            eprintln!("{}", String::from_utf8_lossy(&analysis.stdout));
        }
        let warm = guest.reboot();
        if run == 1 {
            // How long the shutdown took (the previous boot's last entries, monotonic).
            let shutdown = guest.ssh("journalctl -b -1 -o short-monotonic --no-pager | tail -n 30");
            eprintln!("{}", String::from_utf8_lossy(&shutdown.stdout));
        }
        let firmware = match mode.as_str() {
            "uefi" => "UEFI",
            "resume" => "resumed",
            _ => "direct kernel",
        };
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load = load.split_whitespace().next().unwrap_or("?");
        println!("| {run} | {} {firmware} | {} | {} | {load} |", lane.accel, seconds(&cold), seconds(&warm));
    }
}
