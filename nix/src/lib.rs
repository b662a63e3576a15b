//! The typed Nix layer: the one place that runs `nix`.
