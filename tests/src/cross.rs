//! Test programs for other machines, cross-compiled here: a static aarch64 program that
//! binfmt emulation runs (tests/binfmt.rs in a private binfmt_misc, tests/vm_boot.rs in a
//! guest's kernel).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{fail, run};

/// A static aarch64 program: prints (or, as a Nix builder, writes to `$out`) the machine
/// name the kernel reports, which under qemu user-mode emulation is `aarch64`.
const AARCH64_PROGRAM: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <sys/utsname.h>
int main(void) {
  struct utsname u;
  if (uname(&u) != 0) return 2;
  const char *out = getenv("out");
  FILE *f = out ? fopen(out, "w") : stdout;
  if (!f) return 3;
  fprintf(f, "%s\n", u.machine);
  return fclose(f) ? 4 : 0;
}
"#;

/// [`AARCH64_PROGRAM`] cross-compiled (static) into `dir/machine-aarch64`, with
/// aarch64-linux-gnu-gcc (tests/support/prereqs.sh --test installs it).
pub fn aarch64_program(dir: &Path) -> PathBuf {
    let src = dir.join("machine.c");
    let exe = dir.join("machine-aarch64");
    std::fs::write(&src, AARCH64_PROGRAM).unwrap_or_else(|e| fail(&format!("write {}: {e}", src.display())));
    let out = run(Command::new("aarch64-linux-gnu-gcc").arg("-static").arg("-O2").arg("-o").arg(&exe).arg(&src));
    if !out.status.success() {
        fail(&format!("cross-compiling failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    exe
}
