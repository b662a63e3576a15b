//! `hostctl completions SHELL` and `hostctl man`: generated from the clap definitions in
//! [`crate::cli`], so they cannot drift from the real flags. Need no fleet file.

use std::io::Write;

use clap::CommandFactory;
use hostctl_schemas::man::Section;

use crate::cli::{Cli, Command};
use crate::error::{EXIT_BAD_INPUT, EXIT_FAILED};

/// What every page says beyond the options; the exit codes are those of [`crate::error`].
fn sections() -> [Section<'static>; 3] {
    const _: () = assert!(EXIT_BAD_INPUT == 2 && EXIT_FAILED == 1);
    [
        Section {
            title: "EXIT STATUS",
            items: &[
                ("0", "Every selected host succeeded (or the command only prints)."),
                ("1", "At least one host failed, or hostctl could not do its work (Nix, git or output failed)."),
                (
                    "2",
                    "Bad invocation or bad input (fleet file, selector, key, flake lock, rollback target), or \
                     `apply --diff` not confirmed; nothing was changed.",
                ),
            ],
        },
        Section {
            title: "ENVIRONMENT",
            items: &[
                ("HOSTCTL_FLEET", "The fleet file when --fleet is not given."),
                (
                    "HOSTCTL_KEY",
                    "The signing key file when --key is not given (before `signing_key` in the fleet file).",
                ),
                ("RUST_LOG", "Log filter for stderr (e.g. `hostctl=debug`); overrides -v."),
                ("SSL_CERT_FILE", "CA certificates for `https://` health checks, instead of the system's."),
                ("HOSTCTL_CACHE_DIR", "Where the evaluation cache lives (its `eval` subdirectory)."),
                (
                    "XDG_CACHE_HOME, HOME",
                    "The evaluation cache otherwise: $XDG_CACHE_HOME/hostctl/eval or ~/.cache/hostctl/eval.",
                ),
                (
                    "COMPLETE",
                    "Set by the completion script that `hostctl completions SHELL` prints; not for direct use.",
                ),
            ],
        },
        Section {
            title: "FILES",
            items: &[
                (
                    "fleet.yaml",
                    "The fleet inventory: --fleet, else $HOSTCTL_FLEET, else the first fleet.yaml in the working \
                     directory or a directory above it. Relative paths in it (flake, signing_key) are relative to \
                     its directory.",
                ),
                (
                    "flake.nix, flake.lock",
                    "The flake the fleet file's `flake` names; its lock is what deployments record.",
                ),
                (
                    "known_agents",
                    "Beside fleet.yaml: the pinned agent identities, one `HOST KEY` line each (KEY as \
                     `hostctl-agent identity` prints it), written by `hostctl enroll` and by no other command. A \
                     host's `agent_key` in fleet.yaml takes precedence. A host with no pin, or whose agent shows \
                     another key, fails at step `connect`.",
                ),
            ],
        },
    ]
}

/// Writes what `command` asks for to `out` if it is a documentation command; `None`
/// for every other command (which then needs a fleet).
pub fn write(command: &Command, out: &mut dyn Write) -> Option<std::io::Result<()>> {
    match command {
        Command::Completions(args) => {
            let shells = clap_complete::env::Shells::builtins();
            let shell = args.shell.to_string();
            Some(match shells.completer(&shell) {
                Some(completer) => completer.write_registration("COMPLETE", "hostctl", "hostctl", "hostctl", out),
                None => Err(std::io::Error::other(format!("no completion for {shell}"))),
            })
        }
        Command::Man(args) => Some(match &args.dir {
            Some(dir) => hostctl_schemas::man::write_dir(Cli::command(), dir, &sections())
                .and_then(|files| files.iter().try_for_each(|file| writeln!(out, "{}", file.display()))),
            None => hostctl_schemas::man::render(Cli::command(), args.page.as_deref(), &sections(), out),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn render(args: &[&str]) -> String {
        let cli = Cli::try_parse_from(args).unwrap();
        let mut out = Vec::new();
        write(&cli.command, &mut out).unwrap().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn completion_scripts_call_hostctl_back() {
        for (shell, word) in [("bash", "COMPLETE=\"bash\""), ("zsh", "COMPLETE=\"zsh\""), ("fish", "COMPLETE=fish")] {
            let text = render(&["hostctl", "completions", shell]);
            assert!(text.contains(word) && text.contains("hostctl"), "{shell}: {text}");
        }
    }

    #[test]
    fn each_subcommand_page_has_its_options_the_global_options_and_the_sections() {
        let root = render(&["hostctl", "man"]);
        assert!(root.contains(".TH hostctl 1"), "{}", &root[..200.min(root.len())]);
        let mut seen = 0;
        for sub in Cli::command().get_subcommands() {
            let name = sub.get_name();
            let page = render(&["hostctl", "man", name]);
            assert!(page.contains(&format!(".TH hostctl-{name} 1")), "{name}");
            for arg in sub.get_arguments() {
                if let Some(long) = arg.get_long() {
                    assert!(
                        page.contains(&format!("\\fB\\-\\-{}\\fR", long.replace('-', "\\-"))),
                        "{name} lacks --{long}"
                    );
                    seen += 1;
                }
            }
            for want in [
                ".SH \"GLOBAL OPTIONS\"",
                "\\-\\-fleet",
                ".SH \"EXIT STATUS\"",
                ".SH \"ENVIRONMENT\"",
                ".SH \"FILES\"",
                "known_agents",
                "HOSTCTL_KEY",
            ] {
                assert!(page.contains(want), "{name} lacks {want}");
            }
            assert!(root.contains(&format!("\\fBhostctl\\-{}\\fR(1)", name.replace('-', "\\-"))), "root lacks {name}");
        }
        assert!(seen >= 10, "only {seen} options checked");
        assert!(render(&["hostctl", "man", "apply"]).contains(".SH EXAMPLES"));
    }

    #[test]
    fn man_dir_writes_every_page() {
        let dir = tempfile::tempdir().unwrap();
        let listed = render(&["hostctl", "man", "--dir", dir.path().to_str().unwrap()]);
        let pages = Cli::command().get_subcommands().count() + 1;
        assert_eq!(listed.lines().count(), pages, "{listed}");
        assert!(dir.path().join("hostctl-rollback.1").is_file() && dir.path().join("hostctl.1").is_file());
    }

    #[test]
    fn an_unknown_page_is_refused_with_the_pages_there_are() {
        let err = Cli::try_parse_from(["hostctl", "man", "aply"]).unwrap_err().to_string();
        assert!(
            err.starts_with("error: invalid value 'aply' for '[SUBCOMMAND]': no such subcommand; pages: eval, build"),
            "{err}"
        );
        assert_eq!(Cli::try_parse_from(["hostctl", "man", "aply"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn other_commands_are_not_documentation() {
        let cli = Cli::try_parse_from(["hostctl", "check"]).unwrap();
        assert!(write(&cli.command, &mut Vec::new()).is_none());
    }

    #[test]
    fn global_options_have_their_own_heading_in_help() {
        let mut cli = Cli::command();
        cli.build();
        let help = cli.find_subcommand_mut("apply").unwrap().render_help().to_string();
        let global = help.find("Global options:").unwrap_or_else(|| panic!("{help}"));
        let own = help.find("--max-failures").unwrap();
        let fleet = help.find("--fleet").unwrap();
        assert!(own < global && global < fleet, "{help}");
        assert!(help.contains("Examples:\n  hostctl apply --on web1,web2"), "{help}");
    }
}
