# The VM lane's test fleet: NixOS-shaped systems for Debian guests with systemd as PID 1,
# built offline with nothing but builtins.derivation and /bin/sh (no nixpkgs). A TEST
# FIXTURE, not a NixOS: see system.nix and builders/switch-to-configuration.sh.
# The tests copy this directory, write hosts/<name>.nix (the host's services) and
# agent.service (the agent's unit, rendered from agent/nixos/module.nix) and commit.
{
  description = "hostctl VM lane test fleet";

  outputs = { self }:
    let
      mkSystem = import ./system.nix;
      hostNames = map (f: builtins.substring 0 (builtins.stringLength f - 4) f)
        (builtins.filter (f: builtins.match ".*\\.nix" f != null) (builtins.attrNames (builtins.readDir ./hosts)));
    in
    {
      nixosConfigurations = builtins.listToAttrs (map
        (name: {
          inherit name;
          value = mkSystem ({ inherit name; agentUnit = builtins.readFile ./agent.service; } // import (./hosts + "/${name}.nix"));
        })
        hostNames);
    };
}
