//! Tracing one `nix eval` with strace, and reading from the trace what the evaluation
//! looked at in the flake's own source: files it opened (`read`) and directories it
//! listed (`listed`: getdents). Paths are relative to the source root, as git names them.
//!
//! Why a system-call trace: Nix has no record of what an evaluation read (`-vv` names
//! `import`ed files only, not `readFile` or `readDir`), and every way the evaluator
//! learns a file's content is an `open`. strace `-f` follows every thread and child, and
//! `-y` prints the path behind each descriptor, so `*at` calls and `getdents64` on a
//! descriptor resolve to paths without replaying the descriptor table.
//!
//! Lookups (the stat family, `access`, `readlink`) are not traced: a real NixOS host makes
//! ~28,000 of them and each strace stop costs ~130 µs. What a lookup can learn (whether
//! a path exists, its type, a symlink's target) changes only when a path is added,
//! deleted or changes type or mode, and `incremental` evaluates every host then.
//!
//! Soundness: whatever this module cannot account for is an [`Uncertain`] error, never a
//! guess: an unparsable line, a trace without the evaluator's exit (truncated), a write,
//! `exec` or `chdir` inside the source, a relative path it cannot resolve that names the
//! source, `..` in a path into the source, the source reached under two different roots.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The system calls traced: those that open or list (what the evaluation read), and
/// those refused inside the source (writes, `exec`, `chdir`, `getcwd`); `%file` without
/// the lookups (see the module doc). `?`: no error where this strace or architecture
/// lacks a call.
pub const TRACED: &str = "open,openat,?openat2,creat,?open_by_handle_at,getdents,getdents64,getcwd,\
execve,execveat,chdir,fchdir,chroot,mkdir,mkdirat,rmdir,unlink,unlinkat,rename,renameat,?renameat2,\
link,linkat,symlink,symlinkat,mknod,mknodat,chmod,fchmodat,?fchmodat2,chown,lchown,fchownat,truncate,\
utime,utimes,utimensat,futimesat,setxattr,lsetxattr,removexattr,lremovexattr,mount,umount2,pivot_root,\
swapon,swapoff,acct";

/// strace, if it can trace on this machine.
#[derive(Debug, Clone)]
pub struct Tracer {
    /// `--seccomp-bpf`: only traced system calls stop the tracee (much cheaper), where
    /// the kernel allows it.
    seccomp: bool,
}

impl Tracer {
    /// strace from `PATH`, checked by tracing `true` once; `None` when it is missing or
    /// cannot trace here (no ptrace in a container, say).
    pub async fn probe() -> Option<Self> {
        for seccomp in [true, false] {
            let tracer = Tracer { seccomp };
            let mut argv = tracer.wrapper(Path::new("/dev/null"));
            argv.push("true".to_owned());
            let out = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .output()
                .await;
            match out {
                Ok(out) if out.status.success() && out.stderr.is_empty() => return Some(tracer),
                Ok(out) => {
                    tracing::debug!(seccomp, stderr = %String::from_utf8_lossy(&out.stderr), "strace cannot trace")
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot run strace ({e}): incremental evaluation is off, every host of a new commit is \
                         evaluated in full (install strace to reuse evaluations across commits)"
                    );
                    return None;
                }
            }
        }
        tracing::warn!(
            "strace cannot trace here (ptrace not permitted?): incremental evaluation is off, every host of a new \
             commit is evaluated in full"
        );
        None
    }

    /// The argv prefix that runs a command under strace, writing the trace to `out`.
    pub fn wrapper(&self, out: &Path) -> Vec<String> {
        let mut argv: Vec<String> = ["strace", "-f"].map(str::to_owned).to_vec();
        if self.seccomp {
            argv.push("--seccomp-bpf".to_owned());
        }
        // -q: no attach/detach chatter, but keep `+++ exited with N +++`, the proof that
        // the trace is complete. -y: paths behind descriptors.
        let trace = format!("trace={TRACED}");
        let rest = ["-q", "-y", "-e", "signal=none", "-e", trace.as_str(), "-o"];
        argv.extend(rest.map(str::to_owned));
        argv.push(out.to_string_lossy().into_owned());
        argv.push("--".to_owned());
        argv
    }
}

