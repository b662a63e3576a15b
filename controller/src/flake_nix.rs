//! Finds where inputs are declared in a `flake.nix` (file:line:column), with rnix.
//!
//! Read-only and syntactic: it never evaluates Nix and never edits the file.

use rnix::ast::{self, HasEntry};
use rowan::ast::AstNode;

/// 1-based line and column of a declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Where input `name` is declared at the top level of `flake.nix`: the `name` in
/// `inputs.name.url = ...`, `inputs.name = { ... }` or `inputs = { name.url = ...; }`.
/// `None` if the file does not parse to an attribute set or does not declare it.
pub fn find_input(source: &str, name: &str) -> Option<Position> {
    let root = rnix::Root::parse(source).tree();
    let top = attrset_of(root.expr()?)?;
    for entry in top.attrpath_values() {
        let attrs: Vec<ast::Attr> = entry.attrpath()?.attrs().collect();
        if attr_name(attrs.first()?).as_deref() != Some("inputs") {
            continue;
        }
        if let Some(second) = attrs.get(1) {
            if attr_name(second).as_deref() == Some(name) {
                return Some(position(source, second.syntax()));
            }
            continue;
        }
        let inner = attrset_of(entry.value()?)?;
        for nested in inner.attrpath_values() {
            let Some(first) = nested.attrpath().and_then(|p| p.attrs().next()) else { continue };
            if attr_name(&first).as_deref() == Some(name) {
                return Some(position(source, first.syntax()));
            }
        }
    }
    None
}

/// The attribute set an expression is, looking through parentheses.
fn attrset_of(expr: ast::Expr) -> Option<ast::AttrSet> {
    match expr {
        ast::Expr::AttrSet(set) => Some(set),
        ast::Expr::Paren(p) => attrset_of(p.expr()?),
        _ => None,
    }
}

/// The static name of an attribute (`name`, `"name"`); `None` for interpolations.
fn attr_name(attr: &ast::Attr) -> Option<String> {
    match attr {
        ast::Attr::Ident(ident) => Some(ident.ident_token()?.text().to_owned()),
        ast::Attr::Str(s) => {
            let parts = s.normalized_parts();
            match parts.as_slice() {
                [ast::InterpolPart::Literal(text)] => Some(text.clone()),
                [] => Some(String::new()),
                _ => None,
            }
        }
        ast::Attr::Dynamic(_) => None,
    }
}

fn position(source: &str, node: &rnix::SyntaxNode) -> Position {
    let offset = usize::from(node.text_range().start()).min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position { line, column: before[line_start..].chars().count() + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_declaration_style() {
        let src = r#"{
  description = "fleet";
  inputs.nixpkgs.url = "path:./nixpkgs";
  inputs.tools = { url = "path:./tools"; };
  inputs = {
    fleetlib.url = "path:./lib";
    "quoted".url = "path:./q";
  };
  outputs = { self, ... }: { };
}"#;
        assert_eq!(find_input(src, "nixpkgs"), Some(Position { line: 3, column: 10 }));
        assert_eq!(find_input(src, "tools"), Some(Position { line: 4, column: 10 }));
        assert_eq!(find_input(src, "fleetlib"), Some(Position { line: 6, column: 5 }));
        assert_eq!(find_input(src, "quoted"), Some(Position { line: 7, column: 5 }));
        assert_eq!(find_input(src, "missing"), None);
    }

    #[test]
    fn tolerates_non_attrset_files() {
        assert_eq!(find_input("let x = 1; in x", "a"), None);
        assert_eq!(find_input("", "a"), None);
        assert_eq!(find_input("({ inputs.a.url = \"x\"; })", "a"), Some(Position { line: 1, column: 11 }));
    }
}
