//! Nix invocations as values: every `nix`, `nix-store` and `nix-env` argv hostctl uses is
//! built here, so tests can inspect it without running Nix.
//!
//! Invariant: values reach Nix only as separate argv elements (store paths, attribute
//! names validated by `hostctl-schemas`); no Nix code or shell text is ever assembled
//! from input. The only Nix code passed is the constant `--apply` functions below.

use std::fmt;
use std::path::{Component, Path};

use hostctl_schemas::builders::Builders;
use hostctl_schemas::ids::{AttrName, StorePath};
use hostctl_schemas::key::PublicKey;

use crate::profile::Profile;
use crate::version::NixVersion;

/// The Nix executables hostctl runs. `nix-env` is used for profile generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Nix,
    NixStore,
    NixEnv,
}

impl Program {
    pub fn name(self) -> &'static str {
        match self {
            Program::Nix => "nix",
            Program::NixStore => "nix-store",
            Program::NixEnv => "nix-env",
        }
    }
}

/// A Nix setting passed as `--option NAME VALUE` (`hostctl --nix-option`): the name is a
/// setting's name (letters, digits, `-`, not starting with `-`), so it cannot be read as a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixOption {
    name: String,
    value: String,
}

/// A name that is not a Nix setting's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a Nix setting name (letters, digits and `-`, e.g. `max-jobs`)")]
pub struct NixOptionError(pub String);

impl NixOption {
    pub fn new(name: &str, value: &str) -> Result<Self, NixOptionError> {
        let ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        ok.then(|| Self { name: name.to_owned(), value: value.to_owned() })
            .ok_or_else(|| NixOptionError(name.to_owned()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn value(&self) -> &str {
        &self.value
    }
}

/// Selects what we need from a NixOS toplevel in one evaluation. `system` is the
/// derivation's own attribute; `or null` keeps hand-made toplevels without it working.
/// The key must not be `outPath`: `toJSON` turns any attrset with one into that string.
const TOPLEVEL_FN: &str = "t: { drv = t.drvPath; out = t.outPath; system = t.system or null; }";

/// One Nix invocation: the program and its arguments, without the global options
/// (`--store`, `--option`) that the [`crate::Nix`] handle adds when it runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixCommand {
    program: Program,
    args: Vec<String>,
}

impl NixCommand {
    fn nix<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { program: Program::Nix, args: args.into_iter().map(Into::into).collect() }
    }

    pub fn program(&self) -> Program {
        self.program
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The full argv as it would be run without global options: program name first.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.name().to_owned()).chain(self.args.iter().cloned()).collect()
    }

    /// `nix --version`.
    pub fn version() -> Self {
        Self::nix(["--version"])
    }

    /// Evaluates `nixosConfigurations.<attr>.config.system.build.toplevel` to its
    /// `drvPath`, `outPath` and `system` (JSON). Never writes `flake.lock`: a lock that
    /// needs updating is an error, because the lock id names what gets deployed.
    pub fn eval_toplevel(flake: &FlakeRef, attr: &AttrName) -> Self {
        let installable =
            format!("{}#nixosConfigurations.{}.config.system.build.toplevel", flake.as_str(), attr.as_str());
        Self::nix(["eval", "--json", "--no-update-lock-file", &installable, "--apply", TOPLEVEL_FN])
    }

    /// `nix flake metadata --json`: the flake's source in the store (`path`) and its
    /// locked identity (`locked.rev`, `lastModified`, `narHash`, `revCount`). Like every
    /// evaluation it never writes `flake.lock`. Copies the source into the store.
    pub fn flake_metadata(flake: &FlakeRef) -> Self {
        Self::nix(["flake", "metadata", "--json", "--no-update-lock-file", flake.as_str()])
    }

    /// Lists the attribute names of `nixosConfigurations` (JSON array of strings).
    pub fn list_configurations(flake: &FlakeRef) -> Self {
        let installable = format!("{}#nixosConfigurations", flake.as_str());
        Self::nix(["eval", "--json", "--no-update-lock-file", &installable, "--apply", "builtins.attrNames"])
    }

