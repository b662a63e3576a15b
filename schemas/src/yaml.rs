//! Loading YAML files into typed values with errors that point at `file:line:column`
//! and name the key path, e.g. `fleet.yaml:7:5: hosts.web1.adress: unknown field ...`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a YAML file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The text is not well-formed YAML.
    #[error("{}: YAML syntax error: {message}", Where(file, *location))]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line and column, when known.
        location: Option<(usize, usize)>,
        /// The parser's message, without its own location suffix.
        message: String,
    },
    /// Well-formed YAML that does not match the expected shape or values.
    #[error("{}: {}{message}", Where(file, *location), KeyPrefix(path))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// 1-based line and column, when known.
        location: Option<(usize, usize)>,
        /// Key path to the offending value, e.g. `hosts.web1.health[0].timeout`;
        /// `.` for the document itself.
        path: String,
        /// What was wrong and what was expected.
        message: String,
    },
}

impl YamlError {
    /// An error found by a check that runs after parsing, so has no location.
    pub fn invalid(file: &Path, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { file: file.to_owned(), location: None, path: path.into(), message: message.into() }
    }

    /// 1-based (line, column) of the error, when known.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            Self::Read { .. } => None,
            Self::Syntax { location, .. } | Self::Invalid { location, .. } => *location,
        }
    }

    /// The file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            Self::Read { file, .. } | Self::Syntax { file, .. } | Self::Invalid { file, .. } => file,
        }
    }

    /// The key path of the offending value, for shape and value errors.
    pub fn key_path(&self) -> Option<&str> {
        match self {
            Self::Invalid { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// Formats `file:line:column`, or just `file` without a location.
struct Where<'a>(&'a Path, Option<(usize, usize)>);

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some((line, column)) => write!(f, "{}:{line}:{column}", self.0.display()),
            None => write!(f, "{}", self.0.display()),
        }
    }
}

/// Formats `path: `, or nothing for the document root.
struct KeyPrefix<'a>(&'a str);

impl fmt::Display for KeyPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() || self.0 == "." {
            Ok(())
        } else {
            write!(f, "{}: ", self.0)
        }
    }
}

/// Reads and parses the YAML file at `path`.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, YamlError> {
    let text = std::fs::read_to_string(path).map_err(|source| YamlError::Read { file: path.to_owned(), source })?;
    parse_yaml(&text, path)
}

/// Parses YAML `text`; `origin` is the file name used in error messages.
pub fn parse_yaml<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T, YamlError> {
    // serde_yaml reports syntax and shape errors through one type; a first pass that
    // accepts any shape tells them apart, so syntax errors can be labelled as such.
    if let Err(err) = serde_yaml::from_str::<serde::de::IgnoredAny>(text) {
        let location = line_column(&err);
        return Err(YamlError::Syntax {
            file: origin.to_owned(),
            location: location.map(|at| within(text, at)),
            message: strip_location(&err.to_string(), location),
        });
    }
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().clone();
        let inner = err.into_inner();
        let location = line_column(&inner);
        let message = strip_location(&inner.to_string(), location);
        YamlError::Invalid {
            file: origin.to_owned(),
            location: location.map(|at| within(text, at)),
            message: strip_yaml_path(&message, &path).to_owned(),
            path: path.to_string(),
        }
    })
}

fn line_column(err: &serde_yaml::Error) -> Option<(usize, usize)> {
    err.location().map(|l| (l.line(), l.column()))
}

/// libyaml puts the end of a text that lacks a final line break on the line after it,
/// which the file does not have (found by fuzzing); that end is reported as the end of
/// the last line instead. Line breaks as YAML counts them: \n, \r\n, \r, NEL, LS, PS.
fn within(text: &str, (line, column): (usize, usize)) -> (usize, usize) {
    let mut lines = 1;
    let mut last_line_start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        let crlf = c == '\r' && chars.peek().is_some_and(|(_, next)| *next == '\n');
        if crlf || matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}') {
            if crlf {
                chars.next();
            }
            lines += 1;
            last_line_start = chars.peek().map_or(text.len(), |(next, _)| *next);
        }
    }
    if line <= lines {
        (line, column)
    } else {
        (lines, text[last_line_start..].chars().count() + 1)
    }
}

