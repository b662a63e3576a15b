//! The configuration reference (`docs/CONFIG.md`), rendered from the JSON Schemas of
//! [`crate::jsonschema`] so it is generated from the same Rust types that parse the files
//! and cannot drift from them: one table per mapping (keys, type, default, description).

use serde_json::Value;

/// Markdown for one schema: a `## title` section, then one table per mapping, named by its
/// key path (`pull`, `hosts.<name>`, `hosts.<name>.health[]`).
pub fn markdown(title: &str, file: &str, schema: &Value) -> String {
    let mut out = format!("## {title} (`{file}`)\n\n{}\n", one_line(schema["description"].as_str().unwrap_or("")));
    let mut sections = vec![(String::new(), schema.clone())];
    while !sections.is_empty() {
        let (path, object) = sections.remove(0);
        out.push_str(&table(schema, &path, &object, &mut sections));
    }
    out
}

/// The table of one mapping; nested mappings are queued in `more`.
fn table(root: &Value, path: &str, object: &Value, more: &mut Vec<(String, Value)>) -> String {
    let heading = if path.is_empty() { "top level".to_owned() } else { format!("`{path}`") };
    let mut out = format!("\n### {heading}\n\n| key | type | default | description |\n| --- | --- | --- | --- |\n");
    let required: Vec<&str> = object["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for (key, property) in object["properties"].as_object().into_iter().flatten() {
        let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        let kind = describe(root, property, &child, more);
        let default = property.get("default").map_or_else(
            || if required.contains(&key.as_str()) { "required".to_owned() } else { String::new() },
            |d| format!("`{d}`"),
        );
        let text = property["description"]
            .as_str()
            .or_else(|| resolve(root, property).and_then(|d| d["description"].as_str()))
            .unwrap_or("");
        // GitHub tables take `\|` as a pipe even inside code spans (patterns have some).
        let (kind, default) = (kind.replace('|', "\\|"), default.replace('|', "\\|"));
        out.push_str(&format!("| `{key}` | {kind} | {default} | {} |\n", one_line(text)));
    }
    out
}

/// The definition a `$ref` (possibly inside `anyOf` with null) points at.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> Option<&'a Value> {
    if let Some(reference) = schema["$ref"].as_str() {
        return root["$defs"].get(reference.rsplit('/').next()?);
    }
    let any = schema["anyOf"].as_array()?;
    any.iter().find(|s| s["type"] != "null").and_then(|s| resolve(root, s))
}

/// A property's type in words; mappings become sections of their own.
fn describe(root: &Value, schema: &Value, path: &str, more: &mut Vec<(String, Value)>) -> String {
    if let Some(def) = resolve(root, schema) {
        let optional = schema.get("anyOf").is_some();
        let text = describe(root, def, path, more);
        return if optional { format!("{text} (optional)") } else { text };
    }
    if schema.get("properties").is_some() {
        more.push((path.to_owned(), schema.clone()));
        return format!("mapping, see `{path}`");
    }
    if let Some(variants) = schema["oneOf"].as_array().filter(|v| v.iter().all(|x| x.get("const").is_some())) {
        let names: Vec<String> = variants.iter().map(|v| format!("`{}`", v["const"].as_str().unwrap_or(""))).collect();
        return format!("one of {}", names.join(", "));
    }
    if let Some(values) = schema["enum"].as_array() {
        let names: Vec<String> = values.iter().map(|v| format!("`{}`", v.as_str().unwrap_or(""))).collect();
        return format!("one of {}", names.join(", "));
    }
    if let Some(items) = schema.get("items") {
        return format!("list of {}", describe(root, items, &format!("{path}[]"), more));
    }
    if let Some(patterns) = schema["patternProperties"].as_object() {
        let (pattern, value) = patterns.iter().next().map_or((String::new(), &Value::Null), |(p, v)| (p.clone(), v));
        let what = describe(root, value, &format!("{path}.<name>"), more);
        return format!("map from `{pattern}` to {what}");
    }
    let kind = match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => {
            ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect::<Vec<_>>().join(" or ")
        }
        _ => "value".to_owned(),
    };
    match schema["pattern"].as_str() {
        Some(pattern) => format!("{kind} matching `{pattern}`"),
        None => kind,
    }
}

/// Descriptions are wrapped in the Rust docs; a table cell is one line without `|`.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonschema::{agent_config_schema, fleet_schema};

    #[test]
    fn every_key_of_both_files_is_in_the_reference() {
        let fleet = markdown("Fleet inventory", "fleet.yaml", &fleet_schema());
        for row in
            ["| `hosts` | map from", "### `hosts.<name>`", "| `address` |", "### `rollout`", "| `max_failures` |"]
        {
            assert!(fleet.contains(row), "{row} missing from:\n{fleet}");
        }
        let agent = markdown("Agent configuration", "agent.yaml", &agent_config_schema());
        for row in [
            "| `trusted_keys` |",
            "### `pull`",
            "| `webhook_secret_file` |",
            "### `binfmt`",
            "one of `pinned`, `follow`",
        ] {
            assert!(agent.contains(row), "{row} missing from:\n{agent}");
        }
    }

    #[test]
    fn cells_stay_on_one_line() {
        assert_eq!(one_line("a\n  b | c"), "a b \\| c");
    }
}