    /// Builds every output of the given derivations in one `nix build`, carrying on past
    /// failed builds so one broken host does not hide the others' results. Exception
    /// (Nix 2.8 and 2.26 alike): a derivation for a system this machine cannot build
    /// ("a 'aarch64-linux' ... is required") aborts the whole invocation, so callers
    /// must leave such hosts out or build them separately.
    pub fn build_outputs(version: NixVersion, drvs: &[StorePath]) -> Self {
        Self::build_outputs_on(version, drvs, None)
    }

    /// [`NixCommand::build_outputs`] with Nix's `builders` setting (`--builders VALUE`,
    /// one argv element: `ssh://host x86_64-linux ...; ...` or `@/etc/nix/machines`) so
    /// the builds can go to remote builders; `None` leaves the setting as configured.
    pub fn build_outputs_on(version: NixVersion, drvs: &[StorePath], builders: Option<&Builders>) -> Self {
        let mut cmd = Self::nix(["build", "--json", "--no-link", "--keep-going"]);
        if let Some(builders) = builders {
            cmd.args.extend(["--builders".to_owned(), builders.to_string()]);
        }
        for drv in drvs {
            cmd.args.push(derivation_outputs_installable(version, drv));
        }
        cmd
    }

    /// `nix path-info --json` for the given paths, with their closure if `recursive`.
    pub fn path_info(paths: &[StorePath], recursive: bool) -> Self {
        let mut cmd = Self::nix(["path-info", "--json"]);
        if recursive {
            cmd.args.push("--recursive".to_owned());
        }
        cmd.args.extend(paths.iter().map(|p| p.as_str().to_owned()));
        cmd
    }

    /// `nix flake update` of the flake in directory `dir`: locks it and, as a side effect,
    /// copies its inputs into the store. Nix 2.19 made the positional arguments input
    /// names and moved the flake to `--flake`.
    pub fn flake_update(version: NixVersion, dir: &str) -> Self {
        if version >= NixVersion::new(2, 19, 0) {
            Self::nix(["flake", "update", "--flake", dir])
        } else {
            Self::nix(["flake", "update", dir])
        }
    }

    /// `nix-store --check-validity --print-invalid`: prints the paths that are not valid
    /// in the store, one per line, and succeeds either way (same in every Nix version).
    pub fn check_validity(paths: &[StorePath]) -> Self {
        let mut args = vec!["--check-validity".to_owned(), "--print-invalid".to_owned()];
        args.extend(paths.iter().map(|p| p.as_str().to_owned()));
        Self { program: Program::NixStore, args }
    }

    /// `nix-store --query --requisites`: the closure of `paths`, one path per line. For a
    /// `.drv` this is every derivation and source it needs (same in every Nix version).
    pub fn query_requisites(paths: &[StorePath]) -> Self {
        let mut args = vec!["--query".to_owned(), "--requisites".to_owned()];
        args.extend(paths.iter().map(|p| p.as_str().to_owned()));
        Self { program: Program::NixStore, args }
    }

    /// `nix-store --export`: writes a serialisation of `paths` (not their closure) to
    /// stdout, references before referrers, for `nix-store --import` on another store.
    /// The format is the same in every Nix version hostctl supports.
    pub fn export(paths: &[StorePath]) -> Self {
        let mut args = vec!["--export".to_owned()];
        args.extend(paths.iter().map(|p| p.as_str().to_owned()));
        Self { program: Program::NixStore, args }
    }

    /// `nix copy --to STORE PATHS`: copies the closures of `paths` to another store (a
    /// binary cache URL; its `secret-key=` parameter makes that store sign what it gets).
    /// Paths the destination already has are skipped.
    pub fn copy_to(store_url: &str, paths: &[StorePath]) -> Self {
        let mut cmd = Self::nix(["copy", "--to", store_url]);
        cmd.args.extend(paths.iter().map(|p| p.as_str().to_owned()));
        cmd
    }

    /// `nix copy --from STORE PATHS` into the handle's store, taking only paths signed by
    /// one of `trusted_keys` (`trusted-public-keys`, with `require-sigs` forced on, so a
    /// `nix.conf` that turned it off does not weaken it); content-addressed paths need no
    /// signature, as everywhere in Nix. Nix refuses an unsigned or wrongly signed path
    /// with "lacks a valid signature" (2.8) / "lacks a signature by a trusted key" (2.26).
    pub fn copy_from(store_url: &str, paths: &[StorePath], trusted_keys: &[PublicKey]) -> Self {
        let keys: Vec<String> = trusted_keys.iter().map(ToString::to_string).collect();
        let mut cmd = Self::nix(["copy", "--from", store_url]);
        cmd.args.extend(["--option".to_owned(), "trusted-public-keys".to_owned(), keys.join(" ")]);
        cmd.args.extend(["--option", "require-sigs", "true"].map(str::to_owned));
        cmd.args.extend(paths.iter().map(|p| p.as_str().to_owned()));
        cmd
    }

