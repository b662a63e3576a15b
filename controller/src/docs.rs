//! `hostctl completions SHELL` and `hostctl man`: generated from the clap definitions in
//! [`crate::cli`], so they cannot drift from the real flags. Need no fleet file.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, Command};

/// Writes what `command` asks for to `out` if it is a documentation command; `None`
/// for every other command (which then needs a fleet).
pub fn write(command: &Command, out: &mut dyn Write) -> Option<std::io::Result<()>> {
    match command {
        Command::Completions(args) => {
            let mut cli = Cli::command();
            let name = cli.get_name().to_owned();
            clap_complete::generate(args.shell, &mut cli, name, out);
            Some(Ok(()))
        }
        Command::Man => Some(clap_mangen::Man::new(Cli::command()).render(out)),
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
    fn completions_know_every_command_and_flag() {
        for shell in ["bash", "zsh", "fish"] {
            let text = render(&["hostctl", "completions", shell]);
            // Flags without their dashes: fish writes `-l via-cache`.
            for word in ["apply", "rollback", "history", "via-cache", "eval-jobs", "to-lock"] {
                assert!(text.contains(word), "{shell} completion lacks {word}");
            }
        }
    }

    #[test]
    fn the_man_page_is_roff_for_hostctl() {
        let text = render(&["hostctl", "man"]);
        assert!(text.starts_with(".ie") || text.contains(".TH hostctl 1"), "{}", &text[..200.min(text.len())]);
        assert!(text.contains("apply") && text.contains("fleet"));
    }

    #[test]
    fn other_commands_are_not_documentation() {
        let cli = Cli::try_parse_from(["hostctl", "check"]).unwrap();
        assert!(write(&cli.command, &mut Vec::new()).is_none());
    }
}
