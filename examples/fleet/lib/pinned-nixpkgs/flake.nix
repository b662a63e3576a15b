# The (older) fake nixpkgs that fleetlib pins for itself, the way a real
# library flake pins its own nixpkgs. The example fleet does not use it: its
# flake.nix makes fleetlib follow the fleet's ../nixpkgs instead. Remove that
# `follows` line and fleetlib evaluates against this 23.11 copy, flake.lock
# gains a second nixpkgs node, and `hostctl check` complains.
#
# Why it lives inside lib/ and is not called ./nixpkgs: Nix 2.8 resolves a
# relative path input inside the store copy of its own flake (lib/), so it
# cannot reach ../nixpkgs; and it keys relative path inputs by their path
# string, so two inputs both spelled `path:./nixpkgs` would silently resolve
# to the same directory.
{
  description = "fake nixpkgs for the hostctl example fleet (23.11)";

  outputs = { self }: {
    lib = rec {
      release = "23.11";
      codeName = "Tapir";
      version = "23.11-example";

      concatStringsSep = builtins.concatStringsSep;
      concatMapStrings = f: list: builtins.concatStringsSep "" (map f list);
      concatLines = list: concatMapStrings (s: s + "\n") list;
      optionalString = cond: s: if cond then s else "";
      hasSuffix = suffix: s:
        let n = builtins.stringLength s; m = builtins.stringLength suffix;
        in n >= m && builtins.substring (n - m) m s == suffix;
      removeSuffix = suffix: s:
        if hasSuffix suffix s
        then builtins.substring 0 (builtins.stringLength s - builtins.stringLength suffix) s
        else s;
      genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
    };
  };
}