/// What one evaluation did in the flake's source.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SourceAccess {
    /// Where the source was on disk (a `local?root=` store puts its prefix in front).
    pub root: PathBuf,
    pub read: BTreeSet<String>,
    pub listed: BTreeSet<String>,
}

/// Why a trace cannot vouch for what an evaluation read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Uncertain {
    #[error("trace line {line}: cannot read `{text}`")]
    Unparsed { line: usize, text: String },
    #[error("the trace ends before the evaluator exited with 0 (truncated?)")]
    Truncated,
    #[error("trace line {line}: {what} `{path}` in the flake's source")]
    Touched { line: usize, what: &'static str, path: String },
    #[error("trace line {line}: `{path}` may lie in the flake's source but cannot be resolved")]
    Unresolved { line: usize, path: String },
    #[error("the flake's source was reached under two roots: {a} and {b}")]
    TwoRoots { a: String, b: String },
    #[error("the evaluation never read {file}: it evaluated another source")]
    NotThisSource { file: String },
}

/// What a system call does to the path it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// open: a read if it succeeds, a lookup otherwise.
    Open,
    /// Learns existence or type only; not traced (see the module doc), ignored if seen.
    Lookup,
    List,
    Write,
    Exec,
    Chdir,
}

/// Where a call's path is: `(dirfd argument, path argument)`; a missing path argument
/// means the descriptor itself.
type PathArg = (Option<usize>, Option<usize>);

fn classify(name: &str) -> Option<(Op, &'static [PathArg])> {
    const P0: &[PathArg] = &[(None, Some(0))];
    const P1: &[PathArg] = &[(None, Some(1))];
    const AT: &[PathArg] = &[(Some(0), Some(1))];
    const FD: &[PathArg] = &[(Some(0), None)];
    const TWO: &[PathArg] = &[(None, Some(0)), (None, Some(1))];
    const TWO_AT: &[PathArg] = &[(Some(0), Some(1)), (Some(2), Some(3))];
    const SYMLINKAT: &[PathArg] = &[(Some(1), Some(2))];
    Some(match name {
        "open" => (Op::Open, P0),
        "openat" | "openat2" => (Op::Open, AT),
        // No path: what it opened is the descriptor it returns.
        "open_by_handle_at" => (Op::Open, &[]),
        "stat" | "lstat" | "stat64" | "lstat64" | "oldstat" | "oldlstat" | "access" | "readlink" | "statfs"
        | "statfs64" | "getxattr" | "lgetxattr" | "listxattr" | "llistxattr" | "uselib" => (Op::Lookup, P0),
        "inotify_add_watch" => (Op::Lookup, P1),
        "newfstatat" | "fstatat64" | "statx" | "faccessat" | "faccessat2" | "readlinkat" | "name_to_handle_at" => {
            (Op::Lookup, AT)
        }
        "getdents" | "getdents64" => (Op::List, FD),
        "creat" | "mkdir" | "rmdir" | "unlink" | "chmod" | "chown" | "lchown" | "utime" | "utimes" | "truncate"
        | "truncate64" | "mknod" | "setxattr" | "lsetxattr" | "removexattr" | "lremovexattr" | "acct" | "swapon"
        | "swapoff" | "umount" | "umount2" => (Op::Write, P0),
        "mount" | "rename" | "link" | "pivot_root" => (Op::Write, TWO),
        "symlink" => (Op::Write, P1),
        "mkdirat" | "unlinkat" | "fchmodat" | "fchmodat2" | "fchownat" | "utimensat" | "futimesat" | "mknodat" => {
            (Op::Write, AT)
        }
        "renameat" | "renameat2" | "linkat" => (Op::Write, TWO_AT),
        "symlinkat" => (Op::Write, SYMLINKAT),
        "execve" => (Op::Exec, P0),
        "execveat" => (Op::Exec, AT),
        "chdir" | "chroot" => (Op::Chdir, P0),
        "fchdir" => (Op::Chdir, FD),
        _ => return None,
    })
}

/// The outcome of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ret {
    Ok,
    Failed,
    /// `= ?`: the process went away during the call.
    Unknown,
}

