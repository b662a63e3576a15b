//! The JSON Schemas of `--json` output, one per command, generated from the report
//! types and checked in under `schemas/json/output-<command>.schema.json`. The tests
//! fail when a checked-in schema is stale, and check sample reports against them.
//!
//! Regenerate with `HOSTCTL_UPDATE_SCHEMAS=1 cargo test -p hostctl --bin hostctl output_schemas`.

use std::path::PathBuf;

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::Value;

use crate::apply::ApplyReport;
use crate::bundle::BundleFields;
use crate::check::CheckExtra;
use crate::diff::DiffFields;
use crate::enroll::EnrollFields;
use crate::eval_build::{BuildFields, EvalFields};
use crate::history::HistoryFields;
use crate::logs::LogsFields;
use crate::report::{NoFields, Report};
use crate::rollback::RollbackFields;
use crate::status::StatusFields;

/// A type's schema as output: a key that is always written is `required`.
fn schema<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12().for_serialize().into_generator().into_root_schema_for::<T>().to_value()
}

/// Every command with a `--json` report, and its schema.
pub fn output_schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("eval", schema::<Report<EvalFields>>()),
        ("build", schema::<Report<BuildFields>>()),
        ("check", schema::<Report<NoFields, CheckExtra>>()),
        ("apply", schema::<ApplyReport>()),
        ("status", schema::<Report<StatusFields>>()),
        ("diff", schema::<Report<DiffFields>>()),
        ("rollback", schema::<Report<RollbackFields>>()),
        ("history", schema::<Report<HistoryFields>>()),
        ("enroll", schema::<Report<EnrollFields>>()),
        ("bundle", schema::<Report<BundleFields>>()),
        // Any command's output when the whole run failed before per-host results.
        ("error", schema::<crate::error::ErrorDocument>()),
        ("logs", schema::<Report<LogsFields>>()),
        ("gc", schema::<Report<crate::gc::GcFields>>()),
        ("reboot", schema::<ApplyReport>()),
    ]
}

fn path(command: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../schemas/json/output-{command}.schema.json"))
}

#[test]
fn output_schemas_are_up_to_date() {
    let update = std::env::var_os("HOSTCTL_UPDATE_SCHEMAS").is_some_and(|v| v == "1");
    for (command, schema) in output_schemas() {
        let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        let path = path(command);
        if update {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{} is out of date with the report types; regenerate it with\n  \
             HOSTCTL_UPDATE_SCHEMAS=1 cargo test -p hostctl --bin hostctl output_schemas\n\
             and commit the result",
            path.display()
        );
    }
}

/// The keys one schema object allows and requires, for each of its alternatives
/// (`anyOf` branches, `$ref`s resolved; flattened fields are inlined by schemars).
fn alternatives(root: &Value, schema: &Value) -> Vec<(Vec<String>, Vec<String>)> {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => &root["$defs"][r.trim_start_matches("#/$defs/")],
        None => schema,
    };
    let names = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::Object(m)) => m.keys().cloned().collect(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    };
    let own = (names(schema.get("properties")), names(schema.get("required")));
    let branches: Vec<&Value> =
        ["anyOf", "oneOf"].iter().filter_map(|k| schema.get(*k).and_then(Value::as_array)).flatten().collect();
    if branches.is_empty() {
        return vec![own];
    }
    let mut out = Vec::new();
    for branch in branches {
        for (allowed, required) in alternatives(root, branch) {
            let join = |a: &[String], b: Vec<String>| a.iter().cloned().chain(b).collect::<Vec<_>>();
            out.push((join(&own.0, allowed), join(&own.1, required)));
        }
    }
    out
}

/// Asserts that `entry` (one host's JSON entry) has only keys `command`'s schema
/// allows, and every key it requires, for one of the schema's alternatives.
pub fn assert_entry_conforms(command: &str, entry: &Value) {
    let text = std::fs::read_to_string(path(command)).unwrap();
    let root: Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&String> = entry.as_object().unwrap().keys().collect();
    let fits = alternatives(&root, &root["$defs"]["HostReport"]).into_iter().any(|(allowed, required)| {
        keys.iter().all(|k| allowed.contains(k)) && required.iter().all(|k| keys.contains(&k))
    });
    assert!(fits, "{command}: the entry's keys {keys:?} do not fit {}", path(command).display());
}

#[test]
fn sample_entries_fit_their_schemas() {
    use crate::deploy::{Outcome, Step};
    use crate::deploy_report::OutcomeFields;
    use crate::report::{HostReport, HostResult};
    use crate::rollback::Landed;
    /// The entry as `--json` writes it, checked against the command's schema.
    fn check<E: serde::Serialize>(command: &str, entry: HostReport<E>) -> String {
        let text = serde_json::to_string(&entry).unwrap();
        assert_entry_conforms(command, &serde_json::from_str(&text).unwrap());
        text
    }
    let top = Some("/nix/store/22222222222222222222222222222222-nixos-system-web".to_owned());
    let failed = || HostReport::<NoFields>::new(HostResult::Failed, None, None);
    for command in ["eval", "build", "check", "diff", "bundle", "rollback"] {
        check(command, HostReport::<NoFields> { error: Some("boom".into()), ..failed() });
    }
    let eval = EvalFields { drv_path: "/nix/store/x.drv".into(), system: None };
    check("eval", HostReport::new(HostResult::Evaluated, None, None).with(eval));
    let build = BuildFields { drv_path: "/nix/store/x.drv".into() };
    check("build", HostReport::new(HostResult::Built, None, None).with(build));
    check("check", HostReport::<NoFields>::new(HostResult::Ok, None, None));
    let bundle = BundleFields { bundle: "web1.bundle".into(), bytes: 10, paths: 2 };
    check("bundle", HostReport::new(HostResult::Built, None, top.clone()).with(bundle));
    let diff = DiffFields { changes: Vec::new(), closure_size: 1, closure_size_delta: -1, running: None };
    check("diff", HostReport::new(HostResult::Ok, None, None).with(diff));
    let rollback = RollbackFields {
        outcome: OutcomeFields::new(&Outcome::failed(Step::Rollback, "gone")),
        rebuilt: true,
        rolled_back_to: Some(Landed { toplevel: top.clone().unwrap(), lock: None, rev: None }),
        target: None,
    };
    let text = check("rollback", HostReport::new(HostResult::Activated, None, None).with(rollback));
    // The command's keys follow the common ones in sorted order, as when entries were maps.
    let order = ["\"result\"", "\"error\"", "\"bytes_copied\"", "\"rebuilt\"", "\"seconds\"", "\"wire_bytes\""];
    let at: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn the_error_document_fits_its_schema() {
    let doc = serde_json::to_value(crate::error::Error::NoFleet { dir: "/srv".into() }.document()).unwrap();
    let message = "no fleet.yaml in /srv or a directory above it; pass --fleet FILE or set HOSTCTL_FLEET";
    assert_eq!(doc, serde_json::json!({"error": {"kind": "no-fleet", "message": message, "exit_code": 2}}));
    let root = schema::<crate::error::ErrorDocument>();
    let top = alternatives(&root, &root);
    assert_eq!(top, [(vec!["error".to_owned()], vec!["error".to_owned()])]);
    let body = alternatives(&root, &root["properties"]["error"]);
    let mut keys: Vec<String> = doc["error"].as_object().unwrap().keys().cloned().collect();
    keys.sort();
    let fits = body.into_iter().any(|(mut allowed, mut required)| {
        allowed.sort();
        required.sort();
        allowed == keys && required == keys
    });
    assert!(fits, "{doc} does not fit {}", path("error").display());
}