    /// `nix-store --add PATH`: copies a file or directory into the store as a
    /// content-addressed path and prints it (tests make small real store paths with it).
    pub fn add_to_store(path: &std::path::Path) -> Self {
        let args = vec!["--add".to_owned(), path.to_string_lossy().into_owned()];
        Self { program: Program::NixStore, args }
    }

    /// `nix-store --import`: reads an export stream on stdin, adds each path in turn and
    /// prints it. Not atomic: paths before a broken part of the stream stay registered, so
    /// callers validate the whole stream first.
    pub fn import() -> Self {
        Self::nix_store(["--import"], &[])
    }

    /// `nix-store --delete`: removes the paths unless something (a GC root, a path outside
    /// the set) still refers to them; referrers inside the set are fine.
    pub fn delete(paths: &[StorePath]) -> Self {
        Self::nix_store(["--delete"], paths)
    }

    /// `nix-store --add-root LINK --indirect --realise PATH`: makes `link` a symlink to
    /// `path` (already valid: nothing is built) and registers it as an indirect GC root,
    /// so the garbage collector keeps `path`'s closure while `link` exists. Removing the
    /// link releases it (Nix forgets the registration at its next collection).
    pub fn add_root(link: &std::path::Path, path: &StorePath) -> Self {
        let link = link.to_string_lossy().into_owned();
        let args = ["--add-root", link.as_str(), "--indirect", "--realise", path.as_str()];
        Self { program: Program::NixStore, args: args.map(str::to_owned).to_vec() }
    }

    /// `nix-env --profile PROFILE --set PATH`: a new generation of the profile pointing at
    /// `path`, made current.
    pub fn set_profile(profile: &Profile, path: &StorePath) -> Self {
        let args = ["--profile", profile.as_str(), "--set", path.as_str()];
        Self { program: Program::NixEnv, args: args.map(str::to_owned).to_vec() }
    }

    /// `nix-env --profile PROFILE --list-generations`.
    pub fn list_generations(profile: &Profile) -> Self {
        let args = ["--profile", profile.as_str(), "--list-generations"];
        Self { program: Program::NixEnv, args: args.map(str::to_owned).to_vec() }
    }

    /// `nix-env --profile PROFILE --delete-generations N...`: removes those generations'
    /// links (Nix refuses the current one); what they kept goes at the next collection.
    pub fn delete_generations(profile: &Profile, numbers: &[u64]) -> Self {
        let mut args: Vec<String> = ["--profile", profile.as_str(), "--delete-generations"].map(str::to_owned).to_vec();
        args.extend(numbers.iter().map(u64::to_string));
        Self { program: Program::NixEnv, args }
    }

    /// `nix flake archive --json --dry-run FLAKE`: the store paths of the flake's source
    /// and of every input, recursively (`{"path", "inputs": {NAME: {...}}}`), copying
    /// nothing; they are valid after an evaluation of the flake.
    pub fn flake_sources(flake: &FlakeRef) -> Self {
        Self::nix(["flake", "archive", "--json", "--dry-run", "--no-update-lock-file", flake.as_str()])
    }

    /// `nix-store --gc --print-roots`: every GC root as `LINK -> STORE PATH`, one a line.
    pub fn print_roots() -> Self {
        Self::nix_store(["--gc", "--print-roots"], &[])
    }

    /// `nix-store --gc --print-dead`: the paths a collection would delete now, one a line.
    pub fn print_dead() -> Self {
        Self::nix_store(["--gc", "--print-dead"], &[])
    }

    fn nix_store<const N: usize>(flags: [&str; N], paths: &[StorePath]) -> Self {
        let mut args: Vec<String> = flags.map(str::to_owned).to_vec();
        args.extend(paths.iter().map(|p| p.as_str().to_owned()));
        Self { program: Program::NixStore, args }
    }

