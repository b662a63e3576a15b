# The hostctl example fleet: four NixOS-shaped hosts that evaluate and build
# offline, with no nixpkgs. See ../README.md; the inventory is ./fleet.yaml.
{
  description = "hostctl example fleet";

  inputs.nixpkgs.url = "path:./nixpkgs";
  inputs.fleetlib.url = "path:./lib";
  # One nixpkgs for the whole fleet. Tests delete the next line (a plain text
  # edit) to give flake.lock a second nixpkgs node for `hostctl check` to find;
  # keep it on a line of its own.
  inputs.fleetlib.inputs.nixpkgs.follows = "nixpkgs";

  outputs = { self, nixpkgs, fleetlib }:
    let
      lib = nixpkgs.lib;
      # Every hosts/<name>.nix is a host.
      hostNames = map (lib.removeSuffix ".nix")
        (builtins.filter (lib.hasSuffix ".nix") (builtins.attrNames (builtins.readDir ./hosts)));
    in
    {
      nixosConfigurations = lib.genAttrs hostNames (name:
        fleetlib.lib.mkSystem ({ inherit name; } // import (./hosts + "/${name}.nix")));
    };
}