/// Drops serde_yaml's own " at line L column C", which we print as `file:L:C:` instead.
fn strip_location(message: &str, location: Option<(usize, usize)>) -> String {
    match location {
        Some((line, column)) => message.replacen(&format!(" at line {line} column {column}"), "", 1),
        None => message.to_owned(),
    }
}

/// Drops serde_yaml's own `path: ` prefix; we print the (deeper, more precise) path
/// from serde_path_to_error instead. serde_yaml's path is always a prefix of that one
/// and uses the same notation, so the longest matching prefix is the one to remove.
fn strip_yaml_path<'a>(message: &'a str, path: &serde_path_to_error::Path) -> &'a str {
    use serde_path_to_error::Segment;
    let mut prefix = String::new();
    let mut stripped = message;
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => prefix.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(key);
            }
            Segment::Enum { variant } => {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(variant);
            }
            Segment::Unknown => {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push('?');
            }
        }
        if let Some(rest) = message.strip_prefix(&prefix).and_then(|r| r.strip_prefix(": ")) {
            stripped = rest;
        }
    }
    stripped
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "fields exist to be deserialized")]
    struct Doc {
        items: BTreeMap<String, Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "fields exist to be deserialized")]
    struct Item {
        size: u32,
        list: Option<Vec<u32>>,
    }

    fn parse(text: &str) -> YamlError {
        parse_yaml::<Doc>(text, Path::new("doc.yaml")).unwrap_err()
    }

    #[test]
    fn syntax_error_has_line_and_label() {
        let err = parse("items:\n  a:\n    size: [1, 2\n");
        let text = err.to_string();
        assert!(text.starts_with("doc.yaml:4:1: YAML syntax error: "), "{text}");
        assert!(!text.contains("at line 4 column 1"), "{text}");
        assert!(matches!(err, YamlError::Syntax { .. }));
    }

    #[test]
    fn unknown_nested_key_has_path_and_location() {
        let err = parse("items:\n  a:\n    size: 1\n    sise: 2\n");
        assert_eq!(err.to_string(), "doc.yaml:4:5: items.a.sise: unknown field `sise`, expected `size` or `list`");
        assert_eq!(err.location(), Some((4, 5)));
        assert_eq!(err.key_path(), Some("items.a.sise"));
    }

    #[test]
    fn bad_value_in_list_has_index() {
        let err = parse("items:\n  a:\n    size: 1\n    list: [1, x]\n");
        assert_eq!(err.key_path(), Some("items.a.list[1]"));
        assert_eq!(err.location(), Some((4, 15)));
        let text = err.to_string();
        assert!(text.starts_with("doc.yaml:4:15: items.a.list[1]: invalid type"), "{text}");
        assert!(!text.contains("items.a.list[1]: items"), "{text}");
    }

    #[test]
    fn error_at_the_end_of_a_text_without_final_newline_points_into_it() {
        // libyaml reports 5:1 here, a line the text does not have (a fuzzing finding).
        let err = parse("items:\n  a:\n    size: 1\nx# y");
        assert_eq!(err.location(), Some((4, 5)), "{err}");
        assert!(err.to_string().starts_with("doc.yaml:4:5: YAML syntax error: "), "{err}");
        let err = parse("items:\r\n  a:\r\nx");
        assert_eq!(err.location(), Some((3, 2)), "{err}");
    }

    #[test]
    fn read_error_names_file() {
        let err = load_yaml::<Doc>(Path::new("/nonexistent/doc.yaml")).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/doc.yaml: cannot read: "), "{err}");
        assert_eq!(err.location(), None);
    }

    #[test]
    fn post_parse_error_without_location() {
        let err = YamlError::invalid(Path::new("doc.yaml"), "items.a", "bad");
        assert_eq!(err.to_string(), "doc.yaml: items.a: bad");
        assert_eq!(err.file(), Path::new("doc.yaml"));
    }
}
