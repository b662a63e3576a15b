//! JSON Schemas of the YAML files, for editors and external validation. The checked-in
//! copies under `schemas/json/` are kept equal to these by a test.

use schemars::schema_for;

use crate::agent_config::AgentConfig;
use crate::inventory::Fleet;

/// JSON Schema of `fleet.yaml`.
pub fn fleet_schema() -> serde_json::Value {
    schema_for!(Fleet).to_value()
}

/// JSON Schema of `agent.yaml`.
pub fn agent_config_schema() -> serde_json::Value {
    schema_for!(AgentConfig).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_reject_unknown_fields_and_carry_defaults() {
        let fleet = fleet_schema();
        assert_eq!(fleet["additionalProperties"], false);
        assert_eq!(fleet["required"], serde_json::json!(["hosts"]));
        assert_eq!(fleet["$defs"]["Host"]["additionalProperties"], false);
        assert_eq!(fleet["$defs"]["Defaults"]["properties"]["port"]["default"], 7420);
        assert_eq!(fleet["$defs"]["Rollout"]["properties"]["batch"]["default"], "100%");
        let agent = agent_config_schema();
        assert_eq!(agent["additionalProperties"], false);
        assert_eq!(agent["properties"]["listen"]["default"], "0.0.0.0:7420");
        assert_eq!(agent["properties"]["trusted_keys"]["minItems"], 1);
    }
}