/// Reads a whole strace output (`-f -y`, as [`Tracer::wrapper`] asks for) and returns what
/// the traced processes did under the store path `source` (`/nix/store/<hash>-source`).
pub fn source_access(trace: &str, source: &str) -> Result<SourceAccess, Uncertain> {
    let mut scan = Scan::new(source);
    let mut pending: HashMap<u32, (usize, String)> = HashMap::new();
    let mut root_pid = None;
    let mut root_exited = false;
    for (i, raw) in trace.lines().enumerate() {
        let line = i + 1;
        let unparsed = || Uncertain::Unparsed { line, text: raw.chars().take(200).collect() };
        if raw.trim().is_empty() {
            continue;
        }
        let (pid, body) = split_pid(raw).ok_or_else(unparsed)?;
        let root = *root_pid.get_or_insert(pid);
        if let Some(status) = body.strip_prefix("+++ ") {
            if pid == root && status.trim_end() == "exited with 0 +++" {
                root_exited = true;
            }
            if let Some((start, text)) = pending.remove(&pid) {
                scan.call(start, &format!("{text}) = ?"))?;
            }
            continue;
        }
        if body.starts_with("--- ") {
            continue;
        }
        if let Some(rest) = body.strip_prefix("<... ") {
            let (_, after) = rest.split_once("resumed>").ok_or_else(unparsed)?;
            let (start, text) = pending.remove(&pid).ok_or_else(unparsed)?;
            scan.call(start, &format!("{text}{after}"))?;
        } else if let Some(text) = body.strip_suffix(" <unfinished ...>") {
            if pending.insert(pid, (line, text.to_owned())).is_some() {
                return Err(unparsed());
            }
        } else {
            scan.call(line, body)?;
        }
    }
    for (start, text) in pending.into_values() {
        scan.call(start, &format!("{text}) = ?"))?;
    }
    if !root_exited {
        return Err(Uncertain::Truncated);
    }
    scan.finish()
}

/// `1234  openat(...)` -> (1234, "openat(...)"). Without `-f` strace prints no pid.
fn split_pid(line: &str) -> Option<(u32, &str)> {
    let trimmed = line.trim_start();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Some((0, trimmed));
    }
    let rest = &trimmed[digits..];
    let body = rest.trim_start();
    (body.len() < rest.len()).then_some(())?;
    Some((trimmed[..digits].parse().ok()?, body))
}

/// The accumulated accesses, and what is needed to place paths in the source.
struct Scan<'s> {
    source: &'s str,
    /// The source's own name (`<hash>-source`): a path that cannot be resolved but holds
    /// it might be inside.
    name: &'s str,
    root: Option<String>,
    access: SourceAccess,
}

impl<'s> Scan<'s> {
    fn new(source: &'s str) -> Self {
        let name = source.rsplit('/').next().unwrap_or(source);
        Self { source, name, root: None, access: SourceAccess::default() }
    }

    /// One complete call, `name(args) = result`.
    fn call(&mut self, line: usize, text: &str) -> Result<(), Uncertain> {
        let unparsed = || Uncertain::Unparsed { line, text: text.chars().take(200).collect() };
        let (name, rest) = text.split_once('(').ok_or_else(unparsed)?;
        let (args, tail) = split_args(rest).ok_or_else(unparsed)?;
        parse_ret(tail).ok_or_else(unparsed)?;
        for arg in &args {
            // The working directory inside the source: relative paths would be in it.
            if let Some(cwd) = arg.strip_prefix("AT_FDCWD").and_then(decoration) {
                if self.place(line, &cwd)?.is_some() {
                    return Err(Uncertain::Touched { line, what: "working directory", path: cwd });
                }
            }
        }
        let Some((op, paths)) = classify(name) else {
            return self.unknown(line, name, &args);
        };
        if op == Op::Open {
            return self.open(line, name, &args, tail, paths);
        }
        for &(dirfd, path) in paths {
            let target = match target(&args, dirfd, path).ok_or_else(unparsed)? {
                Ok(target) => target,
                Err(raw) => {
                    self.unresolved(line, &raw)?;
                    continue;
                }
            };
            let Some(rel) = self.place(line, &target)? else { continue };
            match op {
                Op::Open | Op::Lookup => {}
                Op::List => {
                    self.access.listed.insert(rel);
                }
                Op::Exec => return Err(Uncertain::Touched { line, what: "executes", path: target }),
                Op::Chdir => return Err(Uncertain::Touched { line, what: "changes directory to", path: target }),
                Op::Write => return Err(Uncertain::Touched { line, what: "writes", path: target }),
            }
        }
        Ok(())
    }

