# hostctl as a flake: the two binaries, the NixOS module and an overlay.
#
# `systems` follows the nix-systems pattern: override it to build for other systems
# (`inputs.hostctl.inputs.systems.follows = "my-systems"`).
{
  description = "hostctl: declarative NixOS fleet manager (controller and agent)";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    systems.url = "github:nix-systems/default";
  };

  outputs = { self, nixpkgs, systems }:
    let
      lib = nixpkgs.lib;
      eachSystem = f: lib.genAttrs (import systems) (system: f nixpkgs.legacyPackages.${system});
      version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.package.version;

      # One derivation per binary, both from the workspace's Cargo.lock. The tests need
      # root, namespaces and Nix itself, so `cargo test` runs in CI, not in the build.
      crate = pkgs: pname: crateName: pkgs.rustPlatform.buildRustPackage {
        inherit pname version;
        src = lib.cleanSource ./.;
        cargoLock.lockFile = ./Cargo.lock;
        cargoBuildFlags = [ "-p" crateName ];
        nativeBuildInputs = [ pkgs.pkg-config ];
        buildInputs = [ pkgs.openssl ];
        doCheck = false;
        meta = {
          description = "hostctl ${pname}";
          license = [ lib.licenses.mit lib.licenses.asl20 ];
          mainProgram = pname;
        };
      };
      packagesFor = pkgs: {
        hostctl = crate pkgs "hostctl" "hostctl";
        hostctl-agent = crate pkgs "hostctl-agent" "hostctl-agent";
      };
    in
    {
      packages = eachSystem (pkgs: packagesFor pkgs // { default = (packagesFor pkgs).hostctl; });

      overlays.default = final: _prev: packagesFor final;

      nixosModules.agent = { lib, pkgs, ... }: {
        imports = [ ./agent/nixos/module.nix ];
        services.hostctl-agent.package =
          lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.hostctl-agent;
      };
      nixosModules.default = self.nixosModules.agent;
    };
}