    /// Shows a store derivation as JSON (`show-derivation` or `derivation show`).
    pub fn show_derivation(version: NixVersion, drv: &StorePath) -> Self {
        let mut cmd = Self::nix(version.derivation_show_argv().iter().copied());
        cmd.args.push(derivation_self_installable(version, drv));
        cmd
    }
}

/// The installable meaning "all outputs of this derivation" for the given Nix.
fn derivation_outputs_installable(version: NixVersion, drv: &StorePath) -> String {
    if version.has_caret_outputs() {
        format!("{}^*", drv.as_str())
    } else {
        drv.as_str().to_owned()
    }
}

/// The installable meaning "this .drv file itself". Before 2.15 a bare `.drv` path meant
/// its outputs for most commands, but `show-derivation` always took the file itself.
fn derivation_self_installable(_version: NixVersion, drv: &StorePath) -> String {
    drv.as_str().to_owned()
}

impl fmt::Display for NixCommand {
    /// Shell-like rendering for error messages; quoting is only for humans to read.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render_argv(&self.argv()))
    }
}

/// Renders an argv for humans: arguments with spaces or quotes are single-quoted.
pub fn render_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%^*+,#".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A flake reference as Nix's CLI accepts it (an absolute path or a URL-like reference),
/// checked so that appending `#attrpath` cannot change its meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeRef(String);

/// Why a string is not usable as a flake reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{reference}` is not a usable flake reference: {reason}")]
pub struct FlakeRefError {
    pub reference: String,
    pub reason: &'static str,
}

impl FlakeRef {
    /// Accepts an absolute path or a reference like `git+file:///srv/infra?ref=main`.
    pub fn new(reference: impl Into<String>) -> Result<Self, FlakeRefError> {
        let reference = reference.into();
        let reason = if reference.is_empty() {
            Some("it is empty")
        } else if reference.contains('#') {
            Some("it must not contain `#` (hostctl appends the attribute path itself)")
        } else if reference.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("it must not contain whitespace or control characters")
        } else if reference.starts_with('-') {
            Some("it must not start with `-`")
        } else if !reference.starts_with('/') && !reference.contains(':') {
            Some("a path must be absolute here (relative paths are resolved before this point)")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(FlakeRefError { reference, reason }),
            None => Ok(Self(reference)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `git+file://<workdir>?rev=<rev>` plus `&dir=<subdir>` when the flake is not at the
    /// repository's root: the flake exactly as committed at `rev`, whatever the work
    /// tree holds now (a rollback rebuilds an old commit this way).
    ///
    /// Both paths end up inside a URL, so rather than escape them (Nix's URL decoding
    /// differs between releases) only characters that mean the same in every position
    /// are accepted; `rev` must be a full commit id (40 or 64 lowercase hex digits).
    pub fn git_file_at(workdir: &Path, rev: &str, subdir: &Path) -> Result<Self, FlakeRefError> {
        let fail = |reference: String, reason| Err(FlakeRefError { reference, reason });
        let (Some(repo), Some(dir)) = (workdir.to_str(), subdir.to_str()) else {
            return fail(format!("git+file://{}", workdir.display()), "the path is not valid UTF-8");
        };
        let repo = if repo.len() > 1 { repo.trim_end_matches('/') } else { repo };
        let dir = dir.trim_matches('/');
        let mut reference = format!("git+file://{repo}?rev={rev}");
        if !dir.is_empty() {
            reference.push_str("&dir=");
            reference.push_str(dir);
        }
        if !workdir.is_absolute() {
            return fail(reference, "the repository path must be absolute");
        }
        if !matches!(rev.len(), 40 | 64) || !rev.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return fail(reference, "`rev` must be a full commit id (40 or 64 lowercase hex digits)");
        }
        if !repo.bytes().chain(dir.bytes()).all(url_safe) {
            return fail(
                reference,
                "the repository path and flake subdirectory may only contain A-Z a-z 0-9 . _ - ~ @ and / \
                 in a git+file URL (move or rename the repository)",
            );
        }
        if !dir.is_empty() && subdir.components().any(|c| !matches!(c, Component::Normal(_))) {
            return fail(reference, "the flake subdirectory must be a relative path without `.` or `..`");
        }
        Ok(Self(reference))
    }
}

/// Bytes that need no escaping in a URL path or query value, in every Nix release.
fn url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-~@/".contains(&b)
}

impl fmt::Display for FlakeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
