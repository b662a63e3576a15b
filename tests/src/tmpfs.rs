//! Small tmpfs mounts for disk-full faults: a simulated host's `/nix` or an agent's
//! `state_dir` on a file system that runs out of space.
//!
//! The mount lives in the test's (root) mount namespace under `/tmp/hostctl-tmpfs-*`,
//! outside every host's ROOT (a mount under ROOT would count as one leaked from a host):
//! processes started in a host later copy it into their own mount namespace, so they all
//! share the one file system. [`Tmpfs::hold_nix_of`] makes ROOT/nix a symlink to it, which
//! the host's `mount --bind ROOT/nix /nix` follows. Unmounted and removed on drop.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::simhost::SimHost;
use crate::{fail, run};

/// Pages are the unit a tmpfs counts in.
pub const PAGE: u64 = 4096;

/// A mounted tmpfs; unmounted (lazily if busy) and its directory removed on drop.
#[derive(Debug)]
pub struct Tmpfs {
    /// The mount point.
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=`, e.g. `4m`) with root directory mode
    /// `mode` (e.g. `0700`) at a fresh `/tmp/hostctl-tmpfs-*`.
    pub fn mount(size: &str, mode: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("hostctl-tmpfs-")
            .tempdir()
            .unwrap_or_else(|e| fail(&format!("cannot create a mount point: {e}")))
            .keep();
        let fs = Tmpfs { dir };
        let options = format!("size={size},mode={mode}");
        fs.mount_cmd(&["-t", "tmpfs", "-o", &options, "hostctl-test", &fs.dir.to_string_lossy()]);
        fs
    }

    /// Grows or shrinks it (`mount -o remount,size=`): more room, as an operator would
    /// make by growing the volume.
    pub fn resize(&self, size: &str) {
        self.mount_cmd(&["-o", &format!("remount,size={size}"), &self.dir.to_string_lossy()]);
    }

    fn mount_cmd(&self, args: &[&str]) {
        let out = run(Command::new("mount").args(args));
        if !out.status.success() {
            fail(&format!("mount {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
        }
    }

    /// Free bytes (`stat -f`: available blocks times block size).
    pub fn available(&self) -> u64 {
        let out = run(Command::new("stat").args(["-f", "-c", "%a %S"]).arg(&self.dir));
        let text = String::from_utf8_lossy(&out.stdout);
        let mut numbers = text.split_whitespace().filter_map(|n| n.parse::<u64>().ok());
        match (numbers.next(), numbers.next()) {
            (Some(blocks), Some(size)) => blocks * size,
            _ => fail(&format!("stat -f {}: {text}", self.dir.display())),
        }
    }

    /// Writes zeros to `<dir>/<name>` until the file system is full; returns the file.
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| fail(&format!("cannot open {}: {e}", path.display())));
        let chunk = vec![0u8; PAGE as usize];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => fail(&format!("cannot fill {}: {e}", path.display())),
            }
        }
        path
    }

    /// Shrinks `filler` (from [`Tmpfs::fill`]) so that exactly `pages` pages are free.
    pub fn leave_free(&self, filler: &Path, pages: u64) {
        let free_now = self.available() / PAGE;
        let len = std::fs::metadata(filler).map(|m| m.len()).unwrap_or(0);
        let shrink = pages.saturating_sub(free_now) * PAGE;
        if shrink > len {
            fail(&format!("{} is too small to free {pages} pages", filler.display()));
        }
        let file = std::fs::OpenOptions::new().write(true).open(filler);
        file.and_then(|f| f.set_len(len - shrink))
            .unwrap_or_else(|e| fail(&format!("cannot shrink {}: {e}", filler.display())));
        let free = self.available() / PAGE;
        if free != pages {
            fail(&format!("{}: {free} pages free, wanted {pages}", self.dir.display()));
        }
    }

    /// Puts host `host`'s `/nix` on this file system: ROOT/nix becomes a symlink to it and
    /// gets a fresh store (`nix-store --init`). The host's agent must not be running.
    pub fn hold_nix_of(&self, host: &SimHost) {
        if host.agent_pid().is_some() {
            fail(&format!("host {}: stop the agent before moving its /nix", host.name));
        }
        let nix = host.root.join("nix");
        std::fs::remove_dir_all(&nix)
            .and_then(|()| std::os::unix::fs::symlink(&self.dir, &nix))
            .unwrap_or_else(|e| fail(&format!("cannot replace {} by a symlink: {e}", nix.display())));
        let init = host.run_in(&["nix-store", "--init"]);
        if !init.status.success() {
            fail(&format!("nix-store --init on {}: {}", self.dir.display(), String::from_utf8_lossy(&init.stderr)));
        }
    }
}

impl Drop for Tmpfs {
    /// Never panics; problems become warnings.
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        let unmounted = Command::new("umount").arg(&dir).output().is_ok_and(|o| o.status.success())
            || Command::new("umount").args(["--lazy", &dir]).output().is_ok_and(|o| o.status.success());
        // Also when the mount itself failed: then the directory is all there is.
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("warning: cannot remove {dir} (unmounted: {unmounted}): {e}");
        }
    }
}