    /// An open: a read of the path it names and of the path behind the descriptor it
    /// returns (they differ after a symlink or for `/proc/self/fd/N`), if it succeeded
    /// or its fate is unknown and it was neither a write nor a directory or handle.
    fn open(&mut self, line: usize, name: &str, args: &[&str], tail: &str, paths: &[PathArg]) -> Result<(), Uncertain> {
        let unparsed = || Uncertain::Unparsed { line, text: format!("{name}({})", args.join(", ")) };
        let ret = parse_ret(tail).ok_or_else(unparsed)?;
        let flags = args.get(if name == "open" { 1 } else { 2 }).copied().unwrap_or("");
        let op = open_kind(flags, ret);
        let mut opened = Vec::new();
        for &(dirfd, path) in paths {
            match target(args, dirfd, path).ok_or_else(unparsed)? {
                Ok(target) => opened.push(target),
                Err(raw) => self.unresolved(line, &raw)?,
            }
        }
        opened.extend(decoration(tail.trim()));
        for target in opened {
            let Some(rel) = self.place(line, &target)? else { continue };
            match op {
                Op::Write => return Err(Uncertain::Touched { line, what: "writes", path: target }),
                Op::Open => {
                    self.access.read.insert(rel);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A call this module does not know: harmless unless one of its strings is a path
    /// into the source.
    fn unknown(&mut self, line: usize, name: &str, args: &[&str]) -> Result<(), Uncertain> {
        for arg in args {
            if let Some(path) = quoted(arg).or_else(|| decoration(arg)) {
                if path.contains(self.name) {
                    return Err(Uncertain::Touched {
                        line,
                        what: "an unknown call names",
                        path: format!("{name}: {path}"),
                    });
                }
            }
        }
        Ok(())
    }

    fn unresolved(&self, line: usize, path: &str) -> Result<(), Uncertain> {
        if path.contains(self.name) {
            return Err(Uncertain::Unresolved { line, path: path.to_owned() });
        }
        Ok(())
    }

    /// The path relative to the source if `path` is in it (`""` for the root itself).
    fn place(&mut self, line: usize, path: &str) -> Result<Option<String>, Uncertain> {
        if !path.contains(self.name) {
            return Ok(None);
        }
        let Some(norm) = normalize(path) else {
            return Err(Uncertain::Unresolved { line, path: path.to_owned() });
        };
        let Some(at) = find_component(&norm, self.source) else {
            return Ok(None);
        };
        let (prefix, rest) = (&norm[..at], &norm[at + self.source.len()..]);
        match &self.root {
            Some(root) if root != prefix => {
                return Err(Uncertain::TwoRoots { a: root.clone(), b: prefix.to_owned() });
            }
            Some(_) => {}
            None => self.root = Some(prefix.to_owned()),
        }
        Ok(Some(rest.trim_start_matches('/').to_owned()))
    }

    fn finish(mut self) -> Result<SourceAccess, Uncertain> {
        self.access.root = PathBuf::from(format!("{}{}", self.root.unwrap_or_default(), self.source));
        Ok(self.access)
    }
}

/// The absolute path a call's path argument names (`Ok`), or the raw text of one that
/// cannot be resolved (`Err`: relative without a known directory, unreadable);
/// `None` when the arguments are not there at all.
fn target(args: &[&str], dirfd: Option<usize>, path: Option<usize>) -> Option<Result<String, String>> {
    let dir = match dirfd {
        Some(i) => Some(decoration(args.get(i)?)),
        None => None,
    };
    let Some(i) = path else {
        // The descriptor itself (getdents64, fchdir).
        return Some(dir.flatten().ok_or_else(|| args.first().copied().unwrap_or("").to_owned()));
    };
    let arg = *args.get(i)?;
    Some(match (quoted(arg), dir) {
        (Some(p), _) if p.starts_with('/') => Ok(p),
        (Some(p), Some(Some(d))) if p.is_empty() => Ok(d),
        (Some(p), Some(Some(d))) => Ok(format!("{d}/{p}")),
        (None, Some(Some(d))) if arg == "NULL" => Ok(d),
        (Some(p), _) => Err(p),
        (None, _) => Err(arg.to_owned()),
    })
}

/// What an `open` of a path in the source was: a read (it succeeded, or its fate is
/// unknown), or a lookup (it failed, or it opened a directory or only a handle).
fn open_kind(flags: &str, ret: Ret) -> Op {
    let has = |f: &str| flags.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|w| w == f);
    if ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_TMPFILE", "O_APPEND"].iter().any(|f| has(f)) {
        Op::Write
    } else if has("O_DIRECTORY") || has("O_PATH") || ret == Ret::Failed {
        Op::Lookup
    } else {
        Op::Open
    }
}

/// Where `needle` starts in `path` as whole components, if it does.
fn find_component(path: &str, needle: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = path[from..].find(needle) {
        let at = from + found;
        let end = at + needle.len();
        if path[end..].is_empty() || path[end..].starts_with('/') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// `/a//b/./c` -> `/a/b/c`; `None` for `..` (a symlink could make it mean anything).
fn normalize(path: &str) -> Option<String> {
    let mut out = String::with_capacity(path.len());
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => {
                out.push('/');
                out.push_str(p);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// Splits `a, "b, c", {d, e}) = 0` into its top-level arguments and what follows the `)`.
fn split_args(text: &str) -> Option<(Vec<&str>, &str)> {
    let bytes = text.as_bytes();
    let (mut depth, mut start, mut i) = (0usize, 0usize, 0usize);
    let mut args = Vec::new();
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            // strace escapes `<` and `>` inside the path it shows, so the next `>` ends it.
            b'<' => i += text[i..].find('>')?,
            b'/' if bytes.get(i + 1) == Some(&b'*') => i += text[i..].find("*/")? + 1,
            b'{' | b'[' | b'(' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b')' if depth == 0 => {
                let last = text[start..i].trim();
                if !(args.is_empty() && last.is_empty()) {
                    args.push(last);
                }
                return Some((args, &text[i + 1..]));
            }
            b')' => depth -= 1,
            b',' if depth == 0 => {
                args.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// ` = 3</x>`, ` = -1 ENOENT (...)`, ` = ?`.
fn parse_ret(tail: &str) -> Option<Ret> {
    let value = tail.trim_start().strip_prefix('=')?.trim_start();
    Some(if value.starts_with('?') {
        Ret::Unknown
    } else if value.starts_with('-') {
        Ret::Failed
    } else if value.starts_with(|c: char| c.is_ascii_digit()) {
        Ret::Ok
    } else {
        return None;
    })
}

/// The text of a quoted argument (`"a\"b"` -> `a"b`); `None` if it is not a complete
/// quoted string (an address strace could not read, a truncated string) or not UTF-8.
fn quoted(arg: &str) -> Option<String> {
    let inner = arg.strip_prefix('"')?.strip_suffix('"')?;
    unescape(inner)
}

/// The path strace shows behind a descriptor (`3</a/b>`, `AT_FDCWD</cwd>`), if it is one.
fn decoration(arg: &str) -> Option<String> {
    let start = arg.find('<')?;
    let inner = arg[start + 1..].strip_suffix('>')?;
    inner.starts_with('/').then(|| unescape(inner)).flatten()
}

/// Undoes strace's C-style escapes: `\"`, `\\`, `\n` and friends, `\xHH`, `\NNN` (octal).
fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let c = *bytes.get(i + 1)?;
        i += 2;
        match c {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'v' => out.push(0x0b),
            b'f' => out.push(0x0c),
            b'x' => {
                let hex = text.get(i..i + 2)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let digits = bytes[i - 1..].iter().take(3).take_while(|b| (b'0'..=b'7').contains(b)).count();
                out.push(u8::try_from(u32::from_str_radix(&text[i - 1..i - 1 + digits], 8).ok()?).ok()?);
                i += digits - 1;
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
#[path = "evaltrace_tests.rs"]
mod tests;
