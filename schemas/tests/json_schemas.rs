//! The checked-in JSON Schemas under `schemas/json/`, and the configuration reference
//! `docs/CONFIG.md` rendered from them, must equal the generated ones. Regenerate with
//! `HOSTCTL_UPDATE_SCHEMAS=1 cargo test -p hostctl-schemas --test json_schemas`.

use std::path::PathBuf;

use hostctl_schemas::jsonschema::{agent_config_schema, fleet_schema};

#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn check_or_update(file_name: &str, schema: &serde_json::Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json").join(file_name);
    check_or_update_text(path, &(serde_json::to_string_pretty(schema).unwrap() + "\n"));
}

#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn check_or_update_text(path: PathBuf, generated: &str) {
    if std::env::var_os("HOSTCTL_UPDATE_SCHEMAS").is_some_and(|v| v == "1") {
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is out of date with the Rust types; regenerate it with\n  \
         HOSTCTL_UPDATE_SCHEMAS=1 cargo test -p hostctl-schemas --test json_schemas\n\
         and commit the result",
        path.display()
    );
}

#[test]
fn the_configuration_reference_is_up_to_date() {
    use hostctl_schemas::reference::markdown;
    let text = format!(
        "# Configuration reference\n\nGenerated from the JSON Schemas in `schemas/json/` (which are generated from the \
         Rust types that parse the files) by `HOSTCTL_UPDATE_SCHEMAS=1 cargo test -p hostctl-schemas --test \
         json_schemas`; do not edit by hand. Unknown keys are errors in both files.\n\n{}\n{}",
        markdown("Fleet inventory", "fleet.yaml", &fleet_schema()),
        markdown("Agent configuration", "agent.yaml", &agent_config_schema()),
    );
    check_or_update_text(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/CONFIG.md"), &text);
}

#[test]
fn fleet_schema_is_up_to_date() {
    check_or_update("fleet.schema.json", &fleet_schema());
}

#[test]
fn agent_schema_is_up_to_date() {
    check_or_update("agent.schema.json", &agent_config_schema());
}

#[test]
fn schemas_reject_unknown_fields_everywhere() {
    for schema in [fleet_schema(), agent_config_schema()] {
        let mut objects = vec![&schema];
        objects.extend(schema["$defs"].as_object().into_iter().flat_map(|d| d.values()));
        for object in objects {
            if object.get("properties").is_some() {
                assert_eq!(object["additionalProperties"], false, "{object:#}");
            }
        }
    }
}

#[test]
fn schemas_carry_defaults() {
    let fleet = fleet_schema();
    let defaults = &fleet["$defs"]["Defaults"]["properties"];
    assert_eq!(defaults["port"]["default"], 7420);
    assert_eq!(defaults["mode"]["default"], "switch");
    assert_eq!(defaults["confirm_timeout"]["default"], "30s");
    assert_eq!(fleet["$defs"]["Rollout"]["properties"]["batch"]["default"], "100%");
    let health = &fleet["$defs"]["HealthCheck"]["properties"];
    assert_eq!(health["timeout"]["default"], "5s");
    assert_eq!(health["retries"]["default"], 3);
    assert_eq!(health["interval"]["default"], "2s");
    assert_eq!(fleet["properties"]["hosts"]["minProperties"], 1);

    let agent = agent_config_schema();
    let props = &agent["properties"];
    assert_eq!(props["listen"]["default"], "0.0.0.0:7420");
    assert_eq!(props["state_dir"]["default"], "/var/lib/hostctl-agent");
    assert_eq!(props["profile"]["default"], "/nix/var/nix/profiles/system");
    assert_eq!(props["confirm_timeout"]["default"], "30s");
    assert_eq!(props["bus"]["default"], "system");
    assert_eq!(props["trusted_keys"]["minItems"], 1);
    let pull = &agent["$defs"]["PullConfig"]["properties"];
    assert_eq!(pull["branch"]["default"], "main");
    assert_eq!(pull["interval"]["default"], "1m");
    assert_eq!(pull["lock"]["default"], "pinned");
    let required: Vec<&str> = agent["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(required, ["hostname", "trusted_keys"]);
}
