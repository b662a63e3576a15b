//! Man pages for `hostctl` and `hostctl-agent`: one page per subcommand, rendered from the
//! clap definitions (so options cannot drift) plus sections clap does not know about
//! (EXIT STATUS, ENVIRONMENT, FILES), which each binary passes in.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A man page section clap has no notion of: a title and tagged paragraphs
/// (`.TP` items: the tag in bold, then its text).
#[derive(Debug, Clone, Copy)]
pub struct Section<'a> {
    pub title: &'a str,
    pub items: &'a [(&'a str, &'a str)],
}

/// The names of the pages `root` has: `None` for the root page, then each visible
/// subcommand's name.
pub fn page_names(root: &clap::Command) -> Vec<String> {
    root.get_subcommands().filter(|c| !c.is_hide_set()).map(|c| c.get_name().to_owned()).collect()
}

/// Writes the page of `subcommand` of `root` (the root page for `None`) to `out`.
pub fn render(
    root: clap::Command,
    subcommand: Option<&str>,
    sections: &[Section<'_>],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let root = built(root);
    match subcommand {
        None => page(&root, &root, sections, out),
        Some(name) => match root.find_subcommand(name) {
            Some(sub) => page(&root, sub, sections, out),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("no subcommand `{name}`; pages: {}", page_names(&root).join(", ")),
            )),
        },
    }
}

/// Writes every page (`NAME.1`, `NAME-SUB.1`, ...) into `dir`, which must exist; returns the
/// files written. An error names the file.
pub fn write_dir(root: clap::Command, dir: &Path, sections: &[Section<'_>]) -> std::io::Result<Vec<PathBuf>> {
    let root = built(root);
    let mut written = Vec::new();
    for cmd in std::iter::once(&root).chain(root.get_subcommands().filter(|c| !c.is_hide_set())) {
        let path = dir.join(format!("{}.1", title(cmd)));
        let mut text = Vec::new();
        page(&root, cmd, sections, &mut text)?;
        std::fs::write(&path, text).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

/// Built so that global options appear on every subcommand's page and subcommands carry
/// their display names (`hostctl-apply`).
fn built(root: clap::Command) -> clap::Command {
    let mut root = root.disable_help_subcommand(true);
    root.build();
    root
}

fn title(cmd: &clap::Command) -> &str {
    cmd.get_display_name().unwrap_or_else(|| cmd.get_name())
}

fn page(
    root: &clap::Command,
    cmd: &clap::Command,
    sections: &[Section<'_>],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let source = format!("{} {}", root.get_name(), root.get_version().unwrap_or_default());
    let man = clap_mangen::Man::new(cmd.clone()).source(source);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(out)?;
    }
    if let Some(examples) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        writeln!(out, ".SH EXAMPLES\n.nf")?;
        for line in examples.to_string().lines() {
            writeln!(out, "{}", escape(line))?;
        }
        writeln!(out, ".fi")?;
    }
    for section in sections {
        writeln!(out, ".SH \"{}\"", section.title)?;
        for (tag, text) in section.items {
            writeln!(out, ".TP\n\\fB{}\\fR\n{}", escape(tag), escape(text))?;
        }
    }
    see_also(root, cmd, out)
}

/// The root page lists every subcommand's page; a subcommand's page points back to the root.
fn see_also(root: &clap::Command, cmd: &clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let names: Vec<String> = if std::ptr::eq(root, cmd) {
        root.get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| format!("\\fB{}\\fR(1)", escape(title(c))))
            .collect()
    } else {
        vec![format!("\\fB{}\\fR(1)", escape(title(root)))]
    };
    writeln!(out, ".SH \"SEE ALSO\"\n{}", names.join(", "))
}

/// Plain text as roff: backslashes escaped, and a line starting with `.` or `'` not taken
/// as a request.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("tool")
            .arg(clap::Arg::new("global-flag").long("global-flag").global(true).action(clap::ArgAction::SetTrue))
            .subcommand(
                clap::Command::new("go")
                    .about("Go somewhere")
                    .arg(clap::Arg::new("far").long("far").action(clap::ArgAction::SetTrue))
                    .after_help(".starts with a dot\n  tool go --far"),
            )
    }

    const SECTIONS: &[Section<'_>] = &[Section { title: "EXIT STATUS", items: &[("2", "bad \\ input")] }];

    fn text(sub: Option<&str>) -> String {
        let mut out = Vec::new();
        render(cli(), sub, SECTIONS, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_subcommand_page_has_its_own_and_the_global_options_and_the_sections() {
        let page = text(Some("go"));
        assert!(page.contains(".TH tool\\-go 1") || page.contains(".TH tool-go 1"), "{page}");
        for want in [
            "far",
            "global\\-flag",
            ".SH EXAMPLES",
            "\\&.starts with",
            ".SH \"EXIT STATUS\"",
            "bad \\e input",
            "\\fBtool\\fR(1)",
        ] {
            assert!(page.contains(want), "{want} missing in\n{page}");
        }
    }

    #[test]
    fn the_root_page_lists_the_subcommand_pages_and_an_unknown_page_is_named() {
        assert!(text(None).contains("\\fBtool\\-go\\fR(1)"));
        let err = render(cli(), Some("stop"), SECTIONS, &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "no subcommand `stop`; pages: go");
    }

    #[test]
    fn write_dir_writes_one_file_per_page() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_dir(cli(), dir.path(), SECTIONS).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["tool.1", "tool-go.1"]);
        let missing = dir.path().join("nope");
        let err = write_dir(cli(), &missing, SECTIONS).unwrap_err();
        assert!(err.to_string().starts_with(&missing.join("tool.1").display().to_string()), "{err}");
    }
}
