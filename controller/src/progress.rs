//! Progress: what each host is doing, as events on a channel, drawn by one renderer on
//! stderr (stdout stays free for `--json`). On a terminal, one line per host redrawn in
//! place (indicatif); otherwise, e.g. in CI logs and pipes, plain timestamped lines
//! (`13:07:12.345Z web1: pushing 12 paths (3.4 MiB)`, UTC as the `Z` says). A host that ends failed gets the
//! last lines of the failing step's log under it.
//!
//! Invariant: progress never fails a command and never writes to stdout; with no renderer
//! running (unit tests), events become plain lines.

use std::fmt::Display;
use std::io::{IsTerminal as _, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;

use hostctl_schemas::ids::HostName;

/// Log lines shown under a failed host.
const TAIL_LINES: usize = 10;

/// One thing that happened to a host.
#[derive(Debug)]
enum Event {
    Step { host: String, message: String },
    Finished { host: String, message: String, failed: bool, tail: Vec<String> },
}

static SINK: OnceLock<Mutex<Option<Sender<Event>>>> = OnceLock::new();

fn send(event: Event) {
    let sink = SINK.get().and_then(|m| m.lock().ok().and_then(|s| s.clone()));
    match sink {
        Some(tx) => {
            if let Err(e) = tx.send(event) {
                Plain.render(&e.0);
            }
        }
        None => Plain.render(&event),
    }
}

/// Reports `host`'s current step (`pushing 12 paths (3.4 MiB)`).
pub fn step(host: &HostName, message: impl Display) {
    send(Event::Step { host: host.to_string(), message: message.to_string() });
}

/// Reports how `host` ended; `log` (a failed step's output, if any) is shown by its last
/// lines under the host when it `failed`.
pub fn finished(host: &HostName, message: impl Display, failed: bool, log: Option<&str>) {
    let lines: Vec<String> = log.map(|l| l.lines().map(str::to_owned).collect()).unwrap_or_default();
    let tail = if failed { lines[lines.len().saturating_sub(TAIL_LINES)..].to_vec() } else { Vec::new() };
    send(Event::Finished { host: host.to_string(), message: message.to_string(), failed, tail });
}

/// The running renderer; [`Renderer::finish`] (or drop) flushes it.
#[derive(Debug)]
pub struct Renderer {
    thread: Option<JoinHandle<()>>,
}

/// Starts the renderer for this process: indicatif when stderr is a terminal.
pub fn start() -> Renderer {
    let (tx, rx) = channel();
    let sink = SINK.get_or_init(|| Mutex::new(None));
    if let Ok(mut slot) = sink.lock() {
        *slot = Some(tx);
    }
    let terminal = std::io::stderr().is_terminal();
    let thread = std::thread::Builder::new()
        .name("progress".into())
        .spawn(move || if terminal { Bars::default().run(rx) } else { Plain.run(rx) })
        .ok();
    Renderer { thread }
}

impl Renderer {
    /// Closes the channel and waits until everything sent was drawn.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(Ok(mut slot)) = SINK.get().map(Mutex::lock) {
            *slot = None;
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Plain lines with a UTC time of day (`13:07:12.345Z`).
struct Plain;

impl Plain {
    fn run(self, rx: Receiver<Event>) {
        for event in rx {
            self.render(&event);
        }
    }

    fn render(&self, event: &Event) {
        let mut err = std::io::stderr().lock();
        let now = time_of_day();
        let _ = match event {
            Event::Step { host, message } => writeln!(err, "{now} {host}: {message}"),
            Event::Finished { host, message, tail, .. } => writeln!(err, "{now} {host}: {message}")
                .and_then(|()| tail.iter().try_for_each(|l| writeln!(err, "{now} {host}:   | {l}"))),
        };
    }
}

/// `HH:MM:SS.mmmZ` now; the `Z` (ISO 8601's UTC) says these are not local times.
fn time_of_day() -> String {
    utc_time_of_day(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default())
}

fn utc_time_of_day(since_epoch: std::time::Duration) -> String {
    let (secs, millis) = (since_epoch.as_secs() % 86_400, since_epoch.subsec_millis());
    format!("{:02}:{:02}:{:02}.{millis:03}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// One redrawn line per host.
#[derive(Default)]
struct Bars {
    multi: indicatif::MultiProgress,
    hosts: std::collections::BTreeMap<String, indicatif::ProgressBar>,
}

impl Bars {
    fn run(mut self, rx: Receiver<Event>) {
        for event in rx {
            match event {
                Event::Step { host, message } => self.bar(&host).set_message(message),
                Event::Finished { host, message, failed, tail } => {
                    let bar = self.bar(&host);
                    let mark = if failed { "✗" } else { "✓" };
                    bar.finish_with_message(format!("{mark} {message}"));
                    for line in tail {
                        let _ = self.multi.println(format!("    {host} | {line}"));
                    }
                }
            }
        }
        // Hosts whose last event was a step (e.g. `eval`, which has no outcome line)
        // stop spinning and keep their last message.
        for bar in self.hosts.values().filter(|b| !b.is_finished()) {
            bar.finish();
        }
    }

    fn bar(&mut self, host: &str) -> &indicatif::ProgressBar {
        let multi = &self.multi;
        self.hosts.entry(host.to_owned()).or_insert_with(|| {
            let bar = multi.add(indicatif::ProgressBar::new_spinner());
            let style = indicatif::ProgressStyle::with_template("{spinner} {prefix:>12.bold} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_prefix(host.to_owned());
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        })
    }
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

    #[test]
    fn times_of_day_are_fixed_width_and_marked_utc() {
        let t = super::time_of_day();
        assert_eq!(t.len(), 13, "{t}");
        assert_eq!((&t[2..3], &t[5..6], &t[8..9], &t[12..]), (":", ":", ".", "Z"));
        let at = std::time::Duration::from_millis(1_765_113_432_345);
        assert_eq!(super::utc_time_of_day(at), "13:17:12.345Z");
        assert_eq!(super::utc_time_of_day(std::time::Duration::ZERO), "00:00:00.000Z");
    }
}
