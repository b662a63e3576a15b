//! Harness for end-to-end tests: temporary fleets, a Nix environment, the built binaries.
