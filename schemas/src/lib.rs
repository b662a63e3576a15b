//! Shared vocabulary of hostctl: identities, the fleet inventory, the agent config.
