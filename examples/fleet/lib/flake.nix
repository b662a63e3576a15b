# fleetlib: builds NixOS-shaped systems for the hostctl example fleet, with
# nothing but builtins.derivation and /bin/sh (no nixpkgs, no network).
#
# lib.mkSystem { name, system, roles ? [ ], motd ? "" } returns what hostctl
# needs from `nixpkgs.lib.nixosSystem`: an attrset with
#   config.system.build.toplevel   a derivation shaped like a NixOS system
#   config.networking.hostName
#   config.nixpkgs.system and config.nixpkgs.hostPlatform.system
{
  description = "fleetlib: a tiny nixosSystem stand-in for the hostctl example fleet";

  # fleetlib pins its own nixpkgs, like any library flake; the fleet overrides
  # it with `inputs.fleetlib.inputs.nixpkgs.follows = "nixpkgs"`.
  # See pinned-nixpkgs/flake.nix for why it is not `path:../nixpkgs`.
  inputs.nixpkgs.url = "path:./pinned-nixpkgs";

  outputs = { self, nixpkgs }: {
    lib = import ./mksystem.nix { lib = nixpkgs.lib; };
  };
}
