//! Progress: one plain line per host step on stderr (`web1: pushing 12 paths (3.4 MiB)`).
//! Plain lines rather than a redrawn display, so logs and pipes read the same as a
//! terminal; stdout stays free for `--json`.

use std::fmt::Display;
use std::io::Write;

use hostctl_schemas::ids::HostName;

/// Prints `host: message` to stderr. A closed stderr is ignored: progress is optional.
pub fn step(host: &HostName, message: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{host}: {message}");
}

/// A byte count for humans: `512 B`, `3.4 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_for_humans() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(1023), "1023 B");
        assert_eq!(super::bytes(1024), "1.0 KiB");
        assert_eq!(super::bytes(3_565_158), "3.4 MiB");
        assert_eq!(super::bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
