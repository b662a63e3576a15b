//! Small wording helpers for messages people read, shared by the controller and the agent.

use std::fmt::Display;

/// `n` and the noun in the right number: `1 host`, `0 hosts`, `12 paths`.
pub fn plural(n: impl Display, one: &str, many: &str) -> String {
    let n = n.to_string();
    let noun = if n == "1" { one } else { many };
    format!("{n} {noun}")
}

#[cfg(test)]
mod tests {
    use super::plural;

    #[test]
    fn one_is_singular_everything_else_plural() {
        assert_eq!(plural(1usize, "host", "hosts"), "1 host");
        assert_eq!(plural(0u64, "host", "hosts"), "0 hosts");
        assert_eq!(plural(2u32, "system", "systems"), "2 systems");
        assert_eq!(plural(11usize, "path", "paths"), "11 paths");
        assert_eq!(plural(1usize, "trusted key", "trusted keys"), "1 trusted key");
    }
}
